//! The CSI backend's per-volume record as a crash leaves it: a mount interrupted between steps is
//! finished by the next mount, or undone exactly by an unmount (the steps the record says may
//! have happened, and no others).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesos_dvdi::backend::csi::record::{CsiRecord, RecordFile, Step, StepState, RECORD_VERSION};
use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::backend::{Backend, BackendProvider, MountId, MountRequest};
use mesos_dvdi::csi::proto::*;
use mesos_dvdi::csi::{Client, Rpc};
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use support::csi::{CsiPlugin, Options};
use support::host::{in_private_mount_ns, mounts_under, THREAD_MOUNTINFO};
use support::isolator::{is_mounted, Fixture};

const TYPE: &str = "hostpath.csi.k8s.io";
const T: Duration = Duration::from_secs(10);

struct Setup {
    fx: Fixture,
    plugin: CsiPlugin,
    backend: Arc<dyn Backend>,
    /// The volume's record, as the backend keeps it.
    file: RecordFile,
    volume_id: String,
}

/// A plugin, the backend for it, and the state a crash right after `NodeStageVolume` was asked
/// for leaves: the volume created and staged on the plugin's side, the record saying so.
fn crashed_after_stage_was_asked() -> Setup {
    let mut fx = Fixture::new();
    let plugin = CsiPlugin::start(
        &fx.root().join("csi.sock"),
        &fx.root().join("plugin"),
        Options::default(),
    );
    let dir = fx.root().join("csi-plugins");
    plugin.write_config(&dir, TYPE);
    fx.config.csi_plugins = mesos_dvdi::csi::load_dir(&dir).unwrap();
    let registry = Registry::new(fx.config.clone(), Arc::new(Host));
    let backend = registry
        .backend(&DriverName::new(TYPE).unwrap(), None)
        .unwrap();

    let client = Client::new(TYPE, plugin.socket());
    let capability = VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
        access_mode: Some(volume_capability::AccessMode { mode: 1 }),
    };
    let volume = client
        .create_volume(
            CreateVolumeRequest {
                name: "pgdata".into(),
                volume_capabilities: vec![capability.clone()],
                ..Default::default()
            },
            T,
        )
        .unwrap();
    let root = std::fs::canonicalize(&fx.config.work_dir)
        .unwrap()
        .join("csi")
        .join(TYPE)
        .join("pgdata");
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    client
        .node_stage(
            NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.to_str().unwrap().into(),
                volume_capability: Some(capability),
                ..Default::default()
            },
            T,
        )
        .unwrap();
    let file = RecordFile::new(root.clone(), false);
    file.save(&CsiRecord {
        version: RECORD_VERSION,
        plugin: TYPE.into(),
        volume: "pgdata".into(),
        volume_id: Some(volume.volume_id.clone()),
        pre_provisioned: false,
        node_id: "node-1".into(),
        staging_path: staging,
        target_path: root.join("target"),
        access_mode: 1,
        fs_type: String::new(),
        readonly: false,
        volume_context: volume.volume_context,
        publish_context: BTreeMap::new(),
        steps: BTreeMap::from([
            (Step::CreateVolume, StepState::Done),
            (Step::NodeStage, StepState::Calling),
        ]),
    })
    .unwrap();
    plugin.clear_calls();
    Setup {
        fx,
        plugin,
        backend,
        file,
        volume_id: volume.volume_id,
    }
}

fn name() -> VolumeName {
    VolumeName::new("pgdata").unwrap()
}

#[test]
fn an_unmount_after_a_crash_undoes_exactly_the_recorded_steps() {
    in_private_mount_ns(|| {
        let s = crashed_after_stage_was_asked();
        s.backend.unmount(&name(), &MountId("m".into())).unwrap();
        // Staged (calling) is undone; never published, so no NodeUnpublish; never attached.
        assert_eq!(s.plugin.lifecycle(), [Rpc::NodeUnstageVolume]);
        assert_eq!(s.plugin.calls()[0].volume_id, s.volume_id);
        assert!(s.plugin.is_idle());
        assert!(s.file.load().unwrap().is_none());
        assert!(!s.file.dir().exists());
        // Nothing left to undo: a second unmount asks nothing.
        s.backend.unmount(&name(), &MountId("m".into())).unwrap();
        assert_eq!(s.plugin.lifecycle(), [Rpc::NodeUnstageVolume]);
    });
}

#[test]
fn a_mount_after_a_crash_finishes_from_the_recorded_step() {
    in_private_mount_ns(|| {
        let s = crashed_after_stage_was_asked();
        let opts = VolumeOpts::empty();
        let target = s
            .backend
            .mount(&MountRequest {
                name: &name(),
                opts: &opts,
                explicit_create: false,
                id: &MountId("m".into()),
                read_only: false,
                csi: None,
            })
            .unwrap();
        // The same volume id: no second CreateVolume; the step that may not have happened is
        // asked again (idempotent), then the next one.
        assert_eq!(
            s.plugin.lifecycle(),
            [Rpc::NodeStageVolume, Rpc::NodePublishVolume]
        );
        assert!(is_mounted(&target));
        let record = s.file.load().unwrap().unwrap();
        assert!(
            record.steps.values().all(|st| *st == StepState::Done),
            "{record:?}"
        );
        // A mount of a published volume is answered from the record.
        let again = s
            .backend
            .mount(&MountRequest {
                name: &name(),
                opts: &opts,
                explicit_create: false,
                id: &MountId("m".into()),
                read_only: false,
                csi: None,
            })
            .unwrap();
        assert_eq!(again, target);
        assert_eq!(s.plugin.count(Rpc::NodePublishVolume), 1);
        s.backend.unmount(&name(), &MountId("m".into())).unwrap();
        assert!(s.plugin.is_idle());
        assert_eq!(mounts_under(THREAD_MOUNTINFO, s.fx.root()), []);
    });
}
