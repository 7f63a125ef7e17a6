//! The coordination thread: the commands the trait's methods send it, the hand-over of their
//! answers, and the runtime that serves them until the coordinator is dropped.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use zookeeper_client as zk;

use super::session::supervise;
use super::{lock, Inner, CLOSE_WAIT};
use crate::coord::{CoordError, Lease, LeaseMode};
use crate::spec::VolumeKey;

/// Work sent to the coordination thread.
pub(super) enum Command {
    Acquire {
        volume: VolumeKey,
        mode: LeaseMode,
        wait: Duration,
        reply: Reply<Result<(), CoordError>>,
    },
    Release {
        volume: VolumeKey,
        reply: Reply<Result<(), CoordError>>,
    },
    Leave {
        volume: VolumeKey,
        reply: Reply<Result<(), CoordError>>,
    },
    Leases {
        reply: Reply<Result<Vec<Lease>, CoordError>>,
    },
    ExpireSession {
        direct: String,
        reply: Reply<Result<(), String>>,
    },
}

/// Where one call's answer meets its caller.
enum Slot<T> {
    Waiting,
    Answered(T),
    /// The caller stopped waiting: an answer now is the thread's to undo.
    GaveUp,
    /// The thread dropped the call unanswered (it is shutting down).
    Dropped,
}

type Shared<T> = Arc<(Mutex<Slot<T>>, Condvar)>;

/// The coordination thread's end of a call's answer. Exactly one side decides the call's fate,
/// under one lock: the answer is handed over, or the caller gave up first and the thread learns
/// it from the hand-over (and undoes what the call did).
pub(super) struct Reply<T>(Shared<T>);

/// The caller's end of a call's answer.
pub(super) struct Pending<T>(Shared<T>);

/// A new call's two ends.
pub(super) fn reply_channel<T>() -> (Reply<T>, Pending<T>) {
    let shared = Arc::new((Mutex::new(Slot::Waiting), Condvar::new()));
    (Reply(Arc::clone(&shared)), Pending(shared))
}

impl<T> Reply<T> {
    /// Hands `answer` over; gives it back when the caller gave up (or it was answered already).
    pub(super) fn deliver(&self, answer: T) -> Result<(), T> {
        let (slot, ready) = &*self.0;
        let mut slot = lock(slot);
        if !matches!(*slot, Slot::Waiting) {
            return Err(answer);
        }
        *slot = Slot::Answered(answer);
        ready.notify_all();
        Ok(())
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let (slot, ready) = &*self.0;
        let mut slot = lock(slot);
        if matches!(*slot, Slot::Waiting) {
            *slot = Slot::Dropped;
            ready.notify_all();
        }
    }
}

impl<T> Pending<T> {
    /// Waits up to `bound` for the answer; past it, gives up (the thread then learns so from
    /// its hand-over).
    pub(super) fn wait(self, bound: Duration) -> Result<T, String> {
        let deadline = Instant::now() + bound;
        let (slot, ready) = &*self.0;
        let mut slot = lock(slot);
        loop {
            match std::mem::replace(&mut *slot, Slot::Waiting) {
                Slot::Answered(answer) => return Ok(answer),
                Slot::Dropped | Slot::GaveUp => {
                    return Err("the coordination thread has stopped".into())
                }
                Slot::Waiting => {}
            }
            let now = Instant::now();
            if now >= deadline {
                *slot = Slot::GaveUp;
                return Err(format!(
                    "no answer from the coordination thread within {} s",
                    bound.as_secs()
                ));
            }
            slot = match ready.wait_timeout(slot, deadline - now) {
                Ok((slot, _)) => slot,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The coordination thread: a current-thread runtime serving commands until the channel closes.
pub(super) fn run(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
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
            match tokio::time::timeout(budget, inner.acquire(&volume, mode, wait, &reply)).await {
                // Answered inside, while the volume's lock was held (or undone, its caller
                // having given up).
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = reply.deliver(Err(e));
                }
                Err(_) => {
                    // Cut off mid-way, a node may have been created or replaced.
                    inner.doubt(&volume);
                    let _ = reply.deliver(Err(inner.unavailable(
                        &volume,
                        format!("no answer from ZooKeeper within {} s", budget.as_secs()),
                    )));
                }
            }
        }
        Command::Release { volume, reply } => {
            let _ = reply.deliver(give_back(&inner, &volume, inner.release(&volume)).await);
        }
        Command::Leave { volume, reply } => {
            let _ = reply.deliver(give_back(&inner, &volume, inner.leave(&volume)).await);
        }
        Command::Leases { reply } => {
            let _ = reply.deliver(inner.leases().await);
        }
        Command::ExpireSession { direct, reply } => {
            let _ = reply.deliver(inner.expire_session(&direct).await);
        }
    }
}

/// Runs a release or leave of `volume` within its budget; cut off mid-way, the volume is in
/// doubt.
async fn give_back(
    inner: &Arc<Inner>,
    volume: &VolumeKey,
    work: impl std::future::Future<Output = Result<(), CoordError>>,
) -> Result<(), CoordError> {
    let budget = inner.session_timeout * 2 + Duration::from_secs(1);
    match tokio::time::timeout(budget, work).await {
        Ok(res) => res,
        Err(_) => {
            inner.doubt(volume);
            Err(inner.unavailable(
                volume,
                format!("no answer from ZooKeeper within {} s", budget.as_secs()),
            ))
        }
    }
}
