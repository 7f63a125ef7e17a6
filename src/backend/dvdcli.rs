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
//! Each run is bounded by [`command::run`]: dvdcli runs in its own process group, killed whole at
//! the timeout (the plugins it starts may have children of their own), and its output is read
//! only until it exits.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::command::{self, RunError};
use super::{
    tail_text, Backend, BackendError, Call, Capabilities, MountId, MountRequest, Timeouts,
    VolumeInfo,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// How much of stderr an error quotes.
const STDERR_TAIL: usize = 1024;

/// How much of stdout an error quotes.
const STDOUT_TAIL: usize = 256;

/// A failed `dvdcli` run.
#[derive(Debug, thiserror::Error)]
pub enum DvdcliError {
    /// It could not be run to an exit status in time (see [`RunError`]).
    #[error(transparent)]
    Run(#[from] RunError),
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

    /// Runs the program with `argv`; its stdout when it exits with status 0 within `timeout`.
    fn run(&self, argv: &[String], timeout: Duration) -> Result<Vec<u8>, DvdcliError> {
        let done = command::run(&self.program, argv, timeout)?;
        if !done.status.success() {
            return Err(DvdcliError::Failed {
                program: self.program.clone(),
                status: done.status,
                stderr_tail: tail_text(&done.stderr, STDERR_TAIL),
            });
        }
        Ok(done.stdout)
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
}
