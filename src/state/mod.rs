//! The mount table: which volumes are mounted on this host, where, and by which containers.
//!
//! This layer owns the checkpoint under the work directory and nothing else: it never calls a
//! backend or mount(2). Every change is atomic on disk and made under the volume's flock, which
//! threads of the module and `dvdi` processes on the same agent share.
//!
//! # The layout, and why
//!
//! One file per volume, `volumes/<driver>/<name>.json`, which is at once the volume's lock (its
//! flock) and its record. The file holds two slots, each a complete copy of the record with a
//! sequence number, its length and a CRC-32 (`layout.rs`). A change is one `pwrite` of the new
//! copy into the slot that is *not* current, under the next number, plus an `fdatasync` where the
//! file system outlives the boot; the reader takes the valid slot with the higher number. A
//! removed record is a tombstone written the same way, and the file stays for the volume's next
//! use.
//!
//! What this buys: a prepare and cleanup of one volume make four changes to its record (the
//! intent to mount, the mount, the intent to unmount, the removal), each a point recovery relies
//! on. Replacing a whole file per change (a temp file, write, rename, as the first layout did)
//! costs a file creation and a rename each time, and directory operations are by far the dearest
//! file-system calls: on the VMs of the benchmarks a create or rename costs 10–40 µs, a `pwrite`,
//! `pread`, `fstat` or `flock` about 1 µs. Writing in place makes each change a single cheap call
//! and the whole prepare+cleanup a dozen such calls with no directory operation at all. Recovery
//! reads each volume's file once (open, read, close), as before, but the file is the only one per
//! volume (the first layout kept a lock file beside each record).
//!
//! Rejected: an append-only journal per agent would let recovery read one file instead of one per
//! volume, but the module and every `dvdi` process append to it, so compaction needs a lock that
//! every append takes too, and reading one volume's record means replaying or indexing the
//! journal in every process. A journal per volume needs compaction by rename, so its files grow
//! between compactions and recovery reads more than one copy of each record. Two slots of fixed
//! place need neither.
//!
//! # Crash safety
//!
//! - A write cut at any byte (a crash, or a power cut on a durable file system) damages only the
//!   slot that was being written, which was not current: its checksum fails, or its length runs
//!   past what was written, and the reader takes the other slot, the state before the change.
//!   Recovery then redoes the step that followed, as it does for a crash just before the write.
//! - A file appears at its name only whole: a new volume's file is written unnamed (`O_TMPFILE`)
//!   with a tombstone, locked, and only then linked. A record that outgrows its slots, and a
//!   record of the first layout being converted, are written whole under a temporary name, locked,
//!   and renamed over the old file.
//! - A waiter for a lock may wake on a file that was replaced or removed meanwhile; it checks the
//!   file is still linked once it holds the lock, and starts again on the name if not.
//! - The crash campaign (`tests/isolator_crash.rs`) kills a process at each point listed in
//!   [`CRASH_POINTS`], the torn write among them, and `tests/state_store.rs` cuts each kind of
//!   write at every byte.
//!
//! # Upgrading from the first layout
//!
//! mesos-dvdi first kept each record as a whole JSON file replaced by rename, with a separate
//! `<name>.lock`. Such a file (it starts with `{`) is read as it is, and converted under its lock
//! the first time it is loaded; recovery loads every one, so an agent upgraded in place keeps its
//! volumes. The conversion removes the old lock file first. A `dvdi` of the first layout must not run
//! beside this one: it locks the old lock file and would not see this one's lock.
//!
//! # Files that hold no record
//!
//! A volume's file outlives its record, so that using the volume again costs no file creation.
//! A lock holder that finds no record and writes none removes the file before letting the lock
//! go; recovery and `dvdi gc` lock each file without a record, so they remove the files of volumes
//! no longer used.

mod guard;
mod layout;
mod record;
mod store;

pub use guard::VolumeGuard;
pub use layout::Damage;
pub use record::{
    ContainerId, ContainerIdError, Owner, Phase, Use, VolumeRecord, CHECKPOINT_VERSION,
    MAX_CONTAINER_ID_LEN,
};
pub use store::{ScannedVolume, StateError, Store, Surveyed};

/// The crash points of the checkpoint's own persistence steps, compiled in with the
/// `crash-points` feature (see [`isolator::CRASH_POINTS`](crate::isolator::CRASH_POINTS) for the
/// isolator's). A point met more than once in an operation is chosen by `DVDI_CRASH_SKIP`.
pub const CRASH_POINTS: &[&str] = &[
    // A new volume's file is linked in place, holding no record yet.
    "state:created",
    // A change is cut halfway through its slot, then the process dies.
    "state:slot-torn",
    // A change is written, not yet fdatasynced.
    "state:slot-written",
    // A record of the first layout being converted: its old lock file is removed, the record
    // not yet converted.
    "state:old-lock-removed",
    // A file made anew (a record outgrew its slots, or is converted) is written under its
    // temporary name, not yet renamed.
    "state:replace-ready",
    // ... and renamed into place; the old file is still locked.
    "state:replaced",
    // A file with no record is removed, its lock not yet let go.
    "state:reclaimed",
];
