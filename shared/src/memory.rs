//! The allocator of every reelay process: jemalloc, set up for processes
//! whose large allocations are chunks.
//!
//! The api and the worker move every uploaded byte through buffers of
//! 128 KiB (the broker client's AMQP frames) and 4 MiB (chunks), allocated
//! and freed thousands of times per GiB. glibc malloc gave two bad choices
//! (BENCHMARKS.md, "Ingest CPU" and "The api's memory"): such buffers on
//! its heap stay resident after a load and never come back; as mappings of
//! their own (the 64 KiB mmap threshold used before) every one is a fresh
//! mapping whose pages are faulted in and zeroed, about a third of the
//! api's CPU per GiB. jemalloc reuses freed extents while the load lasts
//! and gives their pages back a few seconds after it (`dirty_decay_ms`),
//! from a background thread, so an idle process shrinks too.
//!
//! One arena (`narenas:1`): a buffer freed by one thread is reused by the
//! next allocation of any thread, rather than sitting resident in a
//! per-thread arena (with jemalloc's default of four per core, and before
//! chunks were sized to their bytes, the api peaked 17–36 MiB higher under
//! 200 uploads). On hosts with many cores the one arena's lock may want
//! `narenas` raised. Small allocations still come from per-thread caches,
//! so the shared arena is taken only for large ones. An operator can
//! override any of this with `_RJEM_MALLOC_CONF` (jemalloc's
//! `MALLOC_CONF`, under the prefix this build uses).

/// Every allocation of a process linking this crate goes through jemalloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The options jemalloc reads at start (see the module's documentation).
pub const ALLOCATOR_OPTIONS: &std::ffi::CStr = c"background_thread:true,narenas:1";

/// jemalloc's `malloc_conf`: a pointer to [`ALLOCATOR_OPTIONS`], read once
/// when the allocator starts.
#[allow(unsafe_code, non_upper_case_globals)]
// SAFETY: the symbol jemalloc looks up for its compiled-in options, of the
// type it expects (`const char *`), pointing at a NUL-terminated string
// that lives for the whole process. Nothing else has this name.
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static malloc_conf: Options = Options(ALLOCATOR_OPTIONS.as_ptr());

/// A C string pointer that may be shared: it points at a `'static`,
/// immutable string.
#[repr(transparent)]
struct Options(*const std::ffi::c_char);

#[allow(unsafe_code)]
// SAFETY: the pointer is to immutable static data; no one writes through it.
unsafe impl Sync for Options {}
