//! A real ZooKeeper server for tests and benches (Debian's `zookeeper` package), on a free
//! loopback port with its own data directory; a proxy that cuts one client off from it (closing
//! its connections, or blackholing them); a small synchronous client to look at (and tamper
//! with) its nodes; and an ensemble of several such servers ([`ZkEnsemble`]) whose members a
//! test can kill, restart and pause.
//!
//! `ZkServer::start()` runs `java -cp /usr/share/java/zookeeper.jar QuorumPeerMain <cfg>` (the
//! jar's manifest names its dependencies) with a 100 ms tick so that sessions can expire in
//! seconds, and returns once the server answers `ruok` with `imok` and `srvr` with its mode.
//! Drop kills and reaps it, and the JVM also dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), so no server is left behind even when a test aborts. Each server costs
//! about half a second of JVM start; every test starts its own, so it may stop or freeze it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesos_dvdi::coord::zk::ZkTarget;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zookeeper_client as zk;

/// Where Debian's `zookeeper` package puts the server's jar.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// How long a server may take to serve after its JVM starts.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// ZooKeeper's tick in these servers: session timeouts are multiples of it.
pub const TICK_MS: u64 = 100;

/// A ZooKeeper server of the test's own.
pub struct ZkServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    paused: bool,
}

impl ZkServer {
    /// Starts a server on a free loopback port and waits until it serves. Panics (with the
    /// server's output) when it cannot.
    pub fn start() -> ZkServer {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "{ZOOKEEPER_JAR} is missing: install Debian's zookeeper package (bash .ci/setup)"
        );
        let dir = tempfile::Builder::new()
            .prefix("dvdi-zk-")
            .tempdir()
            .expect("temp dir for ZooKeeper");
        std::fs::create_dir(dir.path().join("data")).expect("ZooKeeper data dir");
        let port = free_port();
        let cfg = server_config(&dir.path().join("data"), port);
        std::fs::write(dir.path().join("zoo.cfg"), cfg).expect("write zoo.cfg");
        let mut server = ZkServer {
            dir,
            port,
            child: None,
            paused: false,
        };
        server.launch();
        server
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The coordination target `zk://127.0.0.1:<port><path>`.
    pub fn target(&self, path: &str) -> ZkTarget {
        ZkTarget::parse(&format!("zk://{}{path}", self.address())).expect("test ZooKeeper URL")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many watches the server holds (data and child watches), from `mntr`.
    pub fn watch_count(&self) -> u64 {
        let out = four_letter(self.port, "mntr").unwrap_or_default();
        out.lines()
            .find_map(|l| l.strip_prefix("zk_watch_count\t"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no zk_watch_count in mntr: {out:?}"))
    }

    /// Stops the server (SIGTERM) and reaps it; the data directory stays for `restart`.
    pub fn stop(&mut self) {
        self.end(Signal::SIGTERM);
    }

    /// Kills the server (SIGKILL) and reaps it; the data directory stays for `restart`.
    pub fn kill(&mut self) {
        self.end(Signal::SIGKILL);
    }

    /// Freezes the server (SIGSTOP): clients keep their TCP connection but get no answer.
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            kill(pid_of(c), Signal::SIGSTOP).expect("SIGSTOP ZooKeeper");
            self.paused = true;
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(c) = &self.child {
            kill(pid_of(c), Signal::SIGCONT).expect("SIGCONT ZooKeeper");
        }
        self.paused = false;
    }

    /// Starts the stopped server again on the same port and data directory (its sessions and
    /// nodes survive, as in a real restart).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server still runs");
        self.launch();
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the JVM without waiting for it to serve (an ensemble's members serve only once
    /// a quorum of them runs).
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("ZooKeeper log file");
        let mut cmd = Command::new("java");
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent. The server
        // dies with the thread that started it, even if the test process aborts.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", ZOOKEEPER_JAR])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("ZooKeeper log file"))
            .stderr(log)
            .spawn()
            .expect("run java (Debian's zookeeper package pulls it in)");
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// Probes `ruok` and `srvr` until the server serves, failing at once if the JVM exits.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "ZooKeeper exited ({status}) before serving: {}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            // `ruok` answers as soon as the process listens; `srvr` reports a mode only once the
            // server serves sessions.
            if four_letter(self.port, "ruok").as_deref() == Some("imok")
                && four_letter(self.port, "srvr").is_some_and(|s| s.contains("Mode: "))
            {
                return;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "ZooKeeper did not serve within {} s: {}",
                    READY_WITHIN.as_secs(),
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            // The JVM is starting; a probe costs a connection, so pace them.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn end(&mut self, signal: Signal) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(pid_of(&c), signal);
            if self.paused {
                let _ = kill(pid_of(&c), Signal::SIGCONT);
                self.paused = false;
            }
            let _ = c.wait();
        }
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pid_of(c: &Child) -> Pid {
    Pid::from_raw(i32::try_from(c.id()).expect("pid fits i32"))
}

/// A port that was free a moment ago (the kernel's choice for an ephemeral bind).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Sends a four-letter command and returns the answer, or `None` when the server is not up.
pub fn four_letter(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A TCP relay between clients and a server that a test can cut and restore, or blackhole and
/// heal: a network partition between one client and ZooKeeper, while other clients still reach
/// the server.
pub struct ZkProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

struct ProxyShared {
    upstream: String,
    /// Relaying; when false, new connections are closed at once.
    open: AtomicBool,
    stop: AtomicBool,
    /// Both ends of every relayed connection, to shut them down on `cut`.
    streams: Mutex<Vec<TcpStream>>,
    /// Blackholed: connections stay open but nothing passes either way (bytes and closes are
    /// held, as TCP holds them across a partition) until `heal`.
    blackholed: Mutex<bool>,
    healed: std::sync::Condvar,
}

impl ProxyShared {
    /// Blocks while the proxy is blackholed; false once the proxy is dropped.
    fn pass(&self) -> bool {
        let mut blackholed = self.blackholed.lock().unwrap();
        while *blackholed && !self.stop.load(Ordering::SeqCst) {
            blackholed = self.healed.wait(blackholed).unwrap();
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

impl ZkProxy {
    /// Relays a free loopback port to `server`.
    pub fn start(server: &ZkServer) -> ZkProxy {
        ZkProxy::to(&server.address())
    }

    /// Relays a free loopback port to `upstream` (`host:port`).
    pub fn to(upstream: &str) -> ZkProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_owned(),
            open: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
            blackholed: Mutex::new(false),
            healed: std::sync::Condvar::new(),
        });
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if acceptor_shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !acceptor_shared.open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let shared = Arc::clone(&acceptor_shared);
                std::thread::spawn(move || connect_upstream(client, &shared));
            }
        });
        ZkProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The coordination target through the proxy.
    pub fn target(&self, path: &str) -> ZkTarget {
        ZkTarget::parse(&format!("zk://{}{path}", self.address())).expect("test ZooKeeper URL")
    }

    /// Cuts every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }

    /// Lets nothing through, closing nothing: open connections fall silent (their bytes wait
    /// in the proxy), new ones are accepted and never answered, until `heal`.
    pub fn blackhole(&self) {
        *self.shared.blackholed.lock().unwrap() = true;
    }

    /// Ends a `blackhole`: what waited is delivered, in order, and relaying resumes.
    pub fn heal(&self) {
        *self.shared.blackholed.lock().unwrap() = false;
        self.shared.healed.notify_all();
    }
}

impl Drop for ZkProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.healed.notify_all();
        self.cut();
        // Wake the acceptor so it sees `stop`.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Relays one accepted client: connects to the server once the proxy lets anything through
/// (a connection made during a blackhole reaches nobody until it heals).
fn connect_upstream(client: TcpStream, shared: &Arc<ProxyShared>) {
    let registered = client.try_clone().expect("clone stream");
    shared.streams.lock().unwrap().push(registered);
    if !shared.pass() || !shared.open.load(Ordering::SeqCst) {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(&shared.upstream) else {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    };
    shared
        .streams
        .lock()
        .unwrap()
        .push(server.try_clone().expect("clone stream"));
    relay(&client, &server, shared);
    relay(&server, &client, shared);
}

/// Copies `from` to `to` on a thread until either end closes, holding each chunk (and the
/// close) while the proxy is blackholed.
fn relay(from: &TcpStream, to: &TcpStream, shared: &Arc<ProxyShared>) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone stream"),
        to.try_clone().expect("clone stream"),
    );
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            if !shared.pass() || n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

/// A plain synchronous ZooKeeper client for looking at (and tampering with) the nodes the
/// coordinator writes: a session of its own on a current-thread runtime.
pub struct RawZk {
    rt: tokio::runtime::Runtime,
    client: Option<zk::Client>,
}

impl RawZk {
    /// Connects to `server`.
    pub fn connect(server: &ZkServer) -> RawZk {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(
                zk::Client::connector()
                    .with_session_timeout(Duration::from_secs(10))
                    .connect(&server.address()),
            )
            .expect("connect to the test ZooKeeper");
        RawZk {
            rt,
            client: Some(client),
        }
    }

    fn client(&self) -> &zk::Client {
        self.client.as_ref().expect("client")
    }

    /// This client's session id.
    pub fn session(&self) -> i64 {
        self.client().session_id().0
    }

    /// The children of `path`, sorted; none when it does not exist.
    pub fn children(&self, path: &str) -> Vec<String> {
        let mut c = match self.rt.block_on(self.client().list_children(path)) {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => panic!("list {path}: {e}"),
        };
        c.sort();
        c
    }

    /// The data of `path` as JSON, and the node's ephemeral owner (0 for a persistent node).
    pub fn json(&self, path: &str) -> Option<(serde_json::Value, i64)> {
        match self.rt.block_on(self.client().get_data(path)) {
            Ok((data, stat)) => Some((
                serde_json::from_slice(&data)
                    .unwrap_or_else(|e| panic!("{path}: data is not JSON ({e})")),
                stat.ephemeral_owner,
            )),
            Err(zk::Error::NoNode) => None,
            Err(e) => panic!("get {path}: {e}"),
        }
    }

    /// The ephemeral owner of `path` (0 for a persistent node), or `None` when it does not exist.
    pub fn owner(&self, path: &str) -> Option<i64> {
        match self.rt.block_on(self.client().check_stat(path)) {
            Ok(stat) => stat.map(|s| s.ephemeral_owner),
            Err(e) => panic!("stat {path}: {e}"),
        }
    }

    /// Creates the ephemeral node `path` with `data`, and its persistent parents if missing.
    pub fn create_ephemeral(&self, path: &str, data: &[u8]) {
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        match self
            .rt
            .block_on(self.client().create(path, data, &ephemeral))
        {
            Ok(_) => return,
            Err(zk::Error::NoNode) => {}
            Err(e) => panic!("create {path}: {e}"),
        }
        let parent = &path[..path.rfind('/').expect("absolute path")];
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        self.rt
            .block_on(self.client().mkdir(parent, &persistent))
            .unwrap_or_else(|e| panic!("mkdir {parent}: {e}"));
        self.rt
            .block_on(self.client().create(path, data, &ephemeral))
            .unwrap_or_else(|e| panic!("create {path}: {e}"));
    }

    /// Deletes `path`, whoever owns it.
    pub fn delete(&self, path: &str) {
        self.rt
            .block_on(self.client().delete(path, None))
            .unwrap_or_else(|e| panic!("delete {path}: {e}"));
    }

    /// In one transaction, deletes `path` and creates it again as this session's ephemeral
    /// node with `data`: another agent taking a lease the instant it is freed.
    pub fn replace(&self, path: &str, data: &[u8]) {
        let client = self.client();
        let mut multi = client.new_multi_writer();
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        multi.add_delete(path, None).expect("multi delete");
        multi
            .add_create(path, data, &ephemeral)
            .expect("multi create");
        self.rt
            .block_on(multi.commit())
            .unwrap_or_else(|e| panic!("replace {path}: {e}"));
    }

    /// Blocks until `path` exists (`true`) or not (`false`), on ZooKeeper watches; panics after
    /// `within`.
    pub fn wait_exists(&self, path: &str, exists: bool, within: Duration) {
        let client = self.client();
        let found = self.rt.block_on(async {
            tokio::time::timeout(within, async {
                loop {
                    let (stat, watcher) = client
                        .check_and_watch_stat(path)
                        .await
                        .unwrap_or_else(|e| panic!("watch {path}: {e}"));
                    if stat.is_some() == exists {
                        return;
                    }
                    watcher.changed().await;
                }
            })
            .await
        });
        assert!(
            found.is_ok(),
            "{path} did not {} within {} s",
            if exists { "appear" } else { "go" },
            within.as_secs()
        );
    }
}

impl Drop for RawZk {
    fn drop(&mut self) {
        // Close the session while the runtime still runs, so its ephemeral nodes go at once.
        if let Some(client) = self.client.take() {
            let mut states = client.state_watcher();
            drop(client);
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while !states.peek_state().is_terminated() {
                        states.changed().await;
                    }
                })
                .await;
            });
        }
    }
}

