//! `CSI_VOLUME` entries of `ContainerInfo` (Mesos 1.11's static provisioning) through the
//! isolator, against the test CSI plugin: what reaches the plugin, that secrets reach it and
//! nothing else (no record, no log line, no error), and `csi_volumes=ignore`.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use mesos_dvdi::config::CsiVolumes;
use mesos_dvdi::csi::proto::*;
use mesos_dvdi::csi::{Code, Rpc};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::ContainerInput;
use mesos_dvdi::spec::{CsiVolumeInput, SecretInput};
use mesos_dvdi::state::Owner;
use support::csi::{CsiPlugin, Options};
use support::host::{in_private_mount_ns, mounts_under, THREAD_MOUNTINFO};
use support::isolator::Fixture;

const TYPE: &str = "hostpath.csi.k8s.io";
const STAGE_SECRET: &str = "stage-secret-5f1e0c";
const PUBLISH_SECRET: &str = "publish-secret-a93d17";

/// Every log line of this test process (the isolator logs through `log`).
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn capture_logs() {
    // Several tests share the process: the first one installs the logger.
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

fn csi_fixture() -> (Fixture, CsiPlugin) {
    let mut fx = Fixture::new();
    let plugin = CsiPlugin::start(
        &fx.root().join("csi.sock"),
        &fx.root().join("plugin"),
        Options::default(),
    );
    let dir = fx.root().join("csi-plugins");
    plugin.write_config(&dir, TYPE);
    fx.config.csi_plugins = mesos_dvdi::csi::load_dir(&dir).unwrap();
    fx.config.csi_plugin_config_dir = Some(dir);
    (fx, plugin)
}

/// A volume made as an operator would, before any task names it; its id.
fn provision(plugin: &CsiPlugin) -> String {
    plugin.provision(TYPE, "made-by-the-operator")
}

fn entry(volume_id: &str) -> CsiVolumeInput {
    CsiVolumeInput {
        index: 1,
        plugin_name: TYPE.to_owned(),
        has_static_provisioning: true,
        volume_id: volume_id.to_owned(),
        fs_type: "ext4".to_owned(),
        mount_flags: vec!["noatime".to_owned()],
        access_mode: volume_capability::Mode::SingleNodeWriter as i32,
        volume_context: vec![("share".to_owned(), "projects".to_owned())],
        node_stage_secrets: vec![(
            "password".to_owned(),
            SecretInput::Value(STAGE_SECRET.as_bytes().to_vec()),
        )],
        node_publish_secrets: vec![(
            "token".to_owned(),
            SecretInput::Value(PUBLISH_SECRET.as_bytes().to_vec()),
        )],
        container_path: "/data".to_owned(),
        ..CsiVolumeInput::default()
    }
}

fn input(fx: &Fixture, name: &str, csi: CsiVolumeInput) -> ContainerInput {
    ContainerInput {
        csi_volumes: vec![csi],
        ..fx.input(name, &[], true)
    }
}

/// The files under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.extend(files_holding(&path, needle));
        } else if kind.is_file()
            && fs::read(&path)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        {
            out.push(path.display().to_string());
        }
    }
    out
}

fn assert_no_secret_anywhere(fx: &Fixture, error: &str) {
    for secret in [STAGE_SECRET, PUBLISH_SECRET] {
        assert_eq!(
            files_holding(&fx.config.work_dir, secret),
            Vec::<String>::new()
        );
        assert!(!error.contains(secret), "{error}");
        let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            lines.iter().all(|l| !l.contains(secret)),
            "a log line holds a secret"
        );
    }
}

#[test]
fn a_static_csi_volume_reaches_the_plugin_with_its_flags_context_and_secrets() {
    capture_logs();
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture();
        let id = provision(&plugin);
        let iso = fx.isolator();
        let plan = iso
            .prepare("c1", Owner::Mesos, &input(&fx, "c1", entry(&id)))
            .unwrap();
        assert_eq!(
            plugin.lifecycle(),
            [Rpc::NodeStageVolume, Rpc::NodePublishVolume],
            "a static volume is never created"
        );
        let calls = plugin.calls();
        let call = |rpc| calls.iter().find(|c| c.rpc == Some(rpc)).unwrap().clone();
        let (stage, publish) = (call(Rpc::NodeStageVolume), call(Rpc::NodePublishVolume));
        for c in [&stage, &publish] {
            assert_eq!(c.volume_id, id);
            assert_eq!(c.fs_type, "ext4");
            assert_eq!(c.mount_flags, ["noatime"]);
            assert_eq!(
                c.volume_context,
                BTreeMap::from([("share".to_owned(), "projects".to_owned())])
            );
        }
        assert_eq!(
            stage.secrets,
            BTreeMap::from([("password".to_owned(), STAGE_SECRET.to_owned())])
        );
        assert_eq!(
            publish.secrets,
            BTreeMap::from([("token".to_owned(), PUBLISH_SECRET.to_owned())])
        );
        assert_eq!(plan.mounts.len(), 1);
        assert!(plan.mounts[0].target.ends_with("data"));
        assert!(
            LINES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|l| l.contains("mounted at")),
            "the log is captured"
        );
        assert_no_secret_anywhere(&fx, "");

        iso.cleanup("c1").unwrap();
        assert!(plugin.is_idle());
        assert_eq!(mounts_under(THREAD_MOUNTINFO, fx.root()), []);
        assert_eq!(plugin.volumes().len(), 1, "never deleted");
        assert_no_secret_anywhere(&fx, "");
    });
}

