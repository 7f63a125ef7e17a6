//! The built-in `loop` driver: a file system image per volume, attached to a loop device.

/// A failed `loop` operation.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {}
