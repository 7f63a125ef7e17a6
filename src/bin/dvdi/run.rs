//! `dvdi run`: give a plain process the volumes a Mesos task would get, exactly as the module
//! would, without Mesos.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::backend::Waits;
use mesos_dvdi::config::Config;
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{process_start_time, ContainerInput, Isolator, LaunchPlan};
use mesos_dvdi::mount::{self, Bind, Host};
use mesos_dvdi::state::Owner;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use crate::envfile::TaskInput;

/// The signals `dvdi run` passes on to the command.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Exit status for a failure of dvdi itself (as `docker run` and `chroot` use), so it cannot be
/// taken for the command's own status.
pub const EXIT_DVDI_FAILED: u8 = 125;

/// What `dvdi run` needs beyond the configuration.
pub struct RunRequest {
    /// The task's environment and volumes.
    pub task: TaskInput,
    /// Chroot the command here (the container's rootfs).
    pub rootfs: Option<PathBuf>,
    /// The sandbox: where relative container paths lie.
    pub sandbox: PathBuf,
    /// The command and its arguments.
    pub argv: Vec<String>,
}

/// Shared with the signal thread: the command's pid once it runs, and whether a signal came
/// before that.
#[derive(Default)]
struct SignalState {
    child: Option<Pid>,
    early: Option<Signal>,
    /// Volumes are being prepared: a signal interrupts what the preparation waits for.
    preparing: bool,
}

fn forward_signals(set: SigSet, state: Arc<Mutex<SignalState>>, waits: Waits) {
    std::thread::spawn(move || loop {
        let Ok(sig) = set.wait() else { continue };
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match st.child {
            Some(pid) => {
                let _ = nix::sys::signal::kill(pid, sig);
            }
            None => {
                st.early.get_or_insert(sig);
                // A lease or a plugin waited for gives up now, and the prepare undoes what it
                // did. (During cleanup nothing is interrupted: releasing the volumes comes first.)
                if st.preparing {
                    waits.interrupt();
                }
            }
        }
    });
}

/// Why `dvdi run` stops before the command's own status could stand.
enum Stop {
    /// dvdi itself failed (exit 125), with the message.
    Failed(String),
    /// A signal came before the command started (exit 128 + the signal).
    Interrupted(Signal),
}

impl From<String> for Stop {
    fn from(msg: String) -> Self {
        Stop::Failed(msg)
    }
}

/// Prints "attaching … N s" every second while `work` runs, so a slow attach is visible, with
/// what the backends say they wait for (a plugin refusing connections) when they wait.
fn with_progress<T>(what: &str, waits: &Waits, work: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let start = Instant::now();
    let what = what.to_owned();
    let waits = waits.clone();
    let ticker = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(1)) {
            let reasons = waits.current();
            let secs = start.elapsed().as_secs();
            if reasons.is_empty() {
                say!("dvdi: {what}… {secs} s");
            } else {
                say!("dvdi: {what}… {secs} s: {}", reasons.join("; "));
            }
        }
    });
    let out = work();
    drop(done);
    let _ = ticker.join();
    out
}

fn describe(task: &TaskInput, config: &Config) -> String {
    let docker_volumes = config.docker_volumes_of(&task.docker_volumes);
    match mesos_dvdi::spec::resolve(&task.env, docker_volumes, &[], &config.resolve_options()) {
        Ok(r) if !r.volumes.is_empty() => {
            let names: Vec<String> = r
                .volumes
                .iter()
                .map(|v| format!("{} via {}", v.name, v.driver))
                .collect();
            format!("attaching {}", names.join(", "))
        }
        _ => "preparing volumes".to_owned(),
    }
}

