//! A checkpoint record from arbitrary bytes: loading never panics, and an accepted record
//! survives writing and reading back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_dvdi::state::VolumeRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<VolumeRecord>(data) {
        let bytes = serde_json::to_vec(&record).unwrap();
        let back: VolumeRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, record);
    }
});