/// The configuration of a server with its data in `data`, serving 127.0.0.1:`port` (an
/// ensemble's member adds its `server.N` lines). Sessions from 2 ticks to 60 s are granted as
/// asked.
fn server_config(data: &Path, port: u16) -> String {
    format!(
        "tickTime={TICK_MS}\n\
         initLimit=20\n\
         syncLimit=10\n\
         dataDir={}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         minSessionTimeout={}\n\
         maxSessionTimeout=60000\n\
         4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
         admin.enableServer=false\n",
        data.display(),
        2 * TICK_MS,
    )
}

/// `n` distinct ports that were free a moment ago (all bound at once, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

impl ZkServer {
    /// The server's role as `srvr` reports it (`leader`, `follower`, `standalone`), or `None`
    /// while it does not serve (stopped, paused, or an ensemble member without a quorum).
    pub fn mode(&self) -> Option<String> {
        if self.child.is_none() || self.paused {
            return None;
        }
        let out = four_letter(self.port, "srvr")?;
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_owned())
    }

    /// Whether the server's process runs (paused or not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A ZooKeeper ensemble of the test's own: `size` servers (`QuorumPeerMain` with
/// `server.N=127.0.0.1:<peer port>:<election port>` lines), each with its own data directory and
/// `myid`, on loopback ports. Its members are [`ZkServer`]s: each can be killed and restarted
/// (on the same ports and data, rejoining the quorum), or paused and resumed; each JVM dies with
/// the thread that started it, and the temp directories go with the ensemble.
pub struct ZkEnsemble {
    members: Vec<ZkServer>,
}

