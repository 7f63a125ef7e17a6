//! The ZooKeeper coordinator: leases as ephemeral nodes under `<path>/volumes/<driver>/<name>/`.
//!
//! # Layout (a contract: operators read it with `zkCli.sh`)
//!
//! ```text
//! <path>/volumes/<driver>/<name>/rw            ephemeral: the one read-write holder
//! <path>/volumes/<driver>/<name>/ro-<agent>    ephemeral: one per read-only holding agent
//! ```
//!
//! Each lease node's data is the JSON of [`Holder`] (`{"agent","host","pid","since"}`). The parent
//! nodes are persistent, created as needed and never removed.
//!
//! # Rules
//!
//! A node is this agent's when its data names our `agent_name` and our host. If another session
//! owns it, the holder's pid decides: alive means a sibling process of this agent on this host (a
//! `dvdi run` next to the module), whose lease we share and never touch; dead (or our own pid in an
//! earlier session of this process) means a stale node of a previous process, which we delete
//! (with its version) and replace. A node naming our agent but another host is treated as another
//! agent's: two hosts sharing one agent name must not share a read-write lease.
//!
//! # Choices
//!
//! - A URL without a path (`zk://h:2181`) means the root `/`, as ZooKeeper's own connect strings.
//! - A lease node whose data is not a holder's JSON still counts (it blocks as any holder does)
//!   and is listed by [`Coordinator::leases`] with what is known: the agent from an `ro-<agent>`
//!   name (`?` for `rw`), host `?`, pid 0, and the node's creation time as `since`; a warning is
//!   logged. Driver or volume nodes whose names are not valid names are skipped with a warning.
//! - "Disconnected for longer than the session timeout" is measured from the moment the
//!   connection went silent: the library notices a dead connection after 2/5 of the session
//!   timeout without an answer, so that much is counted before the notice. The server may expire
//!   the session one session timeout after it last heard from us; we give up no later.
//! - After such a disconnection the session is abandoned (its client dropped: if it ever
//!   reconnects, the library closes it) and a new one is started; its nodes, if the server still
//!   has them, are this process's stale nodes and are taken over.
//! - `release` without a live session fails (`Unavailable`) if the lease is held (it stays held
//!   and is reported lost if the session goes), and succeeds if not.
//! - The loss handler runs on the coordination thread: it must return quickly and must not call
//!   the coordinator (such a call fails at once instead of deadlocking).
//!
//! # Threading
//!
//! The client library is async. Its executor (a tokio current-thread runtime) runs on one thread
//! owned by [`ZkCoordinator`]; the trait's methods send a command to it and block on the answer
//! for a bounded time. (The library's socket reactor, `async-io`, keeps its own helper thread.)
//! Nothing async leaves this file.
//!
//! # Must never
//!
//! Report a lease as held without a live session, block a caller past its wait plus a bounded
//! margin, or delete a node of another agent or of a live sibling process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use zookeeper_client as zk;

use super::{
    CoordError, CoordStatus, Coordinator, Holder, Lease, LeaseLoss, LeaseMode, LossHandler,
    LossReason,
};
use crate::spec::{DriverName, VolumeKey, VolumeName};

/// `zk://host:port[,host:port...]/path`, the URL form of the agent's `--master` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTarget {
    /// `host:port` pairs, in order.
    pub hosts: Vec<String>,
    /// The root path (absolute, no trailing slash; `/` allowed).
    pub path: String,
}

/// A `coordination` value that is not a ZooKeeper URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a ZooKeeper URL: {why}; use zk://host:port[,host:port...]/path")]
pub struct ZkUrlError {
    /// The value.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl ZkTarget {
    /// Parses `zk://host:port[,host:port...]/path`. A missing path means `/`; a trailing slash is
    /// dropped. Credentials (`user:pass@`) are refused: this layer does not authenticate.
    pub fn parse(value: &str) -> Result<Self, ZkUrlError> {
        let err = |why: String| ZkUrlError {
            value: value.to_owned(),
            why,
        };
        let rest = value
            .strip_prefix("zk://")
            .ok_or_else(|| err("it does not start with zk://".into()))?;
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if hosts.is_empty() {
            return Err(err("it names no host:port".into()));
        }
        if hosts.contains('@') {
            return Err(err("credentials (user:password@) are not supported".into()));
        }
        let mut parsed = Vec::new();
        for h in hosts.split(',') {
            if h.is_empty() {
                return Err(err("its host list has an empty entry".into()));
            }
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| err(format!("{h:?} has no :port")))?;
            if host.is_empty() {
                return Err(err(format!("{h:?} has no host name")));
            }
            if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!(
                    "host {host:?} contains a blank or control character"
                )));
            }
            match port.parse::<u16>() {
                Ok(p) if p != 0 => {}
                _ => {
                    return Err(err(format!(
                        "{h:?}: port {port:?} is not a number from 1 to 65535"
                    )))
                }
            }
            parsed.push(h.to_owned());
        }
        let path = if path == "/" {
            path
        } else {
            path.strip_suffix('/').unwrap_or(path)
        };
        if path != "/" {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(err(format!(
                        "path {path:?} has an empty, \".\" or \"..\" component"
                    )));
                }
                if seg.chars().any(char::is_control) {
                    return Err(err(format!("path {path:?} contains a control character")));
                }
            }
        }
        Ok(ZkTarget {
            hosts: parsed,
            path: path.to_owned(),
        })
    }

    /// The node under which volumes live: `<path>/volumes`.
    fn volumes_root(&self) -> String {
        format!("{}/volumes", self.path.trim_end_matches('/'))
    }
}

