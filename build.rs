//! Builds the cxx bridge, always. With `MESOS_PREFIX` (an installed Mesos 1.x), also compiles the
//! Mesos shim (`SHIM`: the isolator class and module declarations, the watch promises, the
//! endpoints and metrics) and makes `libmesos_dvdi.so` export the two module symbols; without it,
//! says plainly that the shim was skipped.
//!
//! The shim goes into the same archive as the bridge but is pulled into the `.so` alone (by
//! `-u SYMBOL`, which brings in isolator.cpp's object and, through it, the other two): its objects
//! have references only the agent's libmesos resolves, so they must never reach the test binaries
//! or `dvdi`, which link the archive without asking for them.

use std::path::PathBuf;
use std::process::Command;

include!("build/check_headers.rs");

/// The module symbols the agent looks up when it loads the library: the module's own name and the
/// original module's, so agents configured for that one load this library unchanged.
const MODULES: [&str; 2] = [
    "org_apache_mesos_DvdiIsolator",
    "com_emccode_mesos_DockerVolumeDriverIsolator",
];

/// The shim's translation units, compiled only with `MESOS_PREFIX`.
const SHIM: [&str; 3] = ["cpp/isolator.cpp", "cpp/watch.cpp", "cpp/endpoints.cpp"];

/// Headers the bridge or the shim include.
const HEADERS: [&str; 7] = [
    "cpp/log_sink.h",
    "cpp/fence_sink.h",
    "cpp/completion.h",
    "cpp/shim.h",
    "cpp/watch_table.h",
    "cpp/watch.h",
    "cpp/endpoints.h",
];

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=build/check_headers.rs");
    for file in HEADERS.iter().chain(SHIM.iter()) {
        println!("cargo:rerun-if-changed={file}");
    }
    for var in ["MESOS_PREFIX", "MESOS_EXTRA_INCLUDES", "PKG_CONFIG_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let mut build = cxx_build::bridge("src/ffi.rs");
    build.std("c++14");
    let Some(prefix) = std::env::var_os("MESOS_PREFIX").map(PathBuf::from) else {
        build.compile("mesos_dvdi_bridge");
        println!(
            "cargo:warning=mesos-dvdi: MESOS_PREFIX is not set, so the Mesos shim was skipped: libmesos_dvdi.so has the core but no module symbols. To build the module: MESOS_PREFIX=/path/to/installed/mesos cargo build --release"
        );
        return;
    };

    // Include order: MESOS_EXTRA_INCLUDES first, then pkg-config's answer for mesos, else the
    // prefix's include/ and the 3rdparty headers Mesos installs beside them. The shim must see the
    // very protobuf, glog and boost headers the agent was built with, never the system's: their
    // classes are shared with libmesos in memory.
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(extra) = std::env::var_os("MESOS_EXTRA_INCLUDES") {
        dirs.extend(std::env::split_paths(&extra));
    }
    let pkg = Command::new("pkg-config")
        .args(["--cflags", "mesos"])
        .env("PKG_CONFIG_PATH", {
            let mut p = prefix.join("lib/pkgconfig").into_os_string();
            if let Some(old) = std::env::var_os("PKG_CONFIG_PATH") {
                p.push(":");
                p.push(old);
            }
            p
        })
        .output()
        .ok()
        .filter(|o| o.status.success());
    match pkg {
        Some(out) => {
            for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                match flag.strip_prefix("-I") {
                    Some(dir) => dirs.push(PathBuf::from(dir)),
                    None => {
                        build.flag(flag);
                    }
                }
            }
        }
        None => {
            dirs.push(prefix.join("include"));
            dirs.push(prefix.join("lib/mesos/3rdparty/include"));
        }
    }
    let mut searched = dirs.clone();
    searched.extend(compiler_include_dirs(build.get_compiler().path()));
    if let Err(message) = check_headers(&prefix, &searched) {
        eprintln!("{message}");
        std::process::exit(1);
    }
    // As system directories: in the same order and still ahead of the compiler's own, but the
    // hundreds of warnings Mesos' headers raise under -Wall stay theirs, so a build prints only
    // the shim's.
    for dir in &dirs {
        build.flag("-isystem").flag(dir);
    }
    // The shim calls libprocess and stout (the endpoints and metrics): GCC 5's ABI, that of the
    // Mesos builds it loads into (Mesos 1.x is built that way), so conversions returning
    // std::string mangle as libmesos exports them. That ABI version also turns off C++17's inheriting-constructor rules,
    // which today's libstdc++ needs (its unique_ptr does not compile without them): they change
    // what a constructor means, not how a symbol is named, so they are turned back on.
    build
        .define("__STDC_FORMAT_MACROS", None)
        .flag("-fabi-version=9")
        .flag_if_supported("-fnew-inheriting-ctors")
        .flag_if_supported("-Wno-deprecated-declarations")
        .files(SHIM)
        .compile("mesos_dvdi_bridge");

    // Keep the module symbols (nothing in Rust references them) and export them past rustc's
    // version script, for the cdylib only.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("mesos_modules.map");
    let globals: String = MODULES.iter().map(|m| format!("{m}; ")).collect();
    std::fs::write(&script, format!("{{ global: {globals}}};\n"))
        .expect("write the version script");
    for m in MODULES {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-u,{m}");
    }
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        script.display()
    );
}
