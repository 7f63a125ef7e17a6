//! Resolving where a volume is bound: never through a symlink, directories created only where
//! allowed, errors that name the container path and the component at fault. Each contract holds
//! for the openat2 resolver and for the `O_NOFOLLOW` walk used where openat2 is missing.

mod support;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{
    resolve_target, resolve_target_in, resolve_target_with, Host, ResolvedTarget, Resolver,
    TargetError, TargetPolicy, UnmountGuard,
};
use mesos_dvdi::spec::ContainerPath;

/// The two ways to resolve, each forced (Auto is openat2 on this kernel, tested separately).
const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

fn abs(p: &str) -> ContainerPath {
    ContainerPath::absolute(p).unwrap()
}

fn host(p: &Path) -> ContainerPath {
    ContainerPath::absolute(p.to_str().unwrap()).unwrap()
}

fn resolve(root: &Path, p: &ContainerPath, r: Resolver) -> Result<ResolvedTarget, TargetError> {
    resolve_target_with(root, p, &TargetPolicy::CreateMissing, r)
}

/// The error's whole rendering mentions every one of `parts`.
fn assert_mentions(e: &TargetError, parts: &[&dyn AsRef<Path>]) {
    let text = render_chain(e);
    for p in parts {
        let p = p.as_ref().to_str().unwrap();
        assert!(text.contains(p), "{text:?} does not mention {p:?}");
    }
}

#[test]
fn creates_missing_dirs_inside_rootfs() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("var")).unwrap();
        let t = resolve(root.path(), &abs("/var/lib/db"), r).unwrap();
        assert_eq!(t.path(), root.path().join("var/lib/db"), "{r:?}");
        for created in ["var/lib", "var/lib/db"] {
            let meta = fs::symlink_metadata(root.path().join(created)).unwrap();
            assert!(meta.is_dir(), "{r:?} {created}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{r:?} {created}");
        }
        // The handle is of the directory named.
        let meta = fs::metadata(t.path()).unwrap();
        let held = nix::sys::stat::fstat(t.fd()).unwrap();
        assert_eq!((meta.dev(), meta.ino()), (held.st_dev, held.st_ino));
        // Resolving again finds what is there, creating nothing.
        let again = resolve_target_with(
            root.path(),
            &abs("/var/lib/db"),
            &TargetPolicy::MustExist,
            r,
        )
        .unwrap();
        assert_eq!(again.path(), t.path());
    }
}

#[test]
fn creates_missing_dirs_in_sandbox_for_relative_path() {
    for r in RESOLVERS {
        let sandbox = tempfile::tempdir().unwrap();
        let p = ContainerPath::any("data/pg").unwrap();
        let t = resolve(sandbox.path(), &p, r).unwrap();
        assert_eq!(t.path(), sandbox.path().join("data/pg"));
        assert!(t.path().is_dir());
    }
}

/// Restores the umask even when the test fails.
struct Umask(nix::sys::stat::Mode);

impl Drop for Umask {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}

#[test]
fn created_dirs_are_0755_whatever_the_umask() {
    // The umask is process-wide; the other tests in this binary do not depend on it (tempfile sets
    // its own modes, and resolution sets 0755 explicitly).
    let _restore = Umask(nix::sys::stat::umask(
        nix::sys::stat::Mode::from_bits_truncate(0o077),
    ));
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let t = resolve(root.path(), &abs("/a/b"), r).unwrap();
        for dir in [root.path().join("a"), t.path().to_owned()] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{r:?} {}", dir.display());
        }
    }
}

#[test]
fn refuses_symlink_to_etc_in_rootfs() {
    // Container paths that create nothing even if the link were followed, so a broken resolver
    // fails this test without touching the host's /etc.
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc", root.path().join("data")).unwrap();
        for p in ["/data", "/data/passwd"] {
            let e = resolve(root.path(), &abs(p), r).unwrap_err();
            match &e {
                TargetError::Symlink {
                    path, component, ..
                } => {
                    assert_eq!(path, Path::new(p));
                    assert_eq!(component, &root.path().join("data"));
                }
                other => panic!("{r:?} {p}: {other:?}"),
            }
            assert_mentions(&e, &[&p, &root.path().join("data")]);
            assert!(render_chain(&e).contains("is a symbolic link"));
        }
    }
}

