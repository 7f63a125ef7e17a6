//! Resolving where a volume is bound: never through a symlink, directories created only where
//! allowed — for the openat2 path and the portable walk alike.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{resolve_target_with, Resolver, TargetError, TargetPolicy};
use mesos_dvdi::spec::ContainerPath;

const RESOLVERS: [Resolver; 2] = [Resolver::Auto, Resolver::Walk];

fn abs(p: &str) -> ContainerPath {
    ContainerPath::absolute(p).unwrap()
}

fn resolve(root: &Path, p: &ContainerPath, r: Resolver) -> Result<std::path::PathBuf, TargetError> {
    resolve_target_with(root, p, &TargetPolicy::CreateMissing, r).map(|t| t.path().to_owned())
}

#[test]
fn creates_missing_dirs_inside_rootfs() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        let t = resolve(root.path(), &abs("/var/lib/db"), r).unwrap();
        assert_eq!(t, root.path().join("var/lib/db"));
        assert!(t.is_dir());
        // Resolving again finds what is there.
        assert_eq!(resolve(root.path(), &abs("/var/lib/db"), r).unwrap(), t);
    }
}

#[test]
fn refuses_symlink_to_etc_in_rootfs() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc", root.path().join("data")).unwrap();
        let e = resolve(root.path(), &abs("/data"), r).unwrap_err();
        assert!(matches!(e, TargetError::Symlink { .. }), "{r:?}: {e:?}");
        let text = render_chain(&e);
        assert!(
            text.contains("/data") && text.contains("symbolic link"),
            "{text}"
        );
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
    }
}

#[test]
fn refuses_symlink_escaping_sandbox() {
    for r in RESOLVERS {
        let sandbox = tempfile::tempdir().unwrap();
        symlink("../../../../etc", sandbox.path().join("logs")).unwrap();
        let p = ContainerPath::any("logs/app").unwrap();
        let e = resolve(sandbox.path(), &p, r).unwrap_err();
        assert!(matches!(e, TargetError::Symlink { .. }), "{r:?}: {e:?}");
    }
}

#[test]
fn refuses_file_as_target_or_parent() {
    for r in RESOLVERS {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("file"), b"").unwrap();
        for p in ["/file", "/file/below"] {
            let e = resolve(root.path(), &abs(p), r).unwrap_err();
            assert!(
                matches!(e, TargetError::NotDirectory { .. }),
                "{r:?} {p}: {e:?}"
            );
            assert!(render_chain(&e).contains("not a directory"));
        }
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
        let host = |p: &Path| ContainerPath::absolute(p.to_str().unwrap()).unwrap();

        let ok = resolve_target_with(
            Path::new("/"),
            &host(&dir.path().join("exists")),
            &policy,
            r,
        )
        .unwrap();
        assert_eq!(ok.path(), dir.path().join("exists"));

        let missing = dir.path().join("missing/deeper");
        let e = resolve_target_with(Path::new("/"), &host(&missing), &policy, r).unwrap_err();
        match &e {
            TargetError::Missing { component, .. } => {
                assert_eq!(component, &dir.path().join("missing"))
            }
            other => panic!("{r:?}: {other:?}"),
        }
        assert!(render_chain(&e).contains("must exist or lie under"));
        assert!(!dir.path().join("missing").exists());

        let under = tmp.join("a/b");
        let t = resolve_target_with(Path::new("/"), &host(&under), &policy, r).unwrap();
        assert_eq!(t.path(), under);
        assert!(under.is_dir());
        assert!(t.still_same());
    }
}

#[test]
fn host_tmp_symlink_planted_by_another_user_is_refused() {
    for r in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        symlink("/etc", tmp.join("evil")).unwrap();
        let policy = TargetPolicy::HostPath { tmp: tmp.clone() };
        let p = ContainerPath::absolute(tmp.join("evil/x").to_str().unwrap()).unwrap();
        let e = resolve_target_with(Path::new("/"), &p, &policy, r).unwrap_err();
        assert!(matches!(e, TargetError::Symlink { .. }), "{r:?}: {e:?}");
        assert!(!Path::new("/etc/x").exists());
    }
}

#[test]
fn still_same_notices_a_swapped_directory() {
    let root = tempfile::tempdir().unwrap();
    let t = resolve_target_with(
        root.path(),
        &abs("/d"),
        &TargetPolicy::CreateMissing,
        Resolver::Auto,
    )
    .unwrap();
    assert!(t.still_same());
    fs::rename(root.path().join("d"), root.path().join("old")).unwrap();
    fs::create_dir(root.path().join("d")).unwrap();
    assert!(!t.still_same());
}

#[test]
fn statx_tells_a_mount_root_from_a_plain_directory() {
    use mesos_dvdi::mount::{bind, is_mount_root, Host};
    support::isolator::in_private_mount_ns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        assert_eq!(is_mount_root(&dst), Some(false));
        // A bind of the same file system: same device, still a mount root.
        bind(&Host, &src, &dst, false).unwrap();
        assert_eq!(is_mount_root(&dst), Some(true));
        nix::mount::umount2(&dst, nix::mount::MntFlags::empty()).unwrap();
        assert_eq!(is_mount_root(&dst), Some(false));
    });
}
