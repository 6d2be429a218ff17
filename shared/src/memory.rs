//! glibc malloc, set for processes whose large allocations are chunks.
//!
//! The api and the worker allocate a buffer per chunk (4 MiB by default),
//! fill it, often only in part (a PATCH that meets a full budget publishes
//! a short chunk), and free it once published or stored. glibc serves a
//! first 4 MiB request with its own mapping, but freeing it raises its
//! mmap threshold to 4 MiB, and from then on such buffers come from the
//! heap, where freed pages stay resident: RSS creeps up to the most ever
//! allocated at once, untouched capacity included, and never comes back.
//! Fixing the threshold (which turns the adjustment off) keeps every large
//! buffer a mapping of its own: only pages written count, and all of them
//! go back when it is freed. Measured in BENCHMARKS.md ("The api's memory").

/// Requests at least this large get a mapping of their own: chunk buffers,
/// and the broker client's copies of them in 128 KiB frames (on the heap,
/// those kept ~100 MiB of the api resident after a load of 200 uploads).
pub const MMAP_THRESHOLD: usize = 64 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`], unless the operator
/// set one (glibc's `MALLOC_MMAP_THRESHOLD_`, or `mmap_threshold` in
/// `GLIBC_TUNABLES`): theirs stands. A no-op with another C library. Call
/// it first thing in `main`, before the async runtime starts its threads.
#[allow(unsafe_code)]
pub fn give_back_large_buffers() {
    let tuned = std::env::var_os("GLIBC_TUNABLES")
        .is_some_and(|t| t.to_string_lossy().contains("mmap_threshold"));
    if tuned || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator and takes the
    // allocator's lock; glibc marks it "MT-Unsafe init", so it is called
    // before the process starts any thread (see the callers' `main`).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}
