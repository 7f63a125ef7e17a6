//! The only code that calls mount(2), umount(2) and openat2(2).
//!
//! Everything that changes the host's mount table goes through a [`Mounter`], so mount logic above
//! this layer can be tested as an exact sequence of calls against a recording fake
//! ([`FakeMounter`]).
//!
//! - target resolution ([`resolve_target`]): where a volume may be bound, never through a
//!   symlink, directories created only where allowed; whether anyone but root could change the
//!   path before the bind ([`ResolvedTarget::audit`]); the link a re-homed volume is reached
//!   through ([`ResolvedTarget::place_link`]);
//! - the mount table ([`read_mountinfo`], [`is_mount_point`], [`is_mount_root`]);
//! - binds and propagation ([`bind`], [`make_rslave`], [`make_rprivate`], [`UnmountGuard`]);
//! - entering a container's mount namespace ([`enter_container`], for `dvdi run`);
//! - who uses a device, in any mount namespace ([`device_users`]), for errors that name it.
//!
//! Nothing here decides *whether* to mount: that is the isolator's, which owns the ordering.

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
    /// The read-only remount of a new bind failed (the bind was detached again).
    #[error("making the bind on {target} read-only failed")]
    ReadOnly {
        /// The bind's target.
        target: PathBuf,
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

mod fake;
mod mountinfo;
mod target;
mod users;

pub use fake::{FakeMounter, MountCall};
pub use mountinfo::{
    is_mount_point, is_mount_root, is_read_only, parse_mountinfo, read_mountinfo, MountInfoEntry,
};
pub use target::{
    resolve_parent_in, resolve_target, resolve_target_in, resolve_target_with, CreatedDirs,
    ResolvedTarget, Resolver, TargetError, TargetPolicy, Writer,
};
pub use users::{device_users, DeviceNumber, DeviceUse, Process};

/// Binds `source` onto `target` (`MS_BIND | MS_REC`), then, for read-only, remounts the bind
/// read-only (`MS_REMOUNT | MS_BIND | MS_RDONLY`): the kernel ignores `MS_RDONLY` on the call
/// that creates a bind, so a read-only bind takes two. If the second call fails the bind is
/// detached again: a writable bind is never left where a read-only one was asked for.
///
/// Only the top mount becomes read-only; mounts below `source` that the recursive bind copies
/// keep their own flags (a volume has none in practice).
pub fn bind(
    m: &dyn Mounter,
    source: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), MountError> {
    m.mount(
        source,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if read_only {
        let undo = UnmountGuard::new(m, target);
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        m.mount(source, target, None, ro, None)
            .map_err(|e| match e {
                MountError::Mount { errno, .. } => MountError::ReadOnly {
                    target: target.to_owned(),
                    errno,
                },
                other => other,
            })?;
        undo.disarm();
    }
    Ok(())
}

/// Makes every mount under `path` a slave of its peer group, so mounts made here do not propagate
/// back to the host while the host's still reach here (what a container's new mount namespace
/// needs first).
pub fn make_rslave(m: &dyn Mounter, path: &Path) -> Result<(), MountError> {
    propagation(m, path, MsFlags::MS_SLAVE)
}

/// Makes every mount under `path` private: no propagation either way (for a namespace that
/// must neither leak mounts to the host nor see the host's, as tests want).
pub fn make_rprivate(m: &dyn Mounter, path: &Path) -> Result<(), MountError> {
    propagation(m, path, MsFlags::MS_PRIVATE)
}

/// A propagation change: source and type are ignored by the kernel.
fn propagation(m: &dyn Mounter, path: &Path, kind: MsFlags) -> Result<(), MountError> {
    m.mount(Path::new("none"), path, None, MsFlags::MS_REC | kind, None)
}

/// Unmounts `target` (lazily, `MNT_DETACH`) when dropped, unless [`UnmountGuard::disarm`]ed: the
/// undo for a mount whose later steps may fail. Drop cannot return an error, so a failed unmount
/// is logged (`log::warn!`), once, here.
pub struct UnmountGuard<'a> {
    mounter: &'a dyn Mounter,
    target: PathBuf,
    armed: bool,
}

impl<'a> UnmountGuard<'a> {
    /// Guards the mount at `target`.
    pub fn new(mounter: &'a dyn Mounter, target: &Path) -> Self {
        Self {
            mounter,
            target: target.to_owned(),
            armed: true,
        }
    }

    /// The guarded mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Keeps the mount: the guard does nothing on drop.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UnmountGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.mounter.umount(&self.target, MntFlags::MNT_DETACH) {
                log::warn!("{}", crate::error::render_chain(&e));
            }
        }
    }
}

