//! What the agent's endpoints serve and its metrics count: the core's status, health and counters,
//! on a real isolator with the production backends.

mod support;

use std::fs;
use std::sync::Arc;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::isolator::Isolator;
use mesos_dvdi::metrics::{Counted, Levels, Metrics, NAMES};
use mesos_dvdi::mount::Host;
use mesos_dvdi::state::Owner;
use mesos_dvdi::status;
use support::isolator::Fixture;

/// An isolator whose backend calls are counted in `metrics`.
fn counted(fx: &Fixture, metrics: &Arc<Metrics>) -> Isolator {
    let registry = Registry::new(fx.config.clone(), Arc::new(Host));
    fx.isolator_with(Arc::new(Counted::new(
        Arc::new(registry),
        Arc::clone(metrics),
    )))
}

fn value(metrics: &Metrics, iso: &Isolator, name: &str) -> u64 {
    metrics
        .snapshot(iso.usage())
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, v)| v)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn health(fx: &Fixture, iso: &Isolator, recent: &[String]) -> (bool, serde_json::Value) {
    let rows = status::rows(iso.store(), &fx.config.legacy_checkpoint).unwrap();
    let h = status::health(
        &rows,
        recent,
        iso.coordinator().map(|c| c.status()).as_ref(),
    );
    (h.ok, serde_json::from_str(&h.json).unwrap())
}

