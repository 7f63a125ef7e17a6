//! Prepare: a container's request resolved, its container paths verified, and each volume
//! acquired (lease, backend mount, record) — all or nothing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::MountId;
use crate::error::render_chain;
use crate::mount;
use crate::spec::{self, Resolved, VolumeKey, VolumeSpec};
use crate::state::{ContainerId, Owner, Phase, Use, VolumeGuard, VolumeRecord, CHECKPOINT_VERSION};

use super::{
    crash_point, ContainerInput, Isolator, IsolatorError, LaunchPlan, PlannedMount, PrepareError,
};

/// A volume acquired for a container: its key, its host mount point, whether it is leased.
type Acquired = (VolumeKey, PathBuf, bool);

impl Isolator {
    /// Resolves, mounts and records every volume `input` asks for; all or nothing.
    pub fn prepare(
        &self,
        id: &str,
        owner: Owner,
        input: &ContainerInput,
    ) -> Result<LaunchPlan, PrepareError> {
        let fail = |cause| PrepareError::new(id, cause);
        let id = ContainerId::new(id).map_err(|e| fail(e.into()))?;
        {
            let mut index = self.index();
            if index.contains_key(&id) {
                return Err(fail(IsolatorError::AlreadyPrepared(id)));
            }
            index.insert(id.clone(), None);
        }
        let result = self.prepare_reserved(&id, owner, input);
        let mut index = self.index();
        match &result {
            Ok(plan) => {
                index.insert(
                    id.clone(),
                    Some(plan.volumes.iter().map(|(k, _)| k.clone()).collect()),
                );
                // A lease lost while this prepare ran found no container to fence: look now,
                // under the index lock, so that a loss from here on finds this container.
                self.fence_if_lease_lost(&id, &plan.leased);
            }
            Err(_) => {
                index.remove(&id);
            }
        }
        drop(index);
        self.prepared.notify_all();
        result
    }

    /// `prepare` for a container already entered in the index (as being prepared).
    fn prepare_reserved(
        &self,
        id: &ContainerId,
        owner: Owner,
        input: &ContainerInput,
    ) -> Result<LaunchPlan, PrepareError> {
        let fail = |cause| PrepareError::new(id.as_str(), cause);
        // With docker_volumes=ignore another isolator owns DOCKER_VOLUME entries: not even
        // validated here, as their errors are that isolator's to report.
        let resolved = spec::resolve(
            &input.env,
            self.config.docker_volumes_of(&input.docker_volumes),
            self.config.csi_volumes_of(&input.csi_volumes),
            &self.config.resolve_options(),
        )
        .map_err(|e| fail(e.into()))?;
        // Verify every target before any backend call: a refused path costs no attach.
        // Directories made for them are removed again on every way out but success.
        let (targets, created) = self
            .resolve_targets(&resolved.volumes, input)
            .map_err(fail)?;
        let acquired = self.acquire_all(&resolved.volumes, &targets, id, owner)?;
        let plan = launch_plan(&resolved, targets, acquired);
        created.disarm();
        Ok(plan)
    }

