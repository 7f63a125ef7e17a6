//! Crash safety. For every persistence point of prepare and cleanup, a child process is killed
//! with SIGKILL right there (the `crash-points` feature; `DVDI_CRASH_AT` names the point), then
//! recovery runs in a fresh process, and the test checks: no mount leaked, no reference lost, no
//! volume unmounted while a live container uses it, no loop device left once no one uses it.
//!
//! Points covered (see `isolator::CRASH_POINTS`):
//! - first user's prepare: `prepare:intent-saved`, `prepare:backend-mounted`,
//!   `prepare:mounted-saved`;
//! - a second user's prepare: `prepare:user-added`;
//! - a user that is not the last leaving: `cleanup:ref-dropped`;
//! - the last user leaving: `cleanup:user-removed`, `cleanup:unmount-intent-saved`,
//!   `cleanup:backend-unmounted`.
//!
//! Each crash is recovered twice over: with the crashed container still known to the agent, and
//! with it gone.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use mesos_dvdi::isolator::{KnownContainer, CRASH_POINTS};
use mesos_dvdi::state::{ContainerId, Owner, Store};
use serde_json::json;
use support::host::in_private_mount_ns;
use support::host::loop_devices_under;
use support::isolator::{is_mounted, Fixture};

const VOLUME: &str = "crashvol";

fn env() -> [(&'static str, &'static str); 2] {
    [("DVDI_VOLUME_DRIVER", "loop"), ("DVDI_VOLUME_NAME", VOLUME)]
}

/// The entry point of the child processes (run by the tests below, not on its own).
#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    let Ok(job) = std::env::var("DVDI_CRASH_JOB") else {
        return;
    };
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    let fx = Fixture::at(Path::new(job["dir"].as_str().unwrap()));
    let iso = fx.isolator();
    let id = job["container"].as_str().unwrap_or("");
    let op = job["op"].as_str().unwrap();
    let known: Vec<KnownContainer> = job["known"]
        .as_array()
        .unwrap()
        .iter()
        // A container being prepared is new: the agent did not know it when it recovered.
        .filter(|k| !(op == "prepare" && k.as_str() == Some(id)))
        .map(|k| KnownContainer {
            id: ContainerId::new(k.as_str().unwrap()).unwrap(),
        })
        .collect();
    // Every child is a fresh agent: recover first, as Mesos does.
    let report = iso.recover(&known, &[]).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    match op {
        "prepare" => {
            iso.prepare(id, Owner::Mesos, &fx.input(id, &env(), false))
                .unwrap();
        }
        "cleanup" => iso.cleanup(id).unwrap(),
        "recover" => {}
        other => panic!("unknown op {other}"),
    }
}

/// Runs one child; returns whether it was killed by SIGKILL (a crash point fired).
fn child(fx: &Fixture, op: &str, container: &str, known: &[&str], crash_at: Option<&str>) -> bool {
    let job = json!({
        "dir": fx.dir.path(), "op": op, "container": container, "known": known,
    });
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_child",
        "--ignored",
        "--test-threads=1",
        "--quiet",
    ])
    .env("DVDI_CRASH_JOB", job.to_string())
    .env_remove("DVDI_CRASH_AT");
    if let Some(p) = crash_at {
        cmd.env("DVDI_CRASH_AT", p);
    }
    let out = cmd.output().unwrap();
    if out.status.signal() == Some(libc::SIGKILL) {
        return true;
    }
    assert!(
        out.status.success(),
        "child {op} {container} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    false
}

/// The users the checkpoint records for the volume (empty when it has no record).
fn users(fx: &Fixture) -> Vec<String> {
    Store::open(&fx.config.work_dir)
        .unwrap()
        .scan()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.record.unwrap().users.into_keys().map(|k| k.to_string()))
        .collect()
}

fn host_path(fx: &Fixture) -> std::path::PathBuf {
    fx.config.loop_root.join("mnt").join(VOLUME)
}

