//! The built-in `local` driver: a directory per volume under `local_root`.

/// A failed `local` operation.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {}
