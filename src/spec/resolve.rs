//! Resolution: a task's environment and `DOCKER_VOLUME` entries → validated [`VolumeSpec`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::{
    shown, ContainerPath, DockerVolumeInput, DriverName, NameError, OptError, PathError,
    ResolveOptions, VolumeName, VolumeOpts, VolumeSpec,
};

/// The prefix of every variable this contract reads.
pub const PREFIX: &str = "DVDI_VOLUME_";

/// The fields of the environment form, as they follow [`PREFIX`].
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
    /// The volumes: environment form first (index order: none, 1…9), then `DOCKER_VOLUME`s.
    pub volumes: Vec<VolumeSpec>,
    /// Things ignored on purpose (e.g. `DVDI_VOLUME_DVDCLI` when not allowed).
    pub warnings: Vec<SpecWarning>,
}

/// A task input that was ignored on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecWarning {
    /// `DVDI_VOLUME_DVDCLI` names a program, but the operator does not let tasks choose what the
    /// agent runs as root.
    #[error("{variable} is ignored: a task may not choose the dvdcli program the agent runs (the operator can allow it with allow_task_dvdcli=true)")]
    TaskDvdcliIgnored {
        /// The variable.
        variable: String,
    },
}

/// Where a volume was asked for: an environment index or a `ContainerInfo.volumes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The environment form; `None` for the unsuffixed variables.
    Env(Option<u8>),
    /// `ContainerInfo.volumes[i]`.
    DockerVolume(usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(None) => write!(f, "{PREFIX}NAME"),
            Origin::Env(Some(i)) => write!(f, "{PREFIX}NAME{i}"),
            Origin::DockerVolume(i) => write!(f, "ContainerInfo.volumes[{i}] (DOCKER_VOLUME)"),
        }
    }
}

/// A task input that breaks the contract; the message names the variable or field, the value and
/// what would be valid. Causes from the validated types are kept in `source()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A `DVDI_VOLUME_*` variable whose suffix is not one digit 1–9.
    #[error("{variable}: the suffix {suffix:?} is not valid; use none or one digit 1-9 (at most 10 volumes), e.g. {PREFIX}{field}1")]
    BadSuffix {
        /// The variable as given (lossily rendered).
        variable: String,
        /// The field it was read as.
        field: &'static str,
        /// The suffix.
        suffix: String,
    },
    /// A `DVDI_VOLUME_*` variable that is not part of the contract.
    #[error("{variable} is not a known variable; known: {}", known_variables())]
    UnknownVariable {
        /// The variable (lossily rendered).
        variable: String,
    },
    /// A `DVDI_VOLUME_*` variable whose name or value is not UTF-8.
    #[error("{variable}: the value is not valid UTF-8 ({value:?})")]
    NotUtf8 {
        /// The variable (lossily rendered).
        variable: String,
        /// The value (lossily rendered).
        value: String,
    },
    /// Another field for an index without `DVDI_VOLUME_NAME<i>`.
    #[error("{variable} is set but {name_variable} is not; every volume needs a name")]
    MissingName {
        /// The orphaned variable.
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
        /// The value as given.
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
    /// A boolean that is not `true` or `false`.
    #[error("{variable}: {value:?} is not a boolean; use true or false")]
    BadBool {
        /// The variable.
        variable: String,
        /// The value.
        value: String,
    },
    /// An invalid per-task dvdcli path (when the operator allows one).
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
    /// A driver the operator does not allow.
    #[error("{place}: driver {driver:?} is not allowed on this agent; allowed: {allowed}")]
    DriverNotAllowed {
        /// The variable or field.
        place: String,
        /// The driver.
        driver: String,
        /// The allowed drivers, comma-separated.
        allowed: String,
    },
    /// A `DOCKER_VOLUME` without a driver (Mesos' `docker/volume` isolator refuses it too).
    #[error("{place}: volume {name:?} names no driver; set source.docker_volume.driver")]
    DockerVolumeWithoutDriver {
        /// The field.
        place: String,
        /// The volume name.
        name: String,
    },
    /// The same volume twice in a way that cannot be merged.
    #[error("{second} asks again for volume {name:?} of driver {driver:?} ({first} did); one volume may appear twice only when neither gives a container path and both agree on options and modes")]
    Duplicate {
        /// Where it was asked for first.
        first: String,
        /// Where again.
        second: String,
        /// The driver.
        driver: String,
        /// The volume.
        name: String,
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

/// The raw values of one environment index, each with the variable it came from.
#[derive(Default)]
struct RawEnvVolume {
    fields: BTreeMap<&'static str, (String, String)>,
}

fn variable_name(field: &str, index: Option<u8>) -> String {
    match index {
        Some(i) => format!("{PREFIX}{field}{i}"),
        None => format!("{PREFIX}{field}"),
    }
}

/// Splits `DVDI_VOLUME_<FIELD><suffix>` into its field and index.
fn parse_variable(rest: &str, variable: &str) -> Result<(&'static str, Option<u8>), SpecError> {
    // Longest field first, so NAME is never read as a prefix of a longer field.
    let mut fields: Vec<&'static str> = FIELDS.to_vec();
    fields.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let Some(field) = fields.into_iter().find(|f| rest.starts_with(f)) else {
        return Err(SpecError::UnknownVariable {
            variable: variable.to_owned(),
        });
    };
    let suffix = &rest[field.len()..];
    match suffix.as_bytes() {
        [] => Ok((field, None)),
        [d @ b'1'..=b'9'] => Ok((field, Some(d - b'0'))),
        // A suffix that is not a digit at all is a different (unknown) variable, e.g.
        // DVDI_VOLUME_NAMESPACE; anything starting with a digit is a bad index.
        [b'0'..=b'9', ..] => Err(SpecError::BadSuffix {
            variable: variable.to_owned(),
            field,
            suffix: suffix.to_owned(),
        }),
        _ if suffix.len() == 1 => Err(SpecError::BadSuffix {
            variable: variable.to_owned(),
            field,
            suffix: suffix.to_owned(),
        }),
        _ => Err(SpecError::UnknownVariable {
            variable: variable.to_owned(),
        }),
    }
}

fn parse_bool(variable: &str, value: &str) -> Result<bool, SpecError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(SpecError::BadBool {
            variable: variable.to_owned(),
            value: value.to_owned(),
        })
    }
}

