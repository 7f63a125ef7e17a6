//! The `dvdcli` backend: runs the configured program with an argv, never through a shell.

/// A failed `dvdcli` run.
#[derive(Debug, thiserror::Error)]
pub enum DvdcliError {}
