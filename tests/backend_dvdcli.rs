//! The dvdcli backend against stand-in `dvdcli` programs the tests write: test doubles, small sh
//! scripts that record their argv, print, hang or fail on purpose.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mesos_dvdi::backend::command::RunError;
use mesos_dvdi::backend::dvdcli::{DvdcliBackend, DvdcliError};
use mesos_dvdi::backend::{
    Backend, BackendError, BackendErrorKind, Call, MountId, MountRequest, Timeouts,
};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Writes a test-double `dvdcli` (an sh script with `body`) into `dir`.
fn fake_dvdcli(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-dvdcli");
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A test double that records its argv, one argument per line, in `log`, then runs `then`.
fn recording_dvdcli(dir: &Path, log: &Path, then: &str) -> PathBuf {
    fake_dvdcli(
        dir,
        &format!("printf '%s\\n' \"$@\" > '{}'\n{then}", log.display()),
    )
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

const LONG: Duration = Duration::from_secs(60);

fn vol() -> VolumeName {
    VolumeName::new("pgdata").unwrap()
}

fn mount(b: &DvdcliBackend, opts: &str, explicit: bool) -> Result<PathBuf, BackendError> {
    b.mount(&MountRequest {
        name: &vol(),
        opts: &VolumeOpts::parse(opts).unwrap(),
        explicit_create: explicit,
        id: &MountId("m1".into()),
        read_only: false,
        csi: None,
    })
}

fn argv(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn dvdcli_error(e: &BackendError) -> &DvdcliError {
    match &*e.kind {
        BackendErrorKind::Dvdcli(d) => d,
        other => panic!("not a dvdcli error: {other:?}"),
    }
}

#[test]
fn mount_runs_dvdclis_argv_exactly_and_takes_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let prog = recording_dvdcli(
        dir.path(),
        &log,
        "echo 'INFO attaching'\necho /var/lib/rexray/volumes/pgdata/data\necho",
    );
    let b = backend(prog, LONG);
    let p = mount(&b, "size=5,iops=100,url=http://x:1/a b#c", true).unwrap();
    assert_eq!(p, Path::new("/var/lib/rexray/volumes/pgdata/data"));
    assert_eq!(
        argv(&log),
        [
            "mount",
            "--volumedriver=rexray",
            "--volumename=pgdata",
            "--volumeopts=size=5",
            "--volumeopts=iops=100",
            "--volumeopts=url=http://x:1/a b#c",
            "--explicitcreate",
        ]
    );

    mount(&b, "", false).unwrap();
    assert_eq!(
        argv(&log),
        ["mount", "--volumedriver=rexray", "--volumename=pgdata"]
    );
}

#[test]
fn unmount_path_create_remove_and_list_run_dvdclis_commands() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let b = backend(recording_dvdcli(dir.path(), &log, "echo /mnt/p"), LONG);

    b.unmount(&vol(), &MountId("m1".into())).unwrap();
    assert_eq!(
        argv(&log),
        ["unmount", "--volumedriver=rexray", "--volumename=pgdata"]
    );
    assert_eq!(b.path(&vol()).unwrap(), Some(PathBuf::from("/mnt/p")));
    assert_eq!(
        argv(&log),
        ["path", "--volumedriver=rexray", "--volumename=pgdata"]
    );
    b.create(&vol(), &VolumeOpts::parse("size=1,b=2").unwrap())
        .unwrap();
    assert_eq!(
        argv(&log),
        [
            "create",
            "--volumedriver=rexray",
            "--volumename=pgdata",
            "--volumeopts=size=1",
            "--volumeopts=b=2"
        ]
    );
    b.remove(&vol()).unwrap();
    assert_eq!(
        argv(&log),
        ["remove", "--volumedriver=rexray", "--volumename=pgdata"]
    );
    b.list().unwrap();
    assert_eq!(argv(&log), ["list", "--volumedriver=rexray"]);
}

#[test]
fn list_and_get_read_dvdclis_names() {
    let dir = tempfile::tempdir().unwrap();
    // `list` prints names; `path` prints the mount point.
    let prog = fake_dvdcli(
        dir.path(),
        "case $1 in\n list) echo other; echo; echo pgdata ;;\n path) echo /mnt/pg ;;\n *) exit 9 ;;\nesac",
    );
    let b = backend(prog, LONG);
    let names: Vec<String> = b.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["other", "pgdata"]);
    let got = b.get(&vol()).unwrap().unwrap();
    assert_eq!(got.mountpoint, Some(PathBuf::from("/mnt/pg")));
    assert_eq!(b.get(&VolumeName::new("absent").unwrap()).unwrap(), None);
}

