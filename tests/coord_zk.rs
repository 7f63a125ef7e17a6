//! The ZooKeeper coordinator against a real ZooKeeper server (Debian's package, started by
//! `support::zookeeper`): two coordinators with different agent names are two agents.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesos_dvdi::coord::zk::ZkCoordinator;
use mesos_dvdi::coord::{CoordError, Coordinator, LeaseLoss, LeaseMode, LossReason};
use mesos_dvdi::spec::{DriverName, VolumeKey, VolumeName};
use support::zookeeper::{RawZk, ZkProxy, ZkServer};

use LeaseMode::{ReadOnly as RO, ReadWrite as RW};

/// The root path the tests coordinate under.
const ROOT: &str = "/dvdi";
/// A session timeout for tests that do not lose their session.
const LONG: Duration = Duration::from_secs(30);
/// How long a test waits for an event that must come (a generous bound, not a threshold).
const EVENT: Duration = Duration::from_secs(60);

fn key(driver: &str, name: &str) -> VolumeKey {
    VolumeKey {
        driver: DriverName::new(driver).unwrap(),
        name: VolumeName::new(name).unwrap(),
    }
}

fn node(k: &VolumeKey, leaf: &str) -> String {
    format!("{ROOT}/volumes/{}/{}/{leaf}", k.driver, k.name)
}

/// The name of the lease node a session (`0x…`, as the status gives it) holds in `mode`:
/// `rw-<session>` or `ro-<session>`, the session id in 16 hex digits.
fn leaf(session: &str, mode: LeaseMode) -> String {
    let id = u64::from_str_radix(session.trim_start_matches("0x"), 16).unwrap();
    let prefix = if mode == RW { "rw" } else { "ro" };
    format!("{prefix}-{id:016x}")
}

/// The name of `c`'s lease node in `mode`.
fn leaf_of(c: &ZkCoordinator, mode: LeaseMode) -> String {
    leaf(&c.status().session.expect("a session"), mode)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim_end()
        .to_owned()
}

/// Starts a coordinator for `agent` and waits until its session is up.
fn agent(server: &ZkServer, name: &str, session_timeout: Duration) -> ZkCoordinator {
    let c = ZkCoordinator::start(server.target(ROOT), name.into(), session_timeout);
    wait_connected(&c);
    c
}

