//! The lease steps the phases call: which drivers' volumes are leased, taking and giving back a
//! volume's lease, and fencing a container whose lease was lost while it was prepared.

use std::time::{Duration, Instant};

use crate::backend::registry::{LOCAL_DRIVER, LOOP_DRIVER};
use crate::backend::Scope;
use crate::coord::{CoordError, Coordinator, LeaseMode};
use crate::error::render_chain;
use crate::spec::VolumeKey;
use crate::state::{ContainerId, Owner, Use, VolumeRecord};

use super::{fence_container, lock, Isolator, IsolatorError};

/// The longest a lease or ZooKeeper wait goes without looking whether it was interrupted.
const WAIT_SLICE: Duration = Duration::from_millis(250);

impl Isolator {
    /// Whether `record`'s volume needs a cluster-wide lease: never without coordination or for
    /// the host-local built-in drivers; always for drivers in `lease_drivers`; otherwise when the
    /// driver says its scope is global.
    ///
    /// Only a real answer is remembered for the process's life: a scope the plugin gave (a
    /// missing or unknown one is local, as for Docker), or a driver that has no way to say (a
    /// plugin without the Capabilities endpoint, dvdcli), which is local. A failed answer (a
    /// plugin down or still starting, a 500) is an error, asked again next time: a global
    /// plugin's volume must never be used unleased because its plugin stumbled once.
    pub(super) fn leased(&self, record: &VolumeRecord) -> Result<bool, IsolatorError> {
        let driver = &record.driver;
        if self.coord.is_none() {
            return Ok(false);
        }
        if self.config.lease_drivers.contains(driver) {
            return Ok(true);
        }
        if matches!(driver.as_str(), LOCAL_DRIVER | LOOP_DRIVER) {
            return Ok(false);
        }
        if let Some(known) = lock(&self.leased).get(driver) {
            return Ok(*known);
        }
        let global = match self
            .backends
            .backend(driver, record.dvdcli.as_deref())
            .and_then(|b| b.capabilities())
        {
            Ok(caps) => caps.scope == Scope::Global,
            Err(e) if e.is_unsupported() => false,
            Err(source) => {
                return Err(IsolatorError::ScopeUnknown {
                    volume: record.key(),
                    source,
                })
            }
        };
        lock(&self.leased).insert(driver.clone(), global);
        Ok(global)
    }

    /// Fences `id` when a lease among `leased` is no longer held (lost while its prepare ran).
    pub(super) fn fence_if_lease_lost(&self, id: &ContainerId, leased: &[VolumeKey]) {
        let Some(c) = &self.coord else { return };
        if leased.is_empty() {
            return;
        }
        let held = c.status().held;
        for key in leased {
            if !held.iter().any(|(k, _)| k == key) {
                let message = format!("{key}: lease lost while the container was being prepared");
                fence_container(&self.fence, id, &message);
                return;
            }
        }
    }

    /// Takes `mode` on `key`'s lease, waiting up to `wait` for another agent to let go.
    ///
    /// The wait is taken in slices of [`WAIT_SLICE`], so that it is named for a progress display
    /// with what it waits for (who holds the lease) and ends soon after [`Waits::interrupt`]
    /// (a lease freed meanwhile is still taken at once: each slice watches the holder's node).
    ///
    /// [`Waits::interrupt`]: crate::backend::Waits::interrupt
    pub(super) fn take_lease(
        &self,
        key: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), IsolatorError> {
        let Some(c) = &self.coord else {
            return Ok(());
        };
        self.await_first_session(c.as_ref(), key)?;
        let start = Instant::now();
        let named = self
            .waits
            .begin(format!("taking the {mode} lease of {key} in ZooKeeper"));
        let mut held_by = String::new();
        loop {
            if self.waits.is_interrupted() {
                return Err(self.interrupted(key, format!("waiting for its {mode} lease{held_by}")));
            }
            let left = wait.saturating_sub(start.elapsed());
            match c.acquire(key, mode, left.min(WAIT_SLICE)) {
                Err(CoordError::Held {
                    volume,
                    wanted,
                    held_mode,
                    holder,
                    waited: _,
                }) => {
                    let waited = start.elapsed();
                    if waited >= wait {
                        return Err(CoordError::Held {
                            volume,
                            wanted,
                            held_mode,
                            holder,
                            waited,
                        }
                        .into());
                    }
                    held_by = format!(" (held {held_mode} by {holder})");
                    named.rename(format!(
                        "waiting for the {wanted} lease of {volume}: held {held_mode} by {holder}; up to {} s",
                        wait.as_secs()
                    ));
                }
                other => return Ok(other?),
            }
        }
    }

