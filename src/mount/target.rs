//! Where a volume is bound: resolving a container path under a root without ever following a
//! symlink (a task controls its rootfs and sandbox, and anyone controls `/tmp`).
//!
//! Policy: no symlink may appear in any component below the root. Refusing is simpler and safer
//! than reinterpreting a link inside the root, and the error names the component to replace with
//! its real path. The root itself (a rootfs, a sandbox, or `/`) is the agent's and is opened as
//! given.
//!
//! Two resolvers give the same answers:
//! - `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (Linux 5.6+): the
//!   whole path in one call when it already exists; otherwise one component at a time, so the
//!   error can name the component at fault and missing directories can be created.
//! - a walk of `openat(O_PATH | O_NOFOLLOW)` one component at a time, for kernels without openat2
//!   (or where a seccomp filter hides it).
//!
//! `RESOLVE_NO_XDEV` is deliberately not used: a rootfs may legitimately contain mount points
//! (the sandbox bind, an overlay, tmpfs), and crossing one does not leave the root. Escapes are
//! what the other flags rule out: without symlinks and without `..` (a [`ContainerPath`] has
//! none) a walk cannot leave the directory it starts from.
//!
//! Every step works relative to the file descriptor of the verified parent, so a task that swaps
//! a directory for a link while we resolve cannot redirect us: the swapped component is refused.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::geteuid;

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
    /// Create nothing: every component must exist (used to re-verify a resolved target).
    MustExist,
}

/// How to resolve: the kernel's openat2, or the portable walk. Public so tests can force each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// openat2 where the kernel has it, else the walk.
    Auto,
    /// openat2 only: an error where the kernel lacks it.
    Openat2,
    /// The `O_NOFOLLOW` walk only (as on kernels before 5.6).
    Walk,
}

/// A container path refused or not resolvable. Each names the container path (`path`) and the
/// offending component as a host path (`component`).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A component below the root is a symbolic link.
    #[error(
        "{path}: {component} is a symbolic link; volumes are never bound through symbolic links \
         (use the real path instead)"
    )]
    Symlink {
        /// The container path.
        path: PathBuf,
        /// The link.
        component: PathBuf,
    },
    /// A component is not a directory (a volume is a directory, so the target must be one too:
    /// binding a directory onto a file is refused).
    #[error("{path}: {component} is not a directory; a volume is bound onto a directory")]
    NotDirectory {
        /// The container path.
        path: PathBuf,
        /// The component that is not a directory.
        component: PathBuf,
    },
    /// A component is missing and the policy creates nothing.
    #[error("{path}: {component} does not exist; create it first")]
    Missing {
        /// The container path.
        path: PathBuf,
        /// The first missing component.
        component: PathBuf,
    },
    /// A host container path that does not exist and does not lie under the host's `/tmp`.
    #[error(
        "{path}: {component} does not exist, and a host container path must exist or lie under \
         {tmp}; create it on the host or choose a path under {tmp}"
    )]
    OutsideTmp {
        /// The container path.
        path: PathBuf,
        /// The first missing component.
        component: PathBuf,
        /// The host's `/tmp`.
        tmp: PathBuf,
    },
    /// The path names another directory than the one verified earlier.
    #[error("{path}: {component} was replaced after it was verified; resolve it again")]
    Changed {
        /// The container path.
        path: PathBuf,
        /// The target, on the host.
        component: PathBuf,
    },
    /// The root given is not an absolute path (a caller's mistake: the target's path would
    /// depend on the working directory).
    #[error("{path}: the root {root} is not an absolute path")]
    RelativeRoot {
        /// The container path.
        path: PathBuf,
        /// The root given.
        root: PathBuf,
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
        source: Errno,
    },
}

/// A verified target: its host path, and an `O_PATH` handle of the directory so callers can check
/// it is still the same inode before binding.
#[derive(Debug)]
pub struct ResolvedTarget {
    path: PathBuf,
    fd: OwnedFd,
    root: PathBuf,
    container: ContainerPath,
    resolver: Resolver,
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

