//! The built-in `loop` driver: a file system image per volume, attached to a loop device.
//!
//! Layout under `loop_root`: `images/NAME.img` (sparse, `size` GiB) and `mnt/NAME` (the mount
//! point). Devices are attached through the loop-control ioctls (never the `losetup` program)
//! with `LO_FLAGS_AUTOCLEAR`, so the kernel detaches a device by itself once it is neither mounted
//! nor open: a crash between attach and mount, or after unmount, never leaks a device. Within one
//! call, an [`Attached`] guard detaches the device on any failure after attach while the original
//! error is returned. Devices are found again by their backing file in sysfs, so unmount works
//! after an agent restart. Every host path is a parameter ([`LoopPaths`]) so tests can move them.
//!
//! An image is never attached twice: a second device on one image, mounted beside the first,
//! corrupts the file system. Mount refuses an image the kernel shows attached already (a device
//! still mounted in another mount namespace, say) and names the device and who uses it.
//!
//! A mount for readers only ([`MountRequest::read_only`]) is read-only on the host and skips the
//! journal (ext4 `noload`, xfs `norecovery`): another host may be reading the same image, and a
//! journal replay is a write. Such a mount cannot be made writable in place, so a writer is
//! refused while it stands.
//!
//! This module must never detach a device whose backing file is not one of its own images.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::command::{self, RunError};
use super::{
    tail_text, Backend, BackendError, Call, Capabilities, MountId, MountRequest, Scope, Timeouts,
    VolumeInfo,
};
use crate::mount::{device_users, DeviceNumber, DeviceUse, MntFlags, MountError, Mounter, MsFlags};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// Options the `loop` driver understands.
pub const OPTIONS: &[&str] = &["size", "fstype", "overwritefs"];

/// Largest image accepted, in GiB (a typo such as `size=10000000` must not fill a disk).
pub const MAX_SIZE_GIB: u64 = 16 * 1024;

/// How often to ask for another free device when another process takes ours first.
const ATTACH_ATTEMPTS: u32 = 16;

/// How long to wait for the kernel to finish detaching a device. The detach happens at the
/// device's last close, which can come just after ours or after umount(2) returns: a process
/// forked by another thread holds a copy of our descriptor until it execs, and udev probes.
const DETACH_WAIT: Duration = Duration::from_secs(5);

/// How often a busy unmount is retried (after 10, 20, 40, 80 and 160 ms).
const UMOUNT_BUSY_RETRIES: u32 = 5;

/// How much of mkfs's stderr an error quotes.
const MKFS_STDERR_TAIL: usize = 512;

/// The kernel ABI of `<linux/loop.h>`, spelled out because the libc crate does not carry it.
mod sys {
    /// `LOOP_SET_FD`: attach the backing file (its fd is the argument).
    pub const LOOP_SET_FD: u32 = 0x4C00;
    /// `LOOP_CLR_FD`: detach.
    pub const LOOP_CLR_FD: u32 = 0x4C01;
    /// `LOOP_SET_STATUS64`: set flags and name after `LOOP_SET_FD`.
    pub const LOOP_SET_STATUS64: u32 = 0x4C04;
    /// `LOOP_CONFIGURE` (Linux 5.8+): attach and configure in one step.
    pub const LOOP_CONFIGURE: u32 = 0x4C0A;
    /// `LOOP_CTL_GET_FREE`, on `/dev/loop-control`: the number of a free device (made if needed).
    pub const LOOP_CTL_GET_FREE: u32 = 0x4C82;
    /// `LO_FLAGS_AUTOCLEAR`: detach when the last user (open or mount) goes away.
    pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
    /// `LO_NAME_SIZE`.
    pub const LO_NAME_SIZE: usize = 64;
    /// `LO_KEY_SIZE`.
    pub const LO_KEY_SIZE: usize = 32;

    /// `struct loop_info64`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct LoopInfo64 {
        pub lo_device: u64,
        pub lo_inode: u64,
        pub lo_rdevice: u64,
        pub lo_offset: u64,
        pub lo_sizelimit: u64,
        pub lo_number: u32,
        pub lo_encrypt_type: u32,
        pub lo_encrypt_key_size: u32,
        pub lo_flags: u32,
        pub lo_file_name: [u8; LO_NAME_SIZE],
        pub lo_crypt_name: [u8; LO_NAME_SIZE],
        pub lo_encrypt_key: [u8; LO_KEY_SIZE],
        pub lo_init: [u64; 2],
    }

    /// `struct loop_config`.
    #[repr(C)]
    pub struct LoopConfig {
        pub fd: u32,
        pub block_size: u32,
        pub info: LoopInfo64,
        pub reserved: [u64; 8],
    }

    // The kernel reads these by size: a layout slip must fail the build, not corrupt a call.
    const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
    const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

    // The loop ioctls predate the _IOW encoding, hence the `_bad` forms with the raw numbers.
    nix::ioctl_none_bad!(ctl_get_free, LOOP_CTL_GET_FREE);
    nix::ioctl_write_ptr_bad!(configure, LOOP_CONFIGURE, LoopConfig);
    nix::ioctl_write_int_bad!(set_fd, LOOP_SET_FD);
    nix::ioctl_write_ptr_bad!(set_status64, LOOP_SET_STATUS64, LoopInfo64);
    nix::ioctl_none_bad!(clr_fd, LOOP_CLR_FD);
}

