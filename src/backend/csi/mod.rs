//! The CSI backend: a configured Container Storage Interface plugin serving a driver name (its
//! `type`), through the same [`Backend`] trait as every other driver.
//!
//! # Lifecycle (one host mount per volume, shared by its containers)
//!
//! Identity first, once per plugin and again after it was unreachable (it may have restarted):
//! `GetPluginInfo`, `GetPluginCapabilities`, `Probe`, `NodeGetInfo` (this node's id),
//! `NodeGetCapabilities`, and `ControllerGetCapabilities` when a controller endpoint is
//! configured and the plugin says it has that service. Then, in [`Backend::mount`]:
//!
//! 1. `CreateVolume` by the volume's name, unless the task gave `volume_id=` (a pre-provisioned
//!    volume). The same name gives the same id; another size is the plugin's `ALREADY_EXISTS`.
//! 2. `ControllerPublishVolume` with this node's id, when the controller has
//!    `PUBLISH_UNPUBLISH_VOLUME`; its publish context goes to the node's calls.
//! 3. `NodeStageVolume` at `<work_dir>/csi/<type>/<volume>/staging` (made here), when the node
//!    has `STAGE_UNSTAGE_VOLUME`.
//! 4. `NodePublishVolume` at `<work_dir>/csi/<type>/<volume>/target` (or
//!    `<target_path_root>/<type>/<volume>`), whose parent is made here; the plugin makes the
//!    target, unless the configuration says `target_path_exists`. The target is the host mount
//!    point the isolator binds into containers.
//!
//! [`Backend::unmount`] undoes them in reverse: `NodeUnpublishVolume`, `NodeUnstageVolume`,
//! `ControllerUnpublishVolume`. A volume is never deleted. A mount that fails undoes the steps it
//! made before returning the error (and says so when undoing fails too: the record keeps what is
//! left for the unmount to finish).
//!
//! Options (`DVDI_VOLUME_OPTS`): `size=` (bytes, with K/M/G/T or Ki/Mi/Gi/Ti) is the capacity
//! asked of `CreateVolume`; `fstype=` the mount capability's file system; `volume_id=` names a
//! pre-provisioned volume; every other option is a `CreateVolume` parameter. The access mode is
//! `SINGLE_NODE_READER_ONLY`, published `readonly`, when every user of the host mount reads only;
//! otherwise `SINGLE_NODE_MULTI_WRITER` when the plugin offers it (several containers write
//! through one publish), else `SINGLE_NODE_WRITER`.
//!
//! Every step is written to the volume's [record](record) before its RPC and after it answered,
//! so an unmount after a crash undoes exactly what may have happened.
//!
//! # Must never
//!
//! Delete a volume, call a plugin without a deadline, pass or record a task's environment as a
//! secret, or leave a step unrecorded. Calls for one volume are serialised by the caller (the
//! isolator holds the volume's lock across backend calls).

mod lifecycle;
pub mod record;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{
    Backend, BackendError, BackendErrorKind, Call, Capabilities, MountId, MountRequest, Scope,
    Timeouts, VolumeInfo,
};
use crate::csi::proto::{
    controller_service_capability, node_service_capability, plugin_capability,
};
use crate::csi::{Client, CsiError, PluginInfo};
use crate::spec::{DriverName, VolumeName, VolumeOpts};
use record::{CsiRecord, RecordFile};

