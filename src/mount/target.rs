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
//!
//! Errors speak the container's terms: a root is resolved as the container sees it (`view`: `/`
//! for a rootfs, the sandbox's path inside the container), so a refusal names the component as
//! the task would look for it and never hands the framework the agent's internal host paths;
//! those stay in the error for the agent's log ([`TargetError::host_path`]).
//!
//! What a resolution creates is reported ([`ResolvedTarget::take_created`]) so a failed prepare
//! can remove it again ([`CreatedDirs`]).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};

use crate::spec::ContainerPath;

/// Where missing directories may be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Inside a container's rootfs or sandbox: create what is missing.
    CreateMissing,
    /// A host path (the root is `/`): it must exist, unless it lies under `tmp` (the host's
    /// `/tmp`), where what is missing is created (the original module's rule).
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
/// offending component as the container sees it (`component`: below the root's `view`); the
/// component's host path (`host`) is kept for the agent's log and never shown in `Display`,
/// which reaches the task's framework.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A component below the root is a symbolic link.
    #[error(
        "{path}: {component} is a symbolic link{}; volumes are never bound through symbolic \
         links (use the real path instead)",
        link_to(.link)
    )]
    Symlink {
        /// The container path.
        path: PathBuf,
        /// The link, as the container sees it.
        component: PathBuf,
        /// What the link holds (its target as the container would read it), when it could be
        /// read.
        link: Option<PathBuf>,
        /// The link on the host.
        host: PathBuf,
    },
    /// A component is not a directory (a volume is a directory, so the target must be one too:
    /// binding a directory onto a file is refused).
    #[error("{path}: {component} is not a directory; a volume is bound onto a directory")]
    NotDirectory {
        /// The container path.
        path: PathBuf,
        /// The component that is not a directory, as the container sees it.
        component: PathBuf,
        /// It on the host.
        host: PathBuf,
    },
    /// A component is missing and the policy creates nothing.
    #[error("{path}: {component} does not exist; create it first")]
    Missing {
        /// The container path.
        path: PathBuf,
        /// The first missing component, as the container sees it.
        component: PathBuf,
        /// It on the host.
        host: PathBuf,
    },
    /// A host container path that does not exist and does not lie under the host's `/tmp`.
    #[error(
        "{path}: {component} does not exist, and a host container path must exist or lie under \
         {tmp}; create it on the host or choose a path under {tmp}"
    )]
    OutsideTmp {
        /// The container path.
        path: PathBuf,
        /// The first missing component (a host path: this container sees the host's paths).
        component: PathBuf,
        /// The host's `/tmp`.
        tmp: PathBuf,
    },
    /// The path names another directory than the one verified earlier.
    #[error("{path}: {component} was replaced after it was verified; resolve it again")]
    Changed {
        /// The container path.
        path: PathBuf,
        /// The target, as the container sees it.
        component: PathBuf,
        /// The target on the host.
        host: PathBuf,
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
        /// The component, as the container sees it.
        component: PathBuf,
        /// It on the host.
        host: PathBuf,
        /// The errno.
        source: Errno,
    },
}

impl TargetError {
    /// The component at fault on the host, for the agent's log (the message shows it only as
    /// the container sees it).
    pub fn host_path(&self) -> &Path {
        match self {
            Self::Symlink { host, .. }
            | Self::NotDirectory { host, .. }
            | Self::Missing { host, .. }
            | Self::Changed { host, .. }
            | Self::Io { host, .. } => host,
            Self::OutsideTmp { component, .. } => component,
            Self::RelativeRoot { root, .. } => root,
        }
    }
}

/// ` to "TARGET"` for a link whose target was read, quoted: a task chose that text.
fn link_to(link: &Option<PathBuf>) -> String {
    link.as_ref()
        .map(|l| format!(" to {:?}", l.as_os_str()))
        .unwrap_or_default()
}

