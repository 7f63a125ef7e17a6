//! `dvdi run`: a plain process gets the volumes a task would, for real.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use support::host::{in_private_mount_ns, loop_devices_under};
use support::isolator::{is_mounted, text, Fixture};

fn dvdi(fx: &Fixture) -> Command {
    let mut c = fx.dvdi();
    c.arg("--plugin-dir")
        .arg(fx.root().join("plugins"))
        .arg("--default-driver")
        .arg("local");
    c
}

/// Starts `dvdi run` with a command that prints "ready" and then waits for a line on stdin.
fn start_waiting(fx: &Fixture, env: &[String], script: &str) -> (Child, BufReader<ChildStdout>) {
    let mut cmd = dvdi(fx);
    cmd.arg("run");
    for e in env {
        cmd.args(["-e", e]);
    }
    let mut child = cmd
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the command did not start");
    (child, out)
}

fn release(child: &mut Child) -> i32 {
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    child.wait().unwrap().code().unwrap_or(-1)
}

#[test]
fn data_persists_from_one_run_to_the_next() {
    let fx = Fixture::new();
    let target = fx.root().join("tmp/demo");
    let env = format!("DVDI_VOLUME_CONTAINERPATH={}", target.display());
    for expected in ["one\n", "one\none\n"] {
        let out = dvdi(&fx)
            .args(["run", "-e", "DVDI_VOLUME_NAME=demo", "-e", &env, "--"])
            .args([
                "sh",
                "-c",
                &format!("echo one >> {0}/log; cat {0}/log", target.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
    // The data lives in the volume, not in the container path.
    assert!(fx.config.local_root.join("demo/log").exists());
    assert!(!target.join("log").exists());
}

#[test]
fn exit_status_is_the_commands() {
    let fx = Fixture::new();
    let out = dvdi(&fx)
        .args(["run", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = dvdi(&fx)
        .args(["run", "--", "sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out));
}

#[test]
fn volume_variables_reach_the_command() {
    let fx = Fixture::new();
    let out = dvdi(&fx)
        .args([
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
            "-e",
            "OTHER=1",
            "--",
            "sh",
            "-c",
        ])
        .arg("echo $DVDI_VOLUME_NAME $OTHER")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v 1",
        "{}",
        text(&out)
    );
}

#[test]
fn bind_is_invisible_outside_the_commands_namespace() {
    let fx = Fixture::new();
    let target = fx.root().join("tmp/seen-inside");
    let env = vec![
        "DVDI_VOLUME_NAME=ns".to_owned(),
        format!("DVDI_VOLUME_CONTAINERPATH={}", target.display()),
    ];
    let (mut child, _out) = start_waiting(
        &fx,
        &env,
        "echo ready; read x; grep -q seen-inside /proc/self/mountinfo",
    );
    assert!(
        !is_mounted(&target),
        "the bind leaked into the parent's namespace"
    );
    assert_eq!(release(&mut child), 0, "the bind was not there inside");
}

#[test]
fn sigterm_to_dvdi_reaches_the_command() {
    let fx = Fixture::new();
    let (mut child, mut out) = start_waiting(
        &fx,
        &[],
        "trap 'echo got-term; exit 7' TERM; echo ready; read x",
    );
    // Keep the command's stdin open: only the signal may end its `read` (wait() would close it).
    let stdin = child.stdin.take();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest.trim(), "got-term");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn two_runs_share_one_volume_until_the_second_exits() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = vec![
            "DVDI_VOLUME_DRIVER=loop".to_owned(),
            "DVDI_VOLUME_NAME=shared".to_owned(),
        ];
        let host = fx.config.loop_root.join("mnt/shared");
        let (mut a, _oa) = start_waiting(&fx, &env, "echo ready; read x");
        let (mut b, _ob) = start_waiting(&fx, &env, "echo ready; read x");
        assert!(is_mounted(&host));
        assert_eq!(release(&mut a), 0);
        assert!(is_mounted(&host), "unmounted while the second run uses it");
        assert_eq!(release(&mut b), 0);
        assert!(!is_mounted(&host), "still mounted after both runs ended");
        assert!(!fx.recorded("loop", "shared"));
    });
}

#[test]
fn killed_dvdi_is_released_by_gc() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = vec![
            "DVDI_VOLUME_DRIVER=loop".to_owned(),
            "DVDI_VOLUME_NAME=orphan".to_owned(),
        ];
        let host = fx.config.loop_root.join("mnt/orphan");
        let (mut run, _out) = start_waiting(&fx, &env, "echo ready; read x");
        run.kill().unwrap();
        run.wait().unwrap();
        let before = dvdi(&fx).arg("status").output().unwrap();
        assert!(
            text(&before).contains("orphan") && text(&before).contains("dvdi-run-"),
            "{}",
            text(&before)
        );
        assert!(is_mounted(&host));
        let gc = dvdi(&fx).arg("gc").output().unwrap();
        assert!(gc.status.success(), "{}", text(&gc));
        assert!(
            text(&gc).contains("unmounted volume \"orphan\""),
            "{}",
            text(&gc)
        );
        assert!(!is_mounted(&host));
        let after = dvdi(&fx).arg("status").output().unwrap();
        assert!(
            text(&after).contains("no volumes recorded"),
            "{}",
            text(&after)
        );
    });
}

/// Processes running `sleep SECS` (SECS made unique by the caller), killed when dropped: a
/// failing test leaves none behind, though they live in a PID namespace of their own.
struct Sleepers(String);

impl Sleepers {
    fn new() -> Self {
        Self(format!("{}", 900_000 + std::process::id()))
    }

    fn pids(&self) -> Vec<i32> {
        let wanted = format!("sleep\0{}\0", self.0);
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
            })
            .collect()
    }

    /// The sleepers once one has exec'd: `echo ready` runs after the shell forks the
    /// background job, not after the job's exec, so its command line may still be the shell's
    /// for a moment. Waits for that exec (bounded), not for a time.
    fn started(&self) -> Vec<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let pids = self.pids();
            if !pids.is_empty() || std::time::Instant::now() > deadline {
                return pids;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn an_interrupted_command_takes_its_orphans_along_so_its_loop_volume_is_released_once() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let sleepers = Sleepers::new();
        let env = vec![
            "DVDI_VOLUME_DRIVER=loop".to_owned(),
            "DVDI_VOLUME_NAME=orphaned".to_owned(),
        ];
        // dvdi passes SIGTERM on to the shell, which dies of it; its background sleep, which no
        // one signals, would live on in the command's mount namespace, holding the volume's file
        // system and its loop device. (SIGTERM, not SIGINT: a shell started in the background,
        // as test runners may start everything, ignores SIGINT for good.)
        let script = format!("sleep {} & echo ready; wait", sleepers.0);
        let (run, _out) = start_waiting(&fx, &env, &script);
        assert_eq!(
            sleepers.started().len(),
            1,
            "the background sleep did not start"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(run.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut run = run;
        assert_eq!(run.wait().unwrap().code(), Some(128 + 15));
        assert_eq!(
            sleepers.pids(),
            Vec::<i32>::new(),
            "the command's orphan outlived dvdi run"
        );
        assert_eq!(
            loop_devices_under(fx.root()),
            Vec::<String>::new(),
            "the volume's loop device is still attached after dvdi run released it"
        );
        // The next run gets the volume on one device.
        let out = dvdi(&fx)
            .args(["run", "-e", &env[0], "-e", &env[1], "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(loop_devices_under(fx.root()), Vec::<String>::new());
        assert!(!fx.recorded("loop", "orphaned"));
    });
}

/// The one error line of `dvdi`'s stderr, which must be its last line; before it may come only
/// warnings the core logged on the way (a plugin that is not listening, say) and notes (a root
/// directory created).
fn the_one_error(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().collect();
    let (last, before) = lines.split_last().expect("no error on stderr");
    assert!(last.starts_with("dvdi: error: "), "{err}");
    assert!(
        before
            .iter()
            .all(|l| l.starts_with("dvdi: warning: ") || l.starts_with("dvdi: note: ")),
        "{err}"
    );
    last
}

fn assert_fails_cleanly(fx: &Fixture, args: &[&str], needle: &str) {
    let out = dvdi(fx).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = the_one_error(&err);
    assert!(last.contains(needle), "{err}");
    let status = dvdi(fx).arg("status").output().unwrap();
    assert!(
        text(&status).contains("no volumes recorded"),
        "{}",
        text(&status)
    );
}

#[test]
fn every_error_path_exits_non_zero_with_one_message_and_no_state() {
    let fx = Fixture::new();
    assert_fails_cleanly(
        &fx,
        &[
            "run",
            "-e",
            "DVDI_VOLUME_NAME=x",
            "-e",
            "DVDI_VOLUME_DRIVER=nosuch",
            "--",
            "true",
        ],
        "no plugin \"nosuch\" found",
    );
    assert_fails_cleanly(
        &fx,
        &["run", "-e", "DVDI_VOLUME_NAME10=x", "--", "true"],
        "DVDI_VOLUME_NAME10",
    );
    // A plugin that is down: its socket exists, nothing listens.
    std::fs::create_dir_all(fx.root().join("plugins")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(fx.root().join("plugins/down.sock")).unwrap());
    assert_fails_cleanly(
        &fx,
        &[
            "--mount-timeout",
            "1",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=x",
            "-e",
            "DVDI_VOLUME_DRIVER=down",
            "--",
            "true",
        ],
        "connecting failed",
    );
    // A target through a symlink.
    let tmp = fx.root().join("tmp");
    std::os::unix::fs::symlink("/etc", tmp.join("evil")).unwrap();
    let path = format!("DVDI_VOLUME_CONTAINERPATH={}", tmp.join("evil/x").display());
    assert_fails_cleanly(
        &fx,
        &["run", "-e", "DVDI_VOLUME_NAME=x", "-e", &path, "--", "true"],
        "symbolic link",
    );
    assert!(!Path::new("/etc/x").exists());
}

/// A root file system holding only a static busybox (from Debian's busybox-static).
fn busybox_rootfs(fx: &Fixture) -> std::path::PathBuf {
    let root = fx.mkdir("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect(
        "/bin/busybox (a static busybox) is missing: run .ci/setup (Debian package busybox-static)",
    );
    root
}

#[test]
fn rootfs_command_sees_the_volume_inside_its_root() {
    let fx = Fixture::new();
    let root = busybox_rootfs(&fx);
    let out = dvdi(&fx)
        .args(["run", "--rootfs"])
        .arg(&root)
        .args([
            "-e",
            "DVDI_VOLUME_NAME=chrooted",
            "-e",
            "DVDI_VOLUME_CONTAINERPATH=/var/data",
        ])
        .args(["--", "/bin/busybox", "sh", "-c"])
        .arg("echo inside > /var/data/f && /bin/busybox ls / && /bin/busybox cat /var/data/f")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The command's / is the rootfs: it sees bin and the created var, not the host's /.
    assert!(
        stdout.contains("bin") && stdout.contains("var") && !stdout.contains("proc"),
        "{stdout}"
    );
    assert!(stdout.ends_with("inside\n"), "{stdout}");
    // The target was made inside the rootfs, and the data went to the volume.
    assert!(root.join("var/data").is_dir());
    assert!(
        !root.join("var/data/f").exists(),
        "written under the rootfs, not the volume"
    );
    assert_eq!(
        std::fs::read_to_string(fx.config.local_root.join("chrooted/f")).unwrap(),
        "inside\n"
    );
}

#[test]
fn rootfs_symlink_to_host_etc_is_refused() {
    let fx = Fixture::new();
    let root = busybox_rootfs(&fx);
    std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();
    let out = dvdi(&fx)
        .args(["run", "--rootfs"])
        .arg(&root)
        .args([
            "-e",
            "DVDI_VOLUME_NAME=v",
            "-e",
            "DVDI_VOLUME_CONTAINERPATH=/data/x",
        ])
        .args(["--", "/bin/busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    assert!(!std::path::Path::new("/etc/x").exists());
}

/// `dvdi run` fails in a setup step of the command's child, with one message naming the step
/// and its paths and the OS error, exit status 125, and nothing recorded.
fn assert_setup_fails(fx: &Fixture, args: &[&str], parts: &[&str]) {
    let out = dvdi(fx).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = the_one_error(&err);
    for p in parts {
        assert!(last.contains(p), "{err:?} does not mention {p:?}");
    }
    assert!(!err.contains("Invalid argument"), "{err}");
    let status = dvdi(fx).arg("status").output().unwrap();
    assert!(
        text(&status).contains("no volumes recorded"),
        "{}",
        text(&status)
    );
}

#[test]
fn a_bind_onto_a_target_gone_from_view_names_the_step_and_both_paths() {
    let fx = Fixture::new();
    // Two volumes, the second's target inside the first's: once the first (empty) volume is
    // bound, the second's target — made by prepare in the directory now covered — is gone from
    // the command's view, and its bind fails for real with ENOENT.
    let outer = fx.root().join("tmp/outer");
    let inner = outer.join("inner");
    let args = [
        "run".to_owned(),
        "-e".to_owned(),
        "DVDI_VOLUME_NAME=outer".to_owned(),
        "-e".to_owned(),
        format!("DVDI_VOLUME_CONTAINERPATH={}", outer.display()),
        "-e".to_owned(),
        "DVDI_VOLUME_NAME1=inner".to_owned(),
        "-e".to_owned(),
        format!("DVDI_VOLUME_CONTAINERPATH1={}", inner.display()),
        "--".to_owned(),
        "true".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let source = fx.config.local_root.join("inner");
    assert_setup_fails(
        &fx,
        &args,
        &[
            "dvdi: error: setting up \"true\": binding the volume at ",
            &format!("{} onto {} failed", source.display(), inner.display()),
            "No such file or directory",
        ],
    );
}

#[test]
fn a_rootfs_without_the_command_names_the_command_and_the_rootfs() {
    let fx = Fixture::new();
    let root = busybox_rootfs(&fx);
    let root_arg = root.to_str().unwrap();
    assert_setup_fails(
        &fx,
        &[
            "run",
            "--rootfs",
            root_arg,
            "-e",
            "DVDI_VOLUME_NAME=v",
            "-e",
            "DVDI_VOLUME_CONTAINERPATH=/data",
            "--",
            "/bin/not-in-this-rootfs",
        ],
        &[
            &format!(
                "executing \"/bin/not-in-this-rootfs\" in the root file system {root_arg} failed"
            ),
            "No such file or directory",
        ],
    );
}

#[test]
fn a_rootfs_that_is_no_directory_names_the_chroot_step() {
    let fx = Fixture::new();
    let not_a_dir = fx.root().join("rootfs-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let root_arg = not_a_dir.to_str().unwrap();
    assert_setup_fails(
        &fx,
        &["run", "--rootfs", root_arg, "--", "/bin/true"],
        &[
            &format!("changing the root to {root_arg} (chroot) failed"),
            "Not a directory",
        ],
    );
}

/// `dvdi run` shares the isolator's answer to a task user who swaps its sandbox's checked entry
/// for a symbolic link after prepare: the command's bind does not follow it. The swap is made by
/// a real `nobody` process, from inside the plugin's Mount (after the targets were checked, before
/// the bind); the plugin is a test double only in that it runs the swap.
#[test]
fn a_sandbox_entry_swapped_for_a_symlink_after_prepare_cannot_move_the_bind() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let fx = Fixture::new();
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(fx.root(), 0o755);
    let victim = fx.mkdir("victim");
    std::fs::write(victim.join("marker"), "root's own").unwrap();
    let sandbox = fx.mkdir("sandbox");
    std::os::unix::fs::chown(&sandbox, Some(65534), Some(65534)).unwrap();
    mode(&sandbox, 0o750);
    let volumes = fx.root().join("plugin-volumes");
    let inner = support::plugin::memory_plugin(volumes.clone());
    let (data, to) = (sandbox.join("data"), victim.clone());
    let as_nobody = |argv: &[&Path]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .uid(65534)
            .gid(65534)
            .status()
            .unwrap()
            .success()
    };
    std::fs::create_dir_all(fx.root().join("plugins")).unwrap();
    let _plugin =
        support::plugin::TestPlugin::unix(&fx.root().join("plugins/swapper.sock"), move |req| {
            if req.path == "/VolumeDriver.Mount" {
                let moved = data.with_extension("moved");
                assert!(
                    as_nobody(&[Path::new("mv"), &data, &moved])
                        && as_nobody(&[Path::new("ln"), Path::new("-s"), &to, &data]),
                    "the task user could not swap its own sandbox's entry"
                );
            }
            let reply = inner(req);
            if req.path == "/VolumeDriver.Mount" {
                std::fs::write(volumes.join("v/from-volume"), "the volume's").unwrap();
            }
            reply
        });
    let app = fx.root().join("app.json");
    let json = serde_json::json!({"container": {"volumes": [{
        "containerPath": "data",
        "external": {"provider": "dvdi", "name": "v", "options": {"dvdi/driver": "swapper"}},
    }]}});
    std::fs::write(&app, json.to_string()).unwrap();
    let check = format!(
        "test -f {0}/marker && ! test -e {0}/from-volume",
        victim.display()
    );
    let out = dvdi(&fx)
        .args(["run", "--env-file"])
        .arg(&app)
        .arg("--sandbox")
        .arg(&sandbox)
        .args(["--", "sh", "-c", &check])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the bind followed the task's link onto {}: {}",
        victim.display(),
        text(&out)
    );
}

#[test]
fn reopening_a_loop_volume_with_another_size_or_fstype_says_they_are_ignored() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let run = |opts: &str| {
            let out = dvdi(&fx)
                .args([
                    "run",
                    "-e",
                    "DVDI_VOLUME_DRIVER=loop",
                    "-e",
                    "DVDI_VOLUME_NAME=sized",
                ])
                .args(["-e", &format!("DVDI_VOLUME_OPTS={opts}"), "--", "true"])
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        run("size=1");
        let image = fx.config.loop_root.join("images/sized.img");
        let err = run("size=2,fstype=xfs");
        for needle in [
            format!(
                "dvdi: warning: volume \"sized\" (driver \"loop\") exists: option size=2 is ignored: its image {} has 1 GiB (an image is never resized)",
                image.display()
            ),
            "dvdi: warning: volume \"sized\" (driver \"loop\") exists: option fstype=xfs is ignored: it holds ext4".to_owned(),
        ] {
            assert!(err.contains(&needle), "{needle:?} not in {err}");
        }
        // The same options again say nothing.
        assert_eq!(run("size=1,fstype=ext4"), "");
    });
}

#[test]
fn gc_does_not_mount_again_a_loop_volume_a_running_command_still_has() {
    use mesos_dvdi::mount::{Host, MntFlags, Mounter};
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = vec![
            "DVDI_VOLUME_DRIVER=loop".to_owned(),
            "DVDI_VOLUME_NAME=held".to_owned(),
        ];
        let (mut run, _out) = start_waiting(&fx, &env, "echo ready; read x");
        let host = fx.config.loop_root.join("mnt/held");
        let devices = loop_devices_under(fx.root());
        assert_eq!(devices.len(), 1);
        // An operator unmounts the host's mount while the command runs on its own copy.
        Host.umount(&host, MntFlags::empty()).unwrap();
        let gc = dvdi(&fx).arg("gc").output().unwrap();
        assert_eq!(gc.status.code(), Some(2), "{}", text(&gc));
        let err = String::from_utf8_lossy(&gc.stderr);
        assert!(
            err.contains(&format!(
                "volume \"held\" (driver \"loop\"): not mounted again at {}",
                host.display()
            )) && err.contains("in the mount namespace of process"),
            "{err}"
        );
        assert_eq!(loop_devices_under(fx.root()), devices, "a second device");
        assert!(!is_mounted(&host));
        let status = dvdi(&fx).arg("status").output().unwrap();
        assert!(
            text(&status).contains("not mounted again"),
            "{}",
            text(&status)
        );
        // The command ends; its release lets the device go.
        assert_eq!(release(&mut run), 0);
        assert_eq!(loop_devices_under(fx.root()), Vec::<String>::new());
        assert!(!fx.recorded("loop", "held"));
    });
}

