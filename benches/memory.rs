//! Resident memory of a process holding the isolator with 10,000 checkpointed references (10,000
//! containers on 10,000 volumes), after a fresh isolator recovered them.
//!
//! Run: `cargo bench --bench memory` (prints VmRSS and VmHWM from /proc/self/status).

use mesos_dvdi::isolator::KnownContainer;
use mesos_dvdi::state::{ContainerId, Owner};

#[path = "support/instant.rs"]
mod instant;

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; do the work only when
    // benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = instant::scratch();
    let refs = 10_000;
    let mut known = Vec::with_capacity(refs);
    {
        let iso = instant::instant_isolator(dir.path());
        let base = instant::input(dir.path(), "x", false);
        for i in 0..refs {
            let mut inp = base.clone();
            inp.env = vec![(b"DVDI_VOLUME_NAME".to_vec(), format!("vol{i}").into_bytes())];
            let id = format!("c{i}");
            iso.prepare(&id, Owner::Mesos, &inp).unwrap();
            known.push(KnownContainer {
                id: ContainerId::new(id).unwrap(),
            });
        }
    }
    let before = status("VmRSS:");
    let iso = instant::instant_isolator(dir.path());
    let report = iso.recover(&known, &[]).unwrap();
    assert_eq!(report.kept.len(), refs);
    println!(
        "isolator holding {refs} refs after recover: VmRSS {} (before the fresh isolator: {before}), VmHWM {}",
        status("VmRSS:"),
        status("VmHWM:")
    );
}