#[test]
fn refuses_container_path_through_symlinked_parent() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("var")).unwrap();
        symlink(outside.path(), root.path().join("var/lib")).unwrap();
        let e = resolve(root.path(), &abs("/var/lib/db"), r).unwrap_err();
        match &e {
            TargetError::Symlink { component, .. } => {
                assert_eq!(component, &root.path().join("var/lib"), "{r:?}")
            }
            other => panic!("{r:?}: {other:?}"),
        }
        assert_mentions(&e, &[&"/var/lib/db", &root.path().join("var/lib")]);
        assert!(
            !outside.path().join("db").exists(),
            "{r:?}: created outside the root"
        );
    }
}

#[test]
fn refuses_relative_symlink_that_stays_inside_root_too() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        symlink("real", root.path().join("alias")).unwrap();
        let e = resolve(root.path(), &abs("/alias/x"), r).unwrap_err();
        assert!(matches!(e, TargetError::Symlink { .. }), "{r:?}: {e:?}");
        assert!(!root.path().join("real/x").exists());
    }
}

#[test]
fn refuses_symlink_as_the_target_itself() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        symlink("real", root.path().join("data")).unwrap();
        let e = resolve(root.path(), &abs("/data"), r).unwrap_err();
        match &e {
            TargetError::Symlink { component, .. } => {
                assert_eq!(component, &root.path().join("data"))
            }
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn refuses_symlink_escaping_sandbox() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir(&sandbox).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        symlink("../outside", sandbox.join("logs")).unwrap();
        let p = ContainerPath::any("logs/app").unwrap();
        let e = resolve(&sandbox, &p, r).unwrap_err();
        assert!(matches!(e, TargetError::Symlink { .. }), "{r:?}: {e:?}");
        assert_mentions(&e, &[&"logs/app", &sandbox.join("logs")]);
        assert!(!dir.path().join("outside/app").exists(), "{r:?}");
    }
}

#[test]
fn refuses_magic_link_below_the_root() {
    // /proc/self/root is a magic link to the process's root: never followed.
    for r in RESOLVERS {
        let e = resolve(Path::new("/proc/self"), &abs("/root/tmp"), r).unwrap_err();
        match &e {
            TargetError::Symlink { component, .. } => {
                assert_eq!(component, Path::new("/proc/self/root"))
            }
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn refuses_file_as_target() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("file"), b"keep").unwrap();
        for p in ["/file", "/file/below"] {
            let e = resolve(root.path(), &abs(p), r).unwrap_err();
            match &e {
                TargetError::NotDirectory { component, .. } => {
                    assert_eq!(component, &root.path().join("file"), "{r:?} {p}")
                }
                other => panic!("{r:?} {p}: {other:?}"),
            }
            assert_mentions(&e, &[&p, &root.path().join("file")]);
            assert!(render_chain(&e).contains("is not a directory"));
        }
        assert_eq!(fs::read(root.path().join("file")).unwrap(), b"keep");
    }
}

#[test]
fn refuses_device_as_target() {
    for r in RESOLVERS {
        let e = resolve(Path::new("/dev"), &abs("/null"), r).unwrap_err();
        assert!(
            matches!(e, TargetError::NotDirectory { .. }),
            "{r:?}: {e:?}"
        );
    }
}

#[test]
fn host_path_must_exist_unless_under_tmp() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::create_dir(dir.path().join("exists")).unwrap();
        let policy = TargetPolicy::HostPath { tmp: tmp.clone() };
        let root = Path::new("/");

        let ok = resolve_target_with(root, &host(&dir.path().join("exists")), &policy, r).unwrap();
        assert_eq!(ok.path(), dir.path().join("exists"));

        let missing = dir.path().join("missing/deeper");
        let e = resolve_target_with(root, &host(&missing), &policy, r).unwrap_err();
        match &e {
            TargetError::OutsideTmp { component, .. } => {
                assert_eq!(component, &dir.path().join("missing"), "{r:?}")
            }
            other => panic!("{r:?}: {other:?}"),
        }
        assert_mentions(&e, &[&missing, &dir.path().join("missing"), &tmp]);
        assert!(render_chain(&e).contains("must exist or lie under"));
        assert!(!dir.path().join("missing").exists(), "{r:?}");

        let under = tmp.join("a/b");
        let t = resolve_target_with(root, &host(&under), &policy, r).unwrap();
        assert_eq!(t.path(), under);
        assert!(under.is_dir());
    }
}

