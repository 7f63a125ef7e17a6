//! What every `dvdi` command prints besides its answer: the core's log lines on stderr (warnings
//! by default, more with `-v` or `RUST_LOG`).

mod support;

use std::os::unix::net::UnixListener;
use std::process::Output;

use support::isolator::{text, Fixture};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `dvdi run` of a volume on a plugin that died and left its socket: the core warns while it
/// retries (then fails).
fn run_against_a_dead_plugin(fx: &Fixture, extra: &[&str], rust_log: Option<&str>) -> Output {
    let plugins = fx.mkdir("plugins");
    let sock = plugins.join("gone.sock");
    if !sock.exists() {
        drop(UnixListener::bind(&sock).unwrap());
    }
    let mut cmd = fx.dvdi();
    cmd.arg("--plugin-dir").arg(&plugins).args(extra).args([
        "--plugin-connect-timeout",
        "1",
        "run",
        "-e",
        "DVDI_VOLUME_NAME=v",
        "-e",
        "DVDI_VOLUME_DRIVER=gone",
        "--",
        "true",
    ]);
    cmd.env_remove("RUST_LOG");
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    out
}

const WARNING: &str = "dvdi: warning: plugin gone is not accepting connections (connection refused); retrying for up to";

#[test]
fn the_cores_warnings_reach_stderr_by_default() {
    let fx = Fixture::new();
    let out = run_against_a_dead_plugin(&fx, &[], None);
    assert!(stderr(&out).contains(WARNING), "{}", text(&out));
    // RUST_LOG may quiet them.
    let out = run_against_a_dead_plugin(&fx, &[], Some("error"));
    assert!(!stderr(&out).contains("warning"), "{}", text(&out));
    assert!(stderr(&out).contains("dvdi: error: "), "{}", text(&out));
}

#[test]
fn verbose_and_rust_log_show_each_mount_and_unmount() {
    let fx = Fixture::new();
    let run = |extra: &[&str], rust_log: Option<&str>| {
        let mut cmd = fx.dvdi();
        cmd.args(extra)
            .args([
                "--default-driver",
                "local",
                "run",
                "-e",
                "DVDI_VOLUME_NAME=v",
            ])
            .args(["--", "true"])
            .env_remove("RUST_LOG");
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        stderr(&out)
    };
    let mounted = "dvdi: info: volume \"v\" (driver \"local\"): mounted at ";
    let unmounted = "dvdi: info: volume \"v\" (driver \"local\"): unmounted";
    // The local root is made by the first run (which says so).
    run(&[], None);
    assert_eq!(run(&[], None), "", "quiet by default");
    for err in [run(&["-v"], None), run(&[], Some("info"))] {
        assert!(err.contains(mounted) && err.contains(unmounted), "{err}");
    }
    let debug = stderr(&run_against_a_dead_plugin(&fx, &["-vv"], None));
    assert!(
        debug.contains("dvdi: debug: [mesos_dvdi::backend::plugin] plugin gone at "),
        "{debug}"
    );
    // A level RUST_LOG cannot read is said, and the default kept.
    let bad = run(&[], Some("loud"));
    assert!(
        bad.contains("dvdi: warning: RUST_LOG: \"loud\" is not a level"),
        "{bad}"
    );
}

#[test]
fn read_commands_create_no_directory_and_say_when_the_work_dir_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = |what: &str| dir.path().join(format!("typo/{what}"));
    let dirs = ["work", "local", "loop", "plugins", "mounts"].map(typo);
    let base = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"));
        c.arg("--work-dir")
            .arg(&dirs[0])
            .arg("--local-root")
            .arg(&dirs[1])
            .arg("--loop-root")
            .arg(&dirs[2])
            .arg("--plugin-dir")
            .arg(&dirs[3])
            .arg("--plugin-mount-root")
            .arg(&dirs[4])
            .args(["--legacy-checkpoint", ""])
            .env_remove("RUST_LOG");
        c
    };
    let missing = format!(
        "dvdi: warning: {} holds no checkpoint (nothing was ever recorded there); check --work-dir",
        dirs[0].display()
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["gc", "--dry-run"],
        &["gc", "--dry-run", "--json"],
        &["gc"],
    ] {
        let out = base().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(&missing), "{args:?}: {}", text(&out));
    }
    let status = base().arg("status").output().unwrap();
    assert!(
        text(&status).contains("no volumes recorded in"),
        "{}",
        text(&status)
    );
    for args in [
        &["plugins"][..],
        &["resolve", "-e", "DVDI_VOLUME_NAME=v"],
        &["leases"],
    ] {
        base().args(args).output().unwrap();
    }
    assert!(
        !dir.path().join("typo").exists(),
        "a read command created {}",
        dir.path().join("typo").display()
    );
}

#[test]
fn a_run_that_creates_a_root_says_so_once() {
    let fx = Fixture::new();
    let root = fx.root().join("typo/local root");
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"))
            .arg("--work-dir")
            .arg(&fx.config.work_dir)
            .arg("--local-root")
            .arg(&root)
            .args([
                "--default-driver",
                "local",
                "run",
                "-e",
                "DVDI_VOLUME_NAME=v",
            ])
            .args(["--", "true"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        stderr(&out)
    };
    let first = run();
    let note = format!(
        "dvdi: note: created {} (local_root, --local-root), which did not exist",
        root.display()
    );
    assert_eq!(first.matches(&note).count(), 1, "{first}");
    assert!(
        first.contains(&format!(
            "dvdi: note: created {} (work_dir, --work-dir)",
            fx.config.work_dir.display()
        )),
        "{first}"
    );
    assert_eq!(run(), "", "said again");
}

/// A stdout whose reader is gone (as after `| head -1` has read its line): every write to it
/// fails with EPIPE, from the first.
fn closed_pipe() -> std::process::Stdio {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    std::process::Stdio::from(write)
}

#[test]
fn every_command_ends_quietly_on_a_closed_pipe() {
    use std::os::unix::process::ExitStatusExt;
    let fx = Fixture::new();
    // Something to print: a recorded volume.
    let out = fx
        .dvdi()
        .args([
            "--default-driver",
            "local",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
        ])
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plugins = fx.mkdir("plugins");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["gc", "--dry-run"],
        &["gc", "--json"],
        &["plugins"],
        &["plugins", "--json"],
        &["resolve", "-e", "DVDI_VOLUME_NAME=v"],
        &["resolve", "-e", "DVDI_VOLUME_NAME=v", "--json"],
        &["--help"],
        &["--version"],
    ] {
        let out = fx
            .dvdi()
            .arg("--plugin-dir")
            .arg(&plugins)
            .args(args)
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        // Ended by SIGPIPE, as `ls | head` is (141 in the shell), without a word.
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    // dvdi run's stdout is its command's, which gets the signal as it would alone; dvdi itself
    // reports that status (128 + 13) and releases the volume.
    let out = fx
        .dvdi()
        .args([
            "--default-driver",
            "local",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
        ])
        .args(["--", "sh", "-c", "echo hello"])
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGPIPE),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out), "");
    assert!(!fx.recorded("local", "v"));
}