/// Runs the command with its volumes; returns the command's exit status (128+signal when it was
/// killed), or [`EXIT_DVDI_FAILED`] with one message on stderr when dvdi itself failed.
pub fn run(config: &Config, req: RunRequest) -> ExitCode {
    let mut forwarded = SigSet::empty();
    for s in FORWARDED {
        forwarded.add(s);
    }
    // Blocked here (inherited by every thread started below) and taken by one thread with
    // sigwait, so a Ctrl-C is passed to the command instead of killing dvdi mid-cleanup.
    if let Err(e) = forwarded.thread_block() {
        say!("dvdi: error: blocking signals failed: {e}");
        return ExitCode::from(EXIT_DVDI_FAILED);
    }
    let signals = Arc::new(Mutex::new(SignalState::default()));
    let registry = Arc::new(Registry::new(config.clone(), Arc::new(Host)));
    let waits = registry.waits().clone();
    forward_signals(forwarded, Arc::clone(&signals), waits.clone());

    let fail = |msg: String| {
        say!("dvdi: error: {msg}");
        ExitCode::from(EXIT_DVDI_FAILED)
    };
    // The roots this run may create: each one it does create is said, once, in case a flag
    // was mistyped (a new, empty volume would look like lost data).
    let roots = [
        ("work_dir", "--work-dir", &config.work_dir),
        ("local_root", "--local-root", &config.local_root),
        ("loop_root", "--loop-root", &config.loop_root),
    ];
    let missing: Vec<_> = roots.iter().filter(|(_, _, dir)| !dir.exists()).collect();
    let say_created = || {
        for (param, flag, dir) in &missing {
            if dir.exists() {
                say!(
                    "dvdi: note: created {} ({param}, {flag}), which did not exist",
                    dir.display()
                );
            }
        }
    };
    let isolator = match Isolator::open(config.clone(), registry) {
        Ok(i) => i.with_waits(waits.clone()),
        Err(e) => {
            say_created();
            return fail(render_chain(&e));
        }
    };
    let fenced = stop_on_fence(&isolator, &signals);
    let pid = std::process::id();
    let Some(start_time) = process_start_time(i32::try_from(pid).expect("pids fit i32")) else {
        return fail("cannot read this process's start time from /proc".to_owned());
    };
    let id = format!("dvdi-run-{pid}-{start_time}");
    let owner = Owner::Process {
        pid: i32::try_from(pid).expect("pids fit i32"),
        start_time,
    };
    let input = ContainerInput {
        env: req
            .task
            .env
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect(),
        docker_volumes: req.task.docker_volumes.clone(),
        csi_volumes: Vec::new(),
        sandbox: req.sandbox.clone(),
        rootfs: req.rootfs.clone(),
        user: None,
    };
    let preparing = |on: bool| {
        let mut st = signals.lock().unwrap_or_else(|p| p.into_inner());
        st.preparing = on;
        if on && st.early.is_some() {
            waits.interrupt();
        }
    };
    preparing(true);
    let prepared = with_progress(&describe(&req.task, config), &waits, || {
        isolator.prepare(&id, owner, &input)
    });
    preparing(false);
    say_created();
    let plan = match prepared {
        Ok(plan) => plan,
        Err(e) => {
            let early = signals.lock().unwrap_or_else(|p| p.into_inner()).early;
            return match early {
                // Interrupted (or failed meanwhile): what prepare did is undone either way.
                Some(sig) if sig != Signal::SIGKILL => {
                    say!(
                        "dvdi: interrupted by {sig} while preparing the volumes; nothing was left attached ({})",
                        render_chain(&e)
                    );
                    exit_for(sig)
                }
                _ => fail(render_chain(&e)),
            };
        }
    };
    for w in &plan.warnings {
        say!("dvdi: warning: {w}");
    }
    let status = spawn_and_wait(&req, &plan, &signals);
    let cleaned = isolator.cleanup(&id);
    if let Some(why) = fenced.lock().unwrap_or_else(|p| p.into_inner()).take() {
        if let Err(e) = cleaned {
            say!("dvdi: error: {}", render_chain(&e));
        }
        return fail(format!("{why}; the command was stopped (SIGKILL)"));
    }
    let code = match status {
        Ok(code) => code,
        Err(stop) => {
            if let Err(e) = &cleaned {
                say!("dvdi: error: {}", render_chain(e));
            }
            return match stop {
                Stop::Failed(msg) => fail(msg),
                Stop::Interrupted(sig) => {
                    let released = if cleaned.is_ok() {
                        "its volumes were released"
                    } else {
                        "see above for the volumes left to dvdi gc"
                    };
                    say!("dvdi: interrupted by {sig} before the command started; {released}");
                    exit_for(sig)
                }
            };
        }
    };
    if let Err(e) = cleaned {
        // The command ran; its status stands. The volume stays recorded for `dvdi gc`.
        say!("dvdi: error: {}", render_chain(&e));
    }
    ExitCode::from(code)
}

/// The exit status of a `dvdi run` ended by `sig` before its command ran: 128 + the signal, as
/// the shell reports a command the signal killed.
fn exit_for(sig: Signal) -> ExitCode {
    ExitCode::from(u8::try_from(128 + sig as i32).unwrap_or(u8::MAX))
}

/// Fencing for `dvdi run`: when a lease the command's volumes depend on is lost, the command is
/// killed at once (as Mesos kills a fenced container) and the reason kept for the final message.
fn stop_on_fence(
    isolator: &Isolator,
    signals: &Arc<Mutex<SignalState>>,
) -> Arc<Mutex<Option<String>>> {
    let fenced = Arc::new(Mutex::new(None));
    let (why, signals) = (Arc::clone(&fenced), Arc::clone(signals));
    isolator.set_fence_handler(Arc::new(move |_, message: &str| {
        say!("dvdi: {message}: stopping the command");
        why.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| message.to_owned());
        let mut st = signals.lock().unwrap_or_else(|p| p.into_inner());
        match st.child {
            Some(pid) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
            None => {
                st.early.get_or_insert(Signal::SIGKILL);
            }
        }
    }));
    fenced
}

