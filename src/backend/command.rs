//! Running a helper program with a time limit: every call of the dvdcli backend and the loop
//! driver's mkfs.
//!
//! The child runs in its own process group, killed whole at the timeout (it may have children of
//! its own), and is always reaped, by a small waiter thread that outlives the call only when a
//! killed child cannot die yet. Output is read with poll(2), capped, and only until the child
//! exits: a helper it left running with our pipes open cannot stall a call.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Most output kept from each stream (its end: that is where the mount point and the final
/// error are); the rest is read and dropped.
const OUTPUT_CAP: usize = 64 * 1024;

/// Most output read after the child has exited (from helpers it left holding the pipes).
const DRAIN_CAP: usize = 1024 * 1024;

/// How often a spawn that finds the program busy ("Text file busy") is retried.
const SPAWN_RETRIES: u32 = 5;

/// How long a call waits for a killed child to be reaped before returning anyway. SIGKILL takes
/// effect at once except in uninterruptible sleep (I/O to a dead device); the waiter thread then
/// reaps the child whenever it dies.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// A run that did not end with an exit status in time.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("could not run {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The thread or socket that waits for the child could not be set up.
    #[error("could not set up waiting for {program}")]
    Waiter {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Its output could not be read (it has been killed).
    #[error("reading the output of {program} failed")]
    Read {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Its exit status could not be had.
    #[error("waiting for {program} failed")]
    Wait {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It did not finish in time and was killed, with its process group.
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The limit.
        after: Duration,
    },
}

/// A program that exited within its time.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// The end of its stdout (at most 64 KiB).
    pub stdout: Vec<u8>,
    /// The end of its stderr (at most 64 KiB).
    pub stderr: Vec<u8>,
}

/// The end of one output stream, at most `OUTPUT_CAP` bytes of it.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trim in batches, not per chunk: amortised O(1) per byte.
        if self.bytes.len() > 2 * OUTPUT_CAP {
            let cut = self.bytes.len() - OUTPUT_CAP;
            self.bytes.drain(..cut);
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        let cut = self.bytes.len().saturating_sub(OUTPUT_CAP);
        self.bytes.drain(..cut);
        self.bytes
    }
}

/// One pipe from the child and what has been read from it.
struct Stream {
    pipe: Option<File>,
    tail: Tail,
}

impl Stream {
    fn new(pipe: Option<impl Into<OwnedFd>>) -> Self {
        Self {
            pipe: pipe.map(|p| File::from(p.into())),
            tail: Tail::default(),
        }
    }

