//! The module's calls on the core's bounded pool, against a plugin that holds the calls a test
//! picks (a test double, `support::gated`): a call that cannot start before its deadline fails
//! saying the pool is full and why, and calls for other volumes go on while one volume's calls
//! hang, within the bound. No test sleeps or measures time: each waits for a held call to
//! arrive at the plugin, or for an answer.

mod support;

use std::time::Duration;

use mesos_dvdi::calls::CallError;
use mesos_dvdi::error::render_chain;
use mesos_dvdi::pool::Refused;
use mesos_dvdi::spec::DriverName;
use support::calls::{calls, cleanup, prepare};
use support::gated::Gated;
use support::isolator::Fixture;

fn fixture(call_threads: usize) -> Fixture {
    let mut fx = Fixture::new();
    fx.config.call_threads = call_threads;
    fx.config.default_driver = DriverName::new("held").unwrap();
    fx
}

fn plugin(fx: &Fixture, hold: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Gated {
    Gated::start(
        &fx.root().join("plugins"),
        "held",
        fx.root().join("volumes"),
        move |req| hold(&req.path, req.body["Name"].as_str().unwrap_or("")),
    )
}

#[test]
fn a_call_that_cannot_start_before_its_deadline_fails_saying_the_pool_is_full_and_why() {
    let mut fx = fixture(1);
    // A prepare may wait 1 s for a thread; the cleanup below holds the only one far longer (until
    // the plugin answers its Unmount, which the test allows only after the prepare is refused).
    fx.config.mount_timeout = Duration::from_secs(1);
    let plugin = plugin(&fx, |path, _| path == "/VolumeDriver.Unmount");
    let calls = calls(&fx);
    prepare(&calls, &fx, "c1", "stuck").recv().unwrap().unwrap();
    let cleaned = cleanup(&calls, "c1");
    assert_eq!(plugin.next_held(), "/VolumeDriver.Unmount stuck");

    let refused = prepare(&calls, &fx, "c2", "other")
        .recv()
        .unwrap()
        .unwrap_err();
    plugin.open();
    cleaned.recv().unwrap().unwrap();

    let text = render_chain(&refused);
    assert!(
        matches!(
            &refused,
            CallError::NotStarted { source: Refused::Full(full), .. }
                if full.threads == 1 && full.running == 1 && full.waiting == 0
        ),
        "{refused:?}"
    );
    assert!(
        text.starts_with(
            "mesos-dvdi prepare of container c2: not started within 1 s (mount_timeout_secs): \
             the pool is full: all 1 call threads are busy, 1 call already running, the oldest \
             for "
        ),
        "{text}"
    );
    assert!(
        text.contains(
            " (cleanup of container c1, in Unmount of volume \"stuck\" via driver \"held\" for "
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "; raise call_threads, or fix the plugin or storage the oldest call waits for"
        ),
        "{text}"
    );
    // It never ran: nothing was recorded for its volume, and it counts as a failed prepare.
    assert!(!fx.recorded("held", "other"));
    let metrics = calls.metrics_now();
    let value = |name: &str| metrics.iter().find(|m| m.0 == name).unwrap().2;
    assert_eq!(
        (value("dvdi/prepares"), value("dvdi/prepare_failures")),
        (2, 1)
    );
    assert_eq!(
        (value("dvdi/calls_refused"), value("dvdi/calls_waiting")),
        (1, 0)
    );
}

#[test]
fn calls_for_other_volumes_run_while_one_volumes_calls_hang() {
    let fx = fixture(4);
    let plugin = plugin(&fx, |path, name| {
        path == "/VolumeDriver.Mount" && name == "stuck"
    });
    let calls = calls(&fx);
    let stuck: Vec<_> = (1..=3)
        .map(|i| prepare(&calls, &fx, &format!("s{i}"), "stuck"))
        .collect();
    assert_eq!(plugin.next_held(), "/VolumeDriver.Mount stuck");

    // s1 waits for the plugin and s2, s3 for s1 (the volume's lock), a call thread each: the
    // fourth thread serves another volume.
    let plan = prepare(&calls, &fx, "f1", "free").recv().unwrap().unwrap();
    assert_eq!(plan.volumes.len(), 1);
    assert!(
        stuck.iter().all(|answer| answer.try_recv().is_err()),
        "the stuck volume's prepares were answered while its Mount was held"
    );
    plugin.open();
    for answer in stuck {
        answer.recv().unwrap().unwrap();
    }
    for id in ["s1", "s2", "s3", "f1"] {
        cleanup(&calls, id).recv().unwrap().unwrap();
    }
    assert!(!fx.recorded("held", "stuck") && !fx.recorded("held", "free"));
}
