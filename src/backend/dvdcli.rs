//! The `dvdcli` backend: runs the configured program with an argv, never through a shell.
//!
//! The argv is the one dvdcli defines (`rexray/dvdcli`, `dvdcli/flags.go` and `commands.go`) and
//! Mesos' `docker/volume` isolator and the original module use:
//! `mount --volumedriver=D --volumename=N [--volumeopts=K=V]... [--explicitcreate]`,
//! `unmount --volumedriver=D --volumename=N`, `path --volumedriver=D --volumename=N`, and
//! likewise `create` (with `--volumeopts`), `remove` and `list --volumedriver=D`. dvdcli logs to
//! stderr and prints results on stdout: the mount point is the last non-empty line of stdout.
//! dvdcli has no capabilities command. Two of dvdcli's quirks show through: `--explicitcreate`
//! is its spelling (the original module's `--explicitCreate=true` is not a flag it knows, and
//! Mesos passes none), and it splits each `--volumeopts` value at every `=`, keeping only the
//! text before the second one (such values are passed as given, with a warning).
//!
//! The child runs in its own process group, killed whole at the timeout (dvdcli and the plugins
//! it starts may have children of their own), and is always reaped, by a small waiter thread
//! that outlives the call only when a killed child cannot die yet. Output is read with poll(2),
//! capped, and only until the child exits: a helper it left running with our pipes open cannot
//! stall a call.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

use super::{
    tail_text, Backend, BackendError, Call, Capabilities, MountId, MountRequest, Timeouts,
    VolumeInfo,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// Most output kept from each stream (its end: that is where the mount point and the final
/// error are); the rest is read and dropped.
const OUTPUT_CAP: usize = 64 * 1024;

/// Most output read after the child has exited (from helpers it left holding the pipes).
const DRAIN_CAP: usize = 1024 * 1024;

/// How often a spawn that finds the program busy ("Text file busy") is retried.
const SPAWN_RETRIES: u32 = 5;

/// How much of stderr an error quotes.
const STDERR_TAIL: usize = 1024;

/// How much of stdout an error quotes.
const STDOUT_TAIL: usize = 256;

/// How long a call waits for a killed child to be reaped before returning anyway. SIGKILL takes
/// effect at once except in uninterruptible sleep (I/O to a dead device); the waiter thread then
/// reaps the child whenever it dies.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// A failed `dvdcli` run.
#[derive(Debug, thiserror::Error)]
pub enum DvdcliError {
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
    /// It exited unsuccessfully.
    #[error("{program} exited with {status}: {stderr_tail}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its status.
        status: ExitStatus,
        /// The end of its stderr, lines joined by ` | `.
        stderr_tail: String,
    },
    /// Its output names no absolute mount point.
    #[error(
        "{program} printed no absolute mount point as the last line of its output: {stdout_tail:?}"
    )]
    BadOutput {
        /// The program.
        program: PathBuf,
        /// The end of its stdout, lines joined by ` | `.
        stdout_tail: String,
    },
    /// dvdcli has no command for this call.
    #[error("dvdcli has no {call} command; use the plugin backend (backend=plugin) for it")]
    Unsupported {
        /// The call.
        call: Call,
    },
}

/// The `dvdcli` backend for one driver.
#[derive(Debug)]
pub struct DvdcliBackend {
    program: PathBuf,
    driver: DriverName,
    timeouts: Timeouts,
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
/// dvdcli running.
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

/// The last non-empty line of `out`, trimmed.
fn last_line(out: &[u8]) -> &[u8] {
    out.split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .rfind(|l| !l.is_empty())
        .unwrap_or(&[])
}

impl DvdcliBackend {
    /// Runs `program` for `driver`'s volumes, each call bounded by `timeouts`.
    pub fn new(program: PathBuf, driver: DriverName, timeouts: Timeouts) -> Self {
        Self {
            program,
            driver,
            timeouts,
        }
    }

    /// The program this backend runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The argv (after the program) for `command`, about volume `name` when given.
    fn argv(&self, command: &str, name: Option<&VolumeName>, extra: Vec<String>) -> Vec<String> {
        let mut argv = vec![
            command.to_owned(),
            format!("--volumedriver={}", self.driver),
        ];
        if let Some(name) = name {
            argv.push(format!("--volumename={name}"));
        }
        argv.extend(extra);
        argv
    }

    /// `--volumeopts=K=V` for each option, in the task's order, exactly as given (the argv Mesos
    /// and the original module pass). dvdcli itself splits each at every `=` and hands the driver
    /// only the text before a second one: such values are passed all the same, with a warning,
    /// since refusing them would break tasks that worked with the original module.
    fn opts_args(&self, name: &VolumeName, opts: &VolumeOpts) -> Vec<String> {
        opts.iter()
            .map(|(k, v)| {
                if let Some((kept, _)) = v.split_once('=') {
                    log::warn!(
                        "volume {:?} (driver {:?}): dvdcli passes option {k}={v:?} on as {k}={kept:?}; use backend=plugin to pass it whole",
                        name.as_str(),
                        self.driver.as_str()
                    );
                }
                format!("--volumeopts={k}={v}")
            })
            .collect()
    }

