//! Nothing a backend answers is trusted: every mount point a plugin (or dvdcli) answers is
//! checked before the isolator records it or a task is bound to it; a refused one names the
//! driver, the volume and the answer, and the backend's mount is undone with the same id.
//!
//! The plugins here are test doubles (tests/support/plugin.rs) that answer Mount with a bad
//! mount point on purpose: no real plugin answers nonsense on demand.

mod support;

use std::path::{Path, PathBuf};

use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::Isolator;
use mesos_dvdi::state::Owner;
use serde_json::json;
use support::host::write_script;
use support::isolator::Fixture;
use support::plugin::{Reply, Request, TestPlugin};

/// A plugin double on `dir/bad.sock`: the volume exists, Mount answers `answer`, Unmount is
/// accepted.
fn answering(dir: &Path, answer: String) -> TestPlugin {
    TestPlugin::unix(&dir.join("bad.sock"), move |req: &Request| {
        let ok = |v| Reply::Json(200, v);
        match req.path.as_str() {
            "/Plugin.Activate" => ok(json!({"Implements": ["VolumeDriver"]})),
            "/VolumeDriver.Get" => ok(json!({"Volume": {"Name": "v"}, "Err": ""})),
            "/VolumeDriver.Mount" => ok(json!({"Mountpoint": answer, "Err": ""})),
            "/VolumeDriver.Unmount" => ok(json!({"Err": ""})),
            _ => Reply::Json(404, json!({"Err": "not implemented"})),
        }
    })
}

fn env(driver: &str) -> Vec<(&str, &str)> {
    vec![("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_DRIVER", driver)]
}

/// Prepares container `c` with volume `v` of `driver`; the error rendered, or `None`.
fn prepare(fx: &Fixture, iso: &Isolator, driver: &str) -> Option<String> {
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env(driver), false))
        .err()
        .map(|e| render_chain(&e))
}

