//! The built-in `local` driver: a directory per volume under `local_root`.
//!
//! There is nothing to attach: "mounting" a local volume returns its directory, which the
//! container then gets as a bind. Data lives as long as the directory.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{Backend, BackendError, Call, Capabilities, MountId, MountRequest, Scope, VolumeInfo};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// A failed `local` operation; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A directory could not be created, read or removed.
    #[error("{op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
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
            driver: DriverName::new(super::registry::LOCAL_DRIVER).expect("valid driver name"),
            root,
        }
    }

    fn dir(&self, name: &VolumeName) -> PathBuf {
        // Volume names are single valid file names (no '/', not '.' or '..').
        self.root.join(name.as_str())
    }

    fn err(&self, name: Option<&VolumeName>, call: Call, e: LocalError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    fn exists(&self, name: &VolumeName, call: Call) -> Result<bool, BackendError> {
        let dir = self.dir(name);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(_) => Err(self.err(Some(name), call, LocalError::NotDirectory { path: dir })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(self.err(
                Some(name),
                call,
                LocalError::Io {
                    op: "inspecting",
                    path: dir,
                    source,
                },
            )),
        }
    }

    fn create_dir(&self, name: &VolumeName, call: Call) -> Result<(), BackendError> {
        let dir = self.dir(name);
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| self.err(Some(name), call, LocalError::Io { op, path, source })
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)
            .map_err(io("creating", &self.root))?;
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.exists(name, call).map(|_| ())
            }
            Err(e) => Err(io("creating", &dir)(e)),
        }
    }
}

impl Backend for LocalBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, _opts: &VolumeOpts) -> Result<(), BackendError> {
        self.create_dir(name, Call::Create)
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let dir = self.dir(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(self.err(
                Some(name),
                Call::Remove,
                LocalError::Io {
                    op: "removing",
                    path: dir,
                    source,
                },
            )),
        }
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        if !self.exists(req.name, Call::Mount)? {
            if req.explicit_create {
                return Err(BackendError::no_such_volume(&self.driver, req.name));
            }
            self.create_dir(req.name, Call::Mount)?;
        }
        Ok(self.dir(req.name))
    }

    fn unmount(&self, _name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        Ok(())
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        Ok(self.exists(name, Call::Path)?.then(|| self.dir(name)))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        Ok(self.exists(name, Call::Get)?.then(|| VolumeInfo {
            name: name.to_string(),
            mountpoint: Some(self.dir(name)),
            status: serde_json::Value::Null,
        }))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(self.err(
                    None,
                    Call::List,
                    LocalError::Io {
                        op: "listing",
                        path: self.root.clone(),
                        source,
                    },
                ))
            }
        };
        let mut out: Vec<VolumeInfo> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                VolumeName::new(name.as_str()).ok()?;
                Some(VolumeInfo {
                    name,
                    mountpoint: Some(e.path()),
                    status: serde_json::Value::Null,
                })
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