/// Polls the coordinator's status until it has a session (a real condition, bounded).
fn wait_connected(c: &ZkCoordinator) {
    let deadline = Instant::now() + EVENT;
    while !c.status().connected {
        assert!(
            Instant::now() < deadline,
            "no ZooKeeper session within {} s: {:?}",
            EVENT.as_secs(),
            c.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every lease loss the coordinator reports, on a channel.
fn losses(c: &ZkCoordinator) -> mpsc::Receiver<LeaseLoss> {
    let (tx, rx) = mpsc::channel();
    c.set_loss_handler(Box::new(move |loss| {
        let _ = tx.send(loss);
    }));
    rx
}

fn refused(res: Result<(), CoordError>) -> (LeaseMode, LeaseMode, String) {
    match res {
        Err(CoordError::Held {
            wanted,
            held_mode,
            holder,
            ..
        }) => (wanted, held_mode, holder.agent),
        other => panic!("expected Held, got {other:?}"),
    }
}

#[test]
fn read_write_lease_is_refused_to_another_agent_naming_the_holder_and_since() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let v = key("rexray", "pgdata");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    a.acquire(&v, RW, Duration::ZERO).unwrap();

    let err = b.acquire(&v, RW, Duration::ZERO).unwrap_err();
    let CoordError::Held { holder, .. } = &err else {
        panic!("expected Held, got {err:?}");
    };
    assert_eq!(holder.agent, "alpha");
    assert_eq!(holder.pid, std::process::id());
    assert!(holder.since >= before, "{holder:?}");
    let msg = err.to_string();
    assert!(msg.contains("pgdata") && msg.contains("\"alpha\""), "{msg}");

    // A wait that runs out ends the same way, having waited.
    let wait = Duration::from_millis(300);
    match b.acquire(&v, RW, wait) {
        Err(CoordError::Held { holder, waited, .. }) => {
            assert_eq!(holder.agent, "alpha");
            assert!(waited >= wait, "{waited:?}");
        }
        other => panic!("expected Held, got {other:?}"),
    }

    // A read-only use is refused too: a read-write volume is mounted on no other agent.
    assert_eq!(
        refused(b.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "alpha".into())
    );
    // The holder asking again (in either mode) is success.
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    assert_eq!(a.status().held, vec![(v, RW)]);
}

#[test]
fn read_only_leases_share_and_block_read_write_both_ways_and_upgrade() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let v = key("rexray", "shared");

    a.acquire(&v, RO, Duration::ZERO).unwrap();
    b.acquire(&v, RO, Duration::ZERO).unwrap();
    let dir = format!("{ROOT}/volumes/rexray/shared");
    let mut readers = vec![leaf_of(&a, RO), leaf_of(&b, RO)];
    readers.sort();
    assert_eq!(raw.children(&dir), readers);
    // Neither may upgrade while the other reads.
    assert_eq!(
        refused(a.acquire(&v, RW, Duration::ZERO)),
        (RW, RO, "beta".into())
    );
    assert_eq!(
        refused(b.acquire(&v, RW, Duration::ZERO)),
        (RW, RO, "alpha".into())
    );

    b.release(&v).unwrap();
    // Upgrade: our rw node is created, our ro node goes.
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    assert_eq!(raw.children(&dir), [leaf_of(&a, RW)]);
    assert_eq!(a.status().held, vec![(v.clone(), RW)]);
    // And now a reader is refused.
    assert_eq!(
        refused(b.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "alpha".into())
    );
}

#[test]
fn waiting_acquire_succeeds_once_the_other_agent_releases() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let v = key("rexray", "queue");
    a.acquire(&v, RW, Duration::ZERO).unwrap();

    // Alpha's own lease watch (on its rw node) comes first.
    let deadline = Instant::now() + EVENT;
    while zk.watch_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "alpha never watched its lease node"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = zk.watch_count();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.acquire(&v, RW, EVENT).map_err(|e| e.to_string()));
        // Release only once beta waits: its child watch on the volume node is registered.
        let deadline = Instant::now() + EVENT;
        while zk.watch_count() == before {
            assert!(
                Instant::now() < deadline,
                "beta never watched the volume node"
            );
            assert!(!waiter.is_finished(), "beta stopped waiting");
            std::thread::sleep(Duration::from_millis(10));
        }
        a.release(&v).unwrap();
        waiter.join().unwrap().unwrap();
    });
    assert_eq!(b.status().held, vec![(v.clone(), RW)]);
    assert!(a.status().held.is_empty());
}

#[test]
fn release_is_idempotent_and_holding_nothing_is_success() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", LONG);
    let v = key("rexray", "idem");
    a.release(&v).unwrap();
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    a.release(&v).unwrap();
    a.release(&v).unwrap();
    assert!(raw
        .children(&format!("{ROOT}/volumes/rexray/idem"))
        .is_empty());
    assert!(a.status().held.is_empty());
}

#[test]
fn layout_is_ephemeral_nodes_with_holder_json_under_the_volume_node() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", LONG);
    let v = key("local", "layout");
    a.acquire(&v, RO, Duration::ZERO).unwrap();

    let session =
        i64::from_str_radix(a.status().session.unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(raw.children(&format!("{ROOT}/volumes")), ["local"]);
    assert_eq!(raw.children(&format!("{ROOT}/volumes/local")), ["layout"]);
    let (json, owner) = raw.json(&node(&v, &leaf_of(&a, RO))).unwrap();
    assert_eq!(
        owner, session,
        "the node is ephemeral, owned by alpha's session"
    );
    let obj = json.as_object().unwrap();
    let mut fields: Vec<_> = obj.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["agent", "host", "machine", "pid", "since"]);
    assert_eq!(obj["agent"], "alpha");
    assert_eq!(obj["host"], host_name());
    let machine = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/random/boot_id"))
        .unwrap()
        .trim()
        .replace('-', "");
    assert_eq!(obj["machine"], machine);
    assert_eq!(obj["pid"], std::process::id());
    assert!(obj["since"].as_u64().unwrap() > 1_700_000_000);
    // The parents are persistent.
    assert_eq!(raw.owner("/dvdi/volumes/local/layout"), Some(0));

    a.acquire(&v, RW, Duration::ZERO).unwrap();
    assert_eq!(
        raw.children("/dvdi/volumes/local/layout"),
        [leaf_of(&a, RW)]
    );
    let (json, owner) = raw.json(&node(&v, &leaf_of(&a, RW))).unwrap();
    assert_eq!((json["agent"].as_str(), owner), (Some("alpha"), session));

    // Dropping the coordinator closes its session: the ephemeral node goes at once.
    drop(a);
    assert!(raw.children("/dvdi/volumes/local/layout").is_empty());
}

