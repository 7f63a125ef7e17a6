//! One configuration for both front ends (DESIGN §6): the module's parameters and the `dvdi` CLI's
//! flags are parsed into the same [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use crate::spec::{DriverName, ResolveOptions};

/// How drivers other than the built-in ones are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The native Docker volume plugin protocol.
    Plugin,
    /// The `dvdcli` program.
    Dvdcli,
}

/// Every setting of the module and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Checkpoint root (`work_dir`).
    pub work_dir: PathBuf,
    /// Driver used when a volume names none (`default_driver`).
    pub default_driver: DriverName,
    /// How non-built-in drivers are reached (`backend`).
    pub backend: BackendKind,
    /// The dvdcli program (`dvdcli_path`).
    pub dvdcli_path: PathBuf,
    /// Plugin discovery directories, in order (`plugin_dirs`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The `local` driver's root (`local_root`).
    pub local_root: PathBuf,
    /// The `loop` driver's root (`loop_root`).
    pub loop_root: PathBuf,
    /// Limit for mount and create calls (`mount_timeout_secs`).
    pub mount_timeout: Duration,
    /// Limit for unmount and remove calls (`unmount_timeout_secs`).
    pub unmount_timeout: Duration,
    /// Drivers a task may name; `None`: all (`allowed_drivers`).
    pub allowed_drivers: Option<Vec<DriverName>>,
    /// Honour `DVDI_VOLUME_DVDCLI` (`allow_task_dvdcli`).
    pub allow_task_dvdcli: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("/var/run/mesos/isolators/dvdi"),
            default_driver: DriverName::new("rexray").expect("valid driver name"),
            backend: BackendKind::Plugin,
            dvdcli_path: PathBuf::from("/usr/bin/dvdcli"),
            plugin_dirs: [
                "/run/docker/plugins",
                "/etc/docker/plugins",
                "/usr/lib/docker/plugins",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            local_root: PathBuf::from("/var/lib/dvdi/local"),
            loop_root: PathBuf::from("/var/lib/dvdi/loop"),
            mount_timeout: Duration::from_secs(120),
            unmount_timeout: Duration::from_secs(600),
            allowed_drivers: None,
            allow_task_dvdcli: false,
        }
    }
}

impl Config {
    /// The settings spec resolution needs.
    pub fn resolve_options(&self) -> ResolveOptions {
        ResolveOptions {
            default_driver: self.default_driver.clone(),
            allowed_drivers: self.allowed_drivers.clone(),
            allow_task_dvdcli: self.allow_task_dvdcli,
        }
    }

    /// Backend call limits.
    pub fn timeouts(&self) -> crate::backend::Timeouts {
        crate::backend::Timeouts {
            mount: self.mount_timeout,
            unmount: self.unmount_timeout,
        }
    }
}