    /// `key`'s wait for `what` was interrupted.
    pub(super) fn interrupted(&self, key: &VolumeKey, what: String) -> IsolatorError {
        IsolatorError::Interrupted {
            volume: key.clone(),
            what,
        }
    }

    /// Right after start (a `dvdi run`, a module just loaded) the first session may still be
    /// coming up: give it up to one session timeout from the start, unless a connection attempt
    /// fails first (ZooKeeper down: then at once). Later, a coordinator without a session fails
    /// at once (fail closed). Returns without a session too: the lease call says why it failed.
    fn await_first_session(
        &self,
        c: &dyn Coordinator,
        key: &VolumeKey,
    ) -> Result<(), IsolatorError> {
        let deadline = self.coord_since + self.config.lease_session_timeout;
        let status = c.status();
        if status.connected || Instant::now() >= deadline {
            return Ok(());
        }
        let what = format!("waiting for ZooKeeper at {} to answer", status.target);
        let _named = self.waits.begin(format!(
            "{what} (a process just started gives it up to {} s)",
            self.config.lease_session_timeout.as_secs()
        ));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if c.wait_connected(left.min(WAIT_SLICE)) {
                return Ok(());
            }
            // A failed attempt: ZooKeeper is down or refuses us, and the lease fails closed now.
            if c.status().last_error.is_some() || left.is_zero() {
                return Ok(());
            }
            if self.waits.is_interrupted() {
                return Err(self.interrupted(key, what));
            }
        }
    }

    /// The lease a record's users need: read-write when any of them writes.
    pub(super) fn mode_of(record: &VolumeRecord) -> LeaseMode {
        if record.users.values().any(|u| !u.read_only) {
            LeaseMode::ReadWrite
        } else {
            LeaseMode::ReadOnly
        }
    }

    /// Whether a user of a volume is this process's: a Mesos container's (the module's) or this
    /// `dvdi run`'s own. Its users are what this process's part of the agent's lease stands for.
    /// (In a `dvdi run`, the module's containers count too: it then keeps its part only until it
    /// exits, right after its cleanup, and its session's end gives it up.)
    pub(super) fn own_user(usage: &Use) -> bool {
        match usage.owner {
            Owner::Mesos => true,
            Owner::Process { pid, .. } => u32::try_from(pid) == Ok(std::process::id()),
        }
    }

    /// Gives up this process's part of `key`'s lease (its last user here is gone, other
    /// processes' users remain). A failure is logged: the part is forgotten anyway, and given up
    /// when the session can be used again, or with it.
    pub(super) fn leave_lease(&self, key: &VolumeKey) {
        if let Some(c) = &self.coord {
            if let Err(e) = c.leave(key) {
                log::warn!("{}", render_chain(&e));
            }
        }
    }

    /// Gives `key`'s lease back: the agent's whole lease (this process's part and every other
    /// process's of this agent), once no one here uses the volume.
    pub(super) fn release_lease(&self, key: &VolumeKey) -> Result<(), IsolatorError> {
        match &self.coord {
            Some(c) => {
                self.await_first_session(c.as_ref(), key)?;
                Ok(c.release(key)?)
            }
            None => Ok(()),
        }
    }
}
