//! One configuration for both front ends: the module's parameters and the `dvdi` CLI's
//! flags are parsed into the same [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::coord::zk::{ZkTarget, ZkUrlError};
use crate::csi::{PluginConfigError, PluginInfo};
use crate::spec::{CsiVolumeInput, DockerVolumeInput, DriverName, NameError, ResolveOptions};

/// Every key the module and `--config` files accept, in the order `isolator.json` lists them.
pub const KEYS: &[&str] = &[
    "work_dir",
    "default_driver",
    "backend",
    "dvdcli_path",
    "plugin_dirs",
    "local_root",
    "loop_root",
    "mount_timeout_secs",
    "unmount_timeout_secs",
    "allowed_drivers",
    "allow_task_dvdcli",
    "coordination",
    "agent_name",
    "lease_session_timeout_secs",
    "lease_wait_secs",
    "lease_drivers",
    "docker_volumes",
    "csi_volumes",
    "plugin_mount_roots",
    "plugin_connect_secs",
    "call_threads",
    "csi_plugin_config_dir",
    "legacy_checkpoint",
    "state_dir",
];

/// The module's own name (`isolator.json`, `--isolation`).
pub const MODULE_NAME: &str = "org_apache_mesos_DvdiIsolator";

/// The name of the module this one replaces (mesos-module-dvdi), which it also answers to.
pub const LEGACY_MODULE_NAME: &str = "com_emccode_mesos_DockerVolumeDriverIsolator";

/// The agent work directory the original module assumed when given no `work_dir`.
pub const LEGACY_AGENT_WORK_DIR: &str = "/tmp/mesos";

/// Where the original module kept its mount list, whatever the agent's work directory: its
/// releases from May 2016 on (0.4.3 and later) wrote this fixed path.
pub const LEGACY_FIXED_CHECKPOINT: &str =
    "/var/run/mesos/isolators/mesos-module-dvdi/dvdimounts.pb";

/// Where the original module's first release (0.1.0) kept its mount list, as JSON.
pub const LEGACY_FIRST_CHECKPOINT: &str = "/var/lib/mesos/dvdi/dvdimounts.json";

/// The original module's checkpoints, newest release first, given the agent's work directory
/// (the original's `work_dir`): the fixed path of 0.4.3 and later, `<work_dir>/meta/dvdimounts.pb`
/// of 0.3.0 to 0.4.2, `<work_dir>/meta/dvdimounts.json` of 0.2.0, and the JSON file of 0.1.0.
pub fn legacy_checkpoints(agent_work_dir: &Path) -> Vec<PathBuf> {
    let meta = agent_work_dir.join("meta");
    vec![
        PathBuf::from(LEGACY_FIXED_CHECKPOINT),
        meta.join("dvdimounts.pb"),
        meta.join("dvdimounts.json"),
        PathBuf::from(LEGACY_FIRST_CHECKPOINT),
    ]
}

