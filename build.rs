//! Builds the cxx bridge (always). The Mesos isolator class in `cpp/` needs an installed Mesos and
//! is not part of this build yet; the warning below says so.

fn main() {
    cxx_build::bridge("src/ffi.rs")
        .std("c++14")
        .compile("mesos_dvdi_bridge");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cpp/log_sink.h");
    println!("cargo:rerun-if-env-changed=MESOS_PREFIX");
    if std::env::var_os("MESOS_PREFIX").is_some() {
        println!(
            "cargo:warning=mesos-dvdi: MESOS_PREFIX is set, but the Mesos isolator class (cpp/) is not in this version yet; libmesos_dvdi.so holds the Rust core and its C++ bridge only"
        );
    }
}
