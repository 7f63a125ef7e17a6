//! The built-in `loop` driver: a file system image per volume, attached to a loop device.
//!
//! Layout under `loop_root`: `images/NAME.img` (sparse, `size` GiB) and `mnt/NAME` (the mount
//! point). Devices are attached through the loop-control ioctls with `LO_FLAGS_AUTOCLEAR`, so the
//! kernel detaches a device by itself once it is neither mounted nor open: a crash between attach
//! and mount, or after unmount, never leaks a device. Every host path is a parameter.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::errno::Errno;

use super::{Backend, BackendError, Call, Capabilities, MountId, MountRequest, Scope, VolumeInfo};
use crate::mount::{MntFlags, MountError, Mounter, MsFlags};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// Options the `loop` driver understands.
pub const OPTIONS: &[&str] = &["size", "fstype", "overwritefs"];

/// Largest image accepted, in GiB (a typo such as `size=10000000` must not fill a disk).
pub const MAX_SIZE_GIB: u64 = 16 * 1024;

/// From `<linux/loop.h>`.
mod sys {
    pub const LOOP_SET_FD: u64 = 0x4C00;
    pub const LOOP_CLR_FD: u64 = 0x4C01;
    pub const LOOP_SET_STATUS64: u64 = 0x4C04;
    pub const LOOP_CONFIGURE: u64 = 0x4C0A;
    pub const LOOP_CTL_GET_FREE: u64 = 0x4C82;
    pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
    pub const LO_NAME_SIZE: usize = 64;
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

    nix::ioctl_none_bad!(ctl_get_free, LOOP_CTL_GET_FREE);
    nix::ioctl_write_ptr_bad!(configure, LOOP_CONFIGURE, LoopConfig);
    nix::ioctl_write_int_bad!(set_fd, LOOP_SET_FD);
    nix::ioctl_write_ptr_bad!(set_status64, LOOP_SET_STATUS64, LoopInfo64);
    nix::ioctl_none_bad!(clr_fd, LOOP_CLR_FD);
}

/// A failed `loop` operation; each names the path or device.
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
    /// A file or directory operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
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
    /// mkfs could not be started.
    #[error("running {program} failed (is it installed? xfs needs xfsprogs, ext4 e2fsprogs)")]
    MkfsSpawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// mkfs failed.
    #[error("{program} {device} exited with {status}: {stderr}")]
    MkfsFailed {
        /// The program.
        program: String,
        /// The device.
        device: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its stderr.
        stderr: String,
    },
    /// Mounting or unmounting failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The loop device stayed attached after the unmount.
    #[error("{device} still backs onto {image} after the unmount; detach it by hand (losetup -d)")]
    StillAttached {
        /// The device.
        device: PathBuf,
        /// The image.
        image: PathBuf,
    },
    /// Removing a mounted volume.
    #[error("{path} is mounted; unmount the volume before removing it")]
    Mounted {
        /// The mount point.
        path: PathBuf,
    },
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
}

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

/// Reads the file system type from a superblock: ext2/3/4 (magic 0xEF53 at byte 1080) or XFS
/// ("XFSB" at byte 0).
fn detect_fs(image: &Path) -> io::Result<Option<FsType>> {
    let mut f = File::open(image)?;
    let mut head = [0u8; 4];
    f.read_exact(&mut head)?;
    if &head == b"XFSB" {
        return Ok(Some(FsType::Xfs));
    }
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080))?;
    f.read_exact(&mut magic)?;
    Ok((u16::from_le_bytes(magic) == 0xEF53).then_some(FsType::Ext4))
}

/// Host paths the driver uses (parameters so tests can point them elsewhere).
#[derive(Debug, Clone)]
pub struct LoopPaths {
    /// `/dev/loop-control`.
    pub control: PathBuf,
    /// Where `loopN` device nodes are (`/dev`).
    pub dev: PathBuf,
    /// `/sys/block`.
    pub sysfs_block: PathBuf,
}

impl Default for LoopPaths {
    fn default() -> Self {
        Self {
            control: PathBuf::from("/dev/loop-control"),
            dev: PathBuf::from("/dev"),
            sysfs_block: PathBuf::from("/sys/block"),
        }
    }
}

/// The `loop` driver.
pub struct LoopBackend {
    driver: DriverName,
    root: PathBuf,
    mounter: Arc<dyn Mounter>,
    paths: LoopPaths,
}

impl std::fmt::Debug for LoopBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopBackend")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// How long unmount waits for the kernel to detach a volume's loop device.
const DETACH_GRACE: std::time::Duration = std::time::Duration::from_secs(4);

