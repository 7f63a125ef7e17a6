//! Finding a plugin by driver name, in Docker's order (moby `pkg/plugins/discovery.go`,
//! `localRegistry.Plugin`):
//!
//! 1. a socket `NAME.sock`, then `NAME/NAME.sock` — Docker looks for sockets only in
//!    `/run/docker/plugins`; here every configured directory is looked at, in order, and any
//!    socket wins over any spec file;
//! 2. then, directory by directory, `NAME.spec`, `NAME/NAME.spec`, `NAME.json`, `NAME/NAME.json`
//!    (Docker: `/etc/docker/plugins`, then `/usr/lib/docker/plugins`). The first that exists
//!    decides, even when it cannot be read: Docker does not fall through to the next one either.
//!
//! A `.spec` file holds one URL; a `.json` file is `{"Name", "Addr", "TLSConfig"}`. Addresses
//! are `unix:///absolute/path`, `tcp://host:port` or `http://host:port` (Docker speaks plain HTTP
//! to both). Docker uses TLS only for `https://` addresses; mesos-dvdi does not speak TLS, so an
//! `https://` address, or a `TLSConfig` naming a CA, certificate or key file, is refused with
//! [`DiscoveryError::TlsUnsupported`] rather than silently sent in the clear.
//!
//! Driver names are [`DriverName`]s: no `/`, never `.` or `..`, so every path looked at stays
//! inside its plugin directory.

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
    if let Some(hostport) = text
        .strip_prefix("tcp://")
        .or_else(|| text.strip_prefix("http://"))
    {
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
            struct Desc {
                #[serde(rename = "Addr")]
                addr: String,
                #[serde(rename = "TLSConfig", default)]
                tls: Option<TlsFiles>,
            }
            /// The parts of go-connections' `tlsconfig.Options` that ask for TLS. Docker sets
            /// `InsecureSkipVerify` itself when no CA is named; alone it asks for nothing.
            #[derive(serde::Deserialize)]
            struct TlsFiles {
                #[serde(rename = "CAFile", default)]
                ca: String,
                #[serde(rename = "CertFile", default)]
                cert: String,
                #[serde(rename = "KeyFile", default)]
                key: String,
            }
            let d: Desc =
                serde_json::from_str(&text).map_err(|source| DiscoveryError::BadJson {
                    file: file.to_owned(),
                    source,
                })?;
            if d.tls
                .is_some_and(|t| !(t.ca.is_empty() && t.cert.is_empty() && t.key.is_empty()))
            {
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
