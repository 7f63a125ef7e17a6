//! CSI volumes through the isolator, against the test plugin on a real socket, in a private
//! mount namespace: the whole lifecycle, sharing, pre-provisioned volumes, DOCKER_VOLUME entries,
//! and every RPC failing in turn.

mod support;

use std::fs;

use mesos_dvdi::csi::proto::*;
use mesos_dvdi::csi::{Code, Rpc};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{ContainerInput, LaunchPlan};
use mesos_dvdi::mount::{self, Host};
use mesos_dvdi::spec::{DockerVolumeInput, DriverName};
use mesos_dvdi::state::Owner;
use support::csi::{CsiPlugin, Fault, Options};
use support::host::{in_private_mount_ns, mounts_under, THREAD_MOUNTINFO};
use support::isolator::{is_mounted, Fixture};

const TYPE: &str = "hostpath.csi.k8s.io";

/// A fixture whose configuration lists the plugin (started here) under [`TYPE`].
fn csi_fixture(options: Options) -> (Fixture, CsiPlugin) {
    let mut fx = Fixture::new();
    let plugin = CsiPlugin::start(
        &fx.root().join("csi.sock"),
        &fx.root().join("plugin"),
        options,
    );
    let dir = fx.root().join("csi-plugins");
    plugin.write_config(&dir, TYPE);
    fx.config.csi_plugins = mesos_dvdi::csi::load_dir(&dir).unwrap();
    fx.config.csi_plugin_config_dir = Some(dir);
    (fx, plugin)
}

fn input(fx: &Fixture, name: &str, opts: &str) -> ContainerInput {
    let mut env = vec![
        ("DVDI_VOLUME_DRIVER", TYPE),
        ("DVDI_VOLUME_NAME", "pgdata"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
    ];
    if !opts.is_empty() {
        env.push(("DVDI_VOLUME_OPTS", opts));
    }
    fx.input(name, &env, true)
}

fn in_container<T: Send>(plan: &LaunchPlan, f: impl FnOnce() -> T + Send) -> T {
    in_private_mount_ns(|| {
        for m in &plan.mounts {
            mount::bind(&Host, &m.source, &m.target, m.read_only).expect("bind");
        }
        f()
    })
}

/// Nothing left: no mount under the fixture, no CSI record, no mount-table record, nothing
/// attached, staged or published on the plugin's side.
fn assert_clean(fx: &Fixture, plugin: &CsiPlugin) {
    assert!(
        plugin.is_idle(),
        "plugin still holds: attached {:?}, staged {:?}, published {:?}",
        plugin.attached(),
        plugin.staged(),
        plugin.published()
    );
    assert_eq!(mounts_under(THREAD_MOUNTINFO, fx.root()), []);
    let csi_dir = fx.config.work_dir.join("csi").join(TYPE);
    let left: Vec<_> = fs::read_dir(&csi_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<std::path::PathBuf>::new(), "CSI records left");
    assert!(!fx.recorded(TYPE, "pgdata"));
}

#[test]
fn the_lifecycle_creates_stages_publishes_then_undoes_in_reverse_and_never_deletes() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let iso = fx.isolator();
        let plan = iso
            .prepare(
                "c1",
                Owner::Mesos,
                &input(&fx, "c1", "size=1Mi,fstype=ext4,tier=gold"),
            )
            .unwrap();
        assert_eq!(
            plugin.rpcs()[..3],
            [Rpc::GetPluginInfo, Rpc::GetPluginCapabilities, Rpc::Probe],
            "identity first"
        );
        assert_eq!(
            plugin.lifecycle(),
            [
                Rpc::CreateVolume,
                Rpc::NodeStageVolume,
                Rpc::NodePublishVolume
            ]
        );
        let calls = plugin.calls();
        let create = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::CreateVolume))
            .unwrap();
        assert_eq!(create.name, "pgdata");
        assert_eq!(create.required_bytes, 1 << 20);
        assert_eq!(create.fs_type, "ext4");
        assert_eq!(create.parameters["tier"], "gold");
        assert_eq!(
            create.parameters.len(),
            1,
            "size and fstype are not parameters"
        );
        let mode = volume_capability::Mode::SingleNodeWriter as i32;
        assert_eq!(create.access_mode, Some(mode));
        let publish = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::NodePublishVolume))
            .unwrap();
        let stage = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::NodeStageVolume))
            .unwrap();
        let work = fs::canonicalize(&fx.config.work_dir).unwrap();
        let vol_dir = work.join("csi").join(TYPE).join("pgdata");
        assert_eq!(stage.staging, vol_dir.join("staging").to_str().unwrap());
        assert_eq!(publish.target, vol_dir.join("target").to_str().unwrap());
        assert_eq!(publish.staging, stage.staging);
        assert!(!publish.readonly);

        // The target is the host mount the container binds, and writes reach the volume.
        let host = plan.mounts[0].source.clone();
        assert_eq!(host, vol_dir.join("target"));
        assert!(is_mounted(&host));
        let target = plan.mounts[0].target.clone();
        in_container(&plan, || fs::write(target.join("hello"), b"hi").unwrap());
        let id = &plugin.volumes()["pgdata"];
        assert_eq!(
            fs::read(plugin.volume_dir(id).join("hello")).unwrap(),
            b"hi"
        );

        iso.cleanup("c1").unwrap();
        assert_eq!(
            plugin.lifecycle()[3..],
            [Rpc::NodeUnpublishVolume, Rpc::NodeUnstageVolume]
        );
        assert_eq!(plugin.count(Rpc::DeleteVolume), 0);
        assert_clean(&fx, &plugin);
        // The data stays in the volume for the next user.
        assert!(plugin.volume_dir(id).join("hello").exists());
    });
}

