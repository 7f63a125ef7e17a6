//! Where a volume is bound: resolving a container path under a root without ever following a
//! symlink (a task controls its rootfs and sandbox, and anyone controls `/tmp`).
//!
//! Policy: no symlink may appear in any component below the root. Refusing is simpler and safer
//! than reinterpreting a link inside the root, and the error says which component to replace with
//! its real path. The kernel's `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` is the fast path;
//! a component-by-component `O_NOFOLLOW` walk is the fallback where openat2 is missing, and the
//! authority that creates missing directories and names the component at fault.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};

use crate::spec::ContainerPath;

/// Where missing directories may be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Inside a container's rootfs or sandbox: create what is missing.
    CreateMissing,
    /// A host path (the root is `/`): it must exist, unless it lies under `tmp` (the host's
    /// `/tmp`), where what is missing is created (DESIGN §2, the original module's rule).
    HostPath {
        /// The host's `/tmp` (a parameter so tests can use their own).
        tmp: PathBuf,
    },
}

/// How to resolve: the kernel's openat2 first, or only the portable walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// openat2 where the kernel has it, else the walk.
    Auto,
    /// The `O_NOFOLLOW` walk only (as on kernels before 5.6).
    Walk,
}

/// A container path refused or not resolvable; each names the container path and the component.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A symlink in the path.
    #[error("{path}: {component} is a symbolic link; volumes are never bound through links (give the link's real path)")]
    Symlink {
        /// The container path.
        path: PathBuf,
        /// The component that is a link, on the host.
        component: PathBuf,
    },
    /// A component that is not a directory.
    #[error("{path}: {component} is not a directory; a volume is bound onto a directory")]
    NotDirectory {
        /// The container path.
        path: PathBuf,
        /// The component, on the host.
        component: PathBuf,
    },
    /// A host path that does not exist and is not under `/tmp`.
    #[error(
        "{path}: {component} does not exist; a host container path must exist or lie under {tmp}"
    )]
    Missing {
        /// The container path.
        path: PathBuf,
        /// The first missing component, on the host.
        component: PathBuf,
        /// The host's `/tmp`.
        tmp: PathBuf,
    },
    /// A system call failed.
    #[error("{path}: {op} {component} failed")]
    Io {
        /// The container path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The component, on the host.
        component: PathBuf,
        /// The errno.
        #[source]
        errno: Errno,
    },
}

/// A verified target: its host path, and an open handle of the directory so callers can check it
/// is still the same inode before binding.
#[derive(Debug)]
pub struct ResolvedTarget {
    path: PathBuf,
    fd: OwnedFd,
}

impl ResolvedTarget {
    /// The absolute host path (root joined with the container path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An `O_PATH` handle of the directory.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Whether `path` still names the directory that was verified (same device and inode).
    pub fn still_same(&self) -> bool {
        let (Ok(now), Ok(then)) = (nix::sys::stat::stat(&self.path), fstat(self.fd.as_fd())) else {
            return false;
        };
        now.st_dev == then.st_dev && now.st_ino == then.st_ino
    }
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOFOLLOW);

/// Resolves `path` under `root` (the rootfs, the sandbox for a relative path, or `/` for a host
/// path) without following any symlink, creating missing directories where `policy` allows.
pub fn resolve_target(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
) -> Result<ResolvedTarget, TargetError> {
    resolve_target_with(root, path, policy, Resolver::Auto)
}

/// [`resolve_target`] with the resolver chosen (tests force the walk).
pub fn resolve_target_with(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
    resolver: Resolver,
) -> Result<ResolvedTarget, TargetError> {
    let shown = path.as_path().to_owned();
    let io = |op, component: &Path| {
        let shown = shown.clone();
        let component = component.to_owned();
        move |errno| TargetError::Io {
            path: shown,
            op,
            component,
            errno,
        }
    };
    // The root itself is the agent's (a sandbox or rootfs directory it made), so it is opened
    // normally; everything below it is the task's.
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("opening", root))?;
    let rel = path.relative();
    let full = root.join(rel);

    if resolver == Resolver::Auto {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        // On failure (missing, a link, not a directory, no openat2), the walk below diagnoses
        // it and creates missing directories.
        if let Ok(fd) = openat2(root_fd.as_fd(), rel, how) {
            return Ok(ResolvedTarget { path: full, fd });
        }
    }

    let mut dir = root_fd;
    let mut here = root.to_owned();
    for component in rel.components() {
        here.push(component);
        let name = component.as_os_str();
        let stat = match fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(io("inspecting", &here)(e)),
        };
        match stat {
            Some(st) => {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if kind == SFlag::S_IFLNK {
                    return Err(TargetError::Symlink {
                        path: shown,
                        component: here,
                    });
                }
                if kind != SFlag::S_IFDIR {
                    return Err(TargetError::NotDirectory {
                        path: shown,
                        component: here,
                    });
                }
            }
            None => {
                if let TargetPolicy::HostPath { tmp } = policy {
                    if !(here.starts_with(tmp) && here != *tmp) {
                        return Err(TargetError::Missing {
                            path: shown,
                            component: here,
                            tmp: tmp.clone(),
                        });
                    }
                }
                match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    // Someone made it meanwhile: the open below checks what it is.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io("creating", &here)(e)),
                }
            }
        }
        dir = match openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Swapped for a link or a file since it was inspected.
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(TargetError::Symlink {
                    path: shown,
                    component: here,
                })
            }
            Err(e) => return Err(io("opening", &here)(e)),
        };
    }
    Ok(ResolvedTarget {
        path: full,
        fd: dir,
    })
}
