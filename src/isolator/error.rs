//! The isolator's errors: one variant per failing step, and the whole-call errors of prepare
//! (with what its rollback left) and cleanup (with what stays recorded for a retry).

use std::fmt;

use crate::backend::BackendError;
use crate::coord::CoordError;
use crate::error::render_chain;
use crate::mount::{DeviceNumber, DeviceUse, TargetError};
use crate::spec::{SpecError, VolumeKey};
use crate::state::{ContainerId, ContainerIdError, StateError};

/// A failed isolator step.
#[derive(Debug, thiserror::Error)]
pub enum IsolatorError {
    /// The container id is not usable.
    #[error("invalid container id")]
    ContainerId(#[from] ContainerIdError),
    /// `prepare` was called twice for one container.
    #[error("container {0} is already prepared; clean it up first")]
    AlreadyPrepared(ContainerId),
    /// The task's volume request breaks the contract.
    #[error("the task's volume request is invalid")]
    Spec(#[from] SpecError),
    /// A container path was refused.
    #[error("{volume}: {}container path refused", place_prefix(.place))]
    Target {
        /// The volume.
        volume: VolumeKey,
        /// The variable or field that gave the path (e.g. `DVDI_VOLUME_CONTAINERPATH2`), when
        /// known.
        place: Option<String>,
        /// Why.
        #[source]
        source: Box<TargetError>,
    },
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The checkpoint could not be read or written.
    #[error("{volume}: checkpoint")]
    State {
        /// The volume.
        volume: VolumeKey,
        /// Why.
        #[source]
        source: Box<StateError>,
    },
    /// The checkpoint directory could not be read.
    #[error("checkpoint")]
    Store(#[source] Box<StateError>),
    /// Reading the host's mount table failed.
    #[error("reading the mount table failed")]
    MountTable(#[source] std::io::Error),
    /// With coordination on, the driver's scope could not be learnt (its plugin did not answer
    /// Capabilities, or failed it), so whether the volume needs a lease is unknown: refused
    /// rather than used without one.
    #[error("{volume}: whether the driver's volumes need a cluster-wide lease is unknown (asking it for its scope failed), so the volume is not used without one; retry once the plugin answers (every prepare asks again), or list the driver in lease_drivers to lease its volumes whatever it answers")]
    ScopeUnknown {
        /// The volume.
        volume: VolumeKey,
        /// Why the scope is unknown.
        #[source]
        source: BackendError,
    },
    /// A writer asked for a volume mounted read-only on this host for its readers.
    #[error("{volume}: mounted read-only on this host, as every container using it reads only (block storage is mounted so without replaying its journal, and the kernel cannot make that mount writable while they use it); a writer can have it once those readers are gone")]
    ReadOnlyMount {
        /// The volume.
        volume: VolumeKey,
    },
    /// The volume's cluster-wide lease could not be taken or given back.
    #[error(transparent)]
    Lease(#[from] CoordError),
    /// A wait for the volume was interrupted (`dvdi run` on Ctrl-C); what was done is undone.
    #[error("{volume}: interrupted while {what}")]
    Interrupted {
        /// The volume.
        volume: VolumeKey,
        /// What it was waiting for.
        what: String,
    },
    /// A volume whose host mount vanished was not mounted again: its file system is still
    /// mounted somewhere (in a container's mount namespace, say), and a second mount beside it
    /// could corrupt it.
    #[error("{volume}: not mounted again at {}: its file system (device {device}) is still {}; a second mount beside it could corrupt it: stop what uses it, then run gc (or let recover run) again", host.display(), uses_text(.uses))]
    StillMounted {
        /// The volume.
        volume: VolumeKey,
        /// Where it was mounted on the host.
        host: std::path::PathBuf,
        /// Its file system's device.
        device: DeviceNumber,
        /// Where it is still mounted.
        uses: Vec<DeviceUse>,
    },
}

/// `mounted at X in …; mounted at Y`.
fn uses_text(uses: &[DeviceUse]) -> String {
    let items: Vec<String> = uses.iter().map(ToString::to_string).collect();
    items.join("; ")
}

/// `PLACE: ` when the place is known.
fn place_prefix(place: &Option<String>) -> String {
    place.as_ref().map(|p| format!("{p}: ")).unwrap_or_default()
}

/// `prepare` failed; nothing it did is left behind unless `rollback` says otherwise.
#[derive(Debug, thiserror::Error)]
pub struct PrepareError {
    /// The container.
    pub container: String,
    /// Why prepare failed.
    #[source]
    pub cause: Box<IsolatorError>,
    /// Failures while undoing what prepare had done (each leaves its volume recorded, to be
    /// released by the next cleanup or recover).
    pub rollback: Vec<IsolatorError>,
}

impl PrepareError {
    /// A failure of `container`'s prepare that left nothing to undo.
    pub(super) fn new(container: &str, cause: IsolatorError) -> Self {
        Self {
            container: container.to_owned(),
            cause: Box::new(cause),
            rollback: Vec::new(),
        }
    }
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preparing volumes for container {} failed",
            self.container
        )?;
        for e in &self.rollback {
            write!(f, " (and undoing it failed: {})", render_chain(e))?;
        }
        Ok(())
    }
}

/// `cleanup` could not unmount some volumes; they stay recorded with the error and are retried by
/// the next cleanup or recover.
#[derive(Debug, thiserror::Error)]
pub struct CleanupError {
    /// The container.
    pub container: ContainerId,
    /// One failure per volume.
    pub failures: Vec<IsolatorError>,
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cleaning up container {}: ", self.container)?;
        for (i, e) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&render_chain(e))?;
        }
        f.write_str(" (kept recorded; retried at the next cleanup or recover)")
    }
}
