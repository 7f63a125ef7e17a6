//! The checkpoint store: atomic per-volume records, per-volume flocks shared across processes,
//! and records that cannot be read are reported, never silently replaced.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mesos_dvdi::backend::MountId;
use mesos_dvdi::spec::{DriverName, VolumeKey, VolumeName, VolumeOpts};
use mesos_dvdi::state::{
    ContainerId, Owner, Phase, StateError, Store, Use, VolumeRecord, CHECKPOINT_VERSION,
};

fn key(driver: &str, name: &str) -> VolumeKey {
    VolumeKey {
        driver: DriverName::new(driver).unwrap(),
        name: VolumeName::new(name).unwrap(),
    }
}

fn record(k: &VolumeKey, users: &[&str]) -> VolumeRecord {
    VolumeRecord {
        version: CHECKPOINT_VERSION,
        driver: k.driver.clone(),
        name: k.name.clone(),
        opts: VolumeOpts::parse("size=5,iops=100").unwrap(),
        explicit_create: false,
        dvdcli: None,
        csi: None,
        mount_id: MountId("m-1".into()),
        phase: Phase::Mounted,
        host_path: Some(PathBuf::from("/var/lib/dvdi/x")),
        is_mount_point: true,
        device: None,
        users: users
            .iter()
            .map(|u| {
                (
                    ContainerId::new(*u).unwrap(),
                    Use {
                        target: Some(PathBuf::from("/data")),
                        read_only: false,
                        owner: Owner::Mesos,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        last_error: None,
        lease: None,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn saved_record_loads_back_equal_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("rexray", "pgdata");
    let g = store.lock(&k).unwrap();
    assert_eq!(g.load().unwrap(), None);
    let r = record(&k, &["c1", "c2"]);
    g.save(&r).unwrap();
    assert_eq!(g.load().unwrap(), Some(r.clone()));
    let driver_dir = dir.path().join("volumes/rexray");
    assert_eq!(files_in(&driver_dir), ["pgdata.json", "pgdata.lock"]);
    drop(g);

    let scanned = store.scan().unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].record.as_ref().unwrap(), &r);
}

#[test]
fn removed_record_is_gone_and_scan_skips_lock_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("local", "a");
    let g = store.lock(&k).unwrap();
    g.save(&record(&k, &["c1"])).unwrap();
    g.remove().unwrap();
    assert_eq!(g.load().unwrap(), None);
    g.remove().unwrap(); // idempotent
    drop(g);
    assert!(store.scan().unwrap().is_empty());
}

#[test]
fn lock_excludes_other_threads_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("local", "shared");
    let held = store.lock(&k).unwrap();
    std::thread::scope(|s| {
        let other = s.spawn(|| store.try_lock(&k).unwrap().is_some());
        assert!(!other.join().unwrap(), "a second holder got the lock");
    });
    // Another volume is not blocked by this one.
    assert!(store.try_lock(&key("local", "other")).unwrap().is_some());
    drop(held);
    assert!(store.try_lock(&k).unwrap().is_some());
}

#[test]
fn lock_excludes_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("local", "shared");
    let lock_file = dir.path().join("volumes/local/shared.lock");
    let try_from_child = || {
        // util-linux flock(1): exits 1 at once when the lock is held elsewhere.
        Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "75"])
            .arg(&lock_file)
            .arg("true")
            .status()
            .expect("flock(1) from util-linux")
            .code()
    };
    let held = store.lock(&k).unwrap();
    assert_eq!(try_from_child(), Some(75));
    drop(held);
    assert_eq!(try_from_child(), Some(0));
}

#[test]
fn corrupt_record_is_reported_and_left_untouched_until_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("rexray", "broken");
    let g = store.lock(&k).unwrap();
    fs::write(g.path(), b"{\"version\": 1, \"driver\": ").unwrap();
    let err = g.load().unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.json"), "{err}");
    assert_eq!(
        fs::read(g.path()).unwrap(),
        b"{\"version\": 1, \"driver\": "
    );
    let aside = g.set_aside().unwrap();
    assert!(aside.to_string_lossy().contains("broken.json.corrupt."));
    assert_eq!(fs::read(&aside).unwrap(), b"{\"version\": 1, \"driver\": ");
    assert_eq!(g.load().unwrap(), None);
}

