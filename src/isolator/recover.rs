//! Recover and gc: the checkpoint reconciled with the containers still alive and with the host's
//! mount table — references of gone containers dropped, unused volumes unmounted, vanished mounts
//! made again, and (at recover) the leases of volumes in use taken again.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::error::render_chain;
use crate::mount;
use crate::spec::VolumeKey;
use crate::state::{ContainerId, Owner, Phase, StateError, Surveyed, VolumeGuard, VolumeRecord};

use super::{
    fence_container, process_start_time, Index, Isolator, IsolatorError, KnownContainer,
    RecoverReport,
};

impl Isolator {
    /// Reconciles the checkpoint with the containers the agent still knows and with the host's
    /// mount table: drops references of containers that are gone, unmounts volumes no one uses,
    /// mounts again volumes in use whose mount vanished or was half done.
    pub fn recover(
        &self,
        known: &[KnownContainer],
        orphans: &[ContainerId],
    ) -> Result<RecoverReport, IsolatorError> {
        // The original module's mounts become records first, so the reconcile below keeps or
        // releases them like any other.
        let legacy = crate::legacy::import(&self.store, &self.config.legacy_checkpoint);
        let alive: HashSet<&ContainerId> = known
            .iter()
            .map(|k| &k.id)
            .filter(|id| !orphans.contains(id))
            .collect();
        let mut index: Index = alive
            .iter()
            .map(|id| ((*id).clone(), Some(Vec::new())))
            .collect();
        if let Some(c) = &self.coord {
            // Give a fresh session the time it needs to come up before judging leases by it.
            if !c.wait_connected(self.config.lease_session_timeout) {
                log::warn!(
                    "not connected to ZooKeeper after {} s: containers using leased volumes will be fenced",
                    self.config.lease_session_timeout.as_secs()
                );
            }
        }
        let mut report = self.reconcile(
            &|id, owner| match owner {
                Owner::Mesos => alive.contains(id),
                Owner::Process { pid, start_time } => process_alive(pid, start_time),
            },
            false,
            Some(&mut index),
        )?;
        report.errors.splice(0..0, legacy.errors);
        *self.index() = index;
        log::info!(
            "recovered: {} volume(s) in use, {} reference(s) dropped, {} unmounted, {} remounted, {} container(s) fenced, {} problem(s)",
            report.kept.len(),
            report.dropped.len(),
            report.unmounted.len(),
            report.remounted.len(),
            report.fenced.len(),
            report.errors.len()
        );
        Ok(report)
    }

    /// What an operator can repair without the agent (`dvdi gc`): drops references of `dvdi run`
    /// processes that are gone, unmounts volumes no one uses (a half-done or failed unmount), and
    /// mounts again volumes in use whose mount vanished. References held by Mesos containers are
    /// left alone: only the agent knows whether those live. With `dry_run`, changes nothing and
    /// reports what it would do.
    pub fn gc(&self, dry_run: bool) -> Result<RecoverReport, IsolatorError> {
        self.reconcile(
            &|_, owner| match owner {
                Owner::Mesos => true,
                Owner::Process { pid, start_time } => process_alive(pid, start_time),
            },
            dry_run,
            None,
        )
    }

