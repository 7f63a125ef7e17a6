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
    assert_eq!(files_in(&driver_dir), ["pgdata.json"]);
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
    let lock_file = dir.path().join("volumes/local/shared.json");
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

/// The file's bytes after a write that went from `before` to `after` was cut after byte `cut`
/// of the file: what was written up to there, what was there before from there on.
fn cut_write(before: &[u8], after: &[u8], cut: usize) -> Vec<u8> {
    let mut torn = after[..cut].to_vec();
    if before.len() > cut {
        torn.extend_from_slice(&before[cut..]);
    }
    torn
}

/// Plays `change` on a volume holding `start`, then cuts the file at every byte the change wrote:
/// the record must read as `start` until the change's last byte, as `end` after it, and a change
/// made on the cut file must read back.
fn assert_every_cut_reads_as_before(
    start: &[&str],
    change: impl Fn(&mesos_dvdi::state::VolumeGuard),
    end: Option<&[&str]>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("rexray", "torn");
    let g = store.lock(&k).unwrap();
    // Two changes first, so that both slots hold a record.
    g.save(&record(&k, &["earlier"])).unwrap();
    g.save(&record(&k, start)).unwrap();
    let path = g.path().to_owned();
    let before = fs::read(&path).unwrap();
    change(&g);
    drop(g);
    let after = fs::read(&path).unwrap();
    // The bytes the change wrote differ from those before from `first` to `last`.
    let first = before
        .iter()
        .zip(&after)
        .take_while(|(a, b)| a == b)
        .count();
    let last = if after.len() > before.len() {
        after.len()
    } else {
        after.len()
            - after
                .iter()
                .rev()
                .zip(before[..after.len()].iter().rev())
                .take_while(|(a, b)| a == b)
                .count()
    };
    assert!(first < last, "the change wrote nothing");
    for cut in first..=last {
        fs::write(&path, cut_write(&before, &after, cut)).unwrap();
        let g = store.lock(&k).unwrap();
        let expected = if cut == last {
            end.map(|e| record(&k, e))
        } else {
            Some(record(&k, start))
        };
        assert_eq!(g.load().unwrap(), expected, "cut at byte {cut}");
        g.save(&record(&k, &["next"])).unwrap();
        assert_eq!(
            g.load().unwrap(),
            Some(record(&k, &["next"])),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_change_cut_at_any_byte_reads_as_the_record_before_it() {
    assert_every_cut_reads_as_before(
        &["c1"],
        |g| g.save(&record(g.key(), &["c1", "c2"])).unwrap(),
        Some(&["c1", "c2"]),
    );
}

#[test]
fn a_removal_cut_at_any_byte_reads_as_the_record_before_it() {
    assert_every_cut_reads_as_before(&["c1"], |g| g.remove().unwrap(), None);
}

#[test]
fn a_record_that_outgrows_its_slots_is_made_anew_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("rexray", "big");
    let g = store.lock(&k).unwrap();
    g.save(&record(&k, &["c1"])).unwrap();
    let small = fs::metadata(g.path()).unwrap().len();
    let ids: Vec<String> = (0..40).map(|i| format!("container-{i:04}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    g.save(&record(&k, &ids)).unwrap();
    // Still the lock: another holder cannot take it while this guard lives.
    assert!(store.try_lock(&k).unwrap().is_none());
    drop(g);
    let g = store.lock(&k).unwrap();
    assert_eq!(g.load().unwrap(), Some(record(&k, &ids)));
    assert!(fs::metadata(g.path()).unwrap().len() > small);
    assert_eq!(files_in(&dir.path().join("volumes/rexray")), ["big.json"]);
}

#[test]
fn a_file_left_without_a_record_is_removed_by_the_next_holder_that_finds_it_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("local", "gone");
    let g = store.lock(&k).unwrap();
    g.save(&record(&k, &["c1"])).unwrap();
    g.remove().unwrap();
    drop(g);
    // Kept for the volume's next use...
    assert_eq!(files_in(&dir.path().join("volumes/local")), ["gone.json"]);
    assert!(store.scan().unwrap().is_empty());
    // ...until a holder finds it unused and writes nothing (recovery does that to each).
    let g = store.lock(&k).unwrap();
    assert_eq!(g.load().unwrap(), None);
    drop(g);
    assert!(files_in(&dir.path().join("volumes/local")).is_empty());
}

#[test]
fn a_waiter_for_a_file_that_was_removed_locks_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("local", "raced");
    let g = store.lock(&k).unwrap();
    assert_eq!(g.load().unwrap(), None);
    std::thread::scope(|s| {
        // Waits on the file `g` holds, which `g` removes as it lets go.
        let waiter = s.spawn(|| {
            let w = store.lock(&k).unwrap();
            w.save(&record(&k, &["w"])).unwrap();
        });
        while !flock_waiting(dir.path()) {
            std::thread::yield_now();
        }
        drop(g);
        waiter.join().unwrap();
    });
    let g = store.lock(&k).unwrap();
    assert_eq!(g.load().unwrap(), Some(record(&k, &["w"])));
}

/// Whether some flock of a file under `dir` has a waiter (`/proc/locks` marks waiters `->`).
fn flock_waiting(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> = fs::read_dir(dir.join("volumes/local"))
        .map(|d| d.map(|e| e.unwrap().metadata().unwrap().ino()).collect())
        .unwrap_or_default();
    fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
        l.contains("-> FLOCK")
            && inodes.iter().any(|ino| {
                l.split_whitespace()
                    .any(|f| f.ends_with(&format!(":{ino}")))
            })
    })
}

