//! Host inspection for tests: mounts in mountinfo, loop devices, private mount namespaces, and a
//! temp directory that undoes on drop whatever a test left mounted or attached under it.
//!
//! The mountinfo parser here is the tests' own, independent of the crate's, so it can serve as
//! the oracle for it. Loop devices are global: helpers only ever look at, or detach, devices whose
//! backing file lies under the caller's own temp directory (tests run in parallel).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mesos_dvdi::mount::{Host, MntFlags, Mounter, MsFlags};

/// The mount table of the process's main thread (the host's, for tests that never unshare).
pub const PROCESS_MOUNTINFO: &str = "/proc/self/mountinfo";

/// The mount table of the calling thread, which may have a mount namespace of its own
/// (unshare(CLONE_NEWNS) implies CLONE_FS, so it applies to that thread alone).
pub const THREAD_MOUNTINFO: &str = "/proc/thread-self/mountinfo";

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The root of the mount within its file system.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type.
    pub fstype: String,
    /// Mount source (a device such as `/dev/loop3`).
    pub source: String,
}

/// Decodes the octal escapes the kernel writes in mountinfo fields (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash); anything else is kept as it is.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn path_field(field: &str) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&unescape(field)))
}

/// Parses mountinfo text: `id parent maj:min root mount_point options [optional...] - fstype
/// source super_options`. Lines that do not fit are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            Some(Mount {
                root: path_field(fields[3]),
                mount_point: path_field(fields[4]),
                fstype: fields.get(sep + 1)?.to_string(),
                source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
            })
        })
        .collect()
}

/// The mounts in the mountinfo file `table`.
pub fn mounts(table: &str) -> Vec<Mount> {
    parse_mountinfo(&fs::read_to_string(table).expect("read mountinfo"))
}

/// Mounts in `table` whose mount point is `dir` or lies under it.
pub fn mounts_under(table: &str, dir: &Path) -> Vec<Mount> {
    let dir = canonical(dir);
    mounts(table)
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&dir))
        .collect()
}

/// The mount at exactly `path` in `table`, if any (the last one, as the kernel shows it).
pub fn mount_at(table: &str, path: &Path) -> Option<Mount> {
    let path = canonical(path);
    mounts(table).into_iter().rfind(|m| m.mount_point == path)
}

/// Every attached loop device and its backing file, from `/sys/block/loop*/loop/backing_file`
/// (a file removed while attached is shown by the kernel with ` (deleted)`, dropped here).
pub fn loop_backing_files() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir("/sys/block")
        .expect("read /sys/block")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_bytes().starts_with(b"loop"))
        .filter_map(|e| {
            let raw = fs::read(e.path().join("loop/backing_file")).ok()?;
            let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let raw = raw.strip_suffix(b" (deleted)").unwrap_or(raw);
            Some((
                e.file_name().to_string_lossy().into_owned(),
                PathBuf::from(OsStr::from_bytes(raw)),
            ))
        })
        .collect();
    out.sort();
    out
}

/// Loop devices (`loopN`) whose backing file lies under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let dir = canonical(dir);
    loop_backing_files()
        .into_iter()
        .filter(|(_, backing)| backing.starts_with(&dir))
        .map(|(dev, _)| dev)
        .collect()
}

/// `path` with symlinks resolved when it exists (the kernel shows resolved paths).
pub fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Attaches `image` to a loop device the way an operator would by hand (`losetup`, no
/// autoclear), for tests of finding and detaching devices the backend did not attach itself in
/// this process. Returns `/dev/loopN`.
pub fn attach_by_hand(image: &Path) -> PathBuf {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(image)
        .output()
        .expect("run losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs `f` on a thread with a private mount namespace whose mounts never propagate to the
/// host's (mounts made there vanish with it), and returns its result; a panic in `f` is
/// re-raised here.
pub fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
            Host.mount(
                Path::new("none"),
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .expect("make / rprivate");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A temp directory for one test. On drop, even when the test failed, it unmounts whatever the
/// calling thread's namespace has mounted under it and detaches the loop devices backed by files
/// under it, before the directory itself is deleted.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A new temp directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Its path (canonical, as mountinfo and sysfs show it).
    pub fn path(&self) -> PathBuf {
        canonical(self.dir.path())
    }

    /// Asserts that nothing is mounted under it in this thread's namespace or in the host's, and
    /// that no loop device is backed by a file under it.
    pub fn assert_released(&self) {
        let p = self.path();
        assert_eq!(mounts_under(THREAD_MOUNTINFO, &p), [], "mounts left");
        assert_eq!(mounts_under(PROCESS_MOUNTINFO, &p), [], "mounts left");
        assert_eq!(
            loop_devices_under(&p),
            Vec::<String>::new(),
            "loop devices left"
        );
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let p = self.path();
        let mut left = mounts_under(THREAD_MOUNTINFO, &p);
        // Deepest first, so nothing is busy because of a mount inside it.
        left.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in left {
            let _ = Host.umount(&m.mount_point, MntFlags::MNT_DETACH);
        }
        for dev in loop_devices_under(&p) {
            detach_if_backed_under(&dev, &p);
        }
    }
}

/// `LOOP_CLR_FD` from `<linux/loop.h>`.
const LOOP_CLR_FD: u32 = 0x4C01;
nix::ioctl_none_bad!(loop_clr_fd, LOOP_CLR_FD);

/// Detaches `/dev/<dev>` if, with the device held open (so it cannot change hands), its backing
/// file still lies under `dir`: what sysfs said a moment ago may already be another test's device.
fn detach_if_backed_under(dev: &str, dir: &Path) {
    let Ok(file) = fs::File::open(Path::new("/dev").join(dev)) else {
        return;
    };
    let still_ours = loop_backing_files()
        .iter()
        .any(|(d, backing)| d == dev && backing.starts_with(dir));
    if still_ours {
        // SAFETY: LOOP_CLR_FD takes no argument; `file` is open for the whole call.
        let _ = unsafe { loop_clr_fd(std::os::fd::AsRawFd::as_raw_fd(&file)) };
    }
}

/// Writes an executable `/bin/sh` script (a test double standing in for a program) to `path`.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(
        path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
}
