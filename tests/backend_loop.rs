//! The built-in `loop` driver, for real: images, loop devices, ext4 and xfs, mounts made in a
//! private mount namespace. Each test asserts at its end, from mountinfo and sysfs, that nothing
//! under its temp directory is still mounted or attached; its `TestDir` cleans up if it fails.

mod support;

use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesos_dvdi::backend::loopdev::{LoopBackend, LoopPaths};
use mesos_dvdi::backend::{Backend, BackendErrorKind, MountId, MountRequest, Scope, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{FakeMounter, Host, Mounter};
use mesos_dvdi::spec::{VolumeName, VolumeOpts};
use nix::errno::Errno;
use support::host::{
    attach_by_hand, in_private_mount_ns, loop_devices_under, mount_at, parse_mountinfo,
    write_script, TestDir, PROCESS_MOUNTINFO, THREAD_MOUNTINFO,
};

fn name(n: &str) -> VolumeName {
    VolumeName::new(n).unwrap()
}

fn opts(s: &str) -> VolumeOpts {
    VolumeOpts::parse(s).unwrap()
}

fn mount(b: &LoopBackend, n: &VolumeName, o: &VolumeOpts, explicit: bool) -> PathBuf {
    b.mount(&MountRequest {
        name: n,
        opts: o,
        explicit_create: explicit,
        id: &MountId("m1".into()),
        read_only: false,
        csi: None,
    })
    .unwrap_or_else(|e| panic!("{}", render_chain(&e)))
}

fn mount_err(b: &LoopBackend, n: &VolumeName, o: &VolumeOpts, explicit: bool) -> String {
    let e = b
        .mount(&MountRequest {
            name: n,
            opts: o,
            explicit_create: explicit,
            id: &MountId("m1".into()),
            read_only: false,
            csi: None,
        })
        .unwrap_err();
    render_chain(&e)
}

fn unmount(b: &LoopBackend, n: &VolumeName) {
    b.unmount(n, &MountId("m1".into()))
        .unwrap_or_else(|e| panic!("{}", render_chain(&e)));
}

/// The root has a space in its name: mountinfo escapes it (`\040`), so finding the mount there
/// proves the escapes are decoded, and the backend handles such paths.
fn root(t: &TestDir) -> PathBuf {
    t.path().join("loop root")
}

fn backend(t: &TestDir) -> LoopBackend {
    LoopBackend::new(root(t), Arc::new(Host))
}

fn lifecycle_keeps_data(fstype: &str) {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let (n, o) = (name("db"), opts(&format!("size=1,fstype={fstype}")));
        let p = mount(&b, &n, &o, false);
        assert_eq!(p, root(&t).join("mnt/db"));
        let m = mount_at(THREAD_MOUNTINFO, &p).expect("mounted in this namespace");
        assert_eq!(m.fstype, fstype);
        assert!(m.source.starts_with("/dev/loop"), "{m:?}");
        // Made in the private namespace only: the host's table never shows it.
        assert_eq!(mount_at(PROCESS_MOUNTINFO, &p), None);
        let devices = loop_devices_under(&t.path());
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert_eq!(m.source, format!("/dev/{}", devices[0]));
        assert_eq!(b.path(&n).unwrap(), Some(p.clone()));

        fs::write(p.join("row"), b"42").unwrap();
        unmount(&b, &n);
        assert_eq!(mount_at(THREAD_MOUNTINFO, &p), None);
        assert_eq!(loop_devices_under(&t.path()), Vec::<String>::new());
        assert_eq!(b.path(&n).unwrap(), None);

        // Mounted again, as an existing volume: same data, so the file system was not remade.
        let p = mount(&b, &n, &o, true);
        assert_eq!(fs::read(p.join("row")).unwrap(), b"42");
        unmount(&b, &n);
        b.remove(&n).unwrap();
        assert_eq!(b.get(&n).unwrap(), None);
        assert!(!root(&t).join("images/db.img").exists());
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn ext4_volume_keeps_data_across_unmount_and_mount() {
    lifecycle_keeps_data("ext4");
}

#[test]
fn xfs_volume_keeps_data_across_unmount_and_mount() {
    lifecycle_keeps_data("xfs");
}

#[test]
fn second_mount_of_a_mounted_volume_returns_the_same_path_with_one_device() {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let (n, o) = (name("twice"), VolumeOpts::empty());
        let p = mount(&b, &n, &o, false);
        let devices = loop_devices_under(&t.path());
        assert_eq!(mount(&b, &n, &o, false), p);
        // A fresh backend (an agent restart) sees the mount too.
        assert_eq!(mount(&backend(&t), &n, &o, true), p);
        assert_eq!(loop_devices_under(&t.path()), devices);
        let stacked = parse_mountinfo(&fs::read_to_string(THREAD_MOUNTINFO).unwrap())
            .into_iter()
            .filter(|m| m.mount_point == p)
            .count();
        assert_eq!(stacked, 1, "mounted more than once at {}", p.display());
        unmount(&b, &n);
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn explicit_create_refuses_a_missing_volume_and_creates_nothing() {
    let t = TestDir::new();
    let b = backend(&t);
    let e = b
        .mount(&MountRequest {
            name: &name("nope"),
            opts: &VolumeOpts::empty(),
            explicit_create: true,
            id: &MountId("m1".into()),
            read_only: false,
            csi: None,
        })
        .unwrap_err();
    assert!(matches!(*e.kind, BackendErrorKind::NoSuchVolume), "{e:?}");
    assert!(
        render_chain(&e).contains("volume \"nope\" (driver \"loop\")"),
        "{}",
        render_chain(&e)
    );
    assert!(!root(&t).join("images/nope.img").exists());
    t.assert_released();
}

#[test]
fn bad_options_are_refused_by_name_before_anything_is_touched() {
    let t = TestDir::new();
    let b = backend(&t);
    for (o, needle) in [
        ("size=0", "option size=\"0\" is invalid"),
        ("size=lots", "option size=\"lots\" is invalid"),
        ("size=99999999", "whole number of GiB from 1 to 16384"),
        ("size=-1", "option size=\"-1\" is invalid"),
        (
            "fstype=btrfs",
            "option fstype=\"btrfs\" is invalid; use ext4 or xfs",
        ),
        (
            "overwritefs=yes",
            "option overwritefs=\"yes\" is invalid; use true or false",
        ),
        ("color=blue", "unknown option \"color\""),
    ] {
        let text = mount_err(&b, &name("v"), &opts(o), false);
        assert!(text.contains(needle), "{o}: {text}");
        assert!(
            text.starts_with("volume \"v\" (driver \"loop\"): mount failed"),
            "{text}"
        );
        let e = b.create(&name("v"), &opts(o)).unwrap_err();
        assert!(
            render_chain(&e).contains(needle),
            "{o}: {}",
            render_chain(&e)
        );
    }
    assert!(!root(&t).join("images").exists());
    t.assert_released();
}

#[test]
fn xfs_is_refused_naming_the_option_when_mkfs_xfs_is_missing() {
    let t = TestDir::new();
    let tools = t.path().join("no tools here");
    fs::create_dir(&tools).unwrap();
    let b = LoopBackend::with_paths(
        root(&t),
        Arc::new(Host),
        LoopPaths {
            tool_dirs: vec![tools.clone()],
            ..LoopPaths::default()
        },
    );
    let text = mount_err(&b, &name("v"), &opts("fstype=xfs"), false);
    assert!(
        text.contains("option fstype=xfs needs mkfs.xfs")
            && text.contains(&tools.display().to_string())
            && text.contains("xfsprogs"),
        "{text}"
    );
    assert!(!root(&t).join("images").exists());
    t.assert_released();
}

#[test]
fn an_existing_file_system_is_kept_unless_overwritefs() {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let n = name("keep");
        let p = mount(&b, &n, &VolumeOpts::empty(), false);
        fs::write(p.join("old"), b"x").unwrap();
        unmount(&b, &n);

        // Another fstype asked for, no overwrite: the ext4 and its data stay.
        let p = mount(&b, &n, &opts("fstype=xfs"), false);
        assert_eq!(mount_at(THREAD_MOUNTINFO, &p).unwrap().fstype, "ext4");
        assert!(p.join("old").exists());
        unmount(&b, &n);

        let p = mount(&b, &n, &opts("fstype=xfs,overwritefs=true"), false);
        assert_eq!(mount_at(THREAD_MOUNTINFO, &p).unwrap().fstype, "xfs");
        assert!(
            !p.join("old").exists(),
            "overwritefs=true kept the old file system"
        );
        unmount(&b, &n);
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn remove_refuses_a_mounted_volume() {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let n = name("busy");
        let p = mount(&b, &n, &VolumeOpts::empty(), false);
        let text = render_chain(&b.remove(&n).unwrap_err());
        assert!(
            text.contains(&format!("{} is mounted; unmount the volume", p.display())),
            "{text}"
        );
        assert!(root(&t).join("images/busy.img").exists());
        unmount(&b, &n);
        b.remove(&n).unwrap();
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn a_failed_mount_after_attach_detaches_the_device_and_keeps_the_error() {
    let t = TestDir::new();
    let fake = Arc::new(FakeMounter::new());
    fake.fail_call(0, Errno::EPERM);
    let b = LoopBackend::new(root(&t), Arc::clone(&fake) as Arc<dyn Mounter>);
    let text = mount_err(&b, &name("v"), &VolumeOpts::empty(), false);
    let mnt = root(&t).join("mnt/v");
    assert!(
        text.contains(&format!("on {} (type ext4) failed", mnt.display())),
        "{text}"
    );
    assert!(text.contains("EPERM"), "{text}");
    assert_eq!(fake.calls().len(), 1);
    t.assert_released();
}

/// A loop backend whose only mkfs.ext4 is a test double running `script`; and that double's path.
fn with_stand_in_mkfs(t: &TestDir, script: &str) -> (LoopBackend, PathBuf) {
    let tools = t.path().join("tools");
    fs::create_dir(&tools).unwrap();
    let mkfs = tools.join("mkfs.ext4");
    write_script(&mkfs, script);
    let paths = LoopPaths {
        tool_dirs: vec![tools],
        ..LoopPaths::default()
    };
    (
        LoopBackend::with_paths(root(t), Arc::new(Host), paths),
        mkfs,
    )
}

#[test]
fn a_failing_mkfs_is_reported_with_its_status_and_stderr_and_the_device_detached() {
    let t = TestDir::new();
    let (b, mkfs) = with_stand_in_mkfs(
        &t,
        "echo 'mkfs.ext4: noise' >&2\necho \"mkfs.ext4: cannot format $3\" >&2\nexit 7",
    );
    let text = mount_err(&b, &name("v"), &VolumeOpts::empty(), false);
    assert!(text.contains("exit status: 7"), "{text}");
    assert!(
        text.contains("mkfs.ext4: cannot format /dev/loop"),
        "{text}"
    );
    assert!(text.contains(&mkfs.display().to_string()), "{text}");
    t.assert_released();
}

#[test]
fn a_hanging_mkfs_is_killed_with_what_it_started_at_the_mount_timeout() {
    let t = TestDir::new();
    // A stand-in mkfs that never finishes, with a child of its own.
    let pids = t.path().join("pids");
    let (b, mkfs) = with_stand_in_mkfs(
        &t,
        &format!("sleep 1000 &\necho $$ $! > {}\nwait", pids.display()),
    );
    let b = b.with_timeouts(Timeouts {
        mount: Duration::from_secs(1),
        unmount: Duration::from_secs(600),
    });
    let text = mount_err(&b, &name("v"), &VolumeOpts::empty(), false);
    assert!(
        text.contains(&mkfs.display().to_string())
            && text.contains("did not finish within 1s")
            && text.contains("mount_timeout_secs"),
        "{text}"
    );
    // mkfs itself is reaped, and what it started was killed with it: wait for each to end (a
    // pidfd becomes readable when its process exits; one that lived on would hold this test).
    // No file: it was killed before it started anything.
    let pids = fs::read_to_string(&pids).unwrap_or_default();
    for pid in pids.split_whitespace() {
        let pid: libc::pid_t = pid.parse().unwrap();
        // SAFETY: pidfd_open(2) takes a pid and flags, no pointers; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            assert_eq!(Errno::last(), Errno::ESRCH, "pidfd_open({pid})");
            continue; // gone and reaped already
        }
        // SAFETY: `fd` is a descriptor pidfd_open just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE),
            Ok(1)
        );
    }
    t.assert_released();
}

#[test]
fn unmount_and_remove_detach_devices_found_by_backing_file_in_sysfs() {
    let t = TestDir::new();
    let b = backend(&t);
    let n = name("left");
    b.create(&n, &VolumeOpts::empty()).unwrap();
    let image = root(&t).join("images/left.img");
    // A device this process's backend never attached (as after a restart, or by hand).
    let dev = attach_by_hand(&image);
    assert_eq!(loop_devices_under(&t.path()).len(), 1);
    assert_eq!(b.devices(&n), [dev]);
    unmount(&b, &n);
    assert_eq!(loop_devices_under(&t.path()), Vec::<String>::new());

    attach_by_hand(&image);
    b.remove(&n).unwrap();
    assert!(!image.exists());
    t.assert_released();
}

#[test]
fn get_list_path_and_capabilities_describe_the_volumes() {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        assert_eq!(b.list().unwrap(), []);
        b.create(&name("a"), &VolumeOpts::empty()).unwrap();
        let p = mount(&b, &name("b"), &VolumeOpts::empty(), false);
        let listed: Vec<(String, Option<PathBuf>)> = b
            .list()
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.mountpoint))
            .collect();
        assert_eq!(
            listed,
            [("a".to_owned(), None), ("b".to_owned(), Some(p.clone()))]
        );
        let info = b.get(&name("b")).unwrap().unwrap();
        assert_eq!(info.status["devices"].as_array().unwrap().len(), 1);
        assert_eq!(b.get(&name("zzz")).unwrap(), None);
        assert_eq!(b.capabilities().unwrap().scope, Scope::Local);
        unmount(&b, &name("b"));
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn images_are_sparse_and_sized_in_gib() {
    let t = TestDir::new();
    let b = backend(&t);
    b.create(&name("big"), &opts("size=3")).unwrap();
    let m = fs::metadata(root(&t).join("images/big.img")).unwrap();
    assert_eq!(m.len(), 3 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(
        m.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        m.blocks()
    );
}

#[test]
fn mountinfo_octal_escapes_are_decoded() {
    let line = "36 35 98:0 /a\\040b /mnt/x\\040y\\011z\\134w rw,noatime master:1 - ext4 /dev/loop\\0401 rw\n";
    let m = &parse_mountinfo(line)[0];
    assert_eq!(m.root, Path::new("/a b"));
    assert_eq!(m.mount_point, Path::new("/mnt/x y\tz\\w"));
    assert_eq!(
        (m.fstype.as_str(), m.source.as_str()),
        ("ext4", "/dev/loop 1")
    );
}

/// A digest of `image`'s data regions and their offsets (holes skipped with SEEK_DATA /
/// SEEK_HOLE): it changes with any write to the image.
fn image_digest(image: &Path) -> u64 {
    use nix::unistd::{lseek, Whence};
    use std::hash::Hasher;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(image).unwrap();
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    loop {
        let start = match lseek(&f, pos, Whence::SeekData) {
            Ok(start) => start,
            Err(Errno::ENXIO) => return h.finish(),
            Err(e) => panic!("SEEK_DATA in {}: {e}", image.display()),
        };
        let end = lseek(&f, start, Whence::SeekHole).unwrap();
        h.write_i64(start);
        f.seek(SeekFrom::Start(u64::try_from(start).unwrap()))
            .unwrap();
        let mut left = usize::try_from(end - start).unwrap();
        while left > 0 {
            let chunk = &mut buf[..left.min(1 << 20)];
            f.read_exact(chunk).unwrap();
            h.write(chunk);
            left -= chunk.len();
        }
        pos = end;
    }
}

/// A file system left as a crashed writer leaves it: its journal (or log) still to replay.
/// `committed` is written and unmounted cleanly; then a file is written and synced to the
/// journal only, and the file system shut down without a checkpoint (the `shutdown` ioctl,
/// which ext4 and xfs share).
fn leave_dirty(b: &LoopBackend, n: &VolumeName, o: &VolumeOpts) {
    let p = mount(b, n, o, false);
    fs::write(p.join("committed"), b"1").unwrap();
    unmount(b, n);
    let p = mount(b, n, o, false);
    fs::write(p.join("in-journal-only"), b"2").unwrap();
    nix::unistd::sync();
    let out = std::process::Command::new("xfs_io")
        .args(["-x", "-c", "shutdown"])
        .arg(&p)
        .output()
        .expect("xfs_io (xfsprogs) runs");
    assert!(out.status.success(), "{out:?}");
    // A shut-down file system answers stat with EIO, so the backend cannot see the mount: taken
    // down here, then the backend lets the device go.
    nix::mount::umount(&p).unwrap();
    unmount(b, n);
}

fn readers_only_mount_writes_nothing(fstype: &str, no_replay: &str) {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let (n, o) = (name("shared"), opts(&format!("fstype={fstype}")));
        leave_dirty(&b, &n, &o);
        let image = root(&t).join("images/shared.img");
        let before = image_digest(&image);

        let ro = MountRequest {
            name: &n,
            opts: &o,
            explicit_create: true,
            id: &MountId("r".into()),
            read_only: true,
            csi: None,
        };
        let p = b
            .mount(&ro)
            .unwrap_or_else(|e| panic!("{}", render_chain(&e)));
        let m = mesos_dvdi::mount::read_mountinfo(Path::new(THREAD_MOUNTINFO))
            .unwrap()
            .into_iter()
            .rfind(|m| m.mount_point == p)
            .expect("mounted");
        assert!(m.is_read_only(), "{m:?}");
        let sb: Vec<&str> = m.super_options.split(',').collect();
        assert!(sb.contains(&"ro") && sb.contains(&no_replay), "{m:?}");
        assert_eq!(fs::read(p.join("committed")).unwrap(), b"1");

        // A writer cannot have it while it is mounted so, and is told why.
        let e = b
            .mount(&MountRequest {
                read_only: false,
                ..ro
            })
            .unwrap_err();
        let text = render_chain(&e);
        assert!(
            text.contains("mounted read-only for readers only"),
            "{text}"
        );
        assert!(mesos_dvdi::mount::is_read_only(&p));
        unmount(&b, &n);
        // The journal was not replayed: not a byte of the image changed.
        assert_eq!(image_digest(&image), before, "{fstype} wrote to the image");
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn ext4_read_only_mount_replays_no_journal_and_writes_nothing() {
    readers_only_mount_writes_nothing("ext4", "norecovery");
}

#[test]
fn xfs_read_only_mount_replays_no_log_and_writes_nothing() {
    readers_only_mount_writes_nothing("xfs", "norecovery");
}

/// A process killed and reaped when dropped, so a failing test leaves none behind.
struct Orphan(std::process::Child);

impl Drop for Orphan {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process in a copy of the calling thread's mount namespace (as a command's orphan
/// keeps one) and returns once the copy exists: it holds every mount of this namespace, the
/// volume's too, whatever this namespace unmounts later.
fn orphan_holding_this_namespace() -> Orphan {
    use std::io::BufRead;
    let mut orphan = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("echo ready; exec sleep 1000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run unshare");
    let mut line = String::new();
    std::io::BufReader::new(orphan.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the orphan did not start");
    Orphan(orphan)
}

#[test]
fn an_image_still_mounted_in_another_namespace_is_refused_naming_device_and_process() {
    let t = TestDir::new();
    in_private_mount_ns(|| {
        let b = backend(&t);
        let n = name("kept");
        let p = mount(&b, &n, &VolumeOpts::empty(), false);
        let devices = loop_devices_under(&t.path());
        let orphan = orphan_holding_this_namespace();
        // The host mount goes (a cleanup, or an operator's umount); the orphan's copy stays.
        Host.umount(&p, mesos_dvdi::mount::MntFlags::empty())
            .unwrap();
        let text = mount_err(&b, &n, &VolumeOpts::empty(), false);
        let device = format!("/dev/{}", devices[0]);
        for needle in [
            "volume \"kept\" (driver \"loop\"): mount failed".to_owned(),
            format!("is already attached to {device}"),
            // Named by pid and command name (sh until it has exec'd sleep).
            format!(
                "mounted at {} in the mount namespace of process {} (",
                p.display(),
                orphan.0.id()
            ),
            "would corrupt it".to_owned(),
        ] {
            assert!(text.contains(&needle), "{needle:?} not in {text}");
        }
        // No second device, nothing mounted here.
        assert_eq!(loop_devices_under(&t.path()), devices);
        assert_eq!(mount_at(THREAD_MOUNTINFO, &p), None);
        // Nor is the image deleted from under the orphan.
        let text = render_chain(&b.remove(&n).unwrap_err());
        assert!(
            text.contains("is in use through") && text.contains(&device),
            "{text}"
        );
        assert!(root(&t).join("images/kept.img").exists());

        drop(orphan);
        // The orphan's namespace, and with it the last mount, goes: the device detaches (unmount
        // waits for it), and the volume mounts again on one device.
        unmount(&b, &n);
        assert_eq!(loop_devices_under(&t.path()), Vec::<String>::new());
        let p = mount(&b, &n, &VolumeOpts::empty(), true);
        assert_eq!(loop_devices_under(&t.path()).len(), 1);
        unmount(&b, &n);
        assert!(mount_at(THREAD_MOUNTINFO, &p).is_none());
        t.assert_released();
    });
    t.assert_released();
}

#[test]
fn an_image_attached_with_no_user_is_refused_with_the_losetup_to_run() {
    let t = TestDir::new();
    // A sysfs that shows the image attached to loop9, and a /proc with no process: no device
    // or mount is needed to see what mount does.
    let sys = t.path().join("sys");
    let image = root(&t).join("images/stale.img");
    fs::create_dir_all(sys.join("loop9/loop")).unwrap();
    fs::write(
        sys.join("loop9/loop/backing_file"),
        format!("{}\n", image.display()),
    )
    .unwrap();
    fs::write(sys.join("loop9/dev"), "7:9\n").unwrap();
    let proc = t.path().join("proc");
    fs::create_dir(&proc).unwrap();
    let b = LoopBackend::with_paths(
        root(&t),
        Arc::new(FakeMounter::new()),
        LoopPaths {
            sysfs_block: sys,
            proc,
            ..LoopPaths::default()
        },
    );
    let text = mount_err(&b, &name("stale"), &VolumeOpts::empty(), false);
    assert!(
        text.contains(&format!(
            "image {} is already attached to /dev/loop9 (nothing on this host uses it)",
            image.display()
        )) && text.contains("losetup -d /dev/loop9"),
        "{text}"
    );
    assert!(!root(&t).join("images").exists(), "created before refusing");
}