#[test]
fn the_same_name_again_gets_the_same_volume_and_its_data() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let iso = fx.isolator();
        let plan = iso
            .prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap();
        fs::write(plan.mounts[0].source.join("kept"), b"1").unwrap();
        iso.cleanup("c1").unwrap();
        let plan = iso
            .prepare("c2", Owner::Mesos, &input(&fx, "c2", ""))
            .unwrap();
        assert_eq!(fs::read(plan.mounts[0].source.join("kept")).unwrap(), b"1");
        assert_eq!(plugin.volumes().len(), 1);
        iso.cleanup("c2").unwrap();
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn two_containers_share_one_staged_and_published_volume() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let iso = fx.isolator();
        let p1 = iso
            .prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap();
        let p2 = iso
            .prepare("c2", Owner::Mesos, &input(&fx, "c2", ""))
            .unwrap();
        assert_eq!(p1.mounts[0].source, p2.mounts[0].source);
        assert_eq!(plugin.count(Rpc::NodeStageVolume), 1);
        assert_eq!(plugin.count(Rpc::NodePublishVolume), 1);
        iso.cleanup("c1").unwrap();
        assert_eq!(plugin.count(Rpc::NodeUnpublishVolume), 0);
        assert!(
            is_mounted(&p2.mounts[0].source),
            "unpublished while c2 uses it"
        );
        iso.cleanup("c2").unwrap();
        assert_eq!(plugin.count(Rpc::NodeUnpublishVolume), 1);
        assert_eq!(plugin.count(Rpc::NodeUnstageVolume), 1);
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn a_controller_with_publish_attaches_before_staging_and_detaches_last() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options {
            controller_publish: true,
            ..Options::default()
        });
        let iso = fx.isolator();
        iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap();
        assert_eq!(plugin.attached().len(), 1);
        let calls = plugin.calls();
        let attach = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::ControllerPublishVolume))
            .unwrap();
        assert_eq!(attach.node_id, "node-1", "the node id NodeGetInfo gave");
        let stage = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::NodeStageVolume))
            .unwrap();
        assert_eq!(
            stage.publish_context["device"], attach.volume_id,
            "publish context passed on"
        );
        iso.cleanup("c1").unwrap();
        assert_eq!(
            plugin.lifecycle(),
            [
                Rpc::CreateVolume,
                Rpc::ControllerPublishVolume,
                Rpc::NodeStageVolume,
                Rpc::NodePublishVolume,
                Rpc::NodeUnpublishVolume,
                Rpc::NodeUnstageVolume,
                Rpc::ControllerUnpublishVolume,
            ]
        );
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn a_node_without_stage_unstage_is_published_directly() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options {
            stage_unstage: false,
            ..Options::default()
        });
        let iso = fx.isolator();
        iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap();
        iso.cleanup("c1").unwrap();
        assert_eq!(
            plugin.lifecycle(),
            [
                Rpc::CreateVolume,
                Rpc::NodePublishVolume,
                Rpc::NodeUnpublishVolume
            ]
        );
        let publish = plugin
            .calls()
            .into_iter()
            .find(|c| c.rpc == Some(Rpc::NodePublishVolume))
            .unwrap();
        assert_eq!(
            publish.staging, "",
            "no staging path without STAGE_UNSTAGE_VOLUME"
        );
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn single_node_multi_writer_is_asked_for_when_offered() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options {
            single_node_multi_writer: true,
            ..Options::default()
        });
        let iso = fx.isolator();
        iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap();
        let mode = volume_capability::Mode::SingleNodeMultiWriter as i32;
        for call in plugin.calls().iter().filter(|c| c.access_mode.is_some()) {
            assert_eq!(call.access_mode, Some(mode), "{call:?}");
        }
        iso.cleanup("c1").unwrap();
    });
}

