//! The built-in `local` driver, for real: a directory per volume under its root.

mod support;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;

use mesos_dvdi::backend::local::LocalBackend;
use mesos_dvdi::backend::{Backend, BackendErrorKind, MountId, MountRequest, Scope};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{VolumeName, VolumeOpts};
use support::host::TestDir;

fn name(n: &str) -> VolumeName {
    VolumeName::new(n).unwrap()
}

fn mount(b: &LocalBackend, n: &VolumeName, explicit: bool) -> Result<PathBuf, String> {
    b.mount(&MountRequest {
        name: n,
        opts: &VolumeOpts::empty(),
        explicit_create: explicit,
        id: &MountId("m1".into()),
        read_only: false,
        csi: None,
    })
    .map_err(|e| render_chain(&e))
}

#[test]
fn volume_keeps_data_across_unmount_and_mount() {
    let t = TestDir::new();
    // The root does not exist yet: the first mount makes it.
    let root = t.path().join("not yet/local");
    let b = LocalBackend::new(root.clone());
    let n = name("data");
    let p = mount(&b, &n, false).unwrap();
    assert_eq!(p, root.join("data"));
    fs::write(p.join("f"), b"kept").unwrap();
    b.unmount(&n, &MountId("m1".into())).unwrap();
    assert!(p.join("f").exists(), "unmount must not touch the data");

    let again = mount(&b, &n, true).unwrap();
    assert_eq!(again, p);
    assert_eq!(fs::read(again.join("f")).unwrap(), b"kept");
    assert_eq!(b.path(&n).unwrap(), Some(p.clone()));
    assert_eq!(b.get(&n).unwrap().unwrap().mountpoint, Some(p));
    t.assert_released();
}

#[test]
fn explicit_create_refuses_a_missing_volume_and_creates_nothing() {
    let t = TestDir::new();
    let b = LocalBackend::new(t.path().join("local"));
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
    let text = render_chain(&e);
    assert!(
        text.contains("volume \"nope\" (driver \"local\"): mount failed")
            && text.contains("DVDI_VOLUME_EXPLICITCREATE"),
        "{text}"
    );
    assert!(!t.path().join("local/nope").exists());
}

#[test]
fn create_makes_the_directory_0755_whatever_the_umask() {
    let t = TestDir::new();
    let b = LocalBackend::new(t.path().join("local"));
    // The umask is process-wide, but nothing else in this binary looks at modes.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let made = b.create(&name("open"), &VolumeOpts::empty());
    nix::sys::stat::umask(old);
    made.unwrap();
    let mode = fs::metadata(t.path().join("local/open"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    // Creating again is a no-op.
    b.create(&name("open"), &VolumeOpts::empty()).unwrap();
}

#[test]
fn a_file_or_symlink_in_a_volumes_place_is_refused_by_path_and_never_followed() {
    let t = TestDir::new();
    let root = t.path().join("local");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("file"), b"").unwrap();
    let elsewhere = t.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("precious"), b"x").unwrap();
    symlink(&elsewhere, root.join("link")).unwrap();
    let b = LocalBackend::new(root.clone());

    let text = mount(&b, &name("file"), false).unwrap_err();
    assert!(
        text.contains(&format!(
            "{} exists and is not a directory",
            root.join("file").display()
        )),
        "{text}"
    );
    let text = mount(&b, &name("link"), false).unwrap_err();
    assert!(
        text.contains("link exists and is not a directory"),
        "{text}"
    );
    let text = render_chain(&b.remove(&name("link")).unwrap_err());
    assert!(text.contains("remove failed"), "{text}");
    assert!(elsewhere.join("precious").exists());
}

#[test]
fn remove_deletes_the_directory_and_its_data() {
    let t = TestDir::new();
    let b = LocalBackend::new(t.path().join("local"));
    let n = name("gone");
    let p = mount(&b, &n, false).unwrap();
    fs::create_dir(p.join("sub")).unwrap();
    fs::write(p.join("sub/f"), b"x").unwrap();
    b.remove(&n).unwrap();
    assert!(!p.exists());
    assert_eq!(b.get(&n).unwrap(), None);
    assert_eq!(b.path(&n).unwrap(), None);
    // Removing what is not there is not an error.
    b.remove(&n).unwrap();
}

#[test]
fn list_shows_volume_directories_only() {
    let t = TestDir::new();
    let root = t.path().join("local");
    let b = LocalBackend::new(root.clone());
    assert_eq!(b.list().unwrap(), []);
    for n in ["b", "a"] {
        b.create(&name(n), &VolumeOpts::empty()).unwrap();
    }
    fs::write(root.join("stray-file"), b"").unwrap();
    fs::create_dir(root.join("bad name")).unwrap();
    let listed: Vec<(String, Option<PathBuf>)> = b
        .list()
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.mountpoint))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".to_owned(), Some(root.join("a"))),
            ("b".to_owned(), Some(root.join("b")))
        ]
    );
    assert_eq!(b.capabilities().unwrap().scope, Scope::Local);
}
