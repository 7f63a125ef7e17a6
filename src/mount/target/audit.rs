//! Who, besides root, could change what a bind target's path names before the volume is bound.
//!
//! Mesos' launch helper binds onto a target by its path string, following symbolic links, in the
//! container's new mount namespace — after isolate and after the fetcher, seconds to minutes
//! after prepare checked the target. Whoever can rename or replace an entry of any directory on
//! that path in the meantime decides where the bind lands (over `/etc`, say, where a setuid
//! program would then read the task's files). Checking the path again later cannot close that
//! window; what closes it is a path on which no one but root can change anything. A directory
//! lets someone else change its entries when:
//! - another user owns it (an owner can always grant themselves write permission);
//! - its group may write it (this also catches ACLs: a named user's or group's write permission
//!   shows in the group bits, as the ACL's mask) or everyone may — unless it is sticky and the
//!   entry is root's: then others may add names, but not rename or remove root's;
//! - it lies on a FUSE file system, whose server — a process, perhaps the task user's — answers
//!   every lookup, differently each time if it likes, whatever owner it reports.
//!
//! The walk goes the way the kernel will: from `/`, one component at a time, through mount
//! points, following a symbolic link where one is met (its text cannot change; replacing the
//! link needs its directory, which is checked like any other), `..` going up.
//!
//! Outside what this can see: file systems that other machines change (NFS and the like), and
//! processes that hold capabilities without being root.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::unistd::{Gid, Group, Uid, User};

use super::{kind, STEP_FLAGS};

/// Who besides root could change an entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// The directory belongs to another user.
    Owner {
        /// Its owner.
        uid: u32,
        /// The owner's name, when the user database has one.
        name: Option<String>,
    },
    /// The directory's group may write it (or a user or group named in its ACL may).
    Group {
        /// Its group.
        gid: u32,
        /// The group's name, when the group database has one.
        name: Option<String>,
    },
    /// Everyone may write the directory.
    Everyone,
    /// The directory is on a FUSE file system.
    Fuse,
}

impl Writer {
    fn owner(uid: u32) -> Self {
        let name = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        Self::Owner {
            uid,
            name: name.map(|u| u.name),
        }
    }

    fn group(gid: u32) -> Self {
        let name = Group::from_gid(Gid::from_raw(gid)).ok().flatten();
        Self::Group {
            gid,
            name: name.map(|g| g.name),
        }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named =
            |name: &Option<String>| name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        match self {
            Self::Owner { uid, name } => write!(f, "is owned by uid {uid}{}", named(name)),
            Self::Group { gid, name } => write!(f, "is writable by group {gid}{}", named(name)),
            Self::Everyone => f.write_str("is writable by everyone"),
            Self::Fuse => {
                f.write_str("lies on a FUSE file system, whose server answers for every name in it")
            }
        }
    }
}

const S_ISVTX: u32 = 0o1000;
const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const OTHER_SEARCH: u32 = 0o001;

/// Whose permission lets someone change an entry: the directory's, or (in a sticky directory)
/// the entry's own owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Through {
    Dir,
    Entry,
}

/// Who besides root could rename, replace or remove the entry (owned by `entry_uid`) of a
/// directory described by `dir`, and through what; `None` when no one could.
pub(super) fn writer_of(
    dir: &FileStat,
    on_fuse: bool,
    entry_uid: u32,
) -> Option<(Writer, Through)> {
    if on_fuse {
        return Some((Writer::Fuse, Through::Dir));
    }
    if dir.st_uid != 0 {
        return Some((Writer::owner(dir.st_uid), Through::Dir));
    }
    let others_write = dir.st_mode & (OTHER_WRITE | GROUP_WRITE) != 0;
    // With the sticky bit only an entry's owner, the directory's owner (root here) and root may
    // rename or remove it.
    if dir.st_mode & S_ISVTX != 0 && others_write {
        return (entry_uid != 0).then(|| (Writer::owner(entry_uid), Through::Entry));
    }
    if dir.st_mode & OTHER_WRITE != 0 {
        return Some((Writer::Everyone, Through::Dir));
    }
    if dir.st_mode & GROUP_WRITE != 0 {
        return Some((Writer::group(dir.st_gid), Through::Dir));
    }
    None
}

