//! What a backend answers is checked before anyone records or binds it.
//!
//! A mount point comes from a plugin, the dvdcli program or a built-in driver; the isolator
//! records it and the containerizer binds it into a task. So every answer of [`Backend::mount`]
//! passes [`check_mountpoint`] first, in one place: the [`Checked`] wrapper the
//! [registry](super::registry) puts around every backend it opens. A refused answer is undone at
//! once (Unmount with the same id) and reaches the caller as
//! [`BackendErrorKind::BadMountpoint`], naming the driver, the volume and the answer.
//!
//! What is refused, whatever the backend: an answer that is empty, holds a NUL byte, is not an
//! absolute normalised path, is `/`, lies in a system tree ([`SYSTEM_TREES`] and `/lib*`), does
//! not exist, is not a directory, or is reached through a symbolic link (the path is opened one
//! component at a time, never following one, and the handle is checked, so a link swapped in
//! meanwhile is seen). For plugins and dvdcli the operator may also name the only roots mount
//! points may lie under (`plugin_mount_roots`); the built-in drivers answer under their own
//! configured roots, so that policy is not applied to them.
//!
//! This module must never follow a symlink in an answer, and never unmount anything itself: the
//! backend that mounted undoes its own mount.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{
    Backend, BackendError, BackendErrorKind, Call, Capabilities, MountId, MountRequest, VolumeInfo,
};
use crate::mount::{self, TargetError, TargetPolicy};
use crate::spec::{ContainerPath, DriverName, PathError, VolumeName, VolumeOpts};

/// Host directories a volume is never mounted in (besides `/` itself and every top-level
/// directory whose name starts with `lib`: `/lib`, `/lib64`, `/libx32`, …).
pub const SYSTEM_TREES: &[&str] = &[
    "/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin",
];

/// Where a backend's mount points may lie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountpointPolicy {
    /// When not empty, a mount point must lie below one of these directories.
    pub roots: Vec<PathBuf>,
}