/// A setting that could not be used; each names the key and the value and says what is valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key that is not a setting.
    #[error("unknown parameter {key:?}; known parameters: {}", KEYS.join(", "))]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("parameter {key:?} is given twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A path setting that is not absolute.
    #[error("parameter {key}: {value:?} is not an absolute path")]
    NotAbsolute {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A timeout that is not a positive whole number of seconds.
    #[error("parameter {key}: {value:?} is not a positive whole number of seconds")]
    BadSeconds {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A count that is not a positive whole number.
    #[error("parameter {key}: {value:?} is not a positive whole number")]
    BadCount {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A boolean that is not `true` or `false`.
    #[error("parameter {key}: {value:?} is not true or false")]
    BadBool {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A backend other than `plugin` or `dvdcli`.
    #[error("parameter backend: {value:?} is not a backend; use plugin or dvdcli")]
    BadBackend {
        /// The value.
        value: String,
    },
    /// A `docker_volumes` other than `handle` or `ignore`.
    #[error("parameter docker_volumes: {value:?} is not a choice; use handle (this module mounts DOCKER_VOLUME entries) or ignore (another isolator, such as Mesos' docker/volume, does)")]
    BadDockerVolumes {
        /// The value.
        value: String,
    },
    /// A `csi_volumes` other than `handle` or `ignore`.
    #[error("parameter csi_volumes: {value:?} is not a choice; use handle (this module mounts CSI_VOLUME entries) or ignore (another isolator, such as Mesos' volume/csi, does)")]
    BadCsiVolumes {
        /// The value.
        value: String,
    },
    /// An invalid driver name.
    #[error("parameter {key}: invalid driver name {value:?}")]
    BadDriver {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// A list setting with an empty entry.
    #[error("parameter {key}: {value:?} has an empty entry")]
    EmptyEntry {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// A `coordination` value that is neither `none` nor a ZooKeeper URL.
    #[error("parameter coordination: {0}")]
    BadCoordination(#[source] ZkUrlError),
    /// An `agent_name` that cannot name a lease node.
    #[error("parameter agent_name: {value:?} must be 1 to 255 bytes of letters, digits, '.', '-' and '_' (and not . or ..)")]
    BadAgentName {
        /// The value.
        value: String,
    },
    /// `coordination` is on and `agent_name` is not set, and its default, this host's name, is
    /// one that unnamed or cloned hosts share.
    #[error("parameter agent_name is not set, and its default, this host's name {value:?}, does not tell agents apart (unnamed and cloned hosts share it): set agent_name to a name unique in the cluster")]
    AgentNameNotUnique {
        /// The host name.
        value: String,
    },
    /// Two spellings of one setting given together (`work_dir` and `state_dir`).
    #[error("parameters {first} and {second} are the same setting; give only one of them")]
    BothSpellings {
        /// The first spelling.
        first: &'static str,
        /// The second spelling.
        second: &'static str,
    },
    /// A module name this library does not declare.
    #[error(
        "module name {name:?} is not one of this library's ({MODULE_NAME}, {LEGACY_MODULE_NAME})"
    )]
    UnknownModule {
        /// The name.
        name: String,
    },
    /// A `--config` file that could not be read.
    #[error("reading configuration file {path} failed")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--config` file that is not a JSON object of settings.
    #[error(
        "configuration file {path} is not a JSON object of parameters nor a Mesos modules file"
    )]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A CSI plugin configuration file that cannot be used (`csi_plugin_config_dir`).
    #[error("parameter csi_plugin_config_dir")]
    CsiPlugins(#[source] PluginConfigError),
    /// A Mesos modules file `--config` names without a module of this library.
    #[error("configuration file {path} is a Mesos modules file without a {MODULE_NAME} (or {LEGACY_MODULE_NAME}) module{}", if others.is_empty() { String::new() } else { format!("; it declares {}", others.join(", ")) })]
    NoDvdiModule {
        /// The file.
        path: PathBuf,
        /// The modules it declares.
        others: Vec<String>,
    },
    /// A Mesos modules file that declares this library's module more than once.
    #[error("configuration file {path} declares the dvdi module more than once ({}); keep one", places.join(", "))]
    SeveralDvdiModules {
        /// The file.
        path: PathBuf,
        /// Where each is.
        places: Vec<String>,
    },
    /// A Mesos modules file whose shape is not the agent's.
    #[error("configuration file {path}: {field} must be {expected}")]
    ModulesShape {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `libraries[0].modules[1].parameters[2].value`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A `--config` value of a type that cannot be a setting.
    #[error("configuration file {path}: parameter {key:?} must be a string, number, boolean or array of strings")]
    BadJsonValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// The default `call_threads`: enough for 512 containers to be prepared at once, each waiting on
/// its own plugin call (a thread blocked in a call costs its stack's touched pages, not a core).
pub const DEFAULT_CALL_THREADS: usize = 512;

/// Per-call time limits of backends. Defined here, below the backends, so the
/// configuration never imports the layer it configures; `backend::Timeouts` re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Mount and create, and every call that is neither mount nor unmount.
    pub mount: Duration,
    /// Unmount and remove.
    pub unmount: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            mount: Duration::from_secs(120),
            unmount: Duration::from_secs(600),
        }
    }
}

/// How drivers other than the built-in ones are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The native Docker volume plugin protocol.
    Plugin,
    /// The `dvdcli` program.
    Dvdcli,
}

/// Who acts on a task's `DOCKER_VOLUME` entries (`docker_volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerVolumes {
    /// This module mounts them, beside the `DVDI_VOLUME_*` environment (the default).
    Handle,
    /// They are left to another isolator (Mesos' own `docker/volume`, listed in `--isolation`
    /// beside this module): only the `DVDI_VOLUME_*` environment is acted on. Two isolators
    /// acting on one entry would mount it twice or fail the task.
    Ignore,
}

