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
//! Nothing async leaves this folder.
//!
//! # Files
//!
//! `mod.rs` holds the coordinator, its thread and the trait's implementation; `target.rs` the
//! URL; `session.rs` the session and loss detection; `lease.rs` taking and giving back a lease;
//! `watch.rs` the watch on a held lease; `list.rs` the cluster-wide listing.
//!
//! # Must never
//!
//! Report a lease as held without a live session, block a caller past its wait plus a bounded
//! margin, or delete a node of another agent or of a live sibling process.

mod lease;
mod list;
mod session;
mod target;
mod watch;

pub use target::{ZkTarget, ZkUrlError};

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use zookeeper_client as zk;

use super::{CoordError, CoordStatus, Coordinator, Lease, LeaseMode, LossHandler};
use crate::spec::VolumeKey;
use session::supervise;

/// How long dropping the coordinator waits for ZooKeeper to confirm the session's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