/// One directory a resolution created: its verified parent (a handle, never a path), its name
/// there, and its identity when made.
#[derive(Debug)]
struct CreatedDir {
    parent: OwnedFd,
    name: std::ffi::OsString,
    dev: libc::dev_t,
    ino: libc::ino_t,
    /// A handle of the directory made, held so its inode cannot be freed and reused: a
    /// directory removed and made again under the name would otherwise often get the same
    /// inode number and pass for the one made.
    _held: OwnedFd,
    /// For the log.
    host: PathBuf,
}

impl CreatedDir {
    /// Removes the directory if it is still the one made (same device and inode) and still
    /// empty; leaves it alone otherwise. Works relative to the parent's handle with one name, so
    /// no symlink a task plants (at the name or above it) is followed. Returns whether it was
    /// removed.
    ///
    /// Between the identity check and rmdir a task could swap in another *empty* directory of
    /// the same name; that one is removed instead — nothing of value is lost, and rmdir never
    /// removes a directory that holds anything.
    fn remove(&self) -> nix::Result<bool> {
        let fd = match openat(
            self.parent.as_fd(),
            self.name.as_os_str(),
            STEP_FLAGS,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        let st = fstat(fd.as_fd())?;
        let same = kind(&st) == SFlag::S_IFDIR && (st.st_dev, st.st_ino) == (self.dev, self.ino);
        if !same {
            return Ok(false);
        }
        match unlinkat(
            self.parent.as_fd(),
            self.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        ) {
            Ok(()) => Ok(true),
            // It gained an entry, was removed meanwhile, or something is mounted on it: it is
            // not ours to remove any more.
            Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT | Errno::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Directories a resolution created, in the order made. Dropped, it removes them again, deepest
/// first, each only while it is still empty and still the same directory (a directory that
/// anything else touched — gained an entry, was replaced — is left alone); [`CreatedDirs::disarm`]
/// keeps them. Drop cannot return an error, so a failed removal is logged (`log::warn!`), here.
#[derive(Debug, Default)]
pub struct CreatedDirs {
    dirs: Vec<CreatedDir>,
}

impl CreatedDirs {
    /// Nothing created yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes over what `other` created, which was created after everything here (so it is
    /// removed first).
    pub fn append(&mut self, mut other: CreatedDirs) {
        self.dirs.append(&mut other.dirs);
    }

    /// The directories, on the host, in the order created.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.host.as_path())
    }

    /// Whether nothing was created.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Keeps every directory: nothing is removed on drop.
    pub fn disarm(mut self) {
        self.dirs.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in self.dirs.drain(..).rev() {
            match dir.remove() {
                Ok(true) => log::debug!("removed {} again", dir.host.display()),
                Ok(false) => log::info!(
                    "kept {}: it is no longer the empty directory made for the volume",
                    dir.host.display()
                ),
                Err(e) => log::warn!("removing {} again failed: {e}", dir.host.display()),
            }
        }
    }
}

/// A verified target: its host path, and an `O_PATH` handle of the directory so callers can check
/// it is still the same inode before binding.
#[derive(Debug)]
pub struct ResolvedTarget {
    path: PathBuf,
    fd: OwnedFd,
    root: PathBuf,
    view: PathBuf,
    container: ContainerPath,
    resolver: Resolver,
    created: CreatedDirs,
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

    /// The directories this resolution created, as a guard that removes them again when dropped
    /// (disarm it once they are to stay). Left here, they stay: dropping a `ResolvedTarget`
    /// removes nothing.
    pub fn take_created(&mut self) -> CreatedDirs {
        std::mem::take(&mut self.created)
    }

    /// Resolves the path again, creating nothing, and checks that it still names the directory
    /// that was verified (same device and inode) through no symlink: the check to make right
    /// before binding onto [`ResolvedTarget::path`].
    pub fn verify(&self) -> Result<(), TargetError> {
        let again = resolve(
            &self.root,
            &self.view,
            &self.container,
            &TargetPolicy::MustExist,
            self.resolver,
        )?;
        let shown = self.view.join(self.container.relative());
        let io = |e| TargetError::Io {
            path: self.container.as_path().to_owned(),
            op: "inspecting",
            component: shown.clone(),
            host: self.path.clone(),
            source: e,
        };
        let then = fstat(self.fd.as_fd()).map_err(io)?;
        let now = fstat(again.fd.as_fd()).map_err(io)?;
        if (then.st_dev, then.st_ino) == (now.st_dev, now.st_ino) {
            Ok(())
        } else {
            Err(TargetError::Changed {
                path: self.container.as_path().to_owned(),
                component: shown,
                host: self.path.clone(),
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
/// Errors name components by their host paths; [`resolve_target_in`] names them as a container
/// sees them.
pub fn resolve_target(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
) -> Result<ResolvedTarget, TargetError> {
    resolve(root, root, path, policy, Resolver::Auto)
}

/// [`resolve_target`] for a container that sees `root` at `view` (`/` for its rootfs, its
/// sandbox's path inside it): errors name components below `view`, never the host's `root`.
pub fn resolve_target_in(
    root: &Path,
    view: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
) -> Result<ResolvedTarget, TargetError> {
    resolve(root, view, path, policy, Resolver::Auto)
}

/// [`resolve_target`] with the resolver chosen (tests force each).
pub fn resolve_target_with(
    root: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
    resolver: Resolver,
) -> Result<ResolvedTarget, TargetError> {
    resolve(root, root, path, policy, resolver)
}

fn resolve(
    root: &Path,
    view: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
    resolver: Resolver,
) -> Result<ResolvedTarget, TargetError> {
    let cx = Context { path, root, view };
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
    .map_err(cx.io("opening the root", Path::new("")))?;
    let rel = path.relative();
    let done = |fd, created| ResolvedTarget {
        path: root.join(rel),
        fd,
        root: root.to_owned(),
        view: view.to_owned(),
        container: path.clone(),
        resolver,
        created,
    };

    let step = match resolver {
        Resolver::Walk => Step::Openat,
        Resolver::Auto | Resolver::Openat2 => {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(BENEATH);
            match openat2(root_fd.as_fd(), rel, how) {
                // The common case, an existing target: one system call.
                Ok(fd) => return Ok(done(fd, CreatedDirs::new())),
                Err(e) if openat2_unavailable(e) => match resolver {
                    Resolver::Openat2 => return Err(cx.io("openat2 under", Path::new(""))(e)),
                    _ => Step::Openat,
                },
                // Missing, a link, a file: the steps below name the component, or create it.
                Err(_) => Step::Openat2,
            }
        }
    };

    // Removes what this call made should a later step fail.
    let mut created_dirs = CreatedDirs::new();
    let mut dir = root_fd;
    let mut here = PathBuf::new();
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
                    .map_err(|e| cx.step_error(e, dir.as_fd(), name, &here))?
            }
            Err(e) => return Err(cx.step_error(e, dir.as_fd(), name, &here)),
        };
        let st = fstat(fd.as_fd()).map_err(cx.io("inspecting", &here))?;
        match kind(&st) {
            SFlag::S_IFDIR => {}
            SFlag::S_IFLNK => return Err(cx.symlink(dir.as_fd(), name, &here)),
            _ => return Err(cx.not_directory(&here)),
        }
        if created {
            // What is recorded is what was verified just now: the directory this handle holds.
            let keep = |fd: &OwnedFd, rel: &Path| {
                fd.try_clone()
                    .map_err(|e| cx.io("keeping a handle of", rel)(io_errno(&e)))
            };
            let parent_rel = here.parent().unwrap_or(Path::new(""));
            created_dirs.dirs.push(CreatedDir {
                parent: keep(&dir, parent_rel)?,
                name: name.to_owned(),
                dev: st.st_dev,
                ino: st.st_ino,
                _held: keep(&fd, &here)?,
                host: root.join(&here),
            });
        }
        // Only a directory that is still ours: one swapped in by someone else keeps its mode.
        if created && st.st_uid == geteuid().as_raw() && st.st_mode & 0o7777 != DIR_MODE.bits() {
            set_dir_mode(fd.as_fd()).map_err(cx.io("setting the mode of", &here))?;
        }
        dir = fd;
    }
    Ok(done(dir, created_dirs))
}

/// The errno of an I/O error from the standard library (EIO when it carries none).
fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
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

/// Builds errors that name the container path, and each component as the container sees it
/// (below `view`) with its host path (below `root`) kept for the log.
struct Context<'a> {
    path: &'a ContainerPath,
    root: &'a Path,
    view: &'a Path,
}

impl Context<'_> {
    fn shown(&self) -> PathBuf {
        self.path.as_path().to_owned()
    }

    /// `rel` (a path below the root, empty for the root itself) as the container sees it and on
    /// the host.
    fn both(&self, rel: &Path) -> (PathBuf, PathBuf) {
        if rel.as_os_str().is_empty() {
            // `join("")` would add a trailing slash.
            return (self.view.to_owned(), self.root.to_owned());
        }
        (self.view.join(rel), self.root.join(rel))
    }

    fn io(&self, op: &'static str, rel: &Path) -> impl FnOnce(Errno) -> TargetError {
        let path = self.shown();
        let (component, host) = self.both(rel);
        move |source| TargetError::Io {
            path,
            op,
            component,
            host,
            source,
        }
    }

    /// The component `name` of `dir` is a link: the error says what it holds.
    fn symlink(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> TargetError {
        let (component, host) = self.both(rel);
        TargetError::Symlink {
            path: self.shown(),
            component,
            // Read relative to the verified parent: the very link that was refused.
            link: readlinkat(dir, name).ok().map(PathBuf::from),
            host,
        }
    }

    fn not_directory(&self, rel: &Path) -> TargetError {
        let (component, host) = self.both(rel);
        TargetError::NotDirectory {
            path: self.shown(),
            component,
            host,
        }
    }

    /// A failed step of opening `name` in `dir`: what the errno says about the component.
    fn step_error(&self, e: Errno, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> TargetError {
        match e {
            // openat2 refusing a link (or an escape, which only a link could cause).
            Errno::ELOOP | Errno::EXDEV => self.symlink(dir, name, rel),
            Errno::ENOTDIR => self.not_directory(rel),
            e => self.io("opening", rel)(e),
        }
    }

    /// Whether `policy` lets the missing component `rel` be created.
    fn may_create(&self, policy: &TargetPolicy, rel: &Path) -> Result<(), TargetError> {
        let (component, host) = self.both(rel);
        match policy {
            TargetPolicy::CreateMissing => Ok(()),
            TargetPolicy::HostPath { tmp } if host.starts_with(tmp) && host != *tmp => Ok(()),
            TargetPolicy::HostPath { tmp } => Err(TargetError::OutsideTmp {
                path: self.shown(),
                component: host,
                tmp: tmp.clone(),
            }),
            TargetPolicy::MustExist => Err(TargetError::Missing {
                path: self.shown(),
                component,
                host,
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
    fn step_errors_name_the_component_as_the_container_sees_it() {
        let p = ContainerPath::absolute("/a/b").unwrap();
        let cx = Context {
            path: &p,
            root: Path::new("/var/lib/rootfs"),
            view: Path::new("/"),
        };
        let dir = nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        let (d, n, c) = (dir.as_fd(), OsStr::new("a"), Path::new("a"));
        assert!(matches!(
            cx.step_error(Errno::ELOOP, d, n, c),
            TargetError::Symlink { .. }
        ));
        assert!(matches!(
            cx.step_error(Errno::ENOTDIR, d, n, c),
            TargetError::NotDirectory { .. }
        ));
        let e = cx.step_error(Errno::EACCES, d, n, c);
        assert_eq!(e.to_string(), "/a/b: opening /a failed");
        assert_eq!(e.host_path(), Path::new("/var/lib/rootfs/a"));
    }
}
