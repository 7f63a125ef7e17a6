//! The built-in `local` and `loop` drivers, for real: directories, loop devices, ext4 and xfs.

mod support;

use std::fs;
use std::sync::Arc;

use mesos_dvdi::backend::local::LocalBackend;
use mesos_dvdi::backend::loopdev::LoopBackend;
use mesos_dvdi::backend::{Backend, BackendErrorKind, MountId, MountRequest};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::{VolumeName, VolumeOpts};
use support::host::loop_devices_under;
use support::isolator::{in_private_mount_ns, is_mounted};

fn name(n: &str) -> VolumeName {
    VolumeName::new(n).unwrap()
}

fn req<'a>(
    n: &'a VolumeName,
    opts: &'a VolumeOpts,
    explicit: bool,
    id: &'a MountId,
) -> MountRequest<'a> {
    MountRequest {
        name: n,
        opts,
        explicit_create: explicit,
        id,
    }
}

#[test]
fn local_volume_keeps_data_across_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("local"));
    let (n, o, id) = (name("data"), VolumeOpts::empty(), MountId("1".into()));
    let p = b.mount(&req(&n, &o, false, &id)).unwrap();
    assert_eq!(p, dir.path().join("local/data"));
    fs::write(p.join("f"), b"kept").unwrap();
    b.unmount(&n, &id).unwrap();
    let again = b.mount(&req(&n, &o, true, &id)).unwrap();
    assert_eq!(fs::read(again.join("f")).unwrap(), b"kept");
    assert_eq!(b.list().unwrap().len(), 1);
    b.remove(&n).unwrap();
    assert_eq!(b.get(&n).unwrap(), None);
}

#[test]
fn local_explicit_create_refuses_a_missing_volume() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path().join("local"));
    let (n, o, id) = (name("nope"), VolumeOpts::empty(), MountId("1".into()));
    let e = b.mount(&req(&n, &o, true, &id)).unwrap_err();
    assert!(matches!(*e.kind, BackendErrorKind::NoSuchVolume), "{e:?}");
    assert!(render_chain(&e).contains("DVDI_VOLUME_EXPLICITCREATE"));
    assert!(!dir.path().join("local/nope").exists());
}

#[test]
fn local_refuses_a_file_where_a_volume_should_be() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("local")).unwrap();
    fs::write(dir.path().join("local/f"), b"").unwrap();
    let b = LocalBackend::new(dir.path().join("local"));
    let e = b
        .mount(&req(
            &name("f"),
            &VolumeOpts::empty(),
            false,
            &MountId("1".into()),
        ))
        .unwrap_err();
    assert!(
        render_chain(&e).contains("not a directory"),
        "{}",
        render_chain(&e)
    );
}

fn loop_lifecycle(fstype: &str) {
    in_private_mount_ns(|| {
        let dir = tempfile::tempdir().unwrap();
        let b = LoopBackend::new(dir.path().join("loop"), Arc::new(Host));
        let n = name("db");
        let o = VolumeOpts::parse(&format!("size=1,fstype={fstype}")).unwrap();
        let id = MountId("1".into());
        let p = b
            .mount(&req(&n, &o, false, &id))
            .unwrap_or_else(|e| panic!("{}", render_chain(&e)));
        assert!(is_mounted(&p));
        assert_eq!(loop_devices_under(dir.path()), 1);
        // Idempotent: the same path, no second device.
        assert_eq!(b.mount(&req(&n, &o, false, &id)).unwrap(), p);
        assert_eq!(loop_devices_under(dir.path()), 1);
        fs::write(p.join("row"), b"42").unwrap();
        assert_eq!(b.path(&n).unwrap(), Some(p.clone()));

        b.unmount(&n, &id).unwrap();
        assert!(!is_mounted(&p));
        assert!(loop_devices_under(dir.path()) == 0, "device left attached");
        assert_eq!(b.path(&n).unwrap(), None);

        // Mounted again (explicitly existing): the data is there, the file system not remade.
        let p = b.mount(&req(&n, &o, true, &id)).unwrap();
        assert_eq!(fs::read(p.join("row")).unwrap(), b"42");
        let e = b.remove(&n).unwrap_err();
        assert!(
            render_chain(&e).contains("is mounted"),
            "{}",
            render_chain(&e)
        );
        b.unmount(&n, &id).unwrap();
        b.remove(&n).unwrap();
        assert_eq!(b.get(&n).unwrap(), None);
        assert!(loop_devices_under(dir.path()) == 0);
    });
}