impl std::fmt::Display for ZkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.hosts.join(","), self.path)
    }
}

/// The read-write lease node's name.
const RW_NODE: &str = "rw";
/// The prefix of a read-only lease node's name (`ro-<agent>`).
const RO_PREFIX: &str = "ro-";
/// How long dropping the coordinator waits for ZooKeeper to confirm the session's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Leases in ZooKeeper, on one session owned by a thread of this layer.
pub struct ZkCoordinator {
    inner: Arc<Inner>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the caller's side and the coordination thread share.
struct Inner {
    target: ZkTarget,
    target_text: String,
    agent: String,
    host: String,
    pid: u32,
    session_timeout: Duration,
    state: Mutex<State>,
    handler: RwLock<Option<Arc<LossHandler>>>,
    /// One async lock per volume, so that acquire, release and re-taking a volume never overlap.
    locks: Mutex<HashMap<VolumeKey, Arc<tokio::sync::Mutex<()>>>>,
    thread_id: Mutex<Option<thread::ThreadId>>,
    /// `(epoch, connected)` whenever either changes: what a lease's watch waits on while the
    /// connection is down.
    conn: tokio::sync::watch::Sender<(u64, bool)>,
}

/// The session and the leases held on it.
#[derive(Default)]
struct State {
    /// The current session's client, while it may still be alive (connected, or disconnected for
    /// less than the session timeout).
    client: Option<zk::Client>,
    /// Connected with a live session now.
    connected: bool,
    /// Bumped whenever a session ends, so that work begun on an older one is not recorded.
    epoch: u64,
    session: Option<String>,
    last_error: Option<String>,
    held: BTreeMap<VolumeKey, Held>,
    next_id: u64,
}

/// A lease this process holds.
struct Held {
    /// The mode held now (it may be stronger than asked for).
    mode: LeaseMode,
    /// The strongest mode asked for: what re-taking asks for.
    wanted: LeaseMode,
    /// The session owning the lease's node (ours, or a live sibling's).
    owner: i64,
    /// Identifies this entry to its watch task.
    id: u64,
    /// Aborts the task that watches the lease's node.
    watch: Option<AbortHandle>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

/// Work sent to the coordination thread.
enum Command {
    Acquire {
        volume: VolumeKey,
        mode: LeaseMode,
        wait: Duration,
        reply: std_mpsc::SyncSender<Result<(), CoordError>>,
    },
    Release {
        volume: VolumeKey,
        reply: std_mpsc::SyncSender<Result<(), CoordError>>,
    },
    Leases {
        reply: std_mpsc::SyncSender<Result<Vec<Lease>, CoordError>>,
    },
    ExpireSession {
        direct: String,
        reply: std_mpsc::SyncSender<Result<(), String>>,
    },
}

impl ZkCoordinator {
    /// Starts the coordinator's thread and connects in the background: it never fails because
    /// ZooKeeper is down (calls then fail closed until it is up). `session_timeout` is asked of
    /// the server, which may narrow it to its `minSessionTimeout`..`maxSessionTimeout`.
    pub fn start(target: ZkTarget, agent: String, session_timeout: Duration) -> Self {
        // The kernel's host name, as gethostname(2) gives it.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim_end().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let inner = Arc::new(Inner {
            target_text: target.to_string(),
            target,
            agent,
            host,
            pid: std::process::id(),
            session_timeout,
            state: Mutex::new(State::default()),
            handler: RwLock::new(None),
            locks: Mutex::new(HashMap::new()),
            thread_id: Mutex::new(None),
            conn: tokio::sync::watch::Sender::new((0, false)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let thread_inner = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name("dvdi-zk".into())
            .spawn(move || run(thread_inner, rx));
        let thread = match thread {
            Ok(t) => {
                *lock(&inner.thread_id) = Some(t.thread().id());
                Some(t)
            }
            Err(e) => {
                lock(&inner.state).last_error =
                    Some(format!("cannot start the coordination thread: {e}"));
                None
            }
        };
        ZkCoordinator {
            inner,
            commands: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    /// Test hook: makes the ZooKeeper server at `direct` (`host:port`) end this coordinator's
    /// session now, the way ZooKeeper's own tests do: a second connection attaches to the
    /// session and closes it. The coordinator's own connection must be cut meanwhile (its
    /// client would take the session back at once); when it reconnects, it learns that the
    /// session expired. A natural expiry needs the client cut off for a whole session timeout,
    /// which it reports first as a disconnection of that length.
    #[doc(hidden)]
    pub fn expire_session_for_tests(&self, direct: &str) -> Result<(), String> {
        let direct = direct.to_owned();
        self.request(
            |reply| Command::ExpireSession { direct, reply },
            self.op_budget(),
        )?
    }

    /// The longest a single ZooKeeper step may take before the caller gives up on it.
    fn op_budget(&self) -> Duration {
        self.inner.session_timeout * 2 + Duration::from_secs(2)
    }

    /// Sends a command and waits up to `bound` for its answer.
    fn request<T>(
        &self,
        build: impl FnOnce(std_mpsc::SyncSender<T>) -> Command,
        bound: Duration,
    ) -> Result<T, String> {
        if *lock(&self.inner.thread_id) == Some(thread::current().id()) {
            return Err(
                "called from the coordination thread itself (the loss handler must not \
                        call the coordinator; defer the call to another thread)"
                    .into(),
            );
        }
        let commands = self
            .commands
            .as_ref()
            .ok_or("the coordination thread is not running")?;
        let (tx, rx) = std_mpsc::sync_channel(1);
        commands
            .send(build(tx))
            .map_err(|_| "the coordination thread has stopped")?;
        rx.recv_timeout(bound).map_err(|e| match e {
            std_mpsc::RecvTimeoutError::Timeout => format!(
                "no answer from the coordination thread within {} s",
                bound.as_secs()
            ),
            std_mpsc::RecvTimeoutError::Disconnected => {
                "the coordination thread has stopped".into()
            }
        })
    }

    fn unavailable(&self, volume: &VolumeKey, detail: String) -> CoordError {
        CoordError::Unavailable {
            volume: volume.clone(),
            target: self.inner.target_text.clone(),
            detail: Some(detail),
        }
    }
}

impl Drop for ZkCoordinator {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then closes the session (so our
        // ephemeral nodes go at once) and returns.
        self.commands.take();
        if let Some(t) = self.thread.take() {
            if t.thread().id() == thread::current().id() {
                // Dropped by the loss handler, on the thread itself: it ends once this returns.
                return;
            }
            if t.join().is_err() {
                log::error!("the ZooKeeper coordination thread panicked");
            }
        }
    }
}

impl Coordinator for ZkCoordinator {
    fn agent(&self) -> &str {
        &self.inner.agent
    }

    fn acquire(
        &self,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError> {
        let bound = wait + self.op_budget() + Duration::from_secs(1);
        self.request(
            |reply| Command::Acquire {
                volume: volume.clone(),
                mode,
                wait,
                reply,
            },
            bound,
        )
        .unwrap_or_else(|e| Err(self.unavailable(volume, e)))
    }

    fn release(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let bound = self.op_budget() + Duration::from_secs(1);
        self.request(
            |reply| Command::Release {
                volume: volume.clone(),
                reply,
            },
            bound,
        )
        .unwrap_or_else(|e| Err(self.unavailable(volume, e)))
    }

    fn set_loss_handler(&self, handler: LossHandler) {
        *self
            .inner
            .handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    fn status(&self) -> CoordStatus {
        let st = lock(&self.inner.state);
        CoordStatus {
            target: self.inner.target_text.clone(),
            agent: self.inner.agent.clone(),
            connected: st.connected,
            session: st.session.clone(),
            held: st.held.iter().map(|(k, h)| (k.clone(), h.mode)).collect(),
            last_error: st.last_error.clone(),
        }
    }

    fn leases(&self) -> Result<Vec<Lease>, CoordError> {
        let bound = self.op_budget() * 4;
        self.request(|reply| Command::Leases { reply }, bound)
            .unwrap_or_else(|e| {
                Err(CoordError::List {
                    path: self.inner.target.volumes_root(),
                    message: e,
                })
            })
    }
}

/// Locks a std mutex, taking over a poisoned one (every update under these locks is a plain
/// assignment, so a panic cannot leave them half-done).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The coordination thread: a current-thread runtime serving commands until the channel closes.
fn run(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            lock(&inner.state).last_error = Some(format!("cannot start the async runtime: {e}"));
            return;
        }
    };
    rt.block_on(async {
        let supervisor = tokio::spawn(supervise(Arc::clone(&inner)));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        tasks.spawn(serve(Arc::clone(&inner), cmd));
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Shutting down: stop every task, drop every client handle, then let the session close.
        supervisor.abort();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let _ = supervisor.await;
        let client = {
            let mut st = lock(&inner.state);
            st.held.clear();
            st.connected = false;
            st.session = None;
            inner.publish(&st);
            st.client.take()
        };
        if let Some(client) = client {
            let mut states = client.state_watcher();
            let connected = client.state() == zk::SessionState::SyncConnected;
            drop(client);
            if connected {
                // The library sends CloseSession once the last client handle is gone; wait for
                // it so the ephemeral nodes are gone when the drop returns.
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    while !states.peek_state().is_terminated() {
                        states.changed().await;
                    }
                })
                .await;
            }
        }
    });
}

/// Serves one command and answers it.
async fn serve(inner: Arc<Inner>, cmd: Command) {
    match cmd {
        Command::Acquire {
            volume,
            mode,
            wait,
            reply,
        } => {
            let budget = wait + inner.session_timeout * 2 + Duration::from_secs(1);
            let res = match tokio::time::timeout(budget, inner.acquire(&volume, mode, wait)).await {
                Ok(res) => res,
                Err(_) => {
                    // Cut off mid-way, a node may have been created: give back whatever this
                    // process has on a volume it did not hold before.
                    if !lock(&inner.state).held.contains_key(&volume) {
                        let _ = tokio::time::timeout(budget, inner.release(&volume)).await;
                    }
                    Err(inner.unavailable(
                        &volume,
                        format!("no answer from ZooKeeper within {} s", budget.as_secs()),
                    ))
                }
            };
            let ok = res.is_ok();
            if reply.send(res).is_err() && ok {
                // The caller gave up before the answer: it does not know it holds the lease.
                log::warn!("{volume}: lease taken after its caller gave up; giving it back");
                if let Err(e) = inner.release(&volume).await {
                    log::warn!("{e}");
                }
            }
        }
        Command::Release { volume, reply } => {
            let budget = inner.session_timeout * 2 + Duration::from_secs(1);
            let res = match tokio::time::timeout(budget, inner.release(&volume)).await {
                Ok(res) => res,
                Err(_) => Err(inner.unavailable(
                    &volume,
                    format!("no answer from ZooKeeper within {} s", budget.as_secs()),
                )),
            };
            let _ = reply.send(res);
        }
        Command::Leases { reply } => {
            let _ = reply.send(inner.leases().await);
        }
        Command::ExpireSession { direct, reply } => {
            let _ = reply.send(inner.expire_session(&direct).await);
        }
    }
}

/// Keeps a session: connects (retrying with backoff), watches its state, and reports every held
/// lease lost when the session expires or stays disconnected past the session timeout.
async fn supervise(inner: Arc<Inner>) {
    let hosts = inner.target.hosts.join(",");
    let mut backoff = Duration::from_millis(50);
    loop {
        let connector = zk::Client::connector()
            .with_session_timeout(inner.session_timeout)
            .with_connection_timeout(inner.session_timeout * 2 / 5)
            .with_fail_eagerly();
        let connect_bound = inner.session_timeout * 2 + Duration::from_secs(1);
        let client = match tokio::time::timeout(connect_bound, connector.connect(&hosts)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                inner.connection_failed(format!("cannot connect: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                inner.connection_failed(format!(
                    "cannot connect: no session within {} s",
                    connect_bound.as_secs()
                ));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let timeout = client.session_timeout();
        // The library calls a connection lost after it has been silent for 2/5 of the session
        // timeout: the disconnection began that long before it is seen, and the server may
        // expire the session a session timeout after that.
        let silent = timeout * 2 / 5;
        let mut states = client.state_watcher();
        {
            let mut st = lock(&inner.state);
            st.session = Some(format!("{:#x}", client.session_id().0));
            st.connected = true;
            st.client = Some(client);
            inner.publish(&st);
        }
        log::info!("ZooKeeper session established with {}", inner.target_text);
        let mut disconnected_at: Option<Instant> = None;
        let lost = loop {
            let state = match disconnected_at {
                None => states.changed().await,
                Some(at) => {
                    tokio::select! {
                        s = states.changed() => s,
                        _ = tokio::time::sleep_until((at + timeout).into()) => {
                            break LossReason::Disconnected(at.elapsed());
                        }
                    }
                }
            };
            match state {
                zk::SessionState::SyncConnected => {
                    disconnected_at = None;
                    let mut st = lock(&inner.state);
                    st.connected = true;
                    inner.publish(&st);
                }
                zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {
                    disconnected_at.get_or_insert_with(|| {
                        let now = Instant::now();
                        now.checked_sub(silent).unwrap_or(now)
                    });
                    let mut st = lock(&inner.state);
                    st.connected = false;
                    st.last_error = Some("connection to ZooKeeper lost".into());
                    inner.publish(&st);
                }
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => break LossReason::SessionExpired,
            }
        };
        inner.lose_all(lost);
    }
}

/// A lease node as read from ZooKeeper.
struct Node {
    name: String,
    path: String,
    holder: Holder,
    /// Its data parsed as a [`Holder`].
    readable: bool,
    version: i32,
    owner: i64,
}

/// Whose a node is, as seen from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Our own session's.
    Ours,
    /// A live sibling process of this agent on this host: shared, never touched.
    Sibling,
    /// A dead previous process of this agent (or an earlier session of this process).
    Stale,
    /// Another agent's, or unreadable.
    Other,
}

/// What an acquire found and took.
struct Taken {
    mode: LeaseMode,
    /// The session owning the node the lease rests on (ours, or a live sibling's).
    owner: i64,
}

/// The data a lease node carries, or what is known of it when it cannot be parsed: the agent
/// from an `ro-<agent>` name, `?` otherwise, and the node's creation time.
fn holder_of(name: &str, data: &[u8], stat: &zk::Stat) -> (Holder, bool) {
    match serde_json::from_slice::<Holder>(data) {
        Ok(h) => (h, true),
        Err(_) => (
            Holder {
                agent: name.strip_prefix(RO_PREFIX).unwrap_or("?").to_owned(),
                host: "?".into(),
                pid: 0,
                since: u64::try_from(stat.ctime / 1000).unwrap_or(0),
            },
            false,
        ),
    }
}

/// Whether a process with this pid exists (a zombie counts: it has not been reaped yet).
fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        // EPERM and anything else: something is there, or we cannot tell; never take over.
        Err(_) => true,
    }
}

/// Errors that mean the session cannot be used now.
fn is_connection_error(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::Timeout
            | zk::Error::NoHosts
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    fn volume_dir(&self, volume: &VolumeKey) -> String {
        format!(
            "{}/{}/{}",
            self.target.volumes_root(),
            volume.driver.as_str(),
            volume.name.as_str()
        )
    }

    fn ro_node(&self) -> String {
        format!("{RO_PREFIX}{}", self.agent)
    }

    fn unavailable(&self, volume: &VolumeKey, detail: String) -> CoordError {
        CoordError::Unavailable {
            volume: volume.clone(),
            target: self.target_text.clone(),
            detail: Some(detail),
        }
    }

    fn zk_error(
        &self,
        volume: &VolumeKey,
        op: &'static str,
        path: &str,
        e: zk::Error,
    ) -> CoordError {
        if is_connection_error(&e) {
            return self.unavailable(volume, format!("{op} on {path}: {e}"));
        }
        CoordError::Zk {
            volume: volume.clone(),
            op,
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    /// Tells lease watches the session's epoch and whether it is connected.
    fn publish(&self, st: &State) {
        self.conn.send_replace((st.epoch, st.connected));
    }

    /// Waits until session `epoch` is connected (`true`) or over (`false`).
    async fn reconnected(&self, epoch: u64) -> bool {
        let mut conn = self.conn.subscribe();
        let now = conn
            .wait_for(|&(e, connected)| e != epoch || connected)
            .await
            .map(|v| v.0);
        now.ok() == Some(epoch)
    }

    async fn expire_session(&self, direct: &str) -> Result<(), String> {
        let info = lock(&self.state)
            .client
            .as_ref()
            .map(|c| c.session().clone())
            .ok_or("no session")?;
        let other = zk::Client::connector()
            .with_session(info)
            .with_session_timeout(self.session_timeout)
            .connect(direct)
            .await
            .map_err(|e| format!("cannot attach to the session: {e}"))?;
        let mut states = other.state_watcher();
        drop(other);
        tokio::time::timeout(CLOSE_WAIT, async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        })
        .await
        .map_err(|_| "the session did not close".to_string())
    }

    fn connection_failed(&self, message: String) {
        log::debug!("ZooKeeper {}: {message}", self.target_text);
        lock(&self.state).last_error = Some(message);
    }

    /// The client of the live session and its epoch; `Unavailable` when there is none.
    fn live_client(&self, volume: &VolumeKey) -> Result<(zk::Client, u64), CoordError> {
        let st = lock(&self.state);
        match (&st.client, st.connected) {
            (Some(c), true) => Ok((c.clone(), st.epoch)),
            _ => Err(CoordError::Unavailable {
                volume: volume.clone(),
                target: self.target_text.clone(),
                detail: st.last_error.clone(),
            }),
        }
    }

    fn volume_lock(&self, volume: &VolumeKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(volume.clone()).or_default())
    }

    fn classify(&self, node: &Node, session: i64) -> Owner {
        if !node.readable || node.holder.agent != self.agent {
            return Owner::Other;
        }
        if node.owner == session {
            return Owner::Ours;
        }
        if node.holder.host != self.host || node.holder.pid == 0 {
            return Owner::Other;
        }
        if node.holder.pid == self.pid || !pid_alive(node.holder.pid) {
            return Owner::Stale;
        }
        Owner::Sibling
    }

    /// Reads the lease nodes among `children` of `dir`; nodes gone meanwhile are left out.
    async fn read_nodes(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
        children: &[String],
    ) -> Result<Vec<Node>, CoordError> {
        let mut nodes = Vec::new();
        for name in children {
            if name != RW_NODE && !name.starts_with(RO_PREFIX) {
                continue;
            }
            let path = format!("{dir}/{name}");
            match client.get_data(&path).await {
                Ok((data, stat)) => {
                    let (holder, readable) = holder_of(name, &data, &stat);
                    nodes.push(Node {
                        name: name.clone(),
                        path,
                        holder,
                        readable,
                        version: stat.version,
                        owner: stat.ephemeral_owner,
                    });
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.zk_error(volume, "get_data", &path, e)),
            }
        }
        Ok(nodes)
    }

    /// Takes `mode` on `volume` in ZooKeeper (the rules of [`Coordinator::acquire`]), waiting up
    /// to `wait` on the volume node's children while another agent holds a conflicting lease.
    async fn take(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<Taken, CoordError> {
        let start = Instant::now();
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let ro_name = self.ro_node();
        'check: loop {
            let (children, watcher) = match client.get_and_watch_children(&dir).await {
                Ok((children, _, watcher)) => (children, watcher),
                Err(zk::Error::NoNode) => {
                    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    match client.mkdir(&dir, &opts).await {
                        Ok(()) => continue,
                        Err(e) => return Err(self.zk_error(volume, "create", &dir, e)),
                    }
                }
                Err(e) => return Err(self.zk_error(volume, "get_children", &dir, e)),
            };
            let nodes = self.read_nodes(client, volume, &dir, &children).await?;
            // A stale node of this agent blocks nobody but us: take it over.
            for n in &nodes {
                if self.classify(n, session) == Owner::Stale {
                    log::warn!(
                        "{volume}: taking over the stale lease node {} of {}",
                        n.path,
                        n.holder
                    );
                    match client.delete(&n.path, Some(n.version)).await {
                        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                        Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                    }
                    continue 'check;
                }
            }
            let mine =
                |n: &&Node| matches!(self.classify(n, session), Owner::Ours | Owner::Sibling);
            let rw = nodes.iter().find(|n| n.name == RW_NODE);
            let ro_me = nodes.iter().find(|n| n.name == ro_name);
            let conflict = match (mode, rw) {
                (_, Some(n)) if mine(&n) => {
                    return Ok(Taken {
                        mode: LeaseMode::ReadWrite,
                        owner: n.owner,
                    })
                }
                (_, Some(n)) => (LeaseMode::ReadWrite, n.holder.clone()),
                (LeaseMode::ReadOnly, None) => match ro_me {
                    Some(n) if mine(&n) => {
                        return Ok(Taken {
                            mode: LeaseMode::ReadOnly,
                            owner: n.owner,
                        })
                    }
                    // Our agent's name on another host's node: never shared.
                    Some(n) => (LeaseMode::ReadOnly, n.holder.clone()),
                    None => {
                        if self
                            .create(client, volume, &format!("{dir}/{ro_name}"))
                            .await?
                        {
                            return Ok(Taken {
                                mode: LeaseMode::ReadOnly,
                                owner: session,
                            });
                        }
                        continue 'check;
                    }
                },
                (LeaseMode::ReadWrite, None) => {
                    let reader = nodes
                        .iter()
                        .filter(|n| n.name != RW_NODE && !mine(n))
                        .min_by_key(|n| n.holder.since);
                    match reader {
                        Some(n) => (LeaseMode::ReadOnly, n.holder.clone()),
                        None => {
                            if !self
                                .create(client, volume, &format!("{dir}/{RW_NODE}"))
                                .await?
                            {
                                continue 'check;
                            }
                            // The upgrade is done: our own read-only node is redundant now. A
                            // sibling's stays: it is that process's to give back.
                            if let Some(n) =
                                ro_me.filter(|n| self.classify(n, session) == Owner::Ours)
                            {
                                match client.delete(&n.path, Some(n.version)).await {
                                    Ok(()) | Err(zk::Error::NoNode) => {}
                                    Err(e) => log::warn!(
                                        "{volume}: cannot delete {} after the upgrade: {e}",
                                        n.path
                                    ),
                                }
                            }
                            return Ok(Taken {
                                mode: LeaseMode::ReadWrite,
                                owner: session,
                            });
                        }
                    }
                }
            };
            let (held_mode, holder) = conflict;
            let held = || CoordError::Held {
                volume: volume.clone(),
                wanted: mode,
                held_mode,
                holder: Box::new(holder.clone()),
                waited: start.elapsed(),
            };
            let Some(left) = wait.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
                return Err(held());
            };
            if tokio::time::timeout(left, watcher.changed()).await.is_err() {
                return Err(held());
            }
        }
    }