/// A failed `loop` operation; each names the option, path or device.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// An option the driver does not know.
    #[error("unknown option {key:?}; the loop driver takes size (GiB), fstype (ext4 or xfs) and overwritefs (true or false)")]
    UnknownOption {
        /// The key.
        key: String,
    },
    /// A bad option value.
    #[error("option {key}={value:?} is invalid; {expected}")]
    BadOption {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// What would be valid.
        expected: &'static str,
    },
    /// The file system asked for has no mkfs program on this host.
    #[error("option fstype={fstype} needs {program}, which is in none of {searched}; install {package} or use fstype=ext4")]
    MkfsMissing {
        /// The file system type.
        fstype: &'static str,
        /// The program looked for.
        program: &'static str,
        /// The directories searched, `:`-separated.
        searched: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// `root/images` or `root/mnt/NAME` could not be made.
    #[error("creating directory {path} failed")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image file could not be made.
    #[error("creating image {path} failed")]
    CreateImage {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image file could not be given its size.
    #[error("sizing image {path} to {size_gib} GiB failed")]
    SizeImage {
        /// The image.
        path: PathBuf,
        /// The size asked for.
        size_gib: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image could not be inspected or opened.
    #[error("opening image {path} failed")]
    OpenImage {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image's superblock could not be read.
    #[error("reading the superblock of {path} failed")]
    ReadSuperblock {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image could not be deleted.
    #[error("removing image {path} failed")]
    RemoveImage {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The images directory could not be listed.
    #[error("listing {path} failed")]
    ListImages {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A loop device or loop-control could not be opened.
    #[error("opening {path} failed")]
    OpenDevice {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A loop ioctl failed.
    #[error("{op} on {device} failed")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// The device (or loop-control).
        device: PathBuf,
        /// The errno.
        #[source]
        errno: Errno,
    },
    /// No free loop device could be had.
    #[error("no free loop device after {attempts} attempts (others kept taking them); retry, or raise max_loop")]
    NoFreeDevice {
        /// How many were tried.
        attempts: u32,
    },
    /// mkfs could not be run to an exit status (see [`RunError`]).
    #[error(transparent)]
    MkfsRun(RunError),
    /// mkfs did not finish in time; it was killed (with anything it started).
    #[error("{program} {device} did not finish within {after:?} and was killed; check the device and the host's load, or raise mount_timeout_secs")]
    MkfsTimeout {
        /// The program.
        program: PathBuf,
        /// The device.
        device: PathBuf,
        /// The time it had.
        after: Duration,
    },
    /// mkfs failed.
    #[error("{program} {device} exited with {status}: {stderr_tail}")]
    MkfsFailed {
        /// The program.
        program: PathBuf,
        /// The device.
        device: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// Mounting the device failed (the error names device and mount point).
    #[error(transparent)]
    Mount(MountError),
    /// Unmounting failed (the error names the mount point).
    #[error(transparent)]
    Unmount(MountError),
    /// A writer asked for a volume mounted read-only for readers.
    #[error("{path} is mounted read-only for readers only (without its journal replayed, so the kernel cannot make it writable); a writer can have it once it is unmounted")]
    MountedReadOnly {
        /// The mount point.
        path: PathBuf,
    },
    /// Removing a mounted volume.
    #[error("{path} is mounted; unmount the volume before removing it")]
    Mounted {
        /// The mount point.
        path: PathBuf,
    },
    /// The image is attached to a loop device already (not through this volume's mount point):
    /// attaching it again would put two devices, and two file system instances, on one image.
    #[error("image {image} is already attached to {}; a second loop device on it would corrupt it, so it is not attached again: {}", attached_list(.attached), attached_advice(.attached))]
    AlreadyAttached {
        /// The image.
        image: PathBuf,
        /// Each device backed by it, with what uses it.
        attached: Vec<AttachedDevice>,
    },
    /// Removing a volume whose image is attached and in use (mounted in another namespace, say).
    #[error("image {image} is in use through {}; stop what uses it before removing the volume", attached_list(.attached))]
    InUse {
        /// The image.
        image: PathBuf,
        /// Each device backed by it, with what uses it.
        attached: Vec<AttachedDevice>,
    },
}

/// A loop device backed by a volume's image, and what uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDevice {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// Its mounts (in any mount namespace) and the processes holding it open.
    pub uses: Vec<DeviceUse>,
}

/// `/dev/loop3 (mounted at /x in the mount namespace of process 42 (sleep))`, for each device.
fn attached_list(attached: &[AttachedDevice]) -> String {
    let items: Vec<String> = attached
        .iter()
        .map(|a| {
            let uses = if a.uses.is_empty() {
                "nothing on this host uses it".to_owned()
            } else {
                let uses: Vec<String> = a.uses.iter().map(ToString::to_string).collect();
                uses.join("; ")
            };
            format!("{} ({uses})", a.device.display())
        })
        .collect();
    items.join(", ")
}

/// What the operator can do about an image attached already.
fn attached_advice(attached: &[AttachedDevice]) -> String {
    if attached.iter().all(|a| a.uses.is_empty()) {
        let devices: Vec<String> = attached
            .iter()
            .map(|a| a.device.display().to_string())
            .collect();
        format!(
            "if it is left over, detach it (losetup -d {}) and retry",
            devices.join(" ")
        )
    } else {
        "stop what uses it (a process left running from an earlier task, say), then retry"
            .to_owned()
    }
}

/// A file system the driver can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    fn mkfs(self) -> &'static str {
        match self {
            FsType::Ext4 => "mkfs.ext4",
            FsType::Xfs => "mkfs.xfs",
        }
    }

    /// mkfs flags: quiet, and force (the device is ours and may hold an old file system only
    /// when `overwritefs=true` asked for it to go).
    fn mkfs_flags(self) -> [&'static str; 2] {
        match self {
            FsType::Ext4 => ["-q", "-F"],
            FsType::Xfs => ["-q", "-f"],
        }
    }

    /// The mount option that keeps a read-only mount from writing to the device: no journal
    /// (ext4) or log (xfs) replay. Without it a read-only mount of a file system left dirty by
    /// a crashed writer replays the journal, a write to storage others may be reading.
    fn no_replay(self) -> &'static str {
        match self {
            FsType::Ext4 => "noload",
            FsType::Xfs => "norecovery",
        }
    }

    fn package(self) -> &'static str {
        match self {
            FsType::Ext4 => "e2fsprogs",
            FsType::Xfs => "xfsprogs",
        }
    }
}

/// The options of one call, validated.
#[derive(Debug)]
struct LoopOpts {
    size_gib: u64,
    fstype: FsType,
    overwrite: bool,
}

fn parse_opts(opts: &VolumeOpts) -> Result<LoopOpts, LoopError> {
    let mut out = LoopOpts {
        size_gib: 1,
        fstype: FsType::Ext4,
        overwrite: false,
    };
    for (key, value) in opts.iter() {
        let bad = |key, expected| LoopError::BadOption {
            key,
            value: value.to_owned(),
            expected,
        };
        match key {
            "size" => {
                out.size_gib = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_SIZE_GIB).contains(n))
                    .ok_or_else(|| bad("size", "give a whole number of GiB from 1 to 16384"))?
            }
            "fstype" => {
                out.fstype = match value {
                    "ext4" => FsType::Ext4,
                    "xfs" => FsType::Xfs,
                    _ => return Err(bad("fstype", "use ext4 or xfs")),
                }
            }
            "overwritefs" => {
                out.overwrite = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("overwritefs", "use true or false")),
                }
            }
            _ => {
                return Err(LoopError::UnknownOption {
                    key: key.to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// Checks `opts` as a mount of a `loop` volume would, touching nothing: the options the driver
/// refuses are refused here too (for `dvdi resolve`, which must refuse what `dvdi run` refuses).
/// Whether the host has the mkfs program a file system needs is left to the mount.
pub fn check_options(opts: &VolumeOpts) -> Result<(), LoopError> {
    parse_opts(opts).map(|_| ())
}

/// ext2/3/4 superblock magic, little-endian at byte 1080 (superblock at 1024, `s_magic` at 56).
const EXT_MAGIC_OFFSET: u64 = 1080;
const EXT_MAGIC: u16 = 0xEF53;
/// XFS superblock magic at byte 0.
const XFS_MAGIC: &[u8; 4] = b"XFSB";

/// Reads the file system type from the image's superblock; `None` when there is none (an image
/// too short to hold one has none either).
fn detect_fs(image: &Path) -> io::Result<Option<FsType>> {
    let mut f = File::open(image)?;
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => Ok(None),
        _ => Err(e),
    };
    let mut head = [0u8; 4];
    if let Err(e) = f.read_exact(&mut head) {
        return short(e);
    }
    if &head == XFS_MAGIC {
        return Ok(Some(FsType::Xfs));
    }
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(EXT_MAGIC_OFFSET))?;
    if let Err(e) = f.read_exact(&mut magic) {
        return short(e);
    }
    Ok((u16::from_le_bytes(magic) == EXT_MAGIC).then_some(FsType::Ext4))
}

/// The name of the built-in loop-device driver.
pub const LOOP_DRIVER: &str = "loop";

/// Host paths the driver uses (parameters so tests can point them elsewhere).
#[derive(Debug, Clone)]
pub struct LoopPaths {
    /// `/dev/loop-control`.
    pub control: PathBuf,
    /// Where `loopN` device nodes are (`/dev`).
    pub dev: PathBuf,
    /// `/sys/block`, whose `loopN/loop/backing_file` names each device's image and `loopN/dev`
    /// its number.
    pub sysfs_block: PathBuf,
    /// `/proc`, read to say who uses a device that is in the way (its mounts in every mount
    /// namespace, and the processes holding it open).
    pub proc: PathBuf,
    /// Where `mkfs.ext4` and `mkfs.xfs` are looked for, in order.
    pub tool_dirs: Vec<PathBuf>,
}

impl Default for LoopPaths {
    fn default() -> Self {
        // An agent's PATH often lacks the sbin directories where mkfs lives: search them too.
        let mut tool_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            if !tool_dirs.iter().any(|d| d == Path::new(dir)) {
                tool_dirs.push(PathBuf::from(dir));
            }
        }
        Self {
            control: PathBuf::from("/dev/loop-control"),
            dev: PathBuf::from("/dev"),
            sysfs_block: PathBuf::from("/sys/block"),
            proc: PathBuf::from("/proc"),
            tool_dirs,
        }
    }
}

impl LoopPaths {
    /// The first executable `program` in [`LoopPaths::tool_dirs`].
    fn find_tool(&self, program: &str) -> Option<PathBuf> {
        self.tool_dirs
            .iter()
            .map(|d| d.join(program))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
    }

    fn searched(&self) -> String {
        let dirs: Vec<_> = self
            .tool_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }
}

/// A loop device attached by this call: detached when dropped, unless [`Attached::disarm`]ed
/// once the device is mounted. The undo for every failure between attach and mount.
struct Attached<'a> {
    backend: &'a LoopBackend,
    image: PathBuf,
    device: PathBuf,
    /// The open device; `None` once disarmed.
    file: Option<File>,
}