/// A record as mesos-dvdi wrote it before the slotted layout (its JSON, byte for byte, from
/// `dvdi run` of that version), with the lock file it kept beside it.
const FIRST_LAYOUT: &str = r#"{"version":1,"driver":"local","name":"pgdata","opts":{},"explicit_create":false,"mount_id":"mesos-dvdi-23367-18ee1ac4972cec9f-0","phase":"mounted","host_path":"/tmp/pf/w/local/pgdata","is_mount_point":false,"users":{"dvdi-run-23367-451482":{"target":"/tmp/pf/w/mnt","read_only":false,"owner":{"kind":"process","pid":23367,"start_time":451482}}}}"#;

#[test]
fn a_record_of_the_first_layout_is_read_then_converted_under_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let local = dir.path().join("volumes/local");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("pgdata.json"), FIRST_LAYOUT).unwrap();
    fs::write(local.join("pgdata.lock"), b"").unwrap();
    let expected: VolumeRecord = serde_json::from_str(FIRST_LAYOUT).unwrap();

    // Read as it is without the lock (`dvdi status` of an agent not yet recovered).
    let scanned = store.scan().unwrap();
    assert_eq!(scanned[0].record.as_ref().unwrap(), &expected);
    let surveyed = store.survey().unwrap();
    assert_eq!(surveyed.len(), 1);
    assert_eq!(
        surveyed[0].as_ref().unwrap().snapshot(),
        None,
        "converted under the lock only"
    );

    let g = store.lock(&key("local", "pgdata")).unwrap();
    assert_eq!(g.load().unwrap(), Some(expected.clone()));
    drop(g);
    assert_eq!(files_in(&local), ["pgdata.json"], "the old lock file stays");
    let bytes = fs::read(local.join("pgdata.json")).unwrap();
    assert!(bytes.starts_with(b"dvdi-checkpoint v2 "), "not converted");
    let g = store.lock(&key("local", "pgdata")).unwrap();
    assert_eq!(g.load().unwrap(), Some(expected.clone()));
    drop(g);
    let surveyed = store.survey().unwrap();
    assert_eq!(surveyed[0].as_ref().unwrap().snapshot(), Some(expected));
}

mod damaged {
    use super::*;
    use proptest::prelude::*;

    /// A volume's file holding `earlier`, then `later` (one in each slot), and the two records.
    fn two_slots(dir: &Path) -> (PathBuf, VolumeRecord, VolumeRecord) {
        let store = Store::open(dir).unwrap();
        let k = key("rexray", "damaged");
        let (earlier, later) = (record(&k, &["c1"]), record(&k, &["c1", "c2"]));
        let g = store.lock(&k).unwrap();
        g.save(&earlier).unwrap();
        g.save(&later).unwrap();
        (g.path().to_owned(), earlier, later)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Bytes changed anywhere in a record file read as one of the records it held, whole,
        /// or as corrupt: never as a record it did not hold, never as no record, never a panic.
        #[test]
        fn changed_bytes_read_as_a_record_the_file_held_or_as_corrupt(
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (path, earlier, later) = two_slots(dir.path());
            let mut bytes = fs::read(&path).unwrap();
            let len = bytes.len();
            for (at, mask) in flips {
                bytes[at % len] ^= mask;
            }
            fs::write(&path, &bytes).unwrap();
            let store = Store::open(dir.path()).unwrap();
            match store.lock(&key("rexray", "damaged")).unwrap().load() {
                Ok(Some(r)) => prop_assert!(r == later || r == earlier, "{r:?}"),
                Ok(None) => prop_assert!(false, "read as no record"),
                Err(StateError::Corrupt { .. } | StateError::UnknownVersion { .. }) => {}
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        /// Any bytes at all: read as a record, no record or an error, never a panic.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2200)) {
            let dir = tempfile::tempdir().unwrap();
            let (path, _, _) = two_slots(dir.path());
            fs::write(&path, &bytes).unwrap();
            let store = Store::open(dir.path()).unwrap();
            let _ = store.lock(&key("rexray", "damaged")).unwrap().load();
            let _ = store.scan().unwrap();
        }
    }
}
