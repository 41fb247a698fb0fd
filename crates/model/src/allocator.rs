//! Heap settings for running models on the CPU.
//!
//! burn's CPU backend (Flex) allocates a new buffer for most tensor operations and frees it
//! soon after: one training step of the Flickr8k attention LSTM allocates and frees hundreds of
//! buffers of 0.1–4 MiB. glibc's malloc serves blocks above its mmap threshold with fresh
//! mappings and hands the top of the heap back to the kernel above its trim threshold, so the
//! same memory was mapped, faulted in, zero-filled and unmapped again at every step (perf: about
//! a tenth of a step in page faults, `memset` and `memmove`). Raising both thresholds keeps the
//! freed memory in the process for the next step; the price is that the process keeps its peak
//! heap until it exits. Measured in docs/benchmarks.md.

/// The largest mmap threshold glibc accepts on 64-bit targets (half its 64 MiB heap size).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Give the heap back to the kernel only beyond this much free memory at its top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Applies the settings above (glibc on Linux; elsewhere nothing). A user who tunes malloc
/// through the environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
/// `GLIBC_TUNABLES`) keeps their settings. Returns whether the settings were applied. Call it
/// once, at start-up, before other threads allocate.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned_by_user =
            ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"].iter().any(|name| std::env::var_os(name).is_some());
        if tuned_by_user {
            return false;
        }
        // SAFETY: mallopt only changes malloc's parameters; it is called before the program
        // starts other threads, and both values are within glibc's documented ranges.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