#[test]
fn path_of_an_unmounted_volume_is_none() {
    // dvdcli prints nothing when the volume has no mount point.
    let dir = tempfile::tempdir().unwrap();
    let b = backend(fake_dvdcli(dir.path(), "echo 'INFO no path' >&2"), LONG);
    assert_eq!(b.path(&vol()).unwrap(), None);
}

#[test]
fn option_values_are_never_interpreted_by_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let marker = dir.path().join("pwned");
    let prog = recording_dvdcli(dir.path(), &log, "echo /mnt/x");
    let evil = format!("$(touch {0});touch {0}`touch {0}`", marker.display());
    mount(&backend(prog, LONG), &format!("k={evil}"), false).unwrap();
    assert!(!marker.exists());
    assert!(argv(&log).contains(&format!("--volumeopts=k={evil}")));
}

#[test]
fn option_values_with_equals_signs_are_passed_whole() {
    // dvdcli truncates them itself; the argv carries them exactly, as Mesos' does.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("argv");
    let prog = recording_dvdcli(dir.path(), &log, "echo /mnt/x");
    mount(&backend(prog, LONG), "url=http://h/?a=b", false).unwrap();
    assert!(argv(&log).contains(&"--volumeopts=url=http://h/?a=b".to_owned()));
}

/// What a run of the hanging stand-in left behind.
struct Hung {
    error: BackendError,
    /// The stand-in's pid and its child's, once the child got going.
    pids: Option<(u32, u32)>,
    /// The read end of a FIFO that only the child holds open for writing.
    held: fs::File,
}

/// Runs a stand-in that starts a child of its own and waits for it for ever, at `timeout`. The
/// child opens a FIFO for writing (so its death can be seen as end of file on the FIFO, without
/// polling /proc), records its parent's pid and its own, then becomes `sleep 1000`.
fn run_hanging(dir: &Path, attempt: u32, timeout: Duration) -> Hung {
    let pids = dir.join(format!("pids{attempt}"));
    let fifo = dir.join(format!("held{attempt}"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opened before the run, non-blocking: the child's open for writing then never waits.
    let held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let prog = fake_dvdcli(
        dir,
        &format!(
            "sh -c 'echo $PPID $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\" && exec sleep 1000' child '{}' > '{}' &\nwait",
            pids.display(),
            fifo.display()
        ),
    );
    let error = mount(&backend(prog, timeout), "", false).unwrap_err();
    let pids = fs::read_to_string(&pids).ok().map(|s| {
        let v: Vec<u32> = s.split_whitespace().map(|p| p.parse().unwrap()).collect();
        (v[0], v[1])
    });
    Hung { error, pids, held }
}

#[test]
fn slow_dvdcli_is_killed_with_its_process_group_and_reaped_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // The timeout must not strike before the stand-in's child got going; rather than guess a
    // time, start short and double until a run got that far.
    let mut timeout = Duration::from_millis(100);
    let mut attempt = 0;
    let (hung, (shell, child)) = loop {
        let hung = run_hanging(dir.path(), attempt, timeout);
        match hung.pids {
            Some(pids) => break (hung, pids),
            None if timeout < Duration::from_secs(60) => {
                timeout *= 2;
                attempt += 1;
            }
            None => panic!("the stand-in never ran: {}", render_chain(&hung.error)),
        }
    };
    let e = &hung.error;
    assert!(
        matches!(dvdcli_error(e), DvdcliError::Run(RunError::Timeout { after, .. }) if *after == timeout),
        "{e:?}"
    );
    let text = render_chain(e);
    assert!(
        text.contains(&format!("did not finish within {timeout:?} and was killed")),
        "{text}"
    );
    // The stand-in itself was reaped by the backend before it returned.
    assert!(
        !Path::new(&format!("/proc/{shell}")).exists(),
        "dvdcli {shell} not reaped"
    );
    // Its child (not ours to reap) was killed with the group: its end of the FIFO closes as it
    // dies. Without the kill it would hold it for 1000 s; the limit only keeps a broken build
    // from hanging the suite.
    let mut fds = [PollFd::new(hung.held.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::try_from(LONG).unwrap()).unwrap();
    assert!(
        fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
        "child {child} of the killed dvdcli is still running"
    );
}

#[test]
fn a_helper_left_holding_stdout_does_not_stall_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("release");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The helper inherits stdout and blocks until someone opens the FIFO for writing.
    let prog = fake_dvdcli(
        dir.path(),
        &format!("cat '{}' >/dev/null &\necho /mnt/ok", fifo.display()),
    );
    // Should the call stall until the helper ends, a watchdog ends it after a while and says so,
    // so the test fails instead of hanging.
    let released_by_watchdog = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let fifo = fifo.clone();
        let flag = Arc::clone(&released_by_watchdog);
        std::thread::spawn(move || {
            if done_rx.recv_timeout(LONG).is_err() {
                flag.store(true, Ordering::SeqCst);
            }
            // Opening for writing (and closing) lets the helper's cat see end of file.
            drop(fs::OpenOptions::new().write(true).open(&fifo));
        })
    };
    let result = mount(&backend(prog, 2 * LONG), "", false);
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    assert_eq!(result.unwrap(), Path::new("/mnt/ok"));
    assert!(
        !released_by_watchdog.load(Ordering::SeqCst),
        "the call waited for the helper to close stdout"
    );
}

