//! Shared by the benches: an isolator whose backend answers at once (a test double), on tmpfs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesos_dvdi::backend::{
    Backend, BackendError, BackendProvider, Capabilities, MountId, MountRequest, Scope, VolumeInfo,
};
use mesos_dvdi::config::Config;
use mesos_dvdi::isolator::{ContainerInput, Isolator};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

/// A backend that answers at once (test double): mounting returns a fixed directory.
struct Instant0 {
    driver: DriverName,
    dir: PathBuf,
}

impl Backend for Instant0 {
    fn driver(&self) -> &DriverName {
        &self.driver
    }
    fn create(&self, _: &VolumeName, _: &VolumeOpts) -> Result<(), BackendError> {
        Ok(())
    }
    fn remove(&self, _: &VolumeName) -> Result<(), BackendError> {
        Ok(())
    }
    fn mount(&self, _: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        Ok(self.dir.clone())
    }
    fn unmount(&self, _: &VolumeName, _: &MountId) -> Result<(), BackendError> {
        Ok(())
    }
    fn path(&self, _: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        Ok(Some(self.dir.clone()))
    }
    fn get(&self, _: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        Ok(None)
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        Ok(Vec::new())
    }
    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        Ok(Capabilities {
            scope: Scope::Local,
        })
    }
}

struct InstantProvider(Arc<Instant0>);

impl BackendProvider for InstantProvider {
    fn backend(&self, _: &DriverName, _: Option<&Path>) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(self.0.clone())
    }
}

/// A scratch directory on tmpfs when there is one (the production work_dir is on tmpfs).
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

pub fn instant_isolator(dir: &Path) -> Isolator {
    instant_isolator_with(dir, |_| {})
}

/// [`instant_isolator`] with its configuration changed by `adjust` first (its driver is
/// `rexray`).
pub fn instant_isolator_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Isolator {
    let mut config = Config {
        work_dir: dir.join("work"),
        ..Config::default()
    };
    adjust(&mut config);
    std::fs::create_dir_all(dir.join("vol")).unwrap();
    let provider = InstantProvider(Arc::new(Instant0 {
        driver: DriverName::new("rexray").unwrap(),
        dir: dir.join("vol"),
    }));
    Isolator::new(config, Arc::new(provider)).unwrap()
}

pub fn input(dir: &Path, volume: &str, with_target: bool) -> ContainerInput {
    let sandbox = dir.join("sandbox");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut env = vec![(b"DVDI_VOLUME_NAME".to_vec(), volume.as_bytes().to_vec())];
    if with_target {
        env.push((b"DVDI_VOLUME_CONTAINERPATH".to_vec(), b"/data".to_vec()));
    }
    ContainerInput {
        env,
        sandbox,
        rootfs: Some(rootfs),
        ..ContainerInput::default()
    }
}
