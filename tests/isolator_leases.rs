//! Leases across agents, at the isolator's level: two "agents" are two isolators with their own
//! work dirs over the same `local` volumes (leased through `lease_drivers`), sharing one
//! [`RecordingCluster`] — the coordinator's test double, which follows the real coordinator's
//! rules (tests/coord_zk.rs holds the real ZooKeeper to them; tests/leases_zk.rs runs agents
//! as processes against a real server). Here: what the isolator asks for and when, what it
//! refuses, what it records and whom it fences.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::coord::recording::{Call, RecordingCluster, RecordingCoordinator};
use mesos_dvdi::coord::{LeaseMode, LossReason};
use mesos_dvdi::isolator::{Isolator, KnownContainer};
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::{DriverName, VolumeKey, VolumeName};
use mesos_dvdi::state::{ContainerId, Owner, Store};
use support::host::in_private_mount_ns;
use support::isolator::{Counting, Fixture};

const VOL: &str = "pgdata";

fn key() -> VolumeKey {
    VolumeKey {
        driver: DriverName::new("local").unwrap(),
        name: VolumeName::new(VOL).unwrap(),
    }
}

/// A fixture whose `local` volumes live under `shared` (storage every agent sees) and are leased.
fn leased_fixture(shared: &std::path::Path) -> Fixture {
    let mut fx = Fixture::new();
    fx.config.local_root = shared.to_owned();
    fx.config.lease_drivers = vec![DriverName::new("local").unwrap()];
    // A first session's grace (for a coordinator that is down) is one session timeout.
    fx.config.lease_session_timeout = Duration::from_secs(1);
    fx
}

/// One agent: its fixture, its isolator, its coordinator and the containers it fenced.
struct Agent {
    fx: Fixture,
    iso: Isolator,
    coord: Arc<RecordingCoordinator>,
    fenced: Arc<Mutex<Vec<(String, String)>>>,
}

impl Agent {
    /// Agent `name` of `cluster`; its `local` volumes live under `shared` (storage every agent
    /// sees), and are leased.
    fn new(cluster: &Arc<RecordingCluster>, name: &str, shared: &std::path::Path) -> Self {
        let mut fx = leased_fixture(shared);
        fx.config.lease_wait = Duration::ZERO;
        Self::with_fixture(cluster, name, fx)
    }

    fn with_fixture(cluster: &Arc<RecordingCluster>, name: &str, fx: Fixture) -> Self {
        let coord = Arc::new(RecordingCoordinator::new(cluster, name));
        let iso = fx.isolator().with_coordinator(coord.clone());
        let fenced = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&fenced);
        iso.set_fence_handler(Arc::new(move |id: &ContainerId, why: &str| {
            log.lock().unwrap().push((id.to_string(), why.to_owned()));
        }));
        Self {
            fx,
            iso,
            coord,
            fenced,
        }
    }

    fn prepare(&self, id: &str, read_only: bool) -> Result<(), String> {
        let mut env = vec![
            ("DVDI_VOLUME_DRIVER", "local"),
            ("DVDI_VOLUME_NAME", VOL),
            ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ];
        if read_only {
            env.push(("DVDI_VOLUME_READONLY", "true"));
        }
        self.iso
            .prepare(id, Owner::Mesos, &self.fx.input(id, &env, true))
            .map(|_| ())
            .map_err(|e| mesos_dvdi::error::render_chain(&e))
    }

    /// The lease the checkpoint says this agent holds for the volume.
    fn recorded_lease(&self) -> Option<Option<LeaseMode>> {
        let store = Store::open(&self.fx.config.work_dir).unwrap();
        store
            .scan()
            .unwrap()
            .into_iter()
            .map(|s| s.record.unwrap().lease)
            .next()
    }

    fn fenced(&self) -> Vec<(String, String)> {
        self.fenced.lock().unwrap().clone()
    }
}

