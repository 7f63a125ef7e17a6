//! What the checkpoint says about one volume.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backend::MountId;
use crate::coord::LeaseMode;
use crate::mount::DeviceNumber;
use crate::spec::{CsiStatic, DriverName, VolumeKey, VolumeName, VolumeOpts};

/// The checkpoint format this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Longest container id accepted, in bytes.
pub const MAX_CONTAINER_ID_LEN: usize = 1024;

/// Why a container id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerIdError {
    /// The id is empty.
    #[error("container id is empty")]
    Empty,
    /// The id is longer than [`MAX_CONTAINER_ID_LEN`] bytes.
    #[error("container id is {len} bytes long; at most {MAX_CONTAINER_ID_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The id contains a control character.
    #[error("container id {id:?} contains a control character")]
    ControlChar {
        /// The id.
        id: String,
    },
}

/// A container's id, as Mesos (or `dvdi run`) names it: non-empty, printable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    /// Validates an id.
    pub fn new(s: impl Into<String>) -> Result<Self, ContainerIdError> {
        let s = s.into();
        if s.is_empty() {
            return Err(ContainerIdError::Empty);
        }
        if s.len() > MAX_CONTAINER_ID_LEN {
            return Err(ContainerIdError::TooLong { len: s.len() });
        }
        if s.chars().any(char::is_control) {
            return Err(ContainerIdError::ControlChar { id: s });
        }
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ContainerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ContainerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Where a volume is in its life on this host. Each phase is checkpointed *before* the backend
/// call that leaves it, so recovery knows which calls may have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A backend mount was asked for (or is about to be); it may or may not have happened.
    Mounting,
    /// Mounted at `host_path`.
    Mounted,
    /// A backend unmount was asked for (or is about to be); it may or may not have happened.
    Unmounting,
    /// Unmounted from this host; only its cluster-wide lease is still to be given back (a
    /// release that failed). Recorded only then, so a retry does not unmount twice.
    Unmounted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Mounting => "mounting",
            Phase::Mounted => "mounted",
            Phase::Unmounting => "unmounting",
            Phase::Unmounted => "unmounted, lease to release",
        })
    }
}

/// Who holds a container's reference, so a dead holder can be told from a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Owner {
    /// A Mesos container: alive while the agent says so at recover.
    Mesos,
    /// A `dvdi run` process: alive while a process with this pid and start time exists.
    Process {
        /// Its pid.
        pid: i32,
        /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22), which tells a
        /// reused pid from the original.
        start_time: u64,
    },
}

/// One container's use of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    /// The resolved bind target, when the container asked for one.
    pub target: Option<PathBuf>,
    /// Bound read-only.
    pub read_only: bool,
    /// Who holds the reference.
    pub owner: Owner,
}

/// The checkpoint of one volume: how it was mounted and who uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Always [`CHECKPOINT_VERSION`] when written by this build.
    pub version: u32,
    /// The driver.
    pub driver: DriverName,
    /// The volume.
    pub name: VolumeName,
    /// Options it was mounted with, so recovery can mount it again.
    pub opts: VolumeOpts,
    /// Whether creating it was forbidden.
    pub explicit_create: bool,
    /// The per-task dvdcli program it was mounted through, when the operator allowed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dvdcli: Option<PathBuf>,
    /// The id the backend mount was made under; the unmount carries the same.
    pub mount_id: MountId,
    /// Where it is in its life.
    pub phase: Phase,
    /// The host path the backend returned, once mounted.
    pub host_path: Option<PathBuf>,
    /// Whether `host_path` was a mount point of its own when mounted (a `local` volume is a plain
    /// directory); recovery treats a vanished mount point as a lost mount only when this is set.
    pub is_mount_point: bool,
    /// The device of the file system mounted at `host_path`, when that is a mount point of its
    /// own: a vanished mount is not made again while this file system is still mounted
    /// somewhere (in a container's namespace), since a second instance beside it could corrupt
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceNumber>,
    /// The containers using it.
    pub users: BTreeMap<ContainerId, Use>,
    /// The last backend failure, kept until a later call succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The cluster-wide lease this agent holds (or is taking) for the volume; `None` for a volume
    /// that is not leased. Saved before the lease is taken and cleared only after it was given
    /// back, so recovery knows which leases may be held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseMode>,
    /// What a `CSI_VOLUME` entry added (mount flags, volume context), so a remount uses them too.
    /// Its secrets are never saved: they live in memory while a prepare needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<CsiStatic>,
}

impl VolumeRecord {
    /// The volume's key.
    pub fn key(&self) -> VolumeKey {
        VolumeKey {
            driver: self.driver.clone(),
            name: self.name.clone(),
        }
    }
}