/// After everything is cleaned up: nothing mounted, recorded or attached.
fn assert_clean(fx: &Fixture, what: &str) {
    assert!(!is_mounted(&host_path(fx)), "{what}: mount leaked");
    assert!(users(fx).is_empty(), "{what}: record left: {:?}", users(fx));
    assert_eq!(
        loop_devices_under(fx.dir.path()).len(),
        0,
        "{what}: loop device leaked"
    );
}

struct Case {
    /// Containers prepared before the crashing step.
    before: &'static [&'static str],
    /// The crashing step.
    op: &'static str,
    /// Its container.
    container: &'static str,
    /// Points it passes.
    points: &'static [&'static str],
    /// Containers alive besides the crashing one.
    others_alive: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        before: &[],
        op: "prepare",
        container: "a",
        points: &[
            "prepare:intent-saved",
            "prepare:backend-mounted",
            "prepare:mounted-saved",
        ],
        others_alive: &[],
    },
    Case {
        before: &["b"],
        op: "prepare",
        container: "a",
        points: &["prepare:user-added"],
        others_alive: &["b"],
    },
    Case {
        before: &["a", "b"],
        op: "cleanup",
        container: "a",
        points: &["cleanup:ref-dropped"],
        others_alive: &["b"],
    },
    Case {
        before: &["a"],
        op: "cleanup",
        container: "a",
        points: &[
            "cleanup:user-removed",
            "cleanup:unmount-intent-saved",
            "cleanup:backend-unmounted",
        ],
        others_alive: &[],
    },
];

#[test]
fn every_crash_point_is_covered() {
    let covered: Vec<&str> = CASES
        .iter()
        .flat_map(|c| c.points.iter().copied())
        .collect();
    for p in CRASH_POINTS {
        assert!(covered.contains(p), "crash point {p} has no case");
    }
}

#[test]
fn crash_at_any_point_then_recover_leaks_nothing_and_loses_no_live_user() {
    in_private_mount_ns(|| {
        for case in CASES {
            for point in case.points {
                for crashed_still_known in [true, false] {
                    let what = format!(
                        "{} {} at {point}, known={crashed_still_known}",
                        case.op, case.container
                    );
                    let fx = Fixture::new();
                    for (i, c) in case.before.iter().enumerate() {
                        let known = &case.before[..i];
                        assert!(
                            !child(&fx, "prepare", c, known, None),
                            "{what}: setup crashed"
                        );
                    }
                    let mut known: Vec<&str> = case.before.to_vec();
                    if !known.contains(&case.container) {
                        known.push(case.container);
                    }
                    assert!(
                        child(&fx, case.op, case.container, &known, Some(point)),
                        "{what}: the child never reached the crash point"
                    );

                    // A fresh agent recovers. A prepare that crashed was never answered, and a
                    // cleanup that crashed was of a container being destroyed: either may or may
                    // not still be known.
                    let mut alive: Vec<&str> = case.others_alive.to_vec();
                    if crashed_still_known {
                        alive.push(case.container);
                    }
                    assert!(
                        !child(&fx, "recover", "", &alive, None),
                        "{what}: recover crashed"
                    );

                    let recorded = users(&fx);
                    for live in case.others_alive {
                        assert!(
                            recorded.contains(&(*live).to_owned()),
                            "{what}: lost live user {live}: {recorded:?}"
                        );
                        assert!(
                            is_mounted(&host_path(&fx)),
                            "{what}: unmounted while {live} uses it"
                        );
                    }
                    if recorded.is_empty() {
                        assert!(!is_mounted(&host_path(&fx)), "{what}: mounted with no user");
                    } else {
                        assert!(
                            is_mounted(&host_path(&fx)),
                            "{what}: users {recorded:?} but not mounted"
                        );
                    }
                    for u in &recorded {
                        assert!(alive.contains(&u.as_str()), "{what}: dead user {u} kept");
                    }

                    // The agent then destroys every container it knows; nothing may remain.
                    for c in &alive {
                        assert!(
                            !child(&fx, "cleanup", c, &alive, None),
                            "{what}: cleanup crashed"
                        );
                    }
                    assert_clean(&fx, &what);
                }
            }
        }
    });
}
