//! The checkpoint directory: one record file per volume, which is also the volume's lock.
//!
//! ```text
//! volumes/<driver>/<stem>.json         the volume's record file (see `layout.rs`), flock(2)ed
//!                                      while the record is read, changed or acted on
//! volumes/<driver>/.<stem>.json.tmp    a record file being made anew (it outgrew its slots, or
//!                                      is converted from the first layout), renamed into place
//! volumes/<driver>/<stem>.json.corrupt.<secs>   a damaged record set aside by an operator's tool
//! ```
//!
//! The lock is the flock of whichever file is linked at the record's name. A file is removed or
//! replaced only by the holder of its lock, so a process that waited for a lock checks, once it
//! holds it, that its file is still linked (`st_nlink > 0`), and starts again on the new file if
//! not. A file appears at its name only whole and already locked by its maker (it is written
//! unnamed, with `O_TMPFILE`, then linked), so every file a locker opens holds a valid header and a
//! valid slot.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;

use super::guard::{Held, VolumeGuard};
use super::layout::{self, Damage, Decoded};
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
    /// A record file that cannot be read: damaged, or not valid JSON for this format.
    #[error("checkpoint {path} is corrupt and was left as it is; inspect it, unmount the volume by hand if it is mounted, then move the file away so the volume can be used again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Damage,
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