/// Who acts on a task's `CSI_VOLUME` entries (`csi_volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsiVolumes {
    /// This module mounts them through its CSI backend, with leases (the default).
    Handle,
    /// They are left to Mesos' own `volume/csi` isolator. Both acting on one entry would
    /// publish the volume twice.
    Ignore,
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
    /// Where leases across agents are kept; `None`: no coordination (`coordination`).
    pub coordination: Option<ZkTarget>,
    /// How this agent names itself in leases (`agent_name`; default the host name).
    pub agent_name: String,
    /// The ZooKeeper session timeout (`lease_session_timeout_secs`).
    pub lease_session_timeout: Duration,
    /// How long a prepare waits for a lease held elsewhere (`lease_wait_secs`).
    pub lease_wait: Duration,
    /// Drivers whose volumes are leased whatever their plugin's scope (`lease_drivers`).
    pub lease_drivers: Vec<DriverName>,
    /// Who acts on `DOCKER_VOLUME` entries (`docker_volumes`).
    pub docker_volumes: DockerVolumes,
    /// Who acts on `CSI_VOLUME` entries (`csi_volumes`).
    pub csi_volumes: CsiVolumes,
    /// Where plugin and dvdcli mount points may lie; empty: anywhere outside `/` and the system
    /// trees (`plugin_mount_roots`).
    pub plugin_mount_roots: Vec<PathBuf>,
    /// How long refused connections to a plugin are retried, within the call's own timeout
    /// (`plugin_connect_secs`).
    pub plugin_connect_timeout: Duration,
    /// The original module's checkpoints, imported at recover (`legacy_checkpoint`).
    pub legacy_checkpoint: Vec<PathBuf>,
    /// How many of the module's calls (recover, prepare, cleanup) may run at once, each on a
    /// thread of its own; more wait for one (`call_threads`).
    pub call_threads: usize,
    /// Mesos' CSI plugin configuration directory; `None`: no CSI plugins
    /// (`csi_plugin_config_dir`).
    pub csi_plugin_config_dir: Option<PathBuf>,
    /// The CSI plugins configured there, read when the configuration is: each plugin's `type` is
    /// a driver name.
    pub csi_plugins: Vec<PluginInfo>,
}

/// A configuration read from module parameters, with what was ignored on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The settings.
    pub config: Config,
    /// Parameters accepted but ignored, each saying why (for the agent's log).
    pub warnings: Vec<String>,
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
            coordination: None,
            agent_name: host_name(),
            lease_session_timeout: Duration::from_secs(10),
            lease_wait: Duration::from_secs(30),
            lease_drivers: Vec::new(),
            docker_volumes: DockerVolumes::Handle,
            csi_volumes: CsiVolumes::Handle,
            plugin_mount_roots: Vec::new(),
            plugin_connect_timeout: Duration::from_secs(15),
            legacy_checkpoint: legacy_checkpoints(Path::new(LEGACY_AGENT_WORK_DIR)),
            call_threads: DEFAULT_CALL_THREADS,
            csi_plugin_config_dir: None,
            csi_plugins: Vec::new(),
        }
    }
}

/// This host's name (`uname -n`), the default `agent_name`.
pub fn host_name() -> String {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.nodename().to_str().map(str::to_owned))
        .filter(|n| valid_agent_name(n))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Whether a host name tells agents apart: not one that every unnamed host has.
fn tells_hosts_apart(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let shared = [
        "localhost",
        "localhost6",
        "localdomain",
        "ip6-localhost",
        "ip6-loopback",
    ];
    !(name.is_empty()
        || shared.contains(&name.as_str())
        || name.starts_with("localhost.")
        || name.starts_with("localhost6."))
}

