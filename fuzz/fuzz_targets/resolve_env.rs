//! Environment resolution on arbitrary bytes: lines are `NAME=VALUE` pairs. Never panics, and
//! every accepted spec survives its JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_dvdi::spec::{resolve, DriverName, ResolveOptions, VolumeSpec};

fuzz_target!(|data: &[u8]| {
    let env: Vec<(Vec<u8>, Vec<u8>)> = data
        .split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b'=') {
            Some(i) => (line[..i].to_vec(), line[i + 1..].to_vec()),
            None => (line.to_vec(), Vec::new()),
        })
        .collect();
    let options = ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: data.first().is_some_and(|b| b & 1 == 1),
    };
    if let Ok(resolved) = resolve(&env, &[], &options) {
        for spec in resolved.volumes {
            let json = serde_json::to_string(&spec).unwrap();
            let back: VolumeSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec);
        }
    }
});