    /// Reads what is there (poll said so); closes the stream at end of file. Returns the number
    /// of bytes read.
    fn pump(&mut self) -> io::Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let mut buf = [0u8; 8192];
        match pipe.read(&mut buf) {
            Ok(0) => {
                self.pipe = None;
                Ok(0)
            }
            Ok(n) => {
                self.tail.push(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Kills the child's process group when dropped, unless disarmed: no early return leaves a
/// helper running.
struct KillGroup {
    pgid: Pid,
    armed: bool,
}

impl KillGroup {
    fn kill(&mut self) {
        if self.armed {
            self.armed = false;
            // ESRCH: the whole group is gone already.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which of `fds` poll found ready (readable, closed or in error).
fn poll_ready(fds: &mut [PollFd<'_>], timeout: PollTimeout) -> io::Result<Vec<bool>> {
    match poll(fds, timeout) {
        Ok(_) => Ok(fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect()),
        Err(Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// `d` in whole milliseconds, rounded up (poll must not wake just before the deadline and spin).
fn poll_timeout(d: Option<Duration>) -> PollTimeout {
    match d {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

fn spawn<S: AsRef<OsStr>>(program: &Path, argv: &[S]) -> Result<Child, RunError> {
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills whatever it started too.
        .process_group(0);
    let mut attempt = 0u32;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            // "Text file busy": the program is open for writing somewhere (an upgrade
            // replacing it, or a writer whose forked child has not exec'd yet). Brief.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
            }
            Err(source) => {
                return Err(RunError::Spawn {
                    program: program.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Runs `program` with `argv` (never through a shell), stdin from /dev/null, and returns how it
/// exited with the end of its output, or kills its whole process group at `timeout`.
pub fn run<S: AsRef<OsStr>>(
    program: &Path,
    argv: &[S],
    timeout: Duration,
) -> Result<Finished, RunError> {
    let program_path = program;
    let program = || program_path.to_owned();
    let deadline = Instant::now().checked_add(timeout);
    // The waiter thread reaps the child and then closes `wake_tx`, which wakes poll below.
    // It exists before the child does, so a child is never left without a reaper.
    let (wake_rx, wake_tx) = UnixStream::pair().map_err(|source| RunError::Waiter {
        program: program(),
        source,
    })?;
    let (child_tx, child_rx) = mpsc::channel::<Child>();
    let (status_tx, status_rx) = mpsc::channel::<io::Result<ExitStatus>>();
    std::thread::Builder::new()
        .name("dvdi-waiter".into())
        .spawn(move || {
            if let Ok(mut child) = child_rx.recv() {
                let _ = status_tx.send(child.wait());
            }
            drop(wake_tx);
        })
        .map_err(|source| RunError::Waiter {
            program: program(),
            source,
        })?;

    let mut child = spawn(program_path, argv)?;
    let mut group = KillGroup {
        // pid_t from the kernel: it fits.
        pgid: Pid::from_raw(child.id() as libc::pid_t),
        armed: true,
    };
    let mut streams = [
        Stream::new(child.stdout.take()),
        Stream::new(child.stderr.take()),
    ];
    if let Err(mpsc::SendError(mut child)) = child_tx.send(child) {
        // The waiter is gone (it cannot be, short of a panic): reap here.
        group.kill();
        let _ = child.wait();
        return Err(RunError::Waiter {
            program: program(),
            source: io::Error::other("the waiter thread ended early"),
        });
    }

    let read_err = |source| RunError::Read {
        program: program(),
        source,
    };
    let status = loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            // Exited and reaped right at the deadline: that is a finish, not a timeout
            // (and its pid must not be signalled any more).
            break status_rx.try_recv().ok().map(Ok);
        }
        let ready = {
            let mut fds = vec![PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                streams
                    .iter()
                    .filter_map(|s| s.pipe.as_ref())
                    .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN)),
            );
            poll_ready(&mut fds, poll_timeout(remaining)).map_err(read_err)?
        };
        let mut flags = ready[1..].iter();
        for s in streams.iter_mut().filter(|s| s.pipe.is_some()) {
            if flags.next() == Some(&true) {
                s.pump().map_err(read_err)?;
            }
        }
        if ready[0] {
            break Some(status_rx.recv());
        }
    };

    let status = match status {
        None => {
            group.kill();
            // Reaped by the waiter: wait a little for it, so the caller sees the child gone.
            let _ = status_rx.recv_timeout(REAP_GRACE);
            return Err(RunError::Timeout {
                program: program(),
                after: timeout,
            });
        }
        // Reaped: the pid may be reused from now on, so the group must not be signalled.
        Some(status) => {
            group.armed = false;
            status
        }
    };
    // What the child wrote before exiting is in the pipes already: take it without waiting
    // for end of file, which a helper it left behind could hold off for ever.
    let mut drained = 0;
    while drained < DRAIN_CAP && streams.iter().any(|s| s.pipe.is_some()) {
        let ready = {
            let mut fds: Vec<PollFd<'_>> = streams
                .iter()
                .filter_map(|s| s.pipe.as_ref())
                .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
                .collect();
            poll_ready(&mut fds, PollTimeout::ZERO).map_err(read_err)?
        };
        if !ready.contains(&true) {
            break;
        }
        let mut flags = ready.iter();
        for s in streams.iter_mut().filter(|s| s.pipe.is_some()) {
            if flags.next() == Some(&true) {
                drained += s.pump().map_err(read_err)?;
            }
        }
    }
    let [out, err] = streams;
    let status = match status {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(RunError::Wait {
                program: program(),
                source,
            })
        }
        Err(mpsc::RecvError) => {
            return Err(RunError::Wait {
                program: program(),
                source: io::Error::other("the waiter thread ended without a status"),
            })
        }
    };
    Ok(Finished {
        status,
        stdout: out.tail.into_bytes(),
        stderr: err.tail.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_its_end_within_the_cap() {
        let mut t = Tail::default();
        for _ in 0..(3 * OUTPUT_CAP / 1000) {
            t.push(&[b'x'; 1000]);
        }
        t.push(b"\n/the/end\n");
        let bytes = t.into_bytes();
        assert_eq!(bytes.len(), OUTPUT_CAP);
        assert!(bytes.ends_with(b"/the/end\n"));
    }
}