/// A failed CSI backend operation.
#[derive(Debug, thiserror::Error)]
pub enum CsiBackendError {
    /// An RPC failed (the error names the plugin, the RPC, the code and the plugin's message).
    #[error(transparent)]
    Rpc(#[from] CsiError),
    /// `Probe` says the plugin is not ready yet.
    #[error(
        "CSI plugin {plugin:?} is not ready yet (Probe answered ready=false); try again once it is"
    )]
    NotReady {
        /// The plugin.
        plugin: String,
    },
    /// A volume to create, but no controller that can.
    #[error("CSI plugin {plugin:?} cannot create volumes ({why}); give the id of an existing volume with the option volume_id=ID")]
    CannotCreate {
        /// The plugin.
        plugin: String,
        /// Why not.
        why: &'static str,
    },
    /// `DVDI_VOLUME_EXPLICITCREATE=true` without `volume_id=`.
    #[error("DVDI_VOLUME_EXPLICITCREATE=true forbids CreateVolume; give the id of the existing volume with the option volume_id=ID")]
    ExplicitCreate,
    /// An option that cannot be used.
    #[error("option {key}={value:?}: {why}")]
    BadOption {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// What is wrong and what to write.
        why: &'static str,
    },
    /// A path that cannot be passed to a plugin (CSI paths are UTF-8 strings).
    #[error("path {} is not UTF-8, which CSI requires", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A file or directory operation failed.
    #[error("{op} {} failed", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The target is still a mount point after `NodeUnpublishVolume` said it was unpublished.
    #[error("the target {} is still mounted after NodeUnpublishVolume succeeded; unmount it by hand, then retry", path.display())]
    StillMounted {
        /// The target.
        path: PathBuf,
    },
    /// A record that is not valid JSON for this format.
    #[error("CSI volume record {} is corrupt and was left as it is; inspect it, undo by hand what it says was done, then move it away", path.display())]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A record of another format version.
    #[error("CSI volume record {} has format version {found}; this build reads version {} only", path.display(), record::RECORD_VERSION)]
    RecordVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A mount failed, and undoing its steps failed too.
    #[error("{error}; undoing the steps already made failed too, so the volume's record keeps them for the unmount to finish: {}", crate::error::render_chain(undo.as_ref()))]
    UndoFailed {
        /// Why the mount failed.
        error: Box<CsiBackendError>,
        /// Why undoing failed.
        undo: Box<CsiBackendError>,
    },
    /// Volumes are never deleted.
    #[error("CSI volumes are never deleted by mesos-dvdi; delete the volume with the storage system's own tools")]
    NeverDeletes,
    /// A CSI type that is also another driver's name.
    #[error("driver {driver:?} is both the CSI plugin configured in {} and {other}; rename one of them", file.display())]
    NameConflict {
        /// The name.
        driver: String,
        /// The CSI plugin's configuration file.
        file: PathBuf,
        /// The other driver (a built-in driver, or a Docker plugin and where it was found).
        other: String,
    },
}

/// What the plugin said about itself, cached until it is unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginState {
    /// `GetPluginInfo`'s name.
    pub name: String,
    /// `GetPluginInfo`'s version.
    pub vendor_version: String,
    /// This node's id.
    pub node_id: String,
    /// The plugin's services (`CONTROLLER_SERVICE`, …).
    pub plugin_capabilities: Vec<String>,
    /// The controller's RPCs, when a controller is used.
    pub controller_capabilities: Vec<String>,
    /// The node's RPCs.
    pub node_capabilities: Vec<String>,
    /// Whether a controller is used (configured and offered).
    #[serde(skip)]
    has_controller: bool,
    #[serde(skip)]
    create: bool,
    #[serde(skip)]
    controller_publish: bool,
    #[serde(skip)]
    stage: bool,
    #[serde(skip)]
    multi_writer: bool,
    #[serde(skip)]
    publish_readonly: bool,
}

/// A configured CSI plugin serving one driver (see the module docs).
pub struct CsiBackend {
    driver: DriverName,
    info: PluginInfo,
    node: Client,
    controller: Option<Client>,
    /// `<work_dir>/csi/<type>`, symlinks resolved (a target reached through a link is refused).
    root: PathBuf,
    durable: bool,
    timeouts: Timeouts,
    state: Mutex<Option<Arc<PluginState>>>,
}

impl std::fmt::Debug for CsiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiBackend")
            .field("driver", &self.driver)
            .field("node", &self.info.node_socket)
            .finish_non_exhaustive()
    }
}

fn capability_names<T: std::fmt::Debug>(caps: &[T]) -> Vec<String> {
    caps.iter().map(|c| screaming(&format!("{c:?}"))).collect()
}

