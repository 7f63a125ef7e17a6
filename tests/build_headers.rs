//! The build's check for the Mesos headers (build/check_headers.rs, the very file build.rs
//! includes): a `MESOS_PREFIX` without them ends in one message naming each missing header, every
//! directory searched and how to provide them, not in the compiler's pages of errors.

#[path = "../build/check_headers.rs"]
mod check_headers;

use std::path::{Path, PathBuf};

use check_headers::{check_headers, compiler_include_dirs, search_list, REQUIRED_HEADERS};

fn touch(dir: &Path, header: &str) {
    let path = dir.join(header);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "").unwrap();
}

#[test]
fn an_empty_prefix_names_every_header_where_it_looked_and_how_to_get_them() {
    let prefix = tempfile::tempdir().unwrap();
    let dirs = vec![
        prefix.path().join("include"),
        prefix.path().join("lib/mesos/3rdparty/include"),
    ];
    let message = check_headers(prefix.path(), &dirs).unwrap_err();
    for (header, _) in REQUIRED_HEADERS {
        assert!(message.contains(header), "{header} not named:\n{message}");
    }
    for dir in &dirs {
        assert!(
            message.contains(&dir.display().to_string()),
            "{} not named:\n{message}",
            dir.display()
        );
    }
    assert!(message.contains(&format!("MESOS_PREFIX={}", prefix.path().display())));
    assert!(
        message.contains("--enable-install-module-dependencies"),
        "{message}"
    );
    assert!(message.contains("MESOS_EXTRA_INCLUDES"), "{message}");
}

#[test]
fn mesos_headers_without_protobuf_and_glog_name_only_those_two() {
    let prefix = tempfile::tempdir().unwrap();
    let include = prefix.path().join("include");
    touch(&include, "mesos/mesos.hpp");
    touch(&include, "mesos/mesos.pb.h");
    let message = check_headers(prefix.path(), &[include]).unwrap_err();
    assert!(
        message.contains("  google/protobuf/message.h ("),
        "{message}"
    );
    assert!(message.contains("  glog/logging.h ("), "{message}");
    assert!(!message.contains("  mesos/mesos.hpp ("), "{message}");
    assert!(!message.contains("  mesos/mesos.pb.h ("), "{message}");
}

#[test]
fn headers_spread_over_the_searched_directories_pass() {
    let prefix = tempfile::tempdir().unwrap();
    let include = prefix.path().join("include");
    let extra = prefix.path().join("extra");
    touch(&include, "mesos/mesos.hpp");
    touch(&include, "mesos/mesos.pb.h");
    touch(&extra, "google/protobuf/message.h");
    touch(&extra, "glog/logging.h");
    assert_eq!(check_headers(prefix.path(), &[extra, include]), Ok(()));
}

#[test]
fn the_compilers_own_search_list_is_read_from_its_verbose_output() {
    let gcc = "ignoring nonexistent directory \"/usr/local/include/x86_64-linux-gnu\"\n\
               #include \"...\" search starts here:\n\
               #include <...> search starts here:\n \
               /usr/include/c++/12\n \
               /usr/local/include\n \
               /usr/include\n\
               End of search list.\n";
    assert_eq!(
        search_list(gcc),
        [
            PathBuf::from("/usr/include/c++/12"),
            PathBuf::from("/usr/local/include"),
            PathBuf::from("/usr/include"),
        ]
    );
    // The C++ compiler of this machine (the one cc picks by default) lists where the C library's
    // headers are, as the build's check relies on for protobuf and glog installed there.
    let dirs = compiler_include_dirs(Path::new("c++"));
    assert!(
        dirs.iter().any(|d| d.join("stdio.h").is_file()),
        "no directory with stdio.h in {dirs:?}"
    );
}