fn two_agents() -> (tempfile::TempDir, Arc<RecordingCluster>, Agent, Agent) {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let a = Agent::new(&cluster, "agent-a", shared.path());
    let b = Agent::new(&cluster, "agent-b", shared.path());
    (shared, cluster, a, b)
}

#[test]
fn read_write_on_two_agents_is_refused_naming_the_holder_and_leaves_nothing() {
    let (_shared, _cluster, a, b) = two_agents();
    a.prepare("a1", false).unwrap();
    let err = b.prepare("b1", false).unwrap_err();
    assert!(
        err.contains("volume \"pgdata\" (driver \"local\")"),
        "{err}"
    );
    assert!(
        err.contains("held read-write by agent \"agent-a\""),
        "{err}"
    );
    assert!(err.contains("since 1970-01-01T00:00:00Z"), "{err}");
    assert_eq!(b.recorded_lease(), None, "b recorded nothing");
    assert_eq!(b.coord.held(&key()), None);
    assert_eq!(a.coord.held(&key()), Some(LeaseMode::ReadWrite));
    assert_eq!(a.recorded_lease(), Some(Some(LeaseMode::ReadWrite)));
}

#[test]
fn read_only_uses_on_two_agents_share_the_volume() {
    let (_shared, cluster, a, b) = two_agents();
    a.prepare("a1", true).unwrap();
    b.prepare("b1", true).unwrap();
    let holders: Vec<(String, LeaseMode)> = cluster
        .leases()
        .into_iter()
        .map(|l| (l.holder.agent, l.mode))
        .collect();
    assert_eq!(
        holders,
        [
            ("agent-a".to_owned(), LeaseMode::ReadOnly),
            ("agent-b".to_owned(), LeaseMode::ReadOnly)
        ]
    );
}

#[test]
fn read_only_and_read_write_exclude_each_other_both_ways() {
    let (_shared, _cluster, a, b) = two_agents();
    a.prepare("a1", true).unwrap();
    let err = b.prepare("b1", false).unwrap_err();
    assert!(err.contains("held read-only by agent \"agent-a\""), "{err}");
    a.iso.cleanup("a1").unwrap();

    b.prepare("b1", false).unwrap();
    let err = a.prepare("a2", true).unwrap_err();
    assert!(
        err.contains("read-only lease refused: held read-write by agent \"agent-b\""),
        "{err}"
    );
}

#[test]
fn a_waiting_prepare_gets_the_volume_once_the_other_agent_releases_it() {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let a = Agent::new(&cluster, "agent-a", shared.path());
    let mut fx = leased_fixture(shared.path());
    fx.config.lease_wait = Duration::from_secs(600);
    let b = Agent::with_fixture(&cluster, "agent-b", fx);
    a.prepare("a1", false).unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| b.prepare("b1", false));
        // The waiter is in the cluster's wait once its call is recorded; a release wakes it.
        while b.coord.calls().is_empty() {
            std::thread::yield_now();
        }
        a.iso.cleanup("a1").unwrap();
        waiting.join().unwrap().unwrap();
    });
    assert_eq!(b.coord.held(&key()), Some(LeaseMode::ReadWrite));
    assert_eq!(a.coord.held(&key()), None);
}

#[test]
fn the_lease_is_given_back_only_after_the_backend_unmount() {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let fx = leased_fixture(shared.path());
    let coord = Arc::new(RecordingCoordinator::new(&cluster, "agent-a"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (watch, log) = (Arc::clone(&coord), Arc::clone(&seen));
    let provider = Counting::new(Arc::new(Registry::new(fx.config.clone(), Arc::new(Host))))
        .before_unmount(Arc::new(move |_| {
            log.lock().unwrap().push(watch.held(&key()));
        }));
    let iso = fx
        .isolator_with(Arc::new(provider))
        .with_coordinator(coord.clone());
    let input = fx.input(
        "a1",
        &[("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", VOL)],
        false,
    );
    iso.prepare("a1", Owner::Mesos, &input).unwrap();
    iso.cleanup("a1").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(LeaseMode::ReadWrite)],
        "held during the unmount"
    );
    assert_eq!(
        coord.calls(),
        [
            Call::Acquire {
                volume: key(),
                mode: LeaseMode::ReadWrite
            },
            Call::Release { volume: key() }
        ]
    );
    assert_eq!(coord.held(&key()), None);
}