/// Why a walk stopped, in host terms (the caller names things as the container sees them).
#[derive(Debug)]
pub(super) enum Stop {
    /// `dir` (a directory, or in a sticky one the entry itself) lets `writer` change what the
    /// path names there.
    Writable { dir: PathBuf, writer: Writer },
    /// `dir` is not searchable by others (`mode`), below where the task must reach.
    NotSearchable { dir: PathBuf, mode: u32 },
    /// A component is neither a directory nor a link.
    NotDirectory { at: PathBuf },
    /// A system call on `at` failed.
    Io {
        op: &'static str,
        at: PathBuf,
        errno: Errno,
    },
}

/// A directory reached by the walk, with what the next step needs.
struct Dir {
    fd: OwnedFd,
    st: FileStat,
    fuse: bool,
    /// How the walk reached it (a host path, for messages and the search check).
    at: PathBuf,
}

impl Dir {
    fn open(fd: OwnedFd, at: PathBuf) -> Result<Self, Stop> {
        let io = |op| {
            let at = at.clone();
            move |errno| Stop::Io { op, at, errno }
        };
        let st = fstat(fd.as_fd()).map_err(io("inspecting"))?;
        let fuse = on_fuse(fd.as_fd()).map_err(io("inspecting the file system of"))?;
        Ok(Self { fd, st, fuse, at })
    }

    fn root() -> Result<Self, Stop> {
        let fd = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Stop::Io {
            op: "opening",
            at: PathBuf::from("/"),
            errno,
        })?;
        Self::open(fd, PathBuf::from("/"))
    }

    /// Others may search it, where the task has to pass (`search_from` and below).
    fn check_search(&self, search_from: Option<&Path>) -> Result<(), Stop> {
        match search_from {
            Some(from) if self.at.starts_with(from) && self.st.st_mode & OTHER_SEARCH == 0 => {
                Err(Stop::NotSearchable {
                    dir: self.at.clone(),
                    mode: self.st.st_mode & 0o7777,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether someone besides root could change the entry `name` (owned by `entry_uid`).
    fn check_entry(&self, name: &OsStr, entry_uid: u32) -> Result<(), Stop> {
        match writer_of(&self.st, self.fuse, entry_uid) {
            Some((writer, Through::Dir)) => Err(Stop::Writable {
                dir: self.at.clone(),
                writer,
            }),
            Some((writer, Through::Entry)) => Err(Stop::Writable {
                dir: self.at.join(name),
                writer,
            }),
            None => Ok(()),
        }
    }
}

/// At most this many symbolic links on one path, as the kernel allows (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Walks `path` (absolute) from `/` as the kernel will when binding onto it, and checks that no
/// one but root could change what any of its components names; with `search_from`, also that
/// every directory from there on may be searched by others (so a task of any user can reach it).
/// Returns a handle of what the path names now.
pub(super) fn walk(path: &Path, search_from: Option<&Path>) -> Result<(OwnedFd, FileStat), Stop> {
    let mut dir = Dir::root()?;
    dir.check_search(search_from)?;
    let mut todo: Vec<OsString> = components(path);
    todo.reverse();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            let up = open_step(dir.fd.as_fd(), OsStr::new(".."), &dir.at)?;
            let mut at = dir.at.clone();
            at.pop();
            dir = Dir::open(up, at)?;
            continue;
        }
        let at = dir.at.join(&name);
        let fd = open_step(dir.fd.as_fd(), &name, &at)?;
        let st = fstat(fd.as_fd()).map_err(|errno| Stop::Io {
            op: "inspecting",
            at: at.clone(),
            errno,
        })?;
        dir.check_entry(&name, st.st_uid)?;
        match kind(&st) {
            SFlag::S_IFDIR => {
                dir = Dir::open(fd, at)?;
                dir.check_search(search_from)?;
            }
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Stop::Io {
                        op: "following the symbolic links to",
                        at,
                        errno: Errno::ELOOP,
                    });
                }
                let text =
                    readlinkat(dir.fd.as_fd(), name.as_os_str()).map_err(|errno| Stop::Io {
                        op: "reading the symbolic link",
                        at: at.clone(),
                        errno,
                    })?;
                let text = PathBuf::from(text);
                let mut more = components(&text);
                more.reverse();
                todo.extend(more);
                if text.is_absolute() {
                    dir = Dir::root()?;
                }
            }
            _ => return Err(Stop::NotDirectory { at }),
        }
    }
    let st = dir.st;
    Ok((dir.fd, st))
}

