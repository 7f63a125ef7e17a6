//! Resolution: a task's environment, `DOCKER_VOLUME` and `CSI_VOLUME` entries → validated [`VolumeSpec`]s.
//!
//! The input forms are read by [`super::env`], [`super::docker`] and [`super::csi`]; this file holds what they
//! share: the result, the errors and warnings, and the rules that look across volumes (duplicates,
//! shared container paths, output order).

use std::fmt;

use super::{
    csi, docker, env, shown, CsiVolumeInput, DockerVolumeInput, DriverName, NameError, OptError,
    PathError, ResolveOptions, VolumeSpec,
};

/// The prefix of every variable this contract reads.
pub const PREFIX: &str = "DVDI_VOLUME_";

/// The fields of the environment form, as they follow [`PREFIX`].
///
/// These are the original module's six (`NAME`, `DRIVER`, `OPTS`, `CONTAINERPATH`,
/// `EXPLICITCREATE`, `DVDCLI`) plus `READONLY`.
pub const FIELDS: &[&str] = &[
    "NAME",
    "DRIVER",
    "OPTS",
    "CONTAINERPATH",
    "READONLY",
    "EXPLICITCREATE",
    "DVDCLI",
];

/// What resolution produced: the volumes, in a stable order, and warnings for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The volumes: environment form first (index order: none, 1…9), then `DOCKER_VOLUME`s in
    /// their order. A volume asked for twice in an accepted way appears once, where it was first
    /// asked for.
    pub volumes: Vec<VolumeSpec>,
    /// Things ignored on purpose (e.g. `DVDI_VOLUME_DVDCLI` when not allowed).
    pub warnings: Vec<SpecWarning>,
}

/// A task input that was ignored on purpose. `Display` is the message for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecWarning {
    /// `DVDI_VOLUME_DVDCLI<i>` names a program, but the operator does not let tasks choose what the
    /// agent runs as root.
    #[error("{variable} is ignored: a task may not choose the dvdcli program the agent runs as root (the operator can allow it with allow_task_dvdcli=true)")]
    TaskDvdcliIgnored {
        /// The variable, e.g. `DVDI_VOLUME_DVDCLI3`.
        variable: String,
    },
}

/// Where a volume was asked for: an environment index or a `ContainerInfo.volumes` entry.
///
/// `Display` names it the way a task author would look for it: `DVDI_VOLUME_NAME3`, or
/// `ContainerInfo.volumes[2] (DOCKER_VOLUME "pgdata")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The environment form; `None` for the unsuffixed variables.
    Env(Option<u8>),
    /// `ContainerInfo.volumes[index]`, a `DOCKER_VOLUME` named `name`.
    DockerVolume {
        /// The position in `ContainerInfo.volumes`.
        index: usize,
        /// `source.docker_volume.name` as given (possibly invalid).
        name: String,
    },
    /// `ContainerInfo.volumes[index]`, a `CSI_VOLUME` of the volume `volume_id`.
    CsiVolume {
        /// The position in `ContainerInfo.volumes`.
        index: usize,
        /// `source.csi_volume.static_provisioning.volume_id` as given (possibly invalid).
        volume_id: String,
    },
}

impl Origin {
    /// The variable or field that gives this volume's container path, as a task author would
    /// look for it: `DVDI_VOLUME_CONTAINERPATH3`, or `ContainerInfo.volumes[2].container_path
    /// (DOCKER_VOLUME "pgdata")`.
    pub fn container_path_place(&self) -> String {
        match self {
            Origin::Env(index) => env::variable_name("CONTAINERPATH", *index),
            Origin::DockerVolume { index, name } => format!(
                "ContainerInfo.volumes[{index}].container_path (DOCKER_VOLUME {:?})",
                shown(name)
            ),
            Origin::CsiVolume { index, volume_id } => format!(
                "ContainerInfo.volumes[{index}].container_path (CSI_VOLUME {:?})",
                shown(volume_id)
            ),
        }
    }
}

impl Origin {
    /// The variable or field that gives this volume's driver options: `DVDI_VOLUME_OPTS3`, or
    /// `ContainerInfo.volumes[2].driver_options (DOCKER_VOLUME "pgdata")`.
    pub fn opts_place(&self) -> String {
        match self {
            Origin::Env(index) => env::variable_name("OPTS", *index),
            Origin::DockerVolume { index, name } => format!(
                "ContainerInfo.volumes[{index}].driver_options (DOCKER_VOLUME {:?})",
                shown(name)
            ),
            Origin::CsiVolume { index, volume_id } => format!(
                "ContainerInfo.volumes[{index}].source.csi_volume.static_provisioning (CSI_VOLUME {:?})",
                shown(volume_id)
            ),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(index) => f.write_str(&env::variable_name("NAME", *index)),
            Origin::DockerVolume { index, name } => write!(
                f,
                "ContainerInfo.volumes[{index}] (DOCKER_VOLUME {:?})",
                shown(name)
            ),
            Origin::CsiVolume { index, volume_id } => write!(
                f,
                "ContainerInfo.volumes[{index}] (CSI_VOLUME {:?})",
                shown(volume_id)
            ),
        }
    }
}