#[test]
fn leases_lists_every_lease_in_the_cluster_sorted_with_holders() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    a.acquire(&key("zdriver", "v1"), RW, Duration::ZERO)
        .unwrap();
    b.acquire(&key("adriver", "v2"), RO, Duration::ZERO)
        .unwrap();
    a.acquire(&key("adriver", "v2"), RO, Duration::ZERO)
        .unwrap();
    b.acquire(&key("adriver", "v1"), RW, Duration::ZERO)
        .unwrap();

    let got: Vec<_> = a
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| (l.volume.to_string(), l.mode, l.holder.agent, l.holder.pid))
        .collect();
    let pid = std::process::id();
    let want = [
        (key("adriver", "v1"), RW, "beta"),
        (key("adriver", "v2"), RO, "alpha"),
        (key("adriver", "v2"), RO, "beta"),
        (key("zdriver", "v1"), RW, "alpha"),
    ]
    .map(|(k, m, who)| (k.to_string(), m, who.to_owned(), pid));
    assert_eq!(got, want);
    // Another agent sees the same.
    assert_eq!(b.leases().unwrap().len(), 4);
}

#[test]
fn zookeeper_down_fails_acquire_at_once_and_start_connects_when_it_comes_up() {
    let mut zk = ZkServer::start();
    let target = zk.target(ROOT);
    zk.stop();
    // ZooKeeper is down: start does not fail, and acquire fails closed without waiting.
    let a = ZkCoordinator::start(target, "alpha".into(), LONG);
    let v = key("rexray", "down");
    let err = a.acquire(&v, RW, Duration::from_secs(3600)).unwrap_err();
    let CoordError::Unavailable { target, .. } = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert_eq!(*target, format!("zk://{}{ROOT}", zk.address()));
    let msg = err.to_string();
    assert!(
        msg.contains("down") && msg.contains("not connected"),
        "{msg}"
    );
    assert!(!a.status().connected);
    assert!(a.leases().is_err());

    zk.restart();
    wait_connected(&a);
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    assert!(a.status().session.unwrap().starts_with("0x"));
}

#[test]
fn session_expiry_reports_every_held_lease_lost_then_a_new_session_serves() {
    let zk = ZkServer::start();
    let proxy = ZkProxy::start(&zk);
    let a = ZkCoordinator::start(proxy.target(ROOT), "alpha".into(), LONG);
    wait_connected(&a);
    let lost = losses(&a);
    let (v1, v2) = (key("rexray", "e1"), key("rexray", "e2"));
    a.acquire(&v1, RW, Duration::ZERO).unwrap();
    a.acquire(&v2, RO, Duration::ZERO).unwrap();
    let old = a.status().session;

    // Alpha is cut off from ZooKeeper (for far less than its session timeout), and meanwhile
    // the server ends its session; alpha learns it when it reconnects.
    proxy.cut();
    a.expire_session_for_tests(&zk.address()).unwrap();
    proxy.restore();
    let mut got: Vec<_> = (0..2).map(|_| lost.recv_timeout(EVENT).unwrap()).collect();
    got.sort_by(|x, y| x.volume.cmp(&y.volume));
    for (loss, v) in got.iter().zip([&v1, &v2]) {
        assert_eq!(&loss.volume, v);
        assert_eq!(loss.reason, LossReason::SessionExpired);
    }
    assert!(a.status().held.is_empty());

    wait_connected(&a);
    assert_ne!(a.status().session, old);
    a.acquire(&v1, RW, Duration::ZERO).unwrap();
}