    /// What [`Isolator::gc`] would do to the volume of each of `records` (snapshots read without
    /// their locks, as `dvdi status` reads them). The same judgement as gc's, without its locks,
    /// so a status never waits on a mount.
    pub fn gc_would(&self, records: &[&VolumeRecord]) -> Result<Vec<GcWould>, IsolatorError> {
        let table = mount::read_mountinfo(&self.mountinfo).map_err(IsolatorError::MountTable)?;
        let mounted: HashSet<&Path> = table.iter().map(|e| e.mount_point.as_path()).collect();
        let alive = |_: &ContainerId, owner: Owner| match owner {
            Owner::Mesos => true,
            Owner::Process { pid, start_time } => process_alive(pid, start_time),
        };
        let step = Reconcile {
            alive: &alive,
            leases: false,
            mounted: &mounted,
            dry_run: true,
        };
        Ok(records
            .iter()
            .map(|record| {
                let gone = step.gone(record);
                let action = if gone.len() == record.users.len() {
                    Some(match record.phase {
                        Phase::Unmounted => GcAction::ReleaseLease,
                        _ => GcAction::Unmount,
                    })
                } else if step.vanished(record) {
                    Some(match self.refuse_second_mount(record) {
                        Ok(()) => GcAction::Remount,
                        Err(e) => GcAction::Refuse(render_chain(&e)),
                    })
                } else if Reconcile::half_done(record) {
                    Some(GcAction::Remount)
                } else {
                    None
                };
                GcWould { gone, action }
            })
            .collect())
    }

