//! The agents: each a thread of the test that runs one `dvdi run` process after another, the
//! workload's holds, and lets the nemesis signal whichever process is the agent's now.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::cluster::{Cluster, VOLUMES};
use crate::{Rng, WRITER_JOB};

/// What the agents share with the nemesis.
pub struct Agents {
    stop: AtomicBool,
    /// Bumped by a simultaneous start: every idle agent starts its next hold at once.
    go: Mutex<u64>,
    wake: Condvar,
    slots: Vec<Mutex<Slot>>,
    /// Agents whose loop still runs.
    running: Mutex<usize>,
    ended: Condvar,
    /// How the holds ended, counted by kind.
    outcomes: Mutex<BTreeMap<String, usize>>,
}

/// One agent's process, if it runs one now.
#[derive(Default)]
struct Slot {
    /// The `dvdi run` it runs; unreaped while set, so signalling it never reaches another
    /// process.
    pid: Option<Pid>,
    /// Its last `dvdi run` was killed: `dvdi gc` releases what it held before the next.
    needs_gc: bool,
}

impl Agents {
    /// `n` agents, none running yet.
    pub fn new(n: usize) -> Agents {
        Agents {
            stop: AtomicBool::new(false),
            go: Mutex::new(0),
            wake: Condvar::new(),
            slots: (0..n).map(|_| Mutex::default()).collect(),
            running: Mutex::new(n),
            ended: Condvar::new(),
            outcomes: Mutex::default(),
        }
    }

    fn slot(&self, i: usize) -> MutexGuard<'_, Slot> {
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Agent `i`'s loop: idle, hold a volume, again, until [`Agents::finish`]. Its random
    /// choices come from `rng`.
    pub fn run(&self, c: &Cluster, i: usize, mut rng: Rng) {
        let _ended = Ended(self);
        let mut hold = 0;
        while self.idle(Duration::from_millis(rng.between(50, 1500))) {
            let needs_gc = self.slot(i).needs_gc;
            if needs_gc && self.gc(c, i) {
                self.slot(i).needs_gc = false;
            }
            hold += 1;
            let rw = rng.chance(60);
            let v = usize::from(rng.chance(30));
            let hold_ms = rng.between(200, 2500);
            let outcome = self.hold(c, i, hold, rw, v, hold_ms);
            *self
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(outcome)
                .or_default() += 1;
        }
    }

    /// Waits `d`, or less when a simultaneous start comes; false once the agents are to stop.
    fn idle(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut go = self.go.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *go;
        while !self.stop.load(Ordering::SeqCst) && *go == seen {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            go = self
                .wake
                .wait_timeout(go, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !self.stop.load(Ordering::SeqCst)
    }

    /// One hold: `dvdi run` as agent `i` of volume `v` with a writer for `hold_ms`; how it
    /// ended.
    fn hold(&self, c: &Cluster, i: usize, hold: u64, rw: bool, v: usize, hold_ms: u64) -> String {
        let (driver, name) = VOLUMES[v];
        let job = serde_json::json!({
            "agent": i, "rw": rw, "hold": hold, "hold_ms": hold_ms,
            "volume": c.container_path(i), "log": c.log(i, v, rw),
        });
        let err_path = c.agent_dir(i).join("dvdi-run.err");
        let err = std::fs::File::create(&err_path).expect("dvdi's stderr file");
        let mut cmd = c.dvdi(i);
        cmd.arg("run")
            .args(["-e", &format!("DVDI_VOLUME_DRIVER={driver}")])
            .args(["-e", &format!("DVDI_VOLUME_NAME={name}")])
            .args([
                "-e",
                &format!(
                    "DVDI_VOLUME_CONTAINERPATH={}",
                    c.container_path(i).display()
                ),
            ]);
        if !rw {
            cmd.args(["-e", "DVDI_VOLUME_READONLY=true"]);
        }
        cmd.arg("--")
            .arg(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "nemesis_writer",
                "--ignored",
                "--nocapture",
                "--quiet",
            ])
            .env(WRITER_JOB, job.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent. The agent's
        // process dies with the thread that started it, even if the test aborts (and its writer
        // with it: dvdi asks the same for its command).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().expect("run dvdi");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit i32"));
        self.slot(i).pid = Some(pid);
        // Waits for the exit without reaping, so that the pid stays this process's until the
        // slot no longer names it.
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("waitid dvdi (pid {pid}): {e}"),
                Ok(_) => break,
            }
        }
        self.slot(i).pid = None;
        let status = child.wait().expect("reap dvdi");
        let text = std::fs::read_to_string(&err_path).unwrap_or_default();
        outcome(status, &text)
    }