/// How long a test lets an interrupted `dvdi run` take to end before calling it a hang (a bound,
/// never reached when the code works; not a measurement).
const HANG: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `cmd` (with stderr piped) and returns its exit status; SIGKILLs it and fails the test if
/// it has not ended within [`HANG`] of `started` returning.
fn bounded(
    mut cmd: Command,
    started: impl FnOnce(&mut BufReader<std::process::ChildStderr>, nix::unistd::Pid),
) -> (Option<i32>, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait().unwrap()));
    // Killed if `started` or the wait below fails, so no dvdi is left behind.
    struct Kill(nix::unistd::Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let guard = Kill(pid);
    started(&mut err, pid);
    let status = rx.recv_timeout(HANG).expect("dvdi run did not end");
    std::mem::forget(guard);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    (status.code(), rest)
}

/// Starts `dvdi run` with `args` (before `--`) and `true` as the command, reads its stderr until
/// a line for which `ready` holds (it may assert on the lines it sees), interrupts it with
/// SIGINT, and returns its exit status and everything it wrote to stderr.
fn interrupt_when(
    fx: &Fixture,
    args: &[&str],
    ready: impl Fn(&str) -> bool,
) -> (Option<i32>, String) {
    let mut cmd = dvdi(fx);
    cmd.args(args).args(["--", "true"]).env_remove("RUST_LOG");
    let mut seen = String::new();
    let (code, rest) = bounded(cmd, |err, pid| loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "ended before the awaited line: {seen}"
        );
        seen.push_str(&line);
        if ready(&line) {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
            return;
        }
    });
    (code, seen + &rest)
}

