// Before the Mesos shim is compiled: are the headers it needs where the compiler will look? Without
// them the compiler prints pages of errors; this says in one message which header is missing,
// where it looked and how to get it. build.rs takes this file in with `include!`, and
// tests/build_headers.rs with `#[path]`, so the test runs the very code the build does (which is
// also why it holds plain items with whole paths only: an included file can carry no `//!` docs,
// and `use`s of its own would clash with build.rs's).

/// The headers the shim cannot compile without, each with what provides it.
pub const REQUIRED_HEADERS: [(&str, &str); 4] = [
    ("mesos/mesos.hpp", "Mesos' own headers"),
    (
        "mesos/mesos.pb.h",
        "generated from mesos.proto by Mesos' build, installed with its headers",
    ),
    (
        "google/protobuf/message.h",
        "protobuf's headers, of the version Mesos was built with",
    ),
    (
        "glog/logging.h",
        "glog's headers, of the version Mesos was built with",
    ),
];

/// Checks that every one of [`REQUIRED_HEADERS`] is in one of `dirs` (where the compiler will
/// look, in its order). The error is the message for the operator: each missing header, every
/// directory searched, and the two ways to provide them.
pub fn check_headers(prefix: &std::path::Path, dirs: &[std::path::PathBuf]) -> Result<(), String> {
    let missing: Vec<&(&str, &str)> = REQUIRED_HEADERS
        .iter()
        .filter(|(header, _)| !dirs.iter().any(|d| d.join(header).is_file()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "mesos-dvdi: MESOS_PREFIX={} lacks headers the Mesos shim needs:\n",
        prefix.display()
    );
    for (header, what) in &missing {
        message.push_str(&format!("  {header} ({what})\n"));
    }
    message.push_str("Looked in:\n");
    for dir in dirs {
        message.push_str(&format!("  {}\n", dir.display()));
    }
    message.push_str(
        "To provide them, set MESOS_PREFIX to where Mesos was installed (`make install`) from a \
         build configured with --enable-install-module-dependencies, which also installs the \
         protobuf, glog and boost headers it was built with under \
         $MESOS_PREFIX/lib/mesos/3rdparty/include; or name the directories that hold them in \
         MESOS_EXTRA_INCLUDES (colon-separated, searched first). Without MESOS_PREFIX the library \
         builds without the Mesos shim.",
    );
    Err(message)
}

/// The directories `compiler` searches for `#include <...>` on its own, as it lists them with
/// `-v`; none when it cannot be run (then compiling fails anyway, with its own message).
pub fn compiler_include_dirs(compiler: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::process::Command::new(compiler)
        .args(["-x", "c++", "-E", "-v", "/dev/null"])
        .output()
        .map(|out| search_list(&String::from_utf8_lossy(&out.stderr)))
        .unwrap_or_default()
}

/// The `#include <...>` search list of a GCC or Clang `-v` output.
pub fn search_list(verbose: &str) -> Vec<std::path::PathBuf> {
    verbose
        .lines()
        .skip_while(|l| !l.starts_with("#include <...> search starts here:"))
        .skip(1)
        .take_while(|l| !l.starts_with("End of search list."))
        .map(|l| std::path::PathBuf::from(l.trim().trim_end_matches(" (framework directory)")))
        .collect()
}
