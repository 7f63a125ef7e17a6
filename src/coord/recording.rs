//! A recording coordinator: the core's test double. Leases live in memory, shared by the
//! "agents" of one [`RecordingCluster`], and every call is recorded as a [`Call`] so a test can
//! assert the exact order of lease and backend steps. It follows the same rules as the real
//! coordinator ([`super::zk`]), which is tested against a real ZooKeeper server; faults that need
//! a real session (expiry, disconnection) are injected here with [`RecordingCoordinator::lose`]
//! and [`RecordingCluster::set_down`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    CoordError, CoordStatus, Coordinator, Holder, Lease, LeaseLoss, LeaseMode, LossHandler,
    LossReason,
};
use crate::spec::VolumeKey;

/// One call a coordinator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `acquire(volume, mode, _)`.
    Acquire {
        /// The volume.
        volume: VolumeKey,
        /// The mode asked for.
        mode: LeaseMode,
    },
    /// `release(volume)`.
    Release {
        /// The volume.
        volume: VolumeKey,
    },
    /// `leave(volume)`.
    Leave {
        /// The volume.
        volume: VolumeKey,
    },
}

#[derive(Debug, Default)]
struct Leases {
    rw: HashMap<VolumeKey, Holder>,
    ro: HashMap<VolumeKey, BTreeMap<String, Holder>>,
    down: bool,
}

/// The shared state of several recording coordinators: one "ZooKeeper".
#[derive(Debug, Default)]
pub struct RecordingCluster {
    leases: Mutex<Leases>,
    changed: Condvar,
}

impl RecordingCluster {
    /// An empty cluster.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every coordinator of the cluster fail closed (`true`), or work again.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Every lease held, sorted by volume.
    pub fn leases(&self) -> Vec<Lease> {
        let l = self.lock();
        let mut out: Vec<Lease> =
            l.rw.iter()
                .map(|(v, h)| Lease {
                    volume: v.clone(),
                    mode: LeaseMode::ReadWrite,
                    holder: h.clone(),
                })
                .chain(l.ro.iter().flat_map(|(v, holders)| {
                    holders.values().map(move |h| Lease {
                        volume: v.clone(),
                        mode: LeaseMode::ReadOnly,
                        holder: h.clone(),
                    })
                }))
                .collect();
        out.sort_by(|a, b| {
            (a.volume.driver.as_str(), a.volume.name.as_str(), a.mode).cmp(&(
                b.volume.driver.as_str(),
                b.volume.name.as_str(),
                b.mode,
            ))
        });
        out
    }
}

/// One agent's coordinator on a [`RecordingCluster`].
pub struct RecordingCoordinator {
    cluster: Arc<RecordingCluster>,
    agent: String,
    calls: Mutex<Vec<Call>>,
    handler: Mutex<Option<Arc<LossHandler>>>,
}

