//! Host inspection and scaffolding for tests: loop devices, executable stand-in scripts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Loop devices whose backing file lies under `dir` (from `/sys/block/loop*/loop/backing_file`).
pub fn loop_devices_under(dir: &Path) -> usize {
    fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|b| Path::new(b.trim_end()).starts_with(dir))
        .count()
}

/// Writes an executable `/bin/sh` script (a test double standing in for a program) to `path`.
pub fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}
