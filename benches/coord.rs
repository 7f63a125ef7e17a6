//! ZooKeeper leases against a local server (Debian's package, started here on a loopback port):
//! - the floor: one bare `create` + `delete` of an ephemeral node on a raw client session (the
//!   two writes every lease needs);
//! - a read-write lease, acquire + release, through the coordinator (command to its thread,
//!   children listed and read, node created; then listed, read and deleted);
//! - the same for a read-only lease.
//!
//! Run: `cargo bench --bench coord`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::coord::zk::ZkCoordinator;
use mesos_dvdi::coord::{Coordinator, LeaseMode};
use mesos_dvdi::spec::{DriverName, VolumeKey, VolumeName};

#[path = "../tests/support/zookeeper.rs"]
#[allow(dead_code)]
mod zookeeper;

fn leases(c: &mut Criterion) {
    let server = zookeeper::ZkServer::start();
    let raw = zookeeper::RawZk::connect(&server);
    let coord = ZkCoordinator::start(
        server.target("/bench"),
        "bench".into(),
        Duration::from_secs(30),
    );
    let volume = VolumeKey {
        driver: DriverName::new("rexray").unwrap(),
        name: VolumeName::new("bench").unwrap(),
    };
    // The session comes up in the background: the first acquire that succeeds proves it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while coord
        .acquire(&volume, LeaseMode::ReadWrite, Duration::ZERO)
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no ZooKeeper session");
        std::thread::sleep(Duration::from_millis(20));
    }
    coord.release(&volume).unwrap();

    let floor = "/bench/volumes/rexray/floor";
    c.bench_function("zk floor: raw create+delete of an ephemeral node", |b| {
        b.iter(|| {
            raw.create_ephemeral(floor, b"{}");
            raw.delete(floor);
        })
    });
    for (label, mode) in [("rw", LeaseMode::ReadWrite), ("ro", LeaseMode::ReadOnly)] {
        c.bench_function(&format!("zk lease ({label}): acquire+release"), |b| {
            b.iter(|| {
                coord.acquire(&volume, mode, Duration::ZERO).unwrap();
                coord.release(&volume).unwrap();
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = leases
}
criterion_main!(benches);
