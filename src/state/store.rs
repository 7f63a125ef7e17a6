//! The checkpoint on disk: one JSON file per volume, each guarded by its own flock.
//!
//! Layout under the work directory:
//!
//! ```text
//! volumes/<driver>/<stem>.json   the VolumeRecord
//! volumes/<driver>/<stem>.lock   flock(2)ed while the record is read, changed or acted on
//! ```
//!
//! One file per volume keeps every change small (a prepare touches only its own volumes) and lets
//! the lock be per volume: threads of the module and a `dvdi` process on the same agent exclude each
//! other through the same flock, and never wait on a volume they do not use. Lock files are never
//! deleted, since deleting a lock file another process is about to lock would split the lock.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::record::{VolumeRecord, CHECKPOINT_VERSION};
use crate::spec::{DriverName, VolumeKey};

/// A failed checkpoint operation; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A directory or file could not be created, opened, read, written or renamed.
    #[error("{op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// flock(2) failed.
    #[error("locking {path} failed")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The errno.
        #[source]
        errno: nix::Error,
    },
    /// A record that is not valid JSON for this format.
    #[error("checkpoint {path} is corrupt and was left as it is; inspect it, unmount the volume by hand if it is mounted, then move the file away so the volume can be used again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A record written by another version of mesos-dvdi.
    #[error("checkpoint {path} has format version {found}; this build reads version {CHECKPOINT_VERSION} only: run the mesos-dvdi that wrote it, or set the file aside")]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// A record whose driver or name is not the volume its file stands for.
    #[error("checkpoint {path} describes {found}, not the volume its file name stands for")]
    Misplaced {
        /// The file.
        path: PathBuf,
        /// The volume the record names.
        found: VolumeKey,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Longest file stem used as is; longer volume names are shortened and made unique with a hash,
/// since a 255-byte name plus a suffix would not fit NAME_MAX.
const MAX_STEM: usize = 200;

/// The file stem for a volume name: the name itself when short enough, else a prefix, `~`, and a
/// hash of the whole name. Names are already valid file names (no `/`, not `.` or `..`).
fn stem(name: &str) -> String {
    if name.len() <= MAX_STEM {
        return name.to_owned();
    }
    let mut cut = MAX_STEM - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}~{hash:016x}", &name[..cut])
}

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct Store {
    volumes: PathBuf,
    /// Whether fsync means anything here: not on tmpfs (the default work_dir, on purpose), whose
    /// contents end with the boot anyway. Renames stay atomic either way, which is what crash
    /// safety relies on.
    durable: bool,
}