#[test]
fn disconnection_longer_than_the_session_timeout_loses_leases_and_stale_nodes_are_retaken() {
    let mut zk = ZkServer::start();
    let a = agent(&zk, "alpha", Duration::from_secs(4));
    let lost = losses(&a);
    let v = key("rexray", "cut");
    a.acquire(&v, RW, Duration::ZERO).unwrap();

    // A frozen server: the connection stays open but nothing answers.
    zk.pause();
    let loss = lost.recv_timeout(EVENT).unwrap();
    assert_eq!(loss.volume, v);
    assert!(
        matches!(loss.reason, LossReason::Disconnected(_)),
        "{loss:?}"
    );
    assert!(a.status().held.is_empty());
    assert!(matches!(
        a.acquire(&v, RW, Duration::ZERO),
        Err(CoordError::Unavailable { .. })
    ));

    zk.resume();
    wait_connected(&a);
    // The old session's node (if the server has not expired it yet) is ours and stale.
    a.acquire(&v, RW, EVENT).unwrap();
    assert_eq!(a.status().held, vec![(v, RW)]);
}

#[test]
fn lease_node_deleted_by_hand_is_taken_again() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", LONG);
    let lost = losses(&a);
    let v = key("rexray", "deleted");
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    let path = node(&v, &leaf_of(&a, RW));
    raw.delete(&path);
    raw.wait_exists(&path, true, EVENT);
    let (json, _) = raw.json(&path).unwrap();
    assert_eq!(json["agent"], "alpha");
    assert_eq!(a.status().held, vec![(v, RW)]);
    assert!(lost.try_recv().is_err(), "a re-taken lease is not lost");
}

#[test]
fn lease_taken_by_another_agent_under_us_is_reported_with_the_new_holder() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = Arc::new(agent(&zk, "alpha", LONG));
    // The handler runs on the coordination thread: a call back into the coordinator from it
    // fails at once instead of deadlocking.
    let (tx, lost) = mpsc::channel();
    let weak = Arc::downgrade(&a);
    a.set_loss_handler(Box::new(move |loss| {
        let again = weak
            .upgrade()
            .map(|c| c.release(&loss.volume).map_err(|e| e.to_string()));
        let _ = tx.send((loss, again));
    }));
    let v = key("rexray", "stolen");
    a.acquire(&v, RW, Duration::ZERO).unwrap();

    let intruder = br#"{"agent":"intruder","host":"elsewhere","pid":4242,"since":1800000000}"#;
    raw.replace(&node(&v, &leaf_of(&a, RW)), intruder);
    let (loss, again) = lost.recv_timeout(EVENT).unwrap();
    let again = again.expect("the coordinator is alive").unwrap_err();
    assert!(again.contains("loss handler"), "{again}");
    assert_eq!(loss.volume, v);
    assert_eq!(loss.reason, LossReason::TakenOver);
    let holder = loss.holder.expect("the new holder");
    assert_eq!(
        (holder.agent.as_str(), holder.since),
        ("intruder", 1_800_000_000)
    );
    assert!(a.status().held.is_empty());
    assert_eq!(
        refused(a.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "intruder".into())
    );
}

/// Environment variable that turns `lease_holder_child` into a lease holder for a parent test.
const CHILD_ENV: &str = "DVDI_TEST_ZK_HOLDER";

/// Not a test: run by `lease_of_a_sibling_is_shared_and_of_a_dead_process_is_taken_over` as a
/// separate process of agent "alpha" that takes a lease, says so, and waits to be killed.
#[test]
#[ignore = "a child process of another test"]
fn lease_holder_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [url, agent, driver, name] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let target = mesos_dvdi::coord::zk::ZkTarget::parse(url).unwrap();
    let c = ZkCoordinator::start(target, agent.into(), LONG);
    wait_connected(&c);
    c.acquire(&key(driver, name), RW, Duration::ZERO).unwrap();
    println!("HELD {}", c.status().session.unwrap());
    // Hold the lease until killed: stdin is a pipe the parent never writes to.
    let _ = std::io::stdin().lines().count();
}

