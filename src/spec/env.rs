//! The environment form: `DVDI_VOLUME_<FIELD>[1-9]` variables → one spec per index.
//!
//! Every variable starting with [`PREFIX`] must be one of the contract's: a typo must fail the
//! task, not silently drop a volume (the original module ignored `DVDI_VOLUME_FOO` and mounted
//! nothing for it). Variables without the prefix are none of our business, whatever bytes they
//! hold.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::resolve::{check_allowed, Origin, SpecError, SpecWarning, PREFIX};
use super::{
    shown, Asked, ContainerPath, DriverName, ResolveOptions, VolumeName, VolumeOpts, VolumeSpec,
};

/// One field of the environment form. The order is the order checks run and report in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Name,
    Driver,
    Opts,
    ContainerPath,
    ReadOnly,
    ExplicitCreate,
    Dvdcli,
}

impl Field {
    const ALL: [Field; 7] = [
        Field::Name,
        Field::Driver,
        Field::Opts,
        Field::ContainerPath,
        Field::ReadOnly,
        Field::ExplicitCreate,
        Field::Dvdcli,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Field::Name => "NAME",
            Field::Driver => "DRIVER",
            Field::Opts => "OPTS",
            Field::ContainerPath => "CONTAINERPATH",
            Field::ReadOnly => "READONLY",
            Field::ExplicitCreate => "EXPLICITCREATE",
            Field::Dvdcli => "DVDCLI",
        }
    }
}

/// `DVDI_VOLUME_<field><index>`.
pub(super) fn variable_name(field: &str, index: Option<u8>) -> String {
    match index {
        Some(i) => format!("{PREFIX}{field}{i}"),
        None => format!("{PREFIX}{field}"),
    }
}

/// Splits the part of a variable after [`PREFIX`] into its field and index.
fn parse_variable(rest: &[u8], variable: &[u8]) -> Result<(Field, Option<u8>), SpecError> {
    let rendered = || shown(&String::from_utf8_lossy(variable));
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Err(SpecError::NameNotUtf8 {
            variable: rendered(),
        });
    };
    // No field is a prefix of another today; taking the longest match keeps it right if one
    // ever is (NAME vs. a future NAMESPACE).
    let Some(field) = Field::ALL
        .into_iter()
        .filter(|f| rest.starts_with(f.as_str()))
        .max_by_key(|f| f.as_str().len())
    else {
        return Err(SpecError::UnknownVariable {
            variable: rendered(),
        });
    };
    let suffix = &rest[field.as_str().len()..];
    let bad_suffix = || SpecError::BadSuffix {
        variable: rendered(),
        field: field.as_str(),
        suffix: shown(suffix),
    };
    match suffix.as_bytes() {
        [] => Ok((field, None)),
        [d @ b'1'..=b'9'] => Ok((field, Some(d - b'0'))),
        // Anything starting with a digit (NAME0, NAME10, NAME1X) and any one-character suffix
        // (NAMEX) is an attempt at an index; a longer word (NAMESPACE) is another variable.
        [b'0'..=b'9', ..] => Err(bad_suffix()),
        _ if suffix.chars().count() == 1 => Err(bad_suffix()),
        _ => Err(SpecError::UnknownVariable {
            variable: rendered(),
        }),
    }
}

/// The last value given for one field, with the variable it came from.
struct Entry<'a> {
    variable: String,
    value: &'a [u8],
}

impl Entry<'_> {
    /// The value as text. Checked here, after later entries have replaced earlier ones: a value
    /// the task overrides never mattered.
    fn text(&self) -> Result<&str, SpecError> {
        std::str::from_utf8(self.value).map_err(|_| SpecError::ValueNotUtf8 {
            variable: self.variable.clone(),
            value: shown(&String::from_utf8_lossy(self.value)),
        })
    }
}

