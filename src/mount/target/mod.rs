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
//! That guards the resolution only. What is handed on is a path string, which Mesos' launch
//! helper walks again much later, following links, when it binds; no handle can cross to it.
//! So the path itself must be one no one but root can change in between: [`ResolvedTarget::audit`]
//! checks every directory from `/` down (`audit.rs` says what counts), and a path that fails is
//! refused — or, for a path in a sandbox its task user owns, bound elsewhere and reached through a
//! link ([`ResolvedTarget::place_link`], `link.rs`). Re-checking the path at `isolate()` would
//! only shorten the window (the fetcher and the rest of the launch come after it); marking the
//! bind `nosuid` would not help either (what a moved bind covers, `/etc` say, is read by setuid
//! programs that live elsewhere).
//!
//! Errors speak the container's terms: a root is resolved as the container sees it (`view`: `/`
//! for a rootfs, the sandbox's path inside the container), so a refusal names the component as
//! the task would look for it and never hands the framework the agent's internal host paths;
//! those stay in the error for the agent's log ([`TargetError::host_path`]).
//!
//! What a resolution creates is reported ([`ResolvedTarget::take_created`]) so a failed prepare
//! can remove it again ([`CreatedDirs`]).

mod audit;
mod created;
mod link;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::geteuid;

use crate::spec::ContainerPath;

pub use audit::Writer;
pub use created::CreatedDirs;

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
    /// A directory on the way to the target lets someone besides root change its entries: they
    /// could swap what lies below it for a symbolic link between prepare and the bind.
    #[error(
        "{path}: {} {writer}, who could swap what lies below it for a symbolic link before the \
         volume is bound; choose a path whose directories only root can change",
        place(.component, *.above_root)
    )]
    Writable {
        /// The container path.
        path: PathBuf,
        /// The directory, as the container sees it (or the view, with `above_root`).
        component: PathBuf,
        /// The directory lies above the container's root or sandbox, on the agent.
        above_root: bool,
        /// The directory on the host.
        host: PathBuf,
        /// Who could change its entries.
        writer: Writer,
    },
    /// A directory on the way to a re-homed volume's bind directory is closed to others: a task
    /// not run as root could not reach its volume.
    #[error(
        "{path}: the task could not reach its volume: {} is not searchable by others (mode \
         {mode:04o}); make it searchable (o+x)",
        place(.component, *.above_root)
    )]
    NotSearchable {
        /// The container path.
        path: PathBuf,
        /// The directory, as the container sees it (or the view, with `above_root`).
        component: PathBuf,
        /// The directory lies above the container's root, on the agent.
        above_root: bool,
        /// The directory on the host.
        host: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Something already has the name where the symbolic link to a re-homed volume goes.
    #[error(
        "{path}: {component} already exists; the volume cannot be bound there safely, and the \
         symbolic link that reaches it instead needs the name: remove it"
    )]
    Occupied {
        /// The container path.
        path: PathBuf,
        /// The name, as the container sees it.
        component: PathBuf,
        /// It on the host.
        host: PathBuf,
        /// Why the volume cannot be bound there.
        #[source]
        why: Box<TargetError>,
    },
    /// A path that cannot be bound onto safely, whose volume could not be re-homed either: the
    /// agent's directory for such volumes failed its own checks.
    #[error(
        "{path}: cannot be bound where asked, and the agent's own directory for such volumes is \
         not usable"
    )]
    NoSafePlace {
        /// The container path.
        path: PathBuf,
        /// What is wrong with the agent's directory.
        #[source]
        cause: Box<TargetError>,
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
            | Self::Writable { host, .. }
            | Self::NotSearchable { host, .. }
            | Self::Occupied { host, .. }
            | Self::Io { host, .. } => host,
            Self::OutsideTmp { component, .. } => component,
            Self::NoSafePlace { cause, .. } => cause.host_path(),
            Self::RelativeRoot { root, .. } => root,
        }
    }
}

/// A directory named in an error: as the container sees it, or, above the container's root or
/// sandbox, as "a directory above" it.
fn place(component: &Path, above_root: bool) -> String {
    if above_root {
        format!("a directory above {} on the agent", component.display())
    } else {
        component.display().to_string()
    }
}

