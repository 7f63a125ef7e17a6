//! Where the isolator binds volumes, from the task's side: refusals in the container's own terms
//! (the variable or `DOCKER_VOLUME` entry, paths as the container sees them, never the agent's
//! host paths), and no directory left behind by a prepare that failed.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{ContainerInput, IsolatorError};
use mesos_dvdi::spec::DockerVolumeInput;
use mesos_dvdi::state::Owner;
use support::isolator::Fixture;
use support::plugin::{memory_plugin, Reply, TestPlugin};

/// A `DOCKER_VOLUME` of the local driver at `container_path`.
fn docker_volume(name: &str, container_path: &str) -> DockerVolumeInput {
    DockerVolumeInput {
        driver: "local".into(),
        name: name.into(),
        container_path: container_path.into(),
        ..Default::default()
    }
}

/// Prepares `input`, expecting a refused container path; returns the task-facing message and the
/// host path kept for the agent's log.
fn refusal(fx: &Fixture, input: &ContainerInput) -> (String, std::path::PathBuf) {
    let err = fx.isolator().prepare("c", Owner::Mesos, input).unwrap_err();
    let text = render_chain(&err);
    match &*err.cause {
        IsolatorError::Target { source, .. } => (text, source.host_path().to_owned()),
        other => panic!("not a target refusal: {other:?}: {text}"),
    }
}

fn assert_no_host_path(text: &str, hidden: &[&Path]) {
    for h in hidden {
        let h = h.to_str().unwrap();
        assert!(!text.contains(h), "the message hands out {h}: {text}");
    }
}

#[test]
fn rootfs_symlink_refusal_names_the_variable_and_holds_no_host_path() {
    let fx = Fixture::new();
    let env = [
        ("DVDI_VOLUME_NAME2", "v"),
        ("DVDI_VOLUME_CONTAINERPATH2", "/data2/x"),
    ];
    let input = fx.input("c", &env, true);
    let rootfs = input.rootfs.clone().unwrap();
    symlink("/etc", rootfs.join("data2")).unwrap();
    let (text, host) = refusal(&fx, &input);
    assert!(
        text.contains(
            "DVDI_VOLUME_CONTAINERPATH2: container path refused: /data2/x: /data2 is a symbolic \
             link to \"/etc\""
        ),
        "{text}"
    );
    assert_no_host_path(&text, &[&rootfs, fx.root()]);
    assert_eq!(
        host,
        rootfs.join("data2"),
        "the host path is kept for the log"
    );
    assert!(!Path::new("/etc/x").exists());
}

#[test]
fn rootfs_symlink_refusal_names_the_docker_volume_and_holds_no_host_path() {
    let fx = Fixture::new();
    let mut input = fx.input("c", &[], true);
    input.docker_volumes = vec![
        docker_volume("other", "/ok"),
        docker_volume("dv", "/data2/x"),
    ];
    let rootfs = input.rootfs.clone().unwrap();
    fs::create_dir(rootfs.join("lib")).unwrap();
    symlink("../lib", rootfs.join("data2")).unwrap();
    let (text, _) = refusal(&fx, &input);
    assert!(
        text.contains(
            "ContainerInfo.volumes[1].container_path (DOCKER_VOLUME \"dv\"): container path \
             refused: /data2/x: /data2 is a symbolic link to \"../lib\""
        ),
        "{text}"
    );
    assert_no_host_path(&text, &[&rootfs, fx.root()]);
    // The refusal came before any backend call, and took back the directory made for the first.
    assert!(!fx.config.local_root.join("other").exists());
    assert!(!rootfs.join("ok").exists());
}

#[test]
fn sandbox_refusals_name_the_sandbox_as_the_container_sees_it() {
    for with_rootfs in [true, false] {
        let fx = Fixture::new();
        let mut input = fx.input("c", &[], with_rootfs);
        input.docker_volumes = vec![docker_volume("logs", "logs/app")];
        fs::write(input.sandbox.join("logs"), b"a file").unwrap();
        let (text, host) = refusal(&fx, &input);
        let seen = if with_rootfs {
            "/mnt/mesos/sandbox/logs"
        } else {
            "$MESOS_SANDBOX/logs"
        };
        assert!(
            text.contains(&format!(
                "ContainerInfo.volumes[0].container_path (DOCKER_VOLUME \"logs\"): container \
                 path refused: logs/app: {seen} is not a directory"
            )),
            "{text}"
        );
        assert_no_host_path(&text, &[&input.sandbox, fx.root()]);
        assert_eq!(host, input.sandbox.join("logs"));
    }
}