/// How often to retry when another process takes the free device first.
const ATTACH_ATTEMPTS: u32 = 16;

impl LoopBackend {
    /// Images and mount points under `root`; mounts through `mounter`.
    pub fn new(root: PathBuf, mounter: Arc<dyn Mounter>) -> Self {
        Self::with_paths(root, mounter, LoopPaths::default())
    }

    /// As [`LoopBackend::new`], with the host's loop paths given.
    pub fn with_paths(root: PathBuf, mounter: Arc<dyn Mounter>, paths: LoopPaths) -> Self {
        Self {
            driver: DriverName::new(super::registry::LOOP_DRIVER).expect("valid driver name"),
            root,
            mounter,
            paths,
        }
    }

    /// The image file of a volume.
    pub fn image(&self, name: &VolumeName) -> PathBuf {
        self.root.join("images").join(format!("{name}.img"))
    }

    /// The mount point of a volume.
    pub fn mount_point(&self, name: &VolumeName) -> PathBuf {
        self.root.join("mnt").join(name.as_str())
    }

    fn fail(&self, name: Option<&VolumeName>, call: Call, e: LoopError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// Whether `path` is a mount point: its device differs from its parent's (a loop mount is
    /// always another file system). Correct in any mount namespace, unlike a mountinfo path.
    fn is_mounted(path: &Path) -> bool {
        match (fs::metadata(path), path.parent().map(fs::metadata)) {
            (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
            _ => false,
        }
    }

    /// Loop devices whose backing file is `image`, from sysfs.
    fn devices_of(&self, image: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.paths.sysfs_block) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
            .filter(|e| {
                fs::read_to_string(e.path().join("loop/backing_file"))
                    .is_ok_and(|b| Path::new(b.trim_end_matches('\n')) == image)
            })
            .map(|e| self.paths.dev.join(e.file_name()))
            .collect()
    }

    fn create_image(&self, image: &Path, size_gib: u64) -> Result<(), LoopError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| LoopError::Io { op, path, source }
        };
        let dir = image.parent().expect("images/ has a parent");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
        let f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(image)
        {
            Ok(f) => f,
            // Made meanwhile by another caller: use it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io("creating", image)(e)),
        };
        let made = f.set_len(size_gib * 1024 * 1024 * 1024);
        if let Err(e) = made {
            let _ = fs::remove_file(image);
            return Err(io("sizing", image)(e));
        }
        Ok(())
    }

    /// Attaches `image` to a free loop device with autoclear; returns the device and its open
    /// handle (the device stays attached while the handle is open or the device is mounted).
    fn attach(&self, image: &Path) -> Result<(PathBuf, File), LoopError> {
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(|source| LoopError::Io {
                op: "opening",
                path: image.to_owned(),
                source,
            })?;
        let control = File::open(&self.paths.control).map_err(|source| LoopError::Io {
            op: "opening",
            path: self.paths.control.clone(),
            source,
        })?;
        let mut name = [0u8; sys::LO_NAME_SIZE];
        let bytes = image.as_os_str().as_encoded_bytes();
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
        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is an open loop-control.
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
                Ok(d) => d,
                Err(source) => {
                    return Err(LoopError::Io {
                        op: "opening",
                        path: device,
                        source,
                    })
                }
            };
            let config = sys::LoopConfig {
                fd: u32::try_from(backing.as_raw_fd()).expect("fds are non-negative"),
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: `config` is a valid, fully initialised loop_config that outlives the call;
            // the fd is an open loop device.
            match unsafe { sys::configure(dev.as_raw_fd(), &config) } {
                Ok(_) => return Ok((device, dev)),
                // Another process took this device between GET_FREE and now: ask again.
                Err(Errno::EBUSY) => continue,
                // Kernels before 5.8: the two-step way.
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
            match unsafe { sys::set_fd(dev.as_raw_fd(), backing.as_raw_fd()) } {
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
            // SAFETY: `info` is a valid loop_info64 that outlives the call; the fd is open.
            if let Err(errno) = unsafe { sys::set_status64(dev.as_raw_fd(), &info) } {
                Self::detach(&dev);
                return Err(LoopError::Ioctl {
                    op: "LOOP_SET_STATUS64",
                    device,
                    errno,
                });
            }
            return Ok((device, dev));
        }
        Err(LoopError::NoFreeDevice {
            attempts: ATTACH_ATTEMPTS,
        })
    }

    /// Waits until no loop device backs onto `image`: autoclear detaches the device after the
    /// last unmount, but the kernel does it asynchronously. A device that lingers past half the
    /// grace period (attached by hand, or a kernel without autoclear) is cleared explicitly.
    fn wait_detached(&self, image: &Path) -> Result<(), LoopError> {
        let start = std::time::Instant::now();
        let mut cleared = false;
        loop {
            let devices = self.devices_of(image);
            let Some(first) = devices.first() else {
                return Ok(());
            };
            let waited = start.elapsed();
            if waited >= DETACH_GRACE {
                return Err(LoopError::StillAttached {
                    device: first.clone(),
                    image: image.to_owned(),
                });
            }
            if !cleared && waited >= DETACH_GRACE / 2 {
                for device in &devices {
                    if let Ok(dev) = File::open(device) {
                        Self::detach(&dev);
                    }
                }
                cleared = true;
            }
            // The kernel's own work, not ours to hurry: look again shortly.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn detach(dev: &File) {
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is an open loop device.
        let _ = unsafe { sys::clr_fd(dev.as_raw_fd()) };
    }

    fn mkfs(device: &Path, fstype: FsType) -> Result<(), LoopError> {
        let (program, force) = match fstype {
            FsType::Ext4 => ("mkfs.ext4", "-F"),
            FsType::Xfs => ("mkfs.xfs", "-f"),
        };
        let out = Command::new(program)
            .args(["-q", force])
            .arg(device)
            .output()
            .map_err(|source| LoopError::MkfsSpawn {
                program: program.to_owned(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        Err(LoopError::MkfsFailed {
            program: program.to_owned(),
            device: device.to_owned(),
            status: out.status,
            stderr: tail,
        })
    }

    fn mount_volume(&self, req: &MountRequest<'_>, opts: &LoopOpts) -> Result<PathBuf, LoopError> {
        let mnt = self.mount_point(req.name);
        let image = self.image(req.name);
        let (device, handle) = self.attach(&image)?;
        // From here, dropping `handle` without a mount detaches the device (autoclear).
        let existing = detect_fs(&image).map_err(|source| LoopError::Io {
            op: "reading the superblock of",
            path: image.clone(),
            source,
        })?;
        let fstype = match existing {
            Some(found) if !opts.overwrite => found,
            _ => {
                Self::mkfs(&device, opts.fstype).inspect_err(|_| Self::detach(&handle))?;
                opts.fstype
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&mnt)
            .map_err(|source| LoopError::Io {
                op: "creating",
                path: mnt.clone(),
                source,
            })?;
        self.mounter
            .mount(
                &device,
                &mnt,
                Some(fstype.name()),
                MsFlags::MS_NOATIME,
                None,
            )
            .inspect_err(|_| Self::detach(&handle))?;
        Ok(mnt)
    }
}

impl Backend for LoopBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        let o = parse_opts(opts).map_err(|e| self.fail(Some(name), Call::Create, e))?;
        self.create_image(&self.image(name), o.size_gib)
            .map_err(|e| self.fail(Some(name), Call::Create, e))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let mnt = self.mount_point(name);
        if Self::is_mounted(&mnt) {
            return Err(self.fail(Some(name), Call::Remove, LoopError::Mounted { path: mnt }));
        }
        let image = self.image(name);
        match fs::remove_file(&image) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(self.fail(
                    Some(name),
                    Call::Remove,
                    LoopError::Io {
                        op: "removing",
                        path: image,
                        source,
                    },
                ))
            }
        }
        let _ = fs::remove_dir(&mnt);
        Ok(())
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let fail = |e| self.fail(Some(req.name), Call::Mount, e);
        let opts = parse_opts(req.opts).map_err(fail)?;
        let mnt = self.mount_point(req.name);
        if Self::is_mounted(&mnt) {
            return Ok(mnt);
        }
        let image = self.image(req.name);
        if !image.exists() {
            if req.explicit_create {
                return Err(BackendError::no_such_volume(&self.driver, req.name));
            }
            self.create_image(&image, opts.size_gib).map_err(fail)?;
        }
        self.mount_volume(req, &opts).map_err(fail)
    }

    fn unmount(&self, name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        let fail = |e| self.fail(Some(name), Call::Unmount, e);
        let mnt = self.mount_point(name);
        if Self::is_mounted(&mnt) {
            self.mounter
                .umount(&mnt, MntFlags::empty())
                .map_err(|e| fail(e.into()))?;
        }
        self.wait_detached(&self.image(name)).map_err(fail)
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let mnt = self.mount_point(name);
        Ok(Self::is_mounted(&mnt).then_some(mnt))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        if !self.image(name).exists() {
            return Ok(None);
        }
        Ok(Some(VolumeInfo {
            name: name.to_string(),
            mountpoint: self.path(name)?,
            status: serde_json::Value::Null,
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
                    LoopError::Io {
                        op: "listing",
                        path: dir,
                        source,
                    },
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
