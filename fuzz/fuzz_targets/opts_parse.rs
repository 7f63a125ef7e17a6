//! `DVDI_VOLUME_OPTS` parsing: never panics, and accepted options print back to the same options.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_dvdi::spec::VolumeOpts;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(opts) = VolumeOpts::parse(&text) {
        let again = VolumeOpts::parse(&opts.to_string()).unwrap();
        assert_eq!(again, opts);
    }
});
