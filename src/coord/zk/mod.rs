//! The ZooKeeper coordinator: leases as ephemeral nodes under `<path>/volumes/<driver>/<name>/`.
//!
//! # Layout (a contract: operators read it with `zkCli.sh`)
//!
//! ```text
//! <path>/volumes/<driver>/<name>                 persistent; its data version counts lease takes
//! <path>/volumes/<driver>/<name>/rw-<session>    ephemeral: a read-write holder
//! <path>/volumes/<driver>/<name>/ro-<session>    ephemeral: a read-only holder
//! ```
//!
//! `<session>` is the holding process's ZooKeeper session id in 16 hex digits: one node per
//! holding process, which only that process's session ever creates. Each lease node's data is
//! the JSON of [`Holder`](crate::coord::Holder) (`{"agent","host","machine","pid","since"}`). The parent nodes are persistent,
//! created as needed and never removed.
//!
//! # Rules
//!
//! Read-write is granted when no other agent has a node under the volume; read-only when no
//! other agent has a read-write node there. The decision is atomic: the volume's children and
//! its node's data version are read, and the lease node is created in one transaction with
//! setting the volume node's data at that version. Every take sets it, so a take decided on a
//! view that another take changed meanwhile fails, and is decided again on a new view.
//! Deletions (releases, expired sessions) leave the version alone: they only ever free a lease.
//! An upgrade (read-only to read-write) creates the read-write node and deletes the read-only
//! one in the same transaction.
//!
//! A node is this agent's when its data names our `agent_name` and our machine id (see
//! [`MACHINE_ID_FILES`]). If another session owns it, the holder's pid, judged by this host's
//! process table, decides: alive means a sibling process of this agent on this host (a `dvdi
//! run` next to the module), whose lease we share and never touch; dead (or our own pid in an
//! earlier session of this process) means a stale node of a previous process, which we delete
//! (with its version, in the transaction that takes the lease). A node naming our agent but
//! another machine id (or none: an earlier version's) is another agent's: two hosts sharing one
//! agent name and host name (cloned hosts) must not share a read-write lease, nor judge each
//! other's pids. Nodes of the earlier layout (`rw`, `ro-<agent>`) count as holders by the same
//! rules.
//!
//! Each process of an agent that uses a volume holds its own node (its part of the agent's
//! lease). [`Coordinator::leave`] deletes this process's nodes only; [`Coordinator::release`]
//! gives the agent's whole lease back: this process's nodes and every other node of this agent
//! on this machine, dead or alive (the caller knows that no one here uses the volume: the
//! volume's record, under its lock, shows no users).
//!
//! # Choices
//!
//! - A URL without a path (`zk://h:2181`) means the root `/`, as ZooKeeper's own connect strings.
//! - A lease node whose data is not a holder's JSON still counts (it blocks as any holder does)
//!   and is listed by [`Coordinator::leases`] with what is known: agent `?`, host `?`, pid 0,
//!   and the node's creation time as `since`; a warning is logged. Driver or volume nodes whose
//!   names are not valid names are skipped with a warning.
//! - Leases are judged by the session timeout the server granted (it may grant less than asked:
//!   its `maxSessionTimeout`; a warning names both), never by the one asked for.
//! - The session is proved alive by a heartbeat (`sync`, answered through the ensemble's
//!   leader) every tenth of the session timeout; an answer proves the server heard from us at or
//!   after the moment it was sent. When no heartbeat sent in the last two thirds of the session
//!   timeout was answered, every lease is reported lost (fenced): the server expires a session
//!   no earlier than one session timeout after it last heard from it, so the fencing has a third
//!   of the session timeout before another agent can be let in (with a 4 s session: fenced after
//!   2.7 s of silence, at least 1.3 s before the expiry). A starved coordination thread fences
//!   late by as long as it is starved.
//! - After such a silence the session is abandoned (its client dropped: if it ever
//!   reconnects, the library closes it) and a new one is started; its nodes, if the server still
//!   has them, are this process's stale nodes and are taken over.
//! - `release` without a live session fails (`Unavailable`) if the lease is held (it stays held
//!   and is reported lost if the session goes), and succeeds if not.
//! - A write whose answer is lost (the connection dropped under it, or the call was cut off)
//!   may or may not have happened, and nothing in doubt is held: a release forgets the lease
//!   before it sends anything, a failed take holds nothing, a failed upgrade keeps only the
//!   read-only lease (held in every outcome). Before the volume is touched again, and as soon as
//!   the session is usable again, our session's nodes on it are made to match what is held
//!   (`doubt.rs`); if the session ends first, they go with it. Only a lease whose node is
//!   watched answers an acquire from memory.
//! - The loss handler runs on the coordination thread: it must return quickly and must not call
//!   the coordinator (such a call fails at once instead of deadlocking).
//!
//! # Threading
//!
//! The client library is async. Its executor (a tokio current-thread runtime) runs on one thread
//! owned by [`ZkCoordinator`]; the trait's methods send a command to it and block on the answer
//! for a bounded time. (The library's socket reactor, `async-io`, keeps its own helper thread.)
//! Nothing async leaves this folder. An answer is handed over under one lock, so that a caller
//! that gave up and a thread that answers agree on it: an acquire answered after its caller
//! gave up gives back what that call took, and only that (an upgrade goes back to read-only; a
//! lease held before the call stays).
//!
//! # Files
//!
//! `mod.rs` holds the coordinator and the trait's implementation; `worker.rs` its thread and
//! the hand-over of answers; `target.rs` the URL; `session.rs` the session and loss detection;
//! `tree.rs` a volume's lease nodes (names, holders, whose they are); `lease.rs` taking a
//! lease; `release.rs` giving it back; `doubt.rs` settling writes whose outcome is unknown;
//! `watch.rs` the watch on a held lease; `list.rs` the cluster-wide listing.
//!
//! # Must never
//!
//! Report a lease as held without a live session, block a caller past its wait plus a bounded
//! margin, or delete a node of another agent or of a live sibling process.

