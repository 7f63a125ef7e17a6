//! Storage backends: turn "driver D, volume N, options O" into a mounted directory on the agent.
//!
//! One [`Backend`] trait, one module per backend:
//! - [`plugin`]: any Docker volume plugin, spoken to over its HTTP protocol (discovery, client);
//! - [`dvdcli`]: the `dvdcli` program, run with an argv, never through a shell;
//! - [`local`]: built-in, a directory per volume;
//! - [`loopdev`]: built-in, an ext4 (or xfs) image per volume on a loop device;
//! - [`csi`]: a configured Container Storage Interface plugin.
//!
//! Backends know nothing of containers or reference counts: the mount table above them calls
//! [`Backend::mount`] once per host mount and [`Backend::unmount`] once. They must still be
//! idempotent: a second mount of a mounted volume returns the same path.

pub mod answer;
pub mod command;
pub mod csi;
pub mod dvdcli;
pub mod local;
pub mod loopdev;
pub mod plugin;
pub mod registry;
pub mod waits;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::config::Timeouts;
use crate::spec::{CsiStatic, DriverName, VolumeName, VolumeOpts};
pub use waits::{Interrupted, WaitGuard, Waits};

/// The caller-chosen id of one host mount; the matching unmount carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MountId(pub String);

impl fmt::Display for MountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Backend::mount`] needs: the volume, its options (used if it must be created), whether
/// creating it is forbidden, and the mount id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest<'a> {
    /// The volume.
    pub name: &'a VolumeName,
    /// Options for create (and, for dvdcli, mount).
    pub opts: &'a VolumeOpts,
    /// Fail with [`BackendErrorKind::NoSuchVolume`] rather than create a missing volume.
    pub explicit_create: bool,
    /// The id of this host mount.
    pub id: &'a MountId,
    /// Every user of this host mount reads only. A backend that mounts block storage itself
    /// (`loop`) then mounts the file system read-only without replaying its journal, so this
    /// host writes nothing to storage that other hosts may be reading; the others ignore it.
    pub read_only: bool,
    /// What a `CSI_VOLUME` entry added, for the CSI backend (the others ignore it).
    pub csi: Option<&'a CsiStatic>,
}

/// A volume as a backend describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Where it is mounted on the host, when it is.
    pub mountpoint: Option<PathBuf>,
    /// Backend-specific status, as the backend gave it (JSON).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub status: serde_json::Value,
}

/// Whether a driver's volumes are visible from one host only or from every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This host only.
    Local,
    /// Every host (network storage).
    Global,
}

/// What a driver says it can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Volume scope.
    pub scope: Scope,
}

/// Which backend operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Create a volume.
    Create,
    /// Remove a volume.
    Remove,
    /// Mount a volume (creating it first where allowed).
    Mount,
    /// Unmount a volume.
    Unmount,
    /// Ask where a volume is mounted.
    Path,
    /// Describe one volume.
    Get,
    /// List volumes.
    List,
    /// Ask the driver's capabilities.
    Capabilities,
    /// Find and activate the driver.
    Activate,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Create => "create",
            Call::Remove => "remove",
            Call::Mount => "mount",
            Call::Unmount => "unmount",
            Call::Path => "path",
            Call::Get => "get",
            Call::List => "list",
            Call::Capabilities => "capabilities",
            Call::Activate => "activate",
        })
    }
}

/// A failed backend call: which driver, which volume, which call; the cause is in
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("{}", self.context())]
pub struct BackendError {
    /// The driver.
    pub driver: DriverName,
    /// The volume, for calls about one.
    pub volume: Option<VolumeName>,
    /// The call.
    pub call: Call,
    /// What went wrong (boxed: errors stay small on the success path).
    #[source]
    pub kind: Box<BackendErrorKind>,
}

impl BackendError {
    /// Builds an error for `call` on `volume` of `driver`.
    pub fn new(
        driver: &DriverName,
        volume: Option<&VolumeName>,
        call: Call,
        kind: impl Into<BackendErrorKind>,
    ) -> Self {
        Self {
            driver: driver.clone(),
            volume: volume.cloned(),
            call,
            kind: Box::new(kind.into()),
        }
    }

    /// The refusal of a mount that `explicit_create` forbids to create a missing volume.
    pub fn no_such_volume(driver: &DriverName, volume: &VolumeName) -> Self {
        Self::new(
            driver,
            Some(volume),
            Call::Mount,
            BackendErrorKind::NoSuchVolume,
        )
    }

    /// Whether the backend has no such call at all (dvdcli has no capabilities command): a
    /// permanent answer, unlike a call that failed.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            *self.kind,
            BackendErrorKind::Dvdcli(dvdcli::DvdcliError::Unsupported { .. })
        )
    }

    fn context(&self) -> String {
        match &self.volume {
            Some(v) => format!(
                "volume {:?} (driver {:?}): {} failed",
                v.as_str(),
                self.driver.as_str(),
                self.call
            ),
            None => format!("driver {:?}: {} failed", self.driver.as_str(), self.call),
        }
    }
}

/// What went wrong in a backend call. Each backend's own error type is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum BackendErrorKind {
    /// The volume does not exist and `explicit_create` forbids creating it.
    #[error("the volume does not exist and DVDI_VOLUME_EXPLICITCREATE=true forbids creating it; create it first")]
    NoSuchVolume,
    /// No driver of that name: neither built in nor found by plugin discovery.
    #[error("no such driver")]
    NoSuchDriver(#[source] plugin::DiscoveryError),
    /// The Docker volume plugin client failed.
    #[error(transparent)]
    Plugin(#[from] plugin::PluginError),
    /// The `dvdcli` program failed.
    #[error(transparent)]
    Dvdcli(#[from] dvdcli::DvdcliError),
    /// The built-in `local` driver failed.
    #[error(transparent)]
    Local(#[from] local::LocalError),
    /// The built-in `loop` driver failed.
    #[error(transparent)]
    Loop(#[from] loopdev::LoopError),
    /// A CSI plugin, or this backend's own work around it, failed.
    #[error(transparent)]
    Csi(#[from] csi::CsiBackendError),
    /// The mount point the backend answered is refused (see [`answer`]); the backend's mount was
    /// undone (Unmount with the same id) unless `undo` says otherwise.
    #[error("the backend answered the mount point {answer:?}, which is refused{}", undo_failed(.undo.as_deref()))]
    BadMountpoint {
        /// The answer, as given (shown escaped).
        answer: PathBuf,
        /// Why it is refused.
        #[source]
        reason: answer::MountpointError,
        /// The unmount that should have undone the mount, when it failed too.
        undo: Option<Box<BackendError>>,
    },
}

fn undo_failed(undo: Option<&BackendError>) -> String {
    undo.map_or_else(String::new, |e| {
        format!(
            " (and unmounting it again failed, so it stays mounted: {})",
            crate::error::render_chain(e)
        )
    })
}

/// The end of a program's output for an error message: at most `max` bytes of text, its lines
/// joined by ` | ` so the message stays on one line.
pub(crate) fn tail_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let joined = text.trim().lines().collect::<Vec<_>>().join(" | ");
    let mut start = joined.len().saturating_sub(max);
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    joined[start..].to_owned()
}

/// A storage backend for one driver.
///
/// Implementations are shared between threads; each call is bounded by the [`Timeouts`] the
/// backend was built with.
pub trait Backend: Send + Sync {
    /// The driver this backend serves.
    fn driver(&self) -> &DriverName;

    /// Creates the volume (a no-op when it exists).
    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError>;

    /// Removes the volume.
    fn remove(&self, name: &VolumeName) -> Result<(), BackendError>;

    /// Mounts the volume on the host, creating it first unless `explicit_create`, and returns the
    /// host path. Mounting a mounted volume returns the same path.
    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError>;

    /// Unmounts the volume mounted under `id`.
    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError>;

    /// Where the volume is mounted on the host, if it is.
    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError>;

    /// Describes one volume; `None` when it does not exist.
    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError>;

    /// Lists the driver's volumes.
    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError>;

    /// The driver's capabilities. An error means they are unknown (the driver could not be
    /// asked, or its answer failed), never "local": callers that must not take a global driver
    /// for a local one ask again later. A backend with no way to say answers an error for which
    /// [`BackendError::is_unsupported`] holds.
    fn capabilities(&self) -> Result<Capabilities, BackendError>;
}

/// Finds the backend for a driver (built-in, plugin or dvdcli).
pub trait BackendProvider: Send + Sync {
    /// The backend for `driver`; `dvdcli` is a per-task dvdcli program the operator allowed.
    fn backend(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::tail_text;

    #[test]
    fn output_tails_are_one_line_within_the_limit_and_whole_characters() {
        assert_eq!(tail_text(b"a\nb\n\n", 100), "a | b");
        assert_eq!(tail_text(b"x\nlast words", 10), "last words");
        let t = tail_text("\u{e9}".repeat(10).as_bytes(), 5);
        assert!(t.len() <= 5 && t.chars().all(|c| c == '\u{e9}'), "{t}");
    }
}