/// Reads the environment form, in index order (none, 1…9).
pub(super) fn resolve_env<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    env: &[(K, V)],
    options: &ResolveOptions,
    warnings: &mut Vec<SpecWarning>,
) -> Result<Vec<(Origin, VolumeSpec)>, SpecError> {
    let mut indexes: BTreeMap<Option<u8>, BTreeMap<Field, Entry<'_>>> = BTreeMap::new();
    for (k, v) in env {
        let (k, v) = (k.as_ref(), v.as_ref());
        let Some(rest) = k.strip_prefix(PREFIX.as_bytes()) else {
            continue;
        };
        let (field, index) = parse_variable(rest, k)?;
        // Later entries win, as they do for the task's own environment.
        indexes.entry(index).or_default().insert(
            field,
            Entry {
                variable: variable_name(field.as_str(), index),
                value: v,
            },
        );
    }
    let mut out = Vec::with_capacity(indexes.len());
    for (index, fields) in &indexes {
        out.push((
            Origin::Env(*index),
            env_volume(*index, fields, options, warnings)?,
        ));
    }
    Ok(out)
}

/// Builds the spec of one index from its fields.
fn env_volume(
    index: Option<u8>,
    fields: &BTreeMap<Field, Entry<'_>>,
    options: &ResolveOptions,
    warnings: &mut Vec<SpecWarning>,
) -> Result<VolumeSpec, SpecError> {
    let Some(name_entry) = fields.get(&Field::Name) else {
        // An index exists only because some field named it; report the first in field order.
        let variable = fields
            .values()
            .next()
            .map_or_else(String::new, |e| e.variable.clone());
        return Err(SpecError::MissingName {
            variable,
            name_variable: variable_name(Field::Name.as_str(), index),
        });
    };
    let text = name_entry.text()?;
    let name = VolumeName::new(text).map_err(|source| SpecError::BadName {
        place: name_entry.variable.clone(),
        value: shown(text),
        source,
    })?;

    let driver = match fields.get(&Field::Driver) {
        Some(e) => {
            let text = e.text()?;
            let driver = DriverName::new(text).map_err(|source| SpecError::BadDriver {
                place: e.variable.clone(),
                value: shown(text),
                source,
            })?;
            check_allowed(|| e.variable.clone(), &driver, options)?;
            driver
        }
        None => {
            let driver = options.default_driver.clone();
            check_allowed(
                || {
                    format!(
                        "{} (unset, so the agent's default driver)",
                        variable_name(Field::Driver.as_str(), index)
                    )
                },
                &driver,
                options,
            )?;
            driver
        }
    };

    let opts = match fields.get(&Field::Opts) {
        None => VolumeOpts::empty(),
        Some(e) => {
            let text = e.text()?;
            VolumeOpts::parse(text).map_err(|source| SpecError::BadOpts {
                place: e.variable.clone(),
                value: shown(text),
                source,
            })?
        }
    };

    let container_path = match fields.get(&Field::ContainerPath) {
        None => None,
        Some(e) => {
            let text = e.text()?;
            Some(
                ContainerPath::absolute(text).map_err(|source| SpecError::BadContainerPath {
                    place: e.variable.clone(),
                    value: shown(text),
                    source,
                })?,
            )
        }
    };

    let read_only = flag(fields.get(&Field::ReadOnly))?;
    let explicit_create = flag(fields.get(&Field::ExplicitCreate))?;

    let dvdcli = match fields.get(&Field::Dvdcli) {
        None => None,
        Some(e) if !options.allow_task_dvdcli => {
            // Not even checked: whatever it says, it is not used.
            warnings.push(SpecWarning::TaskDvdcliIgnored {
                variable: e.variable.clone(),
            });
            None
        }
        Some(e) => {
            let text = e.text()?;
            let path = ContainerPath::absolute(text).map_err(|source| SpecError::BadDvdcli {
                variable: e.variable.clone(),
                value: shown(text),
                source,
            })?;
            Some(PathBuf::from(path.as_path()))
        }
    };

    Ok(VolumeSpec {
        driver,
        name,
        opts,
        container_path,
        read_only,
        explicit_create,
        dvdcli,
        csi: None,
        origin: Asked(Some(Origin::Env(index))),
    })
}

/// `READONLY` / `EXPLICITCREATE`: unset is false; otherwise exactly `true` or `false` in any
/// letter case. The original module read anything but `true` as false; a typo such as `ture`
/// must not quietly make a volume writable or creatable.
fn flag(entry: Option<&Entry<'_>>) -> Result<bool, SpecError> {
    let Some(e) = entry else {
        return Ok(false);
    };
    let text = e.text()?;
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(SpecError::BadBool {
            variable: e.variable.clone(),
            value: shown(text),
        })
    }
}
