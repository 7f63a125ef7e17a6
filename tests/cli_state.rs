//! `dvdi status` and `dvdi gc` on a real mount table.

mod support;

use std::process::{Command, Output, Stdio};

use mesos_dvdi::isolator::process_start_time;
use mesos_dvdi::state::Owner;
use support::isolator::{text, Fixture};

fn dvdi(fx: &Fixture, args: &[&str]) -> Output {
    fx.dvdi().args(args).output().unwrap()
}

#[test]
fn status_of_an_empty_agent_says_so() {
    let fx = Fixture::new();
    let out = dvdi(&fx, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no volumes recorded"), "{}", text(&out));
}

#[test]
fn gc_releases_what_a_dead_process_held_and_keeps_mesos_references() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    // A `dvdi run`-like holder: a real process, killed below.
    let mut holder = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(holder.id()).unwrap();
    let owner = Owner::Process {
        pid,
        start_time: process_start_time(pid).unwrap(),
    };
    let env = [
        ("DVDI_VOLUME_DRIVER", "local"),
        ("DVDI_VOLUME_NAME", "scratch"),
    ];
    iso.prepare("run-1", owner, &fx.input("run-1", &env, false))
        .unwrap();
    let env = [("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", "db")];
    iso.prepare("mesos-1", Owner::Mesos, &fx.input("mesos-1", &env, false))
        .unwrap();

    let out = dvdi(&fx, &["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let out = dvdi(&fx, &["gc"]);
    assert!(
        text(&out).contains("nothing to do"),
        "live holder released: {}",
        text(&out)
    );

    holder.kill().unwrap();
    holder.wait().unwrap();

    let out = dvdi(&fx, &["gc", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would drop volume \"scratch\""),
        "{}",
        text(&out)
    );
    assert!(fx.recorded("local", "scratch"), "dry run changed the state");

    let out = dvdi(&fx, &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("unmounted volume \"scratch\""),
        "{}",
        text(&out)
    );
    assert!(!fx.recorded("local", "scratch"));
    assert!(
        fx.recorded("local", "db"),
        "gc dropped a Mesos container's reference"
    );

    let out = dvdi(&fx, &["status"]);
    let t = text(&out);
    assert!(
        t.contains("db") && t.contains("mesos-1") && !t.contains("scratch"),
        "{t}"
    );
}

#[test]
fn unreadable_record_is_shown_and_gc_fails_without_touching_it() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    iso.prepare(
        "c",
        Owner::Mesos,
        &fx.input(
            "c",
            &[("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", "v")],
            false,
        ),
    )
    .unwrap();
    let file = fx.config.work_dir.join("volumes/local/v.json");
    std::fs::write(&file, b"{ broken").unwrap();
    let out = dvdi(&fx, &["status"]);
    assert!(
        text(&out).contains("unreadable") && text(&out).contains("v.json"),
        "{}",
        text(&out)
    );
    let out = dvdi(&fx, &["gc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("corrupt"), "{}", text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"{ broken");
}
