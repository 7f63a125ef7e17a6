//! Docker volume plugins, spoken to directly over the plugin protocol: no Docker
//! daemon, no dvdcli.
//!
//! [`discovery`] finds a plugin's address by driver name, [`http`] carries the calls, and
//! [`PluginBackend`] speaks the `VolumeDriver` protocol:
//!
//! - `Plugin.Activate` once per backend; any failure but a refused connection is final.
//! - A refused connection (a plugin starting alongside the agent, or one that died and left its
//!   socket file behind) is retried with backoff for at most the connect timeout
//!   (`plugin_connect_secs`, 15 s as Docker gives it), never past the call's own deadline; the
//!   wait is named in [`Waits`] while it lasts, and the error at the end says the plugin is not
//!   listening and for how long it was tried. The plugin never saw a refused request, so every
//!   request may be retried so.
//! - Every [`Backend`] call has one deadline for all of its requests: mount and create
//!   [`Timeouts::mount`], unmount and remove [`Timeouts::unmount`], the rest [`Timeouts::mount`].
//! - A non-empty `Err` in an answer is a failure whatever the HTTP status.
//! - Mount reads the volume with Get and creates it only when the plugin does not know it, as
//!   Docker's volume store does (plugins such as easyfuse refuse to create a volume twice).
//! - Mount's answer is returned as the plugin gave it: the [`Checked`](super::answer::Checked)
//!   wrapper judges it, and undoes the mount when it is refused.

pub mod discovery;
pub mod http;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use discovery::{discover, list_plugins, DiscoveryError, FoundPlugin, PluginAddr};
use http::{Client, Deadline, HttpError};

