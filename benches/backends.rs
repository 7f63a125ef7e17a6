//! One mount+unmount round trip of an existing volume, four ways, against one in-process test
//! plugin that answers at once:
//! - the floor: the same three requests (Get, Mount, Unmount) as bare HTTP on a kept-alive
//!   connection of the same socket;
//! - through the plugin backend (what the module does), warm and cold (a new backend each time:
//!   discovery, connect and activation first);
//! - through the dvdcli backend with a stand-in dvdcli that makes the same calls to the same
//!   plugin with `curl --unix-socket` (a process per call, as with the real dvdcli);
//! - through the dvdcli backend with a stand-in that only prints a path (the process cost alone).
//!
//! Run: `cargo bench --bench backends`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::backend::dvdcli::DvdcliBackend;
use mesos_dvdi::backend::plugin::http::Client;
use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend};
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
        read_only: false,
        csi: None,
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
    let sock = dir.path().join("bench.sock");
    native.mount(&req).unwrap();
    native.unmount(&name, &id).unwrap();
    let raw = Client::new(PluginAddr::Unix(sock.clone()));
    let t = Duration::from_secs(30);
    c.bench_function("raw HTTP floor: get+mount+unmount", |b| {
        b.iter(|| {
            raw.post("/VolumeDriver.Get", br#"{"Name":"bench"}"#, t)
                .unwrap();
            raw.post(
                "/VolumeDriver.Mount",
                br#"{"Name":"bench","ID":"bench-1"}"#,
                t,
            )
            .unwrap();
            raw.post(
                "/VolumeDriver.Unmount",
                br#"{"Name":"bench","ID":"bench-1"}"#,
                t,
            )
            .unwrap();
        })
    });

    c.bench_function("plugin: mount+unmount", |b| {
        b.iter(|| {
            native.mount(&req).unwrap();
            native.unmount(&name, &id).unwrap();
        })
    });

    // The first mount of a driver after the agent starts: discovery, connect, Plugin.Activate,
    // then the same three requests, through a new backend each time.
    let driver = DriverName::new("bench").unwrap();
    let dirs = [dir.path().to_owned()];
    c.bench_function("plugin, cold: discover+activate+mount+unmount", |b| {
        b.iter(|| {
            let cold = PluginBackend::discover(&driver, &dirs, timeouts).unwrap();
            cold.mount(&req).unwrap();
            cold.unmount(&name, &id).unwrap();
        })
    });

    // A dvdcli stand-in that speaks to the same plugin, as the real one does.
    let curl = dir.path().join("dvdcli-curl");
    fs::write(
        &curl,
        format!(
            "#!/bin/sh\nS={sock}\npost() {{ curl -s --unix-socket $S -X POST -d \"$2\" http://plugin/VolumeDriver.$1; }}\ncase $1 in\n  mount) post Get '{{\"Name\":\"bench\"}}' >/dev/null; post Mount '{{\"Name\":\"bench\",\"ID\":\"dvdcli\"}}' | sed 's/.*\"Mountpoint\":\"\\([^\"]*\\)\".*/\\1/';;\n  unmount) post Unmount '{{\"Name\":\"bench\",\"ID\":\"dvdcli\"}}' >/dev/null;;\nesac\n",
            sock = sock.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&curl, fs::Permissions::from_mode(0o755)).unwrap();
    let via_curl = DvdcliBackend::new(curl, DriverName::new("bench").unwrap(), timeouts);
    assert!(via_curl.mount(&req).unwrap().ends_with("bench"));
    via_curl.unmount(&name, &id).unwrap();
    c.bench_function("dvdcli (curl to the same plugin): mount+unmount", |b| {
        b.iter(|| {
            via_curl.mount(&req).unwrap();
            via_curl.unmount(&name, &id).unwrap();
        })
    });

    let program = dir.path().join("dvdcli");
    fs::write(&program, "#!/bin/sh\necho /mnt/bench\n").unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let dvdcli = DvdcliBackend::new(program, DriverName::new("bench").unwrap(), timeouts);
    c.bench_function("dvdcli (prints a path): mount+unmount", |b| {
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