fn check_allowed(
    place: &str,
    driver: &DriverName,
    options: &ResolveOptions,
) -> Result<(), SpecError> {
    match &options.allowed_drivers {
        Some(allowed) if !allowed.contains(driver) => Err(SpecError::DriverNotAllowed {
            place: place.to_owned(),
            driver: driver.to_string(),
            allowed: allowed
                .iter()
                .map(DriverName::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }),
        _ => Ok(()),
    }
}

/// Resolves a task's environment (NAME=VALUE pairs in order; later entries win) and its
/// `DOCKER_VOLUME` entries into volume specs.
///
/// ```
/// use mesos_dvdi::spec::{resolve, DriverName, ResolveOptions};
/// let options = ResolveOptions {
///     default_driver: DriverName::new("rexray").unwrap(),
///     allowed_drivers: None,
///     allow_task_dvdcli: false,
/// };
/// let env = [("DVDI_VOLUME_NAME", "pgdata"), ("DVDI_VOLUME_CONTAINERPATH", "/var/lib/pg")];
/// let resolved = resolve(&env, &[], &options).unwrap();
/// assert_eq!(resolved.volumes[0].driver.as_str(), "rexray");
/// ```
pub fn resolve<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    env: &[(K, V)],
    docker_volumes: &[DockerVolumeInput],
    options: &ResolveOptions,
) -> Result<Resolved, SpecError> {
    let mut raw: BTreeMap<Option<u8>, RawEnvVolume> = BTreeMap::new();
    for (k, v) in env {
        let (k, v) = (k.as_ref(), v.as_ref());
        let Some(rest) = k.strip_prefix(PREFIX.as_bytes()) else {
            continue;
        };
        let variable = shown(&String::from_utf8_lossy(k));
        let (Ok(rest), Ok(value)) = (std::str::from_utf8(rest), std::str::from_utf8(v)) else {
            return Err(SpecError::NotUtf8 {
                variable,
                value: shown(&String::from_utf8_lossy(v)),
            });
        };
        let (field, index) = parse_variable(rest, &variable)?;
        // Later entries win.
        raw.entry(index)
            .or_default()
            .fields
            .insert(field, (variable, value.to_owned()));
    }

    let mut warnings = Vec::new();
    let mut specs: Vec<(Origin, VolumeSpec)> = Vec::new();
    for (index, vol) in raw {
        let Some((name_var, name)) = vol.fields.get("NAME") else {
            let (variable, _) = vol.fields.values().next().expect("an index has a field");
            return Err(SpecError::MissingName {
                variable: variable.clone(),
                name_variable: variable_name("NAME", index),
            });
        };
        let name = VolumeName::new(name.as_str()).map_err(|source| SpecError::BadName {
            place: name_var.clone(),
            value: shown(name),
            source,
        })?;
        let driver = match vol.fields.get("DRIVER") {
            None => options.default_driver.clone(),
            Some((var, value)) => {
                let d = DriverName::new(value.as_str()).map_err(|source| SpecError::BadDriver {
                    place: var.clone(),
                    value: shown(value),
                    source,
                })?;
                check_allowed(var, &d, options)?;
                d
            }
        };
        if !vol.fields.contains_key("DRIVER") {
            check_allowed(&variable_name("DRIVER", index), &driver, options)?;
        }
        let opts = match vol.fields.get("OPTS") {
            None => VolumeOpts::empty(),
            Some((var, value)) => {
                VolumeOpts::parse(value).map_err(|source| SpecError::BadOpts {
                    place: var.clone(),
                    value: shown(value),
                    source,
                })?
            }
        };
        let container_path = match vol.fields.get("CONTAINERPATH") {
            None => None,
            Some((var, value)) => Some(ContainerPath::absolute(value).map_err(|source| {
                SpecError::BadContainerPath {
                    place: var.clone(),
                    value: shown(value),
                    source,
                }
            })?),
        };
        let flag = |field: &str| -> Result<bool, SpecError> {
            vol.fields
                .get(field)
                .map_or(Ok(false), |(var, value)| parse_bool(var, value))
        };
        let read_only = flag("READONLY")?;
        let explicit_create = flag("EXPLICITCREATE")?;
        let dvdcli = match vol.fields.get("DVDCLI") {
            None => None,
            Some((var, _)) if !options.allow_task_dvdcli => {
                warnings.push(SpecWarning::TaskDvdcliIgnored {
                    variable: var.clone(),
                });
                None
            }
            Some((var, value)) => {
                let p = ContainerPath::absolute(value).map_err(|source| SpecError::BadDvdcli {
                    variable: var.clone(),
                    value: shown(value),
                    source,
                })?;
                Some(PathBuf::from(p.as_path()))
            }
        };
        specs.push((
            Origin::Env(index),
            VolumeSpec {
                driver,
                name,
                opts,
                container_path,
                read_only,
                explicit_create,
                dvdcli,
            },
        ));
    }

    for (i, dv) in docker_volumes.iter().enumerate() {
        specs.push((Origin::DockerVolume(i), docker_volume(i, dv, options)?));
    }

    Ok(Resolved {
        volumes: dedup(specs)?,
        warnings,
    })
}

