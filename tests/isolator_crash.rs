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
//! - the checkpoint's own steps (`state::CRASH_POINTS`), in each operation that meets them: a
//!   new volume's file made, each write of a record cut halfway (a torn write) or written but not
//!   synced, a record that outgrows its file made anew, a record of the first layout converted
//!   at recover, and a file left without a record removed at recover.
//!
//! Each crash is recovered twice over: with the crashed container still known to the agent, and
//! with it gone.
//!
//! The lease points (`prepare:lease-acquired`, `prepare:upgrade-saved`, `cleanup:lease-released`,
//! and every point above again on a leased volume) run against a real ZooKeeper: a `local`
//! volume leased through `lease_drivers`, each child an agent process with its own session.
//! After recover (checked inside the recovering process, whose session holds the leases) no
//! volume is in use without its lease and no lease is held for a volume no one uses; after the
//! final cleanups no lease is left in ZooKeeper at all.
//!
//! The CSI points (`csi:<step>:calling|answered|undoing|undone`, around each RPC of a CSI volume's
//! mount and unmount) run against the CSI test plugin with a controller that attaches, served by
//! this (parent) test process so that what it holds survives each crashing child. After recover:
//! nothing attached, staged or published that no container uses, and nothing undone that one
//! uses; after the final cleanups the plugin holds nothing.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use mesos_dvdi::coord::zk::{ZkCoordinator, ZkTarget};
use mesos_dvdi::coord::Coordinator;
use mesos_dvdi::isolator::{KnownContainer, CRASH_POINTS};
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::{ContainerId, Owner, Store};
use serde_json::json;
use support::csi::{CsiPlugin, Options as CsiOptions};
use support::host::loop_devices_under;
use support::host::{in_private_mount_ns, mounts_under, THREAD_MOUNTINFO};
use support::isolator::{is_mounted, Fixture};
use support::zookeeper::ZkServer;

const VOLUME: &str = "crashvol";
const CSI_TYPE: &str = "hostpath.csi.k8s.io";

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
    let mut fx = Fixture::at(Path::new(job["dir"].as_str().unwrap()));
    let csi_config = job["csi"].as_str().map(Path::new);
    if let Some(dir) = csi_config {
        fx.config.csi_plugins = mesos_dvdi::csi::load_dir(dir).unwrap();
        fx.config.csi_plugin_config_dir = Some(dir.to_owned());
    }
    let leased = job["zk"].as_str().map(|zk| {
        fx.config.lease_drivers = vec![DriverName::new("local").unwrap()];
        fx.config.lease_session_timeout = std::time::Duration::from_secs(2);
        Arc::new(ZkCoordinator::start(
            ZkTarget::parse(zk).unwrap(),
            "crash-agent".to_owned(),
            fx.config.lease_session_timeout,
        ))
    });
    let iso = match &leased {
        Some(c) => fx.isolator().with_coordinator(c.clone()),
        None => fx.isolator(),
    };
    let volume: Vec<(&str, &str)> = match (&leased, csi_config) {
        (Some(_), _) => vec![
            ("DVDI_VOLUME_DRIVER", "local"),
            ("DVDI_VOLUME_NAME", VOLUME),
        ],
        (None, Some(_)) => vec![
            ("DVDI_VOLUME_DRIVER", CSI_TYPE),
            ("DVDI_VOLUME_NAME", VOLUME),
            ("DVDI_VOLUME_OPTS", "size=1Mi"),
        ],
        (None, None) => env().to_vec(),
    };
    let mut with_mode = volume.clone();
    if job["read_only"].as_bool() == Some(true) {
        with_mode.push(("DVDI_VOLUME_READONLY", "true"));
    }
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
    assert!(report.fenced.is_empty(), "{report:?}");
    if let Some(c) = &leased {
        // In use here ⇔ this process holds the lease (once recover has run).
        let in_use = !users(&fx).is_empty();
        let held = c
            .status()
            .held
            .iter()
            .any(|(v, _)| v.name.as_str() == VOLUME);
        assert_eq!(
            in_use,
            held,
            "after recover: users {:?}, lease held {held}",
            users(&fx)
        );
        let ours = c
            .leases()
            .unwrap()
            .into_iter()
            .filter(|l| l.holder.agent == "crash-agent")
            .count();
        assert_eq!(
            in_use,
            ours > 0,
            "after recover: {ours} lease node(s) of ours"
        );
    }
    match op {
        "prepare" => {
            iso.prepare(id, Owner::Mesos, &fx.input(id, &with_mode, false))
                .unwrap();
        }
        "cleanup" => iso.cleanup(id).unwrap(),
        "recover" => {}
        other => panic!("unknown op {other}"),
    }
}

