//! Allocator settings for a long-running controller whose memory is mostly its watch caches.
//!
//! Measured with `testbed bench` (1,000 configurations, glibc malloc): 73 MiB RSS with glibc's
//! default of one malloc arena per thread (up to 8 per core), for 17 MiB of live heap
//! (heaptrack); with a single arena 37 MiB. The cache entries are allocated by whichever tokio
//! worker decoded the watch event and freed by another, which spreads them over every arena's
//! free lists. One arena is enough: the controller's allocations are small and its reconciles
//! wait on the API, not on malloc's lock.

use std::time::Duration;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    /// `M_ARENA_MAX` from glibc's `malloc.h`.
    const M_ARENA_MAX: c_int = -8;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    pub fn single_arena() {
        // SAFETY: mallopt only changes allocator parameters; called before any other thread.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }

    pub fn trim() {
        // SAFETY: malloc_trim takes malloc's own locks; it only returns free pages to the OS.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Call first thing in `main`, before any thread is started: arenas are assigned to threads on
/// their first allocation.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::single_arena();
}

/// Gives free heap pages back to the OS now and then. glibc returns memory only from the top of
/// the heap on its own, so after a burst (a relist, thousands of configurations converging) the
/// freed pages in the middle of the heap would stay resident until reused.
pub async fn release_free_memory_periodically(every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        glibc::trim();
    }
}