/// Whether `name` is a valid agent name (it stands in lease nodes' data, logs and messages).
fn valid_agent_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl ConfigError {
    /// The same error about `key` (a value of `work_dir` given as `state_dir`).
    fn respelled(self, key: &'static str) -> Self {
        match self {
            Self::NotAbsolute { value, .. } => Self::NotAbsolute { key, value },
            other => other,
        }
    }

    /// The parameter the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key } | Self::DuplicateKey { key } => Some(key),
            Self::NotAbsolute { key, .. }
            | Self::BadSeconds { key, .. }
            | Self::BadCount { key, .. }
            | Self::BadBool { key, .. }
            | Self::BadDriver { key, .. }
            | Self::EmptyEntry { key, .. } => Some(key),
            Self::BadBackend { .. } => Some("backend"),
            Self::BadCoordination(_) => Some("coordination"),
            Self::BadAgentName { .. } | Self::AgentNameNotUnique { .. } => Some("agent_name"),
            Self::BadDockerVolumes { .. } => Some("docker_volumes"),
            Self::BadCsiVolumes { .. } => Some("csi_volumes"),
            Self::CsiPlugins(_) => Some("csi_plugin_config_dir"),
            Self::BothSpellings { second, .. } => Some(second),
            Self::UnknownModule { .. } => None,
            Self::ReadFile { .. }
            | Self::ParseFile { .. }
            | Self::BadJsonValue { .. }
            | Self::NoDvdiModule { .. }
            | Self::SeveralDvdiModules { .. }
            | Self::ModulesShape { .. } => None,
        }
    }
}

fn path(key: &'static str, value: &str) -> Result<PathBuf, ConfigError> {
    let p = PathBuf::from(value);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(ConfigError::NotAbsolute {
            key,
            value: value.to_owned(),
        })
    }
}

fn seconds(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(ConfigError::BadSeconds {
            key,
            value: value.to_owned(),
        }),
    }
}

fn count(key: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::BadCount {
            key,
            value: value.to_owned(),
        }),
    }
}

fn driver(key: &'static str, value: &str) -> Result<DriverName, ConfigError> {
    DriverName::new(value).map_err(|source| ConfigError::BadDriver {
        key,
        value: value.to_owned(),
        source,
    })
}

fn list<'a>(key: &'static str, value: &'a str, sep: char) -> Result<Vec<&'a str>, ConfigError> {
    let items: Vec<&str> = value.split(sep).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(ConfigError::EmptyEntry {
            key,
            value: value.to_owned(),
        });
    }
    Ok(items)
}

/// The parameters of a `dvdi --config` file, and the module name they are read under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// [`MODULE_NAME`], or [`LEGACY_MODULE_NAME`] for a modules file that loads this library
    /// under the original module's name (whose `work_dir` means the agent's directory).
    pub module: &'static str,
    /// The parameters, in the file's order.
    pub params: Vec<(String, String)>,
}

/// The dvdi module's parameters from a Mesos modules file's `libraries`.
fn modules_file(path: &Path, libraries: &serde_json::Value) -> Result<ConfigFile, ConfigError> {
    let shape = |field: String, expected: &'static str| ConfigError::ModulesShape {
        path: path.to_owned(),
        field,
        expected,
    };
    let libraries = libraries
        .as_array()
        .ok_or_else(|| shape("libraries".into(), "an array"))?;
    let mut found: Vec<(String, &'static str, &serde_json::Value)> = Vec::new();
    let mut others = Vec::new();
    for (i, library) in libraries.iter().enumerate() {
        let modules = match library.get("modules") {
            None => continue,
            Some(m) => m
                .as_array()
                .ok_or_else(|| shape(format!("libraries[{i}].modules"), "an array"))?,
        };
        for (j, module) in modules.iter().enumerate() {
            let place = format!("libraries[{i}].modules[{j}]");
            let name = module
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| shape(format!("{place}.name"), "a string"))?;
            match name {
                MODULE_NAME => found.push((place, MODULE_NAME, module)),
                LEGACY_MODULE_NAME => found.push((place, LEGACY_MODULE_NAME, module)),
                other => others.push(other.to_owned()),
            }
        }
    }
    let (place, module, entry) = match found.len() {
        1 => found.remove(0),
        0 => {
            return Err(ConfigError::NoDvdiModule {
                path: path.to_owned(),
                others,
            })
        }
        _ => {
            return Err(ConfigError::SeveralDvdiModules {
                path: path.to_owned(),
                places: found.into_iter().map(|(p, _, _)| p).collect(),
            })
        }
    };
    let params = match entry.get("parameters") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(k, item)| {
                let field = |f: &str| {
                    item.get(f)
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| shape(format!("{place}.parameters[{k}].{f}"), "a string"))
                };
                Ok((field("key")?, field("value")?))
            })
            .collect::<Result<_, ConfigError>>()?,
        Some(_) => return Err(shape(format!("{place}.parameters"), "an array")),
    };
    Ok(ConfigFile { module, params })
}

