//! recover / prepare / cleanup: the isolator itself, with no Mesos in sight.
//!
//! Composes the layers below: [`spec`](crate::spec) resolves what a container asks for, the
//! [`mount`](crate::mount) layer verifies where each volume is bound, a [`BackendProvider`] mounts it
//! on the host, and the [`state`](crate::state) store counts who uses it. This module owns the
//! ordering that makes crashes safe: every change is checkpointed before the backend call that
//! depends on it, so recovery always knows which calls may have happened.
//!
//! Locks: one flock per volume (held across its backend call, so two containers preparing one
//! volume cause one mount) and one short in-memory lock over the container index, never held
//! across a backend call or a checkpoint write.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{BackendError, BackendProvider, MountId, MountRequest};
use crate::config::Config;
use crate::error::render_chain;
use crate::mount::{self, TargetError, TargetPolicy};
use crate::spec::{self, DockerVolumeInput, SpecError, VolumeKey, VolumeSpec};
use crate::state::{
    ContainerId, ContainerIdError, Owner, Phase, StateError, Store, Surveyed, Use, VolumeRecord,
    CHECKPOINT_VERSION,
};

/// What a container asks for and where it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInput {
    /// The task's (or executor's) environment, in order.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `DOCKER_VOLUME` entries of its `ContainerInfo`.
    pub docker_volumes: Vec<DockerVolumeInput>,
    /// Its sandbox directory on the host.
    pub sandbox: PathBuf,
    /// Its root filesystem on the host, when it has an image.
    pub rootfs: Option<PathBuf>,
    /// The user it runs as, when known.
    pub user: Option<String>,
}

/// One bind the containerizer must make in the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMount {
    /// The volume.
    pub volume: VolumeKey,
    /// The volume's host mount point.
    pub source: PathBuf,
    /// The verified absolute host path to bind onto.
    pub target: PathBuf,
    /// Bind read-only.
    pub read_only: bool,
}

/// What the containerizer must do for a prepared container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Binds, in order (`MS_BIND | MS_REC`, plus `MS_RDONLY` when read-only).
    pub mounts: Vec<PlannedMount>,
    /// The container needs its own mount namespace (`CLONE_NEWNS`) for the binds.
    pub needs_new_mount_ns: bool,
    /// Every volume the container holds, with its host mount point (volumes without a container
    /// path are used at that host path directly).
    pub volumes: Vec<(VolumeKey, PathBuf)>,
    /// Task input ignored on purpose, for the agent's log.
    pub warnings: Vec<String>,
}

/// Where a container with its own root filesystem sees its sandbox (the agent's
/// `--sandbox_directory`, whose default this is).
pub const SANDBOX_IN_ROOTFS: &str = "/mnt/mesos/sandbox";

/// A container the agent still knows at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownContainer {
    /// Its id.
    pub id: ContainerId,
}

/// What recovery found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoverReport {
    /// References dropped because their container is gone.
    pub dropped: Vec<(VolumeKey, ContainerId)>,
    /// Volumes unmounted because no one uses them any more.
    pub unmounted: Vec<VolumeKey>,
    /// Volumes whose host mount had vanished (or was half done) and that were mounted again.
    pub remounted: Vec<VolumeKey>,
    /// Volumes still in use, kept mounted.
    pub kept: Vec<VolumeKey>,
    /// Problems that did not stop recovery, rendered; each names its volume or file.
    pub errors: Vec<String>,
}