#[test]
fn backend_calls_and_failures_are_counted_and_gauges_follow_the_isolator() {
    let fx = Fixture::new();
    let metrics = Arc::new(Metrics::default());
    let iso = counted(&fx, &metrics);
    let env = [("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c1", Owner::Mesos, &fx.input("c1", &env, false))
        .unwrap();
    iso.prepare("c2", Owner::Mesos, &fx.input("c2", &env, false))
        .unwrap();
    // One mount for two containers.
    assert_eq!(value(&metrics, &iso, "dvdi/backend_calls"), 1);
    assert_eq!(
        iso.usage(),
        Levels {
            volumes_mounted: 1,
            containers_using_volumes: 2
        }
    );
    // A driver no plugin answers for: the failed lookup counts as a failed call.
    let missing = [
        ("DVDI_VOLUME_DRIVER", "nosuchplugin"),
        ("DVDI_VOLUME_NAME", "w"),
    ];
    iso.prepare("c3", Owner::Mesos, &fx.input("c3", &missing, false))
        .unwrap_err();
    assert_eq!(value(&metrics, &iso, "dvdi/backend_calls"), 2);
    assert_eq!(value(&metrics, &iso, "dvdi/backend_call_failures"), 1);
    iso.cleanup("c1").unwrap();
    iso.cleanup("c2").unwrap();
    assert_eq!(
        value(&metrics, &iso, "dvdi/backend_calls"),
        3,
        "the unmount"
    );
    assert_eq!(iso.usage(), Levels::default());
}

#[test]
fn every_metric_is_named_under_dvdi_and_counts_what_it_says() {
    let fx = Fixture::new();
    let metrics = Metrics::default();
    let iso = fx.isolator();
    metrics.prepared(true);
    metrics.prepared(false);
    metrics.cleaned_up(None);
    metrics.cleaned_up(Some("volume \"v\": unmount failed".to_owned()));
    metrics.recovered(&["a".to_owned(), "b".to_owned()]);
    metrics.fenced("c9", "volume \"v\" (driver \"nfs\"): lease lost");
    let snap = metrics.snapshot(iso.usage());
    assert_eq!(snap.len(), NAMES.len());
    assert!(snap.iter().all(|(n, _, _)| n.starts_with("dvdi/")));
    for (name, want) in [
        ("dvdi/prepares", 2),
        ("dvdi/prepare_failures", 1),
        ("dvdi/cleanups", 2),
        ("dvdi/cleanup_failures", 1),
        ("dvdi/recover_errors", 2),
        ("dvdi/containers_fenced", 1),
    ] {
        assert_eq!(value(&metrics, &iso, name), want, "{name}");
    }
    assert_eq!(metrics.recent_errors().len(), 4);
    assert!(metrics.recent_errors()[3].starts_with("fenced container c9: volume"));
    assert!(metrics.recent_errors()[1].starts_with("recover: a"));
}

#[test]
fn health_names_unreadable_records_legacy_files_and_failing_volumes_and_recovers() {
    let mut fx = Fixture::new();
    let legacy = fx.root().join("dvdimounts.pb");
    fx.config.legacy_checkpoint = vec![legacy.clone()];
    let iso = fx.isolator();
    let env = [("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    let (ok, json) = health(&fx, &iso, &[]);
    assert!(ok, "{json}");

    // A failed backend call kept on the record, a corrupt record, a legacy file that cannot be
    // parsed.
    let guard = iso
        .store()
        .lock(&mesos_dvdi::spec::VolumeKey {
            driver: "local".parse().unwrap(),
            name: "v".parse().unwrap(),
        })
        .unwrap();
    let mut record = guard.load().unwrap().unwrap();
    record.last_error = Some("plugin unmount failed".to_owned());
    guard.save(&record).unwrap();
    drop(guard);
    let corrupt = fx.config.work_dir.join("volumes/local/w.json");
    fs::write(&corrupt, b"{ broken").unwrap();
    fs::write(&legacy, b"garbage").unwrap();

    let (ok, json) = health(&fx, &iso, &["recover: something".to_owned()]);
    assert!(!ok, "{json}");
    assert_eq!(json["failing"][0]["name"], "v", "{json}");
    assert_eq!(
        json["failing"][0]["error"], "plugin unmount failed",
        "{json}"
    );
    let unreadable: Vec<&str> = json["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        unreadable,
        [corrupt.display().to_string(), legacy.display().to_string()],
        "{json}"
    );
    assert_eq!(json["recent_errors"][0], "recover: something");

    // Once the causes are gone, healthy again (recent problems alone do not make it unhealthy).
    fs::remove_file(&corrupt).unwrap();
    fs::remove_file(&legacy).unwrap();
    iso.cleanup("c").unwrap();
    let (ok, json) = health(&fx, &iso, &["recover: something".to_owned()]);
    assert!(ok, "{json}");
}

#[test]
fn status_json_is_the_clis() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [("DVDI_VOLUME_DRIVER", "local"), ("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    // No legacy checkpoint on either side ('' is none), so the host's files never matter.
    let out = fx
        .dvdi()
        .args(["--legacy-checkpoint", "", "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::isolator::text(&out));
    let served = status::status_json(iso.store(), &fx.config.legacy_checkpoint).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{served}\n")
    );
    let rows: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(rows[0]["record"]["name"], "v");
    assert!(rows[0]["error"].is_null());
}

#[test]
fn health_says_when_leases_cannot_be_had_and_shows_the_coordination_state() {
    use mesos_dvdi::coord::recording::{RecordingCluster, RecordingCoordinator};
    let fx = Fixture::new();
    let cluster = RecordingCluster::new();
    let iso = fx
        .isolator()
        .with_coordinator(Arc::new(RecordingCoordinator::new(&cluster, "agent-a")));
    let (ok, json) = health(&fx, &iso, &[]);
    assert!(ok, "{json}");
    assert_eq!(json["coordination"]["agent"], "agent-a", "{json}");
    assert_eq!(json["coordination"]["connected"], true, "{json}");
    cluster.set_down(true);
    let (ok, json) = health(&fx, &iso, &[]);
    assert!(!ok, "{json}");
    assert_eq!(json["coordination"]["connected"], false, "{json}");
    // Without coordination there is nothing to say.
    let (ok, json) = health(&fx, &fx.isolator(), &[]);
    assert!(ok && json["coordination"].is_null(), "{json}");
}