impl Config {
    /// Parses module parameters (or the key/value form of CLI flags) over the defaults. Unknown
    /// keys, keys given twice and bad values are errors: never a silent default.
    ///
    /// ```
    /// use mesos_dvdi::config::Config;
    /// let c = Config::from_params(&[("default_driver".into(), "local".into())]).unwrap();
    /// assert_eq!(c.default_driver.as_str(), "local");
    /// assert!(Config::from_params(&[("work_dri".into(), "/x".into())]).is_err());
    /// ```
    pub fn from_params(params: &[(String, String)]) -> Result<Self, ConfigError> {
        Self::from_module_params(MODULE_NAME, params).map(|loaded| loaded.config)
    }

    /// Parses the parameters of the module loaded under `module` (the name in `isolator.json`).
    ///
    /// Under [`MODULE_NAME`], `state_dir` is another spelling of `work_dir` (giving both is an
    /// error). Under [`LEGACY_MODULE_NAME`], an old `modules.json` starts unchanged: `work_dir` is
    /// read as the original module read it, as the *agent's* work directory (it locates the
    /// original's checkpoint for the default `legacy_checkpoint`), the module's own directory is
    /// `state_dir`, and `isolator_command` (in the original's example configuration, never read
    /// by it) is ignored with a warning.
    ///
    /// ```
    /// use mesos_dvdi::config::{Config, LEGACY_MODULE_NAME};
    /// let params = [("work_dir".into(), "/var/lib/mesos".into())];
    /// let loaded = Config::from_module_params(LEGACY_MODULE_NAME, &params).unwrap();
    /// assert_eq!(loaded.config.work_dir, Config::default().work_dir);
    /// assert!(loaded.config.legacy_checkpoint.contains(&"/var/lib/mesos/meta/dvdimounts.pb".into()));
    /// ```
    pub fn from_module_params(
        module: &str,
        params: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let legacy = match module {
            MODULE_NAME => false,
            LEGACY_MODULE_NAME => true,
            _ => {
                return Err(ConfigError::UnknownModule {
                    name: module.to_owned(),
                })
            }
        };
        let mut config = Self::default();
        let mut warnings = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut agent_work_dir = PathBuf::from(LEGACY_AGENT_WORK_DIR);
        for (key, value) in params {
            if legacy && key == "isolator_command" {
                warnings.push(format!(
                    "parameter isolator_command ({value:?}) is ignored: {MODULE_NAME} runs no isolator command (nor did the module it replaces)"
                ));
                continue;
            }
            let Some(&key) = KEYS.iter().find(|k| **k == key.as_str()) else {
                return Err(ConfigError::UnknownKey { key: key.clone() });
            };
            if seen.contains(&key) {
                return Err(ConfigError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            seen.push(key);
            match key {
                "work_dir" if legacy => agent_work_dir = path(key, value)?,
                "state_dir" => config
                    .set("work_dir", value)
                    .map_err(|e| e.respelled(key))?,
                _ => config.set(key, value)?,
            }
        }
        if !legacy && seen.contains(&"work_dir") && seen.contains(&"state_dir") {
            return Err(ConfigError::BothSpellings {
                first: "work_dir",
                second: "state_dir",
            });
        }
        if !seen.contains(&"legacy_checkpoint") {
            config.legacy_checkpoint = legacy_checkpoints(&agent_work_dir);
        }
        // Leases are told apart by agent name: the host name stands in for one only when it
        // tells hosts apart.
        // (An empty agent_name is the default spelt out, as in isolator.json: not a name given.)
        let named = params
            .iter()
            .any(|(k, v)| k == "agent_name" && !v.is_empty());
        if config.coordination.is_some() && !named && !tells_hosts_apart(&config.agent_name) {
            return Err(ConfigError::AgentNameNotUnique {
                value: config.agent_name,
            });
        }
        // Read at load, so a bad file stops the module or the CLI at start, not a task later.
        if let Some(dir) = &config.csi_plugin_config_dir {
            config.csi_plugins = crate::csi::load_dir(dir).map_err(ConfigError::CsiPlugins)?;
        }
        // A prepare never waits longer for a lease than it may for its mount.
        config.lease_wait = config.lease_wait.min(config.mount_timeout);
        Ok(Loaded { config, warnings })
    }

    fn set(&mut self, key: &'static str, value: &str) -> Result<(), ConfigError> {
        match key {
            "work_dir" => self.work_dir = path(key, value)?,
            "default_driver" => self.default_driver = driver(key, value)?,
            "backend" => {
                self.backend = match value {
                    "plugin" => BackendKind::Plugin,
                    "dvdcli" => BackendKind::Dvdcli,
                    _ => {
                        return Err(ConfigError::BadBackend {
                            value: value.to_owned(),
                        })
                    }
                }
            }
            "dvdcli_path" => self.dvdcli_path = path(key, value)?,
            "plugin_dirs" => {
                self.plugin_dirs = list(key, value, ':')?
                    .into_iter()
                    .map(|d| path(key, d))
                    .collect::<Result<_, _>>()?
            }
            "local_root" => self.local_root = path(key, value)?,
            "loop_root" => self.loop_root = path(key, value)?,
            "mount_timeout_secs" => self.mount_timeout = seconds(key, value)?,
            "unmount_timeout_secs" => self.unmount_timeout = seconds(key, value)?,
            // Empty: no restriction, the default (there is no other way to write "all").
            "allowed_drivers" if value.is_empty() => self.allowed_drivers = None,
            "allowed_drivers" => {
                self.allowed_drivers = Some(
                    list(key, value, ',')?
                        .into_iter()
                        .map(|d| driver(key, d))
                        .collect::<Result<_, _>>()?,
                )
            }
            "allow_task_dvdcli" => {
                self.allow_task_dvdcli = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ConfigError::BadBool {
                            key,
                            value: value.to_owned(),
                        })
                    }
                }
            }
            "coordination" => {
                self.coordination = match value {
                    "none" => None,
                    _ => Some(ZkTarget::parse(value).map_err(ConfigError::BadCoordination)?),
                }
            }
            // Empty: the host name, the default (which a modules file cannot spell otherwise).
            "agent_name" if value.is_empty() => self.agent_name = host_name(),
            "agent_name" => {
                if !valid_agent_name(value) {
                    return Err(ConfigError::BadAgentName {
                        value: value.to_owned(),
                    });
                }
                self.agent_name = value.to_owned();
            }
            "lease_session_timeout_secs" => self.lease_session_timeout = seconds(key, value)?,
            "lease_wait_secs" => self.lease_wait = seconds(key, value)?,
            "lease_drivers" if value.is_empty() => self.lease_drivers = Vec::new(),
            "lease_drivers" => {
                self.lease_drivers = list(key, value, ',')?
                    .into_iter()
                    .map(|d| driver(key, d))
                    .collect::<Result<_, _>>()?
            }
            "docker_volumes" => {
                self.docker_volumes = match value {
                    "handle" => DockerVolumes::Handle,
                    "ignore" => DockerVolumes::Ignore,
                    _ => {
                        return Err(ConfigError::BadDockerVolumes {
                            value: value.to_owned(),
                        })
                    }
                }
            }
            "plugin_mount_roots" if value.is_empty() => self.plugin_mount_roots = Vec::new(),
            "csi_volumes" => {
                self.csi_volumes = match value {
                    "handle" => CsiVolumes::Handle,
                    "ignore" => CsiVolumes::Ignore,
                    _ => {
                        return Err(ConfigError::BadCsiVolumes {
                            value: value.to_owned(),
                        })
                    }
                }
            }
            "plugin_mount_roots" => {
                self.plugin_mount_roots = list(key, value, ':')?
                    .into_iter()
                    .map(|d| path(key, d))
                    .collect::<Result<_, _>>()?
            }
            "plugin_connect_secs" => self.plugin_connect_timeout = seconds(key, value)?,
            "legacy_checkpoint" => {
                // Empty: import nothing.
                self.legacy_checkpoint = if value.is_empty() {
                    Vec::new()
                } else {
                    list(key, value, ':')?
                        .into_iter()
                        .map(|p| path(key, p))
                        .collect::<Result<_, _>>()?
                }
            }
            "call_threads" => self.call_threads = count(key, value)?,
            "csi_plugin_config_dir" => {
                // Empty: no CSI plugins (as the default, which isolator.json spells so).
                self.csi_plugin_config_dir = if value.is_empty() {
                    None
                } else {
                    Some(path(key, value)?)
                }
            }
            _ => unreachable!("every key of KEYS is handled"),
        }
        Ok(())
    }

    /// Reads a `dvdi --config` file, of either form:
    ///
    /// - a JSON object of parameters: strings as in the module's parameters, and numbers,
    ///   booleans and arrays of strings (joined as the module's lists are) where natural;
    /// - a Mesos modules file (`isolator.json`: `{"libraries": [{"modules": [{"name",
    ///   "parameters": [{"key", "value"}]}]}]}`): the parameters of its one module named
    ///   [`MODULE_NAME`] or [`LEGACY_MODULE_NAME`], read as the agent would read them.
    pub fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
            .map_err(|source| ConfigError::ParseFile {
                path: path.to_owned(),
                source,
            })?;
        if let Some(libraries) = object.get("libraries") {
            return modules_file(path, libraries);
        }
        let bad = |key: &str| ConfigError::BadJsonValue {
            path: path.to_owned(),
            key: key.to_owned(),
        };
        let params = object
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Array(items) => {
                        let sep = if matches!(
                            key.as_str(),
                            "plugin_dirs" | "plugin_mount_roots" | "legacy_checkpoint"
                        ) {
                            ":"
                        } else {
                            ","
                        };
                        items
                            .iter()
                            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad(key)))
                            .collect::<Result<Vec<_>, _>>()?
                            .join(sep)
                    }
                    _ => return Err(bad(key)),
                };
                Ok((key.clone(), text))
            })
            .collect::<Result<_, _>>()?;
        Ok(ConfigFile {
            module: MODULE_NAME,
            params,
        })
    }

    /// The parameters of a `dvdi --config` file of either form (see [`Config::read_file`]).
    pub fn params_from_json_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
        Self::read_file(path).map(|f| f.params)
    }

    /// The settings spec resolution needs.
    pub fn resolve_options(&self) -> ResolveOptions {
        ResolveOptions {
            default_driver: self.default_driver.clone(),
            allowed_drivers: self.allowed_drivers.clone(),
            allow_task_dvdcli: self.allow_task_dvdcli,
        }
    }

    /// The `DOCKER_VOLUME` entries this isolator acts on: all of `entries`, or none when
    /// `docker_volumes=ignore` leaves them to another isolator.
    pub fn docker_volumes_of<'a>(
        &self,
        entries: &'a [DockerVolumeInput],
    ) -> &'a [DockerVolumeInput] {
        match self.docker_volumes {
            DockerVolumes::Handle => entries,
            DockerVolumes::Ignore => &[],
        }
    }

    /// The `CSI_VOLUME` entries this isolator acts on: all of `entries`, or none when
    /// `csi_volumes=ignore` leaves them to another isolator.
    pub fn csi_volumes_of<'a>(&self, entries: &'a [CsiVolumeInput]) -> &'a [CsiVolumeInput] {
        match self.csi_volumes {
            CsiVolumes::Handle => entries,
            CsiVolumes::Ignore => &[],
        }
    }

    /// The configured CSI plugin whose type is `driver`, if any.
    pub fn csi_plugin(&self, driver: &DriverName) -> Option<&PluginInfo> {
        self.csi_plugins.iter().find(|p| &p.plugin_type == driver)
    }

    /// Backend call limits.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            mount: self.mount_timeout,
            unmount: self.unmount_timeout,
        }
    }
}