/// A failed isolator step.
#[derive(Debug, thiserror::Error)]
pub enum IsolatorError {
    /// The container id is not usable.
    #[error("invalid container id")]
    ContainerId(#[from] ContainerIdError),
    /// `prepare` was called twice for one container.
    #[error("container {0} is already prepared; clean it up first")]
    AlreadyPrepared(ContainerId),
    /// The task's volume request breaks the contract.
    #[error("the task's volume request is invalid")]
    Spec(#[from] SpecError),
    /// A container path was refused.
    #[error("{volume}: container path refused")]
    Target {
        /// The volume.
        volume: VolumeKey,
        /// Why.
        #[source]
        source: Box<TargetError>,
    },
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The checkpoint could not be read or written.
    #[error("{volume}: checkpoint")]
    State {
        /// The volume.
        volume: VolumeKey,
        /// Why.
        #[source]
        source: Box<StateError>,
    },
    /// The checkpoint directory could not be read.
    #[error("checkpoint")]
    Store(#[source] Box<StateError>),
    /// Reading the host's mount table failed.
    #[error("reading the mount table failed")]
    MountTable(#[source] std::io::Error),
}

/// `prepare` failed; nothing it did is left behind unless `rollback` says otherwise.
#[derive(Debug, thiserror::Error)]
pub struct PrepareError {
    /// The container.
    pub container: String,
    /// Why prepare failed.
    #[source]
    pub cause: Box<IsolatorError>,
    /// Failures while undoing what prepare had done (each leaves its volume recorded, to be
    /// released by the next cleanup or recover).
    pub rollback: Vec<IsolatorError>,
}

impl PrepareError {
    /// A failure of `container`'s prepare that left nothing to undo.
    fn new(container: &str, cause: IsolatorError) -> Self {
        Self {
            container: container.to_owned(),
            cause: Box::new(cause),
            rollback: Vec::new(),
        }
    }
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preparing volumes for container {} failed",
            self.container
        )?;
        for e in &self.rollback {
            write!(f, " (and undoing it failed: {})", render_chain(e))?;
        }
        Ok(())
    }
}

/// `cleanup` could not unmount some volumes; they stay recorded with the error and are retried by
/// the next cleanup or recover.
#[derive(Debug, thiserror::Error)]
pub struct CleanupError {
    /// The container.
    pub container: ContainerId,
    /// One failure per volume.
    pub failures: Vec<IsolatorError>,
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cleaning up container {}: ", self.container)?;
        for (i, e) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&render_chain(e))?;
        }
        f.write_str(" (kept recorded; retried at the next cleanup or recover)")
    }
}

/// Test-only crash injection: with the `crash-points` feature, the process kills itself with
/// SIGKILL when `DVDI_CRASH_AT` names the point it reaches.
fn crash_point(_point: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("DVDI_CRASH_AT").is_ok_and(|p| p == _point) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
    }
}

/// The crash points compiled in with the `crash-points` feature, in the order an operation meets
/// them.
pub const CRASH_POINTS: &[&str] = &[
    "prepare:intent-saved",
    "prepare:backend-mounted",
    "prepare:mounted-saved",
    "prepare:user-added",
    "cleanup:ref-dropped",
    "cleanup:user-removed",
    "cleanup:unmount-intent-saved",
    "cleanup:backend-unmounted",
];

/// The isolator: prepare, cleanup and recover for any number of threads at once.
pub struct Isolator {
    config: Config,
    store: Store,
    backends: Arc<dyn BackendProvider>,
    mountinfo: PathBuf,
    host_tmp: PathBuf,
    /// Container → the volumes it holds. `None` while its prepare runs.
    index: Mutex<HashMap<ContainerId, Option<Vec<VolumeKey>>>>,
    /// Signalled whenever a prepare finishes, for a cleanup waiting on it.
    prepared: Condvar,
    /// Volumes whose unmount failed and that no one uses: retried at every cleanup.
    pending: Mutex<HashSet<VolumeKey>>,
    next_mount: AtomicU64,
}

impl fmt::Debug for Isolator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Isolator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Isolator {
    /// An isolator with its checkpoint under `config.work_dir`.
    pub fn new(config: Config, backends: Arc<dyn BackendProvider>) -> Result<Self, StateError> {
        let store = Store::open(&config.work_dir)?;
        Ok(Self {
            config,
            store,
            backends,
            // The calling thread's view: correct even where a thread has a namespace of its own.
            mountinfo: PathBuf::from("/proc/thread-self/mountinfo"),
            host_tmp: PathBuf::from("/tmp"),
            index: Mutex::new(HashMap::new()),
            prepared: Condvar::new(),
            pending: Mutex::new(HashSet::new()),
            next_mount: AtomicU64::new(0),
        })
    }

    /// Reads the mount table from `path` instead of `/proc/self/mountinfo` (for tests).
    pub fn with_mountinfo(mut self, path: PathBuf) -> Self {
        self.mountinfo = path;
        self
    }

