//! One mount+unmount round trip through [`PluginBackend`] against an in-process test plugin
//! (tests/support/plugin.rs) that answers at once, so the figure is the client's own cost plus
//! the unix-socket round trips:
//! - warm: an existing volume on an activated backend with a kept-alive connection (Get, Mount,
//!   Unmount: three requests) — every mount after the first;
//! - cold: the same through a new backend each time (discovery, connect, Plugin.Activate, then
//!   the three requests) — the first mount of a driver after the agent starts.
//!
//! Run: `cargo bench --bench plugin_roundtrip`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::backend::plugin::PluginBackend;
use mesos_dvdi::backend::{Backend, MountId, MountRequest, Timeouts};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

#[path = "../tests/support/plugin.rs"]
#[allow(dead_code)]
mod plugin;

fn round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let _server = plugin::TestPlugin::unix(
        &dir.path().join("bench.sock"),
        plugin::memory_plugin(dir.path().join("vols")),
    );
    let driver = DriverName::new("bench").unwrap();
    let dirs = [dir.path().to_owned()];
    let timeouts = Timeouts {
        mount: Duration::from_secs(30),
        unmount: Duration::from_secs(30),
    };
    let name = VolumeName::new("bench").unwrap();
    let opts = VolumeOpts::empty();
    let id = MountId("bench-1".into());
    let req = MountRequest {
        name: &name,
        opts: &opts,
        explicit_create: false,
        id: &id,
    };
    let open = || PluginBackend::discover(&driver, &dirs, timeouts).unwrap();
    let once = |b: &PluginBackend| {
        b.mount(&req).unwrap();
        b.unmount(&name, &id).unwrap();
    };

    let warm = open();
    // Creates the volume and activates: what follows is the steady state.
    once(&warm);
    c.bench_function("plugin_roundtrip/warm: mount+unmount", |b| {
        b.iter(|| once(&warm))
    });
    c.bench_function(
        "plugin_roundtrip/cold: discover+activate+mount+unmount",
        |b| b.iter(|| once(&open())),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = round_trip
}
criterion_main!(benches);