fn docker_volume(
    i: usize,
    dv: &DockerVolumeInput,
    options: &ResolveOptions,
) -> Result<VolumeSpec, SpecError> {
    let place = |field: &str| format!("ContainerInfo.volumes[{i}].{field}");
    let name = VolumeName::new(dv.name.as_str()).map_err(|source| SpecError::BadName {
        place: place("source.docker_volume.name"),
        value: shown(&dv.name),
        source,
    })?;
    // Mesos' docker/volume isolator refuses a DOCKER_VOLUME without a driver; so do we, rather
    // than guess one the framework did not ask for.
    if dv.driver.is_empty() {
        return Err(SpecError::DockerVolumeWithoutDriver {
            place: place("source.docker_volume.driver"),
            name: dv.name.clone(),
        });
    }
    let driver_place = place("source.docker_volume.driver");
    let driver = DriverName::new(dv.driver.as_str()).map_err(|source| SpecError::BadDriver {
        place: driver_place.clone(),
        value: shown(&dv.driver),
        source,
    })?;
    check_allowed(&driver_place, &driver, options)?;
    let opts = VolumeOpts::from_pairs(dv.driver_options.iter().cloned()).map_err(|source| {
        SpecError::BadOpts {
            place: place("source.docker_volume.driver_options"),
            value: shown(
                &dv.driver_options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            source,
        }
    })?;
    let container_path =
        ContainerPath::any(&dv.container_path).map_err(|source| SpecError::BadContainerPath {
            place: place("container_path"),
            value: shown(&dv.container_path),
            source,
        })?;
    Ok(VolumeSpec {
        driver,
        name,
        opts,
        container_path: Some(container_path),
        read_only: dv.read_only,
        explicit_create: false,
        dvdcli: None,
    })
}

/// Applies the duplicate rules: one volume twice is merged only when neither has a container
/// path and they agree; two volumes on one container path are refused.
fn dedup(specs: Vec<(Origin, VolumeSpec)>) -> Result<Vec<VolumeSpec>, SpecError> {
    let mut out: Vec<(Origin, VolumeSpec)> = Vec::with_capacity(specs.len());
    for (origin, spec) in specs {
        if let Some((first, kept)) = out
            .iter()
            .find(|(_, s)| s.driver == spec.driver && s.name == spec.name)
        {
            if kept.container_path.is_none() && spec == *kept {
                continue;
            }
            return Err(SpecError::Duplicate {
                first: first.to_string(),
                second: origin.to_string(),
                driver: spec.driver.to_string(),
                name: spec.name.to_string(),
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
