//! What resolving a target made — directories, and the link a re-homed volume is reached
//! through — kept as handles so a failed prepare can take each back without following anything a
//! task planted since.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{kind, STEP_FLAGS};

/// One directory a resolution created: its verified parent (a handle, never a path), its name
/// there, and its identity when made.
#[derive(Debug)]
struct CreatedDir {
    parent: OwnedFd,
    name: OsString,
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

/// Directories a resolution created, in the order made, and the symbolic links put where a
/// re-homed volume is reached. Dropped, it removes them again: links first (each only while the
/// name still holds a link with the text put there), then directories deepest first, each only
/// while it is still empty and still the same directory (a directory that anything else touched
/// — gained an entry, was replaced — is left alone); [`CreatedDirs::disarm`] keeps them. Drop
/// cannot return an error, so a failed removal is logged (`log::warn!`), here.
#[derive(Debug, Default)]
pub struct CreatedDirs {
    dirs: Vec<CreatedDir>,
    links: Vec<CreatedLink>,
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
        self.links.append(&mut other.links);
    }

    /// Records a directory made in `parent` under `name`, whose identity was verified as `st`.
    /// `held` keeps its inode alive (see [`CreatedDir`]).
    pub(super) fn push_dir(
        &mut self,
        parent: OwnedFd,
        name: OsString,
        st: &nix::sys::stat::FileStat,
        held: OwnedFd,
        host: PathBuf,
    ) {
        self.dirs.push(CreatedDir {
            parent,
            name,
            dev: st.st_dev,
            ino: st.st_ino,
            _held: held,
            host,
        });
    }

    /// Records a symbolic link put in `parent` under `name`, holding `text`.
    pub(super) fn push_link(
        &mut self,
        parent: OwnedFd,
        name: OsString,
        text: PathBuf,
        host: PathBuf,
    ) {
        self.links.push(CreatedLink {
            parent,
            name,
            text,
            host,
        });
    }

    /// The directories, on the host, in the order created.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.host.as_path())
    }

    /// The links, on the host, in the order put.
    pub fn links(&self) -> impl Iterator<Item = &Path> {
        self.links.iter().map(|l| l.host.as_path())
    }

    /// Whether nothing was created.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.links.is_empty()
    }

    /// Keeps every directory and link: nothing is removed on drop.
    pub fn disarm(mut self) {
        self.dirs.clear();
        self.links.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        // A link may lie in a directory made here: links go first, so that one can go too.
        for link in self.links.drain(..).rev() {
            match link.remove() {
                Ok(true) => log::debug!("removed the link {} again", link.host.display()),
                Ok(false) => log::info!(
                    "kept {}: it is no longer the link put there for the volume",
                    link.host.display()
                ),
                Err(e) => log::warn!(
                    "removing the link {} again failed: {e}",
                    link.host.display()
                ),
            }
        }
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

/// One symbolic link a resolution put: its verified parent (a handle), its name there and the
/// text it holds.
#[derive(Debug)]
struct CreatedLink {
    parent: OwnedFd,
    name: OsString,
    text: PathBuf,
    /// For the log.
    host: PathBuf,
}

impl CreatedLink {
    /// Removes the link if the name still holds a link with the text put there; leaves whatever
    /// else is there alone. Relative to the parent's handle, so nothing is followed. Returns
    /// whether it was removed.
    fn remove(&self) -> nix::Result<bool> {
        match readlinkat(self.parent.as_fd(), self.name.as_os_str()) {
            Ok(text) if Path::new(&text) == self.text => {}
            // Not a link any more, another link, or gone.
            Ok(_) | Err(Errno::EINVAL | Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        }
        match unlinkat(
            self.parent.as_fd(),
            self.name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
