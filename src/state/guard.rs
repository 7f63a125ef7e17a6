//! One volume's record, locked: read it, change it in place, remove it.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::layout::{self, Current, Decoded};
use super::record::VolumeRecord;
use super::store::{io_err, parse_json, record_in, write_whole, StateError};
use crate::spec::VolumeKey;

/// Where the record stands in its file, once read or written.
#[derive(Debug, Clone, Copy)]
struct Slots {
    cap: u32,
    current: Current,
    /// The current slot holds a record (not a tombstone).
    live: bool,
}

/// The locked file and what this guard knows of it.
#[derive(Debug)]
pub(super) struct Held {
    /// flock(2)ed; closing it releases the lock.
    file: File,
    /// Its length, as last seen or written by this guard (nobody else writes it meanwhile).
    size: u64,
    /// Its slots, when read or written since the lock was taken.
    slots: Option<Slots>,
    /// A load found no record here.
    found_none: bool,
    /// This guard wrote the file (or made it anew).
    wrote: bool,
}

impl Held {
    /// An existing file, just locked.
    pub(super) fn opened(file: File, size: u64) -> Self {
        Self {
            file,
            size,
            slots: None,
            found_none: false,
            wrote: false,
        }
    }

    /// A file this guard made, holding a tombstone in slot A.
    pub(super) fn created(file: File, size: u64) -> Self {
        Self {
            file,
            size,
            slots: Some(Slots {
                cap: layout::MIN_CAP,
                current: Current { index: 0, seq: 0 },
                live: false,
            }),
            found_none: true,
            wrote: false,
        }
    }