#[test]
fn lease_of_a_live_sibling_is_shared_and_of_a_dead_process_is_taken_over() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let v = key("rexray", "sibling");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lease_holder_child", "--ignored", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("zk://{}{ROOT}|alpha|rexray|sibling", zk.address()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let child_session = loop {
        let line = stdout
            .next()
            .expect("the child exited before holding")
            .unwrap();
        if let Some(s) = line.strip_prefix("HELD ") {
            break s.to_owned();
        }
    };
    let owner = |path: &str| raw.json(path).map(|(_, o)| format!("{o:#x}"));
    let rw = node(&v, &leaf(&child_session, RW));

    // A live sibling process of our agent on this host holds it: shared (each process holds
    // its own node), and giving up our part leaves the sibling's alone.
    let a = agent(&zk, "alpha", LONG);
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    a.leave(&v).unwrap();
    assert!(a.status().held.is_empty());
    assert_eq!(owner(&rw), Some(child_session.clone()));
    // Another agent is refused, naming alpha.
    let b = agent(&zk, "beta", LONG);
    assert_eq!(
        refused(b.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "alpha".into())
    );

    // The sibling dies (its session lives on until it times out): its node is stale now and
    // alpha takes it over at once.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(owner(&rw), Some(child_session.clone()));
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    assert_eq!(owner(&rw), None);
    assert_eq!(
        raw.children(&format!("{ROOT}/volumes/rexray/sibling")),
        [leaf_of(&a, RW)]
    );
    assert_eq!(
        refused(b.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "alpha".into())
    );
}

/// Runs `a` and `b` at the same instant (each on its own thread, released together) and
/// returns both results.
fn at_once<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| {
            start.wait();
            a()
        });
        let tb = s.spawn(|| {
            start.wait();
            b()
        });
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

#[test]
fn simultaneous_takes_by_two_agents_never_grant_read_write_beside_another_lease() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let pairs = [(RW, RW), (RW, RO), (RO, RW)];
    let mut both = Vec::new();
    for round in 0..300 {
        let (ma, mb) = pairs[round % pairs.len()];
        // Half the rounds on a volume seen for the first time, half on one taken and given
        // back before.
        let v = key("rexray", &format!("race{}", round / 2));
        let (ra, rb) = at_once(
            || a.acquire(&v, ma, Duration::ZERO),
            || b.acquire(&v, mb, Duration::ZERO),
        );
        if ra.is_ok() && rb.is_ok() {
            both.push((round, ma, mb));
        }
        for (c, r) in [(&a, ra), (&b, rb)] {
            if let Err(e) = r {
                assert!(matches!(e, CoordError::Held { .. }), "round {round}: {e}");
            }
            c.release(&v).unwrap();
        }
    }
    assert!(
        both.is_empty(),
        "both agents were granted in {} of 300 rounds: {both:?}",
        both.len()
    );
}

#[test]
fn upgrade_racing_another_agents_read_only_take_never_grants_both() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let mut both = Vec::new();
    for round in 0..300 {
        let v = key("rexray", &format!("upgrade{round}"));
        a.acquire(&v, RO, Duration::ZERO).unwrap();
        let (ra, rb) = at_once(
            || a.acquire(&v, RW, Duration::ZERO),
            || b.acquire(&v, RO, Duration::ZERO),
        );
        if ra.is_ok() && rb.is_ok() {
            both.push(round);
        }
        a.release(&v).unwrap();
        b.release(&v).unwrap();
    }
    assert!(
        both.is_empty(),
        "the upgrade and the other agent's read-only take were both granted in {} of 300 rounds: {both:?}",
        both.len()
    );
}

#[test]
fn release_whose_answer_is_lost_holds_nothing_and_leaves_no_node_once_reconnected() {
    let mut zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", Duration::from_secs(10));
    let v = key("rexray", "lost-answer");
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    let path = node(&v, &leaf_of(&a, RW));

    // A frozen server: the release goes out and no answer comes back, until the client gives
    // the connection up. Whether the deletion happened is unknown to alpha.
    zk.pause();
    let err = a.release(&v).unwrap_err();
    assert!(matches!(err, CoordError::Unavailable { .. }), "{err}");
    assert!(
        a.status().held.is_empty(),
        "a lease whose release may have happened is not held: {:?}",
        a.status()
    );

    // Once the session is usable again, alpha's node is gone either way, and a later take asks
    // ZooKeeper rather than a memory of the lease.
    zk.resume();
    wait_connected(&a);
    raw.wait_exists(&path, false, EVENT);
    let b = agent(&zk, "beta", LONG);
    b.acquire(&v, RW, Duration::ZERO).unwrap();
    assert_eq!(
        refused(a.acquire(&v, RW, Duration::ZERO)),
        (RW, RW, "beta".into())
    );
}

