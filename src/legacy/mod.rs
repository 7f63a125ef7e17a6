//! Upgrade in place: what the original module (mesos-module-dvdi) had mounted becomes records of ours.
//!
//! At recover, before reconciling, every entry of the original's checkpoint files
//! (`legacy_checkpoint`) becomes a user of a volume record: the volume, its options and mount
//! point, the container as a Mesos container. Only then is the file renamed aside (`.imported`),
//! so a crash in between leaves the file to be imported again, which changes nothing: a user
//! already recorded is not added twice. The reconcile that follows keeps what the agent still
//! runs and releases the rest through the configured backend.
//!
//! This module never calls a backend and never unmounts: it only writes records, under each
//! volume's lock, and renames files it has fully imported. A file it cannot parse is left where
//! it is, and said so.

mod format;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use format::{decode_json, decode_protobuf, ExternalMount, ExternalMountList, FormatError};

use crate::backend::MountId;
use crate::error::render_chain;
use crate::spec::{DriverName, NameError, OptError, VolumeKey, VolumeName, VolumeOpts};
use crate::state::{
    ContainerId, ContainerIdError, Owner, Phase, StateError, Store, Use, VolumeRecord,
    CHECKPOINT_VERSION,
};

/// The suffix a fully imported file is renamed with.
pub const IMPORTED_SUFFIX: &str = ".imported";

/// The mount id of an imported volume (the original mounted through dvdcli, under no id of ours).
pub const IMPORTED_MOUNT_ID: &str = "mesos-module-dvdi";

