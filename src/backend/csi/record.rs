//! What this agent did to one CSI volume, on disk: `<work_dir>/csi/<type>/<volume>/record.json`.
//!
//! Each step is recorded before its RPC is made (`calling`: it may or may not have happened) and
//! after it answered (`done`), and the same for undoing it (`undoing`, then the step is gone).
//! So whatever moment a crash hits, the record says which RPCs may have taken effect, and a later
//! unmount or recover undoes exactly those (CSI's calls are idempotent: undoing a step that never
//! happened succeeds). The record holds no secret.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CsiBackendError;
use crate::durable;

/// The record format this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// A step of making a volume usable on this node, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `CreateVolume` (never undone: volumes are never deleted).
    CreateVolume,
    /// `ControllerPublishVolume` (undone by `ControllerUnpublishVolume`).
    ControllerPublish,
    /// `NodeStageVolume` (undone by `NodeUnstageVolume`).
    NodeStage,
    /// `NodePublishVolume` (undone by `NodeUnpublishVolume`).
    NodePublish,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Its RPC was asked for; it may or may not have taken effect.
    Calling,
    /// Its RPC answered success.
    Done,
    /// The RPC undoing it was asked for; it may or may not have taken effect.
    Undoing,
}

/// One volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsiRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The plugin's type (the driver).
    pub plugin: String,
    /// The volume's name.
    pub volume: String,
    /// The plugin's id of the volume, once known.
    pub volume_id: Option<String>,
    /// Whether the id was given by the task (`volume_id=`) rather than created.
    pub pre_provisioned: bool,
    /// This node's id, as the plugin named it (for `ControllerUnpublishVolume`).
    pub node_id: String,
    /// The staging directory, made by this backend.
    pub staging_path: PathBuf,
    /// The target directory (its parent made by this backend).
    pub target_path: PathBuf,
    /// The access mode asked for (CSI's number).
    pub access_mode: i32,
    /// The file system type asked for (empty: the plugin's choice).
    pub fs_type: String,
    /// Whether the volume is published read-only.
    pub readonly: bool,
    /// From `CreateVolume`, passed to the later calls.
    pub volume_context: BTreeMap<String, String>,
    /// From `ControllerPublishVolume`, passed to the node's calls.
    pub publish_context: BTreeMap<String, String>,
    /// How far it got.
    pub steps: BTreeMap<Step, StepState>,
}

impl CsiRecord {
    /// Where `step` is, if it was ever asked for.
    pub fn step(&self, step: Step) -> Option<StepState> {
        self.steps.get(&step).copied()
    }

    /// Whether every step this record's plan needs is done (the volume is published).
    pub fn is_published(&self) -> bool {
        self.step(Step::NodePublish) == Some(StepState::Done)
    }
}

/// One volume's directory and record file.
#[derive(Debug, Clone)]
pub struct RecordFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    durable: bool,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CsiBackendError + 'a {
    move |source| CsiBackendError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl RecordFile {
    /// The record of the volume whose directory is `dir` (not created yet).
    pub fn new(dir: PathBuf, durable: bool) -> Self {
        Self {
            path: dir.join("record.json"),
            tmp: dir.join("record.json.tmp"),
            dir,
            durable,
        }
    }

    /// The volume's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record; `None` when there is none.
    pub fn load(&self) -> Result<Option<CsiRecord>, CsiBackendError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &self.path)(e)),
        };
        let record: CsiRecord =
            serde_json::from_slice(&bytes).map_err(|source| CsiBackendError::CorruptRecord {
                path: self.path.clone(),
                source,
            })?;
        if record.version != RECORD_VERSION {
            return Err(CsiBackendError::RecordVersion {
                path: self.path.clone(),
                found: record.version,
            });
        }
        Ok(Some(record))
    }

    /// Replaces the record atomically.
    pub fn save(&self, record: &CsiRecord) -> Result<(), CsiBackendError> {
        let bytes = serde_json::to_vec_pretty(record).expect("a CsiRecord always serialises");
        let durable_err = |e: durable::DurableError| CsiBackendError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        };
        durable::write_and_rename(&self.path, &self.tmp, &bytes, self.durable)
            .map_err(durable_err)?;
        durable::sync_dir(&self.dir, self.durable).map_err(durable_err)
    }

    /// Removes the record and the volume's directory (empty by then: the staging and target
    /// directories were removed before).
    pub fn remove(&self) -> Result<(), CsiBackendError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &self.path)(e)),
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.dir)(e)),
        }
    }
}