#[test]
fn a_writer_joining_readers_upgrades_the_lease_or_is_refused_without_harm() {
    let (_shared, _cluster, a, b) = two_agents();
    a.prepare("a1", true).unwrap();
    a.prepare("a2", false).unwrap();
    assert_eq!(a.coord.held(&key()), Some(LeaseMode::ReadWrite));
    assert_eq!(a.recorded_lease(), Some(Some(LeaseMode::ReadWrite)));
    assert_eq!(
        a.coord.calls(),
        [
            Call::Acquire {
                volume: key(),
                mode: LeaseMode::ReadOnly
            },
            Call::Acquire {
                volume: key(),
                mode: LeaseMode::ReadWrite
            }
        ]
    );
    a.iso.cleanup("a1").unwrap();
    a.iso.cleanup("a2").unwrap();

    // Now another agent reads too: the upgrade is refused, the reader keeps its volume.
    a.prepare("a3", true).unwrap();
    b.prepare("b1", true).unwrap();
    let err = a.prepare("a4", false).unwrap_err();
    assert!(err.contains("held read-only by agent \"agent-b\""), "{err}");
    assert_eq!(a.recorded_lease(), Some(Some(LeaseMode::ReadOnly)));
    assert_eq!(a.coord.held(&key()), Some(LeaseMode::ReadOnly));
    a.iso.cleanup("a3").unwrap();
    assert_eq!(a.recorded_lease(), None, "the reader's cleanup released it");
}

#[test]
fn coordination_down_refuses_leased_volumes_at_once_and_others_work() {
    let (_shared, cluster, a, _b) = two_agents();
    cluster.set_down(true);
    let err = a.prepare("a1", false).unwrap_err();
    assert!(
        err.contains("cannot take a lease: not connected to ZooKeeper"),
        "{err}"
    );
    assert_eq!(a.recorded_lease(), None, "nothing recorded");
    // A volume of a driver that is not leased (`loop` never is) needs no coordination.
    in_private_mount_ns(|| {
        let input = a.fx.input(
            "a2",
            &[
                ("DVDI_VOLUME_DRIVER", "loop"),
                ("DVDI_VOLUME_NAME", "scratch"),
            ],
            false,
        );
        a.iso.prepare("a2", Owner::Mesos, &input).unwrap();
        a.iso.cleanup("a2").unwrap();
    });
    assert_eq!(
        a.coord.calls(),
        [Call::Acquire {
            volume: key(),
            mode: LeaseMode::ReadWrite
        }]
    );
}

#[test]
fn losing_a_lease_fences_every_container_using_that_volume_and_no_other() {
    let (_shared, _cluster, a, b) = two_agents();
    a.prepare("a1", true).unwrap();
    a.prepare("a2", true).unwrap();
    let other = a.fx.input(
        "a3",
        &[
            ("DVDI_VOLUME_DRIVER", "local"),
            ("DVDI_VOLUME_NAME", "other"),
        ],
        false,
    );
    a.iso.prepare("a3", Owner::Mesos, &other).unwrap();
    a.coord.lose(&key(), LossReason::SessionExpired);
    // The other agent may take it now; it is the one named from here on.
    b.prepare("b1", false).unwrap();
    let mut fenced = a.fenced();
    fenced.sort();
    let ids: Vec<&str> = fenced.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert!(
        fenced[0].1.contains(
            "volume \"pgdata\" (driver \"local\"): lease lost: the ZooKeeper session expired"
        ),
        "{}",
        fenced[0].1
    );
    // The fenced containers' cleanup unmounts here and leaves the other agent's lease alone.
    a.iso.cleanup("a1").unwrap();
    a.iso.cleanup("a2").unwrap();
    assert_eq!(b.coord.held(&key()), Some(LeaseMode::ReadWrite));
}

