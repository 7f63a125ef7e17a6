//! The `dvdcli` backend: runs the configured program with an argv, never through a shell.
//!
//! The argv is the one Mesos' `docker/volume` isolator and the original module use:
//! `mount --volumedriver=D --volumename=N [--volumeopts=K=V]... [--explicitcreate]`,
//! `unmount --volumedriver=D --volumename=N`, `path --volumedriver=D --volumename=N`. The mount
//! point is the last non-empty line of stdout. The child runs in its own process group, which is
//! killed whole at the timeout (dvdcli starts plugins' helpers of its own).

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{
    Backend, BackendError, Call, Capabilities, MountId, MountRequest, Timeouts, VolumeInfo,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// Most output kept from each stream; the rest is read and dropped.
const OUTPUT_CAP: usize = 64 * 1024;

/// How often a spawn that finds the program busy ("Text file busy") is retried.
const SPAWN_RETRIES: u32 = 5;

/// How much of stderr an error quotes.
const STDERR_TAIL: usize = 1024;

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
    /// It did not finish in time and was killed.
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
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// Its output names no absolute mount point.
    #[error("{program} printed no absolute mount point (last line of stdout: {last_line:?})")]
    BadOutput {
        /// The program.
        program: PathBuf,
        /// The last non-empty line of stdout.
        last_line: String,
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

/// What a finished run printed.
struct Output {
    stdout: Vec<u8>,
}

fn read_capped(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].replace('\n', " | ")
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

    /// The argv (after the program) for `command` on `name`.
    pub fn argv(&self, command: &str, name: &VolumeName, extra: &[String]) -> Vec<String> {
        let mut argv = vec![
            command.to_owned(),
            format!("--volumedriver={}", self.driver),
            format!("--volumename={name}"),
        ];
        argv.extend_from_slice(extra);
        argv
    }

    fn run(&self, argv: &[String], timeout: Duration) -> Result<Output, DvdcliError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the timeout kills whatever it started too.
            .process_group(0);
        let mut attempt = 0u32;
        let mut child: Child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
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
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pids fit i32"));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (status, out, err) = std::thread::scope(|s| {
            let out = s.spawn(|| read_capped(stdout));
            let err = s.spawn(|| read_capped(stderr));
            let (tx, rx) = mpsc::channel();
            let waiter = s.spawn(move || {
                let _ = tx.send(child.wait());
            });
            let status = match rx.recv_timeout(timeout) {
                Ok(status) => Some(status),
                Err(_) => {
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::SIGKILL);
                    None
                }
            };
            let _ = waiter.join();
            (
                status,
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        let status = match status {
            None => {
                return Err(DvdcliError::Timeout {
                    program: self.program.clone(),
                    after: timeout,
                })
            }
            Some(Ok(status)) => status,
            Some(Err(source)) => {
                return Err(DvdcliError::Spawn {
                    program: self.program.clone(),
                    source,
                })
            }
        };
        if !status.success() {
            return Err(DvdcliError::Failed {
                program: self.program.clone(),
                status,
                stderr_tail: tail(&err, STDERR_TAIL),
            });
        }
        Ok(Output { stdout: out })
    }

    fn mount_point(&self, out: &Output) -> Result<PathBuf, DvdcliError> {
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let path = PathBuf::from(last);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(DvdcliError::BadOutput {
                program: self.program.clone(),
                last_line: last.to_owned(),
            })
        }
    }

    fn unsupported(&self, name: Option<&VolumeName>, call: Call) -> BackendError {
        BackendError::new(&self.driver, name, call, DvdcliError::Unsupported { call })
    }
}

impl Backend for DvdcliBackend {
    fn driver(&self) -> &DriverName {
        &self.driver
    }

    fn create(&self, name: &VolumeName, _opts: &VolumeOpts) -> Result<(), BackendError> {
        Err(self.unsupported(Some(name), Call::Create))
    }

    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        Err(self.unsupported(Some(name), Call::Remove))
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        let mut extra: Vec<String> = req
            .opts
            .iter()
            .map(|(k, v)| format!("--volumeopts={k}={v}"))
            .collect();
        if req.explicit_create {
            extra.push("--explicitcreate".to_owned());
        }
        let argv = self.argv("mount", req.name, &extra);
        self.run(&argv, self.timeouts.mount)
            .and_then(|out| self.mount_point(&out))
            .map_err(|e| BackendError::new(&self.driver, Some(req.name), Call::Mount, e))
    }

    fn unmount(&self, name: &VolumeName, _id: &MountId) -> Result<(), BackendError> {
        let argv = self.argv("unmount", name, &[]);
        self.run(&argv, self.timeouts.unmount)
            .map(|_| ())
            .map_err(|e| BackendError::new(&self.driver, Some(name), Call::Unmount, e))
    }

    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        let argv = self.argv("path", name, &[]);
        self.run(&argv, self.timeouts.mount)
            .and_then(|out| self.mount_point(&out))
            .map(Some)
            .map_err(|e| BackendError::new(&self.driver, Some(name), Call::Path, e))
    }

    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        Err(self.unsupported(Some(name), Call::Get))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        Err(self.unsupported(None, Call::List))
    }

    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        Err(self.unsupported(None, Call::Capabilities))
    }
}
