//! Builds and runs the C++ harness (tests/cpp/harness.cpp), which plays the Mesos agent through
//! the cxx bridge: the same calls the isolator shim makes, from C++, with real mounts.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::isolator::in_private_mount_ns;

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp; the library's artifacts are in <target>/<profile>.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().expect("target dir").to_owned()
}

#[test]
fn cpp_harness_plays_the_agent_through_the_bridge() {
    let target = target_dir();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let staticlib = target.join(profile).join("libmesos_dvdi.a");
    assert!(staticlib.exists(), "{} is missing", staticlib.display());
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dvdi-harness");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    // The generated header includes "mesos-dvdi/cpp/log_sink.h": map the crate's name to its
    // root, as cxx-build does for its own compilation.
    let crate_includes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("harness-include");
    std::fs::create_dir_all(&crate_includes).unwrap();
    let link = crate_includes.join("mesos-dvdi");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_MANIFEST_DIR"), &link).unwrap();
    }
    let built = Command::new(&cxx)
        .args(["-std=c++14", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(target.join("cxxbridge"))
        .arg("-I")
        .arg(&crate_includes)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cpp/harness.cpp"))
        .arg(&staticlib)
        .args(["-lpthread", "-ldl", "-lm"])
        .output()
        .expect("run the C++ compiler");
    assert!(
        built.status.success(),
        "compiling the harness failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = in_private_mount_ns(|| Command::new(&exe).arg(dir.path()).output().unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "harness failed:\n{log}");
    assert!(log.contains("harness: all checks passed"), "{log}");
}
