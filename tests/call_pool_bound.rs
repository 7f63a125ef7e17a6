//! The bound on the core's call threads, counted in /proc/self/task by their names (`dvdi-call`,
//! `dvdi-call-part`, `dvdi-call-timer`) against a plugin that holds every Mount until the test
//! lets it answer (a test double, `support::gated`). One test in its own binary: no other pool
//! shares the process while it counts.

mod support;

use mesos_dvdi::pool::PoolStats;
use mesos_dvdi::spec::DriverName;
use support::calls::{calls, cleanup, prepare, prepare_env};
use support::gated::Gated;
use support::isolator::Fixture;

/// Threads of the core's call pool in this process now.
fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("dvdi-call"))
        .count()
}

#[test]
fn a_burst_against_a_plugin_that_never_answers_holds_no_more_threads_than_the_bound() {
    let mut fx = Fixture::new();
    fx.config.call_threads = 4;
    fx.config.default_driver = DriverName::new("held").unwrap();
    let plugins = fx.root().join("plugins");
    let mounts = |path: &str| path == "/VolumeDriver.Mount";
    let held = Gated::start(&plugins, "held", fx.root().join("v1"), move |r| {
        mounts(&r.path)
    });
    let wide = Gated::start(&plugins, "wide", fx.root().join("v2"), move |r| {
        mounts(&r.path)
    });
    let calls = calls(&fx);
    assert_eq!(pool_threads(), 0);

    // One prepare of six volumes: three parts get a thread each beside the call's own, the
    // bound's four; the other two wait their turn on the call's thread.
    let vars = ["", "1", "2", "3", "4", "5"].map(|i| {
        (
            [
                format!("DVDI_VOLUME_NAME{i}"),
                format!("DVDI_VOLUME_DRIVER{i}"),
            ],
            format!("w{i}"),
        )
    });
    let env: Vec<(&str, &str)> = vars
        .iter()
        .flat_map(|([name, driver], volume)| {
            [(name.as_str(), volume.as_str()), (driver.as_str(), "wide")]
        })
        .collect();
    let fanned = prepare_env(&calls, &fx, "fan", &env);
    for _ in 0..4 {
        assert!(wide.next_held().starts_with("/VolumeDriver.Mount w"));
    }
    assert_eq!(pool_threads(), 4, "one call and three parts");

    // A burst while every thread is held: it all waits, with one thread more, the timekeeper.
    let burst: Vec<_> = (0..200)
        .map(|i| prepare(&calls, &fx, &format!("c{i}"), &format!("v{i}")))
        .collect();
    assert_eq!(
        calls.pool_stats(),
        PoolStats {
            running: 1,
            waiting: 200,
            refused: 0
        }
    );
    assert_eq!(pool_threads(), 4 + 1, "the bound and the timekeeper");

    // The wide prepare ends; the threads its parts held take the burst, four calls at a time.
    wide.open();
    assert_eq!(fanned.recv().unwrap().unwrap().volumes.len(), 6);
    for _ in 0..4 {
        assert!(held.next_held().starts_with("/VolumeDriver.Mount v"));
    }
    assert_eq!(
        calls.pool_stats(),
        PoolStats {
            running: 4,
            waiting: 196,
            refused: 0
        }
    );
    held.open();
    for answer in burst {
        answer.recv().unwrap().unwrap();
    }
    for id in (0..200).map(|i| format!("c{i}")).chain(["fan".to_owned()]) {
        cleanup(&calls, &id).recv().unwrap().unwrap();
    }
}
