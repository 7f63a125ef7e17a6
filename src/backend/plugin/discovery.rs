//! Finding a plugin by driver name, in Docker's order (moby `pkg/plugins/discovery.go`): first a
//! socket `NAME.sock` or `NAME/NAME.sock` in any directory, then, directory by directory,
//! `NAME.spec`, `NAME/NAME.spec`, `NAME.json`, `NAME/NAME.json`.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::spec::DriverName;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "address")]
pub enum PluginAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl std::fmt::Display for PluginAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            PluginAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// What kind of file announced a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginFileKind {
    /// A socket.
    Sock,
    /// A `.spec` file holding a URL.
    Spec,
    /// A `.json` file.
    Json,
}

/// A plugin found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundPlugin {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub addr: PluginAddr,
    /// The file that announced it.
    pub file: PathBuf,
    /// Its kind.
    pub kind: PluginFileKind,
}

/// Discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No socket, spec or json file for the driver.
    #[error("no plugin {driver:?} found (looked for {}); start the plugin, or check plugin_dirs", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The driver.
        driver: String,
        /// Every path looked at.
        searched: Vec<PathBuf>,
    },
    /// A spec or json file could not be read.
    #[error("reading {file} failed")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A spec file without a usable URL.
    #[error("{file}: {content:?} is not a plugin address; write unix:///path/to.sock or tcp://host:port")]
    BadAddress {
        /// The file.
        file: PathBuf,
        /// What it holds.
        content: String,
    },
    /// A json file that is not `{"Name","Addr","TLSConfig"}`.
    #[error("{file} is not a plugin description ({{\"Name\", \"Addr\"}})")]
    BadJson {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// TLS was asked for.
    #[error("{file} asks for TLS, which mesos-dvdi does not speak; serve the plugin on a unix socket or plain tcp on loopback")]
    TlsUnsupported {
        /// The file.
        file: PathBuf,
    },
}

fn candidates(dir: &Path, name: &str, ext: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{name}{ext}")),
        dir.join(name).join(format!("{name}{ext}")),
    ]
}

fn parse_url(file: &Path, text: &str) -> Result<PluginAddr, DiscoveryError> {
    let text = text.trim();
    let bad = || DiscoveryError::BadAddress {
        file: file.to_owned(),
        content: text.to_owned(),
    };
    if let Some(path) = text.strip_prefix("unix://") {
        let p = PathBuf::from(path);
        return if p.is_absolute() {
            Ok(PluginAddr::Unix(p))
        } else {
            Err(bad())
        };
    }
    if let Some(hostport) = text.strip_prefix("tcp://") {
        let hostport = hostport.trim_end_matches('/');
        return if hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            Ok(PluginAddr::Tcp(hostport.to_owned()))
        } else {
            Err(bad())
        };
    }
    if text.starts_with("https://") {
        return Err(DiscoveryError::TlsUnsupported {
            file: file.to_owned(),
        });
    }
    Err(bad())
}

fn read_spec(file: &Path, kind: PluginFileKind) -> Result<PluginAddr, DiscoveryError> {
    let text = fs::read_to_string(file).map_err(|source| DiscoveryError::Read {
        file: file.to_owned(),
        source,
    })?;
    match kind {
        PluginFileKind::Spec | PluginFileKind::Sock => parse_url(file, &text),
        PluginFileKind::Json => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Desc {
                addr: String,
                #[serde(default, rename = "TLSConfig")]
                tls_config: Option<serde_json::Value>,
            }
            let d: Desc =
                serde_json::from_str(&text).map_err(|source| DiscoveryError::BadJson {
                    file: file.to_owned(),
                    source,
                })?;
            if d.tls_config.is_some_and(|t| !t.is_null()) {
                return Err(DiscoveryError::TlsUnsupported {
                    file: file.to_owned(),
                });
            }
            parse_url(file, &d.addr)
        }
    }
}

fn is_socket(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Finds the plugin serving `driver` in `dirs`.
pub fn discover(driver: &DriverName, dirs: &[PathBuf]) -> Result<FoundPlugin, DiscoveryError> {
    // DriverName forbids '/', '.' and '..', so every candidate stays inside its directory.
    let name = driver.as_str();
    let mut searched = Vec::new();
    for dir in dirs {
        for p in candidates(dir, name, ".sock") {
            if is_socket(&p) {
                return Ok(FoundPlugin {
                    name: name.to_owned(),
                    addr: PluginAddr::Unix(p.clone()),
                    file: p,
                    kind: PluginFileKind::Sock,
                });
            }
            searched.push(p);
        }
    }
    for dir in dirs {
        for (ext, kind) in [
            (".spec", PluginFileKind::Spec),
            (".json", PluginFileKind::Json),
        ] {
            for p in candidates(dir, name, ext) {
                if p.is_file() {
                    return Ok(FoundPlugin {
                        name: name.to_owned(),
                        addr: read_spec(&p, kind)?,
                        file: p,
                        kind,
                    });
                }
                searched.push(p);
            }
        }
    }
    Err(DiscoveryError::NotFound {
        driver: name.to_owned(),
        searched,
    })
}

/// Every plugin `dirs` announce (the first announcement of each name wins), with the error of any
/// announcement that cannot be read.
pub fn list_plugins(dirs: &[PathBuf]) -> Vec<Result<FoundPlugin, DiscoveryError>> {
    let mut names: Vec<String> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = [".sock", ".spec", ".json"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))
                .map(str::to_owned)
                .or_else(|| e.path().is_dir().then_some(file.clone()));
            if let Some(n) = name.filter(|n| !names.contains(n)) {
                names.push(n);
            }
        }
    }
    names.sort();
    names
        .iter()
        .filter_map(|n| DriverName::new(n.as_str()).ok())
        .filter_map(|d| match discover(&d, dirs) {
            Err(DiscoveryError::NotFound { .. }) => None,
            other => Some(other),
        })
        .collect()
}