    /// Acquires every volume for `id` (independent volumes in parallel, as far as the call pool's
    /// bound allows; one volume needs no thread). When one fails, those acquired are released
    /// again.
    fn acquire_all(
        &self,
        volumes: &[VolumeSpec],
        targets: &[Option<PathBuf>],
        id: &ContainerId,
        owner: Owner,
    ) -> Result<Vec<Acquired>, PrepareError> {
        let usage = |spec: &VolumeSpec, target: &Option<PathBuf>| Use {
            target: target.clone(),
            read_only: spec.read_only,
            owner,
        };
        let pairs: Vec<(&VolumeSpec, &Option<PathBuf>)> = volumes.iter().zip(targets).collect();
        let results: Vec<Result<(PathBuf, bool), IsolatorError>> =
            crate::pool::in_parallel(&pairs, |(spec, target)| {
                self.acquire(spec, id, usage(spec, target))
            });

        let mut acquired = Vec::new();
        let mut first_error = None;
        for (spec, result) in volumes.iter().zip(results) {
            match result {
                Ok((host, leased)) => acquired.push((spec.key(), host, leased)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(acquired),
            Some(cause) => {
                let rollback = acquired
                    .iter()
                    .filter_map(|(key, _, _)| self.release(key, id).err())
                    .collect();
                Err(PrepareError {
                    container: id.to_string(),
                    cause: Box::new(cause),
                    rollback,
                })
            }
        }
    }
}

/// Acquiring one volume for a container: join a mount that exists, or lease, mount and record it.
impl Isolator {
    /// Adds `id` as a user of the volume, mounting it on the host when it is its first user.
    /// Returns the host mount point and whether the volume is leased.
    fn acquire(
        &self,
        spec: &VolumeSpec,
        id: &ContainerId,
        usage: Use,
    ) -> Result<(PathBuf, bool), IsolatorError> {
        let key = spec.key();
        // Interrupted while another volume waited: nothing more is started.
        if self.waits.is_interrupted() {
            return Err(self.interrupted(&key, "waiting to be attached".to_owned()));
        }
        let guard = self.store.lock(&key).map_err(Self::state_err(&key))?;
        let existing = guard.load().map_err(Self::state_err(&key))?;
        let existed = existing.is_some();
        let mut record = match existing {
            Some(record) if record.phase == Phase::Mounted && record.host_path.is_some() => {
                warn_other_options(&record, spec);
                return self.join_mounted(&guard, record, id, usage);
            }
            // Half mounted or half unmounted by a process that died (or a failed unmount):
            // mount again under the same id, which every backend treats as idempotent.
            // The task's secrets are in memory only: a record read back has none.
            Some(record) => VolumeRecord {
                csi: spec.csi.clone(),
                ..record
            },
            None => self.new_record(spec),
        };
        let before = record.clone();
        record.phase = Phase::Mounting;
        record.users.insert(id.clone(), usage);
        // The lease is recorded before it is taken, so that recovery knows it may be held.
        if record.lease.is_some() || self.leased(&record)? {
            let mode = Self::mode_of(&record);
            record.lease = Some(record.lease.map_or(mode, |held| held.max(mode)));
        }
        guard.save(&record).map_err(Self::state_err(&key))?;
        crash_point("prepare:intent-saved");

        let mut took_lease = false;
        let mounted = match record.lease {
            Some(mode) => self
                .take_lease(&key, mode, self.config.lease_wait)
                .map(|()| {
                    took_lease = true;
                    crash_point("prepare:lease-acquired");
                }),
            None => Ok(()),
        }
        .and_then(|()| match self.waits.is_interrupted() {
            // Interrupted while its lease was taken: not attached, and the lease given back.
            true => Err(self.interrupted(&key, "about to be attached".to_owned())),
            false => self.mount_record(&record),
        });
        let host = match mounted {
            Ok(host) => host,
            Err(e) => {
                self.undo_acquire(&guard, before, &record, existed, took_lease, &e);
                return Err(e);
            }
        };
        crash_point("prepare:backend-mounted");
        self.note_mount(&mut record, host.clone());
        record.phase = Phase::Mounted;
        record.last_error = None;
        guard.save(&record).map_err(Self::state_err(&key))?;
        crash_point("prepare:mounted-saved");
        log::info!("{key}: mounted at {} for container {id}", host.display());
        Ok((host, record.lease.is_some()))
    }

    /// Adds `id` as a user of a volume mounted here already. A leased volume's lease is taken
    /// in this process's own session too: every process of the agent that uses the volume holds
    /// the agent's lease, so that it outlives any one of them and each is fenced by its own. A
    /// writer joining readers upgrades it before the writer gets the volume (and a volume whose
    /// driver became leased since it was mounted is leased now).
    fn join_mounted(
        &self,
        guard: &VolumeGuard,
        mut record: VolumeRecord,
        id: &ContainerId,
        usage: Use,
    ) -> Result<(PathBuf, bool), IsolatorError> {
        let key = guard.key();
        let host = record.host_path.clone().unwrap_or_default();
        if !usage.read_only && mount::is_read_only(&host) {
            return Err(IsolatorError::ReadOnlyMount {
                volume: key.clone(),
            });
        }
        let before = record.clone();
        record.users.insert(id.clone(), usage);
        let mode = Self::mode_of(&record);
        let leased = record.lease.is_some() || self.leased(&record)?;
        if leased {
            if record.lease.is_none_or(|held| held < mode) {
                // The intent first, so that recovery knows the stronger lease may be held.
                record.lease = Some(mode);
                guard.save(&record).map_err(Self::state_err(key))?;
                crash_point("prepare:upgrade-saved");
            }
            // Held by this process already in `mode` or more, this asks ZooKeeper nothing.
            if let Err(e) = self.take_lease(key, mode, self.config.lease_wait) {
                if let Err(se) = guard.save(&before) {
                    log::error!("{}", render_chain(&Self::state_err(key)(se)));
                }
                return Err(e);
            }
        }
        guard.save(&record).map_err(Self::state_err(key))?;
        crash_point("prepare:user-added");
        Ok((host, leased))
    }

    /// A new volume's record, before its first mount.
    fn new_record(&self, spec: &VolumeSpec) -> VolumeRecord {
        VolumeRecord {
            version: CHECKPOINT_VERSION,
            driver: spec.driver.clone(),
            name: spec.name.clone(),
            opts: spec.opts.clone(),
            explicit_create: spec.explicit_create,
            dvdcli: spec.dvdcli.clone(),
            mount_id: self.new_mount_id(),
            phase: Phase::Mounting,
            host_path: None,
            is_mount_point: false,
            device: None,
            users: Default::default(),
            last_error: None,
            lease: None,
            csi: spec.csi.clone(),
        }
    }

    /// After a failed lease or mount, leaves the record as it was `before`: gone for a volume
    /// this call created, the earlier state (other users, a pending unmount) for one that was
    /// recorded already. A lease this call took for a volume that held none is given back; an
    /// upgraded one stays, as the restored record says. Failures here are logged: the caller
    /// reports `error`, the cause.
    fn undo_acquire(
        &self,
        guard: &VolumeGuard,
        before: VolumeRecord,
        record: &VolumeRecord,
        existed: bool,
        took_lease: bool,
        error: &IsolatorError,
    ) {
        let key = guard.key();
        let mut restored = before;
        restored.last_error = Some(render_chain(error));
        if restored.lease.is_some() {
            restored.lease = restored.lease.max(record.lease);
        } else if took_lease {
            if let Err(le) = self.release_lease(key) {
                // Kept recorded with its lease, so the next cleanup or recover gives it back.
                log::error!("{}", render_chain(&le));
                restored.lease = record.lease;
                if !existed {
                    restored.phase = Phase::Unmounting;
                }
                if let Err(se) = guard.save(&restored) {
                    log::error!("{}", render_chain(&Self::state_err(key)(se)));
                }
                self.pending().insert(key.clone());
                return;
            }
        }
        let saved = if existed {
            guard.save(&restored)
        } else {
            guard.remove()
        };
        if let Err(se) = saved {
            log::error!("{}", render_chain(&Self::state_err(key)(se)));
        }
    }

    /// A mount id no other mount of this host uses: the backend's `ID` for Mount and Unmount.
    fn new_mount_id(&self) -> MountId {
        let n = self.next_mount.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        MountId(format!("mesos-dvdi-{}-{nanos:x}-{n}", std::process::id()))
    }
}

/// A container joining a volume mounted with other options gets the volume as it is: options
/// apply when a volume is made or mounted, and the mount it joins stands. Said, not refused: the
/// volume, found by its name, is what the container asked for.
fn warn_other_options(record: &VolumeRecord, spec: &VolumeSpec) {
    let set = |o: &spec::VolumeOpts| -> std::collections::BTreeMap<String, String> {
        o.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    if set(&record.opts) != set(&spec.opts) {
        let shown = |o: &spec::VolumeOpts| match o.is_empty() {
            true => "none".to_owned(),
            false => o.to_string(),
        };
        log::warn!(
            "{} is mounted here already with options {}; this container's options {} are ignored (options apply when a volume is mounted anew)",
            spec.key(),
            shown(&record.opts),
            shown(&spec.opts)
        );
    }
}

/// The launch plan for volumes resolved and acquired in order.
fn launch_plan(
    resolved: &Resolved,
    targets: Vec<Option<PathBuf>>,
    acquired: Vec<Acquired>,
) -> LaunchPlan {
    let mut plan = LaunchPlan {
        warnings: resolved.warnings.iter().map(ToString::to_string).collect(),
        ..LaunchPlan::default()
    };
    for ((spec, target), (key, host, leased)) in resolved.volumes.iter().zip(targets).zip(acquired)
    {
        if leased {
            plan.leased.push(key.clone());
        }
        if let Some(target) = target {
            plan.mounts.push(PlannedMount {
                volume: key.clone(),
                source: host.clone(),
                target,
                read_only: spec.read_only,
            });
        }
        plan.volumes.push((key, host));
    }
    plan.needs_new_mount_ns = !plan.mounts.is_empty();
    plan
}