#[test]
fn record_of_another_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("rexray", "future");
    let g = store.lock(&k).unwrap();
    let mut v = serde_json::to_value(record(&k, &[])).unwrap();
    v["version"] = 7.into();
    v["something_new"] = true.into();
    fs::write(g.path(), serde_json::to_vec(&v).unwrap()).unwrap();
    let err = g.load().unwrap_err();
    assert!(
        matches!(err, StateError::UnknownVersion { found: 7, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 7"), "{err}");
}

#[test]
fn record_under_the_wrong_file_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = key("rexray", "a");
    let b = key("rexray", "b");
    let ga = store.lock(&a).unwrap();
    ga.save(&record(&a, &["c"])).unwrap();
    let gb = store.lock(&b).unwrap();
    fs::copy(ga.path(), gb.path()).unwrap();
    let err = gb.load().unwrap_err();
    assert!(matches!(err, StateError::Misplaced { .. }), "{err:?}");
}

#[test]
fn longest_names_get_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = key("rexray", &format!("{}a", "n".repeat(254)));
    let b = key("rexray", &format!("{}b", "n".repeat(254)));
    for k in [&a, &b] {
        store.lock(k).unwrap().save(&record(k, &["c"])).unwrap();
    }
    assert_eq!(
        store.lock(&a).unwrap().load().unwrap().unwrap().name,
        a.name
    );
    assert_eq!(
        store.lock(&b).unwrap().load().unwrap().unwrap().name,
        b.name
    );
    assert_eq!(store.scan().unwrap().len(), 2);
}

#[test]
fn container_ids_are_validated() {
    assert!(ContainerId::new("").is_err());
    assert!(ContainerId::new("a\nb").is_err());
    assert!(ContainerId::new("x".repeat(1025)).is_err());
    assert!(ContainerId::new("3f1c-…-parent.child").is_ok());
}

#[test]
fn fsync_is_skipped_only_on_tmpfs() {
    let disk = tempfile::tempdir().unwrap();
    let on_disk = Store::open(disk.path()).unwrap();
    let fs_type = nix::sys::statfs::statfs(disk.path())
        .unwrap()
        .filesystem_type();
    assert_eq!(on_disk.durable(), fs_type != nix::sys::statfs::TMPFS_MAGIC);
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        let is_tmpfs = nix::sys::statfs::statfs(shm.path())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::TMPFS_MAGIC;
        assert_eq!(Store::open(shm.path()).unwrap().durable(), !is_tmpfs);
    }
}

#[test]
fn survey_lists_each_record_once_with_its_volume_and_an_unlocked_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let plain = key("rexray", "pgdata");
    let long = key("rexray", &format!("{}z", "n".repeat(254)));
    let other = key("local", "cache");
    for k in [&plain, &long, &other] {
        store.lock(k).unwrap().save(&record(k, &["c"])).unwrap();
    }
    // A corrupt record: listed (so recovery reports it under the lock), with no snapshot.
    let broken = key("rexray", "broken");
    let g = store.lock(&broken).unwrap();
    fs::write(g.path(), b"{\"version\":").unwrap();
    // A record copied under another volume's name: no snapshot either.
    let copy = key("rexray", "copy");
    let gc = store.lock(&copy).unwrap();
    fs::copy(store.lock(&plain).unwrap().path(), gc.path()).unwrap();
    // Set-aside records and temp files are not records.
    let rexray = dir.path().join("volumes/rexray");
    fs::write(rexray.join("old.json.corrupt.1"), b"x").unwrap();
    fs::write(rexray.join(".pgdata.json.tmp"), b"x").unwrap();

    let surveyed: Vec<_> = store
        .survey()
        .unwrap()
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    let keys: Vec<String> = surveyed.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            other.to_string(),
            broken.to_string(),
            copy.to_string(),
            long.to_string(),
            plain.to_string()
        ],
        "driver order, then file name order"
    );
    let snapshot = |k: &VolumeKey| surveyed.iter().find(|s| &s.key == k).unwrap().snapshot();
    assert_eq!(snapshot(&plain), Some(record(&plain, &["c"])));
    assert_eq!(snapshot(&long), Some(record(&long, &["c"])));
    assert_eq!(snapshot(&broken), None);
    assert_eq!(snapshot(&copy), None);
    // The snapshot is read when asked for: a record removed since the survey has none.
    store.lock(&other).unwrap().remove().unwrap();
    assert_eq!(snapshot(&other), None);
}
