//! The adapter's heap: pages taken with `memory.grow`, handed out by bumping a pointer. An
//! instance serves one request, so nothing needs returning, except the latest allocation:
//! freeing or growing it is done in place, which keeps per-read buffers from piling up.
//!
//! Not the program's `cabi_realloc`: a command module runs its constructors on every export
//! call, and wasi-libc's read the environment, which is not there before this state is. The
//! pages are taken when a request starts, before the program's `_start`; a wasi-libc malloc
//! takes its first heap up to its linker-defined `__heap_end` (or is already running, in a
//! snapshot), so it does not claim them.

use core::alloc::{GlobalAlloc, Layout};

const PAGE: usize = 65536;

pub struct Arena;

/// Where the next allocation goes, and the end of the pages taken so far. It sits at the
/// start of the first page, found through the wasm global that build.rs defines.
pub struct Bump {
    next: usize,
    end: usize,
}

unsafe extern "C" {
    fn get_state() -> *mut u8;
    fn set_state(state: *mut u8);
}

/// A new block of `size` bytes (a multiple of 64 KiB), or null.
fn block(size: usize) -> *mut u8 {
    match core::arch::wasm32::memory_grow(0, size / PAGE) {
        usize::MAX => core::ptr::null_mut(),
        page => (page * PAGE) as *mut u8,
    }
}

/// Where the adapter's state sits after the bump state.
pub const SLOT: usize = 16;

/// The instance's one global pointer: the bump state, followed by the adapter's state.
pub fn root() -> *mut u8 {
    unsafe {
        let root = get_state();
        if !root.is_null() {
            return root;
        }
        let root = block(PAGE);
        if root.is_null() {
            crate::trap();
        }
        let header = SLOT + core::mem::size_of::<crate::state::Slot>();
        root.cast::<Bump>().write(Bump {
            next: root as usize + header.next_multiple_of(16),
            end: root as usize + PAGE,
        });
        root.add(SLOT).cast::<crate::state::Slot>().write(None);
        set_state(root);
        root
    }
}

fn bump() -> &'static mut Bump {
    unsafe { &mut *root().cast::<Bump>() }
}

fn alloc(size: usize, align: usize) -> *mut u8 {
    let bump = bump();
    let start = bump.next.next_multiple_of(align);
    if start + size > bump.end {
        // More pages: contiguous with these unless the program grew memory in between, in
        // which case what was left of the old block is given up.
        let len = (size + align).next_multiple_of(PAGE).max(4 * PAGE);
        let base = block(len);
        if base.is_null() {
            return base;
        }
        if base as usize != bump.end {
            bump.next = base as usize;
        }
        bump.end = base as usize + len;
        return alloc(size, align);
    }
    bump.next = start + size;
    start as *mut u8
}

pub unsafe fn realloc(old: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    let bump = bump();
    if old.is_null() {
        return alloc(new_size, align);
    }
    if old as usize + old_size == bump.next && old as usize + new_size <= bump.end {
        bump.next = old as usize + new_size;
        return old;
    }
    let new = alloc(new_size, align);
    if !new.is_null() {
        unsafe { core::ptr::copy_nonoverlapping(old, new, old_size.min(new_size)) };
    }
    new
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let bump = bump();
        if ptr as usize + layout.size() == bump.next {
            bump.next = ptr as usize;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
