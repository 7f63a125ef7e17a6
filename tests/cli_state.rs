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

/// A process standing in for a `dvdi run` (its owner), killed and reaped when dropped.
struct Holder(std::process::Child);

impl Holder {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn owner(&self) -> Owner {
        let pid = i32::try_from(self.0.id()).unwrap();
        Owner::Process {
            pid,
            start_time: process_start_time(pid).unwrap(),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status table's line about volume `name`.
fn row<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}: {status}"))
}

#[test]
fn status_marks_what_gc_would_fix_and_gc_json_says_whether_it_was_a_dry_run() {
    use mesos_dvdi::mount::{Host, MntFlags, Mounter};
    use mesos_dvdi::state::{Phase, Store};
    support::host::in_private_mount_ns(|| {
        let fx = Fixture::new();
        let iso = fx.isolator();
        let input = |id: &str, driver: &str, name: &str| {
            fx.input(
                id,
                &[("DVDI_VOLUME_DRIVER", driver), ("DVDI_VOLUME_NAME", name)],
                false,
            )
        };
        // A `dvdi run` SIGKILLed with its volume.
        let dead = Holder::start();
        iso.prepare("run-1", dead.owner(), &input("run-1", "local", "scratch"))
            .unwrap();
        drop(dead);
        // A loop volume in use whose host mount an operator unmounted.
        let live = Holder::start();
        iso.prepare("run-2", live.owner(), &input("run-2", "loop", "db"))
            .unwrap();
        let db = fx.config.loop_root.join("mnt/db");
        Host.umount(&db, MntFlags::empty()).unwrap();
        // An unmount that failed after the last user left.
        iso.prepare("mesos-1", Owner::Mesos, &input("mesos-1", "local", "old"))
            .unwrap();
        let store = Store::open(&fx.config.work_dir).unwrap();
        let key = mesos_dvdi::spec::VolumeKey {
            driver: "local".parse().unwrap(),
            name: "old".parse().unwrap(),
        };
        let guard = store.lock(&key).unwrap();
        let mut record = guard.load().unwrap().unwrap();
        record.phase = Phase::Unmounting;
        record.users.clear();
        record.last_error = Some("unmount failed: the plugin said: busy".into());
        guard.save(&record).unwrap();
        drop(guard);

        let out = dvdi(&fx, &["status"]);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}", text(&out));
        let scratch = row(&status, "scratch");
        assert!(
            scratch.contains("mounted (gc drops 1 gone user(s), unmounts)")
                && scratch.contains("user run-1: its process is gone"),
            "{status}"
        );
        let db_row = row(&status, "db");
        assert!(
            db_row.contains("mounted (gc mounts again)") && db_row.contains("its mount is missing"),
            "{status}"
        );
        let old = row(&status, "old");
        assert!(
            old.contains("unmounting (gc unmounts)")
                && !old.contains("0 ()")
                && old.contains("unmount failed: the plugin said: busy"),
            "{status}"
        );

        let dry = dvdi(&fx, &["gc", "--dry-run", "--json"]);
        let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(dry["dry_run"], true, "{dry}");
        assert_eq!(dry["remounted"].as_array().unwrap().len(), 1, "{dry}");
        let done = dvdi(&fx, &["gc", "--json"]);
        assert!(done.status.success(), "{}", text(&done));
        let done: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
        assert_eq!(done["dry_run"], false, "{done}");
        let status = text(&dvdi(&fx, &["status"]));
        assert!(
            !status.contains("(gc") && status.contains("db") && !status.contains("scratch"),
            "{status}"
        );
        iso.cleanup("run-2").unwrap();
    });
}