impl ZkEnsemble {
    /// Starts `size` servers and waits until every one serves (a leader was elected and each
    /// follower has joined it).
    pub fn start(size: usize) -> ZkEnsemble {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "{ZOOKEEPER_JAR} is missing: install Debian's zookeeper package (bash .ci/setup)"
        );
        let ports = free_ports(3 * size);
        let servers: String = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| format!("server.{}=127.0.0.1:{}:{}\n", i + 1, p[1], p[2]))
            .collect();
        let mut members: Vec<ZkServer> = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| {
                let dir = tempfile::Builder::new()
                    .prefix("dvdi-zk-ensemble-")
                    .tempdir()
                    .expect("temp dir for ZooKeeper");
                let data = dir.path().join("data");
                std::fs::create_dir(&data).expect("ZooKeeper data dir");
                std::fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("write myid");
                let cfg = server_config(&data, p[0]) + &servers;
                std::fs::write(dir.path().join("zoo.cfg"), cfg).expect("write zoo.cfg");
                ZkServer {
                    dir,
                    port: p[0],
                    child: None,
                    paused: false,
                }
            })
            .collect();
        // All JVMs first: a member serves only once a quorum of them runs.
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_ready();
        }
        ZkEnsemble { members }
    }

    /// How many servers it has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i` (from 0; its `myid` is `i + 1`).
    pub fn member(&self, i: usize) -> &ZkServer {
        &self.members[i]
    }

    /// The client addresses of every member, `127.0.0.1:<port>`.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(ZkServer::address).collect()
    }

    /// `zk://<every member>/<path>`: the URL a client of the whole ensemble uses.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.addresses().join(","))
    }

    /// The coordination target naming every member.
    pub fn target(&self, path: &str) -> ZkTarget {
        ZkTarget::parse(&self.url(path)).expect("test ZooKeeper URL")
    }

    /// The member that leads now, if one does and answers.
    pub fn leader(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.members[i].mode().as_deref() == Some("leader"))
    }

    /// Kills member `i` (SIGKILL) and reaps it; its data stays for `restart`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts the killed member `i` again and waits until it serves (it rejoins the quorum).
    pub fn restart(&mut self, i: usize) {
        self.members[i].restart();
    }

    /// Freezes member `i` (SIGSTOP): its clients and peers keep their connections, unanswered.
    pub fn pause(&mut self, i: usize) {
        self.members[i].pause();
    }

    /// Lets the paused member `i` run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.members[i].resume();
    }
}

impl ZkServer {
    /// Starts a server whose `maxSessionTimeout` is `max`: a session asking for more gets `max`.
    pub fn start_with_max_session_timeout(max: Duration) -> ZkServer {
        let mut server = ZkServer::start();
        server.stop();
        let path = server.dir.path().join("zoo.cfg");
        let cfg = std::fs::read_to_string(&path).expect("read zoo.cfg");
        let cfg: String = cfg
            .lines()
            .map(|l| match l.strip_prefix("maxSessionTimeout=") {
                Some(_) => format!("maxSessionTimeout={}\n", max.as_millis()),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&path, cfg).expect("write zoo.cfg");
        server.restart();
        server
    }
}
