//! The lease's promise — a volume is never used from two agents while one of them writes it —
//! under a nemesis, the way distributed systems are tested.
//!
//! Three agents, each a succession of `dvdi run` processes with the real ZooKeeper coordinator
//! (its agent name, work dir and proxies its own), reach a three-server ensemble through one
//! proxy per member, and compete for two volumes on shared storage: a `local` volume under one
//! shared root (leased through `lease_drivers`) and a volume of a global-scope plugin (leased by
//! its scope) — read-write and read-only users mixed. Each hold's command is a writer process
//! (this test binary again, [`nemesis_writer`]) appending `agent mode hold sequence
//! CLOCK_MONOTONIC-ns` records every few milliseconds until its hold ends or it is fenced:
//! read-write holders to a log on the volume, read-only ones (whose volume is mounted read-only)
//! read the volume and keep their records in a log beside it.
//!
//! Meanwhile a seeded random schedule (schedule.rs) injects faults, alone and overlapping: an
//! agent's ZooKeeper traffic blackholed and healed, an agent's process paused (its writer keeps
//! running) or SIGKILLed and restarted, the ensemble's leader killed and restarted, a server
//! paused, a slow plugin, simultaneous starts. Afterwards the checker (check.rs) finds every
//! place where a read-write holder's records interleave with another agent's and prints a
//! table per fault kind: faults injected, hand-overs, records checked, violations, the largest
//! overlap.
//!
//! Asserted: no violation, except one that involves an agent process paused or killed around it
//! (the README's stated limit: an agent that does not run cannot fence). Those are measured and
//! reported beside the session timeout.
//!
//! `NEMESIS_SEED=<n>` replays a schedule (every run prints its seed), `NEMESIS_SECS=<n>` sets its
//! length (60 s by default). The long run in BENCHMARKS.md:
//! `NEMESIS_SECS=1200 cargo test --all-features --test nemesis -- --nocapture`.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod check;
mod cluster;
mod schedule;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agents::Agents;
use check::Record;
use cluster::Cluster;
use schedule::Nemesis;
use support::host::{mounts_under, PROCESS_MOUNTINFO};
use support::zookeeper::ZkEnsemble;

/// The agents competing.
const AGENTS: usize = 3;

/// The ensemble's size.
const SERVERS: usize = 3;

/// Every agent's ZooKeeper session timeout, in seconds.
const SESSION_SECS: u64 = 2;

/// How long a `dvdi run` waits for a lease held elsewhere before it gives up: longer than a
/// session, so that an agent is often waiting when a cut-off holder's session expires.
const LEASE_WAIT_SECS: u64 = 2 * SESSION_SECS;

/// How often a writer appends a record.
const WRITE_EVERY: Duration = Duration::from_millis(3);

/// The schedule's length unless `NEMESIS_SECS` says otherwise.
const DEFAULT_SECS: u64 = 60;

/// How long the test waits for the agents to finish their last hold once the schedule ended
/// before it fails (never reached when the code works; a bound, not a measurement).
const BOUND: Duration = Duration::from_secs(120);

/// The environment variable that makes this binary a writer, with its job as JSON.
const WRITER_JOB: &str = "NEMESIS_WRITER";

/// CLOCK_MONOTONIC now, in ns: the clock every writer and the nemesis stamp their events with.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).expect("monotonic seconds") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("monotonic ns")
}

/// A small seeded generator (SplitMix64): the schedule's only source of chance, so a seed
/// replays it.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for party `n` (the nemesis, each agent).
    fn fork(&self, n: u64) -> Rng {
        let mut r = Rng(self.0 ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number from `lo` to `hi`, both included.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A duration from `lo` to `hi`, to the millisecond.
    fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.between(
            u64::try_from(lo.as_millis()).expect("ms"),
            u64::try_from(hi.as_millis()).expect("ms"),
        ))
    }
}

/// The seed from `NEMESIS_SEED`, or a fresh one.
fn seed() -> u64 {
    match std::env::var("NEMESIS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("NEMESIS_SEED={s:?} is not a number: give a printed seed")),
        Err(_) => monotonic_ns() ^ u64::from(std::process::id()).rotate_left(32),
    }
}

/// The schedule's length from `NEMESIS_SECS`.
fn schedule_secs() -> u64 {
    match std::env::var("NEMESIS_SECS") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            panic!("NEMESIS_SECS={s:?} is not a number of seconds (e.g. 60 or 1200)")
        }),
        Err(_) => DEFAULT_SECS,
    }
}