mod doubt;
mod lease;
mod list;
mod release;
mod session;
mod target;
mod tree;
mod watch;
mod worker;

pub use target::{ZkTarget, ZkUrlError};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use zookeeper_client as zk;

use super::{CoordError, CoordStatus, Coordinator, Lease, LeaseMode, LossHandler};
use crate::spec::VolumeKey;
use worker::{reply_channel, run, Command, Reply};

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
    /// This host's machine id; empty when none could be read (then no node is ever this
    /// agent's but our own session's: fail closed).
    machine: String,
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
    /// Volumes a write of this session touched whose outcome is unknown (see `doubt.rs`).
    doubt: BTreeSet<VolumeKey>,
    /// The view of each volume this process last committed a take on (see `lease.rs`).
    known: HashMap<VolumeKey, tree::View>,
    next_id: u64,
}

/// A lease this process holds.
struct Held {
    /// The mode held now (it may be stronger than asked for).
    mode: LeaseMode,
    /// The strongest mode asked for: what re-taking asks for.
    wanted: LeaseMode,
    /// Our node the lease rests on.
    path: String,
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

impl ZkCoordinator {
    /// Starts the coordinator's thread and connects in the background: it never fails because
    /// ZooKeeper is down (calls then fail closed until it is up). `session_timeout` is asked of
    /// the server, which may narrow it to its `minSessionTimeout`..`maxSessionTimeout`. This
    /// host's machine id is read from [`MACHINE_ID_FILES`].
    pub fn start(target: ZkTarget, agent: String, session_timeout: Duration) -> Self {
        Self::start_with_machine_id(
            target,
            agent,
            session_timeout,
            &MACHINE_ID_FILES.map(Path::new),
        )
    }

    /// [`ZkCoordinator::start`], with this host's machine id read from the first of
    /// `machine_id_files` that holds one.
    pub fn start_with_machine_id(
        target: ZkTarget,
        agent: String,
        session_timeout: Duration,
        machine_id_files: &[&Path],
    ) -> Self {
        // The kernel's host name, as gethostname(2) gives it.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim_end().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let machine = machine_id(machine_id_files).unwrap_or_else(|| {
            log::error!(
                "no machine id in {}: this agent's processes cannot recognise each other's \
                 lease nodes, and refuse leases another of them holds",
                machine_id_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            String::new()
        });
        let inner = Arc::new(Inner {
            target_text: target.to_string(),
            target,
            agent,
            host,
            machine,
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

    /// Test hook: [`Coordinator::acquire`] with a caller that gives up after `patience` (the
    /// real caller waits for the coordinator's whole budget), so that the answer comes after
    /// the caller gave up: what a blocked or starved coordination thread would make happen.
    #[doc(hidden)]
    pub fn acquire_giving_up_after_for_tests(
        &self,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
        patience: Duration,
    ) -> Result<(), CoordError> {
        self.request(
            |reply| Command::Acquire {
                volume: volume.clone(),
                mode,
                wait,
                reply,
            },
            patience,
        )
        .unwrap_or_else(|e| Err(self.unavailable(volume, e)))
    }

    /// The longest a single ZooKeeper step may take before the caller gives up on it.
    fn op_budget(&self) -> Duration {
        self.inner.session_timeout * 2 + Duration::from_secs(2)
    }

    /// Sends a command and waits up to `bound` for its answer.
    fn request<T>(
        &self,
        build: impl FnOnce(Reply<T>) -> Command,
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
        let (reply, pending) = reply_channel();
        commands
            .send(build(reply))
            .map_err(|_| "the coordination thread has stopped")?;
        pending.wait(bound)
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

    fn leave(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let bound = self.op_budget() + Duration::from_secs(1);
        self.request(
            |reply| Command::Leave {
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

/// Where this host's machine id is read, the first file that holds one: systemd's machine id,
/// else the kernel's boot id (new at every boot).
pub const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"];

/// The machine id in the first of `files` that holds one: its hex digits, in lower case (a boot
/// id's dashes dropped).
fn machine_id(files: &[&Path]) -> Option<String> {
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let id: String = text
            .trim()
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit()))
            .then_some(id)
    })
}

/// Locks a std mutex, taking over a poisoned one (every update under these locks is a plain
/// assignment, so a panic cannot leave them half-done).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
