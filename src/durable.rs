//! Files replaced whole, so a crash leaves the old contents or the new, never a mix: write a
//! temp file beside the target, fsync it, rename it over the target, fsync the directory.
//!
//! Used by the CSI backend's volume records; the mount table writes its records in place (see
//! `state`) and uses only [`is_durable`] and [`sync_dir`] from here. On tmpfs (the default work directory, on purpose: a reboot drops mounts and state
//! together) fsync means nothing and is skipped; the rename stays atomic, which is what crash
//! safety relies on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A step of [`replace`] that failed: what was being done, to which file.
#[derive(Debug, thiserror::Error)]
#[error("{op} {} failed", path.display())]
pub struct DurableError {
    /// What was being done (`creating`, `writing`, `syncing`, `renaming into place`).
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DurableError + 'a {
    move |source| DurableError {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Whether fsync means anything in `dir`: not on tmpfs.
pub fn is_durable(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|fs| fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(true)
}

/// Writes `bytes` to `tmp` (mode 0600), fsyncs it when `durable`, and renames it to `path`. The
/// caller fsyncs the directory ([`sync_dir`]) once the rename must survive a crash.
pub fn write_and_rename(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    durable: bool,
) -> Result<(), DurableError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(tmp)
        .map_err(err("creating", tmp))?;
    f.write_all(bytes).map_err(err("writing", tmp))?;
    if durable {
        f.sync_all().map_err(err("syncing", tmp))?;
    }
    drop(f);
    fs::rename(tmp, path).map_err(err("renaming into place", path))
}

/// Fsyncs the directory `dir` when `durable` (a rename or removal in it is then on disk).
pub fn sync_dir(dir: &Path, durable: bool) -> Result<(), DurableError> {
    if !durable {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("syncing directory", dir))
}