    /// One reconciliation pass over every recorded volume, judged by `alive`; fills `index` with
    /// who holds what when given one.
    fn reconcile(
        &self,
        alive: &(dyn Fn(&ContainerId, Owner) -> bool + Sync),
        dry_run: bool,
        mut index: Option<&mut Index>,
    ) -> Result<RecoverReport, IsolatorError> {
        let table = mount::read_mountinfo(&self.mountinfo).map_err(IsolatorError::MountTable)?;
        let mounted: HashSet<&Path> = table.iter().map(|e| e.mount_point.as_path()).collect();
        let surveyed = self
            .store
            .survey()
            .map_err(|e| IsolatorError::Store(Box::new(e)))?;
        let step = Reconcile {
            alive,
            leases: index.is_some() && !dry_run,
            mounted: &mounted,
            dry_run,
        };
        let track = index.is_some();
        // Volumes are independent: reconcile them on every core, each worker with its own
        // report and index, merged in key order afterwards.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = surveyed.len().div_ceil(workers).max(1);
        let parts: Vec<(RecoverReport, Uses)> = std::thread::scope(|s| {
            let handles: Vec<_> = surveyed
                .chunks(chunk)
                .map(|part| {
                    let step = &step;
                    s.spawn(move || self.reconcile_part(part, step, track))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut report = RecoverReport::default();
        for (part, part_uses) in parts {
            report.dropped.extend(part.dropped);
            report.unmounted.extend(part.unmounted);
            report.remounted.extend(part.remounted);
            report.kept.extend(part.kept);
            report.fenced.extend(part.fenced);
            report.errors.extend(part.errors);
            if let Some(index) = index.as_deref_mut() {
                merge_uses(index, part_uses);
            }
        }
        Ok(report)
    }

    /// One worker's share of a reconciliation: its own report and (with `track`) its own index.
    fn reconcile_part(
        &self,
        part: &[Result<Surveyed, StateError>],
        step: &Reconcile<'_>,
        track: bool,
    ) -> (RecoverReport, Uses) {
        let mut report = RecoverReport::default();
        let mut part_uses = Uses::new();
        for volume in part {
            let volume = match volume {
                Ok(volume) => volume,
                Err(e) => {
                    // Never replaced silently: the operator decides (`dvdi status` shows it).
                    report.errors.push(render_chain(e));
                    continue;
                }
            };
            let uses = track.then_some(&mut part_uses);
            if let Err(e) = self.reconcile_volume(volume, step, &mut report, uses) {
                report.errors.push(render_chain(&e));
            }
        }
        (report, part_uses)
    }
}

/// Reconciling one volume.
impl Isolator {
    /// Reconciles one volume: drops its gone users, unmounts it when none is left, takes its
    /// lease again (at recover) and mounts it again when its mount vanished or was half done.
    fn reconcile_volume(
        &self,
        volume: &Surveyed,
        step: &Reconcile<'_>,
        report: &mut RecoverReport,
        uses: Option<&mut Uses>,
    ) -> Result<(), IsolatorError> {
        // Most volumes need nothing at recovery: every user alive, mounted, the mount in place.
        // Judge that on a snapshot read without the lock and take the lock only to change
        // something. The snapshot cannot mislead: a reader sees a record whole, old or new, and nothing but
        // this isolator drops a Mesos container's reference, while a `dvdi` process unmounts a
        // volume only once it has no users left.
        let key = &volume.key;
        if let Some(snapshot) = &volume.snapshot() {
            if self.needs_nothing(snapshot, step) {
                if let Some(uses) = uses {
                    add_users(uses, snapshot, key);
                }
                report.kept.push(key.clone());
                return Ok(());
            }
        }
        let guard = self.store.lock(key).map_err(Self::state_err(key))?;
        let Some(mut record) = guard.load().map_err(Self::state_err(key))? else {
            return Ok(());
        };
        let before = record.users.len();
        for id in step.gone(&record) {
            record.users.remove(&id);
            report.dropped.push((key.clone(), id));
        }
        if record.users.is_empty() {
            if !step.dry_run {
                self.unmount_unused(&guard, record)?;
            }
            report.unmounted.push(key.clone());
            return Ok(());
        }
        let retake = self.lease_to_retake(&record, step).unwrap_or_else(|e| {
            // Recorded without a lease by a process that judged the driver local: kept so (it
            // is no less safe than before the restart), and the next prepare asks again.
            report
                .errors
                .push(format!("{}; kept without a lease", render_chain(&e)));
            false
        });
        let lease_held = !retake || self.retake_lease(&guard, &mut record, report)?;
        let mut changed = record.users.len() != before;
        let refused = match step.vanished(&record) {
            true => self.refuse_second_mount(&record).err(),
            false => None,
        };
        let remount = Reconcile::half_done(&record) || step.vanished(&record);
        if let Some(e) = refused {
            // Kept as it is, users and all, with the reason for `dvdi status`; the users still
            // have the file system in their own namespaces.
            let text = render_chain(&e);
            record.last_error = Some(text.clone());
            changed = true;
            report.errors.push(text);
        } else if lease_held && remount {
            if !step.dry_run {
                let host = self.mount_record(&record)?;
                self.note_mount(&mut record, host);
                record.phase = Phase::Mounted;
                record.last_error = None;
                changed = true;
            }
            report.remounted.push(key.clone());
        }
        if changed && !step.dry_run {
            guard.save(&record).map_err(Self::state_err(key))?;
        }
        if let Some(uses) = uses {
            add_users(uses, &record, key);
        }
        report.kept.push(key.clone());
        Ok(())
    }

    /// Whether a volume, as read without its lock, needs nothing: every user alive, mounted, the
    /// mount in place, and no lease to take again.
    fn needs_nothing(&self, snapshot: &VolumeRecord, step: &Reconcile<'_>) -> bool {
        matches!(self.lease_to_retake(snapshot, step), Ok(false))
            && snapshot.phase == Phase::Mounted
            && !snapshot.users.is_empty()
            && !step.vanished(snapshot)
            && snapshot
                .users
                .iter()
                .all(|(id, u)| (step.alive)(id, u.owner))
    }

    /// Whether this pass takes `record`'s lease again (its volume is leased, this process has
    /// users of it, and the pass is a recover); an error when the driver's scope is unknown. A
    /// volume only other processes use (live `dvdi run`s) is leased by them, in their sessions.
    fn lease_to_retake(
        &self,
        record: &VolumeRecord,
        step: &Reconcile<'_>,
    ) -> Result<bool, IsolatorError> {
        Ok(step.leases
            && record.users.values().any(Self::own_user)
            && (record.lease.is_some() || self.leased(record)?))
    }

    /// Takes again the lease of a volume in use here (this process's session is new) and says
    /// whether it is held. Held by another agent, or not to be had, the volume must not stay in
    /// use here: its containers are fenced, and their cleanup releases it; it is not mounted
    /// again.
    fn retake_lease(
        &self,
        guard: &VolumeGuard,
        record: &mut VolumeRecord,
        report: &mut RecoverReport,
    ) -> Result<bool, IsolatorError> {
        let key = guard.key();
        let mode = Self::mode_of(record);
        if record.lease != Some(mode) {
            record.lease = Some(mode);
            guard.save(record).map_err(Self::state_err(key))?;
        }
        // No wait: the lease is this agent's (its previous process's node is taken over), or
        // lost.
        match self.take_lease(key, mode, Duration::ZERO) {
            Ok(()) => Ok(true),
            Err(e) => {
                let message = format!("{}; the container was fenced at recovery", render_chain(&e));
                for id in record.users.keys() {
                    fence_container(&self.fence, id, &message);
                    report.fenced.push((id.clone(), message.clone()));
                }
                Ok(false)
            }
        }
    }
}

/// What `dvdi gc` would do to one volume ([`Isolator::gc_would`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcWould {
    /// Users whose container is gone: their references are dropped.
    pub gone: Vec<ContainerId>,
    /// What then happens to the volume; `None`: it is kept as it is.
    pub action: Option<GcAction>,
}

/// What `dvdi gc` does to a volume besides dropping gone users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// No live user is left: unmounted (a failed or half-done unmount retried).
    Unmount,
    /// Unmounted already; its lease is given back.
    ReleaseLease,
    /// In use, and its mount vanished or was half done: mounted again.
    Remount,
    /// In use and its mount vanished, but its file system is still mounted somewhere: not
    /// mounted again (why, rendered).
    Refuse(String),
}

/// Who uses what, as one worker found it: (container, volume) pairs, indexed only once merged.
type Uses = Vec<(ContainerId, VolumeKey)>;

/// Adds a worker's uses to the index.
fn merge_uses(index: &mut Index, part: Uses) {
    for (id, key) in part {
        match index.get_mut(&id) {
            Some(Some(keys)) => keys.push(key),
            // A live `dvdi run` process the agent does not know.
            _ => {
                index.insert(id, Some(vec![key]));
            }
        }
    }
}

/// Records in `uses` that the users of `record` hold `key`.
fn add_users(uses: &mut Uses, record: &VolumeRecord, key: &VolumeKey) {
    uses.extend(record.users.keys().map(|id| (id.clone(), key.clone())));
}

/// What one reconciliation pass judges by.
struct Reconcile<'a> {
    alive: &'a (dyn Fn(&ContainerId, Owner) -> bool + Sync),
    /// Take again the leases of volumes in use (recover, not `dvdi gc`: a lease belongs to the
    /// process whose session holds it).
    leases: bool,
    /// The host's mount points (a set: an agent may hold thousands of mounts).
    mounted: &'a HashSet<&'a Path>,
    dry_run: bool,
}

impl Reconcile<'_> {
    /// The users of `record` whose container is gone.
    fn gone(&self, record: &VolumeRecord) -> Vec<ContainerId> {
        record
            .users
            .iter()
            .filter(|(id, u)| !(self.alive)(id, u.owner))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether `record`'s mount was half done (or half undone) by a process that died: a
    /// volume in use in such a phase is mounted again.
    fn half_done(record: &VolumeRecord) -> bool {
        record.phase != Phase::Mounted
    }

    /// Whether a volume recorded as mounted on a mount point of its own lost that mount (someone
    /// unmounted it by hand, or the host rebooted under a persistent work_dir).
    fn vanished(&self, record: &VolumeRecord) -> bool {
        record.phase == Phase::Mounted
            && record.is_mount_point
            && record
                .host_path
                .as_deref()
                .is_some_and(|p| !self.mounted.contains(p))
    }
}

/// Whether the `dvdi run` process that holds a reference still exists: the same pid with the
/// same start time (a reused pid has another).
fn process_alive(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}
