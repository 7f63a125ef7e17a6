//! Task input → validated volume specs.
//!
//! This layer owns the task-facing contract (README, "The task contract"): the `DVDI_VOLUME_*` environment variables
//! and `DOCKER_VOLUME` entries of a `ContainerInfo`. It is pure: no I/O, no syscalls. Once a
//! [`VolumeSpec`] exists, every part of it is valid; later layers never re-check what is here.
//!
//! Checks that need the host (does a container path exist, does it escape the root through a
//! symlink) belong to the mount layer, not here.
//!
//! - [`name`](VolumeName), [`opts`](VolumeOpts), [`path`](ContainerPath): the validated parts of a
//!   spec; each refuses bad input with its own small error, which callers wrap.
//! - `env`: the `DVDI_VOLUME_*` variables; `docker`: `DOCKER_VOLUME` entries, after Mesos'
//!   `docker/volume` isolator; `csi`: `CSI_VOLUME` entries, after Mesos' `volume/csi` isolator.
//! - [`resolve`]: both forms together, the rules across volumes, and [`SpecError`], whose message
//!   names the variable or entry a task author has to fix.

mod csi;
mod docker;
mod env;
mod name;
mod opts;
mod path;
mod resolve;

pub use csi::{CsiStatic, CsiVolumeInput, SecretInput, Secrets};
pub use name::{DriverName, NameError, VolumeName, FORBIDDEN_NAME_CHARS, MAX_NAME_LEN};
pub use opts::{OptError, VolumeOpts};
pub use path::{ContainerPath, PathError, MAX_COMPONENT_LEN, MAX_PATH_LEN};
pub use resolve::{resolve, Origin, Resolved, SpecError, SpecWarning, FIELDS, PREFIX};

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How much of a value an error quotes; the rest is counted, not printed (a task may send 100 KB).
const QUOTE_MAX: usize = 80;

/// A value as errors show it: whole when short, else its start and its length.
pub(crate) fn shown(value: &str) -> String {
    if value.len() <= QUOTE_MAX {
        return value.to_owned();
    }
    let mut cut = QUOTE_MAX;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &value[..cut], value.len())
}

/// One volume a container asks for, valid by construction.
///
/// Its JSON form is `{"driver","name","opts":{…},"container_path":null|"…","read_only",
/// "explicit_create"}`, plus `"dvdcli"` and `"csi"` only when set. Deserialising validates every part, and
/// refuses unknown fields: a misspelt `"readonly"` must not quietly mean read-write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The driver (plugin or built-in backend).
    pub driver: DriverName,
    /// The volume's name, unique per driver.
    pub name: VolumeName,
    /// Options passed to the driver on create and mount.
    pub opts: VolumeOpts,
    /// Where the container sees the volume; `None`: the task uses the host mount point.
    pub container_path: Option<ContainerPath>,
    /// Bind read-only.
    pub read_only: bool,
    /// Never create the volume; fail if it does not exist.
    pub explicit_create: bool,
    /// A per-task `dvdcli` program (absolute, normalised), only ever set when the operator allows
    /// it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_dvdcli"
    )]
    pub dvdcli: Option<PathBuf>,
    /// What a `CSI_VOLUME` entry adds for the CSI backend (never its secrets in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<CsiStatic>,
    /// Where the task asked for this volume, for messages in the task's terms (see [`Asked`]).
    #[serde(skip)]
    pub origin: Asked,
}

/// Where a task asked for a volume: set by [`resolve`], `None` for a spec read from JSON.
///
/// It names the volume in messages only: it is not part of the JSON form, and it takes no part
/// in comparisons (one volume asked for twice in the same way is the same request, and a spec
/// round-trips through JSON unchanged).
#[derive(Debug, Clone, Default)]
pub struct Asked(pub Option<Origin>);

impl PartialEq for Asked {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Asked {}

/// Holds a deserialised `dvdcli` to the rule `DVDI_VOLUME_DVDCLI` is held to: absolute, no `..`,
/// no NUL. The agent runs it as root, so a hand-edited spec gets no more freedom than a task.
fn deserialize_dvdcli<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let path = ContainerPath::absolute(&s)
        .map_err(|e| serde::de::Error::custom(format_args!("dvdcli {:?} {e}", shown(&s))))?;
    Ok(Some(path.as_path().to_path_buf()))
}

impl VolumeSpec {
    /// The key the mount table counts users under.
    pub fn key(&self) -> VolumeKey {
        VolumeKey {
            driver: self.driver.clone(),
            name: self.name.clone(),
        }
    }
}

/// A volume's identity on an agent: its driver and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolumeKey {
    /// The driver.
    pub driver: DriverName,
    /// The volume name.
    pub name: VolumeName,
}

impl fmt::Display for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "volume {:?} (driver {:?})",
            self.name.as_str(),
            self.driver.as_str()
        )
    }
}

/// A `DOCKER_VOLUME` entry of `ContainerInfo.volumes`, as Mesos gives it (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerVolumeInput {
    /// `source.docker_volume.driver`; empty when unset.
    pub driver: String,
    /// `source.docker_volume.name`.
    pub name: String,
    /// `source.docker_volume.driver_options`, in order.
    pub driver_options: Vec<(String, String)>,
    /// `container_path`: absolute, or relative to the sandbox.
    pub container_path: String,
    /// `mode == RO`.
    pub read_only: bool,
}

/// Operator settings that shape resolution (taken from the `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Driver used when a volume names none.
    pub default_driver: DriverName,
    /// Drivers a task may name; `None`: all.
    pub allowed_drivers: Option<Vec<DriverName>>,
    /// Honour `DVDI_VOLUME_DVDCLI`.
    pub allow_task_dvdcli: bool,
}
