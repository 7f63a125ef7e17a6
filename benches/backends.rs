//! One mount+unmount round trip through the plugin client (against an in-process test plugin
//! that answers at once) and through the dvdcli backend (with a trivial dvdcli stand-in).
//!
//! Run: `cargo bench --bench backends`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::backend::dvdcli::DvdcliBackend;
use mesos_dvdi::backend::plugin::PluginBackend;
use mesos_dvdi::backend::{Backend, MountId, MountRequest, Timeouts};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

#[path = "../tests/support/plugin.rs"]
#[allow(dead_code)]
mod plugin;

fn round_trips(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
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

    let _server = plugin::TestPlugin::unix(
        &dir.path().join("bench.sock"),
        plugin::memory_plugin(dir.path().join("vols")),
    );
    let native = PluginBackend::discover(
        &DriverName::new("bench").unwrap(),
        &[dir.path().to_owned()],
        timeouts,
    )
    .unwrap();
    c.bench_function("plugin: mount+unmount", |b| {
        b.iter(|| {
            native.mount(&req).unwrap();
            native.unmount(&name, &id).unwrap();
        })
    });

    let program = dir.path().join("dvdcli");
    fs::write(&program, "#!/bin/sh\necho /mnt/bench\n").unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let dvdcli = DvdcliBackend::new(program, DriverName::new("bench").unwrap(), timeouts);
    c.bench_function("dvdcli: mount+unmount", |b| {
        b.iter(|| {
            dvdcli.mount(&req).unwrap();
            dvdcli.unmount(&name, &id).unwrap();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = round_trips
}
criterion_main!(benches);
