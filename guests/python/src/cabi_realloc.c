/*
 * The allocator the WASI preview-1 adapter uses for its own state.
 *
 * When a module does not export `cabi_realloc`, the adapter takes pages with `memory.grow`
 * behind malloc's back; Debian's wasi-libc (2022) has no `cabi_realloc` of its own, so its
 * malloc later extends the heap over those pages and overwrites the adapter's state ("assertion
 * failed at adapter line ..."). Exporting one that goes through malloc keeps a single owner of
 * the heap.
 */
#include <stdlib.h>
#include <string.h>

__attribute__((export_name("cabi_realloc")))
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) {
        return (void *)align;
    }
    if (align <= 16) {
        return realloc(ptr, new_size);
    }
    void *fresh = aligned_alloc(align, (new_size + align - 1) / align * align);
    if (fresh != NULL && ptr != NULL) {
        memcpy(fresh, ptr, old_size < new_size ? old_size : new_size);
        free(ptr);
    }
    return fresh;
}