/// How a child reaches the storage: the loop backend, leases through ZooKeeper, or a CSI plugin.
#[derive(Clone, Copy)]
enum Storage<'a> {
    /// A `loop` volume.
    Loop,
    /// A leased `local` volume, through ZooKeeper at this address.
    Leased(&'a str),
    /// A CSI volume of the plugin configured in this directory.
    Csi(&'a Path),
}

impl Storage<'_> {
    fn zk(&self) -> Option<&str> {
        match self {
            Storage::Leased(zk) => Some(zk),
            _ => None,
        }
    }
}

/// Runs one child, as an agent of `storage`; returns whether it was killed by SIGKILL (a crash
/// point fired).
fn child(
    fx: &Fixture,
    storage: Storage<'_>,
    op: &str,
    container: &str,
    read_only: bool,
    known: &[&str],
    crash_at: Option<&str>,
) -> bool {
    let csi = match storage {
        Storage::Csi(dir) => Some(dir),
        _ => None,
    };
    let job = json!({
        "dir": fx.dir.path(), "op": op, "container": container, "known": known,
        "zk": storage.zk(), "read_only": read_only, "csi": csi,
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
    .env_remove("DVDI_CRASH_AT")
    .env_remove("DVDI_CRASH_SKIP");
    if let Some(p) = crash_at {
        // `point#n`: the point's n+1-th passage in the process (a record's n+1-th write, say).
        let (name, skip) = p.split_once('#').unwrap_or((p, "0"));
        cmd.env("DVDI_CRASH_AT", name).env("DVDI_CRASH_SKIP", skip);
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

/// The lease cases: every point of a leased volume's life, with the lease steps among them.
/// `before` users prepare read-only when `before_read_only` is set (so that the crashing
/// prepare, read-write, upgrades the lease).
struct LeaseCase {
    case: Case,
    before_read_only: bool,
}

const LEASE_CASES: &[LeaseCase] = &[
    LeaseCase {
        case: Case {
            before: &[],
            op: "prepare",
            container: "a",
            points: &[
                "prepare:intent-saved",
                "prepare:lease-acquired",
                "prepare:backend-mounted",
                "prepare:mounted-saved",
            ],
            others_alive: &[],
        },
        before_read_only: false,
    },
    LeaseCase {
        case: Case {
            before: &["b"],
            op: "prepare",
            container: "a",
            points: &["prepare:upgrade-saved", "prepare:user-added"],
            others_alive: &["b"],
        },
        before_read_only: true,
    },
    LeaseCase {
        case: Case {
            before: &["a", "b"],
            op: "cleanup",
            container: "a",
            points: &["cleanup:ref-dropped"],
            others_alive: &["b"],
        },
        before_read_only: false,
    },
    LeaseCase {
        case: Case {
            before: &["a"],
            op: "cleanup",
            container: "a",
            points: &[
                "cleanup:user-removed",
                "cleanup:unmount-intent-saved",
                "cleanup:backend-unmounted",
                "cleanup:lease-released",
            ],
            others_alive: &[],
        },
        before_read_only: false,
    },
];

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

/// The CSI cases: the first user's prepare meets every mount step, the last user's cleanup every
/// unmount step.
const CSI_CASES: &[Case] = &[
    Case {
        before: &[],
        op: "prepare",
        container: "a",
        points: &[
            "csi:create_volume:calling",
            "csi:create_volume:answered",
            "csi:controller_publish:calling",
            "csi:controller_publish:answered",
            "csi:node_stage:calling",
            "csi:node_stage:answered",
            "csi:node_publish:calling",
            "csi:node_publish:answered",
        ],
        others_alive: &[],
    },
    Case {
        before: &["a"],
        op: "cleanup",
        container: "a",
        points: &[
            "csi:node_publish:undoing",
            "csi:node_publish:undone",
            "csi:node_stage:undoing",
            "csi:node_stage:undone",
            "csi:controller_publish:undoing",
            "csi:controller_publish:undone",
        ],
        others_alive: &[],
    },
];

/// What the checkpoint holds before a store case's crashing step, beyond its users.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// As the users' prepares left it.
    AsLeft,
    /// Its record rewritten as mesos-dvdi wrote records before the slotted layout (a whole JSON
    /// file, with a lock file beside it): the crashing step converts it.
    FirstLayout,
    /// Its users cleaned up again: the file holds no record, and the crashing recover removes it.
    Released,
}

/// A long container id (it names a sandbox directory too, so it stays under NAME_MAX): a record
/// with three such users outgrows the slots a new volume's file starts with.
fn long_id(tag: &str) -> &'static str {
    Box::leak(format!("{tag}-{}", "x".repeat(240)).into_boxed_str())
}

/// The checkpoint's own persistence points (`state::CRASH_POINTS`) in each step that meets them;
/// `#n` picks the n+1-th passage (the steps write a record more than once).
fn store_cases() -> Vec<(Case, Setup)> {
    let mut cases = vec![
        (
            Case {
                before: &[],
                op: "prepare",
                container: "a",
                points: &[
                    "state:created",
                    "state:slot-torn#0",
                    "state:slot-written#0",
                    "state:slot-torn#1",
                    "state:slot-written#1",
                ],
                others_alive: &[],
            },
            Setup::AsLeft,
        ),
        (
            Case {
                before: &["b"],
                op: "prepare",
                container: "a",
                points: &["state:slot-torn#0", "state:slot-written#0"],
                others_alive: &["b"],
            },
            Setup::AsLeft,
        ),
        (
            Case {
                before: &["a", "b"],
                op: "cleanup",
                container: "a",
                points: &["state:slot-torn#0"],
                others_alive: &["b"],
            },
            Setup::AsLeft,
        ),
        (
            Case {
                before: &["a"],
                op: "cleanup",
                container: "a",
                points: &[
                    "state:slot-torn#0",
                    "state:slot-written#0",
                    "state:slot-torn#1",
                    "state:slot-written#1",
                ],
                others_alive: &[],
            },
            Setup::AsLeft,
        ),
        (
            Case {
                before: &["b"],
                op: "recover",
                container: "b",
                points: &[
                    "state:old-lock-removed",
                    "state:replace-ready",
                    "state:replaced",
                ],
                others_alive: &[],
            },
            Setup::FirstLayout,
        ),
        (
            Case {
                before: &["a"],
                op: "recover",
                container: "a",
                points: &["state:reclaimed"],
                others_alive: &[],
            },
            Setup::Released,
        ),
    ];
    // A third user whose id makes the record outgrow its slots: the file is made anew.
    let first: &'static [&'static str] =
        Box::leak(vec![long_id("b"), long_id("c")].into_boxed_slice());
    cases.push((
        Case {
            before: first,
            op: "prepare",
            container: long_id("a"),
            points: &["state:replace-ready", "state:replaced"],
            others_alive: first,
        },
        Setup::AsLeft,
    ));
    cases
}

#[test]
fn every_crash_point_is_covered() {
    let store = store_cases();
    let covered: Vec<&str> = CASES
        .iter()
        .chain(CSI_CASES)
        .chain(LEASE_CASES.iter().map(|l| &l.case))
        .chain(store.iter().map(|(c, _)| c))
        .flat_map(|c| c.points.iter().map(|p| p.split('#').next().unwrap()))
        .collect();
    for p in CRASH_POINTS.iter().chain(mesos_dvdi::state::CRASH_POINTS) {
        assert!(covered.contains(p), "crash point {p} has no case");
    }
}

/// Rewrites the volume's record as the first layout kept it: its JSON as the whole file, and a
/// lock file beside it.
fn to_first_layout(fx: &Fixture) {
    let store = Store::open(&fx.config.work_dir).unwrap();
    let scanned = store.scan().unwrap();
    let [volume] = &scanned[..] else {
        panic!("one record expected: {scanned:?}")
    };
    let json = serde_json::to_vec(volume.record.as_ref().unwrap()).unwrap();
    std::fs::write(&volume.path, json).unwrap();
    std::fs::write(volume.path.with_extension("lock"), b"").unwrap();
}

/// Plays one crash: the users before it prepare, the step crashes at `point`, a fresh agent
/// recovers (with the crashed container still known or not), the common checks run, then the
/// agent destroys every container it knows. With `zk`, every process is an agent leasing the
/// volume (a `local` one) through that ZooKeeper. Returns the fixture, for the final checks.
fn play(
    case: &Case,
    point: &str,
    still_known: bool,
    storage: Storage<'_>,
    before_ro: bool,
) -> Fixture {
    play_after(case, point, still_known, storage, before_ro, Setup::AsLeft)
}

/// [`play`], with the checkpoint set up as `setup` says before the crashing step.
fn play_after(
    case: &Case,
    point: &str,
    still_known: bool,
    storage: Storage<'_>,
    before_ro: bool,
    setup: Setup,
) -> Fixture {
    play_with(
        case,
        point,
        still_known,
        storage,
        before_ro,
        Fixture::new(),
        |_, _| {},
        setup,
    )
}

/// [`play_after`] on `fx`, calling `after_recover(fx, users)` once the fresh agent has recovered.
#[allow(clippy::too_many_arguments)]
fn play_with(
    case: &Case,
    point: &str,
    still_known: bool,
    storage: Storage<'_>,
    before_ro: bool,
    fx: Fixture,
    after_recover: impl Fn(&str, &[String]),
    setup: Setup,
) -> Fixture {
    let what = format!(
        "{} {} at {point}, known={still_known}",
        case.op, case.container
    );
    for (i, c) in case.before.iter().enumerate() {
        let known = &case.before[..i];
        assert!(
            !child(&fx, storage, "prepare", c, before_ro, known, None),
            "{what}: setup crashed"
        );
    }
    match setup {
        Setup::AsLeft => {}
        Setup::FirstLayout => to_first_layout(&fx),
        Setup::Released => {
            for c in case.before {
                assert!(
                    !child(&fx, storage, "cleanup", c, false, case.before, None),
                    "{what}: setup crashed"
                );
            }
        }
    }
    let mut known: Vec<&str> = case.before.to_vec();
    if !known.contains(&case.container) {
        known.push(case.container);
    }
    let read_only = case.op == "cleanup" && before_ro;
    assert!(
        child(
            &fx,
            storage,
            case.op,
            case.container,
            read_only,
            &known,
            Some(point)
        ),
        "{what}: the child never reached the crash point"
    );

    // A fresh agent recovers. A prepare that crashed was never answered, and a cleanup that
    // crashed was of a container being destroyed: either may or may not still be known. (A
    // leasing child checks its lease against the users itself, once recovered.)
    let mut alive: Vec<&str> = case.others_alive.to_vec();
    if still_known {
        alive.push(case.container);
    }
    assert!(
        !child(&fx, storage, "recover", "", false, &alive, None),
        "{what}: recover crashed"
    );
    let recorded = users(&fx);
    for live in case.others_alive {
        assert!(
            recorded.contains(&(*live).to_owned()),
            "{what}: lost live user {live}: {recorded:?}"
        );
    }
    for u in &recorded {
        assert!(alive.contains(&u.as_str()), "{what}: dead user {u} kept");
    }
    after_recover(&what, &recorded);
    if matches!(storage, Storage::Loop) {
        // The loop volume is a real mount: there exactly while someone uses it.
        assert_eq!(
            is_mounted(&host_path(&fx)),
            !recorded.is_empty(),
            "{what}: users {recorded:?}, mounted: {}",
            is_mounted(&host_path(&fx))
        );
    }

    // The agent then destroys every container it knows.
    for c in &alive {
        assert!(
            !child(&fx, storage, "cleanup", c, false, &alive, None),
            "{what}: cleanup crashed"
        );
    }
    assert!(
        users(&fx).is_empty(),
        "{what}: record left: {:?}",
        users(&fx)
    );
    fx
}

#[test]
fn crash_at_any_point_then_recover_leaks_nothing_and_loses_no_live_user() {
    in_private_mount_ns(|| {
        for case in CASES {
            for point in case.points {
                for still_known in [true, false] {
                    let fx = play(case, point, still_known, Storage::Loop, false);
                    let what = format!(
                        "{} {} at {point}, known={still_known}",
                        case.op, case.container
                    );
                    assert_clean(&fx, &what);
                }
            }
        }
    });
}

#[test]
fn crash_at_any_persistence_point_of_the_checkpoint_then_recover_leaks_nothing_and_loses_no_live_user(
) {
    in_private_mount_ns(|| {
        for (case, setup) in store_cases() {
            for point in case.points {
                for still_known in [true, false] {
                    let fx = play_after(&case, point, still_known, Storage::Loop, false, setup);
                    let what = format!(
                        "{} {:.20} at {point}, known={still_known}",
                        case.op, case.container
                    );
                    assert_clean(&fx, &what);
                    let left: Vec<String> =
                        std::fs::read_dir(fx.config.work_dir.join("volumes/loop"))
                            .unwrap()
                            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                            .filter(|n| n.ends_with(".lock"))
                            .collect();
                    assert!(
                        left.is_empty(),
                        "{what}: first layout's lock file left: {left:?}"
                    );
                }
            }
        }
    });
}

#[test]
fn crash_around_every_lease_step_then_recover_leaves_no_use_without_lease_and_no_lease_unused() {
    let zk = ZkServer::start();
    let observer = ZkCoordinator::start(
        zk.target("/crash"),
        "observer".to_owned(),
        std::time::Duration::from_secs(10),
    );
    assert!(observer.wait_connected(std::time::Duration::from_secs(60)));
    let url = format!("zk://{}/crash", zk.address());
    for lc in LEASE_CASES {
        let case = &lc.case;
        for point in case.points {
            for still_known in [true, false] {
                play(
                    case,
                    point,
                    still_known,
                    Storage::Leased(&url),
                    lc.before_read_only,
                );
                let left: Vec<String> = observer
                    .leases()
                    .unwrap()
                    .into_iter()
                    .map(|l| format!("{} {:?} by {}", l.volume, l.mode, l.holder.agent))
                    .collect();
                assert!(
                    left.is_empty(),
                    "leased {} {} at {point}, known={still_known}: leases left: {left:?}",
                    case.op,
                    case.container
                );
            }
        }
    }
}

#[test]
fn crash_around_every_csi_rpc_then_recover_leaves_nothing_unused_and_undoes_nothing_in_use() {
    in_private_mount_ns(|| {
        for case in CSI_CASES {
            for point in case.points {
                for still_known in [true, false] {
                    let fx = Fixture::new();
                    // The plugin lives here, in the parent: what it holds outlives each child.
                    let plugin = CsiPlugin::start(
                        &fx.root().join("csi.sock"),
                        &fx.root().join("csi-plugin"),
                        CsiOptions {
                            controller_publish: true,
                            ..CsiOptions::default()
                        },
                    );
                    let config = fx.root().join("csi-plugins");
                    plugin.write_config(&config, CSI_TYPE);
                    let fx = play_with(
                        case,
                        point,
                        still_known,
                        Storage::Csi(&config),
                        false,
                        fx,
                        |what, users| {
                            if users.is_empty() {
                                assert!(
                                    plugin.is_idle(),
                                    "{what}: no user, yet attached {:?}, staged {:?}, published {:?}",
                                    plugin.attached(),
                                    plugin.staged(),
                                    plugin.published()
                                );
                            } else {
                                assert!(
                                    plugin.published().len() == 1
                                        && plugin.staged().len() == 1
                                        && plugin.attached().len() == 1,
                                    "{what}: users {users:?}, yet attached {:?}, staged {:?}, published {:?}",
                                    plugin.attached(),
                                    plugin.staged(),
                                    plugin.published()
                                );
                            }
                        },
                        Setup::AsLeft,
                    );
                    let what = format!(
                        "{} {} at {point}, known={still_known}",
                        case.op, case.container
                    );
                    assert!(plugin.is_idle(), "{what}: the plugin still holds something");
                    // At most one: the same name is the same volume (and a crash before CreateVolume
                    // with its container gone leaves none).
                    assert!(
                        plugin.volumes().len() <= 1,
                        "{what}: {:?}",
                        plugin.volumes()
                    );
                    let left = mounts_under(THREAD_MOUNTINFO, fx.root());
                    assert!(left.is_empty(), "{what}: mounts leaked: {left:?}");
                }
            }
        }
    });
}
