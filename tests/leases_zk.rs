//! Exclusive volumes across agents, end to end against a real ZooKeeper (Debian's package, a
//! server of each test's own on a loopback port). Two "agents" are two processes with their own
//! work dir and agent name, the same ZooKeeper and the same storage: a `local` driver whose root
//! both see (leased through `lease_drivers`), a plugin of the test's own that says
//! `Scope: global`, and the real easyfuse plugin. The agents are `dvdi run` processes, and — for
//! the agent that is SIGKILLed with a live container — a child process holding a Mesos
//! container's reference, recovered afterwards by an isolator in the test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::config::Config;
use mesos_dvdi::isolator::{Isolator, KnownContainer};
use mesos_dvdi::mount::Host;
use mesos_dvdi::state::{ContainerId, Owner, Store};
use support::isolator::{recorded_in, text};
use support::plugin::{memory_plugin, TestPlugin};
use support::zookeeper::ZkServer;

/// ZooKeeper session timeout of every agent here, in seconds.
const SESSION_SECS: u64 = 2;

/// How long a test waits for something that must happen before it fails (never reached when
/// the code works; a bound, not a measurement).
const BOUND: Duration = Duration::from_secs(120);

/// One ZooKeeper, shared storage, and the agents' directories.
struct Cluster {
    zk: ZkServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["shared", "plugins", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self {
            zk: ZkServer::start(),
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The module parameters of agent `name`.
    fn params(&self, name: &str, lease_wait_secs: u64) -> Vec<(String, String)> {
        [
            ("work_dir", self.path(&format!("{name}/work"))),
            ("local_root", self.path("shared")),
            ("loop_root", self.path(&format!("{name}/loop"))),
            ("plugin_dirs", self.path("plugins")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .chain(
            [
                ("default_driver", "local".to_owned()),
                ("coordination", format!("zk://{}/dvdi", self.zk.address())),
                ("agent_name", name.to_owned()),
                ("lease_drivers", "local,easyfuse".to_owned()),
                ("lease_session_timeout_secs", SESSION_SECS.to_string()),
                ("lease_wait_secs", lease_wait_secs.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        )
        .collect()
    }

    /// `dvdi` as agent `name` (through `--config`, the same parser as the module's), whose work
    /// dir exists, as on an installed agent (dvdi notes on stderr a work dir it had to create).
    fn dvdi(&self, name: &str, lease_wait_secs: u64) -> Command {
        std::fs::create_dir_all(self.path(&format!("{name}/work"))).unwrap();
        let file = self.path(&format!("{name}-{lease_wait_secs}.json"));
        let json: serde_json::Map<String, serde_json::Value> = self
            .params(name, lease_wait_secs)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        std::fs::write(&file, serde_json::Value::Object(json).to_string()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dvdi"));
        cmd.arg("--config").arg(file);
        cmd
    }

    /// `dvdi run` as agent `name` with `env`, before its `-- CMD`.
    fn dvdi_run(&self, name: &str, lease_wait_secs: u64, env: &[&str]) -> Command {
        let mut cmd = self.dvdi(name, lease_wait_secs);
        cmd.arg("run");
        for e in env {
            cmd.args(["-e", e]);
        }
        cmd
    }

    /// `dvdi run` as agent `name` with `env`, running `true`; its output.
    fn run(&self, name: &str, lease_wait_secs: u64, env: &[&str]) -> Output {
        self.dvdi_run(name, lease_wait_secs, env)
            .args(["--", "true"])
            .output()
            .unwrap()
    }

    /// `dvdi run` as agent `name`, holding its volumes until [`Running::release`].
    fn start(&self, name: &str, lease_wait_secs: u64, env: &[&str]) -> Running {
        let mut child = self
            .dvdi_run(name, lease_wait_secs, env)
            .args(["--", "sh", "-c", "echo ready; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let err = child.stderr.take().unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut rest);
            panic!("agent {name}: the command did not start: {rest}");
        }
        Running {
            child: Some(child),
            _out: out,
            err: Some(err),
        }
    }

    /// What `dvdi leases --json` says: (driver, name, mode, agent) of each lease.
    fn leases(&self) -> Vec<(String, String, String, String)> {
        let out = self
            .dvdi("observer", 1)
            .args(["leases", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["volume"]["driver"].as_str().unwrap().to_owned(),
                    l["volume"]["name"].as_str().unwrap().to_owned(),
                    l["mode"].as_str().unwrap().to_owned(),
                    l["holder"]["agent"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// A `dvdi run` holding its volumes.
struct Running {
    child: Option<Child>,
    _out: BufReader<ChildStdout>,
    err: Option<ChildStderr>,
}

impl Running {
    /// Lets the command end; dvdi's exit status and stderr.
    fn release(mut self) -> (i32, String) {
        let mut child = self.child.take().unwrap();
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        self.finish(child)
    }

    /// Waits (up to [`BOUND`]) for dvdi to end on its own; its exit status and stderr.
    fn ends_by_itself(mut self) -> (i32, String) {
        let child = self.child.take().unwrap();
        self.finish(child)
    }

    fn finish(&mut self, mut child: Child) -> (i32, String) {
        let mut err = self.err.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            // A first run's note that it created the agent's work dir is not a complaint.
            let text = text
                .lines()
                .filter(|l| !l.starts_with("dvdi: note: created "))
                .map(|l| format!("{l}\n"))
                .collect::<String>();
            let code = child.wait().unwrap().code().unwrap_or(-1);
            let _ = tx.send((code, text));
        });
        rx.recv_timeout(BOUND).unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
            panic!("dvdi (pid {pid}) did not end within {BOUND:?}")
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const RW: &[&str] = &["DVDI_VOLUME_NAME=ledger"];
const RO: &[&str] = &["DVDI_VOLUME_NAME=ledger", "DVDI_VOLUME_READONLY=true"];

#[test]
fn read_write_on_a_second_agent_is_refused_naming_the_holder() {
    let c = Cluster::new();
    let a = c.start("agent-a", 1, RW);
    assert_eq!(
        c.leases(),
        [(
            "local".into(),
            "ledger".into(),
            "read_write".into(),
            "agent-a".into()
        )]
    );
    let out = c.run("agent-b", 1, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("volume \"ledger\" (driver \"local\"): read-write lease refused: held read-write by agent \"agent-a\""),
        "{err}"
    );
    assert!(err.contains(" since 20"), "names since when: {err}");
    // `dvdi status` as agent a: connected, and the lease it holds.
    let out = c.dvdi("agent-a", 1).arg("status").output().unwrap();
    let status = text(&out);
    assert!(out.status.success(), "{status}");
    assert!(
        status.contains("as agent \"agent-a\": connected (session 0x")
            && status.contains("1 lease(s) held by this agent"),
        "{status}"
    );
    assert!(
        status.contains("ledger") && status.contains("rw"),
        "{status}"
    );
    let (code, err) = a.release();
    assert_eq!(code, 0, "{err}");
    // Nothing but the note that this first run made the agent's work dir.
    assert!(
        err.lines().all(|l| l.starts_with("dvdi: note: created ")),
        "{err}"
    );
    assert!(c.leases().is_empty(), "released after the run");
}

#[test]
fn read_only_uses_share_and_exclude_read_write_both_ways() {
    let c = Cluster::new();
    let a = c.start("agent-a", 1, RO);
    let b = c.start("agent-b", 1, RO);
    let modes: Vec<(String, String)> = c.leases().into_iter().map(|l| (l.2, l.3)).collect();
    assert_eq!(
        modes,
        [
            ("read_only".to_owned(), "agent-a".to_owned()),
            ("read_only".to_owned(), "agent-b".to_owned())
        ]
    );
    let out = c.run("agent-c", 1, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        text(&out).contains("held read-only by agent"),
        "{}",
        text(&out)
    );
    a.release();
    b.release();

    let w = c.start("agent-c", 1, RW);
    let out = c.run("agent-a", 1, RO);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        text(&out).contains("read-only lease refused: held read-write by agent \"agent-c\""),
        "{}",
        text(&out)
    );
    w.release();
}

#[test]
fn a_waiting_agent_gets_the_volume_once_the_holder_releases_it() {
    let c = Cluster::new();
    let a = c.start("agent-a", 1, RW);
    let mut waiting = c
        .dvdi_run("agent-b", 600, RW)
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // dvdi says each second what it waits for: once it has, it is waiting for the lease.
    let mut err = BufReader::new(waiting.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("attaching ledger via local"), "{line}");
    assert_eq!(a.release().0, 0);
    assert!(waiting.wait().unwrap().success());
}

#[test]
fn a_lease_wait_names_the_holder_and_ctrl_c_ends_it_leaving_nothing() {
    let c = Cluster::new();
    let a = c.start("agent-a", 1, RW);
    let mut child = c
        .dvdi_run("agent-b", 600, RW)
        .args(["--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait().unwrap().code()));
    // Killed if an assertion fails first, so no agent is left waiting.
    struct Kill(nix::unistd::Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::SIGKILL);
        }
    }
    let guard = Kill(pid);
    // The progress line (each second) says whose lease it waits for (a line about ZooKeeper
    // may come first while the session comes up).
    let mut seen = String::new();
    let wanted = "waiting for the read-write lease of volume \"ledger\" (driver \"local\"): held read-write by agent \"agent-a\"";
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
        if line.starts_with("dvdi: attaching ledger via local…") && line.contains("lease") {
            assert!(line.contains(wanted), "{line}");
            break;
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    let code = rx
        .recv_timeout(BOUND)
        .expect("the interrupted agent did not end");
    std::mem::forget(guard);
    std::io::Read::read_to_string(&mut err, &mut seen).unwrap();
    assert_eq!(code, Some(128 + 2), "{seen}");
    assert!(
        seen.lines().last().unwrap_or_default().contains(
            "dvdi: interrupted by SIGINT while preparing the volumes; nothing was left attached"
        ) && seen.contains("interrupted while waiting for its read-write lease (held read-write by agent \"agent-a\""),
        "{seen}"
    );
    // Agent b holds nothing and recorded nothing; a keeps its lease.
    assert_eq!(
        c.leases(),
        [(
            "local".to_owned(),
            "ledger".to_owned(),
            "read_write".to_owned(),
            "agent-a".to_owned()
        )]
    );
    assert!(!recorded_in(&c.path("agent-b/work"), "local", "ledger"));
    assert_eq!(a.release().0, 0);
}

/// A plugin of the test's own (`Scope: global`, so leased without `lease_drivers`) whose Unmount
/// waits for the test's word, and notes what ZooKeeper showed while it waited.
#[test]
fn the_lease_is_released_only_after_the_backend_unmount() {
    let c = Cluster::new();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let (seen_tx, seen_rx) = mpsc::channel::<()>();
    let seen_tx = Mutex::new(seen_tx);
    let inner = memory_plugin(c.path("netfs-volumes"));
    let _plugin = TestPlugin::unix(&c.path("plugins/netfs.sock"), move |req| {
        if req.path == "/VolumeDriver.Unmount" {
            let _ = seen_tx.lock().unwrap().send(());
            // The plugin's own slow work (a detach), released by the test.
            let _ = go_rx.lock().unwrap().recv();
        }
        inner(req)
    });
    let env = &["DVDI_VOLUME_DRIVER=netfs", "DVDI_VOLUME_NAME=ledger"];
    let a = c.start("agent-a", 1, env);
    let releasing = std::thread::spawn(move || a.release());
    seen_rx.recv_timeout(BOUND).expect("agent a unmounts");
    // Unmounting: the lease is still a's, and b is refused.
    assert_eq!(
        c.leases(),
        [(
            "netfs".into(),
            "ledger".into(),
            "read_write".into(),
            "agent-a".into()
        )]
    );
    let out = c.run("agent-b", 1, env);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("held read-write by agent \"agent-a\""));
    go_tx.send(()).unwrap();
    assert_eq!(releasing.join().unwrap().0, 0);
    assert!(c.leases().is_empty());
    // Agent b's unmount is let through at once.
    go_tx.send(()).unwrap();
    let out = c.run("agent-b", 1, env);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn zookeeper_down_refuses_leased_volumes_at_prepare_and_not_others() {
    let mut c = Cluster::new();
    c.zk.stop();
    let out = c.run("agent-a", 1, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("volume \"ledger\" (driver \"local\"): cannot take a lease: not connected to ZooKeeper at zk://127.0.0.1:"),
        "{err}"
    );
    assert!(!recorded_in(&c.path("agent-a/work"), "local", "ledger"));
    let out = c.dvdi("agent-a", 1).arg("status").output().unwrap();
    assert!(
        text(&out).contains(
            "as agent \"agent-a\": NOT CONNECTED: not connected to ZooKeeper at zk://127.0.0.1:"
        ),
        "{}",
        text(&out)
    );
    // A volume of a driver that is not leased works without ZooKeeper.
    let mut cmd = c.dvdi("agent-a", 1);
    let out = support::host::in_private_mount_ns(|| {
        cmd.args([
            "run",
            "-e",
            "DVDI_VOLUME_DRIVER=loop",
            "-e",
            "DVDI_VOLUME_NAME=scratch",
            "--",
            "true",
        ])
        .output()
        .unwrap()
    });
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn zookeeper_stopped_fences_the_running_command() {
    let mut c = Cluster::new();
    let a = c.start("agent-a", 1, RW);
    c.zk.kill();
    let (code, err) = a.ends_by_itself();
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("volume \"ledger\" (driver \"local\"): lease lost:"),
        "{err}"
    );
    assert!(err.contains("the command was stopped"), "{err}");
}

#[test]
fn both_agents_through_the_real_easyfuse_plugin() {
    let c = Cluster::new();
    let source = c.path("fuse-source");
    std::fs::create_dir_all(&source).unwrap();
    support::host::in_private_mount_ns(|| {
        let _plugin = support::easyfuse::Easyfuse::start(&c.path("plugins"), c.dir.path());
        let _ready = support::easyfuse::wait_ready(&c.path("plugins"));
        let opts = format!("DVDI_VOLUME_OPTS=device=bindfs#{}", source.display());
        let env = &[
            "DVDI_VOLUME_DRIVER=easyfuse",
            "DVDI_VOLUME_NAME=fusevol",
            &opts,
        ];
        let a = c.start("agent-a", 1, env);
        let out = c.run("agent-b", 1, env);
        assert_eq!(out.status.code(), Some(125), "{}", text(&out));
        assert!(
            text(&out).contains("volume \"fusevol\" (driver \"easyfuse\"): read-write lease refused: held read-write by agent \"agent-a\""),
            "{}",
            text(&out)
        );
        assert_eq!(a.release().0, 0);
        let out = c.run("agent-b", 1, env);
        assert!(out.status.success(), "{}", text(&out));
    });
}

/// The entry point of the agent processes SIGKILLed below (not a test on its own): prepares a
/// Mesos container's volume with the parameters of `DVDI_LEASE_JOB`, says "prepared", then waits
/// for stdin.
#[test]
#[ignore = "child process of the lease tests"]
fn lease_agent_child() {
    let Ok(job) = std::env::var("DVDI_LEASE_JOB") else {
        return;
    };
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    let params: Vec<(String, String)> = serde_json::from_value(job["params"].clone()).unwrap();
    let config = Config::from_params(&params).unwrap();
    let iso = agent_isolator(config);
    iso.recover(&[], &[]).unwrap();
    let sandbox = PathBuf::from(job["sandbox"].as_str().unwrap());
    let input = mesos_dvdi::isolator::ContainerInput {
        env: vec![(b"DVDI_VOLUME_NAME".to_vec(), b"ledger".to_vec())],
        sandbox,
        ..Default::default()
    };
    iso.prepare("c1", Owner::Mesos, &input).unwrap();
    println!("prepared");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn agent_isolator(config: Config) -> Isolator {
    let registry = Registry::new(config.clone(), Arc::new(Host));
    Isolator::open(config, Arc::new(registry)).unwrap()
}

/// Agent a as a process holding container c1's volume, SIGKILLed once it has it (the
/// container lives on, as a Mesos container does when its agent dies).
fn agent_a_killed_with_a_live_container(c: &Cluster) -> Config {
    let params = c.params("agent-a", 1);
    let config = Config::from_params(&params).unwrap();
    let sandbox = c.path("agent-a/sandbox-c1");
    std::fs::create_dir_all(&sandbox).unwrap();
    let job = serde_json::json!({"params": params, "sandbox": sandbox});
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_agent_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env("DVDI_LEASE_JOB", job.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent a's process ended before preparing: {seen}");
        }
        if line.trim() == "prepared" {
            break;
        }
        seen.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    config
}

fn recorded_users(config: &Config) -> Vec<String> {
    Store::open(&config.work_dir)
        .unwrap()
        .scan()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.record.unwrap().users.into_keys().map(|k| k.to_string()))
        .collect()
}

/// The containers an isolator fenced, and why.
type FenceLog = Arc<Mutex<Vec<(String, String)>>>;

fn fence_log(iso: &Isolator) -> FenceLog {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    iso.set_fence_handler(Arc::new(move |id: &ContainerId, why: &str| {
        l.lock().unwrap().push((id.to_string(), why.to_owned()));
    }));
    log
}

#[test]
fn a_killed_agent_loses_its_volume_to_another_and_its_recover_fences_the_container() {
    let c = Cluster::new();
    let config = agent_a_killed_with_a_live_container(&c);
    // Agent b waits out agent a's session and gets the volume.
    let b = c.start("agent-b", 60, RW);

    let a = agent_isolator(config.clone());
    let fenced = fence_log(&a);
    let known = [KnownContainer {
        id: ContainerId::new("c1").unwrap(),
    }];
    let report = a.recover(&known, &[]).unwrap();
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    let fenced = fenced.lock().unwrap().clone();
    assert_eq!(fenced.len(), 1);
    assert_eq!(fenced[0].0, "c1");
    assert!(
        fenced[0].1.contains("held read-write by agent \"agent-b\""),
        "{}",
        fenced[0].1
    );
    // Not unmounted under b: still recorded for c1 until the agent destroys it.
    assert_eq!(recorded_users(&config), ["c1"]);
    a.cleanup("c1").unwrap();
    assert!(recorded_users(&config).is_empty());
    let holders: Vec<String> = c.leases().into_iter().map(|l| l.3).collect();
    assert_eq!(holders, ["agent-b"], "b's lease untouched by a's cleanup");
    assert_eq!(b.release().0, 0);
}

#[test]
fn an_agent_restarted_before_its_session_expired_keeps_its_volume() {
    let c = Cluster::new();
    let config = agent_a_killed_with_a_live_container(&c);
    let a = agent_isolator(config.clone());
    let fenced = fence_log(&a);
    let known = [KnownContainer {
        id: ContainerId::new("c1").unwrap(),
    }];
    let report = a.recover(&known, &[]).unwrap();
    assert!(report.fenced.is_empty(), "{report:?}");
    assert!(fenced.lock().unwrap().is_empty());
    // The lease is this process's now: it outlives the dead process's session.
    let out = c.run("agent-b", SESSION_SECS * 3, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("held read-write by agent \"agent-a\""));
    a.cleanup("c1").unwrap();
    assert!(c.leases().is_empty());
}

/// Agent `name`'s isolator in this process, as the module runs it (Mesos containers), with a
/// log of the containers it fences.
fn module(c: &Cluster, name: &str) -> (Isolator, FenceLog) {
    let config = Config::from_params(&c.params(name, 1)).unwrap();
    let iso = agent_isolator(config);
    let fenced = fence_log(&iso);
    (iso, fenced)
}

/// Prepares Mesos container `id` on the read-write volume `ledger` in `iso`.
fn prepare_ledger(c: &Cluster, iso: &Isolator, id: &str) {
    let sandbox = c.path(&format!("sandbox-{id}"));
    std::fs::create_dir_all(&sandbox).unwrap();
    let input = mesos_dvdi::isolator::ContainerInput {
        env: vec![(b"DVDI_VOLUME_NAME".to_vec(), b"ledger".to_vec())],
        sandbox,
        ..Default::default()
    };
    iso.prepare(id, Owner::Mesos, &input).unwrap();
}

/// The agents `dvdi leases` names as holders of `ledger`.
fn ledger_holders(c: &Cluster) -> Vec<String> {
    c.leases()
        .into_iter()
        .filter(|l| l.1 == "ledger")
        .map(|l| l.3)
        .collect()
}

#[test]
fn two_runs_of_one_agent_share_its_lease_and_outlive_each_other() {
    let c = Cluster::new();
    let first = c.start("agent-a", 1, RW);
    // A second run of the same agent joins the volume the first one holds.
    let out = c.run("agent-a", 1, RW);
    assert!(out.status.success(), "{}", text(&out));
    let second = c.start("agent-a", 1, RW);
    // The first one is killed (its user stays recorded, its session lives on a while): the
    // second one keeps the agent's lease, and a third one still joins.
    drop(first);
    let out = c.run("agent-a", 1, RW);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.run("agent-b", 1, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("held read-write by agent \"agent-a\""));
    assert_eq!(second.release(), (0, String::new()));
}

#[test]
fn the_module_joins_a_volume_a_dvdi_run_of_its_agent_holds_and_the_reverse() {
    let c = Cluster::new();
    let (module, fenced) = module(&c, "agent-a");

    // dvdi run first, the module joins: neither is fenced, and the agent's lease outlives the
    // run while the module's container uses the volume.
    let run = c.start("agent-a", 1, RW);
    prepare_ledger(&c, &module, "c1");
    assert_eq!(run.release(), (0, String::new()));
    assert_eq!(ledger_holders(&c), ["agent-a"]);
    let out = c.run("agent-b", 1, RW);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    module.cleanup("c1").unwrap();
    assert!(ledger_holders(&c).is_empty());

    // The module first, a dvdi run joins (and is not fenced).
    prepare_ledger(&c, &module, "c2");
    let out = c.run("agent-a", 1, RW);
    assert!(out.status.success(), "{}", text(&out));
    module.cleanup("c2").unwrap();
    assert!(ledger_holders(&c).is_empty());
    assert!(
        fenced.lock().unwrap().is_empty(),
        "{:?}",
        fenced.lock().unwrap()
    );
}

#[test]
fn the_last_process_of_the_agent_to_unmount_gives_the_lease_back_whoever_took_it() {
    let c = Cluster::new();
    let (module, fenced) = module(&c, "agent-a");

    // The module takes the lease; a dvdi run joins; the module's container ends first; the
    // run does the last unmount, and the agent's lease is given back whole.
    prepare_ledger(&c, &module, "c1");
    let run = c.start("agent-a", 1, RW);
    module.cleanup("c1").unwrap();
    assert_eq!(ledger_holders(&c), ["agent-a"], "the run still uses it");
    assert_eq!(run.release(), (0, String::new()));
    assert!(ledger_holders(&c).is_empty());
    let out = c.run("agent-b", 1, RW);
    assert!(out.status.success(), "{}", text(&out));

    // The module recovers while only a dvdi run uses the volume: the run holds the lease, the
    // module takes none, and the run's last unmount gives it back.
    let run = c.start("agent-a", 1, RW);
    let (restarted, _) = self::module(&c, "agent-a");
    restarted.recover(&[], &[]).unwrap();
    assert_eq!(run.release(), (0, String::new()));
    assert!(ledger_holders(&c).is_empty());
    assert!(
        fenced.lock().unwrap().is_empty(),
        "{:?}",
        fenced.lock().unwrap()
    );
}