#[test]
fn host_tmp_is_matched_by_whole_components() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let policy = TargetPolicy::HostPath { tmp: tmp.clone() };
        // "tmpx" starts with the bytes of "tmp" but is not under it.
        let lookalike = dir.path().join("tmpx/a");
        let e = resolve_target_with(Path::new("/"), &host(&lookalike), &policy, r).unwrap_err();
        assert!(matches!(e, TargetError::OutsideTmp { .. }), "{r:?}: {e:?}");
        // The host's tmp itself is never created.
        fs::remove_dir(&tmp).unwrap();
        let e = resolve_target_with(Path::new("/"), &host(&tmp.join("a")), &policy, r).unwrap_err();
        match &e {
            TargetError::OutsideTmp { component, .. } => assert_eq!(component, &tmp),
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn host_tmp_symlink_planted_by_another_user_is_refused() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&tmp).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, tmp.join("evil")).unwrap();
        let policy = TargetPolicy::HostPath { tmp: tmp.clone() };
        let p = host(&tmp.join("evil/x"));
        let e = resolve_target_with(Path::new("/"), &p, &policy, r).unwrap_err();
        match &e {
            TargetError::Symlink { component, .. } => assert_eq!(component, &tmp.join("evil")),
            other => panic!("{r:?}: {other:?}"),
        }
        assert!(!elsewhere.join("x").exists(), "{r:?}");
    }
}

#[test]
fn must_exist_creates_nothing() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let e = resolve_target_with(root.path(), &abs("/a/b"), &TargetPolicy::MustExist, r)
            .unwrap_err();
        match &e {
            TargetError::Missing { component, .. } => {
                assert_eq!(component, &root.path().join("a"))
            }
            other => panic!("{r:?}: {other:?}"),
        }
        assert_mentions(&e, &[&"/a/b", &root.path().join("a")]);
        assert!(!root.path().join("a").exists());
    }
}

#[test]
fn missing_root_is_an_io_error_naming_it() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("no-rootfs");
        let e = resolve(&root, &abs("/data"), r).unwrap_err();
        assert!(
            matches!(
                e,
                TargetError::Io {
                    source: nix::errno::Errno::ENOENT,
                    ..
                }
            ),
            "{r:?}: {e:?}"
        );
        assert_mentions(&e, &[&"/data", &root]);
    }
}

#[test]
fn relative_root_is_refused() {
    for r in RESOLVERS {
        let e = resolve(Path::new("rootfs"), &abs("/data"), r).unwrap_err();
        assert!(
            matches!(e, TargetError::RelativeRoot { .. }),
            "{r:?}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            "/data: the root rootfs is not an absolute path"
        );
    }
}

#[test]
fn auto_resolver_agrees_with_the_forced_ones() {
    let root = tempfile::tempdir().unwrap();
    symlink("/etc", root.path().join("link")).unwrap();
    let t = resolve_target(root.path(), &abs("/a/b"), &TargetPolicy::CreateMissing).unwrap();
    assert_eq!(t.path(), root.path().join("a/b"));
    let e = resolve_target(root.path(), &abs("/link/x"), &TargetPolicy::CreateMissing).unwrap_err();
    assert!(matches!(e, TargetError::Symlink { .. }), "{e:?}");
}

#[test]
fn verify_notices_a_swapped_directory() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let t = resolve(root.path(), &abs("/d"), r).unwrap();
        t.verify().unwrap();
        fs::rename(root.path().join("d"), root.path().join("old")).unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        let e = t.verify().unwrap_err();
        assert!(matches!(e, TargetError::Changed { .. }), "{r:?}: {e:?}");
        assert_mentions(&e, &[&"/d", &root.path().join("d")]);
        assert!(!t.still_same());
    }
}

#[test]
fn verify_notices_a_parent_swapped_for_a_symlink_to_the_same_directory() {
    // stat(2) of the path would still find the same inode; a re-resolution refuses the link.
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let t = resolve(root.path(), &abs("/a/d"), r).unwrap();
        fs::rename(root.path().join("a"), root.path().join("b")).unwrap();
        symlink("b", root.path().join("a")).unwrap();
        let e = t.verify().unwrap_err();
        match &e {
            TargetError::Symlink { component, .. } => {
                assert_eq!(component, &root.path().join("a"))
            }
            other => panic!("{r:?}: {other:?}"),
        }
    }
}