    fn spawn(&self, argv: &[String]) -> Result<Child, DvdcliError> {
        let mut cmd = Command::new(&self.program);
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
                    return Err(DvdcliError::Spawn {
                        program: self.program.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Runs the program with `argv`; its stdout when it exits with status 0 within `timeout`.
    fn run(&self, argv: &[String], timeout: Duration) -> Result<Vec<u8>, DvdcliError> {
        let program = || self.program.clone();
        let deadline = Instant::now().checked_add(timeout);
        // The waiter thread reaps the child and then closes `wake_tx`, which wakes poll below.
        // It exists before the child does, so a child is never left without a reaper.
        let (wake_rx, wake_tx) = UnixStream::pair().map_err(|source| DvdcliError::Waiter {
            program: program(),
            source,
        })?;
        let (child_tx, child_rx) = mpsc::channel::<Child>();
        let (status_tx, status_rx) = mpsc::channel::<io::Result<ExitStatus>>();
        std::thread::Builder::new()
            .name("dvdcli-waiter".into())
            .spawn(move || {
                if let Ok(mut child) = child_rx.recv() {
                    let _ = status_tx.send(child.wait());
                }
                drop(wake_tx);
            })
            .map_err(|source| DvdcliError::Waiter {
                program: program(),
                source,
            })?;

        let mut child = self.spawn(argv)?;
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
            return Err(DvdcliError::Waiter {
                program: program(),
                source: io::Error::other("the waiter thread ended early"),
            });
        }

        let read_err = |source| DvdcliError::Read {
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
                return Err(DvdcliError::Timeout {
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
                return Err(DvdcliError::Wait {
                    program: program(),
                    source,
                })
            }
            Err(mpsc::RecvError) => {
                return Err(DvdcliError::Wait {
                    program: program(),
                    source: io::Error::other("the waiter thread ended without a status"),
                })
            }
        };
        if !status.success() {
            return Err(DvdcliError::Failed {
                program: program(),
                status,
                stderr_tail: tail_text(&err.tail.into_bytes(), STDERR_TAIL),
            });
        }
        Ok(out.tail.into_bytes())
    }

    /// The absolute path on the last non-empty line of `out`; `None` when `out` is blank.
    fn path_in(&self, out: &[u8]) -> Result<Option<PathBuf>, DvdcliError> {
        let line = last_line(out);
        if line.is_empty() {
            return Ok(None);
        }
        let path = Path::new(OsStr::from_bytes(line));
        if path.is_absolute() && !line.contains(&0) {
            Ok(Some(path.to_owned()))
        } else {
            Err(self.bad_output(out))
        }
    }

    fn bad_output(&self, out: &[u8]) -> DvdcliError {
        DvdcliError::BadOutput {
            program: self.program.clone(),
            stdout_tail: tail_text(out, STDOUT_TAIL),
        }
    }

    fn fail(&self, name: Option<&VolumeName>, call: Call, e: DvdcliError) -> BackendError {
        BackendError::new(&self.driver, name, call, e)
    }

    /// The names `dvdcli list` prints, one per line.
    fn names(&self) -> Result<Vec<String>, DvdcliError> {
        let out = self.run(&self.argv("list", None, Vec::new()), self.timeouts.mount)?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

impl Backend for DvdcliBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        let argv = self.argv("create", Some(name), self.opts_args(name, opts));
        self.run(&argv, self.timeouts.mount)
            .map(|_| ())
            .map_err(|e| self.fail(Some(name), Call::Create, e))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        let argv = self.argv("remove", Some(name), Vec::new());
        self.run(&argv, self.timeouts.unmount)
            .map(|_| ())
            .map_err(|e| self.fail(Some(name), Call::Remove, e))
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let fail = |e| self.fail(Some(req.name), Call::Mount, e);
        let mut extra = self.opts_args(req.name, req.opts);
        if req.explicit_create {
            // dvdcli's own spelling (a boolean flag). The original module's
            // `--explicitCreate=true` is not a flag dvdcli's parser knows.
            extra.push("--explicitcreate".to_owned());
        }
        let argv = self.argv("mount", Some(req.name), extra);
        let out = self.run(&argv, self.timeouts.mount).map_err(fail)?;
        match self.path_in(&out).map_err(fail)? {
            Some(path) => Ok(path),
            None => Err(fail(self.bad_output(&out))),
        }
    }

    fn unmount(&self, name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        let argv = self.argv("unmount", Some(name), Vec::new());
        self.run(&argv, self.timeouts.unmount)
            .map(|_| ())
            .map_err(|e| self.fail(Some(name), Call::Unmount, e))
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let fail = |e| self.fail(Some(name), Call::Path, e);
        // dvdcli prints nothing when the volume has no mount point.
        let out = self
            .run(
                &self.argv("path", Some(name), Vec::new()),
                self.timeouts.mount,
            )
            .map_err(fail)?;
        self.path_in(&out).map_err(fail)
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        // `dvdcli get` exits 1 both for a missing volume and for any failure; `list` tells
        // the two apart.
        let names = self
            .names()
            .map_err(|e| self.fail(Some(name), Call::Get, e))?;
        if !names.iter().any(|n| n == name.as_str()) {
            return Ok(None);
        }
        Ok(Some(VolumeInfo {
            name: name.to_string(),
            mountpoint: self.path(name)?,
            status: serde_json::Value::Null,
        }))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let names = self.names().map_err(|e| self.fail(None, Call::List, e))?;
        Ok(names
            .into_iter()
            .map(|name| VolumeInfo {
                name,
                mountpoint: None,
                status: serde_json::Value::Null,
            })
            .collect())
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        Err(self.fail(
            None,
            Call::Capabilities,
            DvdcliError::Unsupported {
                call: Call::Capabilities,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_non_empty_line_is_the_answer() {
        assert_eq!(last_line(b"INFO x\n/mnt/a\n\n  \n"), b"/mnt/a");
        assert_eq!(last_line(b"  /mnt/b  "), b"/mnt/b");
        assert_eq!(last_line(b"\n\n"), b"");
    }

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