/// A legacy checkpoint that could not be read as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The file could not be read.
    #[error("reading legacy checkpoint {path} failed")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not in either of the original's formats.
    #[error("legacy checkpoint {path} cannot be parsed and was left in place; nothing in it was imported (fix or remove it, then restart the agent)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// Writing an entry's record failed; the file stays, to be imported again.
    #[error("legacy checkpoint {path}: recording {volume} failed; the file was left in place and is imported again at the next recover")]
    Record {
        /// The file.
        path: PathBuf,
        /// The volume.
        volume: VolumeKey,
        /// Why.
        #[source]
        source: Box<StateError>,
    },
    /// Renaming the imported file aside failed.
    #[error("legacy checkpoint {path}: imported, but renaming it to {aside} failed (it will be imported again, which changes nothing while its containers run)")]
    Rename {
        /// The file.
        path: PathBuf,
        /// Where it was to go.
        aside: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why one entry of a legacy checkpoint was skipped.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The container id is not one of ours.
    #[error("container id")]
    ContainerId(#[source] ContainerIdError),
    /// The driver name breaks our rules.
    #[error("driver name")]
    Driver(#[source] NameError),
    /// The volume name breaks our rules.
    #[error("volume name")]
    Volume(#[source] NameError),
    /// The options break our rules.
    #[error("options")]
    Options(#[source] OptError),
    /// The mount point is not an absolute path.
    #[error("mount point {0:?} is not an absolute path")]
    MountPoint(String),
}

/// A skipped entry, naming its file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("legacy checkpoint {path}: entry {index} (container {container:?}, volume {volume:?}, driver {driver:?}) was skipped: its {source}; release that volume by hand if it is still mounted")]
pub struct SkippedEntry {
    /// The file.
    pub path: PathBuf,
    /// The entry's position in the file, from 0.
    pub index: usize,
    /// Its container id as written.
    pub container: String,
    /// Its volume name as written.
    pub volume: String,
    /// Its driver as written.
    pub driver: String,
    /// Why.
    pub source: EntryError,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Files imported and renamed aside, with how many entries each held.
    pub imported: Vec<(PathBuf, usize)>,
    /// Users added to records (0 when every entry was recorded already).
    pub added: usize,
    /// Problems, rendered, each naming its file (and entry).
    pub errors: Vec<String>,
}

/// One entry, validated.
struct Entry {
    key: VolumeKey,
    container: ContainerId,
    opts: VolumeOpts,
    mount_point: Option<PathBuf>,
}

/// Reads and decodes one legacy checkpoint; `None` when it does not exist. The form follows the
/// name: `*.json` is the JSON form, anything else the protobuf form.
pub fn read(path: &Path) -> Result<Option<Vec<ExternalMount>>, LegacyError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LegacyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let decoded = if path.extension().is_some_and(|e| e == "json") {
        decode_json(&bytes)
    } else {
        decode_protobuf(&bytes)
    };
    decoded.map(Some).map_err(|source| LegacyError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The legacy checkpoints among `paths` that exist but cannot be imported, each with why (for
/// `dvdi status` and the health endpoint). Reads the files; changes nothing.
pub fn unreadable(paths: &[PathBuf]) -> Vec<(PathBuf, String)> {
    paths
        .iter()
        .filter_map(|p| match read(p) {
            Err(e) => Some((p.clone(), render_chain(&e))),
            Ok(_) => None,
        })
        .collect()
}

fn validate(m: &ExternalMount) -> Result<Entry, EntryError> {
    let container = ContainerId::new(m.containerid.as_str()).map_err(EntryError::ContainerId)?;
    let driver = DriverName::new(m.volumedriver.as_str()).map_err(EntryError::Driver)?;
    let name = VolumeName::new(m.volumename.as_str()).map_err(EntryError::Volume)?;
    // The original passed each non-empty item as one --volumeopts; empty items were skipped.
    let items: Vec<&str> = m
        .options
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|i| !i.is_empty())
        .collect();
    let opts = VolumeOpts::parse(&items.join(",")).map_err(EntryError::Options)?;
    let mount_point = match m.mountpoint.as_deref() {
        None | Some("") => None,
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => return Err(EntryError::MountPoint(p.to_owned())),
    };
    Ok(Entry {
        key: VolumeKey { driver, name },
        container,
        opts,
        mount_point,
    })
}

/// Imports every legacy checkpoint of `paths` into `store` (see the module docs). Never fails as
/// a whole: each problem is in the report, and recovery goes on without what it concerns.
pub fn import(store: &Store, paths: &[PathBuf]) -> ImportReport {
    let mut report = ImportReport::default();
    for path in paths {
        let mounts = match read(path) {
            Ok(None) => continue,
            Ok(Some(mounts)) => mounts,
            Err(e) => {
                log::error!("{}", render_chain(&e));
                report.errors.push(render_chain(&e));
                continue;
            }
        };
        // One record per volume, however many containers shared it.
        let mut volumes: BTreeMap<VolumeKey, Vec<Entry>> = BTreeMap::new();
        for (index, m) in mounts.iter().enumerate() {
            match validate(m) {
                Ok(entry) => volumes.entry(entry.key.clone()).or_default().push(entry),
                Err(source) => {
                    let e = SkippedEntry {
                        path: path.clone(),
                        index,
                        container: m.containerid.clone(),
                        volume: m.volumename.clone(),
                        driver: m.volumedriver.clone(),
                        source,
                    };
                    log::error!("{}", render_chain(&e));
                    report.errors.push(render_chain(&e));
                }
            }
        }
        let mut complete = true;
        for (key, entries) in &volumes {
            match record(store, key, entries) {
                Ok(added) => report.added += added,
                Err(source) => {
                    complete = false;
                    let e = LegacyError::Record {
                        path: path.clone(),
                        volume: key.clone(),
                        source: Box::new(source),
                    };
                    log::error!("{}", render_chain(&e));
                    report.errors.push(render_chain(&e));
                }
            }
        }
        if !complete {
            continue;
        }
        let mut aside = path.clone().into_os_string();
        aside.push(IMPORTED_SUFFIX);
        let aside = PathBuf::from(aside);
        if let Err(source) = rename_durably(path, &aside) {
            let e = LegacyError::Rename {
                path: path.clone(),
                aside,
                source,
            };
            log::error!("{}", render_chain(&e));
            report.errors.push(render_chain(&e));
            continue;
        }
        log::info!(
            "imported {} mount(s) of {} volume(s) from the original module's {} (now {})",
            mounts.len(),
            volumes.len(),
            path.display(),
            aside.display()
        );
        report.imported.push((path.clone(), mounts.len()));
    }
    report
}

/// Adds the entries' containers as users of `key`'s record (creating it as the original left the
/// volume); returns how many users were added. Saves nothing when every one is there already.
fn record(store: &Store, key: &VolumeKey, entries: &[Entry]) -> Result<usize, StateError> {
    let guard = store.lock(key)?;
    let mut record = match guard.load()? {
        Some(record) => record,
        None => {
            let first = &entries[0];
            let host_path = entries.iter().find_map(|e| e.mount_point.clone());
            VolumeRecord {
                version: CHECKPOINT_VERSION,
                driver: key.driver.clone(),
                name: key.name.clone(),
                opts: first.opts.clone(),
                // The volume existed when the original mounted it: a remount never creates.
                explicit_create: true,
                dvdcli: None,
                csi: None,
                mount_id: MountId(IMPORTED_MOUNT_ID.to_owned()),
                // Without a mount point the mount may or may not have happened.
                phase: if host_path.is_some() {
                    Phase::Mounted
                } else {
                    Phase::Mounting
                },
                is_mount_point: host_path
                    .as_deref()
                    .and_then(crate::mount::is_mount_root)
                    .unwrap_or(false),
                device: host_path
                    .as_deref()
                    .filter(|p| crate::mount::is_mount_root(p) == Some(true))
                    .and_then(crate::mount::DeviceNumber::of_path),
                host_path,
                users: BTreeMap::new(),
                last_error: None,
                lease: None,
            }
        }
    };
    let mut added = 0;
    for entry in entries {
        if !record.users.contains_key(&entry.container) {
            record.users.insert(
                entry.container.clone(),
                Use {
                    // The original bound inside the container itself; no host target is known.
                    target: None,
                    read_only: false,
                    owner: Owner::Mesos,
                },
            );
            added += 1;
        }
    }
    if added > 0 {
        guard.save(&record)?;
    }
    Ok(added)
}

/// Renames `from` to `to` and makes the rename durable (fsync of the directory).
fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let dir = to.parent().unwrap_or(Path::new("/"));
    fs::File::open(dir)?.sync_all()
}