#[test]
fn crosses_mount_points_inside_rootfs() {
    // No RESOLVE_NO_XDEV: a rootfs may hold mounts (the sandbox bind, a tmpfs), and crossing one
    // does not leave the root.
    // Made outside the namespace, so it is removed where nothing is mounted on it.
    let root = tempfile::tempdir().unwrap();
    support::host::in_private_mount_ns(|| {
        let mnt = root.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let _unmount = UnmountGuard::new(&Host, &mnt);
        let tmpfs_dev = fs::metadata(&mnt).unwrap().dev();
        for r in RESOLVERS {
            let name = format!("/mnt/{r:?}");
            let t = resolve(root.path(), &abs(&name), r).unwrap();
            assert_eq!(fs::metadata(t.path()).unwrap().dev(), tmpfs_dev, "{r:?}");
        }
    });
}

#[test]
fn statx_tells_a_mount_root_from_a_plain_directory() {
    use mesos_dvdi::mount::{bind, is_mount_root};
    let dir = tempfile::tempdir().unwrap();
    support::host::in_private_mount_ns(|| {
        let (src, dst): (PathBuf, PathBuf) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        assert_eq!(is_mount_root(&dst), Some(false));
        // A bind of the same file system: same device, still a mount root.
        bind(&Host, &src, &dst, false).unwrap();
        let unmount = UnmountGuard::new(&Host, &dst);
        assert_eq!(is_mount_root(&dst), Some(true));
        drop(unmount);
        assert_eq!(is_mount_root(&dst), Some(false));
    });
}

