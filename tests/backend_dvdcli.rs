//! The dvdcli backend against stand-in `dvdcli` programs the tests write (test doubles: small sh
//! scripts that record their argv, hang, or fail on purpose).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesos_dvdi::backend::dvdcli::DvdcliBackend;
use mesos_dvdi::backend::{Backend, MountId, MountRequest, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

fn script(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("dvdcli");
    support::host::write_script(&p, body);
    p
}

fn backend(program: PathBuf, timeout: Duration) -> DvdcliBackend {
    DvdcliBackend::new(
        program,
        DriverName::new("rexray").unwrap(),
        Timeouts {
            mount: timeout,
            unmount: timeout,
        },
    )
}

fn mount(
    b: &DvdcliBackend,
    opts: &str,
    explicit: bool,
) -> Result<PathBuf, mesos_dvdi::backend::BackendError> {
    b.mount(&MountRequest {
        name: &VolumeName::new("pgdata").unwrap(),
        opts: &VolumeOpts::parse(opts).unwrap(),
        explicit_create: explicit,
        id: &MountId("m1".into()),
    })
}

#[test]
fn mount_runs_the_documented_argv_and_takes_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let prog = script(
        dir.path(),
        &format!(
            "for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\necho 'INFO attaching'\necho /var/lib/rexray/volumes/pgdata/data\necho",
            log.display()
        ),
    );
    let b = backend(prog, Duration::from_secs(30));
    let p = mount(&b, "size=5,url=http://x:1/a b#c", true).unwrap();
    assert_eq!(p, Path::new("/var/lib/rexray/volumes/pgdata/data"));
    assert_eq!(
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        [
            "mount",
            "--volumedriver=rexray",
            "--volumename=pgdata",
            "--volumeopts=size=5",
            "--volumeopts=url=http://x:1/a b#c",
            "--explicitcreate",
        ]
    );
    b.unmount(&VolumeName::new("pgdata").unwrap(), &MountId("m1".into()))
        .unwrap();
    assert_eq!(
        fs::read_to_string(&log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["unmount", "--volumedriver=rexray", "--volumename=pgdata"]
    );
}

#[test]
fn option_values_are_never_interpreted_by_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let marker = dir.path().join("pwned");
    let prog = script(
        dir.path(),
        &format!("printf '%s\\n' \"$@\" > {}\necho /mnt/x", log.display()),
    );
    let evil = format!("x=$(touch {0});touch {0}", marker.display());
    mount(&backend(prog, Duration::from_secs(30)), &evil, false).unwrap();
    assert!(!marker.exists());
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains(&format!("--volumeopts={evil}")));
}

#[test]
fn slow_dvdcli_is_killed_at_the_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // It starts a child of its own, then both wait forever.
    let prog = script(
        dir.path(),
        &format!("sleep 1000 & echo $$ $! > {}\nwait", pids.display()),
    );
    let e = mount(&backend(prog, Duration::from_millis(300)), "", false).unwrap_err();
    let text = render_chain(&e);
    assert!(
        text.contains("did not finish within 300ms and was killed"),
        "{text}"
    );
    let recorded = fs::read_to_string(&pids).unwrap();
    for pid in recorded.split_whitespace() {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init: never still running.
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} still alive: {stat}"
        );
    }
}

#[test]
fn failing_dvdcli_surfaces_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "echo 'noise' >&2\necho 'Error: volume is attached to i-123' >&2\nexit 3",
    );
    let text =
        render_chain(&mount(&backend(prog, Duration::from_secs(30)), "", false).unwrap_err());
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("volume is attached to i-123"), "{text}");
    assert!(
        text.contains("volume \"pgdata\" (driver \"rexray\"): mount failed"),
        "{text}"
    );
}

#[test]
fn relative_or_empty_output_is_refused() {
    for out in ["echo relative/path", "true", "echo '  '"] {
        let dir = tempfile::tempdir().unwrap();
        let prog = script(dir.path(), out);
        let text =
            render_chain(&mount(&backend(prog, Duration::from_secs(30)), "", false).unwrap_err());
        assert!(
            text.contains("printed no absolute mount point"),
            "{out}: {text}"
        );
    }
}

#[test]
fn missing_program_says_which() {
    let b = backend(PathBuf::from("/nonexistent/dvdcli"), Duration::from_secs(5));
    let text = render_chain(&mount(&b, "", false).unwrap_err());
    assert!(text.contains("could not run /nonexistent/dvdcli"), "{text}");
}

#[test]
fn calls_dvdcli_lacks_say_so() {
    let b = backend(PathBuf::from("/bin/true"), Duration::from_secs(5));
    let text = render_chain(&b.list().unwrap_err());
    assert!(text.contains("dvdcli has no list command"), "{text}");
}
