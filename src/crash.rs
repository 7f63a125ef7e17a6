//! Test-only crash injection, shared by every layer that has persistence points.
//!
//! With the `crash-points` feature, a process kills itself with SIGKILL when `DVDI_CRASH_AT`
//! names the point it reaches; with `DVDI_CRASH_SKIP=N` as well, the first N times it reaches that
//! point pass and the next one kills (a point met several times in one operation, such as each
//! write of a record, is reached at each of them in turn). Without the feature every function here
//! is a no-op the compiler removes.

/// Dies here when the crash campaign names `point` (see the module doc).
pub(crate) fn point(point: &str) {
    if reached(point) {
        die();
    }
}

/// Whether the process should die at `point` now; counts the passage. A caller that must do
/// something first (a torn write writes half of its bytes) calls [`die`] itself.
pub(crate) fn reached(_point: &str) -> bool {
    #[cfg(feature = "crash-points")]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static PASSED: AtomicU64 = AtomicU64::new(0);
        if std::env::var("DVDI_CRASH_AT").is_ok_and(|p| p == _point) {
            let skip = std::env::var("DVDI_CRASH_SKIP")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            return PASSED.fetch_add(1, Ordering::SeqCst) >= skip;
        }
    }
    false
}

/// Kills the process at once, as a power cut or `kill -9` would: nothing after this runs.
pub(crate) fn die() {
    #[cfg(feature = "crash-points")]
    {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
    }
}