#[test]
fn refused_prepare_removes_the_directories_it_made_under_host_tmp_and_in_rootfs() {
    let fx = Fixture::new();
    let tmp = fx.root().join("tmp");
    let target = tmp.join("made/for/it");
    // The second volume is refused by its backend: it does not exist and may not be created.
    let env = [
        ("DVDI_VOLUME_NAME", "first"),
        ("DVDI_VOLUME_CONTAINERPATH", target.to_str().unwrap()),
        ("DVDI_VOLUME_NAME1", "missing"),
        ("DVDI_VOLUME_EXPLICITCREATE1", "true"),
    ];
    let err = fx
        .isolator()
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    assert!(
        matches!(*err.cause, IsolatorError::Backend(_)),
        "{}",
        render_chain(&err)
    );
    assert!(
        !tmp.join("made").exists(),
        "left {}",
        tmp.join("made").display()
    );
    assert!(tmp.is_dir(), "removed more than it made");

    // The same rule in a container's rootfs; a directory that was there before stays.
    let env = [
        ("DVDI_VOLUME_NAME", "missing"),
        ("DVDI_VOLUME_EXPLICITCREATE", "true"),
        ("DVDI_VOLUME_CONTAINERPATH", "/srv/new/data"),
    ];
    let input = fx.input("r", &env, true);
    let rootfs = input.rootfs.clone().unwrap();
    fs::create_dir(rootfs.join("srv")).unwrap();
    fx.isolator()
        .prepare("r", Owner::Mesos, &input)
        .unwrap_err();
    assert!(!rootfs.join("srv/new").exists());
    assert!(rootfs.join("srv").is_dir());
}

#[test]
fn a_later_refused_target_takes_back_the_directories_made_for_earlier_ones() {
    let fx = Fixture::new();
    let env = [
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_CONTAINERPATH", "/made/a"),
        ("DVDI_VOLUME_NAME1", "b"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/made/link/b"),
    ];
    let input = fx.input("c", &env, true);
    let rootfs = input.rootfs.clone().unwrap();
    // Planted where the second path passes: `made` exists by then, so only `made/a` is new.
    fs::create_dir(rootfs.join("made")).unwrap();
    symlink("/etc", rootfs.join("made/link")).unwrap();
    let (text, _) = refusal(&fx, &input);
    assert!(text.contains("DVDI_VOLUME_CONTAINERPATH1"), "{text}");
    assert!(!rootfs.join("made/a").exists());
    assert!(rootfs.join("made/link").is_symlink());
}

/// A plugin whose Mount first runs `meanwhile` (standing in for whatever else touches the host
/// between the isolator's resolution and its rollback), then refuses. A test double: no real
/// plugin refuses on cue at that moment.
fn plugin_refusing_mount_after(
    fx: &Fixture,
    meanwhile: impl Fn() + Send + Sync + 'static,
) -> TestPlugin {
    let dir = fx.root().join("plugins");
    fs::create_dir_all(&dir).unwrap();
    let inner = memory_plugin(fx.root().join("plugin-volumes"));
    TestPlugin::unix(&dir.join("refuser.sock"), move |req| {
        if req.path == "/VolumeDriver.Mount" {
            meanwhile();
            return Reply::Json(
                500,
                serde_json::json!({ "Err": "refused by the test plugin" }),
            );
        }
        inner(req)
    })
}

#[test]
fn rollback_keeps_a_made_directory_that_gained_an_entry() {
    let fx = Fixture::new();
    let tmp = fx.root().join("tmp");
    let (outer, inner) = (tmp.join("a/b"), tmp.join("a/b/c"));
    let note = outer.join("note");
    let _plugin = {
        let note = note.clone();
        plugin_refusing_mount_after(&fx, move || fs::write(&note, b"someone else's").unwrap())
    };
    let env = [
        ("DVDI_VOLUME_DRIVER", "refuser"),
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", inner.to_str().unwrap()),
    ];
    let err = fx
        .isolator()
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    assert!(
        render_chain(&err).contains("refused by the test plugin"),
        "{}",
        render_chain(&err)
    );
    assert!(!inner.exists(), "the still empty directory was left");
    assert_eq!(fs::read(&note).unwrap(), b"someone else's");
    assert!(outer.is_dir() && tmp.join("a").is_dir());
}

#[test]
fn rollback_keeps_a_made_directory_that_was_replaced() {
    let fx = Fixture::new();
    let tmp = fx.root().join("tmp");
    let made = tmp.join("swapped");
    let _plugin = {
        let made = made.clone();
        plugin_refusing_mount_after(&fx, move || {
            fs::remove_dir(&made).unwrap();
            fs::create_dir(&made).unwrap();
        })
    };
    let env = [
        ("DVDI_VOLUME_DRIVER", "refuser"),
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", made.to_str().unwrap()),
    ];
    fx.isolator()
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    assert!(made.is_dir(), "removed a directory someone else made");
}

#[test]
fn successful_prepare_keeps_the_directories_it_made() {
    let fx = Fixture::new();
    let target = fx.root().join("tmp/kept/here");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", target.to_str().unwrap()),
    ];
    let iso = fx.isolator();
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    assert_eq!(plan.mounts[0].target, target);
    assert!(target.is_dir());
    iso.cleanup("c").unwrap();
}