    /// Creates our ephemeral lease node at `path`: `false` when it exists already (a race).
    async fn create(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        path: &str,
    ) -> Result<bool, CoordError> {
        let holder = Holder {
            agent: self.agent.clone(),
            host: self.host.clone(),
            pid: self.pid,
            since: now_secs(),
        };
        let data = serde_json::to_vec(&holder).map_err(|e| CoordError::Zk {
            volume: volume.clone(),
            op: "create",
            path: path.to_owned(),
            message: format!("cannot encode the holder: {e}"),
        })?;
        let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        match client.create(path, &data, &opts).await {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(self.zk_error(volume, "create", path, e)),
        }
    }

    fn check_agent(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let a = &self.agent;
        if a.is_empty()
            || a.contains('/')
            || a == "."
            || a == ".."
            || a.chars().any(char::is_control)
        {
            return Err(CoordError::Zk {
                volume: volume.clone(),
                op: "create",
                path: format!("{}/{RO_PREFIX}{a}", self.volume_dir(volume)),
                message: format!("agent name {a:?} cannot be part of a ZooKeeper node name"),
            });
        }
        Ok(())
    }

    async fn acquire(
        self: &Arc<Self>,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError> {
        self.check_agent(volume)?;
        // Fail closed at once: no live session, no lease.
        self.live_client(volume)?;
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let (client, epoch) = self.live_client(volume)?;
        let wanted = {
            let st = lock(&self.state);
            match st.held.get(volume) {
                Some(h) if h.mode >= mode => return Ok(()),
                Some(h) => h.wanted.max(mode),
                None => mode,
            }
        };
        let taken = self.take(&client, volume, mode, wait).await?;
        drop(client);
        // Watch the node before answering, so that a change right after is not missed; if it
        // cannot be set now, the watch task sets it.
        let first = self
            .watch_node(&self.lease_node(volume, taken.mode), taken.owner)
            .await
            .ok()
            .flatten();
        let mut st = lock(&self.state);
        if st.epoch != epoch {
            // The session ended meanwhile: whatever we created went with it.
            return Err(CoordError::Unavailable {
                volume: volume.clone(),
                target: self.target_text.clone(),
                detail: Some("the ZooKeeper session ended while taking the lease".into()),
            });
        }
        st.next_id += 1;
        let id = st.next_id;
        let watch = tokio::spawn(Arc::clone(self).watch_lease(volume.clone(), id, epoch, first));
        st.held.insert(
            volume.clone(),
            Held {
                mode: taken.mode,
                owner: taken.owner,
                wanted,
                id,
                watch: Some(watch.abort_handle()),
            },
        );
        Ok(())
    }

    /// The node that carries the lease `volume` is held by in `mode`.
    fn lease_node(&self, volume: &VolumeKey, mode: LeaseMode) -> String {
        match mode {
            LeaseMode::ReadWrite => format!("{}/{RW_NODE}", self.volume_dir(volume)),
            LeaseMode::ReadOnly => format!("{}/{}", self.volume_dir(volume), self.ro_node()),
        }
    }

    /// Sets a watch on the lease node `path` if it still belongs to session `owner`; `None`
    /// when it is gone or another session's now.
    async fn watch_node(
        &self,
        path: &str,
        owner: i64,
    ) -> Result<Option<zk::OneshotWatcher>, zk::Error> {
        // The client handle goes before anyone waits on the watch: a waiting watch must not
        // keep the session open when the coordinator closes it.
        let client = lock(&self.state).client.clone();
        let client = client.ok_or(zk::Error::ConnectionLoss)?;
        match client.check_and_watch_stat(path).await? {
            (Some(stat), w) if stat.ephemeral_owner == owner => Ok(Some(w)),
            _ => Ok(None),
        }
    }

    /// Watches a held lease's node; when it is deleted under us (or found replaced), re-takes
    /// the lease at once or reports it lost. Ends when the lease is released or lost, or the
    /// session ends (the supervisor reports that).
    async fn watch_lease(
        self: Arc<Self>,
        volume: VolumeKey,
        id: u64,
        epoch: u64,
        mut watcher: Option<zk::OneshotWatcher>,
    ) {
        loop {
            let (mode, owner) = {
                let st = lock(&self.state);
                match st.held.get(&volume) {
                    Some(h) if h.id == id && st.epoch == epoch => (h.mode, h.owner),
                    _ => return,
                }
            };
            let path = self.lease_node(&volume, mode);
            match watcher.take() {
                Some(w) => match w.changed().await.event_type {
                    zk::EventType::NodeDeleted => {}
                    // Session trouble is the supervisor's to report.
                    zk::EventType::Session => return,
                    // Anything else: watch again (and check the node is still the one).
                    _ => continue,
                },
                None => match self.watch_node(&path, owner).await {
                    Ok(Some(w)) => {
                        watcher = Some(w);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let connected = {
                            let st = lock(&self.state);
                            st.epoch == epoch && st.connected
                        };
                        if connected && !is_connection_error(&e) {
                            self.lose(&volume, id, None, &format!("cannot watch {path}: {e}"));
                            return;
                        }
                        // The connection broke under the request: watch again once it is
                        // back; if the session is lost instead, the supervisor reports it.
                        if !self.reconnected(epoch).await {
                            return;
                        }
                        continue;
                    }
                },
            }
            // The node is gone (or not ours any more): take the lease again at once, or
            // report it lost.
            let vlock = self.volume_lock(&volume);
            let _guard = vlock.lock().await;
            let wanted = {
                let st = lock(&self.state);
                match st.held.get(&volume) {
                    Some(h) if h.id == id && st.epoch == epoch => h.wanted,
                    _ => return,
                }
            };
            let retaken = match self.live_client(&volume) {
                Ok((client, _)) => self.take(&client, &volume, wanted, Duration::ZERO).await,
                Err(e) => Err(e),
            };
            match retaken {
                Ok(taken) => {
                    log::warn!("{volume}: lease node {path} was deleted; taken again");
                    let mut st = lock(&self.state);
                    if st.epoch != epoch {
                        return;
                    }
                    match st.held.get_mut(&volume) {
                        Some(h) if h.id == id => {
                            h.mode = taken.mode;
                            h.owner = taken.owner;
                        }
                        _ => return,
                    }
                }
                Err(CoordError::Held { holder, .. }) => {
                    self.lose(&volume, id, Some(*holder), "its node was deleted");
                    return;
                }
                Err(e) => {
                    self.lose(&volume, id, None, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Forgets lease `id` on `volume` and reports it lost (taken over).
    fn lose(&self, volume: &VolumeKey, id: u64, holder: Option<Holder>, why: &str) {
        {
            let mut st = lock(&self.state);
            match st.held.get_mut(volume) {
                Some(h) if h.id == id => {
                    // This runs on the watch task itself: do not abort it from under us.
                    h.watch = None;
                }
                _ => return,
            }
            st.held.remove(volume);
        }
        log::warn!("{volume}: lease lost ({why})");
        self.report(LeaseLoss {
            volume: volume.clone(),
            reason: LossReason::TakenOver,
            holder,
        });
    }

    /// Every held lease is lost: the session is over (or must be assumed over). Forgets them,
    /// drops the session's client (the library closes the session if it ever reconnects) and
    /// reports each loss.
    fn lose_all(&self, reason: LossReason) {
        let (held, client) = {
            let mut st = lock(&self.state);
            st.epoch += 1;
            st.connected = false;
            st.session = None;
            st.last_error = Some(match &reason {
                LossReason::SessionExpired => "the ZooKeeper session expired".into(),
                other => other.to_string(),
            });
            self.publish(&st);
            (std::mem::take(&mut st.held), st.client.take())
        };
        drop(client);
        log::warn!(
            "ZooKeeper {}: session lost ({reason}); {} lease(s) lost",
            self.target_text,
            held.len()
        );
        for volume in held.into_keys() {
            self.report(LeaseLoss {
                volume,
                reason: reason.clone(),
                holder: None,
            });
        }
    }

    fn report(&self, loss: LeaseLoss) {
        let handler = self
            .handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match handler {
            Some(h) => h(loss),
            None => log::error!("{loss} (no loss handler is set)"),
        }
    }

    async fn release(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let held = lock(&self.state).held.contains_key(volume);
        let (client, _) = match self.live_client(volume) {
            Ok(c) => c,
            // Holding nothing is success, connected or not.
            Err(_) if !held => return Ok(()),
            Err(e) => return Err(e),
        };
        // Stop watching first: the deletions below are ours, not a loss.
        if let Some(h) = lock(&self.state).held.get_mut(volume) {
            if let Some(w) = h.watch.take() {
                w.abort();
            }
        }
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(self.zk_error(volume, "get_children", &dir, e)),
        };
        for n in self.read_nodes(&client, volume, &dir, &children).await? {
            if matches!(self.classify(&n, session), Owner::Ours | Owner::Stale) {
                match client.delete(&n.path, Some(n.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                }
            }
        }
        lock(&self.state).held.remove(volume);
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, CoordError> {
        let root = self.target.volumes_root();
        let client = {
            let st = lock(&self.state);
            match (&st.client, st.connected) {
                (Some(c), true) => c.clone(),
                _ => {
                    return Err(CoordError::List {
                        path: root,
                        message: format!(
                            "not connected to ZooKeeper at {}{}",
                            self.target_text,
                            st.last_error
                                .as_deref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ),
                    })
                }
            }
        };
        let list_err = |path: &str, e: zk::Error| CoordError::List {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let children = |path: String| {
            let client = client.clone();
            async move {
                match client.list_children(&path).await {
                    Ok(c) => Ok(c),
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(list_err(&path, e)),
                }
            }
        };
        let mut leases = Vec::new();
        for driver in children(root.clone()).await? {
            let Ok(driver_name) = DriverName::new(driver.as_str()) else {
                log::warn!("{root}/{driver}: not a valid driver name; skipped");
                continue;
            };
            let ddir = format!("{root}/{driver}");
            for name in children(ddir.clone()).await? {
                let Ok(volume_name) = VolumeName::new(name.as_str()) else {
                    log::warn!("{ddir}/{name}: not a valid volume name; skipped");
                    continue;
                };
                let vdir = format!("{ddir}/{name}");
                for node in children(vdir.clone()).await? {
                    let mode = if node == RW_NODE {
                        LeaseMode::ReadWrite
                    } else if node.starts_with(RO_PREFIX) {
                        LeaseMode::ReadOnly
                    } else {
                        continue;
                    };
                    let path = format!("{vdir}/{node}");
                    let (data, stat) = match client.get_data(&path).await {
                        Ok(d) => d,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(list_err(&path, e)),
                    };
                    let (holder, readable) = holder_of(&node, &data, &stat);
                    if !readable {
                        log::warn!("{path}: lease data is not a holder's JSON; listed as {holder}");
                    }
                    leases.push(Lease {
                        volume: VolumeKey {
                            driver: driver_name.clone(),
                            name: volume_name.clone(),
                        },
                        mode,
                        holder,
                    });
                }
            }
        }
        leases.sort_by(|a, b| {
            (&a.volume, b.mode, &a.holder.agent).cmp(&(&b.volume, a.mode, &b.holder.agent))
        });
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ZkTarget {
        ZkTarget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        match ZkTarget::parse(s) {
            Ok(t) => panic!("{s} parsed as {t:?}"),
            Err(e) => {
                assert_eq!(e.value, s);
                e.why
            }
        }
    }

    #[test]
    fn parses_hosts_and_path() {
        let t = parse("zk://zk1:2181,zk2:2182,10.0.0.3:2181/mesos/dvdi");
        assert_eq!(t.hosts, ["zk1:2181", "zk2:2182", "10.0.0.3:2181"]);
        assert_eq!(t.path, "/mesos/dvdi");
        assert_eq!(
            t.to_string(),
            "zk://zk1:2181,zk2:2182,10.0.0.3:2181/mesos/dvdi"
        );
        assert_eq!(t.volumes_root(), "/mesos/dvdi/volumes");
    }

    #[test]
    fn root_path_trailing_slash_and_no_path_all_mean_the_given_root() {
        assert_eq!(parse("zk://h:1/").path, "/");
        assert_eq!(parse("zk://h:1").path, "/");
        assert_eq!(parse("zk://h:1").volumes_root(), "/volumes");
        assert_eq!(parse("zk://h:1/a/b/").path, "/a/b");
        assert_eq!(parse("zk://[::1]:2181/x").hosts, ["[::1]:2181"]);
    }

    #[test]
    fn refuses_what_is_not_a_zookeeper_url() {
        assert!(why("h:2181/x").contains("zk://"));
        assert!(why("http://h:2181/x").contains("zk://"));
        assert!(why("zk:///x").contains("no host"));
        assert!(why("zk://").contains("no host"));
        assert!(why("zk://h/x").contains("no :port"));
        assert!(why("zk://:2181/x").contains("no host name"));
        assert!(why("zk://h:abc/x").contains("port \"abc\""));
        assert!(why("zk://h:0/x").contains("port \"0\""));
        assert!(why("zk://h:65536/x").contains("65536"));
        assert!(why("zk://h:1,,g:2/x").contains("empty entry"));
        assert!(why("zk://h:1,/x").contains("empty entry"));
        assert!(why("zk://u:p@h:1/x").contains("credentials"));
        assert!(why("zk://h:1//x").contains("empty"));
        assert!(why("zk://h:1/a/../b").contains("\"..\""));
        assert!(why("zk://h 1:1/x").contains("blank"));
    }

    #[test]
    fn error_message_says_what_to_use() {
        let e = ZkTarget::parse("zk://h/x").unwrap_err().to_string();
        assert!(e.contains("\"zk://h/x\""), "{e}");
        assert!(e.contains("use zk://host:port"), "{e}");
    }

    #[test]
    fn unreadable_node_data_keeps_what_the_node_name_and_stat_tell() {
        let stat = zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 1_700_000_000_123,
            mtime: 1_700_000_000_123,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let (h, ok) = holder_of("ro-agent7", b"not json", &stat);
        assert!(!ok);
        assert_eq!((h.agent.as_str(), h.since), ("agent7", 1_700_000_000));
        let (h, _) = holder_of("rw", b"", &stat);
        assert_eq!(h.agent, "?");
        let json = br#"{"agent":"a","host":"h","pid":7,"since":9}"#;
        let (h, ok) = holder_of("rw", json, &stat);
        assert!(ok);
        assert_eq!((h.agent.as_str(), h.pid, h.since), ("a", 7, 9));
    }
}