#[test]
fn upgrade_whose_answer_is_lost_keeps_only_the_read_only_lease() {
    let mut zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", Duration::from_secs(10));
    let lost = losses(&a);
    let v = key("rexray", "lost-upgrade");
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    let (ro, rw) = (node(&v, &leaf_of(&a, RO)), node(&v, &leaf_of(&a, RW)));

    // The upgrade's transaction goes out and no answer comes back: it may or may not happen.
    // Read-only is held either way, and stays held; read-write is not.
    zk.pause();
    let err = a.acquire(&v, RW, Duration::ZERO).unwrap_err();
    assert!(matches!(err, CoordError::Unavailable { .. }), "{err}");
    assert_eq!(a.status().held, vec![(v.clone(), RO)]);

    // Once the session is usable again, ZooKeeper says the same: our read-only node, and no
    // read-write one (put back by a transaction of its own if the upgrade went through).
    zk.resume();
    wait_connected(&a);
    raw.wait_exists(&rw, false, EVENT);
    raw.wait_exists(&ro, true, EVENT);
    assert_eq!(
        raw.children(&format!("{ROOT}/volumes/rexray/lost-upgrade")),
        [leaf_of(&a, RO)]
    );
    let b = agent(&zk, "beta", LONG);
    b.acquire(&v, RO, Duration::ZERO).unwrap();
    assert_eq!(a.status().held, vec![(v, RO)]);
    assert!(lost.try_recv().is_err(), "nothing was lost");
}

/// Waits (polling a real condition, bounded) until `c` no longer says it holds `v` read-write.
fn wait_not_read_write(c: &ZkCoordinator, v: &VolumeKey) {
    let deadline = Instant::now() + EVENT;
    while c.status().held.contains(&(v.clone(), RW)) {
        assert!(
            Instant::now() < deadline,
            "still read-write: {:?}",
            c.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_answer_after_the_caller_gave_up_gives_back_only_what_that_call_took() {
    let zk = ZkServer::start();
    let raw = RawZk::connect(&zk);
    let a = agent(&zk, "alpha", LONG);
    let v = key("rexray", "late");
    let dir = format!("{ROOT}/volumes/rexray/late");
    a.acquire(&v, RO, Duration::ZERO).unwrap();

    // A re-take of a lease held already (as recover does), answered after its caller gave up:
    // the call took nothing, and nothing is given back.
    let err = a
        .acquire_giving_up_after_for_tests(&v, RO, Duration::ZERO, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, CoordError::Unavailable { .. }), "{err}");
    // A later call on the volume is served after the late one is done with.
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    assert_eq!(a.status().held, vec![(v.clone(), RO)]);
    assert_eq!(raw.children(&dir), [leaf_of(&a, RO)]);

    // An upgrade answered after its caller gave up: the read-write part goes, the read-only
    // lease held before the call stays.
    let err = a
        .acquire_giving_up_after_for_tests(&v, RW, Duration::ZERO, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, CoordError::Unavailable { .. }), "{err}");
    a.acquire(&v, RO, Duration::ZERO).unwrap();
    wait_not_read_write(&a, &v);
    assert_eq!(a.status().held, vec![(v.clone(), RO)]);
    assert_eq!(raw.children(&dir), [leaf_of(&a, RO)]);

    // A first take answered after its caller gave up is given back whole.
    let w = key("rexray", "late-first");
    let err = a
        .acquire_giving_up_after_for_tests(&w, RW, Duration::ZERO, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, CoordError::Unavailable { .. }), "{err}");
    a.release(&w).unwrap();
    wait_not_read_write(&a, &w);
    assert!(raw
        .children(&format!("{ROOT}/volumes/rexray/late-first"))
        .is_empty());
    assert_eq!(a.status().held, vec![(v, RO)]);
}

