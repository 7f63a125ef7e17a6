//! The `ContainerInfo` form for CSI: `CSI_VOLUME` entries of `ContainerInfo.volumes`, as Mesos
//! 1.11's own `volume/csi` isolator reads them (static provisioning: the volume exists already and
//! is named by its id).
//!
//! An entry becomes a volume of the driver `plugin_name` (a configured CSI plugin's type) named
//! by its `volume_id`, with the options `volume_id=` and `fstype=` the CSI backend reads for a
//! pre-provisioned volume, plus [`CsiStatic`]: the mount flags, volume context and secrets the
//! task gave for the node's calls.
//!
//! Refused, each naming its field: a `REFERENCE` secret (this module has no secret resolver), a
//! block volume (the host mount is a directory bound into the container), a missing static
//! provisioning or access mode, and an id that cannot be a volume name.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::resolve::{check_allowed, Origin, SpecError};
use super::{
    shown, Asked, ContainerPath, DriverName, ResolveOptions, VolumeName, VolumeOpts, VolumeSpec,
};

/// CSI's access modes (`VolumeCapability.AccessMode.Mode`) that only read.
const READER_MODES: [i32; 2] = [2, 3];
/// CSI's access modes a task may give (1 to 5; 0 is `UNKNOWN`).
const KNOWN_MODES: std::ops::RangeInclusive<i32> = 1..=5;

/// One secret of a `CSI_VOLUME`, as Mesos gives it. Its value is never shown: `Debug` prints
/// `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretInput {
    /// `type: VALUE`: the bytes to pass.
    Value(Vec<u8>),
    /// `type: REFERENCE`, naming a secret this module cannot resolve.
    Reference {
        /// `reference.name`.
        name: String,
    },
    /// No type, or one this module does not know.
    Unknown,
}

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<secret>)"),
            Self::Reference { name } => f.debug_struct("Reference").field("name", name).finish(),
            Self::Unknown => f.write_str("Unknown"),
        }
    }
}

/// A `CSI_VOLUME` entry of `ContainerInfo.volumes`, as Mesos gives it (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsiVolumeInput {
    /// Its position in `ContainerInfo.volumes`.
    pub index: usize,
    /// `source.csi_volume.plugin_name`.
    pub plugin_name: String,
    /// Whether `static_provisioning` is set.
    pub has_static_provisioning: bool,
    /// `static_provisioning.volume_id`.
    pub volume_id: String,
    /// `volume_capability.block` is set (rather than `mount`).
    pub block: bool,
    /// `volume_capability.mount.fs_type`.
    pub fs_type: String,
    /// `volume_capability.mount.mount_flags`.
    pub mount_flags: Vec<String>,
    /// `volume_capability.access_mode.mode` (0 when unset).
    pub access_mode: i32,
    /// `static_provisioning.volume_context`.
    pub volume_context: Vec<(String, String)>,
    /// `static_provisioning.node_stage_secrets`.
    pub node_stage_secrets: Vec<(String, SecretInput)>,
    /// `static_provisioning.node_publish_secrets`.
    pub node_publish_secrets: Vec<(String, SecretInput)>,
    /// `container_path`: absolute, or relative to the sandbox.
    pub container_path: String,
    /// `mode == RO`.
    pub read_only: bool,
}

/// Secrets passed to a plugin: kept in memory only (never serialised, never shown by `Debug`),
/// and taking no part in comparisons (a volume recovered from its record has none).
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    /// The secrets, for the RPC that carries them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.clone()
    }

    /// No secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Secrets({:?} → <secret>)",
            self.0.keys().collect::<Vec<_>>()
        )
    }
}

impl PartialEq for Secrets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Secrets {}

/// What a `CSI_VOLUME` adds to a volume for the CSI backend's node calls. Serialised without its
/// secrets: a record holds the rest, so a remount after a restart uses the same flags and context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsiStatic {
    /// The mount capability's `mount_flags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_flags: Vec<String>,
    /// The volume context given to `NodeStageVolume` and `NodePublishVolume`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_context: BTreeMap<String, String>,
    /// `NodeStageVolume`'s secrets.
    #[serde(skip)]
    pub node_stage_secrets: Secrets,
    /// `NodePublishVolume`'s secrets.
    #[serde(skip)]
    pub node_publish_secrets: Secrets,
}

