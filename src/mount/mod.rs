//! The only code that calls mount(2), umount(2) and openat2(2).
//!
//! Everything that changes the host's mount table goes through a [`Mounter`], so mount logic above
//! this layer can be tested as an exact sequence of calls against a recording fake.

use std::path::{Path, PathBuf};

pub use nix::mount::{MntFlags, MsFlags};

/// A failed mount or unmount.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("mounting {source_path} on {target} (type {fstype}) failed")]
    Mount {
        /// What was mounted.
        source_path: PathBuf,
        /// Where.
        target: PathBuf,
        /// File system type, or `-` for binds and remounts.
        fstype: String,
        /// The errno.
        #[source]
        errno: nix::Error,
    },
    /// umount2(2) failed.
    #[error("unmounting {target} failed")]
    Unmount {
        /// What was unmounted.
        target: PathBuf,
        /// The errno.
        #[source]
        errno: nix::Error,
    },
}

/// mount(2) and umount2(2), behind a trait.
pub trait Mounter: Send + Sync {
    /// mount(2): `source` on `target`, with file system type, flags and data.
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError>;

    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), MountError>;
}

/// The real host: calls the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Mounter for Host {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError> {
        nix::mount::mount(Some(source), target, fstype, flags, data).map_err(|errno| {
            MountError::Mount {
                source_path: source.to_owned(),
                target: target.to_owned(),
                fstype: fstype.unwrap_or("-").to_owned(),
                errno,
            }
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), MountError> {
        nix::mount::umount2(target, flags).map_err(|errno| MountError::Unmount {
            target: target.to_owned(),
            errno,
        })
    }
}
mod stub;
pub use stub::*;