impl<'a> Attached<'a> {
    fn new(backend: &'a LoopBackend, image: &Path, device: PathBuf, file: File) -> Self {
        Self {
            backend,
            image: image.to_owned(),
            device,
            file: Some(file),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Keeps the device attached. With autoclear set, the mount now holds it, and closing our
    /// handle leaves it to the kernel to detach it at unmount.
    fn disarm(mut self) {
        self.file = None;
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        if let Err(errno) = clear_fd(&file) {
            // Drop cannot return the error, and the caller is already returning the one that
            // matters; autoclear still detaches the device at its last close.
            log::warn!(
                "detaching {} after a failure: {errno}",
                self.device.display()
            );
        }
        // The detach happens at the last close, which is ours unless a process forked by another
        // thread still holds a copy of the descriptor: return only once it is done. Only this
        // device: another one on the image (found after attach) is not ours to wait for.
        drop(file);
        self.backend.wait_detached(&self.image, Some(&self.device));
    }
}

/// LOOP_CLR_FD; `ENXIO` (nothing attached any more, e.g. autoclear got there first) is success.
fn clear_fd(dev: &File) -> Result<(), Errno> {
    // SAFETY: LOOP_CLR_FD takes no argument; `dev` is an open file for the whole call.
    match unsafe { sys::clr_fd(dev.as_raw_fd()) } {
        Ok(_) | Err(Errno::ENXIO) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// The `loop` driver.
pub struct LoopBackend {
    driver: DriverName,
    root: PathBuf,
    mounter: Arc<dyn Mounter>,
    paths: LoopPaths,
    /// How long mkfs may take.
    mkfs_timeout: Duration,
}

impl std::fmt::Debug for LoopBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopBackend")
            .field("root", &self.root)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl LoopBackend {
    /// Images and mount points under `root`; mounts through `mounter`; the host's loop devices.
    pub fn new(root: PathBuf, mounter: Arc<dyn Mounter>) -> Self {
        Self::with_paths(root, mounter, LoopPaths::default())
    }

    /// As [`LoopBackend::new`], with the host paths given.
    pub fn with_paths(root: PathBuf, mounter: Arc<dyn Mounter>, paths: LoopPaths) -> Self {
        Self {
            driver: DriverName::new(LOOP_DRIVER).expect("valid driver name"),
            root,
            mounter,
            paths,
            mkfs_timeout: Timeouts::default().mount,
        }
    }

    /// Bounds mkfs by the mount timeout of `timeouts` (the default is [`Timeouts::default`]'s).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.mkfs_timeout = timeouts.mount;
        self
    }

    /// The image file of a volume.
    pub fn image(&self, name: &VolumeName) -> PathBuf {
        self.root.join("images").join(format!("{name}.img"))
    }

    /// The mount point of a volume.
    pub fn mount_point(&self, name: &VolumeName) -> PathBuf {
        self.root.join("mnt").join(name.as_str())
    }

    /// The loop devices whose backing file is `name`'s image, from sysfs (so they are found
    /// after a restart too).
    pub fn devices(&self, name: &VolumeName) -> Vec<PathBuf> {
        self.devices_of(&self.image(name))
    }

    fn fail(&self, name: Option<&VolumeName>, call: Call, e: LoopError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// Options parsed, and the mkfs program the chosen file system needs found, before anything
    /// on the host is touched.
    fn parse(&self, opts: &VolumeOpts) -> Result<(LoopOpts, PathBuf), LoopError> {
        let o = parse_opts(opts)?;
        let program =
            self.paths
                .find_tool(o.fstype.mkfs())
                .ok_or_else(|| LoopError::MkfsMissing {
                    fstype: o.fstype.name(),
                    program: o.fstype.mkfs(),
                    searched: self.paths.searched(),
                    package: o.fstype.package(),
                })?;
        Ok((o, program))
    }

    /// Whether `path` is a mount point: its device differs from its parent's (a loop mount is
    /// always another file system). Correct in any mount namespace, unlike a mountinfo path.
    fn is_mounted(path: &Path) -> bool {
        match (fs::metadata(path), path.parent().map(fs::metadata)) {
            (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
            _ => false,
        }
    }

    /// The backing file of loop device `dev` (`loopN`), from sysfs; `None` when unbound.
    fn backing_file(&self, dev: &OsStr) -> Option<PathBuf> {
        let raw = fs::read(self.paths.sysfs_block.join(dev).join("loop/backing_file")).ok()?;
        // The kernel adds a newline; a path may itself end in spaces, so trim nothing else.
        let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
        Some(PathBuf::from(OsStr::from_bytes(raw)))
    }

    /// The number (`major:minor`) of loop device `dev` (`loopN`), from sysfs.
    fn device_number(&self, dev: &OsStr) -> Option<DeviceNumber> {
        let text = fs::read_to_string(self.paths.sysfs_block.join(dev).join("dev")).ok()?;
        DeviceNumber::parse(&text)
    }

    /// Loop devices (`/dev/loopN`) whose backing file is `image`, from sysfs.
    fn devices_of(&self, image: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.paths.sysfs_block) else {
            return Vec::new();
        };
        // sysfs shows the path with symlinks resolved.
        let image = fs::canonicalize(image).unwrap_or_else(|_| image.to_owned());
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.as_bytes().starts_with(b"loop"))
            .filter(|n| self.backing_file(n).is_some_and(|b| b == image))
            .map(|n| self.paths.dev.join(n))
            .collect();
        found.sort();
        found
    }

    fn create_image(&self, image: &Path, size_gib: u64) -> Result<(), LoopError> {
        let dir = image.parent().unwrap_or(&self.root);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LoopError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(image)
        {
            Ok(f) => f,
            // Made meanwhile by another caller: use it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(source) => {
                return Err(LoopError::CreateImage {
                    path: image.to_owned(),
                    source,
                })
            }
        };
        // Sparse: set_len allocates nothing.
        if let Err(source) = f.set_len(size_gib * 1024 * 1024 * 1024) {
            // A zero-length image would later read as "no file system, too small": don't leave it.
            let _ = fs::remove_file(image);
            return Err(LoopError::SizeImage {
                path: image.to_owned(),
                size_gib,
                source,
            });
        }
        Ok(())
    }

    /// Attaches `image` to a free loop device, with autoclear.
    fn attach(&self, image: &Path) -> Result<Attached<'_>, LoopError> {
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(|source| LoopError::OpenImage {
                path: image.to_owned(),
                source,
            })?;
        let control = File::open(&self.paths.control).map_err(|source| LoopError::OpenDevice {
            path: self.paths.control.clone(),
            source,
        })?;
        let mut name = [0u8; sys::LO_NAME_SIZE];
        let bytes = image.as_os_str().as_encoded_bytes();
        // Informational only (sysfs has the full path); keep the NUL terminator.
        let n = bytes.len().min(sys::LO_NAME_SIZE - 1);
        name[..n].copy_from_slice(&bytes[..n]);
        let info = sys::LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: sys::LO_FLAGS_AUTOCLEAR,
            lo_file_name: name,
            lo_crypt_name: [0; sys::LO_NAME_SIZE],
            lo_encrypt_key: [0; sys::LO_KEY_SIZE],
            lo_init: [0; 2],
        };
        let backing_fd = backing.as_raw_fd();
        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument; `control` is open for the call.
            let n = unsafe { sys::ctl_get_free(control.as_raw_fd()) }.map_err(|errno| {
                LoopError::Ioctl {
                    op: "LOOP_CTL_GET_FREE",
                    device: self.paths.control.clone(),
                    errno,
                }
            })?;
            let device = self.paths.dev.join(format!("loop{n}"));
            let dev = match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&device)
            {
                Ok(dev) => dev,
                // Taken and already being detached again by another process since GET_FREE
                // (the kernel refuses opens during that teardown): ask again.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => continue,
                Err(source) => {
                    return Err(LoopError::OpenDevice {
                        path: device,
                        source,
                    })
                }
            };
            let config = sys::LoopConfig {
                // An open fd is never negative.
                fd: backing_fd.unsigned_abs(),
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: `config` is a fully initialised `struct loop_config` that outlives the
            // call; `dev` and the backing fd inside it are open for the whole call.
            match unsafe { sys::configure(dev.as_raw_fd(), &config) } {
                Ok(_) => return Ok(Attached::new(self, image, device, dev)),
                // Another process took this device between GET_FREE and now: ask again.
                Err(Errno::EBUSY) => continue,
                // Kernels before 5.8 do not know LOOP_CONFIGURE: the two-step way below.
                Err(Errno::EINVAL) | Err(Errno::ENOTTY) => {}
                Err(errno) => {
                    return Err(LoopError::Ioctl {
                        op: "LOOP_CONFIGURE",
                        device,
                        errno,
                    })
                }
            }
            // SAFETY: LOOP_SET_FD takes the backing file's fd by value; both fds are open.
            match unsafe { sys::set_fd(dev.as_raw_fd(), backing_fd) } {
                Ok(_) => {}
                Err(Errno::EBUSY) => continue,
                Err(errno) => {
                    return Err(LoopError::Ioctl {
                        op: "LOOP_SET_FD",
                        device,
                        errno,
                    })
                }
            }
            // Attached from here: the guard detaches it if setting the status fails.
            let attached = Attached::new(self, image, device, dev);
            // SAFETY: `info` is a fully initialised `struct loop_info64` that outlives the call;
            // the fd is `attached`'s open device for the whole call.
            if let Err(errno) = unsafe { sys::set_status64(attached.raw_fd(), &info) } {
                return Err(LoopError::Ioctl {
                    op: "LOOP_SET_STATUS64",
                    device: attached.device.clone(),
                    errno,
                });
            }
            return Ok(attached);
        }
        Err(LoopError::NoFreeDevice {
            attempts: ATTACH_ATTEMPTS,
        })
    }

    /// Runs mkfs on `device`, killed with anything it started when it has not finished within
    /// `timeout`.
    fn mkfs(
        program: &Path,
        device: &Path,
        fstype: FsType,
        timeout: Duration,
    ) -> Result<(), LoopError> {
        let [quiet, force] = fstype.mkfs_flags();
        let argv = [OsStr::new(quiet), OsStr::new(force), device.as_os_str()];
        let done = command::run(program, &argv, timeout).map_err(|e| match e {
            RunError::Timeout { after, .. } => LoopError::MkfsTimeout {
                program: program.to_owned(),
                device: device.to_owned(),
                after,
            },
            other => LoopError::MkfsRun(other),
        })?;
        if done.status.success() {
            return Ok(());
        }
        Err(LoopError::MkfsFailed {
            program: program.to_owned(),
            device: device.to_owned(),
            status: done.status,
            stderr_tail: tail_text(&done.stderr, MKFS_STDERR_TAIL),
        })
    }

    /// Attach, format if needed, mount (read-only, without journal replay, for `read_only`).
    /// Any failure after attach detaches the device again.
    fn attach_and_mount(
        &self,
        name: &VolumeName,
        opts: &LoopOpts,
        mkfs: &Path,
        read_only: bool,
    ) -> Result<PathBuf, LoopError> {
        let mnt = self.mount_point(name);
        let image = self.image(name);
        let attached = self.attach(&image)?;
        // Checked before attaching too; again now, so that a device attached meanwhile by
        // another process (which our per-volume lock does not bind) is never formatted or
        // mounted beside. Ours is detached again on the way out.
        self.refuse_if_attached(&image, Some(&attached.device))?;
        let existing = detect_fs(&image).map_err(|source| LoopError::ReadSuperblock {
            path: image.clone(),
            source,
        })?;
        // An existing file system wins over the fstype asked for: data is never reformatted
        // away unless overwritefs=true says so.
        let fstype = match existing {
            Some(found) if !opts.overwrite => found,
            _ => {
                Self::mkfs(mkfs, &attached.device, opts.fstype, self.mkfs_timeout)?;
                opts.fstype
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&mnt)
            .map_err(|source| LoopError::CreateDir {
                path: mnt.clone(),
                source,
            })?;
        let (flags, data) = if read_only {
            (
                MsFlags::MS_NOATIME | MsFlags::MS_RDONLY,
                Some(fstype.no_replay()),
            )
        } else {
            (MsFlags::MS_NOATIME, None)
        };
        self.mounter
            .mount(&attached.device, &mnt, Some(fstype.name()), flags, data)
            .map_err(LoopError::Mount)?;
        attached.disarm();
        Ok(mnt)
    }

    /// Warns of each option given for an existing volume that cannot take effect: an image is
    /// never resized, a file system is kept unless `overwritefs=true` (and always while mounted).
    /// A task asking for more than it gets should be told, not fail: the volume and its data
    /// are what it asked for by name.
    fn warn_ignored(
        &self,
        name: &VolumeName,
        given: &VolumeOpts,
        opts: &LoopOpts,
        image: &Path,
        mounted: bool,
    ) {
        let key = crate::spec::VolumeKey {
            driver: self.driver.clone(),
            name: name.clone(),
        };
        let state = if mounted {
            "is mounted already"
        } else {
            "exists"
        };
        const GIB: u64 = 1 << 30;
        if let (Some(size), Ok(meta)) = (given.get("size"), fs::metadata(image)) {
            let has = meta.len();
            if opts.size_gib.saturating_mul(GIB) != has {
                let has = if has % GIB == 0 {
                    format!("{} GiB", has / GIB)
                } else {
                    format!("{has} bytes")
                };
                log::warn!("{key} {state}: option size={size} is ignored: its image {} has {has} (an image is never resized)", image.display());
            }
        }
        let found = detect_fs(image).ok().flatten();
        if let (Some(fstype), Some(found)) = (given.get("fstype"), found) {
            if found != opts.fstype && (mounted || !opts.overwrite) {
                log::warn!("{key} {state}: option fstype={fstype} is ignored: it holds {} (overwritefs=true on an unmounted volume formats it anew, erasing its data)", found.name());
            }
        }
        if mounted && opts.overwrite {
            log::warn!("{key} {state}: option overwritefs=true is ignored: a mounted file system is never formatted");
        }
    }

    /// umount(2), retried briefly on EBUSY: a process forked by another thread of this process
    /// holds copies of its descriptors until it execs, and one may be a file on this volume.
    /// A volume that stays busy (a process still using it) fails after the retries.
    fn umount(&self, mnt: &Path) -> Result<(), MountError> {
        let mut pause = Duration::from_millis(10);
        for _ in 0..UMOUNT_BUSY_RETRIES {
            match self.mounter.umount(mnt, MntFlags::empty()) {
                Err(MountError::Unmount {
                    errno: Errno::EBUSY,
                    ..
                }) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                done => return done,
            }
        }
        self.mounter.umount(mnt, MntFlags::empty())
    }

    /// Waits, briefly, until no device is backed by `image` (or, with `only`, until that device
    /// no longer is), so that unmount returns with the volume fully released. Past the limit the
    /// kernel still detaches the device at its last close (autoclear is set): the unmount has
    /// succeeded either way, so this only logs.
    fn wait_detached(&self, image: &Path, only: Option<&Path>) {
        let deadline = Instant::now() + DETACH_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            let left: Vec<PathBuf> = self
                .devices_of(image)
                .into_iter()
                .filter(|d| only.is_none_or(|o| o == d))
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "{} still attached to {} after {DETACH_WAIT:?}; the kernel detaches it when its last user closes it",
                    image.display(),
                    left[0].display()
                );
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The devices backed by `image`, other than `except`, each with what uses it.
    fn attached_to(&self, image: &Path, except: Option<&Path>) -> Vec<AttachedDevice> {
        self.devices_of(image)
            .into_iter()
            .filter(|d| except != Some(d.as_path()))
            .map(|device| {
                let uses = device
                    .file_name()
                    .and_then(|n| self.device_number(n))
                    .map(|number| device_users(&self.paths.proc, number, Some(&device)))
                    .unwrap_or_default();
                AttachedDevice { device, uses }
            })
            .collect()
    }

    /// Refuses `image` when a device other than `except` is backed by it: never two devices,
    /// and two file system instances, on one image.
    fn refuse_if_attached(&self, image: &Path, except: Option<&Path>) -> Result<(), LoopError> {
        let attached = self.attached_to(image, except);
        if attached.is_empty() {
            return Ok(());
        }
        Err(LoopError::AlreadyAttached {
            image: image.to_owned(),
            attached,
        })
    }

    /// Detaches every device still backed by `image` (left attached by a kernel without
    /// autoclear, or by hand), and waits for the kernel to finish. A device still mounted
    /// somewhere is only marked autoclear by the kernel, never pulled from under its mount.
    fn detach_all(&self, image: &Path) -> Result<(), LoopError> {
        let image = fs::canonicalize(image).unwrap_or_else(|_| image.to_owned());
        for device in self.devices_of(&image) {
            let dev = match File::open(&device) {
                Ok(d) => d,
                // Gone, or being torn down, since sysfs was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => continue,
                Err(source) => {
                    return Err(LoopError::OpenDevice {
                        path: device,
                        source,
                    })
                }
            };
            // sysfs was read before the open: the device may have been freed and attached to
            // another file since. While we hold it open it cannot change hands, so look again
            // now, and never clear a device that is not backed by our image.
            let ours = device
                .file_name()
                .and_then(|n| self.backing_file(n))
                .is_some_and(|b| b == image);
            if !ours {
                continue;
            }
            clear_fd(&dev).map_err(|errno| LoopError::Ioctl {
                op: "LOOP_CLR_FD",
                device,
                errno,
            })?;
        }
        self.wait_detached(&image, None);
        Ok(())
    }
}

