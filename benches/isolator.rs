//! The isolator core's own cost, and how it behaves against a slow plugin.
//!
//! - `prepare+cleanup (1 volume)`: one container, one volume, with an instant backend (a test
//!   double that returns a directory at once), so the figure is the core's overhead: resolution,
//!   target verification, four checkpoint changes, flocks. Again with a volume never used
//!   before, whose record file is made first.
//! - `floor: ...`: file system operations alone, on the same tmpfs: replacing a record whole (the
//!   first layout's cost of one change) and opening a file.
//! - `recover`: a fresh isolator recovering N checkpointed references (N volumes, one user each,
//!   all alive, the worst case for per-volume files), and its floor: 10,000 reads of one record.
//! - `concurrent prepares vs 100 ms plugin`: N containers, each with its own volume, prepared at
//!   once against an in-process plugin whose Mount takes 100 ms; wall time until all are done.
//!
//! Run: `cargo bench --bench isolator` (as root; work directories on tmpfs, as in production).

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::config::Config;
use mesos_dvdi::isolator::{ContainerInput, Isolator, KnownContainer};
use mesos_dvdi::mount::Host;
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::{ContainerId, Owner};

#[path = "../tests/support/plugin.rs"]
#[allow(dead_code)]
mod plugin;

#[path = "support/instant.rs"]
mod instant;

use instant::{input, instant_isolator, scratch};

fn prepare_cleanup(c: &mut Criterion) {
    let dir = scratch();
    let iso = instant_isolator(dir.path());
    let input = input(dir.path(), "pgdata", true);
    let mut n = 0u64;
    c.bench_function("prepare+cleanup (1 volume)", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("c{n}");
            iso.prepare(&id, Owner::Mesos, &input).unwrap();
            iso.cleanup(&id).unwrap();
        })
    });
    // A volume's file outlives its record for the volume's next use: a volume never used before
    // costs the file's creation too.
    let mut fresh = input.clone();
    c.bench_function("prepare+cleanup (1 volume, a new one each time)", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("c{n}");
            fresh.env[0].1 = format!("new{n}").into_bytes();
            iso.prepare(&id, Owner::Mesos, &fresh).unwrap();
            iso.cleanup(&id).unwrap();
        })
    });
}

/// What the file system itself costs for the steps prepare+cleanup is made of, on the same tmpfs:
/// the floor under the first figure.
fn floors(c: &mut Criterion) {
    use std::io::Write;
    let dir = scratch();
    let record = dir.path().join("v.json");
    let tmp = dir.path().join(".v.json.tmp");
    let body = vec![b'x'; 400];
    std::fs::write(&record, &body).unwrap();
    c.bench_function(
        "floor: replace a record (create temp, write, close, rename)",
        |b| {
            b.iter(|| {
                let mut f = std::fs::File::create(&tmp).unwrap();
                f.write_all(&body).unwrap();
                drop(f);
                std::fs::rename(&tmp, &record).unwrap();
            })
        },
    );
    c.bench_function("floor: open and close an existing file", |b| {
        b.iter(|| drop(std::fs::File::open(&record).unwrap()))
    });
}

/// A checkpoint of `refs` containers on `volumes` volumes (container `i` on volume `i % volumes`).
fn populate(refs: usize, volumes: usize) -> (tempfile::TempDir, Vec<KnownContainer>) {
    let dir = scratch();
    let iso = instant_isolator(dir.path());
    let input = input(dir.path(), "x", false);
    let mut known = Vec::with_capacity(refs);
    for i in 0..refs {
        let mut inp = input.clone();
        inp.env = vec![(
            b"DVDI_VOLUME_NAME".to_vec(),
            format!("vol{}", i % volumes).into_bytes(),
        )];
        let id = format!("c{i}");
        iso.prepare(&id, Owner::Mesos, &inp).unwrap();
        known.push(KnownContainer {
            id: ContainerId::new(id).unwrap(),
        });
    }
    (dir, known)
}

fn recover(c: &mut Criterion) {
    let mut group = c.benchmark_group("recover");
    group.sample_size(10);
    for (refs, volumes) in [
        (1_000usize, 1_000usize),
        (10_000, 10_000),
        (100_000, 100_000),
        (10_000, 1_000),
    ] {
        let (dir, known) = populate(refs, volumes);
        let label = format!("{refs} refs on {volumes} volumes");
        group.bench_with_input(BenchmarkId::from_parameter(label), &refs, |b, _| {
            b.iter(|| {
                let fresh = instant_isolator(dir.path());
                let report = fresh.recover(&known, &[]).unwrap();
                assert_eq!(report.kept.len(), volumes);
            })
        });
        if volumes == 10_000 {
            // What recovering 10,000 volumes cannot do without: reading a record 10,000 times
            // (open, read, close; here the same one), on the same tmpfs.
            let record = dir.path().join("work/volumes/rexray/vol0.json");
            group.bench_function(
                "floor: 10000 reads of one record (open, read, close)",
                |b| {
                    use std::io::Read;
                    let mut buf = vec![0u8; 4096];
                    b.iter(|| {
                        for _ in 0..10_000 {
                            let mut f = std::fs::File::open(&record).unwrap();
                            assert!(f.read(&mut buf).unwrap() > 0);
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

fn concurrent_slow_plugin(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent prepares vs 100 ms plugin");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let dir = scratch();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // Not under /dev/shm: a plugin's mount point under /dev is refused.
    let vols = tempfile::tempdir().unwrap();
    let fast = plugin::memory_plugin(vols.path().join("vols"));
    let _server = plugin::TestPlugin::unix(&plugins.join("slow.sock"), move |req| {
        if req.path == "/VolumeDriver.Mount" {
            // The plugin's own work (an attach), not synchronisation.
            std::thread::sleep(Duration::from_millis(100));
        }
        fast(req)
    });
    let config = Config {
        work_dir: dir.path().join("work"),
        plugin_dirs: vec![plugins.clone()],
        default_driver: DriverName::new("slow").unwrap(),
        ..Config::default()
    };
    let iso = Isolator::new(
        config.clone(),
        Arc::new(Registry::new(config, Arc::new(Host))),
    )
    .unwrap();
    let inputs: Vec<ContainerInput> = (0..128)
        .map(|i| input(dir.path(), &format!("v{i}"), false))
        .collect();
    let mut round = 0u64;
    for n in [1usize, 16, 128] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let ids: Vec<String> = (0..n).map(|i| format!("r{round}-{i}")).collect();
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for (id, inp) in ids.iter().zip(&inputs) {
                            let iso = &iso;
                            s.spawn(move || iso.prepare(id, Owner::Mesos, inp).unwrap());
                        }
                    });
                    total += start.elapsed();
                    for id in &ids {
                        iso.cleanup(id).unwrap();
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    prepare_cleanup,
    floors,
    recover,
    concurrent_slow_plugin
);
criterion_main!(benches);