#[test]
fn a_pre_provisioned_volume_id_is_used_without_create_volume() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let volume_id = plugin.provision(TYPE, "made-elsewhere");
        let iso = fx.isolator();
        let opts = format!("volume_id={volume_id}");
        let mut input = input(&fx, "c1", &opts);
        input
            .env
            .push((b"DVDI_VOLUME_EXPLICITCREATE".to_vec(), b"true".to_vec()));
        iso.prepare("c1", Owner::Mesos, &input).unwrap();
        assert_eq!(
            plugin.lifecycle(),
            [Rpc::NodeStageVolume, Rpc::NodePublishVolume]
        );
        assert!(plugin
            .calls()
            .iter()
            .all(|c| c.volume_id.is_empty() || c.volume_id == volume_id));
        iso.cleanup("c1").unwrap();
        assert_clean(&fx, &plugin);

        // EXPLICITCREATE without an id: refused before any volume call.
        plugin.clear_calls();
        let mut input = self::input(&fx, "c2", "");
        input
            .env
            .push((b"DVDI_VOLUME_EXPLICITCREATE".to_vec(), b"true".to_vec()));
        let e = render_chain(&iso.prepare("c2", Owner::Mesos, &input).unwrap_err());
        assert!(e.contains("volume_id="), "{e}");
        assert_eq!(plugin.lifecycle(), []);
    });
}

#[test]
fn a_docker_volume_entry_naming_the_csi_type_reaches_the_plugin() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let iso = fx.isolator();
        let mut input = fx.input("c1", &[], true);
        input.docker_volumes = vec![DockerVolumeInput {
            driver: TYPE.into(),
            name: "pgdata".into(),
            container_path: "/docker".into(),
            ..Default::default()
        }];
        let plan = iso.prepare("c1", Owner::Mesos, &input).unwrap();
        assert!(plan.mounts[0].target.ends_with("docker"));
        assert_eq!(plugin.count(Rpc::NodePublishVolume), 1);
        iso.cleanup("c1").unwrap();
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn allowed_drivers_applies_to_csi_types() {
    let (mut fx, plugin) = csi_fixture(Options::default());
    fx.config.allowed_drivers = Some(vec![DriverName::new("local").unwrap()]);
    let iso = fx.isolator();
    let e = render_chain(
        &iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
            .unwrap_err(),
    );
    assert!(e.contains(TYPE), "{e}");
    assert_eq!(plugin.lifecycle(), []);
}

/// The mount-side RPCs, in the order a mount makes them (with a controller that publishes).
const MOUNT_RPCS: [Rpc; 10] = [
    Rpc::GetPluginInfo,
    Rpc::GetPluginCapabilities,
    Rpc::Probe,
    Rpc::NodeGetInfo,
    Rpc::NodeGetCapabilities,
    Rpc::ControllerGetCapabilities,
    Rpc::CreateVolume,
    Rpc::ControllerPublishVolume,
    Rpc::NodeStageVolume,
    Rpc::NodePublishVolume,
];

fn publishing() -> Options {
    Options {
        controller_publish: true,
        ..Options::default()
    }
}

#[test]
fn every_mount_rpc_failing_in_turn_is_named_and_undone() {
    in_private_mount_ns(|| {
        for rpc in MOUNT_RPCS {
            let (fx, plugin) = csi_fixture(publishing());
            plugin.fail(rpc, Code::Internal, &format!("injected into {rpc}"));
            let iso = fx.isolator();
            let e = render_chain(
                &iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
                    .unwrap_err(),
            );
            for part in [
                TYPE,
                rpc.name(),
                "INTERNAL",
                &format!("injected into {rpc}"),
            ] {
                assert!(e.contains(part), "{rpc}: {part:?} missing from: {e}");
            }
            assert_clean(&fx, &plugin);
            // Healed, the same prepare succeeds, so nothing of the failure was left in the way.
            plugin.heal(rpc);
            iso.prepare("c2", Owner::Mesos, &input(&fx, "c2", ""))
                .unwrap();
            iso.cleanup("c2").unwrap();
            assert_clean(&fx, &plugin);
        }
    });
}