impl Backend for LoopBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        let fail = |e| self.fail(Some(name), Call::Create, e);
        let (o, _) = self.parse(opts).map_err(fail)?;
        self.create_image(&self.image(name), o.size_gib)
            .map_err(fail)
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let fail = |e| self.fail(Some(name), Call::Remove, e);
        let mnt = self.mount_point(name);
        if Self::is_mounted(&mnt) {
            return Err(fail(LoopError::Mounted { path: mnt }));
        }
        let image = self.image(name);
        // A device nothing uses (left attached by hand, say) is detached below; one in use
        // (mounted in another namespace) would keep the deleted image alive and lose it later.
        let attached: Vec<AttachedDevice> = self
            .attached_to(&image, None)
            .into_iter()
            .filter(|a| !a.uses.is_empty())
            .collect();
        if !attached.is_empty() {
            return Err(fail(LoopError::InUse { image, attached }));
        }
        self.detach_all(&image).map_err(fail)?;
        match fs::remove_file(&image) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(fail(LoopError::RemoveImage {
                    path: image,
                    source,
                }))
            }
        }
        // Only an empty mount point goes: files in it were written while it was not mounted,
        // and are not ours to delete.
        let _ = fs::remove_dir(&mnt);
        Ok(())
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let fail = |e| self.fail(Some(req.name), Call::Mount, e);
        let (opts, mkfs) = self.parse(req.opts).map_err(fail)?;
        let mnt = self.mount_point(req.name);
        let image = self.image(req.name);
        if Self::is_mounted(&mnt) {
            // A read-only mount without journal cannot be made writable in place.
            if !req.read_only && crate::mount::is_read_only(&mnt) {
                return Err(fail(LoopError::MountedReadOnly { path: mnt }));
            }
            self.warn_ignored(req.name, req.opts, &opts, &image, true);
            return Ok(mnt);
        }
        // Not mounted here, yet the image may be attached: mounted in another mount namespace
        // (a process left from an earlier command keeps it), or attached by hand.
        self.refuse_if_attached(&image, None).map_err(fail)?;
        match fs::symlink_metadata(&image) {
            Ok(_) => self.warn_ignored(req.name, req.opts, &opts, &image, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if req.explicit_create {
                    return Err(BackendError::no_such_volume(&self.driver, req.name));
                }
                self.create_image(&image, opts.size_gib).map_err(fail)?;
            }
            Err(source) => {
                return Err(fail(LoopError::OpenImage {
                    path: image,
                    source,
                }))
            }
        }
        self.attach_and_mount(req.name, &opts, &mkfs, req.read_only)
            .map_err(fail)
    }

    fn unmount(&self, name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        let fail = |e| self.fail(Some(name), Call::Unmount, e);
        let mnt = self.mount_point(name);
        if Self::is_mounted(&mnt) {
            self.umount(&mnt).map_err(|e| fail(LoopError::Unmount(e)))?;
        }
        // Autoclear has detached the device once unmounted; clear any still attached.
        self.detach_all(&self.image(name)).map_err(fail)
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let mnt = self.mount_point(name);
        Ok(Self::is_mounted(&mnt).then_some(mnt))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        let image = self.image(name);
        match fs::symlink_metadata(&image) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(self.fail(
                    Some(name),
                    Call::Get,
                    LoopError::OpenImage {
                        path: image,
                        source,
                    },
                ))
            }
        }
        let devices: Vec<String> = self
            .devices_of(&image)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        Ok(Some(VolumeInfo {
            name: name.to_string(),
            mountpoint: self.path(name)?,
            status: serde_json::json!({
                "image": image,
                "devices": devices,
            }),
        }))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let dir = self.root.join("images");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(self.fail(
                    None,
                    Call::List,
                    LoopError::ListImages { path: dir, source },
                ))
            }
        };
        let mut names: Vec<VolumeName> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                VolumeName::new(file.strip_suffix(".img")?).ok()
            })
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| self.get(n).transpose())
            .collect()
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        Ok(Capabilities {
            scope: Scope::Local,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn image_with(bytes_at: &[(u64, &[u8])], len: u64) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(len).unwrap();
        for (at, bytes) in bytes_at {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
        f
    }

    #[test]
    fn superblock_magic_is_read_at_the_documented_offsets() {
        let ext = image_with(&[(1080, &0xEF53u16.to_le_bytes())], 4096);
        assert_eq!(detect_fs(ext.path()).unwrap(), Some(FsType::Ext4));
        let xfs = image_with(&[(0, b"XFSB")], 4096);
        assert_eq!(detect_fs(xfs.path()).unwrap(), Some(FsType::Xfs));
        let blank = image_with(&[], 4096);
        assert_eq!(detect_fs(blank.path()).unwrap(), None);
        // Big-endian ext magic, or one byte off, is not a file system.
        let wrong = image_with(&[(1080, &0xEF53u16.to_be_bytes())], 4096);
        assert_eq!(detect_fs(wrong.path()).unwrap(), None);
        let off = image_with(&[(1081, &0xEF53u16.to_le_bytes())], 4096);
        assert_eq!(detect_fs(off.path()).unwrap(), None);
    }

    #[test]
    fn an_image_too_short_for_a_superblock_has_no_file_system() {
        assert_eq!(detect_fs(image_with(&[], 0).path()).unwrap(), None);
        assert_eq!(detect_fs(image_with(&[], 1000).path()).unwrap(), None);
    }

    #[test]
    fn options_default_to_one_gib_of_ext4_without_overwrite() {
        let o = parse_opts(&VolumeOpts::empty()).unwrap();
        assert_eq!(
            (o.size_gib, o.fstype, o.overwrite),
            (1, FsType::Ext4, false)
        );
        let o =
            parse_opts(&VolumeOpts::parse("size=3,fstype=xfs,overwritefs=true").unwrap()).unwrap();
        assert_eq!((o.size_gib, o.fstype, o.overwrite), (3, FsType::Xfs, true));
    }
}