impl Store {
    /// Opens (creating it, mode 0700, if needed) the checkpoint under `work_dir`. A `work_dir`
    /// made here (with any missing parent) gets mode 0711: others may pass through it, never list
    /// it, to reach what the isolator keeps there for tasks (the directories volumes are bound on
    /// for tasks not run as root); the checkpoint below stays closed.
    pub fn open(work_dir: &Path) -> Result<Self, StateError> {
        let volumes = work_dir.join("volumes");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(work_dir)
            .map_err(io_err("creating", work_dir))?;
        match fs::DirBuilder::new().mode(0o700).create(&volumes) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err("creating", &volumes)(e))
            }
            _ => {}
        }
        Ok(Self::at(volumes))
    }

    /// Opens the checkpoint under `work_dir` only if it exists, creating nothing: `None` when
    /// nothing was ever recorded there (for commands that only read, so that a mistyped
    /// directory is said, not made).
    pub fn open_existing(work_dir: &Path) -> Result<Option<Self>, StateError> {
        let volumes = work_dir.join("volumes");
        match fs::metadata(&volumes) {
            Ok(_) => Ok(Some(Self::at(volumes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &volumes)(e)),
        }
    }

    fn at(volumes: PathBuf) -> Self {
        let durable = crate::durable::is_durable(&volumes);
        Self { volumes, durable }
    }

    /// The `work_dir` the store lives in.
    pub fn work_dir(&self) -> &Path {
        self.volumes.parent().unwrap_or(&self.volumes)
    }

    /// Whether records are fsynced (false on tmpfs, where that would change nothing).
    pub fn durable(&self) -> bool {
        self.durable
    }

    fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.volumes.join(driver.as_str())
    }

    /// Takes the volume's lock, waiting for any other holder (thread or process).
    pub fn lock(&self, key: &VolumeKey) -> Result<VolumeGuard, StateError> {
        self.lock_with(key, FlockArg::LockExclusive)
            .map(|g| g.expect("a blocking flock returns only when held"))
    }

    /// Takes the volume's lock if no one holds it; `None` when someone does.
    pub fn try_lock(&self, key: &VolumeKey) -> Result<Option<VolumeGuard>, StateError> {
        self.lock_with(key, FlockArg::LockExclusiveNonblock)
    }

    fn lock_with(&self, key: &VolumeKey, arg: FlockArg) -> Result<Option<VolumeGuard>, StateError> {
        let dir = self.driver_dir(&key.driver);
        let stem = stem(key.name.as_str());
        let lock_path = dir.join(format!("{stem}.lock"));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&lock_path)
        };
        // The driver's directory exists after its first volume: create it only when missing.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(io_err("creating", &dir))?;
                open()
            }
            other => other,
        }
        .map_err(io_err("opening", &lock_path))?;
        let mut file = file;
        let lock = loop {
            match Flock::lock(file, arg) {
                Ok(lock) => break lock,
                // A signal delivered while waiting is no reason to give up the wait.
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, errno)) => {
                    return Err(StateError::Lock {
                        path: lock_path,
                        errno,
                    })
                }
            }
        };
        Ok(Some(VolumeGuard {
            key: key.clone(),
            record: dir.join(format!("{stem}.json")),
            tmp: dir.join(format!(".{stem}.json.tmp")),
            dir,
            dir_handle: std::cell::OnceCell::new(),
            durable: self.durable,
            _lock: lock,
        }))
    }

    /// Every checkpoint file, with the volume it stands for, without reading records where the
    /// file name tells (see [`Surveyed::snapshot`]). Files whose volume cannot be told come back
    /// as errors naming them. Ordered by driver, then file name.
    pub fn survey(&self) -> Result<Vec<Result<Surveyed, StateError>>, StateError> {
        let mut out = Vec::new();
        for driver_dir in read_dir_sorted(&self.volumes, Listing::All)? {
            let Some(driver) = driver_dir
                .file_name()
                .and_then(|d| d.to_str())
                .and_then(|d| DriverName::new(d).ok())
            else {
                continue;
            };
            if !driver_dir.is_dir() {
                continue;
            }
            // Records are opened relative to their directory: one path walk for them all.
            let dir = Arc::new(
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(&driver_dir)
                    .map_err(io_err("opening", &driver_dir))?,
            );
            for file in read_dir_sorted(&driver_dir, Listing::Records)? {
                let Some(file_name) = file.file_name().map(OsStr::to_owned) else {
                    continue;
                };
                let plain = file_name
                    .to_str()
                    .and_then(|s| s.strip_suffix(".json"))
                    .filter(|s| !s.contains('~'))
                    .and_then(|s| crate::spec::VolumeName::new(s).ok());
                let key = match plain {
                    Some(name) => Ok(VolumeKey {
                        driver: driver.clone(),
                        name,
                    }),
                    // A shortened long name: the record says which volume it is.
                    None => read_record(&file).and_then(|r| {
                        r.map(|r| r.key()).ok_or_else(|| StateError::Io {
                            op: "reading",
                            path: file.clone(),
                            source: io::ErrorKind::NotFound.into(),
                        })
                    }),
                };
                out.push(key.map(|key| Surveyed {
                    key,
                    dir: Arc::clone(&dir),
                    file_name,
                }));
            }
        }
        Ok(out)
    }

    /// Every volume that has a checkpoint file, read without locks (a snapshot for listing and
    /// recovery; act on a volume only after [`Store::lock`]).
    pub fn scan(&self) -> Result<Vec<ScannedVolume>, StateError> {
        let mut out = Vec::new();
        for driver_dir in read_dir_sorted(&self.volumes, Listing::All)? {
            if !driver_dir.is_dir() {
                continue;
            }
            for file in read_dir_sorted(&driver_dir, Listing::Records)? {
                let record = read_record(&file).and_then(|r| {
                    r.ok_or_else(|| StateError::Io {
                        op: "reading",
                        path: file.clone(),
                        source: io::ErrorKind::NotFound.into(),
                    })
                });
                out.push(ScannedVolume { path: file, record });
            }
        }
        Ok(out)
    }
}