/// Alpha, asking ZooKeeper at `zk` (through a proxy) for `asked`, holds a read-write lease; its
/// traffic is then blackholed (nothing passes, nothing is closed). Alpha must report the lease
/// lost while the server still holds its session, that is before the server can expire it and
/// let another agent in; beta, watching, then gets the lease once the server expired it.
fn partitioned_holder_is_fenced_before_its_session_can_expire(zk: &ZkServer, asked: Duration) {
    let proxy = ZkProxy::start(zk);
    let a = ZkCoordinator::start(proxy.target(ROOT), "alpha".into(), asked);
    wait_connected(&a);
    let lost = losses(&a);
    let b = agent(zk, "beta", LONG);
    let v = key("rexray", "partitioned");
    a.acquire(&v, RW, Duration::ZERO).unwrap();

    proxy.blackhole();
    let loss = lost.recv_timeout(EVENT).expect("alpha reports the loss");
    let listed = b.leases().unwrap();
    assert!(
        matches!(loss.reason, LossReason::Disconnected(_)),
        "{loss:?}"
    );
    assert!(
        listed
            .iter()
            .any(|l| l.volume == v && l.holder.agent == "alpha"),
        "alpha was fenced ({loss}) only after the server had expired its session: {listed:?}"
    );
    b.acquire(&v, RW, EVENT).unwrap();
    proxy.heal();
}

#[test]
fn partitioned_holder_is_fenced_at_two_thirds_of_its_session() {
    let zk = ZkServer::start();
    partitioned_holder_is_fenced_before_its_session_can_expire(&zk, Duration::from_secs(4));
}

#[test]
fn loss_deadline_follows_the_session_timeout_the_server_granted() {
    // The server grants 4 s to a client that asks for 6 s.
    let zk = ZkServer::start_with_max_session_timeout(Duration::from_secs(4));
    partitioned_holder_is_fenced_before_its_session_can_expire(&zk, Duration::from_secs(6));
}

/// A machine-id file with `id` in `dir`.
fn machine_id_file(dir: &tempfile::TempDir, id: &str) -> std::path::PathBuf {
    let path = dir.path().join(id);
    std::fs::write(&path, format!("{id}\n")).unwrap();
    path
}

#[test]
fn hosts_sharing_an_agent_name_are_told_apart_by_their_machine_id() {
    let zk = ZkServer::start();
    let ids = tempfile::tempdir().unwrap();
    // Two cloned hosts: one agent name, one host name, and (here, one process: the same pid
    // table) only their machine ids differ.
    let clone = |id: &str| {
        let file = machine_id_file(&ids, id);
        let c = ZkCoordinator::start_with_machine_id(
            zk.target(ROOT),
            "node-1".into(),
            LONG,
            &[file.as_path()],
        );
        wait_connected(&c);
        c
    };
    let m1 = clone("0123456789abcdef0123456789abcdef");
    let m2 = clone("fedcba9876543210fedcba9876543210");
    let v = key("rexray", "cloned");
    m1.acquire(&v, RW, Duration::ZERO).unwrap();

    // The other clone's node is never "ours" (a sibling to share, or stale to take over by a
    // pid that means nothing on another host): the read-write lease is refused.
    let err = m2.acquire(&v, RW, Duration::ZERO).unwrap_err();
    let CoordError::Held { holder, .. } = &err else {
        panic!("expected Held, got {err:?}");
    };
    assert_eq!(holder.machine, "0123456789abcdef0123456789abcdef");
    assert_eq!(refused(m2.acquire(&v, RO, Duration::ZERO)).1, RW);
    assert_eq!(m1.status().held, vec![(v.clone(), RW)]);
    let listed = m2.leases().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].holder.machine, "0123456789abcdef0123456789abcdef");

    // Reading, they share like any two agents.
    let w = key("rexray", "cloned-ro");
    m1.acquire(&w, RO, Duration::ZERO).unwrap();
    m2.acquire(&w, RO, Duration::ZERO).unwrap();
    assert_eq!(refused(m1.acquire(&w, RW, Duration::ZERO)).1, RO);
}

#[test]
fn a_take_on_the_view_kept_from_the_last_one_sees_a_lease_taken_since() {
    let zk = ZkServer::start();
    let (a, b) = (agent(&zk, "alpha", LONG), agent(&zk, "beta", LONG));
    let v = key("rexray", "kept");
    // Alpha keeps the view of its last take: the volume free once it gave the lease back.
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    a.release(&v).unwrap();
    b.acquire(&v, RO, Duration::ZERO).unwrap();
    assert_eq!(
        refused(a.acquire(&v, RW, Duration::ZERO)),
        (RW, RO, "beta".into())
    );
    b.release(&v).unwrap();
    a.acquire(&v, RW, Duration::ZERO).unwrap();
    assert_eq!(
        refused(b.acquire(&v, RO, Duration::ZERO)),
        (RO, RW, "alpha".into())
    );
}