/// A variable name as messages show it: bare when it is a plain identifier (every name this
/// contract defines), quoted and escaped otherwise, so a hostile name cannot forge log lines.
struct Var<'a>(&'a str);

impl fmt::Display for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

fn var(s: &str) -> Var<'_> {
    Var(s)
}

/// A task input that breaks the contract: the task fails in prepare and nothing is mounted.
///
/// The message names the variable (e.g. `DVDI_VOLUME_OPTS3`) or the `DOCKER_VOLUME` entry (e.g.
/// `ContainerInfo.volumes[2].container_path (DOCKER_VOLUME "pgdata")`), quotes the offending value
/// escaped, and says what would be valid. Causes from the validated types ([`NameError`],
/// [`OptError`], [`PathError`]) are kept in `source()` and not repeated here; render the whole
/// chain with [`crate::error::render_chain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A `DVDI_VOLUME_<FIELD>` variable whose suffix is not one digit 1–9.
    #[error("{}: the suffix {suffix:?} is not valid; use none or one digit 1-9 (at most 10 volumes), e.g. {PREFIX}{field}1", var(.variable))]
    BadSuffix {
        /// The variable as given.
        variable: String,
        /// The field it was read as.
        field: &'static str,
        /// The suffix after the field.
        suffix: String,
    },
    /// A `DVDI_VOLUME_*` variable that is not part of the contract (a typo must not silently
    /// drop a volume).
    #[error("{} is not a known variable; known: {}", var(.variable), known_variables())]
    UnknownVariable {
        /// The variable as given.
        variable: String,
    },
    /// A variable starting with `DVDI_VOLUME_` whose name is not UTF-8.
    #[error("{}: the variable name is not valid UTF-8; use {PREFIX}<FIELD>[1-9] in ASCII", var(.variable))]
    NameNotUtf8 {
        /// The name, lossily rendered (invalid bytes as U+FFFD).
        variable: String,
    },
    /// A `DVDI_VOLUME_*` variable whose value is not UTF-8.
    #[error("{variable}: the value {value:?} is not valid UTF-8; give UTF-8 text")]
    ValueNotUtf8 {
        /// The variable.
        variable: String,
        /// The value, lossily rendered (invalid bytes as U+FFFD).
        value: String,
    },
    /// Another field for an index without `DVDI_VOLUME_NAME<i>`.
    #[error("{variable} is set but {name_variable} is not; every volume needs a name")]
    MissingName {
        /// The variable without a name beside it.
        variable: String,
        /// The name variable that is missing.
        name_variable: String,
    },
    /// An invalid volume name.
    #[error("{place}: invalid volume name {value:?}")]
    BadName {
        /// The variable or field.
        place: String,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// An invalid driver name.
    #[error("{place}: invalid driver name {value:?}")]
    BadDriver {
        /// The variable or field.
        place: String,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// Invalid driver options.
    #[error("{place}: invalid options {value:?}")]
    BadOpts {
        /// The variable or field.
        place: String,
        /// The value as given (`DOCKER_VOLUME`: its pairs as `k=v,…`).
        value: String,
        /// Why.
        #[source]
        source: OptError,
    },
    /// An invalid container path.
    #[error("{place}: invalid container path {value:?}")]
    BadContainerPath {
        /// The variable or field.
        place: String,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: PathError,
    },
    /// `READONLY` or `EXPLICITCREATE` that is not `true` or `false`.
    #[error("{variable}: {value:?} is not a boolean; use true or false (any letter case)")]
    BadBool {
        /// The variable.
        variable: String,
        /// The value.
        value: String,
    },
    /// An invalid per-task dvdcli path (only checked when the operator allows one).
    #[error("{variable}: invalid dvdcli path {value:?}")]
    BadDvdcli {
        /// The variable.
        variable: String,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: PathError,
    },
    /// A driver the operator does not allow (`allowed_drivers`).
    #[error("{place}: driver {driver:?} is not allowed on this agent; allowed: {allowed}")]
    DriverNotAllowed {
        /// The variable or field (or, for a defaulted driver, the unset variable).
        place: String,
        /// The driver.
        driver: String,
        /// The allowed drivers, quoted and comma-separated.
        allowed: String,
    },
    /// A `DOCKER_VOLUME` without a driver. Mesos' `docker/volume` isolator refuses it too, rather
    /// than pick a driver the framework did not ask for.
    #[error("{place}: no driver is set; set source.docker_volume.driver (Mesos' docker/volume isolator requires it too)")]
    DockerVolumeWithoutDriver {
        /// The field, naming the entry.
        place: String,
    },
    /// A `CSI_VOLUME` this module cannot act on.
    #[error("{place} {why}")]
    BadCsiVolume {
        /// The field, naming the entry.
        place: String,
        /// What is wrong and what to give instead.
        why: String,
    },
    /// The same driver+name twice in a way that cannot be merged.
    #[error("{second} asks again for volume {name:?} of driver {driver:?} ({first} did) {reason}; one volume may appear twice only when neither gives a container path and both agree on options and modes")]
    Duplicate {
        /// Where it was asked for first.
        first: String,
        /// Where again.
        second: String,
        /// The driver.
        driver: String,
        /// The volume.
        name: String,
        /// What keeps the two from being merged.
        reason: &'static str,
    },
    /// Two volumes bound onto one container path.
    #[error("{second} uses container path {path:?}, which {first} uses already; give each volume its own path")]
    DuplicateContainerPath {
        /// The first volume.
        first: String,
        /// The second.
        second: String,
        /// The path.
        path: String,
    },
}

fn known_variables() -> String {
    FIELDS
        .iter()
        .map(|f| format!("{PREFIX}{f}[1-9]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses `driver` unless the operator's allow-list (if any) names it.
pub(super) fn check_allowed(
    place: impl FnOnce() -> String,
    driver: &DriverName,
    options: &ResolveOptions,
) -> Result<(), SpecError> {
    match &options.allowed_drivers {
        Some(allowed) if !allowed.contains(driver) => Err(SpecError::DriverNotAllowed {
            place: place(),
            driver: driver.to_string(),
            allowed: if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed
                    .iter()
                    .map(|d| format!("{:?}", d.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
        _ => Ok(()),
    }
}

/// Resolves a task's environment (NAME=VALUE byte pairs in order; later entries win) and its
/// `DOCKER_VOLUME` and `CSI_VOLUME` entries into volume specs, or the first way they break the contract.
///
/// Only variables starting with [`PREFIX`] are read; all others are ignored whatever bytes they
/// hold. Pure: no I/O; whether a container path exists is the mount layer's question.
///
/// ```
/// use mesos_dvdi::spec::{resolve, DriverName, ResolveOptions};
/// let options = ResolveOptions {
///     default_driver: DriverName::new("rexray").unwrap(),
///     allowed_drivers: None,
///     allow_task_dvdcli: false,
/// };
/// let env = [("DVDI_VOLUME_NAME", "pgdata"), ("DVDI_VOLUME_CONTAINERPATH", "/var/lib/pg")];
/// let resolved = resolve(&env, &[], &[], &options).unwrap();
/// assert_eq!(resolved.volumes[0].driver.as_str(), "rexray");
///
/// let typo = [("DVDI_VOLUME_NAME", "pgdata"), ("DVDI_VOLUME_CONTAINER_PATH", "/var/lib/pg")];
/// let err = resolve(&typo, &[], &[], &options).unwrap_err();
/// assert!(err.to_string().starts_with("DVDI_VOLUME_CONTAINER_PATH is not a known variable"));
/// ```
pub fn resolve<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    env: &[(K, V)],
    docker_volumes: &[DockerVolumeInput],
    csi_volumes: &[CsiVolumeInput],
    options: &ResolveOptions,
) -> Result<Resolved, SpecError> {
    let mut warnings = Vec::new();
    let mut specs = env::resolve_env(env, options, &mut warnings)?;
    for (index, input) in docker_volumes.iter().enumerate() {
        specs.push(docker::resolve_docker_volume(index, input, options)?);
    }
    for input in csi_volumes {
        specs.push(csi::resolve_csi_volume(input, options)?);
    }
    Ok(Resolved {
        volumes: dedup(specs)?,
        warnings,
    })
}

/// Applies the rules across volumes: one driver+name twice is kept once only when neither has a
/// container path and they agree on everything else; two volumes on one container path are
/// refused. Keeps the first occurrence's place in the order.
fn dedup(specs: Vec<(Origin, VolumeSpec)>) -> Result<Vec<VolumeSpec>, SpecError> {
    let mut out: Vec<(Origin, VolumeSpec)> = Vec::with_capacity(specs.len());
    for (origin, spec) in specs {
        if let Some((first, kept)) = out
            .iter()
            .find(|(_, s)| s.driver == spec.driver && s.name == spec.name)
        {
            let reason = if kept.container_path.is_some() || spec.container_path.is_some() {
                "with a container path"
            } else if spec != *kept {
                "with other options, modes or dvdcli"
            } else {
                // Harmless repetition (the original module ignored it too): one mount serves both.
                continue;
            };
            return Err(SpecError::Duplicate {
                first: first.to_string(),
                second: origin.to_string(),
                driver: spec.driver.to_string(),
                name: spec.name.to_string(),
                reason,
            });
        }
        if let Some(path) = &spec.container_path {
            if let Some((first, _)) = out
                .iter()
                .find(|(_, s)| s.container_path.as_ref() == Some(path))
            {
                return Err(SpecError::DuplicateContainerPath {
                    first: first.to_string(),
                    second: origin.to_string(),
                    path: path.to_string(),
                });
            }
        }
        out.push((origin, spec));
    }
    Ok(out.into_iter().map(|(_, s)| s).collect())
}
