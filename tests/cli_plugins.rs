//! `dvdi plugins` and the progress `dvdi run` shows while a plugin is slow.

mod support;

use std::process::Command;
use std::time::Duration;

use support::isolator::{text, Fixture};
use support::plugin::{memory_plugin, TestPlugin};

fn dvdi(fx: &Fixture, plugins: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dvdi"));
    c.arg("--work-dir")
        .arg(&fx.config.work_dir)
        .arg("--plugin-dir")
        .arg(plugins);
    c
}

#[test]
fn plugins_lists_what_discovery_finds_and_whether_it_answers() {
    let fx = Fixture::new();
    let dir = fx.mkdir("plugins");
    let _up = TestPlugin::unix(&dir.join("up.sock"), memory_plugin(fx.mkdir("vols")));
    // Announced but not listening.
    drop(std::os::unix::net::UnixListener::bind(dir.join("down.sock")).unwrap());
    std::fs::write(dir.join("bad.spec"), "ftp://x").unwrap();

    let out = dvdi(&fx, &dir)
        .args(["plugins", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} missing: {rows}"))
    };
    assert_eq!(by_name("up")["activation"], "ok");
    assert_eq!(by_name("up")["scope"], "global");
    assert_eq!(by_name("up")["kind"], "sock");
    assert_eq!(by_name("down")["activation"], "failed");
    assert!(by_name("down")["error"]
        .as_str()
        .unwrap()
        .contains("connecting failed"));
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["error"].as_str().is_some_and(|e| e.contains("bad.spec"))));

    let table = dvdi(&fx, &dir).arg("plugins").output().unwrap();
    let t = text(&table);
    assert!(
        t.starts_with("NAME") && t.contains("up") && t.contains("down"),
        "{t}"
    );
}

#[test]
fn plugins_piped_shows_the_whole_error() {
    let fx = Fixture::new();
    let dir = fx.mkdir("plugins");
    // A plugin that died and left its socket: the error names the address and the cause.
    drop(std::os::unix::net::UnixListener::bind(dir.join("dead.sock")).unwrap());
    let json = dvdi(&fx, &dir)
        .args(["--plugin-connect-timeout", "1", "plugins", "--json"])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let error = rows[0]["error"].as_str().unwrap().to_owned();
    assert!(error.chars().count() > 100, "{error}");

    // stdout is a pipe here, as in `dvdi plugins | cat`.
    let table = dvdi(&fx, &dir)
        .args(["--plugin-connect-timeout", "1", "plugins"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&table.stdout);
    let row = t
        .lines()
        .find(|l| l.starts_with("dead"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(row.ends_with(&error), "{t}");
}

#[test]
fn slow_attach_shows_progress() {
    let fx = Fixture::new();
    let dir = fx.mkdir("plugins");
    let fast = memory_plugin(fx.mkdir("vols"));
    // A test double for a slow attach (an EBS volume takes seconds to attach).
    let _slow = TestPlugin::unix(&dir.join("slow.sock"), move |req| {
        if req.path == "/VolumeDriver.Mount" {
            std::thread::sleep(Duration::from_millis(2500));
        }
        fast(req)
    });
    let out = dvdi(&fx, &dir)
        .args([
            "run",
            "-e",
            "DVDI_VOLUME_NAME=pgdata",
            "-e",
            "DVDI_VOLUME_DRIVER=slow",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dvdi: attaching pgdata via slow… 1 s"),
        "{}",
        text(&out)
    );
}
