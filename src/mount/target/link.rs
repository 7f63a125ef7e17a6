//! The symbolic link a re-homed volume is reached through.
//!
//! When the path a task asked for lies under a directory someone besides root can change (the
//! task user's own sandbox, usually), a bind there could be moved by that someone; the volume is
//! bound in a directory only root can change instead, and a link at the asked-for path leads
//! there. The link is the task's to break: whoever replaces it changes where that name leads for
//! them, never where anything is mounted.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{readlinkat, AtFlags};
use nix::sys::stat::{fstatat, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

use super::{io_errno, kind, CreatedDirs, ResolvedTarget, TargetError};

impl ResolvedTarget {
    /// Puts a symbolic link holding `text` at `name` in this directory, relative to its verified
    /// handle (nothing a task planted is followed). A link already there whose text lies under
    /// `ours` (left by an earlier prepare of the same kind: the sandbox outlives nothing in Mesos,
    /// but `dvdi run` reuses one) is replaced; anything else there is refused as
    /// [`TargetError::Occupied`], carrying `why` (the reason the volume is not bound at the name).
    /// Returns the link as made, to be taken back should the prepare fail.
    pub fn place_link(
        &self,
        name: &OsStr,
        text: &Path,
        ours: &Path,
        why: TargetError,
    ) -> Result<CreatedDirs, TargetError> {
        let rel = self.rel.join(name);
        let (component, host) = self.both(&rel);
        let io = |op: &'static str| {
            let (component, host) = (component.clone(), host.clone());
            let path = self.container.as_path().to_owned();
            move |source| TargetError::Io {
                path,
                op,
                component,
                host,
                source,
            }
        };
        let occupied = |why| TargetError::Occupied {
            path: self.container.as_path().to_owned(),
            component: component.clone(),
            host: host.clone(),
            why: Box::new(why),
        };
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {}
            Ok(st) if kind(&st) == SFlag::S_IFLNK => {
                let old = readlinkat(self.fd.as_fd(), name).map_err(io("reading the link"))?;
                if !Path::new(&old).starts_with(ours) {
                    return Err(occupied(why));
                }
                match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io("replacing the link")(e)),
                }
            }
            Ok(_) => return Err(occupied(why)),
            Err(e) => return Err(io("inspecting")(e)),
        }
        let parent = self
            .fd
            .try_clone()
            .map_err(|e| io("keeping a handle of the directory of")(io_errno(&e)))?;
        match symlinkat(text, self.fd.as_fd(), name) {
            Ok(()) => {}
            // Taken meanwhile.
            Err(Errno::EEXIST) => return Err(occupied(why)),
            Err(e) => return Err(io("making the link")(e)),
        }
        let mut made = CreatedDirs::new();
        made.push_link(parent, name.to_owned(), text.to_owned(), host);
        Ok(made)
    }
}