#[test]
fn every_unmount_rpc_failing_keeps_the_volume_recorded_until_a_retry_succeeds() {
    in_private_mount_ns(|| {
        for rpc in [
            Rpc::NodeUnpublishVolume,
            Rpc::NodeUnstageVolume,
            Rpc::ControllerUnpublishVolume,
        ] {
            let (fx, plugin) = csi_fixture(publishing());
            let iso = fx.isolator();
            iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
                .unwrap();
            plugin.fail(rpc, Code::Unavailable, "backend busy");
            let e = render_chain(&iso.cleanup("c1").unwrap_err());
            for part in [TYPE, rpc.name(), "UNAVAILABLE", "backend busy"] {
                assert!(e.contains(part), "{rpc}: {part:?} missing from: {e}");
            }
            assert!(
                fx.recorded(TYPE, "pgdata"),
                "{rpc}: forgotten while not undone"
            );
            plugin.heal(rpc);
            iso.gc(false).unwrap();
            assert_clean(&fx, &plugin);
            // The retry asked only what was left: each undo RPC once after the failed one.
            assert_eq!(plugin.count(rpc), 2, "{rpc}");
        }
    });
}

#[test]
fn a_mount_rpc_that_hangs_ends_at_the_mount_timeout_and_is_undone() {
    in_private_mount_ns(|| {
        let (mut fx, plugin) = csi_fixture(Options::default());
        fx.config.mount_timeout = std::time::Duration::from_secs(1);
        plugin.fault(Rpc::NodePublishVolume, Fault::Hang);
        let iso = fx.isolator();
        let e = render_chain(
            &iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
                .unwrap_err(),
        );
        assert!(
            e.contains("NodePublishVolume did not answer within 1.0 s"),
            "{e}"
        );
        // Undone as if it had happened: NodeUnpublish is idempotent.
        assert_eq!(plugin.count(Rpc::NodeUnpublishVolume), 1);
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn a_publish_that_claims_success_without_a_target_is_refused_and_undone() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        plugin.fault(Rpc::NodePublishVolume, Fault::Wrong);
        let iso = fx.isolator();
        let e = render_chain(
            &iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", ""))
                .unwrap_err(),
        );
        assert!(e.contains("refused"), "{e}");
        assert_eq!(plugin.count(Rpc::NodeUnstageVolume), 1);
        assert_clean(&fx, &plugin);
    });
}

#[test]
fn a_csi_type_that_is_also_another_drivers_name_is_refused_naming_both() {
    use mesos_dvdi::backend::registry::Registry;
    use mesos_dvdi::backend::BackendProvider;
    let (fx, plugin) = csi_fixture(Options::default());
    let refusal = |config: mesos_dvdi::config::Config, driver: &str| {
        let registry = Registry::new(config, std::sync::Arc::new(Host));
        match registry.backend(&DriverName::new(driver).unwrap(), None) {
            Ok(_) => panic!("{driver}: accepted"),
            Err(e) => render_chain(&e),
        }
    };

    // A built-in driver's name.
    plugin.write_config(&fx.root().join("csi-local"), "local");
    let mut local = fx.config.clone();
    local.csi_plugins = mesos_dvdi::csi::load_dir(&fx.root().join("csi-local")).unwrap();
    let e = refusal(local, "local");
    assert!(
        e.contains("csi-local/local.json") && e.contains("a built-in driver"),
        "{e}"
    );

    // A Docker plugin that discovery finds under the same name.
    let plugins = &fx.config.plugin_dirs[0];
    fs::create_dir_all(plugins).unwrap();
    let docker = plugins.join(format!("{TYPE}.sock"));
    let _listener = std::os::unix::net::UnixListener::bind(&docker).unwrap();
    let e = refusal(fx.config.clone(), TYPE);
    assert!(e.contains(&format!("{TYPE}.json")), "{e}");
    assert!(
        e.contains("Docker volume plugin") && e.contains(docker.to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn readers_only_get_a_read_only_publish_in_the_reader_mode() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture(Options::default());
        let iso = fx.isolator();
        let mut reader = input(&fx, "c1", "");
        reader
            .env
            .push((b"DVDI_VOLUME_READONLY".to_vec(), b"true".to_vec()));
        let plan = iso.prepare("c1", Owner::Mesos, &reader).unwrap();
        let calls = plugin.calls();
        let publish = calls
            .iter()
            .find(|c| c.rpc == Some(Rpc::NodePublishVolume))
            .unwrap();
        assert!(publish.readonly);
        let reader_mode = volume_capability::Mode::SingleNodeReaderOnly as i32;
        assert_eq!(publish.access_mode, Some(reader_mode));
        // Read-only on the host too, not only in the container's bind.
        let e = fs::write(plan.mounts[0].source.join("x"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        // A writer cannot join a volume published for readers.
        let e = iso
            .prepare("c2", Owner::Mesos, &input(&fx, "c2", ""))
            .unwrap_err();
        assert!(
            render_chain(&e).contains("read-only"),
            "{}",
            render_chain(&e)
        );
        iso.cleanup("c1").unwrap();
        assert_clean(&fx, &plugin);
    });
}