/// `StageUnstageVolume` → `STAGE_UNSTAGE_VOLUME`, as the specification spells capabilities.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl CsiBackend {
    /// The backend of the plugin `info`, keeping its records under `<work_dir>/csi/<type>`
    /// (made now).
    pub fn new(
        info: PluginInfo,
        work_dir: &Path,
        timeouts: Timeouts,
    ) -> Result<Self, CsiBackendError> {
        let driver = info.plugin_type.clone();
        let root = records_root(work_dir, &driver);
        std::fs::create_dir_all(&root).map_err(|source| CsiBackendError::Io {
            op: "creating",
            path: root.clone(),
            source,
        })?;
        let root = std::fs::canonicalize(&root).map_err(|source| CsiBackendError::Io {
            op: "resolving",
            path: root.clone(),
            source,
        })?;
        let node = Client::new(driver.as_str(), info.node_socket.clone());
        let controller = info
            .controller_socket
            .as_ref()
            .map(|s| Client::new(driver.as_str(), s.clone()));
        Ok(Self {
            durable: crate::durable::is_durable(&root),
            driver,
            info,
            node,
            controller,
            root,
            timeouts,
            state: Mutex::new(None),
        })
    }

    /// The plugin's configuration.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// What the plugin says about itself (asked now if not known), with this node's id.
    pub fn plugin_state(&self) -> Result<Arc<PluginState>, CsiBackendError> {
        let mut cached = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cached.as_ref() {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(self.identify()?);
        *cached = Some(Arc::clone(&s));
        Ok(s)
    }

    /// Forgets what the plugin said when `e` means it may have gone away (and may come back
    /// another version, or with other capabilities).
    fn forget_if_gone(&self, e: &CsiError) {
        if e.is_connection() {
            *self.state.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    fn identify(&self) -> Result<PluginState, CsiBackendError> {
        identify(
            &self.driver,
            &self.node,
            self.controller.as_ref(),
            self.timeouts.mount,
        )
        .inspect_err(|e| {
            if let CsiBackendError::Rpc(e) = e {
                self.forget_if_gone(e);
            }
        })
    }

    /// The record of `name`.
    fn record_file(&self, name: &VolumeName) -> RecordFile {
        RecordFile::new(self.root.join(name.as_str()), self.durable)
    }

    /// Where `name` is published: under the volume's directory, or under `target_path_root`.
    fn target_path(&self, name: &VolumeName) -> PathBuf {
        match &self.info.target_path_root {
            Some(root) => root.join(self.driver.as_str()).join(name.as_str()),
            None => self.root.join(name.as_str()).join("target"),
        }
    }

    /// Every volume with a record.
    fn records(&self) -> Result<Vec<CsiRecord>, CsiBackendError> {
        let entries = std::fs::read_dir(&self.root).map_err(|source| CsiBackendError::Io {
            op: "listing",
            path: self.root.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let file = RecordFile::new(entry.path(), self.durable);
            if let Some(r) = file.load()? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.volume.cmp(&b.volume));
        Ok(out)
    }

    fn err(&self, name: Option<&VolumeName>, call: Call, e: CsiBackendError) -> BackendError {
        BackendError::new(&self.driver, name, call, BackendErrorKind::Csi(e))
    }
}

/// Asks a plugin about itself (identity, readiness, this node's id, capabilities), each call
/// within `t`. For listings: the backend keeps the answer until the plugin is unreachable.
pub fn identify_plugin(
    info: &PluginInfo,
    t: std::time::Duration,
) -> Result<PluginState, CsiBackendError> {
    let node = Client::new(info.plugin_type.as_str(), info.node_socket.clone());
    let controller = info
        .controller_socket
        .as_ref()
        .map(|s| Client::new(info.plugin_type.as_str(), s.clone()));
    identify(&info.plugin_type, &node, controller.as_ref(), t)
}

fn identify(
    driver: &DriverName,
    node: &Client,
    controller: Option<&Client>,
    t: std::time::Duration,
) -> Result<PluginState, CsiBackendError> {
    let info = node.get_plugin_info(t)?;
    let plugin_caps = node.get_plugin_capabilities(t)?;
    if !node.probe(t)? {
        return Err(CsiBackendError::NotReady {
            plugin: driver.as_str().to_owned(),
        });
    }
    let node_id = node.node_id(t)?;
    let node_caps = node.node_capabilities(t)?;
    let offers_controller =
        plugin_caps.contains(&plugin_capability::ServiceType::ControllerService);
    let controller = controller.filter(|_| offers_controller);
    let controller_caps = match controller {
        Some(c) => c.controller_capabilities(t)?,
        None => Vec::new(),
    };
    use controller_service_capability::RpcType as C;
    use node_service_capability::RpcType as N;
    let has_controller = controller.is_some();
    if info.name != driver.as_str() {
        log::info!(
            "CSI plugin {:?} calls itself {:?} (version {})",
            driver.as_str(),
            info.name,
            info.vendor_version
        );
    }
    Ok(PluginState {
        create: has_controller && controller_caps.contains(&C::CreateDeleteVolume),
        controller_publish: has_controller && controller_caps.contains(&C::PublishUnpublishVolume),
        stage: node_caps.contains(&N::StageUnstageVolume),
        publish_readonly: has_controller && controller_caps.contains(&C::PublishReadonly),
        multi_writer: node_caps.contains(&N::SingleNodeMultiWriter)
            && (!has_controller || controller_caps.contains(&C::SingleNodeMultiWriter)),
        has_controller,
        name: info.name,
        vendor_version: info.vendor_version,
        node_id,
        plugin_capabilities: capability_names(&plugin_caps),
        controller_capabilities: capability_names(&controller_caps),
        node_capabilities: capability_names(&node_caps),
    })
}

/// Where the records of the CSI plugin `driver` live under `work_dir`.
fn records_root(work_dir: &Path, driver: &DriverName) -> PathBuf {
    work_dir.join("csi").join(driver.as_str())
}

/// The record of `driver`'s volume `name` under `work_dir`, if it has one: its id, paths and how
/// far its mount or unmount got. Read without the volume's lock (a snapshot: records are
/// replaced whole), for status.
pub fn read_record(
    work_dir: &Path,
    driver: &DriverName,
    name: &VolumeName,
) -> Result<Option<CsiRecord>, CsiBackendError> {
    RecordFile::new(records_root(work_dir, driver).join(name.as_str()), false).load()
}

fn info_of(record: &CsiRecord) -> VolumeInfo {
    VolumeInfo {
        name: record.volume.clone(),
        mountpoint: record.is_published().then(|| record.target_path.clone()),
        status: serde_json::json!({
            "volume_id": record.volume_id,
            "node_id": record.node_id,
            "staging_path": record.staging_path,
            "target_path": record.target_path,
            "steps": record.steps,
        }),
    }
}

impl Backend for CsiBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.create_volume(name, opts)
            .map(drop)
            .map_err(|e| self.err(Some(name), Call::Create, e))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        Err(self.err(Some(name), Call::Remove, CsiBackendError::NeverDeletes))
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        self.mount_volume(req)
            .map_err(|e| self.err(Some(req.name), Call::Mount, e))
    }

    fn unmount(&self, name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        self.unmount_volume(name)
            .map_err(|e| self.err(Some(name), Call::Unmount, e))
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let record = self
            .record_file(name)
            .load()
            .map_err(|e| self.err(Some(name), Call::Path, e))?;
        Ok(record
            .filter(CsiRecord::is_published)
            .map(|r| r.target_path))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        let record = self
            .record_file(name)
            .load()
            .map_err(|e| self.err(Some(name), Call::Get, e))?;
        Ok(record.as_ref().map(info_of))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let records = self.records().map_err(|e| self.err(None, Call::List, e))?;
        Ok(records.iter().map(info_of).collect())
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        // CSI volumes are cluster storage: any agent may ask for the same one.
        self.plugin_state()
            .map_err(|e| self.err(None, Call::Capabilities, e))?;
        Ok(Capabilities {
            scope: Scope::Global,
        })
    }
}