#[test]
fn recover_takes_the_leases_of_volumes_in_use_again_and_fences_where_another_agent_holds_one() {
    let (_shared, cluster, a, b) = two_agents();
    a.prepare("a1", false).unwrap();
    // Agent a "restarts": its session, and the lease with it, is gone.
    a.coord.lose(&key(), LossReason::SessionExpired);
    a.fenced.lock().unwrap().clear();
    let a2 = Agent::with_fixture(&cluster, "agent-a", a.fx);
    let known = [KnownContainer {
        id: ContainerId::new("a1").unwrap(),
    }];
    let report = a2.iso.recover(&known, &[]).unwrap();
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(
        a2.coord.held(&key()),
        Some(LeaseMode::ReadWrite),
        "taken again"
    );

    // Again, but this time agent b took the volume while a was down.
    a2.coord.lose(&key(), LossReason::SessionExpired);
    b.prepare("b1", false).unwrap();
    let a3 = Agent::with_fixture(&cluster, "agent-a", a2.fx);
    let report = a3.iso.recover(&known, &[]).unwrap();
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    let fenced = a3.fenced();
    assert_eq!(fenced.len(), 1);
    assert_eq!(fenced[0].0, "a1");
    assert!(
        fenced[0].1.contains("held read-write by agent \"agent-b\""),
        "{}",
        fenced[0].1
    );
    assert!(
        fenced[0].1.contains("fenced at recovery"),
        "{}",
        fenced[0].1
    );
    // Still recorded and in use until the agent destroys the container; then released here
    // without touching b's lease.
    assert_eq!(a3.recorded_lease(), Some(Some(LeaseMode::ReadWrite)));
    a3.iso.cleanup("a1").unwrap();
    assert_eq!(a3.recorded_lease(), None);
    assert_eq!(b.coord.held(&key()), Some(LeaseMode::ReadWrite));
}

#[test]
fn volumes_of_drivers_not_leased_never_touch_the_coordinator() {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let mut fx = Fixture::new();
    fx.config.local_root = shared.path().to_owned();
    let a = Agent::with_fixture(&cluster, "agent-a", fx);
    a.prepare("a1", false).unwrap();
    a.iso.cleanup("a1").unwrap();
    assert!(a.coord.calls().is_empty(), "{:?}", a.coord.calls());
}

#[test]
fn volumes_of_a_plugin_with_global_scope_are_leased_and_local_scope_ones_are_not() {
    let cluster = RecordingCluster::new();
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    // The memory plugin says `Scope: global`; the second answers `local` and mounts the same.
    let _global = support::plugin::TestPlugin::unix(
        &plugins.join("netfs.sock"),
        support::plugin::memory_plugin(fx.mkdir("netfs")),
    );
    let inner = support::plugin::memory_plugin(fx.mkdir("hostfs"));
    let _local = support::plugin::TestPlugin::unix(&plugins.join("hostfs.sock"), move |req| {
        if req.path == "/VolumeDriver.Capabilities" {
            support::plugin::Reply::Json(
                200,
                serde_json::json!({"Capabilities": {"Scope": "local"}}),
            )
        } else {
            inner(req)
        }
    });
    let a = Agent::with_fixture(&cluster, "agent-a", fx);
    for (id, driver) in [("c1", "netfs"), ("c2", "hostfs")] {
        let input = a.fx.input(
            id,
            &[("DVDI_VOLUME_DRIVER", driver), ("DVDI_VOLUME_NAME", "v")],
            false,
        );
        a.iso.prepare(id, Owner::Mesos, &input).unwrap();
    }
    let netfs = VolumeKey {
        driver: DriverName::new("netfs").unwrap(),
        name: VolumeName::new("v").unwrap(),
    };
    assert_eq!(
        a.coord.calls(),
        [Call::Acquire {
            volume: netfs.clone(),
            mode: LeaseMode::ReadWrite
        }]
    );
    a.iso.cleanup("c1").unwrap();
    a.iso.cleanup("c2").unwrap();
    assert_eq!(a.coord.held(&netfs), None);
}

