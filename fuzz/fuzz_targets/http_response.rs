//! A plugin's HTTP answer, as raw bytes: the parser never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_dvdi::backend::plugin::http::parse_response_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = parse_response_bytes(data);
});
