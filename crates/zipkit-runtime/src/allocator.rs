//! glibc malloc, set up for a process whose big buffers come and go: the workspace's only
//! `unsafe` code (`unsafe_code` is `deny`, allowed in this module). Both binaries call `tune`
//! first thing in `main`.
//!
//! At start-up (`tune`): every block of 128 KiB or more is mapped on its own and handed straight
//! back to the kernel when freed (a fixed mmap threshold, instead of one that rises to the
//! largest block freed so far), and two arenas instead of eight per core. With glibc's defaults a
//! block freed once raises the threshold to its size, so every later block of that size (the
//! worker's parts, the API's 19 MiB Argon2 work areas and large request bodies) stays in an arena
//! and resident after it is freed: the worker sat at 2–3× its live buffers (docs/PERFORMANCE.md,
//! "Memory"), and the API kept ~20 MiB per concurrent sign-in it had ever served.
//! `release_free_memory` (after each job, and the API's minute sweep) gives free pages inside
//! the heap back too, so what many small allocations freed does not stay resident.
#![allow(unsafe_code)]

/// Sets the allocator up; call first thing in `main`, before other threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns free memory inside the heap to the kernel (a few milliseconds).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