#[test]
fn a_lease_lost_while_the_container_is_being_prepared_fences_it_once_prepared() {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let fx = leased_fixture(shared.path());
    let coord = Arc::new(RecordingCoordinator::new(&cluster, "agent-a"));
    // The session expires between the lease and the backend mount.
    let losing = Arc::clone(&coord);
    let provider = Counting::new(Arc::new(Registry::new(fx.config.clone(), Arc::new(Host))))
        .before_mount(Arc::new(move |_| {
            losing.lose(&key(), LossReason::SessionExpired)
        }));
    let iso = fx
        .isolator_with(Arc::new(provider))
        .with_coordinator(coord.clone());
    let fenced = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&fenced);
    iso.set_fence_handler(Arc::new(move |id: &ContainerId, why: &str| {
        log.lock().unwrap().push((id.to_string(), why.to_owned()));
    }));
    let input = fx.input(
        "a1",
        &[("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", VOL)],
        false,
    );
    let plan = iso.prepare("a1", Owner::Mesos, &input).unwrap();
    assert_eq!(plan.leased, [key()]);
    let fenced = fenced.lock().unwrap().clone();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].0, "a1");
    assert!(
        fenced[0]
            .1
            .contains("lease lost while the container was being prepared"),
        "{}",
        fenced[0].1
    );
    iso.cleanup("a1").unwrap();
}

