//! A CSI volume's prepare+cleanup against the Docker plugin path, in one run: the same isolator,
//! one container, one volume, each plugin answering at once from inside the process.
//!
//! - `docker plugin`: the in-process Docker volume plugin (HTTP/1.1 on a unix socket): Get, Create
//!   on first use, Mount, Unmount.
//! - `csi plugin`: the in-process CSI test plugin (gRPC over HTTP/2 on a unix socket), told not
//!   to bind-mount (it only makes the target directory): CreateVolume, NodeStage, NodePublish,
//!   NodeUnpublish, NodeUnstage, each recorded before and after in the volume's CSI record.
//!
//! Run: `cargo bench --bench csi` (as root; work directories on `/run`'s tmpfs, as in production).

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::config::Config;
use mesos_dvdi::isolator::{ContainerInput, Isolator};
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::Owner;

#[path = "../tests/support/plugin.rs"]
#[allow(dead_code)]
mod plugin;

#[path = "../tests/support/csi.rs"]
#[allow(dead_code)]
mod csi;

fn isolator(config: Config) -> Isolator {
    let registry = Registry::new(config.clone(), Arc::new(Host));
    Isolator::new(config, Arc::new(registry)).unwrap()
}

fn input(dir: &std::path::Path, driver: &str) -> ContainerInput {
    let sandbox = dir.join("sandbox");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    ContainerInput {
        env: [
            ("DVDI_VOLUME_DRIVER", driver),
            ("DVDI_VOLUME_NAME", "pgdata"),
            ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect(),
        sandbox,
        rootfs: Some(rootfs),
        ..ContainerInput::default()
    }
}

fn csi_vs_docker(c: &mut Criterion) {
    // On tmpfs as in production (/run), not /dev/shm: mount points under /dev are refused.
    let dir = tempfile::tempdir_in("/run").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let _docker = plugin::TestPlugin::unix(
        &plugins.join("memory.sock"),
        plugin::memory_plugin(dir.path().join("vols")),
    );
    let csi = csi::CsiPlugin::start(
        &dir.path().join("csi.sock"),
        &dir.path().join("csi-volumes"),
        csi::Options {
            mount: false,
            ..csi::Options::default()
        },
    );
    let csi_dir = dir.path().join("csi-plugins");
    csi.write_config(&csi_dir, "hostpath.csi.k8s.io");
    let config = Config {
        work_dir: dir.path().join("work"),
        plugin_dirs: vec![plugins],
        default_driver: DriverName::new("memory").unwrap(),
        legacy_checkpoint: Vec::new(),
        csi_plugins: mesos_dvdi::csi::load_dir(&csi_dir).unwrap(),
        ..Config::default()
    };
    let iso = isolator(config);
    let mut group = c.benchmark_group("prepare+cleanup (1 volume)");
    for (label, driver) in [
        ("docker plugin", "memory"),
        ("csi plugin", "hostpath.csi.k8s.io"),
    ] {
        let input = input(dir.path(), driver);
        let mut n = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                n += 1;
                let id = format!("c{n}");
                iso.prepare(&id, Owner::Mesos, &input).unwrap();
                iso.cleanup(&id).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = csi_vs_docker
}
criterion_main!(benches);
