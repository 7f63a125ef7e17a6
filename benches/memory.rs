//! Resident memory a process adds by holding volumes: N containers, each on a volume of its own,
//! measured beside the same process holding none.
//!
//! Each measurement runs in a fresh process (this binary again), so allocator state and code
//! pages of one do not count in another:
//! - `prepare`: builds the isolator and prepares and cleans up one container (so the code and
//!   the allocator's first arena are in place), reads VmRSS (the empty process), prepares N
//!   containers, reads VmRSS and VmHWM again;
//! - `recover`: recovers an empty checkpoint first (the same warm-up), reads VmRSS, then recovers
//!   the N containers the `prepare` process left checkpointed, as an agent does after a restart.
//!
//! Run: `cargo bench --bench memory` (prints `memory: LABEL: N kB` lines, which
//! `benches/repeat.py` collects).

use std::path::Path;
use std::process::Command;

use mesos_dvdi::isolator::KnownContainer;
use mesos_dvdi::state::{ContainerId, Owner};

#[path = "support/instant.rs"]
mod instant;

/// A `/proc/self/status` field, in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn known(n: usize) -> Vec<KnownContainer> {
    (0..n)
        .map(|i| KnownContainer {
            id: ContainerId::new(format!("c{i}")).unwrap(),
        })
        .collect()
}

/// The `prepare` role: the empty process, then the same holding `n` containers on `n` volumes.
fn prepare(dir: &Path, n: usize) {
    let iso = instant::instant_isolator(dir);
    let base = instant::input(dir, "warm-up", false);
    iso.prepare("warm-up", Owner::Mesos, &base).unwrap();
    iso.cleanup("warm-up").unwrap();
    let inputs: Vec<_> = (0..n)
        .map(|i| {
            let mut input = base.clone();
            input.env = vec![(b"DVDI_VOLUME_NAME".to_vec(), format!("vol{i}").into_bytes())];
            input
        })
        .collect();
    let empty = status_kb("VmRSS:");
    for (i, input) in inputs.iter().enumerate() {
        iso.prepare(&format!("c{i}"), Owner::Mesos, input).unwrap();
    }
    assert_eq!(iso.usage().containers_using_volumes, n as u64);
    report(&format!("{n} after prepare"), empty);
}

/// The `recover` role: a fresh process recovering what the `prepare` role left.
fn recover(dir: &Path, n: usize) {
    let warm_up = instant::scratch();
    instant::instant_isolator(warm_up.path())
        .recover(&[], &[])
        .unwrap();
    let known = known(n);
    let empty = status_kb("VmRSS:");
    let iso = instant::instant_isolator(dir);
    let report_ = iso.recover(&known, &[]).unwrap();
    assert_eq!(report_.kept.len(), n);
    assert_eq!(iso.usage().containers_using_volumes, n as u64);
    report(&format!("{n} after recover"), empty);
}

fn report(what: &str, empty: u64) {
    let held = status_kb("VmRSS:");
    println!("memory: {what}: VmRSS empty: {empty} kB");
    println!("memory: {what}: VmRSS holding: {held} kB");
    println!(
        "memory: {what}: VmRSS added: {} kB",
        held.saturating_sub(empty)
    );
    println!("memory: {what}: VmHWM: {} kB", status_kb("VmHWM:"));
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`; do the work only when
    // benchmarking.
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir, n] = &args[..] {
        let n: usize = n.parse().unwrap();
        match role.as_str() {
            "prepare" => prepare(Path::new(dir), n),
            "recover" => recover(Path::new(dir), n),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    for n in [1_000, 10_000] {
        let dir = instant::scratch();
        for role in ["prepare", "recover"] {
            let out = Command::new(&me)
                .args([role, &dir.path().display().to_string(), &n.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{role} {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