    /// Runs `dvdi gc` as agent `i`: what a killed `dvdi run` held is released. Whether it
    /// succeeded.
    pub fn gc(&self, c: &Cluster, i: usize) -> bool {
        let out = c
            .dvdi(i)
            .arg("gc")
            .stdin(Stdio::null())
            .output()
            .expect("run dvdi gc");
        let key = if out.status.success() {
            "dvdi gc: ok".to_owned()
        } else {
            format!("dvdi gc: failed: {}", first_error(&out.stderr))
        };
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
        out.status.success()
    }

    /// Whether the agents are stopping (the schedule's end, or one of them failed).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A simultaneous start: every idle agent starts its next hold now.
    pub fn start_all_idle(&self) {
        *self.go.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.wake.notify_all();
    }

    /// Sends `signal` to agent `i`'s process; false when it runs none.
    pub fn signal(&self, i: usize, signal: Signal) -> bool {
        let mut slot = self.slot(i);
        let Some(pid) = slot.pid else {
            return false;
        };
        kill(pid, signal).expect("signal an agent's dvdi");
        if signal == Signal::SIGKILL {
            slot.needs_gc = true;
        }
        true
    }

    /// Lets every agent finish its hold and end; waits for that up to `within`, then kills
    /// what still runs and fails.
    pub fn finish(&self, within: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_all();
        let deadline = Instant::now() + within;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(running);
                self.abort();
                panic!("the agents did not end within {within:?} of the schedule's end");
            }
            running = self
                .ended
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the agents now: every process they run is resumed and killed.
    pub fn abort(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_all();
        for i in 0..self.slots.len() {
            let slot = self.slot(i);
            if let Some(pid) = slot.pid {
                let _ = kill(pid, Signal::SIGCONT);
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// A guard that aborts the agents if the thread holding it unwinds.
    pub fn abort_on_unwind(&self) -> AbortOnUnwind<'_> {
        AbortOnUnwind(self)
    }

    /// How the holds ended, e.g. `completed: 40, fenced (lease lost): 3`.
    pub fn outcomes(&self) -> String {
        let o = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        o.iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Aborts the agents when dropped during a panic.
pub struct AbortOnUnwind<'a>(&'a Agents);

impl Drop for AbortOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Counts an agent's loop as ended when dropped; a panicking agent stops the others.
struct Ended<'a>(&'a Agents);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
        *self.0.running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.ended.notify_all();
    }
}

/// What `stderr` says went wrong, cut short, to count alike failures together: a panic's
/// place and message (the writer's), else the first line naming an error, else the first line.
fn first_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let found = match lines.iter().position(|l| l.contains("panicked at")) {
        Some(i) => lines[i..]
            .iter()
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        None => lines
            .iter()
            .find(|l| l.contains("error"))
            .or(lines.first())
            .map_or_else(String::new, |l| (*l).to_owned()),
    };
    found.chars().take(200).collect()
}

/// How a hold ended, from dvdi's status and stderr.
fn outcome(status: ExitStatus, stderr: &str) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "completed".to_owned(),
        (None, Some(libc::SIGKILL)) => "killed by the nemesis".to_owned(),
        (Some(125), _) if stderr.contains("lease lost") => "fenced (lease lost)".to_owned(),
        (Some(125), _) if stderr.contains("lease refused") => "refused (held elsewhere)".to_owned(),
        (Some(125), _) if stderr.contains("ZooKeeper") => "no ZooKeeper session".to_owned(),
        _ => format!("other ({status}): {}", first_error(stderr.as_bytes())),
    }
}