#[test]
fn failing_dvdcli_surfaces_its_exit_status_and_the_tail_of_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let prog = fake_dvdcli(
        dir.path(),
        "echo 'noise' >&2\necho 'Error: volume is attached to i-123' >&2\nexit 3",
    );
    let e = mount(&backend(prog, LONG), "", false).unwrap_err();
    match dvdcli_error(&e) {
        DvdcliError::Failed {
            status,
            stderr_tail,
            ..
        } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr_tail, "noise | Error: volume is attached to i-123");
        }
        other => panic!("{other:?}"),
    }
    let text = render_chain(&e);
    assert!(
        text.starts_with("volume \"pgdata\" (driver \"rexray\"): mount failed")
            && text.contains("exit status: 3"),
        "{text}"
    );
}

#[test]
fn megabytes_on_both_streams_neither_deadlock_nor_grow_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // More than a pipe holds on stderr before anything on stdout: a reader that drains stdout
    // first would wait for ever on a child blocked writing stderr.
    let prog = fake_dvdcli(
        dir.path(),
        "head -c 2000000 /dev/zero | tr '\\0' e >&2\necho >&2\necho 'the real reason' >&2\n\
         head -c 2000000 /dev/zero | tr '\\0' o\necho\nexit 1",
    );
    let e = mount(&backend(prog, LONG), "", false).unwrap_err();
    let DvdcliError::Failed { stderr_tail, .. } = dvdcli_error(&e) else {
        panic!("{e:?}")
    };
    assert!(
        stderr_tail.ends_with("the real reason"),
        "{stderr_tail:.80}"
    );
    assert!(stderr_tail.len() <= 1024, "{}", stderr_tail.len());
}

#[test]
fn garbage_relative_or_empty_output_is_refused() {
    for (out, shown) in [
        ("echo relative/path", "relative/path"),
        ("echo '/abs'; echo 'done'", "/abs | done"),
        ("true", ""),
        ("echo '  '", ""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = mount(&backend(fake_dvdcli(dir.path(), out), LONG), "", false).unwrap_err();
        match dvdcli_error(&e) {
            DvdcliError::BadOutput { stdout_tail, .. } => assert_eq!(stdout_tail, shown),
            other => panic!("{out}: {other:?}"),
        }
        let text = render_chain(&e);
        assert!(text.contains("printed no absolute mount point"), "{text}");
    }
    // The same for path, except that no output at all means "not mounted".
    let dir = tempfile::tempdir().unwrap();
    let b = backend(fake_dvdcli(dir.path(), "echo relative"), LONG);
    let e = b.path(&vol()).unwrap_err();
    assert!(matches!(dvdcli_error(&e), DvdcliError::BadOutput { .. }));
}

#[test]
fn missing_program_says_which() {
    let b = backend(PathBuf::from("/nonexistent/dvdcli"), LONG);
    let e = mount(&b, "", false).unwrap_err();
    assert!(matches!(
        dvdcli_error(&e),
        DvdcliError::Run(RunError::Spawn { .. })
    ));
    let text = render_chain(&e);
    assert!(text.contains("could not run /nonexistent/dvdcli"), "{text}");
}

#[test]
fn capabilities_are_unsupported_and_say_so() {
    let b = backend(PathBuf::from("/nonexistent/dvdcli"), LONG);
    let e = b.capabilities().unwrap_err();
    assert!(matches!(
        dvdcli_error(&e),
        DvdcliError::Unsupported {
            call: Call::Capabilities
        }
    ));
    let text = render_chain(&e);
    assert!(
        text.contains("dvdcli has no capabilities command; use the plugin backend"),
        "{text}"
    );
}
