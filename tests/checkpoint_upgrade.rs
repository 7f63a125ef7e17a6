//! An agent upgraded in place keeps its volumes: records that mesos-dvdi wrote before the slotted
//! checkpoint layout (a whole JSON file per volume, with a lock file beside it) are shown as they
//! are, then recovered and converted, and released like any other.

mod support;

use std::fs;

use mesos_dvdi::isolator::KnownContainer;
use mesos_dvdi::state::{ContainerId, Store};
use support::isolator::Fixture;

/// A `local` volume's record as the first layout kept it, byte for byte as that version wrote it
/// for a Mesos container (`{root}` stands for the local driver's root).
const PGDATA: &str = r#"{"version":1,"driver":"local","name":"pgdata","opts":{},"explicit_create":false,"mount_id":"mesos-dvdi-23367-18ee1ac4972cec9f-0","phase":"mounted","host_path":"{root}/pgdata","is_mount_point":false,"users":{"c1":{"target":null,"read_only":false,"owner":{"kind":"mesos"}}}}"#;

/// Another, whose container the agent no longer runs.
const OLD: &str = r#"{"version":1,"driver":"local","name":"old","opts":{},"explicit_create":false,"mount_id":"mesos-dvdi-23367-18ee1ac4972cec9f-1","phase":"mounted","host_path":"{root}/old","is_mount_point":false,"users":{"c2":{"target":null,"read_only":false,"owner":{"kind":"mesos"}}}}"#;

/// Lays the first layout's checkpoint of `records` (name, JSON) into the fixture's work dir.
fn first_layout(fx: &Fixture, records: &[(&str, &str)]) {
    let dir = fx.config.work_dir.join("volumes/local");
    fs::create_dir_all(&dir).unwrap();
    let root = fx.config.local_root.display().to_string();
    for (name, json) in records {
        fs::create_dir_all(fx.config.local_root.join(name)).unwrap();
        fs::write(
            dir.join(format!("{name}.json")),
            json.replace("{root}", &root),
        )
        .unwrap();
        fs::write(dir.join(format!("{name}.lock")), b"").unwrap();
    }
}

fn names_in(fx: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(fx.config.work_dir.join("volumes/local"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_agent_upgraded_in_place_keeps_its_volumes_and_releases_the_rest() {
    let fx = Fixture::new();
    first_layout(&fx, &[("pgdata", PGDATA), ("old", OLD)]);

    // What an operator sees before the agent recovers: the records as they are.
    let store = Store::open(&fx.config.work_dir).unwrap();
    let status = mesos_dvdi::status::status_json(&store, &[]).unwrap();
    assert!(
        status.contains("\"pgdata\"") && status.contains("\"c1\"") && status.contains("\"old\""),
        "{status}"
    );

    let iso = fx.isolator();
    let known = [KnownContainer {
        id: ContainerId::new("c1").unwrap(),
    }];
    let report = iso.recover(&known, &[]).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report
            .kept
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>(),
        ["pgdata"],
        "{report:?}"
    );
    assert_eq!(report.unmounted.len(), 1, "{report:?}");
    assert!(fx.recorded("local", "pgdata"));
    assert!(!fx.recorded("local", "old"));
    // Converted, without the old lock files (the one released is left holding no record, for
    // the volume's next use).
    assert_eq!(names_in(&fx), ["old.json", "pgdata.json"]);
    let bytes = fs::read(fx.config.work_dir.join("volumes/local/pgdata.json")).unwrap();
    assert!(bytes.starts_with(b"dvdi-checkpoint v2 "), "not converted");
    assert_eq!(iso.usage().containers_using_volumes, 1);

    // The container the agent still runs is released as any other.
    iso.cleanup("c1").unwrap();
    assert!(!fx.recorded("local", "pgdata"));
    // The next recover removes the files no volume uses.
    fx.isolator().recover(&[], &[]).unwrap();
    assert!(names_in(&fx).is_empty(), "{:?}", names_in(&fx));
}