/// One bind a container needs: the volume's host mount onto the verified target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host mount point.
    pub source: PathBuf,
    /// The target (inside the rootfs when there is one).
    pub target: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// A failed step of entering a container's mount namespace; each names the step and its paths,
/// with the OS error as the source.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// unshare(CLONE_NEWNS) failed.
    #[error("creating a mount namespace (unshare CLONE_NEWNS) failed")]
    Unshare(#[source] nix::Error),
    /// Making `/` a slave mount, so the binds do not propagate back to the host, failed.
    #[error("making / a slave mount in the new namespace failed")]
    Propagation(#[source] MountError),
    /// A volume's bind failed.
    #[error("binding the volume at {source_path} onto {target} failed")]
    Bind {
        /// The volume's host mount point.
        source_path: PathBuf,
        /// The target.
        target: PathBuf,
        /// The errno of mount(2).
        #[source]
        errno: nix::Error,
    },
    /// The read-only remount of a volume's bind failed (the bind was detached again).
    #[error("making the bind of {source_path} on {target} read-only failed")]
    ReadOnly {
        /// The volume's host mount point.
        source_path: PathBuf,
        /// The target.
        target: PathBuf,
        /// The errno of the remount.
        #[source]
        errno: nix::Error,
    },
    /// chroot into the rootfs failed.
    #[error("changing the root to {path} (chroot) failed")]
    Chroot {
        /// The rootfs.
        path: PathBuf,
        /// The errno.
        #[source]
        errno: nix::Error,
    },
    /// chdir to `/` inside the new root failed.
    #[error("changing to / inside the root file system {path} failed")]
    Chdir {
        /// The rootfs.
        path: PathBuf,
        /// The errno.
        #[source]
        errno: nix::Error,
    },
}

/// What the containerizer does for a prepared container, done to the calling process (meant for
/// a child between fork and exec, as `dvdi run` does): a new mount namespace whose mounts do not
/// propagate back, the binds, then chroot into `rootfs` when given. Afterwards the binds exist
/// only for this process and its children.
pub fn enter_container(binds: &[Bind], rootfs: Option<&Path>) -> Result<(), EnterError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(EnterError::Unshare)?;
    make_rslave(&Host, Path::new("/")).map_err(EnterError::Propagation)?;
    for b in binds {
        // The step's own error names both paths; only the errno is kept from the mount layer.
        bind(&Host, &b.source, &b.target, b.read_only).map_err(|e| match e {
            MountError::ReadOnly { errno, .. } => EnterError::ReadOnly {
                source_path: b.source.clone(),
                target: b.target.clone(),
                errno,
            },
            MountError::Mount { errno, .. } | MountError::Unmount { errno, .. } => {
                EnterError::Bind {
                    source_path: b.source.clone(),
                    target: b.target.clone(),
                    errno,
                }
            }
        })?;
    }
    if let Some(root) = rootfs {
        nix::unistd::chroot(root).map_err(|errno| EnterError::Chroot {
            path: root.to_owned(),
            errno,
        })?;
        nix::unistd::chdir("/").map_err(|errno| EnterError::Chdir {
            path: root.to_owned(),
            errno,
        })?;
    }
    Ok(())
}