    /// Resolves the path again, creating nothing, and checks that it still names the directory
    /// that was verified (same device and inode) through no symlink: the check to make right
    /// before binding onto [`ResolvedTarget::path`].
    pub fn verify(&self) -> Result<(), TargetError> {
        let again = resolve_target_with(
            &self.root,
            &self.container,
            &TargetPolicy::MustExist,
            self.resolver,
        )?;
        let io = |e| TargetError::Io {
            path: self.container.as_path().to_owned(),
            op: "inspecting",
            component: self.path.clone(),
            source: e,
        };
        let then = fstat(self.fd.as_fd()).map_err(io)?;
        let now = fstat(again.fd.as_fd()).map_err(io)?;
        if (then.st_dev, then.st_ino) == (now.st_dev, now.st_ino) {
            Ok(())
        } else {
            Err(TargetError::Changed {
                path: self.container.as_path().to_owned(),
                component: self.path.clone(),
            })
        }
    }

    /// Whether [`ResolvedTarget::verify`] succeeds.
    pub fn still_same(&self) -> bool {
        self.verify().is_ok()
    }
}

/// Each step opens one component, never following it: a link comes back as a handle of the link
/// itself (`O_PATH | O_NOFOLLOW`), so `fstat` says exactly what the component is.
const STEP_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

const BENEATH: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// How a directory is created: 0755, and the umask does not narrow it (a container user that is
/// not root must be able to reach its volume).
const DIR_MODE: Mode = Mode::from_bits_truncate(0o755);

/// Whether openat2 failed because the kernel does not offer it: ENOSYS before Linux 5.6; EPERM
/// from seccomp filters of container runtimes that predate it.
fn openat2_unavailable(e: Errno) -> bool {
    matches!(e, Errno::ENOSYS | Errno::EPERM)
}

/// Resolves `path` under `root` (the rootfs, the sandbox for a relative path, or `/` for a host
/// path) without following any symlink, creating missing directories where `policy` allows.
pub fn resolve_target(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
) -> Result<ResolvedTarget, TargetError> {
    resolve_target_with(root, path, policy, Resolver::Auto)
}

/// [`resolve_target`] with the resolver chosen (tests force each).
pub fn resolve_target_with(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
    resolver: Resolver,
) -> Result<ResolvedTarget, TargetError> {
    let cx = Context { path };
    if !root.is_absolute() {
        return Err(TargetError::RelativeRoot {
            path: cx.shown(),
            root: root.to_owned(),
        });
    }
    // The root is the agent's (a sandbox or rootfs it made, or `/`), so it is opened as given;
    // everything below it is the task's.
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(cx.io("opening the root", root))?;
    let rel = path.relative();
    let done = |fd| ResolvedTarget {
        path: root.join(rel),
        fd,
        root: root.to_owned(),
        container: path.clone(),
        resolver,
    };

    let step = match resolver {
        Resolver::Walk => Step::Openat,
        Resolver::Auto | Resolver::Openat2 => {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(BENEATH);
            match openat2(root_fd.as_fd(), rel, how) {
                // The common case, an existing target: one system call.
                Ok(fd) => return Ok(done(fd)),
                Err(e) if openat2_unavailable(e) => match resolver {
                    Resolver::Openat2 => return Err(cx.io("openat2 under", root)(e)),
                    _ => Step::Openat,
                },
                // Missing, a link, a file: the steps below name the component, or create it.
                Err(_) => Step::Openat2,
            }
        }
    };

    let mut dir = root_fd;
    let mut here = root.to_owned();
    for name in rel.iter() {
        here.push(name);
        let mut created = false;
        let fd = match step.open(dir.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                cx.may_create(policy, &here)?;
                match mkdirat(dir.as_fd(), name, DIR_MODE) {
                    Ok(()) => created = true,
                    // Made meanwhile by someone else: the checks below judge what it is.
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(cx.io("creating", &here)(e)),
                }
                step.open(dir.as_fd(), name)
                    .map_err(|e| cx.step_error(e, &here))?
            }
            Err(e) => return Err(cx.step_error(e, &here)),
        };
        let st = fstat(fd.as_fd()).map_err(cx.io("inspecting", &here))?;
        match kind(&st) {
            SFlag::S_IFDIR => {}
            SFlag::S_IFLNK => return Err(cx.symlink(&here)),
            _ => return Err(cx.not_directory(&here)),
        }
        // Only a directory that is still ours: one swapped in by someone else keeps its mode.
        if created && st.st_uid == geteuid().as_raw() && st.st_mode & 0o7777 != DIR_MODE.bits() {
            set_dir_mode(fd.as_fd()).map_err(cx.io("setting the mode of", &here))?;
        }
        dir = fd;
    }
    Ok(done(dir))
}

