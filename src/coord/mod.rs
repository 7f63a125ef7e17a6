//! Cluster-wide leases on volumes, so that a read-write volume is mounted on one agent at a time.
//!
//! The isolator asks a [`Coordinator`] for a lease before this agent's first backend mount of a
//! leased volume, upgrades it when a local container asks for write access, and gives it back only
//! after the backend unmount of the last local user succeeded. A lease that is lost while
//! containers depend on it (the session expired, the client was cut off for longer than the
//! session timeout, another agent holds it) is reported through the loss handler, which fences
//! those containers.
//!
//! This layer knows volumes by [`VolumeKey`] and nothing of mounts, backends or Mesos. It must
//! never block the caller past the wait it was given, and never report a lease as held that it
//! cannot vouch for: when in doubt, it holds nothing (fail closed).
//!
//! [`zk`] is the real coordinator (ZooKeeper); [`recording`] is the core's test double.

pub mod recording;
pub mod zk;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::VolumeKey;

/// How a lease is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseMode {
    /// Shared with other agents that also only read.
    ReadOnly,
    /// This agent alone: no other agent mounts the volume at all.
    ReadWrite,
}

impl fmt::Display for LeaseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseMode::ReadOnly => "read-only",
            LeaseMode::ReadWrite => "read-write",
        })
    }
}

/// Who holds a lease: the JSON data of its node (`{"agent","host","machine","pid","since"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holding agent's name (`agent_name`).
    pub agent: String,
    /// The host it runs on.
    pub host: String,
    /// The host's machine id (`/etc/machine-id`, else the kernel's boot id): tells apart hosts
    /// that share a host name. Empty in nodes written by earlier versions.
    #[serde(default)]
    pub machine: String,
    /// The holding process.
    pub pid: u32,
    /// When it took the lease, in seconds since the Unix epoch.
    pub since: u64,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent {:?} (host {}", self.agent, self.host)?;
        if !self.machine.is_empty() {
            // A prefix tells cloned hosts apart; the whole id is in the node and the listing.
            let short: String = self.machine.chars().take(8).collect();
            write!(f, ", machine {short}")?;
        }
        write!(f, ", pid {}) since {}", self.pid, format_since(self.since))
    }
}

/// `since` as a UTC time stamp (`2026-12-02T13:05:00Z`).
pub fn format_since(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for every u64 day count we can see.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One lease in the cluster, as `dvdi leases` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The volume.
    pub volume: VolumeKey,
    /// How it is held.
    pub mode: LeaseMode,
    /// By whom.
    pub holder: Holder,
}

/// Why this process no longer holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// The ZooKeeper session expired: every ephemeral node of it is gone.
    SessionExpired,
    /// ZooKeeper did not answer for two thirds of the session timeout (how long, here): the
    /// session must be assumed lost before the server may expire it and let another agent in.
    Disconnected(Duration),
    /// The lease's node is gone or held by another agent (found at recover, or after the node
    /// was deleted under us).
    TakenOver,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::SessionExpired => f.write_str("the ZooKeeper session expired"),
            LossReason::Disconnected(d) => write!(
                f,
                "ZooKeeper did not answer for {:.1} s, two thirds of the session timeout",
                d.as_secs_f64()
            ),
            LossReason::TakenOver => f.write_str("the lease was taken by another agent"),
        }
    }
}

/// A lease this process held and lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLoss {
    /// The volume.
    pub volume: VolumeKey,
    /// Why.
    pub reason: LossReason,
    /// Who holds it now, when known.
    pub holder: Option<Holder>,
}

impl fmt::Display for LeaseLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: lease lost: {}", self.volume, self.reason)?;
        match &self.holder {
            Some(h) => write!(f, "; now held by {h}"),
            None => f.write_str("; no other agent holds it now"),
        }
    }
}

/// The state of the connection, for `dvdi status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoordStatus {
    /// Where it coordinates (`zk://…`), or `none`.
    pub target: String,
    /// This agent's name in leases.
    pub agent: String,
    /// Connected to ZooKeeper with a live session.
    pub connected: bool,
    /// The session id (`0x…`), when there is one.
    pub session: Option<String>,
    /// Leases this process holds.
    pub held: Vec<(VolumeKey, LeaseMode)>,
    /// The last connection problem, when there was one.
    pub last_error: Option<String>,
}

/// Why a lease could not be taken or given back.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Another agent holds a conflicting lease and did not let go within the wait.
    #[error("{volume}: {wanted} lease refused: held {} by {holder}; waited {} s", held_mode, waited.as_secs())]
    Held {
        /// The volume.
        volume: VolumeKey,
        /// What was asked for.
        wanted: LeaseMode,
        /// How the other agent holds it.
        held_mode: LeaseMode,
        /// Who holds it (boxed: errors travel by value).
        holder: Box<Holder>,
        /// How long the call waited.
        waited: Duration,
    },
    /// No live ZooKeeper session: leased volumes are refused (fail closed).
    #[error("{volume}: cannot take a lease: not connected to ZooKeeper at {target}{}; volumes that need no lease are unaffected", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Unavailable {
        /// The volume.
        volume: VolumeKey,
        /// Where.
        target: String,
        /// The last connection error, when known.
        detail: Option<String>,
    },
    /// A ZooKeeper operation failed.
    #[error("{volume}: ZooKeeper {op} on {path} failed: {message}")]
    Zk {
        /// The volume.
        volume: VolumeKey,
        /// The operation.
        op: &'static str,
        /// The node.
        path: String,
        /// The client's error.
        message: String,
    },
    /// Listing the cluster's leases failed.
    #[error("listing leases under {path} failed: {message}")]
    List {
        /// The node.
        path: String,
        /// Why.
        message: String,
    },
}

/// Called (from the coordination layer's own thread) for each lease this process lost.
pub type LossHandler = Box<dyn Fn(LeaseLoss) + Send + Sync>;

/// Cluster-wide volume leases. Every call is synchronous and bounded.
pub trait Coordinator: Send + Sync {
    /// This agent's name in leases.
    fn agent(&self) -> &str;

    /// Takes `mode` on `volume` for this agent, or upgrades a read-only lease it holds to
    /// read-write; waits up to `wait` while another agent holds a conflicting lease. Holding it
    /// already in `mode` or a stronger one is success. A stale node of this agent's own (a
    /// previous process of this agent, now dead) is taken over.
    fn acquire(
        &self,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError>;

    /// Gives this agent's lease on `volume` back, whatever its mode: this process's part and
    /// that of every other process of this agent on this host (to be called once no one here
    /// uses the volume). Holding none is success.
    fn release(&self, volume: &VolumeKey) -> Result<(), CoordError>;

    /// Gives up this process's part of the agent's lease on `volume`, which stays with the other
    /// processes of this agent that hold it (to be called when this process's last user of the
    /// volume is gone while others still use it). Without a session, the part is forgotten at
    /// once and given up as soon as the session can be used again (or goes with it). Holding
    /// none is success.
    fn leave(&self, volume: &VolumeKey) -> Result<(), CoordError>;

    /// Sets the function told of every lease this process loses (replacing an earlier one).
    fn set_loss_handler(&self, handler: LossHandler);

    /// The connection's state and the leases held.
    fn status(&self) -> CoordStatus;

    /// Every lease in the cluster, sorted by driver and name.
    fn leases(&self) -> Result<Vec<Lease>, CoordError>;

    /// Waits up to `timeout` for a live session; whether there is one.
    fn wait_connected(&self, timeout: Duration) -> bool {
        // Coordinators that can wait on their connection's state override this; the default
        // asks the status at a short interval.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.status().connected {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }
}
