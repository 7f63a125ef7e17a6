//! Docker volume plugins, spoken to directly over the plugin protocol (DESIGN §4): no Docker
//! daemon, no dvdcli.
//!
//! [`discovery`] finds a plugin's address by driver name, [`http`] carries the calls, and
//! [`PluginBackend`] speaks the `VolumeDriver` protocol. A non-empty `Err` in an answer is a
//! failure whatever the HTTP status.

pub mod discovery;
pub mod http;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use discovery::{discover, list_plugins, DiscoveryError, FoundPlugin, PluginAddr};
use http::{Client, HttpError};

use super::{
    Backend, BackendError, BackendErrorKind, Call, Capabilities, MountId, MountRequest, Scope,
    Timeouts, VolumeInfo,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// A failed plugin call; each names the plugin's address and the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The HTTP exchange failed (connect, timeout, truncated or malformed answer).
    #[error("{endpoint} at {addr}")]
    Http {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// What failed.
        #[source]
        source: HttpError,
    },
    /// The plugin answered with an error.
    #[error("{endpoint} at {addr}: the plugin said: {message}")]
    PluginErr {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// Its `Err`.
        message: String,
    },
    /// A non-200 status without an `Err`.
    #[error("{endpoint} at {addr}: HTTP {status}: {body}")]
    Status {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An answer that is not the JSON the protocol says.
    #[error("{endpoint} at {addr}: the answer is not the expected JSON ({body:?})")]
    BadJson {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// The start of the body.
        body: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An answer missing a field the protocol requires, or with one of the wrong type.
    #[error("{endpoint} at {addr}: the answer has no valid {field} ({body:?})")]
    MissingField {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// The field.
        field: &'static str,
        /// The start of the body.
        body: String,
    },
    /// Activation says the plugin is not a volume driver.
    #[error("{addr} is not a volume driver (it implements {implements:?})")]
    NotVolumeDriver {
        /// The plugin.
        addr: PluginAddr,
        /// What it implements.
        implements: Vec<String>,
    },
    /// A mount point that is not an absolute path.
    #[error("{endpoint} at {addr}: mount point {mountpoint:?} is not an absolute path")]
    BadMountpoint {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// What it said.
        mountpoint: String,
    },
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

/// A Docker volume plugin serving one driver.
pub struct PluginBackend {
    driver: DriverName,
    client: Client,
    timeouts: Timeouts,
    activated: Mutex<bool>,
}

impl std::fmt::Debug for PluginBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginBackend")
            .field("driver", &self.driver)
            .field("addr", self.client.addr())
            .finish_non_exhaustive()
    }
}

/// First wait between activation attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between activation attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

impl PluginBackend {
    /// Finds `driver`'s plugin in `plugin_dirs`; it is activated on first use.
    pub fn discover(
        driver: &DriverName,
        plugin_dirs: &[PathBuf],
        timeouts: Timeouts,
    ) -> Result<Self, BackendError> {
        let found = discover(driver, plugin_dirs).map_err(|e| {
            BackendError::new(
                driver,
                None,
                Call::Activate,
                BackendErrorKind::NoSuchDriver(e),
            )
        })?;
        Ok(Self::at(driver.clone(), found.addr, timeouts))
    }

    /// A plugin at a known address.
    pub fn at(driver: DriverName, addr: PluginAddr, timeouts: Timeouts) -> Self {
        Self {
            driver,
            client: Client::new(addr),
            timeouts,
            activated: Mutex::new(false),
        }
    }

    /// The plugin's address.
    pub fn addr(&self) -> &PluginAddr {
        self.client.addr()
    }

    fn fail(&self, name: Option<&VolumeName>, call: Call, e: PluginError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// One call: POST, then the protocol's error rules. Returns the answer's JSON object.
    fn call(
        &self,
        endpoint: &'static str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, PluginError> {
        let addr = || self.client.addr().clone();
        let bytes = serde_json::to_vec(body).expect("requests serialise");
        let resp = self
            .client
            .post(&format!("/{endpoint}"), &bytes, timeout)
            .map_err(|source| PluginError::Http {
                addr: addr(),
                endpoint,
                source,
            })?;
        let parsed: Result<Value, _> = serde_json::from_slice(&resp.body);
        // A non-empty Err is a failure whatever the status.
        if let Some(msg) = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("Err"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            return Err(PluginError::PluginErr {
                addr: addr(),
                endpoint,
                message: msg.to_owned(),
            });
        }
        if resp.status != 200 {
            return Err(PluginError::Status {
                addr: addr(),
                endpoint,
                status: resp.status,
                body: excerpt(&resp.body),
            });
        }
        let value = parsed.map_err(|source| PluginError::BadJson {
            addr: addr(),
            endpoint,
            body: excerpt(&resp.body),
            source,
        })?;
        if !value.is_object() {
            return Err(PluginError::MissingField {
                addr: addr(),
                endpoint,
                field: "object",
                body: excerpt(&resp.body),
            });
        }
        Ok(value)
    }

    /// Activates the plugin once, retrying while it is not yet listening (a plugin started
    /// alongside the agent), with backoff, until the mount timeout.
    fn activate(&self) -> Result<(), BackendError> {
        let mut done = self.activated.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeouts.mount;
        let mut backoff = FIRST_BACKOFF;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.call(
                "Plugin.Activate",
                &json!({}),
                left.max(Duration::from_millis(1)),
            ) {
                Err(PluginError::Http { source, .. })
                    if source.is_refused() && Instant::now() + backoff < deadline =>
                {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => break other,
            }
        }
        .map_err(|e| self.fail(None, Call::Activate, e))?;
        let implements: Vec<String> = answer
            .get("Implements")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !implements.iter().any(|i| i == "VolumeDriver") {
            return Err(self.fail(
                None,
                Call::Activate,
                PluginError::NotVolumeDriver {
                    addr: self.client.addr().clone(),
                    implements,
                },
            ));
        }
        *done = true;
        Ok(())
    }

    fn volume_call(
        &self,
        name: &VolumeName,
        call: Call,
        endpoint: &'static str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, BackendError> {
        self.activate()?;
        self.call(endpoint, &body, timeout)
            .map_err(|e| self.fail(Some(name), call, e))
    }

    fn mountpoint(
        &self,
        name: &VolumeName,
        call: Call,
        endpoint: &'static str,
        v: &Value,
    ) -> Result<PathBuf, BackendError> {
        let mp = v.get("Mountpoint").and_then(Value::as_str).unwrap_or("");
        let path = PathBuf::from(mp);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(self.fail(
                Some(name),
                call,
                PluginError::BadMountpoint {
                    addr: self.client.addr().clone(),
                    endpoint,
                    mountpoint: mp.to_owned(),
                },
            ))
        }
    }

    fn info(v: &Value) -> Option<VolumeInfo> {
        Some(VolumeInfo {
            name: v.get("Name")?.as_str()?.to_owned(),
            mountpoint: v
                .get("Mountpoint")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(PathBuf::from),
            status: v.get("Status").cloned().unwrap_or(Value::Null),
        })
    }
}

impl Backend for PluginBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str(), "Opts": opts});
        self.volume_call(
            name,
            Call::Create,
            "VolumeDriver.Create",
            body,
            self.timeouts.mount,
        )
        .map(|_| ())
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str()});
        self.volume_call(
            name,
            Call::Remove,
            "VolumeDriver.Remove",
            body,
            self.timeouts.unmount,
        )
        .map(|_| ())
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        // Ask first, so an existing volume is never re-created with other options, and
        // explicit_create can refuse a missing one.
        if self.get(req.name)?.is_none() {
            if req.explicit_create {
                return Err(BackendError::no_such_volume(&self.driver, req.name));
            }
            self.create(req.name, req.opts)?;
        }
        let body = json!({"Name": req.name.as_str(), "ID": req.id.0});
        let v = self.volume_call(
            req.name,
            Call::Mount,
            "VolumeDriver.Mount",
            body,
            self.timeouts.mount,
        )?;
        self.mountpoint(req.name, Call::Mount, "VolumeDriver.Mount", &v)
    }

    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str(), "ID": id.0});
        self.volume_call(
            name,
            Call::Unmount,
            "VolumeDriver.Unmount",
            body,
            self.timeouts.unmount,
        )
        .map(|_| ())
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let body = json!({"Name": name.as_str()});
        let v = self.volume_call(
            name,
            Call::Path,
            "VolumeDriver.Path",
            body,
            self.timeouts.mount,
        )?;
        match v.get("Mountpoint").and_then(Value::as_str) {
            None | Some("") => Ok(None),
            Some(_) => self
                .mountpoint(name, Call::Path, "VolumeDriver.Path", &v)
                .map(Some),
        }
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        self.activate()?;
        let body = json!({"Name": name.as_str()});
        match self.call("VolumeDriver.Get", &body, self.timeouts.mount) {
            Ok(v) => Ok(v.get("Volume").and_then(Self::info)),
            // Plugins say "no such volume" in their own words; an answered Err means absent.
            Err(PluginError::PluginErr { .. }) => Ok(None),
            Err(e) => Err(self.fail(Some(name), Call::Get, e)),
        }
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        self.activate()?;
        let v = self
            .call("VolumeDriver.List", &json!({}), self.timeouts.mount)
            .map_err(|e| self.fail(None, Call::List, e))?;
        Ok(v.get("Volumes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Self::info).collect())
            .unwrap_or_default())
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        self.activate()?;
        match self.call("VolumeDriver.Capabilities", &json!({}), self.timeouts.mount) {
            Ok(v) => Ok(Capabilities {
                scope: match v.pointer("/Capabilities/Scope").and_then(Value::as_str) {
                    Some("global") => Scope::Global,
                    _ => Scope::Local,
                },
            }),
            // Plugins older than the endpoint answer 404; Docker then assumes local scope.
            Err(PluginError::Status { status: 404, .. }) => Ok(Capabilities {
                scope: Scope::Local,
            }),
            Err(e) => Err(self.fail(None, Call::Capabilities, e)),
        }
    }
}
