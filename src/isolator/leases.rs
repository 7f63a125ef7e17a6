//! The lease steps the phases call: which drivers' volumes are leased, taking and giving back a
//! volume's lease, and fencing a container whose lease was lost while it was prepared.

use std::time::Duration;

use crate::backend::registry::{LOCAL_DRIVER, LOOP_DRIVER};
use crate::backend::Scope;
use crate::coord::{Coordinator, LeaseMode};
use crate::error::render_chain;
use crate::spec::VolumeKey;
use crate::state::{ContainerId, Owner, Use, VolumeRecord};

use super::{fence_container, lock, Isolator, IsolatorError};

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
    pub(super) fn take_lease(
        &self,
        key: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), IsolatorError> {
        match &self.coord {
            Some(c) => {
                self.await_first_session(c.as_ref());
                Ok(c.acquire(key, mode, wait)?)
            }
            None => Ok(()),
        }
    }

    /// Right after start (a `dvdi run`, a module just loaded) the first session may still be
    /// coming up: give it up to one session timeout from the start. Later, a coordinator without
    /// a session fails at once (fail closed).
    fn await_first_session(&self, c: &dyn Coordinator) {
        let grace = (self.coord_since + self.config.lease_session_timeout)
            .saturating_duration_since(std::time::Instant::now());
        if !grace.is_zero() && !c.status().connected {
            c.wait_connected(grace);
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
                self.await_first_session(c.as_ref());
                Ok(c.release(key)?)
            }
            None => Ok(()),
        }
    }
}