#[test]
fn dvdi_status_shows_the_csi_id_paths_and_how_far_the_steps_got() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture();
        let id = provision(&plugin);
        let iso = fx.isolator();
        iso.prepare("c1", Owner::Mesos, &input(&fx, "c1", entry(&id)))
            .unwrap();
        let status = |json: bool| {
            let mut c = fx.dvdi();
            c.arg("status");
            if json {
                c.arg("--json");
            }
            let out = c.output().unwrap();
            assert!(out.status.success(), "{}", support::isolator::text(&out));
            String::from_utf8(out.stdout).unwrap()
        };
        let text = status(false);
        let csi_dir = fx.config.work_dir.join("csi").join(TYPE).join(&id);
        let staging = fs::canonicalize(&csi_dir).unwrap().join("staging");
        for part in [
            "VOLUME ID",
            "node_stage=done,node_publish=done",
            &staging.display().to_string(),
            "target",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        let rows: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
        let csi = &rows[0]["csi"];
        assert_eq!(csi["volume_id"], id.as_str(), "{rows}");
        assert_eq!(csi["steps"]["node_publish"], "done", "{rows}");
        assert_eq!(csi["staging_path"], staging.display().to_string(), "{rows}");

        // A cleanup that stops half way shows where.
        plugin.fail(Rpc::NodeUnstageVolume, Code::Internal, "busy");
        iso.cleanup("c1").unwrap_err();
        let text = status(false);
        assert!(!text.contains("node_publish=done"), "{text}");
        assert!(text.contains("node_stage="), "{text}");
        for secret in [STAGE_SECRET, PUBLISH_SECRET] {
            assert!(!text.contains(secret) && !status(true).contains(secret));
        }
        plugin.heal(Rpc::NodeUnstageVolume);
        iso.cleanup("c1").unwrap();
        assert!(plugin.is_idle());
        assert!(!status(false).contains("VOLUME ID"));
    });
}

#[test]
fn a_failing_publish_names_the_plugin_and_shows_no_secret() {
    capture_logs();
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture();
        let id = provision(&plugin);
        plugin.fail(
            Rpc::NodePublishVolume,
            Code::PermissionDenied,
            "bad credentials",
        );
        let iso = fx.isolator();
        let e = iso
            .prepare("c1", Owner::Mesos, &input(&fx, "c1", entry(&id)))
            .unwrap_err();
        let text = render_chain(&e);
        assert!(text.contains("NodePublishVolume"), "{text}");
        assert!(text.contains("bad credentials"), "{text}");
        assert!(plugin.is_idle(), "the stage is undone");
        assert_no_secret_anywhere(&fx, &format!("{text} {e:?}"));
    });
}

#[test]
fn a_reference_secret_is_refused_by_name_before_any_volume_call() {
    in_private_mount_ns(|| {
        let (fx, plugin) = csi_fixture();
        let id = provision(&plugin);
        let mut csi = entry(&id);
        csi.node_publish_secrets = vec![(
            "token".to_owned(),
            SecretInput::Reference {
                name: "/secrets/nfs-token".to_owned(),
            },
        )];
        let e = render_chain(
            &fx.isolator()
                .prepare("c1", Owner::Mesos, &input(&fx, "c1", csi))
                .unwrap_err(),
        );
        assert!(e.contains("ContainerInfo.volumes[1].source.csi_volume.static_provisioning.node_publish_secrets[\"token\"]"), "{e}");
        assert!(e.contains("\"/secrets/nfs-token\""), "{e}");
        assert!(e.contains("VALUE"), "{e}");
        assert_eq!(plugin.lifecycle(), []);
        assert!(!fx.recorded(TYPE, &id));
    });
}

#[test]
fn csi_volumes_ignore_leaves_the_entries_to_another_isolator() {
    in_private_mount_ns(|| {
        let (mut fx, plugin) = csi_fixture();
        fx.config.csi_volumes = CsiVolumes::Ignore;
        let mut csi = entry("vol-1");
        // Not even validated: its errors are the other isolator's to report.
        csi.block = true;
        let plan = fx
            .isolator()
            .prepare("c1", Owner::Mesos, &input(&fx, "c1", csi))
            .unwrap();
        assert!(plan.mounts.is_empty());
        assert_eq!(plugin.calls(), []);
    });
}
