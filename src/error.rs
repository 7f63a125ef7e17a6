//! Rendering errors for people.
//!
//! Errors in this crate keep their cause in [`std::error::Error::source`] and do not repeat it in
//! their `Display`. Where an error leaves the crate (the CLI's stderr, the C++ bridge) the whole
//! chain is rendered once with [`render_chain`].

use std::error::Error;
use std::fmt::Write;

/// Renders `err` and every error in its `source()` chain, joined by `": "`.
///
/// ```
/// let err = std::io::Error::other("disk on fire");
/// assert_eq!(mesos_dvdi::error::render_chain(&err), "disk on fire");
/// ```
pub fn render_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let text = next.to_string();
        // Some foreign errors repeat their source in Display; don't print it twice.
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        cause = next.source();
    }
    out
}
