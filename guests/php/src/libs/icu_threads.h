/* Forced into ICU's C++ sources for WASI. WASI has one thread, and libc++ built without
 * threads has no std::mutex or std::condition_variable, which ICU's umutex uses; with one
 * thread a lock has nothing to exclude and nobody to wait for. */
#ifndef WASMBRIDGE_ICU_THREADS_H
#define WASMBRIDGE_ICU_THREADS_H
#if defined(__cplusplus) && defined(__wasi__)
#include <mutex>
#if !_LIBCPP_HAS_THREADS
namespace std {
struct mutex {
    constexpr mutex() noexcept = default;
    void lock() {}
    bool try_lock() { return true; }
    void unlock() {}
};
struct condition_variable {
    void notify_one() noexcept {}
    void notify_all() noexcept {}
    /* Called only while another thread is busy, which with one thread cannot be. */
    template <class Lock> void wait(Lock &) { __builtin_trap(); }
    template <class Lock, class Predicate> void wait(Lock &, Predicate ready) {
        if (!ready()) __builtin_trap();
    }
};
}
#endif
#endif
#endif