impl std::fmt::Debug for RecordingCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingCoordinator")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl RecordingCoordinator {
    /// Agent `agent` of `cluster`.
    pub fn new(cluster: &Arc<RecordingCluster>, agent: &str) -> Self {
        Self {
            cluster: Arc::clone(cluster),
            agent: agent.to_owned(),
            calls: Mutex::new(Vec::new()),
            handler: Mutex::new(None),
        }
    }

    /// The calls received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How this agent holds `volume`, if at all.
    pub fn held(&self, volume: &VolumeKey) -> Option<LeaseMode> {
        let l = self.cluster.lock();
        if l.rw.get(volume).is_some_and(|h| h.agent == self.agent) {
            Some(LeaseMode::ReadWrite)
        } else if l
            .ro
            .get(volume)
            .is_some_and(|m| m.contains_key(&self.agent))
        {
            Some(LeaseMode::ReadOnly)
        } else {
            None
        }
    }

    /// Simulates losing the lease on `volume` (a session that expired, a node deleted under
    /// us): drops it and tells the loss handler, as the real coordinator's thread does.
    pub fn lose(&self, volume: &VolumeKey, reason: LossReason) {
        let holder = {
            let mut l = self.cluster.lock();
            if l.rw.get(volume).is_some_and(|h| h.agent == self.agent) {
                l.rw.remove(volume);
            }
            if let Some(m) = l.ro.get_mut(volume) {
                m.remove(&self.agent);
            }
            l.rw.get(volume).cloned()
        };
        self.cluster.changed.notify_all();
        let handler = self
            .handler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(h) = handler {
            h(LeaseLoss {
                volume: volume.clone(),
                reason,
                holder,
            });
        }
    }

    /// Removes this agent's lease on `volume`.
    fn give_back(&self, volume: &VolumeKey) {
        let mut l = self.cluster.lock();
        if l.rw.get(volume).is_some_and(|h| h.agent == self.agent) {
            l.rw.remove(volume);
        }
        if let Some(m) = l.ro.get_mut(volume) {
            m.remove(&self.agent);
        }
        drop(l);
        self.cluster.changed.notify_all();
    }

    fn holder(&self) -> Holder {
        Holder {
            agent: self.agent.clone(),
            host: "recording".to_owned(),
            machine: String::new(),
            pid: std::process::id(),
            since: 0,
        }
    }

    fn record(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

impl Coordinator for RecordingCoordinator {
    fn agent(&self) -> &str {
        &self.agent
    }

    fn acquire(
        &self,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError> {
        self.record(Call::Acquire {
            volume: volume.clone(),
            mode,
        });
        let start = Instant::now();
        let mut l = self.cluster.lock();
        loop {
            if l.down {
                return Err(CoordError::Unavailable {
                    volume: volume.clone(),
                    target: "recording".to_owned(),
                    detail: None,
                });
            }
            // A conflicting holder: another agent's rw, or (for rw) another agent's ro.
            let conflict = match l.rw.get(volume) {
                Some(h) if h.agent == self.agent => return Ok(()),
                Some(h) => Some((LeaseMode::ReadWrite, h.clone())),
                None if mode == LeaseMode::ReadWrite => {
                    l.ro.get(volume)
                        .and_then(|m| m.values().find(|h| h.agent != self.agent))
                        .map(|h| (LeaseMode::ReadOnly, h.clone()))
                }
                None => None,
            };
            let Some((held_mode, holder)) = conflict else {
                match mode {
                    LeaseMode::ReadWrite => {
                        l.rw.insert(volume.clone(), self.holder());
                        if let Some(m) = l.ro.get_mut(volume) {
                            m.remove(&self.agent);
                        }
                    }
                    LeaseMode::ReadOnly => {
                        l.ro.entry(volume.clone())
                            .or_default()
                            .insert(self.agent.clone(), self.holder());
                    }
                }
                return Ok(());
            };
            let waited = start.elapsed();
            if waited >= wait {
                return Err(CoordError::Held {
                    volume: volume.clone(),
                    wanted: mode,
                    held_mode,
                    holder: Box::new(holder),
                    waited,
                });
            }
            l = self
                .cluster
                .changed
                .wait_timeout(l, wait - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        self.record(Call::Release {
            volume: volume.clone(),
        });
        let l = self.cluster.lock();
        if l.down {
            return Err(CoordError::Unavailable {
                volume: volume.clone(),
                target: "recording".to_owned(),
                detail: None,
            });
        }
        drop(l);
        self.give_back(volume);
        Ok(())
    }

    fn leave(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        self.record(Call::Leave {
            volume: volume.clone(),
        });
        // One process per agent here: its part is the agent's whole lease.
        self.give_back(volume);
        Ok(())
    }

    fn set_loss_handler(&self, handler: LossHandler) {
        *self.handler.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    fn status(&self) -> CoordStatus {
        let held = self
            .cluster
            .leases()
            .into_iter()
            .filter(|l| l.holder.agent == self.agent)
            .map(|l| (l.volume, l.mode))
            .collect();
        CoordStatus {
            target: "recording".to_owned(),
            agent: self.agent.clone(),
            connected: !self.cluster.lock().down,
            session: None,
            held,
            last_error: None,
        }
    }

    fn leases(&self) -> Result<Vec<Lease>, CoordError> {
        Ok(self.cluster.leases())
    }
}
