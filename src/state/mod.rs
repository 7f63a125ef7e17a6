//! The mount table: which volumes are mounted on this host, where, and by which containers.
//!
//! This layer owns the checkpoint under the work directory and nothing else: it never calls a
//! backend or mount(2). Every change is atomic on disk and made under the volume's flock, which
//! threads of the module and `dvdi` processes on the same agent share. See [`Store`] for the layout.

mod record;
mod store;

pub use record::{
    ContainerId, ContainerIdError, Owner, Phase, Use, VolumeRecord, CHECKPOINT_VERSION,
    MAX_CONTAINER_ID_LEN,
};
pub use store::{ScannedVolume, StateError, Store, Surveyed, VolumeGuard};