impl From<crate::durable::DurableError> for StateError {
    fn from(e: crate::durable::DurableError) -> Self {
        StateError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StateError + 'a {
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
    /// contents end with the boot anyway. Crash safety does not rely on it: a change is written to
    /// the slot that is not current, whatever the file system.
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

    /// Whether changes are fdatasynced (false on tmpfs, where that would change nothing).
    pub fn durable(&self) -> bool {
        self.durable
    }

    fn driver_dir(&self, driver: &DriverName) -> PathBuf {
        self.volumes.join(driver.as_str())
    }

    /// Takes the volume's lock, waiting for any other holder (thread or process).
    pub fn lock(&self, key: &VolumeKey) -> Result<VolumeGuard, StateError> {
        self.lock_with(key, true)
            .map(|g| g.expect("a blocking flock returns only when held"))
    }

    /// Takes the volume's lock if no one holds it; `None` when someone does.
    pub fn try_lock(&self, key: &VolumeKey) -> Result<Option<VolumeGuard>, StateError> {
        self.lock_with(key, false)
    }

    fn lock_with(&self, key: &VolumeKey, wait: bool) -> Result<Option<VolumeGuard>, StateError> {
        let dir = self.driver_dir(&key.driver);
        let path = dir.join(format!("{}.json", stem(key.name.as_str())));
        let guard =
            |held| VolumeGuard::new(key.clone(), dir.clone(), path.clone(), held, self.durable);
        loop {
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match self.create(&dir, &path)? {
                        Some(held) => return Ok(Some(guard(held))),
                        // Another process linked one first: lock that one.
                        None => continue,
                    }
                }
                Err(e) => return Err(io_err("opening", &path)(e)),
            };
            if !flock(&file, wait).map_err(|errno| StateError::Lock {
                path: path.clone(),
                errno,
            })? {
                return Ok(None);
            }
            let stat = nix::sys::stat::fstat(&file).map_err(|e| StateError::Io {
                op: "inspecting",
                path: path.clone(),
                source: e.into(),
            })?;
            // Replaced or removed by the holder we waited for: its name leads elsewhere now.
            if stat.st_nlink == 0 {
                continue;
            }
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            return Ok(Some(guard(Held::opened(file, size))));
        }
    }

    /// Makes the volume's record file, holding no record, locked by this process from the start,
    /// and links it at `path`; `None` when another process linked one there first.
    fn create(&self, dir: &Path, path: &Path) -> Result<Option<Held>, StateError> {
        let unnamed = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .open(dir)
        };
        // The driver's directory exists after its first volume: create it only when missing.
        let file = match unnamed() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err("creating", dir))?;
                unnamed()
            }
            other => other,
        }
        .map_err(io_err("creating a record file in", dir))?;
        let bytes = layout::file(layout::MIN_CAP, 0, b"");
        // Nobody else can hold the lock of a file that has no name yet.
        write_whole(&file, &bytes, self.durable)
            .map_err(io_err("writing a new record file for", path))?;
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        match nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(None),
            Err(e) => return Err(io_err("linking", path)(e.into())),
        }
        crate::durable::sync_dir(dir, self.durable)?;
        crate::crash::point("state:created");
        Ok(Some(Held::created(file, bytes.len() as u64)))
    }

    /// Every record file, with the volume it stands for, without reading records where the file
    /// name tells (see [`Surveyed::snapshot`]). Files whose volume cannot be told come back as
    /// errors naming them. Ordered by driver, then file name.
    pub fn survey(&self) -> Result<Vec<Result<Surveyed, StateError>>, StateError> {
        let mut out = Vec::new();
        for driver_name in names_sorted(&self.volumes, Listing::All)? {
            let Some(driver) = driver_name.to_str().and_then(|d| DriverName::new(d).ok()) else {
                continue;
            };
            let driver_dir = self.volumes.join(&driver_name);
            // Records are opened relative to their directory: one path walk for them all.
            let dir = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&driver_dir)
            {
                Ok(dir) => Arc::new(dir),
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(io_err("opening", &driver_dir)(e)),
            };
            for file_name in names_sorted(&driver_dir, Listing::Records)? {
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
                    // A shortened long name: the record says which volume it is. One that holds
                    // no record cannot be told (it is used again with its volume).
                    None => match read_record(&driver_dir.join(&file_name)) {
                        Ok(Some(r)) => Ok(r.key()),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    },
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

    /// Every volume that has a record, read without locks (a snapshot for listing; act on a
    /// volume only after [`Store::lock`]). Files that hold no record are left out.
    pub fn scan(&self) -> Result<Vec<ScannedVolume>, StateError> {
        let mut out = Vec::new();
        for driver_name in names_sorted(&self.volumes, Listing::All)? {
            let driver_dir = self.volumes.join(driver_name);
            if !driver_dir.is_dir() {
                continue;
            }
            for name in names_sorted(&driver_dir, Listing::Records)? {
                let file = driver_dir.join(name);
                match read_record(&file) {
                    Ok(None) => {}
                    Ok(Some(record)) => out.push(ScannedVolume {
                        path: file,
                        record: Ok(record),
                    }),
                    Err(e) => out.push(ScannedVolume {
                        path: file,
                        record: Err(e),
                    }),
                }
            }
        }
        Ok(out)
    }
}

/// One record file found by [`Store::survey`].
#[derive(Debug)]
pub struct Surveyed {
    /// The volume it stands for.
    pub key: VolumeKey,
    dir: Arc<File>,
    file_name: OsString,
}

impl Surveyed {
    /// The record as it is now, read without the lock: a consistent snapshot, since a change is
    /// written beside the current record and a reader takes whichever whole copy is newest. Good
    /// for deciding that a volume needs nothing; anything that changes it must [`Store::lock`] and
    /// load again. `None` when the file holds no record, cannot be read, is not the volume's, or
    /// is of the first layout (loading under the lock tells why, removes a file with no record and
    /// converts one of the first layout).
    pub fn snapshot(&self) -> Option<VolumeRecord> {
        let file = nix::fcntl::openat(
            &*self.dir,
            self.file_name.as_os_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        thread_local! {
            // Recovery reads thousands of files on each worker thread: one buffer for them all.
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with_borrow_mut(|buffer| {
            let len = read_into(File::from(file), buffer).ok()?;
            let bytes = &buffer[..len];
            let Ok(Decoded::Slots {
                payload: Some(payload),
                ..
            }) = layout::decode(bytes)
            else {
                return None;
            };
            parse_json(&bytes[payload], Path::new(&self.file_name))
                .ok()
                .filter(|r| {
                    r.driver == self.key.driver && r.name == self.key.name && self.is_file_of(r)
                })
        })
    }

    /// Whether this file is the one `record`'s volume is kept in (a long name's shortened stem
    /// could be copied under another).
    fn is_file_of(&self, record: &VolumeRecord) -> bool {
        let name = record.name.as_str();
        let expected = if name.len() <= MAX_STEM {
            std::borrow::Cow::Borrowed(name)
        } else {
            std::borrow::Cow::Owned(stem(name))
        };
        self.file_name
            .to_str()
            .and_then(|f| f.strip_suffix(".json"))
            == Some(&*expected)
    }
}

/// One record found by [`Store::scan`].
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
    /// Record files, `*.json`: not temp files, set-aside records or the first layout's lock
    /// files.
    Records,
}

/// The names in `dir`, sorted. Names are compared as bytes, which is far cheaper than comparing
/// paths component by component.
fn names_sorted(dir: &Path, listing: Listing) -> Result<Vec<OsString>, StateError> {
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
    Ok(names)
}

/// The record in the file at `path`, read without its lock; `None` when it holds none or is gone.
fn read_record(path: &Path) -> Result<Option<VolumeRecord>, StateError> {
    // A change written while the file is read can leave the copy read with that slot cut short;
    // when it also overlapped the other slot's previous change, read again.
    let mut attempts = 3;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path);
        let bytes = match file.and_then(read_all) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", path)(e)),
        };
        attempts -= 1;
        match record_in(&bytes, path) {
            Err(StateError::Corrupt {
                source: Damage::NoValidSlot,
                ..
            }) if attempts > 0 => continue,
            other => return other,
        }
    }
}