/// What the child (the first process of the command's PID namespace) does between fork and
/// exec, each failure rendered with its step and paths; then it forks the command and becomes
/// its init (see [`crate::init`]).
fn set_up_child(alive: RawFd, binds: &[Bind], rootfs: Option<&Path>) -> Result<(), String> {
    // The command's namespace dies with dvdi, so a killed `dvdi run` never leaves anything
    // running on a volume `dvdi gc` is about to release.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("asking to be killed with dvdi (PR_SET_PDEATHSIG) failed: {e}"))?;
    // dvdi may have died before that took effect. Its pid is not visible from this namespace
    // (getppid says 0), so ask the pipe whose write end only dvdi still holds.
    if dvdi_gone(alive) {
        return Err("dvdi exited before the command started".to_owned());
    }
    mount::enter_container(binds, rootfs).map_err(|e| render_chain(&e))?;
    crate::init::fork_command(&FORWARDED)
        .map_err(|e| format!("starting the command under its namespace's init failed: {e}"))
}

/// Whether the write end of the pipe whose read end is `alive` is closed everywhere: dvdi, its
/// last holder, has exited.
fn dvdi_gone(alive: RawFd) -> bool {
    let mut fds = [libc::pollfd {
        fd: alive,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is one valid pollfd that outlives the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n == 1 && fds[0].revents & libc::POLLHUP != 0
}

/// Runs `spawn` with the command's process made the first of a new PID namespace, leaving this
/// thread's later children (helper programs at cleanup) in dvdi's own.
fn in_new_pid_namespace<T>(spawn: impl FnOnce() -> T) -> Result<T, String> {
    let own = File::open("/proc/thread-self/ns/pid")
        .map_err(|e| format!("opening /proc/thread-self/ns/pid failed: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("creating a PID namespace for the command failed: {e}"))?;
    let out = spawn();
    // unshare(CLONE_NEWPID) moves only this thread's future children; back to its own
    // namespace, which may always be entered again.
    nix::sched::setns(&own, CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("returning to dvdi's own PID namespace failed: {e}"))?;
    Ok(out)
}

/// The longest message the child writes: what one pipe write delivers whole without blocking.
const PIPE_BUF: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn spawn_and_wait(
    req: &RunRequest,
    plan: &LaunchPlan,
    signals: &Arc<Mutex<SignalState>>,
) -> Result<u8, Stop> {
    let binds: Vec<Bind> = plan
        .mounts
        .iter()
        .map(|m| Bind {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();
    let rootfs = req.rootfs.clone();
    let (program, args) = req.argv.split_first().expect("clap requires a command");
    // The child's setup failures come back as text over this pipe: std's own pipe carries only
    // an errno (a bare "Invalid argument" for any other error), which names no step and no path.
    // Both ends are close-on-exec: a successful exec closes the child's end unwritten, and the
    // command inherits neither.
    let (report, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the pipe for the command's setup errors failed: {e}"))?;
    let report_w = File::from(report_w);
    // Held by dvdi alone (the child closes its copy first): closed everywhere once dvdi is gone.
    let (alive, alive_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the pipe that tells the command dvdi lives failed: {e}"))?;
    let (alive_raw, alive_w_raw) = (alive.as_raw_fd(), alive_w.as_raw_fd());
    let mut cmd = Command::new(program);
    cmd.args(args).envs(req.task.env.iter().cloned());
    // SAFETY: the closure runs in the child between fork and exec. dvdi is single-threaded at
    // this point apart from the signal thread, which holds no lock the child needs (it blocks in
    // sigwait), so the allocation in the mount calls and the message cannot deadlock; every call
    // used is a plain system call wrapper. The close is of the child's own copy of the pipe.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(alive_w_raw);
            set_up_child(alive_raw, &binds, rootfs.as_deref()).map_err(|msg| {
                // At most PIPE_BUF bytes: the write is atomic and never blocks (the parent
                // reads only once the child is gone).
                let _ = (&report_w).write_all(truncated(&msg, PIPE_BUF).as_bytes());
                std::io::Error::other(msg)
            })
        });
    }
    // Held across spawn: a signal that arrives while the command starts waits for its pid
    // instead of being taken for one that came before the command existed.
    let mut state = signals.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(sig) = state.early {
        return Err(Stop::Interrupted(sig));
    }
    let spawned = in_new_pid_namespace(|| cmd.spawn())?;
    // Drops the pre_exec closure and with it this process's copy of the pipe's write end, so
    // the read below ends.
    drop(cmd);
    drop((alive, alive_w));
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut step = String::new();
            let _ = File::from(report).read_to_string(&mut step);
            return Err(Stop::Failed(if step.is_empty() {
                // Every setup step passed: exec itself failed.
                let inside = req.rootfs.as_ref().map_or_else(String::new, |r| {
                    format!(" in the root file system {}", r.display())
                });
                format!("executing {program:?}{inside} failed: {e}")
            } else {
                format!("setting up {program:?}: {step}")
            }));
        }
    };
    state.child = Some(Pid::from_raw(
        i32::try_from(child.id()).expect("pids fit i32"),
    ));
    drop(state);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {program:?} failed: {e}"))?;
    signals.lock().unwrap_or_else(|p| p.into_inner()).child = None;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    })
}