/// ` to "TARGET"` for a link whose target was read, quoted: a task chose that text.
fn link_to(link: &Option<PathBuf>) -> String {
    link.as_ref()
        .map(|l| format!(" to {:?}", l.as_os_str()))
        .unwrap_or_default()
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
    /// What was resolved below the root: the container path's, or its parent's.
    rel: PathBuf,
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
        let again = resolve_rel(
            &self.root,
            &self.view,
            &self.container,
            &self.rel,
            &TargetPolicy::MustExist,
            self.resolver,
        )?;
        let shown = self.shown();
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

    /// Checks that no one but root could change what [`ResolvedTarget::path`] names until the
    /// volume is bound onto it by that path: walked from `/` as the kernel will walk it, every
    /// directory on the way (those above the root included) must be one only root can change, and
    /// the walk must end at the directory verified. With `search_from`, every directory from
    /// there on must also be searchable by others, so a task of any user can reach what is bound
    /// there.
    pub fn audit(&self, search_from: Option<&Path>) -> Result<(), TargetError> {
        let (fd, _) = audit::walk(&self.path, search_from).map_err(|s| self.stopped(s))?;
        self.same_as(&fd)
    }

    /// [`ResolvedTarget::audit`] of this directory as the parent of `name`: whether a bind onto
    /// its entry `name` would be safe (a missing `name` counts as root's, to be made by root).
    pub fn audit_entry(&self, name: &OsStr) -> Result<(), TargetError> {
        let (fd, _) = audit::walk_to_entry(&self.path, name).map_err(|s| self.stopped(s))?;
        self.same_as(&fd)
    }

    /// The target as the container sees it.
    fn shown(&self) -> PathBuf {
        self.both(&self.rel).0
    }

    fn cx(&self) -> Context<'_> {
        Context {
            path: &self.container,
            root: &self.root,
            view: &self.view,
        }
    }

    /// `rel` below the root as the container sees it and on the host.
    fn both(&self, rel: &Path) -> (PathBuf, PathBuf) {
        self.cx().both(rel)
    }

    /// Whether `fd` is the directory verified (same device and inode).
    fn same_as(&self, fd: &OwnedFd) -> Result<(), TargetError> {
        let io = |e| TargetError::Io {
            path: self.container.as_path().to_owned(),
            op: "inspecting",
            component: self.shown(),
            host: self.path.clone(),
            source: e,
        };
        let then = fstat(self.fd.as_fd()).map_err(io)?;
        let now = fstat(fd.as_fd()).map_err(io)?;
        if (then.st_dev, then.st_ino) == (now.st_dev, now.st_ino) {
            Ok(())
        } else {
            Err(TargetError::Changed {
                path: self.container.as_path().to_owned(),
                component: self.shown(),
                host: self.path.clone(),
            })
        }
    }

    /// A host directory the audit met, as the container sees it: below the root, by its place
    /// in the view; above it, by the view itself, flagged as above (a host path above a sandbox
    /// or rootfs is the agent's business). Where the view *is* the host (it equals the root),
    /// host paths are what the container sees, and are shown as they are.
    fn name_host(&self, at: &Path) -> (PathBuf, bool) {
        if self.view == self.root {
            return (at.to_owned(), false);
        }
        // The audit walks real directories: compare against the root's real path.
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        match at.strip_prefix(&root) {
            Ok(rest) if rest.as_os_str().is_empty() => (self.view.clone(), false),
            Ok(rest) => (self.view.join(rest), false),
            Err(_) => (self.view.clone(), true),
        }
    }

    fn stopped(&self, stop: audit::Stop) -> TargetError {
        let path = self.container.as_path().to_owned();
        match stop {
            audit::Stop::Writable { dir, writer } => {
                let (component, above_root) = self.name_host(&dir);
                TargetError::Writable {
                    path,
                    component,
                    above_root,
                    host: dir,
                    writer,
                }
            }
            audit::Stop::NotSearchable { dir, mode } => {
                let (component, above_root) = self.name_host(&dir);
                TargetError::NotSearchable {
                    path,
                    component,
                    above_root,
                    host: dir,
                    mode,
                }
            }
            audit::Stop::NotDirectory { at } => TargetError::NotDirectory {
                path,
                component: self.name_host(&at).0,
                host: at,
            },
            audit::Stop::Io { op, at, errno } => TargetError::Io {
                path,
                op,
                component: self.name_host(&at).0,
                host: at,
                source: errno,
            },
        }
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
    resolve_rel(root, view, path, path.relative(), policy, resolver)
}

/// [`resolve_target_in`] of the directory that holds the container path's last component:
/// returns it, verified (and made where `policy` allows), with that last component's name.
/// Nothing is done about the name itself; the caller decides what goes there.
pub fn resolve_parent_in(
    root: &Path,
    view: &Path,
    path: &ContainerPath,
    policy: &TargetPolicy,
) -> Result<(ResolvedTarget, OsString), TargetError> {
    let rel = path.relative();
    let Some(name) = rel.file_name() else {
        return Err(TargetError::Io {
            path: path.as_path().to_owned(),
            op: "naming the last component of",
            component: view.to_owned(),
            host: root.to_owned(),
            source: Errno::EINVAL,
        });
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = resolve_rel(root, view, path, parent, policy, Resolver::Auto)?;
    Ok((dir, name.to_owned()))
}

/// Resolves `rel` (the container path's relative form, or a leading part of it) under `root`.
fn resolve_rel(
    root: &Path,
    view: &Path,
    path: &ContainerPath,
    rel: &Path,
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
    let done = |fd, created| ResolvedTarget {
        path: cx.both(rel).1,
        fd,
        root: root.to_owned(),
        view: view.to_owned(),
        container: path.clone(),
        rel: rel.to_owned(),
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
            created_dirs.push_dir(
                keep(&dir, parent_rel)?,
                name.to_owned(),
                &st,
                keep(&fd, &here)?,
                root.join(&here),
            );
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
