//! Real binds, each in a private mount namespace of its own (a thread after
//! `unshare(CLONE_NEWNS)`; CLONE_NEWNS implies CLONE_FS, so only that thread sees it): read-only
//! binds refuse writes, read-write binds pass them through, guards unmount, and nothing reaches
//! the test process's own mount table. Temp dirs are made outside the namespaces, so they are
//! removed whatever happens inside.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{
    bind, is_mount_point, make_rprivate, make_rslave, read_mountinfo, resolve_target, Host,
    MountError, MountInfoEntry, Mounter, MsFlags, TargetPolicy, UnmountGuard,
};
use mesos_dvdi::spec::ContainerPath;
use nix::errno::Errno;

/// The mount table of the calling thread (its own namespace).
const THREAD: &str = "/proc/thread-self/mountinfo";
/// The test process's table: its main thread never leaves the original namespace.
const PROCESS: &str = "/proc/self/mountinfo";

type Propagation = fn(&dyn Mounter, &Path) -> Result<(), MountError>;

/// Runs `f` on a new thread in a new mount namespace, after `propagation` (if any) on `/`.
fn in_new_ns<T: Send>(propagation: Option<Propagation>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
            if let Some(change) = propagation {
                change(&Host, Path::new("/")).expect("changing the propagation of /");
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` in a private namespace of its own: nothing it mounts reaches the test process.
fn in_private_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_ns(Some(make_rprivate), f)
}

fn table(path: &str) -> Vec<MountInfoEntry> {
    read_mountinfo(Path::new(path)).expect(path)
}

/// The calling thread's mount at `path`.
fn mount_at(path: &Path) -> Option<MountInfoEntry> {
    table(THREAD).into_iter().find(|e| e.mount_point == path)
}

/// Mounts under `dir` in the test process's own table.
fn process_mounts_under(dir: &Path) -> Vec<PathBuf> {
    table(PROCESS)
        .into_iter()
        .filter(|e| e.mount_point.starts_with(dir))
        .map(|e| e.mount_point)
        .collect()
}

/// A temp dir with `src` (holding a file `existing`) and an empty `dst`.
fn src_and_dst() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("existing"), b"volume data").unwrap();
    (dir, src, dst)
}

fn mount_tmpfs(at: &Path) {
    Host.mount(
        Path::new("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        None,
    )
    .unwrap();
}

#[test]
fn read_only_bind_refuses_writes_with_erofs() {
    let (dir, src, dst) = src_and_dst();
    in_private_ns(|| {
        bind(&Host, &src, &dst, true).unwrap();
        let _unmount = UnmountGuard::new(&Host, &dst);
        assert_eq!(fs::read(dst.join("existing")).unwrap(), b"volume data");
        let err = fs::write(dst.join("new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let err = fs::remove_file(dst.join("existing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert!(mount_at(&dst).expect("dst is mounted").is_read_only());
        // Only the bind is read-only: the volume itself still takes writes.
        fs::write(src.join("direct"), b"y").unwrap();
        assert_eq!(fs::read(dst.join("direct")).unwrap(), b"y");
        assert!(!is_mount_point(&table(PROCESS), &dst));
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn read_write_bind_passes_writes_through() {
    let (dir, src, dst) = src_and_dst();
    in_private_ns(|| {
        bind(&Host, &src, &dst, false).unwrap();
        let _unmount = UnmountGuard::new(&Host, &dst);
        fs::write(dst.join("new"), b"written in the container").unwrap();
        assert_eq!(
            fs::read(src.join("new")).unwrap(),
            b"written in the container"
        );
        assert!(!mount_at(&dst).expect("dst is mounted").is_read_only());
        assert!(!is_mount_point(&table(PROCESS), &dst));
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
    assert!(dir.path().join("src/new").exists());
}

#[test]
fn bind_is_recursive() {
    let (dir, src, dst) = src_and_dst();
    let sub = src.join("sub");
    fs::create_dir(&sub).unwrap();
    in_private_ns(|| {
        mount_tmpfs(&sub);
        let _sub = UnmountGuard::new(&Host, &sub);
        bind(&Host, &src, &dst, false).unwrap();
        let _dst = UnmountGuard::new(&Host, &dst);
        let tmpfs = fs::metadata(&sub).unwrap().dev();
        assert_eq!(fs::metadata(dst.join("sub")).unwrap().dev(), tmpfs);
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn bind_onto_a_verified_target_in_a_rootfs() {
    let (dir, src, _) = src_and_dst();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    in_private_ns(|| {
        let path = ContainerPath::absolute("/var/lib/data").unwrap();
        let target = resolve_target(&rootfs, &path, &TargetPolicy::CreateMissing).unwrap();
        target.verify().unwrap();
        bind(&Host, &src, target.path(), true).unwrap();
        let _unmount = UnmountGuard::new(&Host, target.path());
        assert_eq!(
            fs::read(rootfs.join("var/lib/data/existing")).unwrap(),
            b"volume data"
        );
        assert!(mount_at(target.path()).unwrap().is_read_only());
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn guard_unmounts_on_drop_and_disarm_keeps_the_mount() {
    let (dir, src, dst) = src_and_dst();
    in_private_ns(|| {
        bind(&Host, &src, &dst, false).unwrap();
        drop(UnmountGuard::new(&Host, &dst));
        assert!(mount_at(&dst).is_none());
        assert!(!dst.join("existing").exists());

        bind(&Host, &src, &dst, false).unwrap();
        UnmountGuard::new(&Host, &dst).disarm();
        assert!(mount_at(&dst).is_some());
        drop(UnmountGuard::new(&Host, &dst));
        assert!(mount_at(&dst).is_none());
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn guard_unmounts_when_the_step_after_the_mount_panics() {
    let (dir, src, dst) = src_and_dst();
    in_private_ns(|| {
        let inner = std::panic::catch_unwind(|| {
            bind(&Host, &src, &dst, false).unwrap();
            let _unmount = UnmountGuard::new(&Host, &dst);
            panic!("a later step failed");
        });
        assert!(inner.is_err());
        assert!(mount_at(&dst).is_none(), "the guard left the bind");
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

/// Collects what the crate logs (a process-wide logger, installed once for this test binary).
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn guard_logs_a_failed_unmount() {
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Warn);
    let dir = tempfile::tempdir().unwrap();
    let not_mounted = dir.path().join("never-mounted");
    fs::create_dir(&not_mounted).unwrap();
    in_private_ns(|| drop(UnmountGuard::new(&Host, &not_mounted)));
    let logged = CAPTURE.0.lock().unwrap().clone();
    let want = not_mounted.to_str().unwrap();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains(want) && l.contains("unmounting")),
        "{logged:?}"
    );
}

#[test]
fn failed_bind_names_source_and_target() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("absent"), dir.path().join("dst"));
    fs::create_dir(&dst).unwrap();
    let e = in_private_ns(|| bind(&Host, &src, &dst, true).unwrap_err());
    assert!(
        matches!(
            e,
            MountError::Mount {
                errno: Errno::ENOENT,
                ..
            }
        ),
        "{e:?}"
    );
    let text = render_chain(&e);
    assert!(
        text.contains(src.to_str().unwrap()) && text.contains(dst.to_str().unwrap()),
        "{text}"
    );
}

#[test]
fn mountinfo_of_a_real_mount_decodes_escaped_and_non_utf8_names() {
    let (dir, src, _) = src_and_dst();
    let odd = dir
        .path()
        .join(OsStr::from_bytes(b"sp ace\ttab\\back\nline\xff"));
    fs::create_dir(&odd).unwrap();
    in_private_ns(|| {
        bind(&Host, &src, &odd, false).unwrap();
        let _unmount = UnmountGuard::new(&Host, &odd);
        let raw = fs::read(THREAD).unwrap();
        for escape in [&b"\\040"[..], b"\\011", b"\\134", b"\\012"] {
            assert!(
                raw.windows(4).any(|w| w == escape),
                "{escape:?} not in mountinfo"
            );
        }
        assert!(is_mount_point(&table(THREAD), &odd));
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
}

/// A shared tmpfs (as `/` is on systemd hosts) in a private namespace, with two directories in
/// it, for the propagation tests.
struct SharedMount {
    at: PathBuf,
}

impl SharedMount {
    fn new(at: &Path) -> Self {
        mount_tmpfs(at);
        Host.mount(Path::new("none"), at, None, MsFlags::MS_SHARED, None)
            .unwrap();
        fs::create_dir(at.join("from-child")).unwrap();
        fs::create_dir(at.join("from-parent")).unwrap();
        Self { at: at.to_owned() }
    }
}

/// What a namespace made with `propagation` exchanges with its parent through a shared mount:
/// (the parent saw the child's bind, the child saw the parent's mount).
fn exchange(propagation: Option<Propagation>) -> (bool, bool) {
    let (dir, src, _) = src_and_dst();
    let shared_dir = dir.path().join("shared");
    fs::create_dir(&shared_dir).unwrap();
    let seen = in_private_ns(|| {
        let shared = SharedMount::new(&shared_dir);
        let _unmount = UnmountGuard::new(&Host, &shared.at);
        let parent_table = format!("/proc/self/task/{}/mountinfo", nix::unistd::gettid());
        let (child_bound, parent_hears) = mpsc::channel();
        let (parent_mounted, child_hears) = mpsc::channel();
        std::thread::scope(|s| {
            let (shared, src, parent_table) = (&shared, &src, &parent_table);
            let child = s.spawn(move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                if let Some(change) = propagation {
                    change(&Host, Path::new("/")).unwrap();
                }
                let target = shared.at.join("from-child");
                bind(&Host, src, &target, false).unwrap();
                let _unmount = UnmountGuard::new(&Host, &target);
                let parent_saw = is_mount_point(&table(parent_table), &target);
                child_bound.send(()).unwrap();
                // A dropped sender (the parent failed) ends the wait too.
                let _ = child_hears.recv();
                let child_saw = mount_at(&shared.at.join("from-parent")).is_some();
                (parent_saw, child_saw)
            });
            // The child's side first; an error means it failed, and join reports how.
            if parent_hears.recv().is_ok() {
                let target = shared.at.join("from-parent");
                mount_tmpfs(&target);
                let _unmount = UnmountGuard::new(&Host, &target);
                parent_mounted.send(()).unwrap();
                child.join()
            } else {
                child.join()
            }
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    });
    assert_eq!(process_mounts_under(dir.path()), Vec::<PathBuf>::new());
    seen
}

#[test]
fn a_namespace_left_shared_exchanges_mounts_with_its_parent() {
    // The control: without a propagation change both directions leak, so the two tests below
    // would notice make_rprivate or make_rslave doing nothing.
    assert_eq!(exchange(None), (true, true));
}

#[test]
fn make_rprivate_isolates_both_ways() {
    assert_eq!(exchange(Some(make_rprivate)), (false, false));
}

#[test]
fn make_rslave_receives_the_hosts_mounts_but_sends_none_back() {
    assert_eq!(exchange(Some(make_rslave)), (false, true));
}