/// Validates `ContainerInfo.volumes[input.index]`, a `CSI_VOLUME`.
pub(super) fn resolve_csi_volume(
    input: &CsiVolumeInput,
    options: &ResolveOptions,
) -> Result<(Origin, VolumeSpec), SpecError> {
    let index = input.index;
    let place = |field: &str| {
        format!(
            "ContainerInfo.volumes[{index}].{field} (CSI_VOLUME {:?})",
            shown(&input.volume_id)
        )
    };
    let stat = |field: &str| place(&format!("source.csi_volume.static_provisioning.{field}"));
    let refuse = |place: String, why: String| Err(SpecError::BadCsiVolume { place, why });
    if !input.has_static_provisioning {
        return refuse(
            place("source.csi_volume.static_provisioning"),
            "is not set; give the id of an existing volume there (Mesos 1.11 supports static provisioning only)".to_owned(),
        );
    }
    let driver =
        DriverName::new(input.plugin_name.as_str()).map_err(|source| SpecError::BadDriver {
            place: place("source.csi_volume.plugin_name"),
            value: shown(&input.plugin_name),
            source,
        })?;
    check_allowed(|| place("source.csi_volume.plugin_name"), &driver, options)?;
    // The id names the volume on this agent: its record, its directories, its lease.
    let name = VolumeName::new(input.volume_id.as_str()).map_err(|source| SpecError::BadName {
        place: stat("volume_id"),
        value: shown(&input.volume_id),
        source,
    })?;
    if input.block {
        return refuse(
            stat("volume_capability.block"),
            "block volumes are not supported: this module binds a mounted file system into the container; ask for volume_capability.mount".to_owned(),
        );
    }
    if !KNOWN_MODES.contains(&input.access_mode) {
        return refuse(
            stat("volume_capability.access_mode.mode"),
            format!("{} is not an access mode; use SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, MULTI_NODE_READER_ONLY, MULTI_NODE_SINGLE_WRITER or MULTI_NODE_MULTI_WRITER", input.access_mode),
        );
    }
    let mut pairs = vec![("volume_id".to_owned(), input.volume_id.clone())];
    if !input.fs_type.is_empty() {
        pairs.push(("fstype".to_owned(), input.fs_type.clone()));
    }
    let opts = VolumeOpts::from_pairs(pairs).map_err(|source| SpecError::BadOpts {
        place: stat("volume_id or volume_capability.mount.fs_type"),
        value: shown(&format!("{} {}", input.volume_id, input.fs_type)),
        source,
    })?;
    let container_path = ContainerPath::any(&input.container_path).map_err(|source| {
        SpecError::BadContainerPath {
            place: place("container_path"),
            value: shown(&input.container_path),
            source,
        }
    })?;
    let secrets = |field: &str, given: &[(String, SecretInput)]| {
        let mut out = BTreeMap::new();
        for (key, secret) in given {
            let value = match secret {
                SecretInput::Value(bytes) => String::from_utf8(bytes.clone()).map_err(|_| {
                    SpecError::BadCsiVolume {
                        place: stat(&format!("{field}[{key:?}]")),
                        why: "is not UTF-8, which CSI requires of a secret".to_owned(),
                    }
                })?,
                SecretInput::Reference { name } => {
                    return Err(SpecError::BadCsiVolume {
                        place: stat(&format!("{field}[{key:?}]")),
                        why: format!("is a REFERENCE secret ({:?}); this module passes only VALUE secrets to the plugin, so give its value as type VALUE", shown(name)),
                    })
                }
                SecretInput::Unknown => {
                    return Err(SpecError::BadCsiVolume {
                        place: stat(&format!("{field}[{key:?}]")),
                        why: "has no type this module knows; give it as type VALUE".to_owned(),
                    })
                }
            };
            out.insert(key.clone(), value);
        }
        Ok(Secrets(out))
    };
    let csi = CsiStatic {
        mount_flags: input.mount_flags.clone(),
        volume_context: input.volume_context.iter().cloned().collect(),
        node_stage_secrets: secrets("node_stage_secrets", &input.node_stage_secrets)?,
        node_publish_secrets: secrets("node_publish_secrets", &input.node_publish_secrets)?,
    };
    let origin = Origin::CsiVolume {
        index,
        volume_id: input.volume_id.clone(),
    };
    Ok((
        origin.clone(),
        VolumeSpec {
            driver,
            name,
            opts,
            container_path: Some(container_path),
            read_only: input.read_only || READER_MODES.contains(&input.access_mode),
            // A pre-provisioned volume: the backend never creates one given by its id.
            explicit_create: false,
            dvdcli: None,
            csi: Some(csi),
            origin: Asked(Some(origin)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ResolveOptions {
        ResolveOptions {
            default_driver: DriverName::new("local").unwrap(),
            allowed_drivers: None,
            allow_task_dvdcli: false,
        }
    }

    fn input() -> CsiVolumeInput {
        CsiVolumeInput {
            index: 3,
            plugin_name: "hostpath.csi.k8s.io".to_owned(),
            has_static_provisioning: true,
            volume_id: "vol-1".to_owned(),
            fs_type: "ext4".to_owned(),
            mount_flags: vec!["noatime".to_owned()],
            access_mode: 1,
            volume_context: vec![("k".to_owned(), "v".to_owned())],
            node_stage_secrets: vec![(
                "password".to_owned(),
                SecretInput::Value(b"hunter2".to_vec()),
            )],
            container_path: "data".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn a_static_volume_becomes_a_spec_named_by_its_id() {
        let (_, spec) = resolve_csi_volume(&input(), &options()).unwrap();
        assert_eq!(spec.driver.as_str(), "hostpath.csi.k8s.io");
        assert_eq!(spec.name.as_str(), "vol-1");
        assert_eq!(spec.opts.to_string(), "volume_id=vol-1,fstype=ext4");
        assert!(!spec.read_only);
        let csi = spec.csi.unwrap();
        assert_eq!(csi.mount_flags, ["noatime"]);
        assert_eq!(csi.node_stage_secrets.to_map()["password"], "hunter2");
    }

    #[test]
    fn a_reader_mode_binds_read_only() {
        let mut i = input();
        i.access_mode = 3;
        assert!(resolve_csi_volume(&i, &options()).unwrap().1.read_only);
    }

    #[test]
    fn secrets_are_neither_serialised_nor_shown() {
        let (_, spec) = resolve_csi_volume(&input(), &options()).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("noatime"), "{json}");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert!(!format!("{:?}", input()).contains("hunter2"));
    }

    #[test]
    fn a_reference_secret_is_refused_by_name() {
        let mut i = input();
        i.node_publish_secrets = vec![(
            "token".to_owned(),
            SecretInput::Reference {
                name: "/vault/token".to_owned(),
            },
        )];
        let err = resolve_csi_volume(&i, &options()).unwrap_err().to_string();
        assert!(err.starts_with("ContainerInfo.volumes[3].source.csi_volume.static_provisioning.node_publish_secrets[\"token\"] (CSI_VOLUME \"vol-1\")"), "{err}");
        assert!(err.contains("REFERENCE secret (\"/vault/token\")"), "{err}");
    }

    #[test]
    fn bad_entries_name_their_field() {
        type Breaks = fn(&mut CsiVolumeInput);
        let cases: [(Breaks, &str); 5] = [
            (
                |i| i.has_static_provisioning = false,
                "source.csi_volume.static_provisioning (CSI_VOLUME",
            ),
            (
                |i| i.block = true,
                "static_provisioning.volume_capability.block (CSI_VOLUME",
            ),
            (
                |i| i.access_mode = 0,
                "static_provisioning.volume_capability.access_mode.mode (CSI_VOLUME",
            ),
            (
                |i| i.volume_id = "a/b".to_owned(),
                "static_provisioning.volume_id (CSI_VOLUME",
            ),
            (
                |i| i.container_path = "../x".to_owned(),
                "volumes[3].container_path (CSI_VOLUME",
            ),
        ];
        for (breaks, field) in cases {
            let mut i = input();
            breaks(&mut i);
            let err = resolve_csi_volume(&i, &options()).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