#[test]
fn no_agent_uses_a_volume_while_another_writes_it_under_a_nemesis() {
    let (seed, secs) = (seed(), schedule_secs());
    let replay = format!(
        "NEMESIS_SEED={seed} NEMESIS_SECS={secs} cargo test --all-features --test nemesis -- --nocapture"
    );
    println!("nemesis: seed {seed}, {secs} s schedule; replay with: {replay}");
    let mut zk = ZkEnsemble::start(SERVERS);
    let cluster = Cluster::new(&zk, AGENTS);
    let agents = Agents::new(AGENTS);
    let started = Instant::now();
    let t0 = monotonic_ns();
    let faults = std::thread::scope(|s| {
        let _abort = agents.abort_on_unwind();
        let root = Rng::new(seed);
        for i in 0..AGENTS {
            let (agents, cluster) = (&agents, &cluster);
            let rng = root.fork(1 + i as u64);
            s.spawn(move || agents.run(cluster, i, rng));
        }
        let faults =
            Nemesis::new(&cluster, &mut zk, &agents, root.fork(0)).run(Duration::from_secs(secs));
        agents.finish(BOUND);
        faults
    });
    let elapsed = started.elapsed();
    for i in 0..AGENTS {
        agents.gc(&cluster, i);
    }
    assert_eq!(
        mounts_under(PROCESS_MOUNTINFO, cluster.root()),
        [],
        "mounts left on the host"
    );

    let (volumes, torn): (Vec<Vec<Record>>, Vec<usize>) = (0..cluster::VOLUMES.len())
        .map(|v| cluster.records(v))
        .unzip();
    let session = Duration::from_secs(SESSION_SECS);
    let report = check::check(&volumes, &faults, 2 * schedule::ns(session));
    let longest_pause = faults
        .iter()
        .filter(|f| f.kind == check::Kind::AgentPaused)
        .map(|f| f.end - f.start)
        .max()
        .unwrap_or(0);
    let table = report.table(|k| match k {
        check::Kind::AgentPaused => format!(
            "session {SESSION_SECS} s; pauses up to {} ms",
            check::ms(longest_pause)
        ),
        _ => format!("session {SESSION_SECS} s"),
    });
    println!(
        "nemesis: seed {seed}: {:.0} s, {} faults ({} overlapping another), {AGENTS} agents, \
         {SERVERS} servers\n{table}\nholds by outcome: {}\ntorn records (a writer killed while \
         writing): {}",
        elapsed.as_secs_f64(),
        faults.len(),
        schedule::overlapping(&faults),
        agents.outcomes(),
        torn.iter().sum::<usize>()
    );
    let described = |f: &check::Finding| {
        let v = &f.violation;
        let hold = |h: &check::Hold| {
            let mode = if h.rw { "rw" } else { "ro" };
            format!("{} {mode} hold {}", Cluster::agent_name(h.agent), h.hold)
        };
        format!(
            "{}: {} and {}: {} ms of overlap from +{} ms; around: {:?}",
            cluster::VOLUMES[f.volume].1,
            hold(&v.earlier),
            hold(&v.later),
            check::ms(v.overlap()),
            check::ms(v.from.saturating_sub(t0)),
            f.kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
        )
    };
    let both_rw = report
        .findings
        .iter()
        .filter(|f| f.violation.earlier.rw && f.violation.later.rw)
        .count();
    println!(
        "violations: {} read-write against read-only, {both_rw} read-write against read-write",
        report.findings.len() - both_rw
    );
    for f in &report.findings {
        println!("violation on {}", described(f));
    }
    // Something was checked: agents took turns on the volumes.
    assert!(
        report.total.hand_overs > 0,
        "no hand-over happened (seed {seed}): nothing was checked\n{table}\nholds by outcome: {}",
        agents.outcomes()
    );
    let unexcused = report.unexcused();
    assert!(
        unexcused.is_empty(),
        "{} violation(s) of the lease with only asserted faults or none around (seed {seed}; \
         replay: {replay}; the table is above):\n{}",
        unexcused.len(),
        unexcused
            .iter()
            .map(|f| described(f))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The writer a hold runs as its command (not a test on its own): appends records until its
/// hold ends; `dvdi` kills it when it is fenced.
#[test]
#[ignore = "the writer process of the nemesis test"]
fn nemesis_writer() {
    let Ok(job) = std::env::var(WRITER_JOB) else {
        return;
    };
    let job: serde_json::Value = serde_json::from_str(&job).expect("writer job JSON");
    let text = |k: &str| job[k].as_str().expect("writer job field").to_owned();
    let number = |k: &str| job[k].as_u64().expect("writer job field");
    let volume = PathBuf::from(text("volume"));
    let rw = job["rw"].as_bool().expect("writer job field");
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(text("log"))
        .expect("open the log");
    let end = Instant::now() + Duration::from_millis(number("hold_ms"));
    for seq in 0.. {
        if !rw {
            std::fs::read_dir(&volume).expect("read the volume");
        }
        let line = Record {
            agent: usize::try_from(number("agent")).expect("agent"),
            rw,
            hold: number("hold"),
            seq,
            ns: monotonic_ns(),
        }
        .entry();
        // One write per record: appends of a few bytes to a local file are never interleaved.
        let n = log.write(line.as_bytes()).expect("append a record");
        assert_eq!(n, line.len(), "a record in one write");
        if Instant::now() >= end {
            break;
        }
        std::thread::sleep(WRITE_EVERY);
    }
}

/// The checker's definitions on records made up for it: what it must find, and what it must
/// let pass.
#[test]
fn the_checker_finds_interleaved_holds_and_nothing_else() {
    use check::{check, Fault, Kind};
    let rec = |agent, rw, hold, ns| Record {
        agent,
        rw,
        hold,
        seq: 0,
        ns,
    };
    let ms = |n: u64| n * 1_000_000;
    let volume = vec![
        // Agent 0 writes 0–100 ms; agent 1 reads inside it (a violation, 20 ms of overlap).
        rec(0, true, 1, ms(0)),
        rec(0, true, 1, ms(100)),
        rec(1, false, 1, ms(80)),
        rec(1, false, 1, ms(150)),
        // Agents 1 and 2 read together: allowed. Agent 1 reads again after: its own, allowed.
        rec(2, false, 1, ms(160)),
        rec(2, false, 1, ms(170)),
        rec(1, false, 2, ms(165)),
        // Agent 2 writes after everyone: a hand-over, no violation.
        rec(2, true, 2, ms(200)),
        rec(2, true, 2, ms(300)),
        // Agent 0 writes wholly inside agent 2's read-write span: a violation.
        rec(0, true, 2, ms(250)),
    ];
    let faults = [
        Fault {
            kind: Kind::AgentPaused,
            agent: Some(0),
            volume: None,
            start: ms(240),
            end: ms(260),
        },
        Fault {
            kind: Kind::Partition,
            agent: Some(2),
            volume: None,
            start: ms(50),
            end: ms(60),
        },
    ];
    let report = check(&[volume], &faults, ms(5));
    let found: Vec<(usize, usize, u64)> = report
        .findings
        .iter()
        .map(|f| {
            let v = f.violation;
            (v.earlier.agent, v.later.agent, v.overlap())
        })
        .collect();
    assert_eq!(found, [(0, 1, ms(20)), (2, 0, 0)]);
    // The first has no fault around (the partition of agent 2 ended 20 ms before and does not
    // involve agents 0 and 1); the second has agent 0's pause around it, which excuses it.
    assert_eq!(report.findings[0].kinds, []);
    assert_eq!(report.findings[1].kinds, [Kind::AgentPaused]);
    assert_eq!(report.unexcused().len(), 1);
    assert_eq!(report.quiet.violations, 1);
    assert_eq!(report.by_kind[&Kind::AgentPaused].violations, 1);
    assert_eq!(report.total.records, 10);
    // Hand-overs: 0→1 (rw, ro), 1→2 (ro, rw), 2→0 (rw, rw); 2→1 and 1→2 among readers are not.
    assert_eq!(report.total.hand_overs, 3);
    // Two of them overlapped; the third kept 35 ms (agent 1 read until 165, agent 2 wrote from
    // 200).
    assert_eq!(report.total.closest, Some(ms(35)));
}

/// The partition the nemesis uses, on a plain echo server: a blackholed proxy keeps its
/// connections open and passes nothing (old connections' bytes, new connections) until healed,
/// then delivers what waited, in order.
#[test]
fn the_proxy_holds_traffic_while_blackholed_and_delivers_it_when_healed() {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap().to_string();
    let echo = std::thread::spawn(move || {
        let echoes: Vec<_> = upstream
            .incoming()
            .take(2)
            .map(|conn| {
                let mut conn = conn.unwrap();
                let mut from = conn.try_clone().unwrap();
                std::thread::spawn(move || std::io::copy(&mut from, &mut conn))
            })
            .collect();
        for e in echoes {
            let _ = e.join();
        }
    });
    let proxy = support::zookeeper::ZkProxy::to(&addr);
    let read_one = |s: &mut TcpStream| {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map(|()| b[0])
    };
    let mut before = TcpStream::connect(proxy.address()).unwrap();
    before.write_all(b"1").unwrap();
    assert_eq!(read_one(&mut before).unwrap(), b'1');

    proxy.blackhole();
    before.write_all(b"2").unwrap();
    let mut during = TcpStream::connect(proxy.address()).unwrap();
    during.write_all(b"3").unwrap();
    for s in [&mut before, &mut during] {
        // Neither an answer nor a close: the read times out.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let e = read_one(s).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        s.set_read_timeout(None).unwrap();
    }

    proxy.heal();
    assert_eq!(read_one(&mut before).unwrap(), b'2');
    assert_eq!(read_one(&mut during).unwrap(), b'3');
    drop((before, during, proxy));
    echo.join().unwrap();
}

/// A writer killed in the middle of a record leaves its start; the record after it is whole.
#[test]
fn a_torn_record_is_counted_and_the_next_one_kept() {
    let rec = |agent, seq| Record {
        agent,
        rw: true,
        hold: 125,
        seq,
        ns: 5_203_542_691_170 + seq,
    };
    let torn = rec(0, 22).entry();
    let text = [
        rec(0, 21).entry(),
        torn[..torn.len() / 2].to_owned(),
        rec(2, 0).entry(),
    ]
    .concat();
    assert_eq!(check::parse_log(&text), (vec![rec(0, 21), rec(2, 0)], 1));
    // Cut just before its closing `;`, it is still torn (its time may be cut short).
    let text = [torn[..torn.len() - 1].to_owned(), rec(2, 0).entry()].concat();
    assert_eq!(check::parse_log(&text), (vec![rec(2, 0)], 1));
}