mod agreement {
    //! Random layouts: both resolvers reach the same verdict, and neither creates anything
    //! outside the root or accepts a path through a link.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Node {
        Dir,
        File,
        /// A relative link to another name inside the root.
        LinkInside(String),
        /// A link to a directory outside the root.
        LinkOutside,
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned)
    }

    fn rel_path(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(name(), 1..=max).prop_map(|v| v.join("/"))
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            3 => Just(Node::Dir),
            1 => Just(Node::File),
            1 => rel_path(2).prop_map(Node::LinkInside),
            1 => Just(Node::LinkOutside),
        ]
    }

    /// Builds the layout under `root`; entries whose parent is not a directory are skipped.
    fn build(root: &Path, outside: &Path, layout: &[(String, Node)]) {
        for (p, n) in layout {
            let at = root.join(p);
            let _ = match n {
                Node::Dir => fs::create_dir(&at),
                Node::File => fs::write(&at, b""),
                Node::LinkInside(to) => symlink(root.join(to), &at),
                Node::LinkOutside => symlink(outside, &at),
            };
        }
    }

    /// Everything below `dir`, without following links.
    fn listing(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    /// A verdict comparable across resolvers: the target, or the variant and the component.
    fn verdict(root: &Path, r: Result<ResolvedTarget, TargetError>) -> String {
        let rel = |c: &Path| c.strip_prefix(root).unwrap().display().to_string();
        match r {
            Ok(t) => format!("ok {}", rel(t.path())),
            Err(TargetError::Symlink { component, .. }) => format!("link {}", rel(&component)),
            Err(TargetError::NotDirectory { component, .. }) => {
                format!("notdir {}", rel(&component))
            }
            Err(e) => format!("other {e:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn resolvers_agree_and_never_leave_the_root(
            layout in prop::collection::vec((rel_path(3), node()), 0..8),
            target in rel_path(4),
        ) {
            let mut verdicts = Vec::new();
            for r in RESOLVERS {
                let dir = tempfile::tempdir().unwrap();
                let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
                fs::create_dir(&root).unwrap();
                fs::create_dir(&outside).unwrap();
                build(&root, &outside, &layout);
                // The builder itself may write through its links; the resolver must not.
                let before = listing(&outside);
                let result = resolve(&root, &abs(&format!("/{target}")), r);
                if let Ok(t) = &result {
                    // Every component below the root is a real directory.
                    let mut here = root.clone();
                    for c in Path::new(&target).components() {
                        here.push(c);
                        let meta = fs::symlink_metadata(&here).unwrap();
                        prop_assert!(meta.is_dir(), "{r:?}: {}", here.display());
                    }
                    prop_assert_eq!(t.path(), root.join(&target));
                }
                prop_assert_eq!(listing(&outside), before, "{:?}", r);
                verdicts.push(verdict(&root, result));
            }
            prop_assert_eq!(&verdicts[0], &verdicts[1]);
        }
    }
}

#[test]
fn errors_seen_from_the_containers_view_hold_no_host_path() {
    let root = tempfile::tempdir().unwrap();
    symlink("/etc", root.path().join("data")).unwrap();
    fs::create_dir(root.path().join("srv")).unwrap();
    fs::write(root.path().join("srv/file"), b"").unwrap();
    let view = Path::new("/");
    let e = resolve_target_in(
        root.path(),
        view,
        &abs("/data/x"),
        &TargetPolicy::CreateMissing,
    )
    .unwrap_err();
    match &e {
        TargetError::Symlink {
            path,
            component,
            link,
            host,
        } => {
            assert_eq!(path, Path::new("/data/x"));
            assert_eq!(component, Path::new("/data"));
            assert_eq!(link.as_deref(), Some(Path::new("/etc")));
            assert_eq!(host, &root.path().join("data"));
        }
        other => panic!("{other:?}"),
    }
    let text = render_chain(&e);
    assert!(
        text.contains("/data is a symbolic link to \"/etc\""),
        "{text}"
    );
    assert!(!text.contains(root.path().to_str().unwrap()), "{text}");
    assert_eq!(e.host_path(), root.path().join("data"));

    // A sandbox seen at another path inside the container.
    let e = resolve_target_in(
        root.path(),
        Path::new("/mnt/mesos/sandbox"),
        &ContainerPath::any("srv/file/x").unwrap(),
        &TargetPolicy::CreateMissing,
    )
    .unwrap_err();
    let text = render_chain(&e);
    assert!(matches!(e, TargetError::NotDirectory { .. }), "{e:?}");
    assert!(
        text.contains("/mnt/mesos/sandbox/srv/file is not a directory"),
        "{text}"
    );
    assert!(!text.contains(root.path().to_str().unwrap()), "{text}");
}

#[test]
fn created_dirs_are_removed_only_while_empty_and_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir(r.join("kept")).unwrap();
    let mut t = resolve_target(r, &abs("/kept/a/b/c"), &TargetPolicy::CreateMissing).unwrap();
    let created = t.take_created();
    let paths: Vec<PathBuf> = created.paths().map(Path::to_owned).collect();
    assert_eq!(
        paths,
        ["kept/a", "kept/a/b", "kept/a/b/c"].map(|p| r.join(p)),
        "an existing directory is not reported"
    );
    // Something else gives b an entry: b (and so a) stay, c goes.
    fs::write(r.join("kept/a/b/note"), b"mine").unwrap();
    drop(created);
    assert!(!r.join("kept/a/b/c").exists());
    assert!(r.join("kept/a/b/note").exists());

    // A directory replaced by another of the same name is not the one made: it stays.
    let mut t2 = resolve_target(r, &abs("/x/y"), &TargetPolicy::CreateMissing).unwrap();
    let created = t2.take_created();
    fs::remove_dir(r.join("x/y")).unwrap();
    fs::create_dir(r.join("x/y")).unwrap();
    drop(created);
    assert!(
        r.join("x/y").is_dir(),
        "removed a directory it did not make"
    );

    // Left in the resolved target, or disarmed, nothing is removed.
    drop(t);
    let mut t3 = resolve_target(r, &abs("/z/w"), &TargetPolicy::CreateMissing).unwrap();
    t3.take_created().disarm();
    assert!(r.join("z/w").is_dir());
    drop(t3);
    assert!(r.join("z/w").is_dir());

    // Nothing created, nothing reported.
    let mut again = resolve_target(r, &abs("/z/w"), &TargetPolicy::CreateMissing).unwrap();
    assert!(again.take_created().is_empty());
}

#[test]
fn removing_created_dirs_follows_no_symlink_planted_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir(outside.path().join("b")).unwrap();
    let mut t = resolve_target(r, &abs("/a/b"), &TargetPolicy::CreateMissing).unwrap();
    let created = t.take_created();
    // The task moves the made directory away and plants a link to a look-alike elsewhere.
    fs::rename(r.join("a"), r.join("moved")).unwrap();
    symlink(outside.path(), r.join("a")).unwrap();
    drop(created);
    assert!(
        outside.path().join("b").is_dir(),
        "followed the planted link and removed a directory outside the root"
    );
    assert!(fs::symlink_metadata(r.join("a")).unwrap().is_symlink());
    // The directory made (now `moved/b`) was still empty and the same: it went, by its handle.
    assert!(!r.join("moved/b").exists());
    assert!(
        r.join("moved").is_dir(),
        "`moved` is not the directory named a"
    );
}