/// Why a mount point was refused.
#[derive(Debug, thiserror::Error)]
pub enum MountpointError {
    /// An empty answer (a plugin without a `Mountpoint`, a dvdcli that printed nothing).
    #[error("it is empty")]
    Empty,
    /// A NUL byte: the path would be cut short wherever it reaches the kernel.
    #[error("it holds a NUL byte")]
    Nul,
    /// Not absolute: it would depend on the working directory.
    #[error("it is not an absolute path")]
    NotAbsolute,
    /// Not UTF-8 (only the dvdcli program can answer such a path).
    #[error("it is not UTF-8")]
    NotUtf8,
    /// A path the checks cannot take as it is (`..`, too long).
    #[error("it is not a usable path")]
    Unusable(#[source] PathError),
    /// The host's root directory.
    #[error("it is the host's root directory /")]
    HostRoot,
    /// Inside a system tree.
    #[error("it lies in the system tree {tree}, where no volume is ever mounted")]
    SystemTree {
        /// The tree.
        tree: PathBuf,
    },
    /// Outside every root the operator allows (`plugin_mount_roots`).
    #[error("it lies outside every directory plugin_mount_roots allows ({roots})")]
    OutsideRoots {
        /// The allowed roots, as configured.
        roots: String,
    },
    /// Missing, not a directory, reached through a symlink, or not openable.
    #[error("it is not a directory reached without symbolic links")]
    Directory(#[source] TargetError),
}

/// Checks a mount point a backend answered; returns it normalised (no repeated or trailing `/`).
pub fn check_mountpoint(
    answer: &Path,
    policy: &MountpointPolicy,
) -> Result<PathBuf, MountpointError> {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(answer.as_os_str());
    if bytes.is_empty() {
        return Err(MountpointError::Empty);
    }
    if bytes.contains(&0) {
        return Err(MountpointError::Nul);
    }
    if !answer.is_absolute() {
        return Err(MountpointError::NotAbsolute);
    }
    let text = answer.to_str().ok_or(MountpointError::NotUtf8)?;
    let path = ContainerPath::absolute(text).map_err(|e| match e {
        PathError::Root => MountpointError::HostRoot,
        e => MountpointError::Unusable(e),
    })?;
    let normal = path.as_path();
    if normal == Path::new("/") {
        return Err(MountpointError::HostRoot);
    }
    if let Some(Component::Normal(top)) = normal.components().nth(1) {
        let tree = Path::new("/").join(top);
        let lib = top.to_str().is_some_and(|t| t.starts_with("lib"));
        if lib || SYSTEM_TREES.iter().any(|t| Path::new(t) == tree) {
            return Err(MountpointError::SystemTree { tree });
        }
    }
    if !policy.roots.is_empty()
        && !policy
            .roots
            .iter()
            .any(|root| normal.starts_with(root) && normal != root.as_path())
    {
        let roots: Vec<String> = policy
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Err(MountpointError::OutsideRoots {
            roots: roots.join(", "),
        });
    }
    // Opened from `/` one component at a time, never through a link; the handle (a directory)
    // is what is judged, not the name.
    let verified = mount::resolve_target(Path::new("/"), &path, &TargetPolicy::MustExist)
        .map_err(MountpointError::Directory)?;
    Ok(verified.path().to_owned())
}

/// A backend whose mount answers are checked (see the module docs).
pub struct Checked {
    inner: Arc<dyn Backend>,
    policy: MountpointPolicy,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("driver", self.inner.driver())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Checked {
    /// Wraps `inner`, judging its mount points by `policy`.
    pub fn new(inner: Arc<dyn Backend>, policy: MountpointPolicy) -> Self {
        Self { inner, policy }
    }
}

impl Backend for Checked {
    fn driver(&self) -> &DriverName {
        self.inner.driver()
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.inner.create(name, opts)
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        self.inner.remove(name)
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let answer = self.inner.mount(req)?;
        check_mountpoint(&answer, &self.policy).map_err(|reason| {
            // The backend mounted: undo it, so nothing stays mounted that nobody records.
            let undo = self.inner.unmount(req.name, req.id).err().map(Box::new);
            BackendError::new(
                self.inner.driver(),
                Some(req.name),
                Call::Mount,
                BackendErrorKind::BadMountpoint {
                    answer,
                    reason,
                    undo,
                },
            )
        })
    }

    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        self.inner.unmount(name, id)
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        self.inner.path(name)
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        self.inner.get(name)
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        self.inner.list()
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(answer: &str, policy: &MountpointPolicy) -> MountpointError {
        check_mountpoint(Path::new(answer), policy).expect_err(answer)
    }

    #[test]
    fn lexical_refusals_name_their_reason() {
        let any = MountpointPolicy::default();
        assert!(matches!(refused("", &any), MountpointError::Empty));
        assert!(matches!(refused("/mnt/a\0b", &any), MountpointError::Nul));
        assert!(matches!(
            refused("mnt/a", &any),
            MountpointError::NotAbsolute
        ));
        assert!(matches!(
            refused("/mnt/../etc", &any),
            MountpointError::Unusable(_)
        ));
        for root in ["/", "//", "/."] {
            assert!(
                matches!(refused(root, &any), MountpointError::HostRoot),
                "{root}"
            );
        }
        for (answer, tree) in [
            ("/etc", "/etc"),
            ("/etc/", "/etc"),
            ("/usr/local/v", "/usr"),
            ("/proc/self", "/proc"),
            ("/lib64/x", "/lib64"),
            ("/libx32", "/libx32"),
            ("//sbin//x", "/sbin"),
        ] {
            match refused(answer, &any) {
                MountpointError::SystemTree { tree: t } => assert_eq!(t, Path::new(tree)),
                other => panic!("{answer}: {other:?}"),
            }
        }
    }

    #[test]
    fn roots_admit_only_what_lies_below_them() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in/v");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(dir.path().join("out/v")).unwrap();
        let policy = MountpointPolicy {
            roots: vec![dir.path().join("in")],
        };
        assert_eq!(
            check_mountpoint(&inside, &policy).unwrap(),
            inside,
            "below a root"
        );
        for answer in [
            dir.path().join("out/v"),
            dir.path().join("in"),
            dir.path().join("inx"),
        ] {
            assert!(
                matches!(
                    check_mountpoint(&answer, &policy),
                    Err(MountpointError::OutsideRoots { .. })
                ),
                "{}",
                answer.display()
            );
        }
    }
}