/// [`walk`] to a directory, then the check of its entry `name` as [`walk`] checks each step:
/// whether someone besides root could change what `name` names there (a missing `name` counts
/// as root's: the caller is about to make it). Returns the directory's handle.
pub(super) fn walk_to_entry(dir_path: &Path, name: &OsStr) -> Result<(OwnedFd, FileStat), Stop> {
    let (fd, st) = walk(dir_path, None)?;
    let at = dir_path.join(name);
    let entry_uid =
        match nix::sys::stat::fstatat(fd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(entry) => entry.st_uid,
            Err(Errno::ENOENT) => 0,
            Err(errno) => {
                return Err(Stop::Io {
                    op: "inspecting",
                    at,
                    errno,
                })
            }
        };
    let fuse = on_fuse(fd.as_fd()).map_err(|errno| Stop::Io {
        op: "inspecting the file system of",
        at: dir_path.to_owned(),
        errno,
    })?;
    let dir = Dir {
        fd,
        st,
        fuse,
        at: dir_path.to_owned(),
    };
    dir.check_entry(name, entry_uid)?;
    Ok((dir.fd, st))
}

fn on_fuse(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    Ok(nix::sys::statfs::fstatfs(fd)?.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
}

/// The names of `path`, `.` dropped (`..` kept: it must be walked, not folded lexically).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_step(dir: BorrowedFd<'_>, name: &OsStr, at: &Path) -> Result<OwnedFd, Stop> {
    openat(dir, name, STEP_FLAGS, Mode::empty()).map_err(|errno| Stop::Io {
        op: "opening",
        at: at.to_owned(),
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(uid: u32, gid: u32, mode: u32) -> FileStat {
        // SAFETY: FileStat is a plain C struct; all-zero is a valid value of it.
        let mut st: FileStat = unsafe { std::mem::zeroed() };
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_mode = libc::S_IFDIR | mode;
        st
    }

    #[test]
    fn only_root_owned_directories_no_one_else_may_write_are_safe() {
        assert_eq!(writer_of(&dir(0, 0, 0o755), false, 1000), None);
        assert_eq!(writer_of(&dir(0, 0, 0o700), false, 0), None);
        assert!(matches!(
            writer_of(&dir(1000, 0, 0o555), false, 0),
            Some((Writer::Owner { uid: 1000, .. }, Through::Dir))
        ));
        assert!(matches!(
            writer_of(&dir(0, 100, 0o775), false, 0),
            Some((Writer::Group { gid: 100, .. }, Through::Dir))
        ));
        // Group root is no exception: an ACL's grant shows in these bits too.
        assert!(matches!(
            writer_of(&dir(0, 0, 0o775), false, 0),
            Some((Writer::Group { gid: 0, .. }, Through::Dir))
        ));
        assert_eq!(
            writer_of(&dir(0, 0, 0o777), false, 0),
            Some((Writer::Everyone, Through::Dir))
        );
        assert_eq!(
            writer_of(&dir(0, 0, 0o755), true, 0),
            Some((Writer::Fuse, Through::Dir))
        );
    }

    #[test]
    fn a_sticky_directory_protects_roots_entries_only() {
        assert_eq!(writer_of(&dir(0, 0, 0o1777), false, 0), None);
        assert!(matches!(
            writer_of(&dir(0, 0, 0o1777), false, 1000),
            Some((Writer::Owner { uid: 1000, .. }, Through::Entry))
        ));
        assert_eq!(writer_of(&dir(0, 0, 0o1775), false, 0), None);
        // The sticky bit does not bind the directory's owner.
        assert!(matches!(
            writer_of(&dir(1000, 0, 0o1777), false, 0),
            Some((Writer::Owner { .. }, Through::Dir))
        ));
    }

    #[test]
    fn writers_name_the_user_or_group() {
        assert_eq!(
            Writer::Owner {
                uid: 65534,
                name: Some("nobody".into())
            }
            .to_string(),
            "is owned by uid 65534 (nobody)"
        );
        assert_eq!(
            Writer::Group { gid: 7, name: None }.to_string(),
            "is writable by group 7"
        );
    }

    #[test]
    fn dot_dot_is_walked_not_folded() {
        assert_eq!(
            components(Path::new("/a/./b/../c")),
            ["a", "b", "..", "c"].map(OsString::from)
        );
    }
}
