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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::registry::{LOCAL_DRIVER, LOOP_DRIVER};
use crate::backend::{BackendError, BackendProvider, MountId, MountRequest, Scope};
use crate::config::Config;
use crate::coord::zk::ZkCoordinator;
use crate::coord::{CoordError, Coordinator, LeaseLoss, LeaseMode};
use crate::error::render_chain;
use crate::mount::{self, CreatedDirs, TargetError, TargetPolicy};
use crate::spec::{self, DockerVolumeInput, DriverName, SpecError, VolumeKey, VolumeSpec};
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
    /// The volumes whose cluster-wide lease the container depends on.
    pub leased: Vec<VolumeKey>,
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
    /// Containers fenced because a lease their volume needs is held by another agent (or could
    /// not be vouched for), with the reason given to the agent.
    pub fenced: Vec<(ContainerId, String)>,
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
    #[error("{volume}: {}container path refused", place_prefix(.place))]
    Target {
        /// The volume.
        volume: VolumeKey,
        /// The variable or field that gave the path (e.g. `DVDI_VOLUME_CONTAINERPATH2`), when
        /// known.
        place: Option<String>,
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
    /// The volume's cluster-wide lease could not be taken or given back.
    #[error(transparent)]
    Lease(#[from] CoordError),
}

/// `PLACE: ` when the place is known.
fn place_prefix(place: &Option<String>) -> String {
    place.as_ref().map(|p| format!("{p}: ")).unwrap_or_default()
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
    "prepare:lease-acquired",
    "prepare:backend-mounted",
    "prepare:mounted-saved",
    "prepare:user-added",
    "prepare:upgrade-saved",
    "cleanup:ref-dropped",
    "cleanup:user-removed",
    "cleanup:unmount-intent-saved",
    "cleanup:backend-unmounted",
    "cleanup:lease-released",
];

/// The isolator: prepare, cleanup and recover for any number of threads at once.
pub struct Isolator {
    config: Config,
    store: Store,
    backends: Arc<dyn BackendProvider>,
    mountinfo: PathBuf,
    host_tmp: PathBuf,
    /// Container → the volumes it holds. `None` while its prepare runs. Shared with the
    /// coordinator's loss handler, which fences the holders of a lost lease.
    index: Arc<Mutex<Index>>,
    /// Cluster-wide leases; `None` without coordination.
    coord: Option<Arc<dyn Coordinator>>,
    /// When the coordinator was installed: its first session may still be coming up until one
    /// session timeout later.
    coord_since: std::time::Instant,
    /// Whether a driver's volumes are leased, as learnt from its capabilities.
    leased: Mutex<HashMap<DriverName, bool>>,
    /// Told of every container that must be stopped because a lease it depends on is lost.
    fence: Arc<Mutex<Option<FenceHandler>>>,
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
            index: Arc::new(Mutex::new(HashMap::new())),
            coord: None,
            coord_since: std::time::Instant::now(),
            leased: Mutex::new(HashMap::new()),
            fence: Arc::new(Mutex::new(None)),
            prepared: Condvar::new(),
            pending: Mutex::new(HashSet::new()),
            next_mount: AtomicU64::new(0),
        })
    }

    /// The isolator as the module and `dvdi` run it: over `backends` and, with `coordination`
    /// set, leases in ZooKeeper (connecting in the background, so a ZooKeeper that is down never
    /// stops it from starting: leased volumes then fail closed).
    pub fn open(config: Config, backends: Arc<dyn BackendProvider>) -> Result<Self, StateError> {
        let coordinator = config.coordination.as_ref().map(|target| {
            Arc::new(ZkCoordinator::start(
                target.clone(),
                config.agent_name.clone(),
                config.lease_session_timeout,
            )) as Arc<dyn Coordinator>
        });
        let isolator = Self::new(config, backends)?;
        Ok(match coordinator {
            Some(c) => isolator.with_coordinator(c),
            None => isolator,
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

    /// Coordinates through `coord`: volumes of drivers that report `Scope: global`, or that the
    /// configuration names in `lease_drivers`, are leased cluster-wide. Installs the coordinator's
    /// loss handler, which fences every container using a volume whose lease is lost.
    pub fn with_coordinator(mut self, coord: Arc<dyn Coordinator>) -> Self {
        let index = Arc::clone(&self.index);
        let fence = Arc::clone(&self.fence);
        coord.set_loss_handler(Box::new(move |loss: LeaseLoss| {
            let holders: Vec<ContainerId> = lock(&index)
                .iter()
                .filter(|(_, keys)| keys.as_ref().is_some_and(|k| k.contains(&loss.volume)))
                .map(|(id, _)| id.clone())
                .collect();
            let message = loss.to_string();
            if holders.is_empty() {
                log::warn!("{message} (no container uses it now)");
            }
            for id in holders {
                fence_container(&fence, &id, &message);
            }
        }));
        self.coord = Some(coord);
        self.coord_since = std::time::Instant::now();
        self
    }

    /// Sets the function told of every container that must be stopped (fenced) because a lease
    /// its volumes depend on was lost; its argument is the reason, for the task's status.
    pub fn set_fence_handler(&self, handler: FenceHandler) {
        *lock(&self.fence) = Some(handler);
    }

    /// The coordinator, when the isolator coordinates.
    pub fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        self.coord.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The checkpoint store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Whether `driver`'s volumes need a cluster-wide lease: never without coordination or for
    /// the host-local built-in drivers; always for drivers in `lease_drivers`; otherwise when the
    /// driver says its scope is global (a driver that cannot say is local, as Docker treats it).
    fn leased(&self, driver: &DriverName, dvdcli: Option<&Path>) -> bool {
        if self.coord.is_none() {
            return false;
        }
        if self.config.lease_drivers.contains(driver) {
            return true;
        }
        if matches!(driver.as_str(), LOCAL_DRIVER | LOOP_DRIVER) {
            return false;
        }
        if let Some(known) = lock(&self.leased).get(driver) {
            return *known;
        }
        match self
            .backends
            .backend(driver, dvdcli)
            .and_then(|b| b.capabilities())
        {
            Ok(caps) => {
                let global = caps.scope == Scope::Global;
                lock(&self.leased).insert(driver.clone(), global);
                global
            }
            Err(e) => {
                // Not cached: the plugin may not be up yet, and its next answer decides.
                log::info!(
                    "driver {:?}: capabilities unknown ({}); its volumes are treated as local",
                    driver.as_str(),
                    render_chain(&e)
                );
                false
            }
        }
    }

    /// Fences `id` when a lease among `leased` is no longer held (lost while its prepare ran).
    fn fence_if_lease_lost(&self, id: &ContainerId, leased: &[VolumeKey]) {
        let Some(c) = &self.coord else { return };
        if leased.is_empty() {
            return;
        }
        let held = c.status().held;
        for key in leased {
            if !held.iter().any(|(k, _)| k == key) {
                let message = format!("{key}: lease lost while the container was being prepared");
                fence_container(&self.fence, id, &message);
                return;
            }
        }
    }

    /// Takes `mode` on `key`'s lease, waiting up to `wait` for another agent to let go.
    fn take_lease(
        &self,
        key: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), IsolatorError> {
        match &self.coord {
            Some(c) => {
                self.await_first_session(c.as_ref());
                Ok(c.acquire(key, mode, wait)?)
            }
            None => Ok(()),
        }
    }

    /// Right after start (a `dvdi run`, a module just loaded) the first session may still be
    /// coming up: give it up to one session timeout from the start. Later, a coordinator without
    /// a session fails at once (fail closed).
    fn await_first_session(&self, c: &dyn Coordinator) {
        let grace = (self.coord_since + self.config.lease_session_timeout)
            .saturating_duration_since(std::time::Instant::now());
        if !grace.is_zero() && !c.status().connected {
            c.wait_connected(grace);
        }
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
            &self.config.resolve_options(),
        )
        .map_err(|e| fail(e.into()))?;

        // Verify every target before any backend call: a refused path costs no attach.
        // Directories made for them are removed again on every way out but success.
        let mut created = CreatedDirs::new();
        let mut targets = Vec::with_capacity(resolved.volumes.len());
        for spec in &resolved.volumes {
            let target = match &spec.container_path {
                None => None,
                Some(path) => {
                    let (target, made) = self.resolve_target(spec, path, input).map_err(fail)?;
                    created.append(made);
                    Some(target)
                }
            };
            targets.push(target);
        }

        // Mount independent volumes in parallel (a thread each; one volume needs none).
        let usage = |spec: &VolumeSpec, target: &Option<PathBuf>| Use {
            target: target.clone(),
            read_only: spec.read_only,
            owner,
        };
        let results: Vec<Result<(PathBuf, bool), IsolatorError>> = if resolved.volumes.len() <= 1 {
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
                Ok((host, leased)) => acquired.push((spec.key(), host, leased)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(cause) = first_error {
            let rollback = acquired
                .iter()
                .filter_map(|(key, _, _)| self.release(key, id).err())
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
        for ((spec, target), (key, host, leased)) in
            resolved.volumes.iter().zip(targets).zip(acquired)
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
        created.disarm();
        Ok(plan)
    }

    /// Verifies (creating where allowed) where a volume is bound and returns the bind target.
    ///
    /// Mesos' rules (its `docker/volume` isolator, which the env form follows too): an absolute
    /// path is inside the rootfs when the container has one, else a host path; a relative path is
    /// in the sandbox, which a container with a rootfs sees at [`SANDBOX_IN_ROOTFS`] — so the
    /// directory is made in the host sandbox and the bind targets the rootfs's view of it.
    ///
    /// Also returns the directories it created, armed to be removed again. A refusal names the
    /// variable and the components as the container sees them; the host path goes to the
    /// agent's log only.
    fn resolve_target(
        &self,
        spec: &VolumeSpec,
        path: &spec::ContainerPath,
        input: &ContainerInput,
    ) -> Result<(PathBuf, CreatedDirs), IsolatorError> {
        let refused = |source: TargetError| {
            log::warn!(
                "{}: container path {} refused at host path {}: {}",
                spec.key(),
                path,
                source.host_path().display(),
                render_chain(&source)
            );
            IsolatorError::Target {
                volume: spec.key(),
                place: spec
                    .origin
                    .0
                    .as_ref()
                    .map(spec::Origin::container_path_place),
                source: Box::new(source),
            }
        };
        if !path.is_absolute() {
            // How the task names its sandbox: a fixed path inside a rootfs, else its variable
            // (the host path of a sandbox is the agent's business).
            let view = Path::new(match input.rootfs {
                Some(_) => SANDBOX_IN_ROOTFS,
                None => "$MESOS_SANDBOX",
            });
            let mut verified =
                mount::resolve_target_in(&input.sandbox, view, path, &TargetPolicy::CreateMissing)
                    .map_err(refused)?;
            let made = verified.take_created();
            return Ok(match &input.rootfs {
                Some(rootfs) => (
                    rootfs
                        .join(SANDBOX_IN_ROOTFS.trim_start_matches('/'))
                        .join(path.relative()),
                    made,
                ),
                None => (verified.path().to_owned(), made),
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
        // A rootfs is the container's `/`; a host path is its own view.
        let mut verified =
            mount::resolve_target_in(root, Path::new("/"), path, &policy).map_err(refused)?;
        let made = verified.take_created();
        Ok((verified.path().to_owned(), made))
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
    ) -> Result<(PathBuf, bool), IsolatorError> {
        let key = spec.key();
        let guard = self.store.lock(&key).map_err(Self::state_err(&key))?;
        let existing = guard.load().map_err(Self::state_err(&key))?;
        let existed = existing.is_some();
        let mut record = match existing {
            Some(mut record) if record.phase == Phase::Mounted && record.host_path.is_some() => {
                let host = record.host_path.clone().unwrap_or_default();
                let before = record.clone();
                record.users.insert(id.clone(), usage);
                // A writer joining readers: upgrade the lease before the writer gets the volume
                // (and lease a volume whose driver became leased since it was mounted).
                let mode = Self::mode_of(&record);
                let upgrade = match record.lease {
                    Some(held) => held < mode,
                    None => self.leased(&record.driver, record.dvdcli.as_deref()),
                };
                if upgrade {
                    record.lease = Some(mode);
                    guard.save(&record).map_err(Self::state_err(&key))?;
                    crash_point("prepare:upgrade-saved");
                    if let Err(e) = self.take_lease(&key, mode, self.config.lease_wait) {
                        if let Err(se) = guard.save(&before) {
                            log::error!("{}", render_chain(&Self::state_err(&key)(se)));
                        }
                        return Err(e);
                    }
                } else {
                    guard.save(&record).map_err(Self::state_err(&key))?;
                }
                crash_point("prepare:user-added");
                return Ok((host, record.lease.is_some()));
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
                lease: None,
            },
        };
        let before = record.clone();
        record.phase = Phase::Mounting;
        record.users.insert(id.clone(), usage);
        // The lease is recorded before it is taken, so that recovery knows it may be held.
        if record.lease.is_some() || self.leased(&record.driver, record.dvdcli.as_deref()) {
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
        .and_then(|()| self.mount_record(&record));
        match mounted {
            Ok(host) => {
                crash_point("prepare:backend-mounted");
                record.is_mount_point = self.is_mount_point(&host);
                record.host_path = Some(host.clone());
                record.phase = Phase::Mounted;
                record.last_error = None;
                guard.save(&record).map_err(Self::state_err(&key))?;
                crash_point("prepare:mounted-saved");
                log::info!("{key}: mounted at {} for container {id}", host.display());
                Ok((host, record.lease.is_some()))
            }
            Err(e) => {
                // Leave the record as it was: gone for a volume this call created, the earlier
                // state (other users, a pending unmount) for one that was recorded already. A
                // lease this call took for a volume that held none is given back; an upgraded
                // one stays, as the restored record says.
                let mut restored = before;
                restored.last_error = Some(render_chain(&e));
                if restored.lease.is_some() {
                    restored.lease = restored.lease.max(record.lease);
                } else if took_lease {
                    if let Err(le) = self.release_lease(&key) {
                        // Kept recorded with its lease, so the next cleanup or recover gives it
                        // back.
                        log::error!("{}", render_chain(&le));
                        restored.lease = record.lease;
                        if !existed {
                            restored.phase = Phase::Unmounting;
                        }
                        if let Err(se) = guard.save(&restored) {
                            log::error!("{}", render_chain(&Self::state_err(&key)(se)));
                        }
                        self.pending().insert(key);
                        return Err(e);
                    }
                }
                let saved = if existed {
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

    /// The lease a record's users need: read-write when any of them writes.
    fn mode_of(record: &VolumeRecord) -> LeaseMode {
        if record.users.values().any(|u| !u.read_only) {
            LeaseMode::ReadWrite
        } else {
            LeaseMode::ReadOnly
        }
    }

    /// Gives `key`'s lease back.
    fn release_lease(&self, key: &VolumeKey) -> Result<(), IsolatorError> {
        match &self.coord {
            Some(c) => {
                self.await_first_session(c.as_ref());
                Ok(c.release(key)?)
            }
            None => Ok(()),
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
        // Unmounted already, its lease release having failed: only that is left to do.
        if record.phase != Phase::Unmounted {
            record.phase = Phase::Unmounting;
            guard.save(&record).map_err(Self::state_err(&key))?;
            crash_point("cleanup:unmount-intent-saved");
            let result = self
                .backends
                .backend(&record.driver, record.dvdcli.as_deref())
                .and_then(|b| b.unmount(&record.name, &record.mount_id))
                .map_err(|e| about(e, &record));
            if let Err(e) = result {
                record.last_error = Some(render_chain(&e));
                guard.save(&record).map_err(Self::state_err(&key))?;
                self.pending().insert(key);
                return Err(e.into());
            }
            crash_point("cleanup:backend-unmounted");
        }
        // The lease goes only now that the volume is off this host; the record keeps saying it
        // is held until it is given back.
        if record.lease.is_some() {
            if let Err(e) = self.release_lease(&key) {
                record.phase = Phase::Unmounted;
                record.last_error = Some(render_chain(&e));
                guard.save(&record).map_err(Self::state_err(&key))?;
                self.pending().insert(key);
                return Err(e);
            }
            crash_point("cleanup:lease-released");
        }
        guard.remove().map_err(Self::state_err(&key))?;
        log::info!("{key}: unmounted (no container uses it)");
        self.pending().remove(&key);
        Ok(())
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
                                leases: track && !dry_run,
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
            report.fenced.extend(part.fenced);
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
            let lease_to_retake = step.leases
                && (snapshot.lease.is_some()
                    || self.leased(&snapshot.driver, snapshot.dvdcli.as_deref()));
            if !lease_to_retake
                && snapshot.phase == Phase::Mounted
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
        if step.leases
            && (record.lease.is_some() || self.leased(&record.driver, record.dvdcli.as_deref()))
        {
            // In use here: take the lease again (this process's session is new). Held by
            // another agent, or not to be had, the volume must not stay in use here: its
            // containers are fenced, and their cleanup releases it; it is not mounted again.
            let mode = Self::mode_of(&record);
            if record.lease != Some(mode) {
                record.lease = Some(mode);
                guard.save(&record).map_err(Self::state_err(key))?;
            }
            // No wait: the lease is this agent's (its previous process's node is taken over), or
            // lost.
            if let Err(e) = self.take_lease(key, mode, Duration::ZERO) {
                let message = format!("{}; the container was fenced at recovery", render_chain(&e));
                for id in record.users.keys() {
                    fence_container(&self.fence, id, &message);
                    report.fenced.push((id.clone(), message.clone()));
                }
                if record.users.len() != before {
                    guard.save(&record).map_err(Self::state_err(key))?;
                }
                if let Some(index) = index {
                    add_users(index, &record, key);
                }
                report.kept.push(key.clone());
                return Ok(());
            }
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

/// Told of a container to stop (fence), with the reason for the task's status.
pub type FenceHandler = Arc<dyn Fn(&ContainerId, &str) + Send + Sync>;

/// Locks `m`. A panic elsewhere while holding one of the isolator's locks leaves its data
/// consistent (single inserts and removes), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells the fence handler (when there is one) to stop `id`.
fn fence_container(fence: &Mutex<Option<FenceHandler>>, id: &ContainerId, message: &str) {
    log::warn!("fencing container {id}: {message}");
    let handler = lock(fence).clone();
    match handler {
        Some(h) => h(id, message),
        None => log::error!("container {id} should be stopped, but nothing can stop it here"),
    }
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