#[test]
fn loop_ext4_volume_lifecycle_releases_every_device() {
    loop_lifecycle("ext4");
}

#[test]
fn loop_xfs_volume_lifecycle_releases_every_device() {
    loop_lifecycle("xfs");
}

#[test]
fn loop_overwritefs_formats_again() {
    in_private_mount_ns(|| {
        let dir = tempfile::tempdir().unwrap();
        let b = LoopBackend::new(dir.path().join("loop"), Arc::new(Host));
        let n = name("scratch");
        let id = MountId("1".into());
        let p = b.mount(&req(&n, &VolumeOpts::empty(), false, &id)).unwrap();
        fs::write(p.join("old"), b"x").unwrap();
        b.unmount(&n, &id).unwrap();
        let o = VolumeOpts::parse("overwritefs=true").unwrap();
        let p = b.mount(&req(&n, &o, false, &id)).unwrap();
        assert!(
            !p.join("old").exists(),
            "overwritefs=true kept the old file system"
        );
        b.unmount(&n, &id).unwrap();
        assert!(loop_devices_under(dir.path()) == 0);
    });
}

#[test]
fn loop_refuses_bad_options_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let b = LoopBackend::new(dir.path().join("loop"), Arc::new(Host));
    for (opts, needle) in [
        ("size=0", "size"),
        ("size=lots", "size"),
        ("size=99999999", "size"),
        ("fstype=btrfs", "ext4 or xfs"),
        ("overwritefs=yes", "true or false"),
        ("color=blue", "unknown option \"color\""),
    ] {
        let o = VolumeOpts::parse(opts).unwrap();
        let e = b
            .mount(&req(&name("v"), &o, false, &MountId("1".into())))
            .unwrap_err();
        assert!(
            render_chain(&e).contains(needle),
            "{opts}: {}",
            render_chain(&e)
        );
    }
    assert!(!dir.path().join("loop/images/v.img").exists());
    assert!(loop_devices_under(dir.path()) == 0);
}

#[test]
fn loop_explicit_create_refuses_a_missing_volume() {
    let dir = tempfile::tempdir().unwrap();
    let b = LoopBackend::new(dir.path().join("loop"), Arc::new(Host));
    let e = b
        .mount(&req(
            &name("v"),
            &VolumeOpts::empty(),
            true,
            &MountId("1".into()),
        ))
        .unwrap_err();
    assert!(matches!(*e.kind, BackendErrorKind::NoSuchVolume), "{e:?}");
}

#[test]
fn unmount_detaches_a_device_attached_by_hand() {
    in_private_mount_ns(|| {
        let dir = tempfile::tempdir().unwrap();
        let b = LoopBackend::new(dir.path().join("loop"), Arc::new(Host));
        let (n, o, id) = (name("manual"), VolumeOpts::empty(), MountId("1".into()));
        b.mount(&req(&n, &o, false, &id)).unwrap();
        b.unmount(&n, &id).unwrap();
        assert!(loop_devices_under(dir.path()) == 0);
        // An operator attached the image by hand (no autoclear): unmount still detaches it.
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(b.image(&n))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(loop_devices_under(dir.path()), 1);
        b.unmount(&n, &id).unwrap();
        assert!(
            loop_devices_under(dir.path()) == 0,
            "a lingering device stayed attached"
        );
    });
}
