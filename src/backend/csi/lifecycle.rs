//! Mount and unmount of one CSI volume: the steps in order, each recorded before and after its
//! RPC, and their undoing in reverse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::record::{CsiRecord, RecordFile, Step, StepState, RECORD_VERSION};
use super::{CsiBackend, CsiBackendError, PluginState};
use crate::backend::MountRequest;
use crate::csi::proto::{
    volume_capability, CapacityRange, ControllerPublishVolumeRequest,
    ControllerUnpublishVolumeRequest, CreateVolumeRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, Volume,
    VolumeCapability,
};
use crate::csi::{Code, CsiError};
use crate::spec::{VolumeName, VolumeOpts};

/// What a volume's options ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Plan {
    /// `volume_id=`: a pre-provisioned volume.
    pub volume_id: Option<String>,
    /// `size=` in bytes (0: the plugin's choice).
    pub capacity: i64,
    /// `fstype=`.
    pub fs_type: String,
    /// Every other option.
    pub parameters: BTreeMap<String, String>,
}

/// Reads the task's options (see the backend's docs).
pub(super) fn plan(opts: &VolumeOpts) -> Result<Plan, CsiBackendError> {
    let mut plan = Plan::default();
    for (key, value) in opts.iter() {
        match key {
            "size" => {
                plan.capacity = parse_size(value).ok_or_else(|| CsiBackendError::BadOption {
                    key: "size",
                    value: value.to_owned(),
                    why: "not a size; give bytes as a whole number, with an optional suffix K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024)",
                })?
            }
            "fstype" => plan.fs_type = value.to_owned(),
            "volume_id" if value.is_empty() => {
                return Err(CsiBackendError::BadOption {
                    key: "volume_id",
                    value: String::new(),
                    why: "empty; give the plugin's id of an existing volume",
                })
            }
            "volume_id" => plan.volume_id = Some(value.to_owned()),
            _ => {
                plan.parameters.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(plan)
}

/// The crash point `csi:<step>:<moment>` (see the isolator's `CRASH_POINTS`).
fn crash_at(step: Step, moment: &str) {
    if cfg!(feature = "crash-points") {
        let step = serde_json::to_value(step).unwrap_or_default();
        crate::crash::point(&format!("csi:{}:{moment}", step.as_str().unwrap_or("?")));
    }
}

/// Bytes from `10`, `10K`, `10Mi`, …; `None` when not a size or too large.
pub(super) fn parse_size(s: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = UNITS
        .iter()
        .find_map(|(suffix, n)| s.strip_suffix(suffix).map(|d| (d, *n)))
        .unwrap_or((s, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit)
}

fn utf8(path: &Path) -> Result<String, CsiBackendError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| CsiBackendError::NotUtf8 {
            path: path.to_owned(),
        })
}

fn mkdir(path: &Path) -> Result<(), CsiBackendError> {
    std::fs::create_dir_all(path).map_err(|source| CsiBackendError::Io {
        op: "creating",
        path: path.to_owned(),
        source,
    })
}

/// Removes a directory this backend made or the plugin left, if it is there. A mount point is
/// never removed: `rmdir` refuses one (`EBUSY`), and that is reported.
fn remove_dir(path: &Path) -> Result<(), CsiBackendError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CsiBackendError::StillMounted {
            path: path.to_owned(),
        }),
        Err(source) => Err(CsiBackendError::Io {
            op: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

impl CsiBackend {
    fn capability(&self, mode: i32, fs_type: &str, mount_flags: &[String]) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume {
                    fs_type: fs_type.to_owned(),
                    mount_flags: mount_flags.to_vec(),
                },
            )),
            access_mode: Some(volume_capability::AccessMode { mode }),
        }
    }

    /// The access mode for use on this node: the reader mode for readers only, else a writer's.
    fn access_mode(state: &PluginState, read_only: bool) -> i32 {
        let mode = if read_only {
            volume_capability::Mode::SingleNodeReaderOnly
        } else if state.multi_writer {
            volume_capability::Mode::SingleNodeMultiWriter
        } else {
            volume_capability::Mode::SingleNodeWriter
        };
        mode as i32
    }

    fn controller(&self) -> Result<&crate::csi::Client, CsiBackendError> {
        self.controller
            .as_ref()
            .ok_or_else(|| CsiBackendError::CannotCreate {
                plugin: self.driver.as_str().to_owned(),
                why: "no CONTROLLER_SERVICE endpoint is configured",
            })
    }

    /// `CreateVolume` for `name`, with the writer's capability (and the reader's, when `mode` is
    /// that): the volume must serve the later writers of a volume first used read-only.
    fn create_request(
        &self,
        state: &PluginState,
        name: &VolumeName,
        plan: &Plan,
        mode: i32,
    ) -> CreateVolumeRequest {
        let writer = Self::access_mode(state, false);
        let mut volume_capabilities = vec![self.capability(writer, &plan.fs_type, &[])];
        if mode != writer {
            volume_capabilities.push(self.capability(mode, &plan.fs_type, &[]));
        }
        CreateVolumeRequest {
            name: name.as_str().to_owned(),
            capacity_range: (plan.capacity > 0).then_some(CapacityRange {
                required_bytes: plan.capacity,
                limit_bytes: 0,
            }),
            volume_capabilities,
            parameters: plan.parameters.clone(),
            secrets: BTreeMap::new(),
        }
    }

    fn check_can_create(&self, state: &PluginState) -> Result<(), CsiBackendError> {
        if state.create {
            return Ok(());
        }
        Err(CsiBackendError::CannotCreate {
            plugin: self.driver.as_str().to_owned(),
            why: if !state.has_controller {
                "no CONTROLLER_SERVICE endpoint is configured, or the plugin offers no controller service"
            } else {
                "its controller lacks CREATE_DELETE_VOLUME"
            },
        })
    }

    /// `CreateVolume` for `name` with `opts` (not recorded: nothing on this node changes).
    pub(super) fn create_volume(
        &self,
        name: &VolumeName,
        opts: &VolumeOpts,
    ) -> Result<Volume, CsiBackendError> {
        let plan = plan(opts)?;
        let state = self.plugin_state()?;
        self.check_can_create(&state)?;
        let req = self.create_request(&state, name, &plan, Self::access_mode(&state, false));
        let controller = self.controller()?;
        controller
            .create_volume(req, self.timeouts.mount)
            .inspect_err(|e| self.forget_if_gone(e))
            .map_err(Into::into)
    }

    /// Makes `req.name` usable at its target (see the backend's docs); returns the target.
    pub(super) fn mount_volume(&self, req: &MountRequest<'_>) -> Result<PathBuf, CsiBackendError> {
        let plan = plan(req.opts)?;
        if req.explicit_create && plan.volume_id.is_none() {
            return Err(CsiBackendError::ExplicitCreate);
        }
        let state = self.plugin_state()?;
        let file = self.record_file(req.name);
        let existing = file.load()?;
        if let Some(r) = &existing {
            if r.is_published() && r.steps.values().all(|s| *s == StepState::Done) {
                return Ok(r.target_path.clone());
            }
        }
        mkdir(file.dir())?;
        let mut record = existing.unwrap_or_else(|| CsiRecord {
            version: RECORD_VERSION,
            plugin: self.driver.as_str().to_owned(),
            volume: req.name.as_str().to_owned(),
            volume_id: None,
            pre_provisioned: false,
            node_id: state.node_id.clone(),
            staging_path: file.dir().join("staging"),
            target_path: self.target_path(req.name),
            access_mode: Self::access_mode(&state, req.read_only),
            fs_type: plan.fs_type.clone(),
            readonly: req.read_only,
            volume_context: BTreeMap::new(),
            publish_context: BTreeMap::new(),
            steps: BTreeMap::new(),
        });
        match self.mount_steps(&state, &file, &mut record, &plan, req) {
            Ok(()) => Ok(record.target_path),
            Err(error) => match self.undo(&file, &mut record) {
                Ok(()) => Err(error),
                Err(undo) => Err(CsiBackendError::UndoFailed {
                    error: Box::new(error),
                    undo: Box::new(undo),
                }),
            },
        }
    }

    fn mount_steps(
        &self,
        state: &PluginState,
        file: &RecordFile,
        rec: &mut CsiRecord,
        plan: &Plan,
        req: &MountRequest<'_>,
    ) -> Result<(), CsiBackendError> {
        let t = self.timeouts.mount;
        let name = req.name;
        // A CSI_VOLUME entry's flags, context and secrets; none for the environment form.
        let csi = req.csi.cloned().unwrap_or_default();
        if rec.volume_id.is_none() {
            if let Some(id) = &plan.volume_id {
                rec.volume_id = Some(id.clone());
                rec.pre_provisioned = true;
                rec.volume_context = csi.volume_context.clone();
                file.save(rec)?;
            } else {
                self.check_can_create(state)?;
                let controller = self.controller()?;
                let req = self.create_request(state, name, plan, rec.access_mode);
                self.step(file, rec, Step::CreateVolume, |rec| {
                    let v = controller.create_volume(req, t)?;
                    rec.volume_id = Some(v.volume_id);
                    rec.volume_context = v.volume_context;
                    Ok(())
                })?;
            }
        }
        let volume_id = rec.volume_id.clone().unwrap_or_default();
        let capability = self.capability(rec.access_mode, &rec.fs_type, &csi.mount_flags);
        if state.controller_publish && rec.step(Step::ControllerPublish) != Some(StepState::Done) {
            let controller = self.controller()?;
            let req = ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: rec.node_id.clone(),
                volume_capability: Some(capability.clone()),
                // Attaching read-only is a capability of its own; without it the node's
                // read-only publish is what keeps the volume unwritten.
                readonly: rec.readonly && state.publish_readonly,
                secrets: BTreeMap::new(),
                volume_context: rec.volume_context.clone(),
            };
            self.step(file, rec, Step::ControllerPublish, |rec| {
                rec.publish_context = controller.controller_publish(req, t)?.publish_context;
                Ok(())
            })?;
        }
        let staging = if state.stage {
            utf8(&rec.staging_path)?
        } else {
            String::new()
        };
        if state.stage && rec.step(Step::NodeStage) != Some(StepState::Done) {
            mkdir(&rec.staging_path)?;
            let req = NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: rec.publish_context.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(capability.clone()),
                secrets: csi.node_stage_secrets.to_map(),
                volume_context: rec.volume_context.clone(),
            };
            self.step(file, rec, Step::NodeStage, |_| self.node.node_stage(req, t))?;
        }
        if rec.step(Step::NodePublish) != Some(StepState::Done) {
            if let Some(parent) = rec.target_path.parent() {
                mkdir(parent)?;
            }
            if self.info.target_path_exists {
                mkdir(&rec.target_path)?;
            }
            let req = NodePublishVolumeRequest {
                volume_id,
                publish_context: rec.publish_context.clone(),
                staging_target_path: staging,
                target_path: utf8(&rec.target_path)?,
                volume_capability: Some(capability),
                readonly: rec.readonly,
                secrets: csi.node_publish_secrets.to_map(),
                volume_context: rec.volume_context.clone(),
            };
            self.step(file, rec, Step::NodePublish, |_| {
                self.node.node_publish(req, t)
            })?;
        }
        Ok(())
    }

    /// Records `step` as calling, makes the call, records it done.
    fn step(
        &self,
        file: &RecordFile,
        rec: &mut CsiRecord,
        step: Step,
        call: impl FnOnce(&mut CsiRecord) -> Result<(), CsiError>,
    ) -> Result<(), CsiBackendError> {
        rec.steps.insert(step, StepState::Calling);
        file.save(rec)?;
        crash_at(step, "calling");
        call(rec).inspect_err(|e| self.forget_if_gone(e))?;
        crash_at(step, "answered");
        rec.steps.insert(step, StepState::Done);
        file.save(rec)
    }

    /// Records `step` as undoing, makes the call, forgets the step. `NOT_FOUND` counts as undone:
    /// the plugin does not know the volume, so it is not published, staged or attached.
    fn unstep(
        &self,
        file: &RecordFile,
        rec: &mut CsiRecord,
        step: Step,
        call: impl FnOnce() -> Result<(), CsiError>,
    ) -> Result<(), CsiBackendError> {
        if rec.step(step).is_none() {
            return Ok(());
        }
        rec.steps.insert(step, StepState::Undoing);
        file.save(rec)?;
        crash_at(step, "undoing");
        match call() {
            Ok(()) => {}
            Err(e) if e.code() == Some(Code::NotFound) => {
                log::warn!("{e}; taken as undone");
            }
            Err(e) => {
                self.forget_if_gone(&e);
                return Err(e.into());
            }
        }
        crash_at(step, "undone");
        rec.steps.remove(&step);
        file.save(rec)
    }

    /// Undoes whatever the record says may have happened, in reverse, then removes the record.
    fn undo(&self, file: &RecordFile, rec: &mut CsiRecord) -> Result<(), CsiBackendError> {
        let t = self.timeouts.unmount;
        if let Some(volume_id) = rec.volume_id.clone() {
            let target_path = utf8(&rec.target_path)?;
            let staging = utf8(&rec.staging_path)?;
            let id = volume_id.clone();
            self.unstep(file, rec, Step::NodePublish, || {
                self.node.node_unpublish(
                    NodeUnpublishVolumeRequest {
                        volume_id: id,
                        target_path,
                    },
                    t,
                )
            })?;
            remove_dir(&rec.target_path)?;
            let id = volume_id.clone();
            self.unstep(file, rec, Step::NodeStage, || {
                self.node.node_unstage(
                    NodeUnstageVolumeRequest {
                        volume_id: id,
                        staging_target_path: staging,
                    },
                    t,
                )
            })?;
            remove_dir(&rec.staging_path)?;
            if rec.step(Step::ControllerPublish).is_some() {
                let controller = self.controller()?;
                let node_id = rec.node_id.clone();
                self.unstep(file, rec, Step::ControllerPublish, || {
                    controller.controller_unpublish(
                        ControllerUnpublishVolumeRequest {
                            volume_id,
                            node_id,
                            secrets: BTreeMap::new(),
                        },
                        t,
                    )
                })?;
            }
        } else {
            remove_dir(&rec.target_path)?;
            remove_dir(&rec.staging_path)?;
        }
        file.remove()
    }

    /// Undoes every step the volume's record holds (nothing when it has none).
    pub(super) fn unmount_volume(&self, name: &VolumeName) -> Result<(), CsiBackendError> {
        let file = self.record_file(name);
        match file.load()? {
            Some(mut rec) => self.undo(&file, &mut rec),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_suffixes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10K"), Some(10_000));
        assert_eq!(parse_size("10Ki"), Some(10_240));
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("2G"), Some(2_000_000_000));
        assert_eq!(parse_size("3Mi"), Some(3 << 20));
        for bad in ["", "G", "1.5G", "-1", "1g", "1GB", "99999999999Ti"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn options_split_into_size_fstype_volume_id_and_parameters() {
        let opts = VolumeOpts::parse("size=1Mi,fstype=xfs,tier=gold,volume_id=v-7").unwrap();
        let p = plan(&opts).unwrap();
        assert_eq!(p.capacity, 1 << 20);
        assert_eq!(p.fs_type, "xfs");
        assert_eq!(p.volume_id.as_deref(), Some("v-7"));
        assert_eq!(
            p.parameters,
            BTreeMap::from([("tier".to_owned(), "gold".to_owned())])
        );
        let e = plan(&VolumeOpts::parse("size=big").unwrap()).unwrap_err();
        assert!(e.to_string().contains("option size=\"big\""), "{e}");
    }
}
