//! The built-in `local` driver: a directory per volume under `local_root`.
//!
//! There is nothing to attach: "mounting" a local volume returns its directory, which the
//! container then gets as a bind, and unmounting does nothing. Data lives as long as the
//! directory. A volume directory is only ever a real directory directly under the root: a
//! symlink or file in its place is refused, never followed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, BackendError, Call, Capabilities, MountId, MountRequest, Scope, VolumeInfo};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// The mode of a volume directory: the task may run as any user, and reads it at least.
const VOLUME_MODE: u32 = 0o755;

/// A failed `local` operation; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The root directory could not be created.
    #[error("creating the local volume root {path} failed")]
    CreateRoot {
        /// The root.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A volume directory could not be created.
    #[error("creating volume directory {path} failed")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A new volume directory could not be given its mode (the umask is not trusted).
    #[error("setting mode 0755 on {path} failed")]
    SetMode {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A volume directory could not be inspected.
    #[error("inspecting {path} failed")]
    Inspect {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A volume directory could not be removed.
    #[error("removing volume directory {path} failed")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The root could not be listed.
    #[error("listing {path} failed")]
    List {
        /// The root.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something other than a directory where a volume should be.
    #[error("{path} exists and is not a directory; move it away")]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
}

/// The name of the built-in directory driver.
pub const LOCAL_DRIVER: &str = "local";

/// The `local` driver.
#[derive(Debug)]
pub struct LocalBackend {
    driver: DriverName,
    root: PathBuf,
}

impl LocalBackend {
    /// Volumes live in directories under `root` (created when first needed).
    pub fn new(root: PathBuf) -> Self {
        Self {
            driver: DriverName::new(LOCAL_DRIVER).expect("valid driver name"),
            root,
        }
    }

    /// The directory of a volume.
    pub fn dir(&self, name: &VolumeName) -> PathBuf {
        // Volume names are single valid file names (no '/', not '.' or '..').
        self.root.join(name.as_str())
    }

    fn err(&self, name: Option<&VolumeName>, call: Call, e: LocalError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// Whether the volume's directory exists; anything else in its place is an error.
    fn exists(&self, name: &VolumeName) -> Result<bool, LocalError> {
        let path = self.dir(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(_) => Err(LocalError::NotDirectory { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(LocalError::Inspect { path, source }),
        }
    }

    /// Makes the volume's directory (and the root) unless it exists.
    fn create_dir(&self, name: &VolumeName) -> Result<(), LocalError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(VOLUME_MODE)
            .create(&self.root)
            .map_err(|source| LocalError::CreateRoot {
                path: self.root.clone(),
                source,
            })?;
        let path = self.dir(name);
        match fs::DirBuilder::new().mode(VOLUME_MODE).create(&path) {
            Ok(()) => fs::set_permissions(&path, fs::Permissions::from_mode(VOLUME_MODE))
                .map_err(|source| LocalError::SetMode { path, source }),
            // Made meanwhile, or before: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.exists(name).map(|_| ()),
            Err(source) => Err(LocalError::CreateDir { path, source }),
        }
    }

    fn info(&self, name: &str, path: &Path) -> VolumeInfo {
        VolumeInfo {
            name: name.to_owned(),
            mountpoint: Some(path.to_owned()),
            status: serde_json::Value::Null,
        }
    }
}

/// What the `local` driver says of options it is given: it takes none, so each is ignored.
/// `None` when there are none.
pub fn ignored_options(opts: &VolumeOpts) -> Option<String> {
    (!opts.is_empty()).then(|| {
        format!("options {opts} are ignored: the local driver takes none (a local volume is a directory, with no size or file system of its own)")
    })
}

impl Backend for LocalBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        if let Some(w) = ignored_options(opts) {
            log::warn!(
                "{}: {w}",
                crate::spec::VolumeKey {
                    driver: self.driver.clone(),
                    name: name.clone()
                }
            );
        }
        self.create_dir(name)
            .map_err(|e| self.err(Some(name), Call::Create, e))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let fail = |e| self.err(Some(name), Call::Remove, e);
        // Never follow a symlink in a volume's place into someone else's data.
        if !self.exists(name).map_err(fail)? {
            return Ok(());
        }
        let path = self.dir(name);
        fs::remove_dir_all(&path).map_err(|source| fail(LocalError::Remove { path, source }))
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let fail = |e| self.err(Some(req.name), Call::Mount, e);
        if let Some(w) = ignored_options(req.opts) {
            log::warn!(
                "{}: {w}",
                crate::spec::VolumeKey {
                    driver: self.driver.clone(),
                    name: req.name.clone()
                }
            );
        }
        if !self.exists(req.name).map_err(fail)? {
            if req.explicit_create {
                return Err(BackendError::no_such_volume(&self.driver, req.name));
            }
            self.create_dir(req.name).map_err(fail)?;
        }
        Ok(self.dir(req.name))
    }

    fn unmount(&self, _name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        // Nothing was attached: the directory simply stays.
        Ok(())
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        Ok(self
            .exists(name)
            .map_err(|e| self.err(Some(name), Call::Path, e))?
            .then(|| self.dir(name)))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        Ok(self
            .exists(name)
            .map_err(|e| self.err(Some(name), Call::Get, e))?
            .then(|| self.info(name.as_str(), &self.dir(name))))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(self.err(
                    None,
                    Call::List,
                    LocalError::List {
                        path: self.root.clone(),
                        source,
                    },
                ))
            }
        };
        // Entries that are not directories, or whose names are not volume names, are not
        // volumes (an operator's stray file must not break listing).
        let mut out: Vec<VolumeInfo> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                VolumeName::new(name.as_str()).ok()?;
                Some(self.info(&name, &e.path()))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        Ok(Capabilities {
            scope: Scope::Local,
        })
    }
}