/// The record a whole record file holds, in either layout; `None` for none.
pub(super) fn record_in(bytes: &[u8], path: &Path) -> Result<Option<VolumeRecord>, StateError> {
    let corrupt = |source| StateError::Corrupt {
        path: path.to_owned(),
        source,
    };
    match layout::decode(bytes).map_err(corrupt)? {
        Decoded::Empty => Ok(None),
        Decoded::Legacy => parse_json(bytes, path).map(Some),
        Decoded::Slots { payload, .. } => match payload {
            None => Ok(None),
            Some(p) => parse_json(&bytes[p], path).map(Some),
        },
    }
}

/// A record from its JSON, as kept in a slot (or as the whole file in the first layout).
pub(super) fn parse_json(bytes: &[u8], path: &Path) -> Result<VolumeRecord, StateError> {
    let unknown = |found| StateError::UnknownVersion {
        path: path.to_owned(),
        found,
    };
    match serde_json::from_slice::<VolumeRecord>(bytes) {
        Ok(r) if r.version == CHECKPOINT_VERSION => Ok(r),
        Ok(r) => Err(unknown(u64::from(r.version))),
        Err(source) => {
            // A newer format is reported as such, not as corrupt. (Peek with a struct, not
            // serde_json::Value, which would accept anything.)
            #[derive(serde::Deserialize)]
            struct Version {
                version: Option<u64>,
            }
            match serde_json::from_slice::<Version>(bytes) {
                Ok(Version {
                    version: Some(found),
                }) if found != u64::from(CHECKPOINT_VERSION) => Err(unknown(found)),
                _ => Err(StateError::Corrupt {
                    path: path.to_owned(),
                    source: Damage::Json(source),
                }),
            }
        }
    }
}

/// Reads a whole (small) file. Not `File::read_to_end`, which stats the file first for a size
/// hint, and stops at the first short read: a record file is a regular file, whose reads come
/// back short only at its end (recovery reads thousands; the system call saved is a third of
/// each).
fn read_all(f: File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let len = read_into(f, &mut bytes)?;
    bytes.truncate(len);
    Ok(bytes)
}

/// [`read_all`] into `buffer` (grown as needed, never shrunk); returns the length read.
fn read_into(mut f: File, buffer: &mut Vec<u8>) -> io::Result<usize> {
    use std::io::Read;
    if buffer.len() < 4096 {
        buffer.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        match f.read(&mut buffer[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buffer.len() {
                    break;
                }
                buffer.resize(len * 2, 0);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// Takes an exclusive flock(2) on `file`; false when `wait` is off and another holds it.
pub(super) fn flock(file: &File, wait: bool) -> Result<bool, nix::Error> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock(2) on a descriptor `file` keeps open for the call; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        match Errno::last() {
            // A signal delivered while waiting is no reason to give up the wait.
            Errno::EINTR => {}
            Errno::EWOULDBLOCK => return Ok(false),
            errno => return Err(errno),
        }
    }
}

/// Writes a whole new record file's bytes (fdatasynced when `durable`) and locks it, before it is
/// linked at a record's name. Only the holder of the volume's lock makes its files, so the new
/// file's lock is free: taken without waiting, and an error if it is not.
pub(super) fn write_whole(file: &File, bytes: &[u8], durable: bool) -> io::Result<()> {
    file.write_all_at(bytes, 0)?;
    if durable {
        file.sync_data()?;
    }
    match flock(file, false) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Errno::EWOULDBLOCK.into()),
        Err(e) => Err(e.into()),
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
