//! ZooKeeper leases against a local server (Debian's package, started here on a loopback port):
//! - the floor: one bare `create` + `delete` of an ephemeral node on a raw client session (the
//!   two writes every lease needs);
//! - a read-write lease, acquire + release, through the coordinator (command to its thread; on
//!   the view kept from its last take, one transaction creating the node with its watch asked
//!   for behind it; then the node deleted with the children listed behind it);
//! - the same for a read-only lease;
//! - `prepare+cleanup (1 volume)` of the isolator with coordination off and on, side by side in
//!   one run: the same instant backend (a test double, as in the isolator bench), the volume's
//!   driver leased through `lease_drivers` in the second.
//!
//! Run: `cargo bench --bench coord`

// criterion_group!/criterion_main! generate undocumented public items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesos_dvdi::coord::zk::ZkCoordinator;
use mesos_dvdi::coord::{Coordinator, LeaseMode};
use mesos_dvdi::spec::{DriverName, VolumeKey, VolumeName};
use mesos_dvdi::state::Owner;

#[path = "../tests/support/zookeeper.rs"]
#[allow(dead_code)]
mod zookeeper;

#[path = "support/instant.rs"]
mod instant;

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
    assert!(
        coord.wait_connected(Duration::from_secs(60)),
        "no ZooKeeper session"
    );
    coord
        .acquire(&volume, LeaseMode::ReadWrite, Duration::ZERO)
        .unwrap();
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

/// The isolator's prepare+cleanup of one volume, without and with its lease, in one run.
fn prepare_cleanup_with_and_without_coordination(c: &mut Criterion) {
    let server = zookeeper::ZkServer::start();
    let mut group = c.benchmark_group("prepare+cleanup (1 volume)");
    for on in [false, true] {
        let dir = instant::scratch();
        let mut iso = instant::instant_isolator_with(dir.path(), |config| {
            if on {
                config.lease_drivers = vec![DriverName::new("rexray").unwrap()];
            }
        });
        if on {
            let coord = ZkCoordinator::start(
                server.target("/bench-isolator"),
                "bench".into(),
                Duration::from_secs(30),
            );
            assert!(coord.wait_connected(Duration::from_secs(60)), "no session");
            iso = iso.with_coordinator(Arc::new(coord));
        }
        let input = instant::input(dir.path(), "pgdata", true);
        let mut n = 0u64;
        let label = if on {
            "coordination on"
        } else {
            "coordination off"
        };
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
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = leases, prepare_cleanup_with_and_without_coordination
}
criterion_main!(benches);