    /// The whole file. Its size as last seen sizes the buffer, with a byte to spare so that one
    /// short read tells the end (a hand that wrote the file behind the lock is still seen whole).
    fn read(&self) -> io::Result<Vec<u8>> {
        let first = usize::try_from(self.size).map_or(4096, |s| s.saturating_add(1).max(4096));
        let mut bytes = vec![0; first];
        let mut len = 0;
        loop {
            match self.file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len < bytes.len() {
                        break;
                    }
                    bytes.resize(len * 2, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bytes.truncate(len);
        Ok(bytes)
    }
}

/// Exclusive access to one volume's record; the lock is released on drop.
///
/// A guard that found no record and wrote none removes the file as it drops (while still holding
/// the lock), so files of volumes no longer used go at the next recover or gc; a record removed
/// by [`VolumeGuard::remove`] keeps its file, for the volume's next use.
#[derive(Debug)]
pub struct VolumeGuard {
    key: VolumeKey,
    dir: PathBuf,
    path: PathBuf,
    /// fdatasync changes (see [`Store::durable`](super::Store::durable)).
    durable: bool,
    held: RefCell<Held>,
}

impl VolumeGuard {
    pub(super) fn new(
        key: VolumeKey,
        dir: PathBuf,
        path: PathBuf,
        held: Held,
        durable: bool,
    ) -> Self {
        Self {
            key,
            dir,
            path,
            durable,
            held: RefCell::new(held),
        }
    }

    /// The volume this guard holds.
    pub fn key(&self) -> &VolumeKey {
        &self.key
    }

    /// The record file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record; `None` when the volume has none. A record of the first layout (a JSON
    /// file, as mesos-dvdi wrote before this one) is converted to this layout as it is read.
    pub fn load(&self) -> Result<Option<VolumeRecord>, StateError> {
        let mut held = self.held.borrow_mut();
        let bytes = held.read().map_err(io_err("reading", &self.path))?;
        let corrupt = |source| StateError::Corrupt {
            path: self.path.clone(),
            source,
        };
        let record = match layout::decode(&bytes).map_err(corrupt)? {
            Decoded::Slots {
                cap,
                current,
                payload,
            } => {
                held.slots = Some(Slots {
                    cap,
                    current,
                    live: payload.is_some(),
                });
                match payload {
                    Some(p) => Some(parse_json(&bytes[p], &self.path)?),
                    None => None,
                }
            }
            Decoded::Empty => None,
            Decoded::Legacy => {
                let record = record_in(&bytes, &self.path)?.expect("a JSON record");
                self.check_key(&record)?;
                self.upgrade(&mut held, &record)?;
                return Ok(Some(record));
            }
        };
        match &record {
            Some(r) => self.check_key(r)?,
            None => held.found_none = true,
        }
        Ok(record)
    }

    fn check_key(&self, record: &VolumeRecord) -> Result<(), StateError> {
        if record.driver != self.key.driver || record.name != self.key.name {
            return Err(StateError::Misplaced {
                path: self.path.clone(),
                found: record.key(),
            });
        }
        Ok(())
    }

    /// Converts a record of the first layout: the file is made anew in this layout, and the first
    /// layout's lock file beside it goes (this layout locks the record file itself). The lock file
    /// goes first, so that a crash in between leaves a record still to convert, never a converted
    /// one beside a stray lock file.
    fn upgrade(&self, held: &mut Held, record: &VolumeRecord) -> Result<(), StateError> {
        let lock = self.path.with_extension("lock");
        match fs::remove_file(&lock) {
            Ok(()) => crate::crash::point("state:old-lock-removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &lock)(e)),
        }
        let json = serde_json::to_vec(record).expect("a VolumeRecord always serialises");
        self.replace(held, layout::cap_for(json.len()), 1, &json)?;
        log::info!("{}: record converted to the slotted layout", self.key);
        Ok(())
    }

    /// Writes the record. The change goes into the slot that is not current, under the next
    /// sequence number (fdatasynced on a durable file system), so a crash at any point leaves
    /// either the old record or the new one, never a mix. A record that outgrew its slots is
    /// written to a new file with room to double, renamed into place.
    pub fn save(&self, record: &VolumeRecord) -> Result<(), StateError> {
        debug_assert_eq!(record.key(), self.key);
        let json = serde_json::to_vec(record).expect("a VolumeRecord always serialises");
        self.write(&json)
    }

    /// Removes the record (the volume is no longer mounted or used): a tombstone, written like a
    /// change. The file stays for the volume's next use; recovery removes those not used again.
    pub fn remove(&self) -> Result<(), StateError> {
        let live = {
            let mut held = self.held.borrow_mut();
            self.know_slots(&mut held);
            held.slots.map(|s| s.live)
        };
        match live {
            Some(false) => Ok(()),
            _ => self.write(b""),
        }
    }

    /// Reads where the record stands when this guard does not know yet; a file that holds no
    /// valid slot of this layout is left unknown (a change then makes it anew).
    fn know_slots(&self, held: &mut Held) {
        if held.slots.is_some() {
            return;
        }
        let Ok(bytes) = held.read() else { return };
        if let Ok(Decoded::Slots {
            cap,
            current,
            payload,
        }) = layout::decode(&bytes)
        {
            held.slots = Some(Slots {
                cap,
                current,
                live: payload.is_some(),
            });
        }
    }

    /// Writes `payload` (empty: a tombstone) as the volume's new state.
    fn write(&self, payload: &[u8]) -> Result<(), StateError> {
        let mut held = self.held.borrow_mut();
        self.know_slots(&mut held);
        match held.slots {
            Some(s) if layout::fits(payload.len(), s.cap) => {
                let next = Current {
                    index: 1 - s.current.index,
                    seq: s.current.seq + 1,
                };
                let bytes = layout::slot(next.seq, payload);
                let offset = layout::slot_offset(s.cap, next.index);
                if crate::crash::reached("state:slot-torn") {
                    // The crash campaign's torn write: half the slot, then death.
                    let _ = held.file.write_all_at(&bytes[..bytes.len() / 2], offset);
                    crate::crash::die();
                }
                held.file
                    .write_all_at(&bytes, offset)
                    .map_err(io_err("writing", &self.path))?;
                crate::crash::point("state:slot-written");
                if self.durable {
                    held.file
                        .sync_data()
                        .map_err(io_err("syncing", &self.path))?;
                }
                held.size = held.size.max(offset + bytes.len() as u64);
                held.slots = Some(Slots {
                    cap: s.cap,
                    current: next,
                    live: !payload.is_empty(),
                });
            }
            Some(s) => self.replace(
                &mut held,
                layout::cap_for(payload.len()),
                s.current.seq + 1,
                payload,
            )?,
            None => self.replace(&mut held, layout::cap_for(payload.len()), 1, payload)?,
        }
        held.wrote = true;
        Ok(())
    }

    /// Makes the record file anew holding `payload` under `seq` in slots of `cap` bytes: written
    /// whole under a temporary name, locked, then renamed over the record. The old file's waiters
    /// find it unlinked once this guard lets it go, and lock the new one.
    fn replace(
        &self,
        held: &mut Held,
        cap: u32,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), StateError> {
        let tmp = self.sibling(".", ".tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        let bytes = layout::file(cap, seq, payload);
        write_whole(&file, &bytes, self.durable).map_err(io_err("writing", &tmp))?;
        crate::crash::point("state:replace-ready");
        fs::rename(&tmp, &self.path).map_err(io_err("renaming into place", &self.path))?;
        crate::durable::sync_dir(&self.dir, self.durable)?;
        crate::crash::point("state:replaced");
        held.file = file;
        held.size = bytes.len() as u64;
        held.slots = Some(Slots {
            cap,
            current: Current { index: 0, seq },
            live: !payload.is_empty(),
        });
        held.wrote = true;
        Ok(())
    }

    /// `prefix` + the record file's name + `suffix`, in its directory.
    fn sibling(&self, prefix: &str, suffix: &str) -> PathBuf {
        let mut name = std::ffi::OsString::from(prefix);
        name.push(self.path.file_name().unwrap_or_default());
        name.push(suffix);
        self.dir.join(name)
    }

    /// Copies a record that cannot be read out of the way, keeping it for inspection, leaves the
    /// volume without a record, and returns where the copy went.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.sibling("", &format!(".corrupt.{secs}"));
        let mut held = self.held.borrow_mut();
        let bytes = held.read().map_err(io_err("reading", &self.path))?;
        let copy = File::create(&aside).and_then(|f| {
            f.write_all_at(&bytes, 0)?;
            if self.durable {
                f.sync_all()?;
            }
            Ok(())
        });
        copy.map_err(io_err("setting aside", &self.path))?;
        self.replace(&mut held, layout::MIN_CAP, 1, b"")?;
        // No record now, nor any reason to keep the file.
        held.found_none = true;
        held.wrote = false;
        Ok(aside)
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let held = self.held.get_mut();
        if held.found_none && !held.wrote {
            // Removed while still locked: a waiter finds its file unlinked and makes a new one.
            match fs::remove_file(&self.path) {
                Ok(()) => crate::crash::point("state:reclaimed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("removing unused {} failed: {e}", self.path.display()),
            }
        }
    }
}
