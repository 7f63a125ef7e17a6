//! Who uses a block device: its mounts in every mount namespace on the host, and the processes
//! that hold it open, read from `/proc` (a parameter, so tests can point it elsewhere).
//!
//! A mount made in a private mount namespace (a container's, a `dvdi run` command's) is invisible
//! in the caller's own mount table, yet it keeps the device busy; this is how such a mount is
//! found and named. Read-only: nothing here changes a mount or signals a process. What it reports
//! is a snapshot taken without any lock, good for an error message, never for a decision that
//! must be exact.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::mountinfo::parse_mountinfo;

/// A block device's number, as mountinfo and sysfs show it (`major:minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DeviceNumber {
    /// Parses `major:minor` (a sysfs `dev` file's text; a trailing newline is allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim_end().split_once(':')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl DeviceNumber {
    /// The device of the file system `path` lies on (`st_dev`); `None` when it cannot be
    /// examined.
    pub fn of_path(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(path).ok()?.dev();
        Some(Self {
            major: nix::sys::stat::major(dev).try_into().ok()?,
            minor: nix::sys::stat::minor(dev).try_into().ok()?,
        })
    }
}

/// Written as `major:minor`, as mountinfo and sysfs write it.
impl serde::Serialize for DeviceNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "{text:?} is not a device number (major:minor)"
            ))
        })
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A process, as an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its pid (as seen from the `/proc` that was read).
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`), `?` when it could not be read.
    pub comm: String,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} ({})", self.pid, self.comm)
    }
}

/// One use of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceUse {
    /// Mounted at `mount_point` in the caller's own mount namespace.
    MountedHere {
        /// Where.
        mount_point: PathBuf,
    },
    /// Mounted in another mount namespace, the one `process` lives in.
    MountedElsewhere {
        /// Where, as that namespace sees it.
        mount_point: PathBuf,
        /// A process of that namespace (the lowest pid found in it).
        process: Process,
    },
    /// Held open by a process (a file descriptor on the device).
    Open {
        /// The process.
        process: Process,
    },
}

impl fmt::Display for DeviceUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MountedHere { mount_point } => write!(f, "mounted at {}", mount_point.display()),
            Self::MountedElsewhere {
                mount_point,
                process,
            } => write!(
                f,
                "mounted at {} in the mount namespace of {process}",
                mount_point.display()
            ),
            Self::Open { process } => write!(f, "held open by {process}"),
        }
    }
}

/// The numeric entries of `proc_root` (its processes), lowest pid first.
fn pids(proc_root: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

fn process(proc_root: &Path, pid: i32) -> Process {
    let comm = fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    Process { pid, comm }
}

/// Every use of the device `number` that `proc_root` shows: its mounts in each mount namespace
/// (one process named per namespace), then, given its `node` (e.g. `/dev/loop3`), the processes
/// holding the node open. Processes that vanish or cannot be read meanwhile are skipped.
pub fn device_users(proc_root: &Path, number: DeviceNumber, node: Option<&Path>) -> Vec<DeviceUse> {
    let own_ns = fs::read_link(proc_root.join("thread-self/ns/mnt")).ok();
    let mut seen_ns = HashSet::new();
    let mut out = Vec::new();
    let pids = pids(proc_root);
    for &pid in &pids {
        let dir = proc_root.join(pid.to_string());
        // One read of mountinfo per namespace: every process in it shows the same table.
        let Ok(ns) = fs::read_link(dir.join("ns/mnt")) else {
            continue;
        };
        if !seen_ns.insert(ns.clone()) {
            continue;
        }
        let Ok(text) = fs::read(dir.join("mountinfo")) else {
            continue;
        };
        for entry in parse_mountinfo(&text) {
            if (entry.major, entry.minor) != (number.major, number.minor) {
                continue;
            }
            out.push(if own_ns.as_ref() == Some(&ns) {
                DeviceUse::MountedHere {
                    mount_point: entry.mount_point,
                }
            } else {
                DeviceUse::MountedElsewhere {
                    mount_point: entry.mount_point,
                    process: process(proc_root, pid),
                }
            });
        }
    }
    let Some(node) = node else {
        return out;
    };
    for &pid in &pids {
        let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        let holds = fds
            .filter_map(Result::ok)
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == node));
        if holds {
            out.push(DeviceUse::Open {
                process: process(proc_root, pid),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_parse_as_sysfs_writes_them() {
        assert_eq!(
            DeviceNumber::parse("7:3\n"),
            Some(DeviceNumber { major: 7, minor: 3 })
        );
        assert_eq!(DeviceNumber::parse("7"), None);
        assert_eq!(DeviceNumber::parse("a:b"), None);
        assert_eq!(
            DeviceNumber {
                major: 259,
                minor: 0
            }
            .to_string(),
            "259:0"
        );
    }

    #[test]
    fn a_fake_proc_names_mounts_per_namespace_and_open_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let line = "40 1 7:3 / /mnt/v rw - ext4 /dev/loop3 rw\n";
        // pid 10: our namespace; 20 and 21: another one, both mounting it; 30: holds it open.
        let ns = |pid: &str, ns: &str, mountinfo: &str| {
            let p = root.join(pid);
            fs::create_dir_all(p.join("ns")).unwrap();
            fs::create_dir_all(p.join("fd")).unwrap();
            std::os::unix::fs::symlink(ns, p.join("ns/mnt")).unwrap();
            fs::write(p.join("mountinfo"), mountinfo).unwrap();
            fs::write(p.join("comm"), format!("cmd{pid}\n")).unwrap();
        };
        ns("10", "mnt:[1]", line);
        ns("20", "mnt:[2]", line);
        ns("21", "mnt:[2]", line);
        ns("30", "mnt:[1]", line);
        std::os::unix::fs::symlink("/dev/loop3", root.join("30/fd/4")).unwrap();
        std::os::unix::fs::symlink("10", root.join("thread-self")).unwrap();
        let users = device_users(
            root,
            DeviceNumber { major: 7, minor: 3 },
            Some(Path::new("/dev/loop3")),
        );
        let text: Vec<String> = users.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "mounted at /mnt/v",
                "mounted at /mnt/v in the mount namespace of process 20 (cmd20)",
                "held open by process 30 (cmd30)",
            ]
        );
        // Another device: nothing.
        assert!(device_users(
            root,
            DeviceNumber { major: 7, minor: 4 },
            Some(Path::new("/dev/loop4"))
        )
        .is_empty());
    }
}