#[test]
fn ctrl_c_ends_the_wait_for_a_plugin_that_refuses_connections_leaving_nothing() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.root().join("plugins")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(fx.root().join("plugins/gone.sock")).unwrap());
    // Retried for ten minutes if nothing interrupts it.
    let (code, err) = interrupt_when(
        &fx,
        &[
            "--plugin-connect-timeout",
            "600",
            "--mount-timeout",
            "600",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
            "-e",
            "DVDI_VOLUME_DRIVER=gone",
        ],
        |line| line.contains("plugin gone is not accepting connections"),
    );
    assert_eq!(code, Some(128 + 2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "dvdi: interrupted by SIGINT while preparing the volumes; nothing was left attached"
        ) && last.contains("interrupted while the plugin at unix://"),
        "{err}"
    );
    assert!(!fx.recorded("gone", "v"));
}

#[test]
fn a_run_waiting_for_zookeeper_says_so_and_ctrl_c_ends_the_wait() {
    let fx = Fixture::new();
    // A ZooKeeper that accepts connections and never answers: the client waits for its
    // handshake (up to 2/5 of the session timeout), the run up to a session timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("zk://{}/dvdi", silent.local_addr().unwrap());
    let (code, err) = interrupt_when(
        &fx,
        &[
            "--coordination",
            &target,
            "--lease-session-timeout",
            "600",
            "--lease-driver",
            "local",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
        ],
        // The first progress line (after a second) says what the run waits for.
        |line| {
            let progress = line.starts_with("dvdi: attaching v via local…");
            assert!(
                !progress || line.contains(&format!("waiting for ZooKeeper at {target} to answer")),
                "{line}"
            );
            progress
        },
    );
    assert_eq!(code, Some(128 + 2), "{err}");
    assert!(
        err.lines().last().unwrap_or_default().contains(&format!(
            "volume \"v\" (driver \"local\"): interrupted while waiting for ZooKeeper at {target} to answer"
        )),
        "{err}"
    );
    assert!(!fx.recorded("local", "v"));
    drop(silent);
}