use super::{
    Backend, BackendError, BackendErrorKind, Call, Capabilities, MountId, MountRequest, Scope,
    Timeouts, VolumeInfo, WaitGuard, Waits,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// A failed plugin call; each names the plugin's address and the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The HTTP exchange failed: connect, timeout, connection lost, or an answer that is not
    /// HTTP. The step is the source.
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
    /// The plugin answered with an error (`{"Err": "…"}`, whatever the status).
    #[error("{endpoint} at {addr}: the plugin said: {message}")]
    PluginErr {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// Its `Err`.
        message: String,
    },
    /// A status other than 200, without an `Err`.
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
    /// An answer that is not JSON.
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
    /// JSON without a field the protocol requires, or with one of the wrong type.
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
    /// The plugin refused every connection (or its socket did not exist) for as long as
    /// connecting is retried: it is not running.
    #[error(
        "{endpoint}: the plugin is not listening at {addr}; connecting was tried for {:.1} s",
        tried.as_secs_f64()
    )]
    NotListening {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// How long connecting was tried.
        tried: Duration,
        /// The last refusal.
        #[source]
        source: HttpError,
    },
    /// Connecting was being retried when the caller was interrupted (`dvdi run` on Ctrl-C).
    #[error(
        "{endpoint}: interrupted while the plugin at {addr} was not accepting connections (tried for {:.1} s)",
        tried.as_secs_f64()
    )]
    Interrupted {
        /// The plugin.
        addr: PluginAddr,
        /// The endpoint.
        endpoint: &'static str,
        /// How long connecting was tried.
        tried: Duration,
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

impl PluginError {
    /// Whether the plugin answered (with a refusal or something unexpected), as opposed to the
    /// exchange failing: an answer is the plugin's word, a failed exchange says nothing about
    /// the volume.
    pub fn is_answer(&self) -> bool {
        !matches!(
            self,
            PluginError::Http { .. } | PluginError::NotListening { .. }
        )
    }
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// A Docker volume plugin serving one driver.
pub struct PluginBackend {
    driver: DriverName,
    client: Client,
    timeouts: Timeouts,
    /// How long refused connections are retried.
    connect_timeout: Duration,
    /// Where a refused connection's wait is named while it lasts.
    waits: Waits,
    /// Whether `Plugin.Activate` succeeded. Held during activation, so concurrent first calls
    /// activate once.
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

/// First wait between connection attempts; it doubles up to [`MAX_BACKOFF`]. Shorter than
/// Docker's first second: a plugin started alongside is usually listening within milliseconds.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long refused connections are retried unless told otherwise (Docker's 1+2+4+8 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl PluginBackend {
    /// Finds `driver`'s plugin in `plugin_dirs` (see [`discover`]); it is activated on first
    /// use.
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

    /// A plugin at a known address, activated on first use.
    pub fn at(driver: DriverName, addr: PluginAddr, timeouts: Timeouts) -> Self {
        Self {
            driver,
            client: Client::new(addr),
            timeouts,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            waits: Waits::default(),
            activated: Mutex::new(false),
        }
    }

    /// Retries refused connections for at most `t` (within each call's own timeout).
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Names waits for a refusing plugin in `waits`, for a progress display.
    pub fn with_waits(mut self, waits: Waits) -> Self {
        self.waits = waits;
        self
    }

    /// The plugin's address.
    pub fn addr(&self) -> &PluginAddr {
        self.client.addr()
    }

    fn fail(&self, name: Option<&VolumeName>, call: Call, e: PluginError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// One request: POST, then the protocol's error rules. Returns the answer's JSON object.
    fn request(
        &self,
        endpoint: &'static str,
        body: &Value,
        d: &Deadline,
    ) -> Result<Value, PluginError> {
        let resp = self.post(endpoint, body, d)?;
        self.answer(endpoint, &resp)
    }

    /// The JSON object of a plugin's answer to `endpoint`, or the failure it reports.
    fn answer(&self, endpoint: &'static str, resp: &http::Response) -> Result<Value, PluginError> {
        let addr = || self.client.addr().clone();
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
                field: "JSON object",
                body: excerpt(&resp.body),
            });
        }
        Ok(value)
    }

    /// POSTs to the plugin, retrying a refused connection (see the module docs) until the
    /// connect timeout or `d`, whichever comes first.
    fn post(
        &self,
        endpoint: &'static str,
        body: &Value,
        d: &Deadline,
    ) -> Result<http::Response, PluginError> {
        let path = format!("/{endpoint}");
        let body = body.to_string();
        let started = Instant::now();
        let connect = d.within(self.connect_timeout);
        let mut backoff = FIRST_BACKOFF;
        // The wait named for the progress display, while it lasts, and its words.
        let mut waiting: Option<(String, WaitGuard)> = None;
        loop {
            let source = match self.client.post_by(&path, body.as_bytes(), d) {
                Err(e) if e.is_refused() => e,
                Ok(resp) => return Ok(resp),
                Err(source) => {
                    return Err(PluginError::Http {
                        addr: self.client.addr().clone(),
                        endpoint,
                        source,
                    })
                }
            };
            // Never sleep into the call's own deadline: the next attempt could only time out.
            let pause = connect.left().map(|left| backoff.min(left));
            let Some(pause) = pause.ok().filter(|p| d.allows(*p)) else {
                return Err(PluginError::NotListening {
                    addr: self.client.addr().clone(),
                    endpoint,
                    tried: started.elapsed(),
                    source,
                });
            };
            let reason = format!(
                "plugin {} is not accepting connections ({}); retrying",
                self.driver,
                source.refusal()
            );
            if waiting.as_ref().is_none_or(|(said, _)| *said != reason) {
                log::warn!(
                    "{reason} for up to {:.0} s more ({})",
                    connect.left().unwrap_or_default().as_secs_f64(),
                    self.client.addr()
                );
                let guard = self.waits.begin(reason.clone());
                waiting = Some((reason, guard));
            }
            log::debug!(
                "plugin {} at {}: not listening yet ({}); retrying in {:?}",
                self.driver,
                self.client.addr(),
                crate::error::render_chain(&source),
                pause,
            );
            if self.waits.pause(pause).is_err() {
                return Err(PluginError::Interrupted {
                    addr: self.client.addr().clone(),
                    endpoint,
                    tried: started.elapsed(),
                });
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Activates the plugin once (a refused connection is retried as every request's is).
    fn activate(&self, d: &Deadline) -> Result<(), BackendError> {
        let mut done = self.activated.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return Ok(());
        }
        let answer = self
            .request("Plugin.Activate", &json!({}), d)
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

    /// Activates, then makes one request about `name` as part of `call`.
    fn volume_request(
        &self,
        name: &VolumeName,
        call: Call,
        endpoint: &'static str,
        body: Value,
        d: &Deadline,
    ) -> Result<Value, BackendError> {
        self.activate(d)?;
        self.request(endpoint, &body, d)
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

    /// `VolumeDriver.Get`, after activation; the plugin's answer is not yet interpreted.
    fn lookup(&self, name: &VolumeName, d: &Deadline) -> Result<Option<VolumeInfo>, PluginError> {
        self.request("VolumeDriver.Get", &json!({"Name": name.as_str()}), d)
            .map(|v| v.get("Volume").and_then(Self::info))
    }

    fn create_by(
        &self,
        name: &VolumeName,
        opts: &VolumeOpts,
        d: &Deadline,
    ) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str(), "Opts": opts});
        self.volume_request(name, Call::Create, "VolumeDriver.Create", body, d)
            .map(drop)
    }
}

impl Backend for PluginBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.create_by(name, opts, &Deadline::after(self.timeouts.mount))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str()});
        let d = Deadline::after(self.timeouts.unmount);
        self.volume_request(name, Call::Remove, "VolumeDriver.Remove", body, &d)
            .map(drop)
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        // One deadline for activation, Get, Create and Mount: the mount timeout bounds the
        // backend call, whatever it takes.
        let d = Deadline::after(self.timeouts.mount);
        self.activate(&d)?;
        // Docker's volume store asks Get first and creates only when Get yields no volume,
        // reading any answer that is not a volume (an Err, a 404 from a plugin without Get) as
        // "not there". So do we; a failed exchange, though, says nothing and is an error.
        // With explicit_create only an Err (the plugin's "no such volume", as in `get`) counts as
        // absent: a plugin without Get cannot say, and refusing would be a guess.
        let exists = match self.lookup(req.name, &d) {
            Ok(found) => found.is_some(),
            Err(PluginError::PluginErr { .. }) => false,
            Err(e) if e.is_answer() && !req.explicit_create => false,
            Err(e) => return Err(self.fail(Some(req.name), Call::Mount, e)),
        };
        if !exists {
            if req.explicit_create {
                return Err(BackendError::no_such_volume(&self.driver, req.name));
            }
            self.create_by(req.name, req.opts, &d)?;
        }
        let body = json!({"Name": req.name.as_str(), "ID": req.id.0});
        let v = self.volume_request(req.name, Call::Mount, "VolumeDriver.Mount", body, &d)?;
        // As answered (empty when missing): the Checked wrapper judges it and, refusing it, calls
        // Unmount, which only a mount that returned can do.
        let mp = v.get("Mountpoint").and_then(Value::as_str).unwrap_or("");
        Ok(PathBuf::from(mp))
    }

    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        let body = json!({"Name": name.as_str(), "ID": id.0});
        let d = Deadline::after(self.timeouts.unmount);
        self.volume_request(name, Call::Unmount, "VolumeDriver.Unmount", body, &d)
            .map(drop)
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let body = json!({"Name": name.as_str()});
        let d = Deadline::after(self.timeouts.mount);
        let v = self.volume_request(name, Call::Path, "VolumeDriver.Path", body, &d)?;
        match v.get("Mountpoint").and_then(Value::as_str) {
            None | Some("") => Ok(None),
            Some(_) => self
                .mountpoint(name, Call::Path, "VolumeDriver.Path", &v)
                .map(Some),
        }
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        let d = Deadline::after(self.timeouts.mount);
        self.activate(&d)?;
        match self.lookup(name, &d) {
            Ok(found) => Ok(found),
            // Plugins say "no such volume" in their own words; an answered Err means absent.
            Err(PluginError::PluginErr { .. }) => Ok(None),
            Err(e) => Err(self.fail(Some(name), Call::Get, e)),
        }
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let d = Deadline::after(self.timeouts.mount);
        self.activate(&d)?;
        let v = self
            .request("VolumeDriver.List", &json!({}), &d)
            .map_err(|e| self.fail(None, Call::List, e))?;
        Ok(v.get("Volumes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Self::info).collect())
            .unwrap_or_default())
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        const ENDPOINT: &str = "VolumeDriver.Capabilities";
        let d = Deadline::after(self.timeouts.mount);
        self.activate(&d)?;
        let fail = |e| self.fail(None, Call::Capabilities, e);
        let resp = self.post(ENDPOINT, &json!({}), &d).map_err(fail)?;
        // The endpoint is optional: a plugin without it has local scope, as Docker
        // (volume/drivers/adapter.go) treats it. Only a status that says the endpoint is not
        // there means that; any other failed answer (a 500 from a plugin still starting, an
        // `Err`, a body that is not JSON) leaves the scope unknown, and is an error here: a
        // caller that must not treat a global plugin as local asks again later.
        if matches!(resp.status, 404 | 405 | 501) {
            log::debug!(
                "driver {}: {ENDPOINT} answered HTTP {}: no such endpoint, so local scope",
                self.driver,
                resp.status
            );
            return Ok(Capabilities {
                scope: Scope::Local,
            });
        }
        // A scope that is missing or unknown is local, as for Docker; it is matched without
        // regard to case.
        let scope = self
            .answer(ENDPOINT, &resp)
            .map_err(fail)?
            .pointer("/Capabilities/Scope")
            .and_then(Value::as_str)
            .filter(|s| s.eq_ignore_ascii_case("global"))
            .map_or(Scope::Local, |_| Scope::Global);
        Ok(Capabilities { scope })
    }
}
