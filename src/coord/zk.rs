//! The ZooKeeper coordinator: leases as ephemeral nodes under `<path>/volumes/<driver>/<name>/`.
//!
//! TODO(zk helper): implement. The signatures below are the contract the rest of the crate uses.

use std::time::Duration;

use super::{CoordError, CoordStatus, Coordinator, Lease, LeaseMode, LossHandler};
use crate::spec::VolumeKey;

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
    /// Parses `zk://host:port[,host:port...]/path`.
    pub fn parse(value: &str) -> Result<Self, ZkUrlError> {
        let _ = value;
        todo!()
    }
}

impl std::fmt::Display for ZkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.hosts.join(","), self.path)
    }
}

/// Leases in ZooKeeper, on one session owned by a thread of this layer.
pub struct ZkCoordinator {}

impl ZkCoordinator {
    /// Starts the coordinator's thread and connects in the background: it never fails because
    /// ZooKeeper is down (calls then fail closed until it is up).
    pub fn start(target: ZkTarget, agent: String, session_timeout: Duration) -> Self {
        let _ = (target, agent, session_timeout);
        todo!()
    }
}

impl Coordinator for ZkCoordinator {
    fn agent(&self) -> &str {
        todo!()
    }
    fn acquire(
        &self,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError> {
        let _ = (volume, mode, wait);
        todo!()
    }
    fn release(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let _ = volume;
        todo!()
    }
    fn set_loss_handler(&self, handler: LossHandler) {
        let _ = handler;
        todo!()
    }
    fn status(&self) -> CoordStatus {
        todo!()
    }
    fn leases(&self) -> Result<Vec<Lease>, CoordError> {
        todo!()
    }
}