    /// Treats `dir` as the host's `/tmp`, the only host directory where a missing container path
    /// is created (for tests).
    pub fn with_host_tmp(mut self, dir: PathBuf) -> Self {
        self.host_tmp = dir;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The checkpoint store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn index(&self) -> MutexGuard<'_, HashMap<ContainerId, Option<Vec<VolumeKey>>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_mount_id(&self) -> MountId {
        let n = self.next_mount.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        MountId(format!("mesos-dvdi-{}-{nanos:x}-{n}", std::process::id()))
    }

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
                    id,
                    Some(plan.volumes.iter().map(|(k, _)| k.clone()).collect()),
                );
            }
            Err(_) => {
                index.remove(&id);
            }
        }
        drop(index);
        self.prepared.notify_all();
        result
    }

    fn prepare_reserved(
        &self,
        id: &ContainerId,
        owner: Owner,
        input: &ContainerInput,
    ) -> Result<LaunchPlan, PrepareError> {
        let fail = |cause| PrepareError::new(id.as_str(), cause);
        let resolved = spec::resolve(
            &input.env,
            &input.docker_volumes,
            &self.config.resolve_options(),
        )
        .map_err(|e| fail(e.into()))?;

        // Verify every target before any backend call: a refused path costs no attach.
        let mut targets = Vec::with_capacity(resolved.volumes.len());
        for spec in &resolved.volumes {
            let target = match &spec.container_path {
                None => None,
                Some(path) => Some(self.resolve_target(spec, path, input).map_err(fail)?),
            };
            targets.push(target);
        }

        // Mount independent volumes in parallel (a thread each; one volume needs none).
        let usage = |spec: &VolumeSpec, target: &Option<PathBuf>| Use {
            target: target.clone(),
            read_only: spec.read_only,
            owner,
        };
        let results: Vec<Result<PathBuf, IsolatorError>> = if resolved.volumes.len() <= 1 {
            resolved
                .volumes
                .iter()
                .zip(&targets)
                .map(|(spec, target)| self.acquire(spec, id, usage(spec, target)))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = resolved
                    .volumes
                    .iter()
                    .zip(&targets)
                    .map(|(spec, target)| {
                        let usage = usage(spec, target);
                        s.spawn(move || self.acquire(spec, id, usage))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };

        let mut acquired = Vec::new();
        let mut first_error = None;
        for (spec, result) in resolved.volumes.iter().zip(results) {
            match result {
                Ok(host) => acquired.push((spec.key(), host)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(cause) = first_error {
            let rollback = acquired
                .iter()
                .filter_map(|(key, _)| self.release(key, id).err())
                .collect();
            return Err(PrepareError {
                container: id.to_string(),
                cause: Box::new(cause),
                rollback,
            });
        }

        let mut plan = LaunchPlan {
            warnings: resolved.warnings.iter().map(ToString::to_string).collect(),
            ..LaunchPlan::default()
        };
        for ((spec, target), (key, host)) in resolved.volumes.iter().zip(targets).zip(acquired) {
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
        Ok(plan)
    }

    /// Verifies (creating where allowed) where a volume is bound and returns the bind target.
    ///
    /// Mesos' rules (its `docker/volume` isolator, which the env form follows too): an absolute
    /// path is inside the rootfs when the container has one, else a host path; a relative path is
    /// in the sandbox, which a container with a rootfs sees at [`SANDBOX_IN_ROOTFS`] — so the
    /// directory is made in the host sandbox and the bind targets the rootfs's view of it.
    fn resolve_target(
        &self,
        spec: &VolumeSpec,
        path: &spec::ContainerPath,
        input: &ContainerInput,
    ) -> Result<PathBuf, IsolatorError> {
        let refused = |source| IsolatorError::Target {
            volume: spec.key(),
            source: Box::new(source),
        };
        if !path.is_absolute() {
            let verified =
                mount::resolve_target(&input.sandbox, path, &TargetPolicy::CreateMissing)
                    .map_err(refused)?;
            return Ok(match &input.rootfs {
                Some(rootfs) => rootfs
                    .join(SANDBOX_IN_ROOTFS.trim_start_matches('/'))
                    .join(path.relative()),
                None => verified.path().to_owned(),
            });
        }
        let (root, policy) = match &input.rootfs {
            Some(rootfs) => (rootfs.as_path(), TargetPolicy::CreateMissing),
            None => (
                Path::new("/"),
                TargetPolicy::HostPath {
                    tmp: self.host_tmp.clone(),
                },
            ),
        };
        mount::resolve_target(root, path, &policy)
            .map(|t| t.path().to_owned())
            .map_err(refused)
    }

    fn state_err(key: &VolumeKey) -> impl FnOnce(StateError) -> IsolatorError + '_ {
        move |source| IsolatorError::State {
            volume: key.clone(),
            source: Box::new(source),
        }
    }

    /// Adds `id` as a user of the volume, mounting it on the host when it is its first user.
    fn acquire(
        &self,
        spec: &VolumeSpec,
        id: &ContainerId,
        usage: Use,
    ) -> Result<PathBuf, IsolatorError> {
        let key = spec.key();
        let guard = self.store.lock(&key).map_err(Self::state_err(&key))?;
        let existing = guard.load().map_err(Self::state_err(&key))?;
        let existed = existing.is_some();
        let mut record = match existing {
            Some(mut record) if record.phase == Phase::Mounted && record.host_path.is_some() => {
                let host = record.host_path.clone().unwrap_or_default();
                record.users.insert(id.clone(), usage);
                guard.save(&record).map_err(Self::state_err(&key))?;
                crash_point("prepare:user-added");
                return Ok(host);
            }
            // Half mounted or half unmounted by a process that died (or a failed unmount):
            // mount again under the same id, which every backend treats as idempotent.
            Some(record) => record,
            None => VolumeRecord {
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
                users: Default::default(),
                last_error: None,
            },
        };
        let before = record.clone();
        record.phase = Phase::Mounting;
        record.users.insert(id.clone(), usage);
        guard.save(&record).map_err(Self::state_err(&key))?;
        crash_point("prepare:intent-saved");

        match self.mount_record(&record) {
            Ok(host) => {
                crash_point("prepare:backend-mounted");
                record.is_mount_point = self.is_mount_point(&host);
                record.host_path = Some(host.clone());
                record.phase = Phase::Mounted;
                record.last_error = None;
                guard.save(&record).map_err(Self::state_err(&key))?;
                crash_point("prepare:mounted-saved");
                log::info!("{key}: mounted at {} for container {id}", host.display());
                Ok(host)
            }
            Err(e) => {
                // Leave the record as it was: gone for a volume this call created, the earlier
                // state (other users, a pending unmount) for one that was recorded already.
                let saved = if existed {
                    let mut restored = before;
                    restored.last_error = Some(render_chain(&e));
                    guard.save(&restored)
                } else {
                    guard.remove()
                };
                if let Err(se) = saved {
                    log::error!("{}", render_chain(&Self::state_err(&key)(se)));
                }
                Err(e)
            }
        }
    }

    fn mount_record(&self, record: &VolumeRecord) -> Result<PathBuf, IsolatorError> {
        self.backends
            .backend(&record.driver, record.dvdcli.as_deref())
            .and_then(|backend| {
                backend.mount(&MountRequest {
                    name: &record.name,
                    opts: &record.opts,
                    explicit_create: record.explicit_create,
                    id: &record.mount_id,
                })
            })
            .map_err(|e| about(e, record).into())
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        if let Some(answer) = mount::is_mount_root(path) {
            return answer;
        }
        match mount::read_mountinfo(&self.mountinfo) {
            Ok(table) => mount::is_mount_point(&table, path),
            Err(e) => {
                log::warn!("reading {}: {e}", self.mountinfo.display());
                false
            }
        }
    }

    /// Drops `id`'s use of the volume; unmounts it when no one else uses it.
    fn release(&self, key: &VolumeKey, id: &ContainerId) -> Result<(), IsolatorError> {
        let guard = self.store.lock(key).map_err(Self::state_err(key))?;
        let Some(mut record) = guard.load().map_err(Self::state_err(key))? else {
            return Ok(());
        };
        if record.users.remove(id).is_some() {
            if !record.users.is_empty() {
                guard.save(&record).map_err(Self::state_err(key))?;
                crash_point("cleanup:ref-dropped");
                return Ok(());
            }
            crash_point("cleanup:user-removed");
        } else if !record.users.is_empty() {
            return Ok(());
        }
        self.unmount_unused(&guard, record)
    }

    /// Unmounts a volume that has no users, under its lock; keeps it recorded with the error when
    /// the unmount fails.
    fn unmount_unused(
        &self,
        guard: &crate::state::VolumeGuard,
        mut record: VolumeRecord,
    ) -> Result<(), IsolatorError> {
        let key = record.key();
        record.phase = Phase::Unmounting;
        guard.save(&record).map_err(Self::state_err(&key))?;
        crash_point("cleanup:unmount-intent-saved");
        let result = self
            .backends
            .backend(&record.driver, record.dvdcli.as_deref())
            .and_then(|b| b.unmount(&record.name, &record.mount_id))
            .map_err(|e| about(e, &record));
        match result {
            Ok(()) => {
                crash_point("cleanup:backend-unmounted");
                guard.remove().map_err(Self::state_err(&key))?;
                log::info!("{key}: unmounted (no container uses it)");
                self.pending().remove(&key);
                Ok(())
            }
            Err(e) => {
                record.last_error = Some(render_chain(&e));
                guard.save(&record).map_err(Self::state_err(&key))?;
                self.pending().insert(key);
                Err(e.into())
            }
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashSet<VolumeKey>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases every volume `id` holds; an unknown id is fine. Unmount failures are kept
    /// recorded and retried at the next cleanup or recover.
    pub fn cleanup(&self, id: &str) -> Result<(), CleanupError> {
        let Ok(id) = ContainerId::new(id) else {
            // No container with an invalid id was ever prepared.
            return Ok(());
        };
        // A container destroyed while its prepare runs: wait for the prepare to finish, so what
        // it records is released here rather than left behind.
        let keys = {
            let mut index = self.index();
            while let Some(None) = index.get(&id) {
                index = self.prepared.wait(index).unwrap_or_else(|p| p.into_inner());
            }
            index.get(&id).cloned().flatten().unwrap_or_default()
        };
        let mut failures: Vec<IsolatorError> = keys
            .iter()
            .filter_map(|key| self.release(key, &id).err())
            .collect();
        // Retry unmounts that failed before, now that their backend may be back.
        let retry: Vec<VolumeKey> = self
            .pending()
            .iter()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for key in retry {
            if let Err(e) = self.retry_unused(&key) {
                log::warn!("{}", render_chain(&e));
            }
        }
        self.index().remove(&id);
        if failures.is_empty() {
            Ok(())
        } else {
            failures.shrink_to_fit();
            Err(CleanupError {
                container: id,
                failures,
            })
        }
    }

    fn retry_unused(&self, key: &VolumeKey) -> Result<(), IsolatorError> {
        let guard = self.store.lock(key).map_err(Self::state_err(key))?;
        match guard.load().map_err(Self::state_err(key))? {
            Some(record) if record.users.is_empty() => self.unmount_unused(&guard, record),
            _ => {
                self.pending().remove(key);
                Ok(())
            }
        }
    }

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
        let mut index: HashMap<ContainerId, Option<Vec<VolumeKey>>> = alive
            .iter()
            .map(|id| ((*id).clone(), Some(Vec::new())))
            .collect();
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
            "recovered: {} volume(s) in use, {} reference(s) dropped, {} unmounted, {} remounted, {} problem(s)",
            report.kept.len(),
            report.dropped.len(),
            report.unmounted.len(),
            report.remounted.len(),
            report.errors.len()
        );
        Ok(report)
    }

    /// How many volumes this isolator holds mounted (used by a container it knows, or waiting for
    /// a retried unmount) and how many containers hold at least one, from its in-memory index.
    pub fn usage(&self) -> crate::metrics::Levels {
        let mut volumes: HashSet<VolumeKey> = self.pending().iter().cloned().collect();
        let mut containers = 0u64;
        for keys in self.index().values().flatten() {
            if !keys.is_empty() {
                containers += 1;
                volumes.extend(keys.iter().cloned());
            }
        }
        crate::metrics::Levels {
            volumes_mounted: u64::try_from(volumes.len()).unwrap_or(u64::MAX),
            containers_using_volumes: containers,
        }
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
        // Volumes are independent: reconcile them on every core, each worker with its own
        // report and index, merged in key order afterwards.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = surveyed.len().div_ceil(workers).max(1);
        let track = index.is_some();
        let parts: Vec<(RecoverReport, Index)> = std::thread::scope(|s| {
            let handles: Vec<_> = surveyed
                .chunks(chunk)
                .map(|part| {
                    let mounted = &mounted;
                    s.spawn(move || {
                        let mut report = RecoverReport::default();
                        let mut part_index = Index::new();
                        for volume in part {
                            let volume = match volume {
                                Ok(volume) => volume,
                                Err(e) => {
                                    // Never replaced silently: the operator decides (`dvdi status`
                                    // shows it).
                                    report.errors.push(render_chain(e));
                                    continue;
                                }
                            };
                            let step = Reconcile {
                                alive,
                                mounted,
                                dry_run,
                            };
                            let idx = track.then_some(&mut part_index);
                            if let Err(e) = self.reconcile_volume(volume, &step, &mut report, idx) {
                                report.errors.push(render_chain(&e));
                            }
                        }
                        (report, part_index)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut report = RecoverReport::default();
        for (part, part_index) in parts {
            report.dropped.extend(part.dropped);
            report.unmounted.extend(part.unmounted);
            report.remounted.extend(part.remounted);
            report.kept.extend(part.kept);
            report.errors.extend(part.errors);
            if let Some(index) = index.as_deref_mut() {
                for (id, keys) in part_index {
                    match index.get_mut(&id) {
                        Some(Some(existing)) => existing.extend(keys.into_iter().flatten()),
                        _ => {
                            index.insert(id, keys);
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    fn reconcile_volume(
        &self,
        volume: &Surveyed,
        step: &Reconcile<'_>,
        report: &mut RecoverReport,
        index: Option<&mut Index>,
    ) -> Result<(), IsolatorError> {
        // Most volumes need nothing at recovery: every user alive, mounted, the mount in place.
        // Judge that on a snapshot read without the lock and take the lock only to change
        // something. The snapshot cannot mislead: records are replaced whole, and nothing but
        // this isolator drops a Mesos container's reference, while a `dvdi` process unmounts a
        // volume only once it has no users left.
        let key = &volume.key;
        if let Some(snapshot) = &volume.snapshot() {
            if snapshot.phase == Phase::Mounted
                && !snapshot.users.is_empty()
                && !step.vanished(snapshot)
                && snapshot
                    .users
                    .iter()
                    .all(|(id, u)| (step.alive)(id, u.owner))
            {
                if let Some(index) = index {
                    add_users(index, snapshot, key);
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
        let gone: Vec<ContainerId> = record
            .users
            .iter()
            .filter(|(id, u)| !(step.alive)(id, u.owner))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
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
        if record.phase != Phase::Mounted || step.vanished(&record) {
            if !step.dry_run {
                let host = self.mount_record(&record)?;
                record.is_mount_point = self.is_mount_point(&host);
                record.host_path = Some(host);
                record.phase = Phase::Mounted;
                record.last_error = None;
                guard.save(&record).map_err(Self::state_err(key))?;
            }
            report.remounted.push(key.clone());
        } else if record.users.len() != before && !step.dry_run {
            guard.save(&record).map_err(Self::state_err(key))?;
        }
        if let Some(index) = index {
            add_users(index, &record, key);
        }
        report.kept.push(key.clone());
        Ok(())
    }
}

/// Records in `index` that the users of `record` hold `key`.
fn add_users(index: &mut Index, record: &VolumeRecord, key: &VolumeKey) {
    for id in record.users.keys() {
        if let Some(Some(keys)) = index.get_mut(id) {
            keys.push(key.clone());
        } else {
            // A live `dvdi run` process the agent does not know.
            index.insert(id.clone(), Some(vec![key.clone()]));
        }
    }
}

/// Container → the volumes it holds; `None` while its prepare runs.
type Index = HashMap<ContainerId, Option<Vec<VolumeKey>>>;

/// What one reconciliation pass judges by.
struct Reconcile<'a> {
    alive: &'a (dyn Fn(&ContainerId, Owner) -> bool + Sync),
    /// The host's mount points (a set: an agent may hold thousands of mounts).
    mounted: &'a HashSet<&'a Path>,
    dry_run: bool,
}

impl Reconcile<'_> {
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

/// A backend error about `record`'s volume: errors of the driver as a whole (discovery,
/// activation) name the volume too, so the operator sees which task input led there.
fn about(mut e: BackendError, record: &VolumeRecord) -> BackendError {
    e.volume.get_or_insert_with(|| record.name.clone());
    e
}

/// Whether the `dvdi run` process that holds a reference still exists: the same pid with the
/// same start time (a reused pid has another).
fn process_alive(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