/// One checkpoint file found by [`Store::survey`].
#[derive(Debug)]
pub struct Surveyed {
    /// The volume it stands for.
    pub key: VolumeKey,
    dir: Arc<File>,
    file_name: OsString,
}

impl Surveyed {
    /// The record as it is now, read without the lock: a consistent snapshot, since records are
    /// only ever replaced whole (by rename) or removed. Good for deciding that a volume needs
    /// nothing; anything that changes it must [`Store::lock`] and load again. `None` when the
    /// record is gone, cannot be read or is not the volume's (loading it under the lock tells
    /// why).
    pub fn snapshot(&self) -> Option<VolumeRecord> {
        // Errors are dropped: loading under the lock reports them, with the whole path.
        read_record_at(&self.dir, &self.file_name)
            .ok()
            .flatten()
            .filter(|r| {
                r.key() == self.key
                    && self.file_name.to_str() == Some(&format!("{}.json", stem(r.name.as_str())))
            })
    }
}

/// One checkpoint file found by [`Store::scan`].
#[derive(Debug)]
pub struct ScannedVolume {
    /// The file.
    pub path: PathBuf,
    /// Its record, or why it could not be read.
    pub record: Result<VolumeRecord, StateError>,
}

/// What to list of a directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Everything (the volumes directory: driver directories).
    All,
    /// Record files, `*.json`: not lock files, temp files or set-aside records.
    Records,
}

/// The entries of `dir`, sorted by name. Names are compared as bytes, which is far cheaper than
/// comparing paths component by component.
fn read_dir_sorted(dir: &Path, listing: Listing) -> Result<Vec<PathBuf>, StateError> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let name = entry.map_err(io_err("listing", dir))?.file_name();
        let bytes = name.as_bytes();
        if listing == Listing::Records && !(bytes.len() > 5 && bytes.ends_with(b".json")) {
            continue;
        }
        names.push(name);
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn read_record(path: &Path) -> Result<Option<VolumeRecord>, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path);
    parse_record(file.and_then(read_all), path)
}

/// [`read_record`] of `name` in the directory `dir` (errors name the file by `name` alone).
fn read_record_at(dir: &File, name: &OsStr) -> Result<Option<VolumeRecord>, StateError> {
    let file = nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(File::from)
    .map_err(io::Error::from);
    parse_record(file.and_then(read_all), Path::new(name))
}

/// A record from the bytes read from `path`; `None` when the file does not exist.
fn parse_record(
    read: io::Result<Vec<u8>>,
    path: &Path,
) -> Result<Option<VolumeRecord>, StateError> {
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    let unknown = |found| StateError::UnknownVersion {
        path: path.to_owned(),
        found,
    };
    match serde_json::from_slice::<VolumeRecord>(&bytes) {
        Ok(r) if r.version == CHECKPOINT_VERSION => Ok(Some(r)),
        Ok(r) => Err(unknown(u64::from(r.version))),
        Err(source) => {
            // A newer format is reported as such, not as corrupt. (Peek with a struct, not
            // serde_json::Value, which would accept anything.)
            #[derive(serde::Deserialize)]
            struct Version {
                version: Option<u64>,
            }
            match serde_json::from_slice::<Version>(&bytes) {
                Ok(Version {
                    version: Some(found),
                }) if found != u64::from(CHECKPOINT_VERSION) => Err(unknown(found)),
                _ => Err(StateError::Corrupt {
                    path: path.to_owned(),
                    source,
                }),
            }
        }
    }
}