/// The ID of each Mount and Unmount the plugin received, in order.
fn mount_ids(p: &TestPlugin) -> Vec<(String, String)> {
    p.requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.path.as_str(),
                "/VolumeDriver.Mount" | "/VolumeDriver.Unmount"
            )
        })
        .map(|r| (r.path, r.body["ID"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Asserts prepare was refused for `answer` with `reason`, the plugin's mount undone with the
/// same id, and nothing recorded.
fn assert_refused(
    fx: &Fixture,
    plugin: &TestPlugin,
    err: Option<String>,
    answer: &str,
    reason: &str,
) {
    let text = err.unwrap_or_else(|| panic!("{answer:?} was accepted"));
    assert!(
        text.contains("volume \"v\" (driver \"bad\"): mount failed")
            && text.contains(&format!(
                "answered the mount point {answer:?}, which is refused"
            ))
            && text.contains(reason),
        "{answer:?}: {text}"
    );
    let ids = mount_ids(plugin);
    assert!(
        matches!(&ids[..], [(m, a), (u, b)]
            if m == "/VolumeDriver.Mount" && u == "/VolumeDriver.Unmount" && a == b && !a.is_empty()),
        "{answer:?}: {ids:?}"
    );
    assert!(!fx.recorded("bad", "v"), "{answer:?} stayed recorded");
    assert!(
        fx.isolator().store().scan().unwrap().is_empty(),
        "{answer:?}: the checkpoint changed"
    );
}

#[test]
fn every_bad_mount_point_is_refused_undone_and_not_recorded() {
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let file = fx.root().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    fx.mkdir("real/vol");
    std::os::unix::fs::symlink(fx.root().join("real"), fx.root().join("link")).unwrap();
    let s = |p: PathBuf| p.to_str().unwrap().to_owned();
    let cases: Vec<(String, &str)> = vec![
        (s(fx.root().join("missing")), "does not exist"),
        (s(file), "is not a directory"),
        (format!("{}/a\0b", fx.root().display()), "holds a NUL byte"),
        ("relative/dir".to_owned(), "is not an absolute path"),
        (String::new(), "it is empty"),
        ("/".to_owned(), "is the host's root directory"),
        ("/etc".to_owned(), "lies in the system tree /etc"),
        ("/usr/lib/x".to_owned(), "lies in the system tree /usr"),
        ("/lib64".to_owned(), "lies in the system tree /lib64"),
        (s(fx.root().join("link/vol")), "is a symbolic link"),
        (format!("{}/real/../real/vol", fx.root().display()), "'..'"),
    ];
    for (answer, reason) in cases {
        let plugin = answering(&plugins, answer.clone());
        let err = prepare(&fx, &fx.isolator(), "bad");
        assert_refused(&fx, &plugin, err, &answer, reason);
    }
}

#[test]
fn a_good_answer_is_recorded_as_given() {
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let vol = fx.mkdir("vols/v");
    let plugin = answering(&plugins, vol.to_str().unwrap().to_owned());
    let iso = fx.isolator();
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env("bad"), false))
        .unwrap();
    assert_eq!(plan.volumes[0].1, vol);
    assert!(fx.recorded("bad", "v"));
    iso.cleanup("c").unwrap();
    assert_eq!(plugin.count("/VolumeDriver.Unmount"), 1);
}

#[test]
fn plugin_mount_roots_admit_inside_and_refuse_outside() {
    let mut fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let inside = fx.mkdir("allowed/v");
    let outside = fx.mkdir("elsewhere/v");
    fx.config.plugin_mount_roots = vec![fx.root().join("allowed")];

    let plugin = answering(&plugins, outside.to_str().unwrap().to_owned());
    let err = prepare(&fx, &fx.isolator(), "bad");
    assert_refused(
        &fx,
        &plugin,
        err,
        outside.to_str().unwrap(),
        &format!(
            "lies outside every directory plugin_mount_roots allows ({})",
            fx.root().join("allowed").display()
        ),
    );
    drop(plugin);

    let _plugin = answering(&plugins, inside.to_str().unwrap().to_owned());
    let iso = fx.isolator();
    assert_eq!(prepare(&fx, &iso, "bad"), None);
    assert!(fx.recorded("bad", "v"));
    iso.cleanup("c").unwrap();
}

#[test]
fn plugin_mount_roots_do_not_apply_to_the_built_in_drivers() {
    let mut fx = Fixture::new();
    fx.config.plugin_mount_roots = vec![fx.root().join("allowed")];
    let iso = fx.isolator();
    assert_eq!(prepare(&fx, &iso, "local"), None);
    iso.cleanup("c").unwrap();
}

#[test]
fn dvdcli_answers_are_checked_and_undone_too() {
    let mut fx = Fixture::new();
    let log = fx.root().join("dvdcli.log");
    let program = fx.root().join("fake-dvdcli");
    // A test double for a dvdcli that answers the system tree /etc.
    write_script(
        &program,
        &format!(
            "echo \"$1\" >> '{}'\ncase \"$1\" in mount) echo /etc ;; esac",
            log.display()
        ),
    );
    fx.config.backend = mesos_dvdi::config::BackendKind::Dvdcli;
    fx.config.dvdcli_path = program;
    let text = prepare(&fx, &fx.isolator(), "rexray").expect("refused");
    assert!(
        text.contains("volume \"v\" (driver \"rexray\"): mount failed")
            && text.contains("answered the mount point \"/etc\", which is refused")
            && text.contains("lies in the system tree /etc"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "mount\nunmount\n");
    assert!(!fx.recorded("rexray", "v"));
}

#[test]
fn dvdi_run_refuses_a_bad_answer_naming_it() {
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let plugin = answering(&plugins, "/etc".to_owned());
    let out = fx
        .dvdi()
        .arg("--plugin-dir")
        .arg(&plugins)
        .args([
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
            "-e",
            "DVDI_VOLUME_DRIVER=bad",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(125),
        "{}",
        support::isolator::text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("volume \"v\" (driver \"bad\"): mount failed: the backend answered the mount point \"/etc\", which is refused: it lies in the system tree /etc"),
        "{stderr}"
    );
    assert_eq!(plugin.count("/VolumeDriver.Unmount"), 1);
    assert!(!fx.recorded("bad", "v"));
}
