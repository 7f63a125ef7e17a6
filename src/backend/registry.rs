//! Which backend serves a driver: a configured CSI plugin serves its type; the built-in `local` and `loop` drivers shadow plugins of the
//! same name (as Docker's own `local` does); every other driver is a Docker volume plugin or,
//! with `backend=dvdcli`, the dvdcli program.
//!
//! Every backend it opens is wrapped in [`Checked`], so no mount point reaches the isolator
//! unchecked; `plugin_mount_roots` applies to plugins and dvdcli, not to the built-in drivers
//! (their mount points lie under the roots the operator configured for them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::answer::{Checked, MountpointPolicy};
use super::csi::{CsiBackend, CsiBackendError};
use super::dvdcli::DvdcliBackend;
use super::local::LocalBackend;
use super::loopdev::LoopBackend;
use super::plugin::{discover, PluginBackend};
use super::{Backend, BackendError, BackendProvider, Call, Waits};
use crate::config::{BackendKind, Config};
use crate::csi::PluginInfo;
use crate::mount::Mounter;
use crate::spec::{DriverName, VolumeOpts};

// The built-in drivers' names are theirs; re-exported here, where drivers are chosen by name.
pub use super::local::LOCAL_DRIVER;
pub use super::loopdev::LOOP_DRIVER;

/// An option a built-in driver refuses.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The `loop` driver's.
    #[error(transparent)]
    Loop(#[from] super::loopdev::LoopError),
}

/// A volume's options checked as its built-in driver's mount would check them, before anything
/// is touched: an error for what the driver refuses, a warning for each option it ignores.
/// Other drivers' options are theirs to judge: nothing is said of them here.
pub fn check_options(driver: &DriverName, opts: &VolumeOpts) -> Result<Vec<String>, OptionsError> {
    match driver.as_str() {
        LOOP_DRIVER => {
            super::loopdev::check_options(opts)?;
            Ok(Vec::new())
        }
        LOCAL_DRIVER => Ok(super::local::ignored_options(opts).into_iter().collect()),
        _ => Ok(Vec::new()),
    }
}

/// A driver and, for per-task dvdcli programs, the program.
type CacheKey = (DriverName, Option<PathBuf>);

/// Finds and caches the backend for each driver, as the configuration says.
pub struct Registry {
    config: Config,
    mounter: Arc<dyn Mounter>,
    /// Keyed by driver and, for per-task dvdcli programs, the program.
    cache: Mutex<HashMap<CacheKey, Arc<dyn Backend>>>,
    waits: Waits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry for `config`, mounting built-in volumes through `mounter`.
    pub fn new(config: Config, mounter: Arc<dyn Mounter>) -> Self {
        Self {
            config,
            mounter,
            cache: Mutex::new(HashMap::new()),
            waits: Waits::default(),
        }
    }

    /// What its backends are waiting for right now (a plugin that refuses connections), for a
    /// progress display.
    pub fn waits(&self) -> &Waits {
        &self.waits
    }

    fn open(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let timeouts = self.config.timeouts();
        let external = MountpointPolicy {
            roots: self.config.plugin_mount_roots.clone(),
        };
        if let Some(info) = self.config.csi_plugin(driver) {
            return self.open_csi(driver, info);
        }
        let (backend, policy): (Arc<dyn Backend>, _) = match (driver.as_str(), dvdcli) {
            (LOCAL_DRIVER, _) => (
                Arc::new(LocalBackend::new(self.config.local_root.clone())),
                MountpointPolicy::default(),
            ),
            (LOOP_DRIVER, _) => (
                Arc::new(
                    LoopBackend::new(self.config.loop_root.clone(), Arc::clone(&self.mounter))
                        .with_timeouts(timeouts),
                ),
                MountpointPolicy::default(),
            ),
            (_, Some(program)) => (
                Arc::new(DvdcliBackend::new(
                    program.to_owned(),
                    driver.clone(),
                    timeouts,
                )),
                external,
            ),
            _ => match self.config.backend {
                BackendKind::Dvdcli => (
                    Arc::new(DvdcliBackend::new(
                        self.config.dvdcli_path.clone(),
                        driver.clone(),
                        timeouts,
                    )),
                    external,
                ),
                BackendKind::Plugin => (
                    Arc::new(
                        PluginBackend::discover(driver, &self.config.plugin_dirs, timeouts)?
                            .with_connect_timeout(self.config.plugin_connect_timeout)
                            .with_waits(self.waits.clone()),
                    ),
                    external,
                ),
            },
        };
        Ok(Arc::new(Checked::new(backend, policy)))
    }
}

impl Registry {
    /// The backend of a configured CSI plugin. Its type may be no other driver's name: a
    /// built-in driver's, or a Docker plugin's that discovery finds (which would otherwise
    /// decide silently which of the two a task gets).
    fn open_csi(
        &self,
        driver: &DriverName,
        info: &PluginInfo,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let conflict = |other: String| {
            BackendError::new(
                driver,
                None,
                Call::Activate,
                CsiBackendError::NameConflict {
                    driver: driver.as_str().to_owned(),
                    file: info.file.clone(),
                    other,
                },
            )
        };
        if [LOCAL_DRIVER, LOOP_DRIVER].contains(&driver.as_str()) {
            return Err(conflict("a built-in driver".to_owned()));
        }
        if let Ok(found) = discover(driver, &self.config.plugin_dirs) {
            return Err(conflict(format!(
                "the Docker volume plugin at {}",
                found.addr
            )));
        }
        let backend = CsiBackend::new(info.clone(), &self.config.work_dir, self.config.timeouts())
            .map_err(|e| BackendError::new(driver, None, Call::Activate, e))?;
        // The target is of this backend's making, under the work directory or the plugin's
        // configured target root: only the checks every answer gets apply.
        Ok(Arc::new(Checked::new(
            Arc::new(backend),
            MountpointPolicy::default(),
        )))
    }
}

impl BackendProvider for Registry {
    fn backend(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let key = (driver.clone(), dvdcli.map(Path::to_owned));
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(b));
        }
        // Discovery and activation may wait on a plugin: never under the cache lock. Two threads
        // may both open the backend; the first one cached wins, which is harmless.
        let opened = self.open(driver, dvdcli)?;
        Ok(Arc::clone(
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert(opened),
        ))
    }
}