/// Reads a whole (small) file. Not `File::read_to_end`, which stats the file first for a size
/// hint that a record a few hundred bytes long does not need (recovery reads thousands).
fn read_all(mut f: File) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2, 0);
        }
        match f.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Exclusive access to one volume's checkpoint; the lock is released on drop.
#[derive(Debug)]
pub struct VolumeGuard {
    key: VolumeKey,
    dir: PathBuf,
    /// Opened on the first write that must fsync the directory (reads need none).
    dir_handle: std::cell::OnceCell<File>,
    /// Fsync files and the directory (see [`Store::durable`]).
    durable: bool,
    record: PathBuf,
    tmp: PathBuf,
    _lock: Flock<File>,
}

impl VolumeGuard {
    /// The volume this guard holds.
    pub fn key(&self) -> &VolumeKey {
        &self.key
    }

    /// The record file's path.
    pub fn path(&self) -> &Path {
        &self.record
    }

    /// Reads the record; `None` when the volume has none.
    pub fn load(&self) -> Result<Option<VolumeRecord>, StateError> {
        let record = read_record(&self.record)?;
        if let Some(r) = &record {
            if r.driver != self.key.driver || r.name != self.key.name {
                return Err(StateError::Misplaced {
                    path: self.record.clone(),
                    found: r.key(),
                });
            }
        }
        Ok(record)
    }

    /// Replaces the record atomically: temp file, fsync, rename, fsync of the directory. A crash
    /// at any point leaves either the old record or the new one, never a mix.
    pub fn save(&self, record: &VolumeRecord) -> Result<(), StateError> {
        debug_assert_eq!(record.key(), self.key);
        let bytes = serde_json::to_vec(record).expect("a VolumeRecord always serialises");
        crate::durable::write_and_rename(&self.record, &self.tmp, &bytes, self.durable).map_err(
            |e| StateError::Io {
                op: e.op,
                path: e.path,
                source: e.source,
            },
        )?;
        self.sync_dir()
    }

    /// Deletes the record (the volume is no longer mounted or used).
    pub fn remove(&self) -> Result<(), StateError> {
        match fs::remove_file(&self.record) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.record)(e)),
        }
    }

    /// Renames a record that cannot be read out of the way, keeping it for inspection, and
    /// returns where it went.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = self.record.clone().into_os_string();
        aside.push(format!(".corrupt.{secs}"));
        let aside = PathBuf::from(aside);
        fs::rename(&self.record, &aside).map_err(io_err("setting aside", &self.record))?;
        self.sync_dir()?;
        Ok(aside)
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        if !self.durable {
            return Ok(());
        }
        let dir = match self.dir_handle.get() {
            Some(d) => d,
            None => {
                let d = File::open(&self.dir).map_err(io_err("opening", &self.dir))?;
                self.dir_handle.get_or_init(|| d)
            }
        };
        dir.sync_all()
            .map_err(io_err("syncing directory", &self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_their_own_stem() {
        assert_eq!(stem("pgdata"), "pgdata");
        assert_eq!(stem(&"a".repeat(MAX_STEM)), "a".repeat(MAX_STEM));
    }

    #[test]
    fn long_names_get_distinct_stems_that_fit_name_max() {
        let a = format!("{}a", "x".repeat(254));
        let b = format!("{}b", "x".repeat(254));
        let (sa, sb) = (stem(&a), stem(&b));
        assert_ne!(sa, sb);
        assert!(format!(".{sa}.json.tmp").len() <= 255, "{}", sa.len());
    }

    #[test]
    fn long_multibyte_names_are_cut_on_a_char_boundary() {
        let name = "é".repeat(127);
        assert!(stem(&name).len() <= MAX_STEM);
    }
}