/// One component opened relative to its verified parent.
#[derive(Debug, Clone, Copy)]
enum Step {
    Openat2,
    Openat,
}

impl Step {
    fn open(self, dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
        match self {
            // With one component, BENEATH and NO_SYMLINKS change nothing a correct O_NOFOLLOW
            // would not; they keep the kernel's guarantee should a name ever hold a `/`.
            Step::Openat2 => openat2(dir, name, OpenHow::new().flags(STEP_FLAGS).resolve(BENEATH)),
            Step::Openat => openat(dir, name, STEP_FLAGS, Mode::empty()),
        }
    }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Gives a directory we created its intended mode whatever the umask. Through `.` of the verified
/// handle, never by name: the name may have been swapped for a link since.
fn set_dir_mode(dir: BorrowedFd<'_>) -> nix::Result<()> {
    let rd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    fchmod(rd.as_fd(), DIR_MODE)
}

/// Builds errors that name the container path.
struct Context<'a> {
    path: &'a ContainerPath,
}

impl Context<'_> {
    fn shown(&self) -> PathBuf {
        self.path.as_path().to_owned()
    }

    fn io(&self, op: &'static str, component: &Path) -> impl FnOnce(Errno) -> TargetError {
        let (path, component) = (self.shown(), component.to_owned());
        move |source| TargetError::Io {
            path,
            op,
            component,
            source,
        }
    }

    fn symlink(&self, component: &Path) -> TargetError {
        TargetError::Symlink {
            path: self.shown(),
            component: component.to_owned(),
        }
    }

    fn not_directory(&self, component: &Path) -> TargetError {
        TargetError::NotDirectory {
            path: self.shown(),
            component: component.to_owned(),
        }
    }

    /// A failed step: what the errno says about the component.
    fn step_error(&self, e: Errno, component: &Path) -> TargetError {
        match e {
            // openat2 refusing a link (or an escape, which only a link could cause).
            Errno::ELOOP | Errno::EXDEV => self.symlink(component),
            Errno::ENOTDIR => self.not_directory(component),
            e => self.io("opening", component)(e),
        }
    }

    /// Whether `policy` lets the missing `component` be created.
    fn may_create(&self, policy: &TargetPolicy, component: &Path) -> Result<(), TargetError> {
        match policy {
            TargetPolicy::CreateMissing => Ok(()),
            TargetPolicy::HostPath { tmp } if component.starts_with(tmp) && component != tmp => {
                Ok(())
            }
            TargetPolicy::HostPath { tmp } => Err(TargetError::OutsideTmp {
                path: self.shown(),
                component: component.to_owned(),
                tmp: tmp.clone(),
            }),
            TargetPolicy::MustExist => Err(TargetError::Missing {
                path: self.shown(),
                component: component.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_only_where_openat2_is_missing_or_filtered() {
        assert!(openat2_unavailable(Errno::ENOSYS));
        assert!(openat2_unavailable(Errno::EPERM));
        for e in [Errno::ELOOP, Errno::EXDEV, Errno::ENOENT, Errno::ENOTDIR] {
            assert!(!openat2_unavailable(e), "{e}");
        }
    }

    #[test]
    fn step_errors_name_the_component() {
        let p = ContainerPath::absolute("/a/b").unwrap();
        let cx = Context { path: &p };
        let c = Path::new("/root/a");
        assert!(matches!(
            cx.step_error(Errno::ELOOP, c),
            TargetError::Symlink { .. }
        ));
        assert!(matches!(
            cx.step_error(Errno::ENOTDIR, c),
            TargetError::NotDirectory { .. }
        ));
        let e = cx.step_error(Errno::EACCES, c);
        assert_eq!(e.to_string(), "/a/b: opening /root/a failed");
    }
}