#[test]
fn a_leased_run_fails_at_once_when_zookeeper_refuses_connections() {
    let fx = Fixture::new();
    // A port nothing listens on: the first connection attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("zk://127.0.0.1:{port}/dvdi");
    // The session timeout is ten minutes: only the refused attempt can end the grace a new
    // process gives its first session before the bound below (a bound on a hang, never reached
    // when the code works; not a measurement).
    let mut cmd = dvdi(&fx);
    cmd.args(["--coordination", &target, "--lease-session-timeout", "600"])
        .args([
            "--lease-driver",
            "local",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=v",
            "--",
            "true",
        ])
        .env_remove("RUST_LOG");
    let (code, err) = bounded(cmd, |_, _| {});
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("volume \"v\" (driver \"local\")") && err.contains(&target),
        "{err}"
    );
    assert!(!fx.recorded("local", "v"));
}

#[test]
fn joining_a_mounted_volume_with_other_options_says_they_are_ignored() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let first = vec![
            "DVDI_VOLUME_DRIVER=loop".to_owned(),
            "DVDI_VOLUME_NAME=joined".to_owned(),
            "DVDI_VOLUME_OPTS=size=1".to_owned(),
        ];
        let (mut holder, _out) = start_waiting(&fx, &first, "echo ready; read x");
        let join = |opts: &str| {
            let out = dvdi(&fx)
                .args([
                    "run",
                    "-e",
                    "DVDI_VOLUME_DRIVER=loop",
                    "-e",
                    "DVDI_VOLUME_NAME=joined",
                ])
                .args(["-e", &format!("DVDI_VOLUME_OPTS={opts}"), "--", "true"])
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let err = join("size=2,fstype=xfs");
        assert!(
            err.contains("dvdi: warning: volume \"joined\" (driver \"loop\") is mounted here already with options size=1; this container's options size=2,fstype=xfs are ignored"),
            "{err}"
        );
        assert_eq!(join("size=1"), "", "the same options said something");
        assert_eq!(release(&mut holder), 0);
    });
}
