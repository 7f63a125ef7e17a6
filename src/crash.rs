//! Test-only crash injection, for the crash-safety campaign: with the `crash-points` feature, the
//! process kills itself with SIGKILL when `DVDI_CRASH_AT` names the point it reaches. Without the
//! feature every point is a no-op. Kept apart so that any layer may name its points.

/// Dies here when `DVDI_CRASH_AT` names `_point` (with the `crash-points` feature only).
pub(crate) fn crash_point(_point: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("DVDI_CRASH_AT").is_ok_and(|p| p == _point) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
    }
}