#[test]
fn a_lease_release_that_fails_is_retried_without_unmounting_twice() {
    let shared = tempfile::tempdir().unwrap();
    let cluster = RecordingCluster::new();
    let fx = leased_fixture(shared.path());
    let coord = Arc::new(RecordingCoordinator::new(&cluster, "agent-a"));
    let provider = Counting::new(Arc::new(Registry::new(fx.config.clone(), Arc::new(Host))));
    let unmounts = Arc::clone(&provider.unmounts);
    let iso = fx
        .isolator_with(Arc::new(provider))
        .with_coordinator(coord.clone());
    let input = |id| {
        fx.input(
            id,
            &[("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", VOL)],
            false,
        )
    };
    iso.prepare("a1", Owner::Mesos, &input("a1")).unwrap();
    cluster.set_down(true);
    let err = mesos_dvdi::error::render_chain(&iso.cleanup("a1").unwrap_err());
    assert!(err.contains("not connected to ZooKeeper"), "{err}");
    assert_eq!(unmounts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let record = Store::open(&fx.config.work_dir).unwrap().scan().unwrap();
    let record = record[0].record.as_ref().unwrap();
    assert_eq!(record.phase, mesos_dvdi::state::Phase::Unmounted);
    assert_eq!(
        record.lease,
        Some(LeaseMode::ReadWrite),
        "still says it holds it"
    );
    assert_eq!(coord.held(&key()), Some(LeaseMode::ReadWrite));

    // Back: the next cleanup retries the release alone.
    cluster.set_down(false);
    let other = fx.input(
        "a2",
        &[
            ("DVDI_VOLUME_DRIVER", "local"),
            ("DVDI_VOLUME_NAME", "other"),
        ],
        false,
    );
    iso.prepare("a2", Owner::Mesos, &other).unwrap();
    iso.cleanup("a2").unwrap();
    assert_eq!(coord.held(&key()), None, "released at the retry");
    assert!(
        Store::open(&fx.config.work_dir)
            .unwrap()
            .scan()
            .unwrap()
            .is_empty(),
        "nothing left recorded"
    );
    assert_eq!(
        unmounts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one unmount each for the two volumes, none repeated"
    );
}

#[test]
fn a_plugin_whose_capabilities_fail_is_refused_until_it_answers_then_leased() {
    let cluster = RecordingCluster::new();
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    // A global plugin still starting up: its first Capabilities answer is a 500.
    let inner = support::plugin::memory_plugin(fx.mkdir("netfs"));
    let answered = std::sync::atomic::AtomicBool::new(false);
    let plugin = support::plugin::TestPlugin::unix(&plugins.join("netfs.sock"), move |req| {
        if req.path == "/VolumeDriver.Capabilities"
            && !answered.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            support::plugin::Reply::Json(500, serde_json::json!({"Err": "still starting up"}))
        } else {
            inner(req)
        }
    });
    let a = Agent::with_fixture(&cluster, "agent-a", fx);
    let input = |id| {
        a.fx.input(
            id,
            &[("DVDI_VOLUME_DRIVER", "netfs"), ("DVDI_VOLUME_NAME", "v")],
            false,
        )
    };

    // Fail closed: whether the volume needs a lease is unknown, so it is not mounted unleased.
    let err = a.iso.prepare("c1", Owner::Mesos, &input("c1")).unwrap_err();
    let err = mesos_dvdi::error::render_chain(&err);
    for part in ["driver \"netfs\"", "still starting up", "lease_drivers"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(a.coord.calls().is_empty(), "{:?}", a.coord.calls());
    assert_eq!(plugin.count("/VolumeDriver.Mount"), 0);
    assert_eq!(a.recorded_lease(), None, "nothing recorded");

    // The failure was not remembered: the next prepare asks again and leases the volume.
    a.iso.prepare("c2", Owner::Mesos, &input("c2")).unwrap();
    let netfs = VolumeKey {
        driver: DriverName::new("netfs").unwrap(),
        name: VolumeName::new("v").unwrap(),
    };
    assert_eq!(
        a.coord.calls(),
        [Call::Acquire {
            volume: netfs.clone(),
            mode: LeaseMode::ReadWrite
        }]
    );
    assert_eq!(a.recorded_lease(), Some(Some(LeaseMode::ReadWrite)));
    a.iso.cleanup("c2").unwrap();
    assert_eq!(a.coord.held(&netfs), None);
    assert_eq!(plugin.count("/VolumeDriver.Capabilities"), 2);
}

#[test]
fn recover_keeps_an_unleased_volume_whose_driver_scope_is_unknown_and_says_so() {
    let cluster = RecordingCluster::new();
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    // Mounted while the agent did not coordinate; after the restart the plugin's Capabilities
    // fails.
    let inner = support::plugin::memory_plugin(fx.mkdir("netfs"));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let _plugin = support::plugin::TestPlugin::unix(&plugins.join("netfs.sock"), move |req| {
        if req.path == "/VolumeDriver.Capabilities"
            && fails.load(std::sync::atomic::Ordering::SeqCst)
        {
            support::plugin::Reply::Json(500, serde_json::json!({"Err": "still starting up"}))
        } else {
            inner(req)
        }
    });
    let env = [("DVDI_VOLUME_DRIVER", "netfs"), ("DVDI_VOLUME_NAME", "v")];
    fx.isolator()
        .prepare("c1", Owner::Mesos, &fx.input("c1", &env, false))
        .unwrap();
    failing.store(true, std::sync::atomic::Ordering::SeqCst);

    let a = Agent::with_fixture(&cluster, "agent-a", fx);
    let known = [KnownContainer {
        id: ContainerId::new("c1").unwrap(),
    }];
    let report = a.iso.recover(&known, &[]).unwrap();
    // No worse than before the restart: still in use, not fenced, and the operator is told.
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert_eq!(report.errors.len(), 1, "{report:?}");
    for part in ["volume \"v\" (driver \"netfs\")", "kept without a lease"] {
        assert!(report.errors[0].contains(part), "{part:?}: {report:?}");
    }
    assert!(a.coord.calls().is_empty(), "{:?}", a.coord.calls());
    a.iso.cleanup("c1").unwrap();
    assert_eq!(a.recorded_lease(), None);
}
