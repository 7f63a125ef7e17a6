//! The isolator, with no Mesos in sight: its type, construction, errors and public types; each
//! phase lives in a file of its own.
//!
//! Composes the layers below: [`spec`](crate::spec) resolves what a container asks for, the
//! [`mount`](crate::mount) layer verifies where each volume is bound, a [`BackendProvider`] mounts it
//! on the host, and the [`state`](crate::state) store counts who uses it. This module owns the
//! ordering that makes crashes safe: every change is checkpointed before the backend call that
//! depends on it, so recovery always knows which calls may have happened.
//!
//! Where each phase lives (each file depends only on this one and on the files listed before
//! it; this one depends on none of them):
//! - `error.rs`: [`IsolatorError`], one variant per failing step, and the whole-call errors
//!   [`PrepareError`] and [`CleanupError`].
//! - `leases.rs`: the lease steps the phases call: which drivers are leased, take, release, and
//!   fencing a container whose lease was lost while it was prepared.
//! - `cleanup.rs`: [`Isolator::cleanup`]: release a container's volumes, unmount the ones no one
//!   uses (and give their leases back), retry failed unmounts.
//! - `targets.rs`: where each volume is bound: container paths verified, bind targets that no one
//!   but root can change before Mesos binds onto them (a volume re-homed where that needs it).
//! - `prepare.rs`: [`Isolator::prepare`]: resolve the request, verify the targets, acquire each
//!   volume (lease, backend mount, record); a failure releases what was acquired.
//! - `recover.rs`: [`Isolator::recover`] and [`Isolator::gc`]: reconcile the checkpoint with the
//!   live containers and the host's mount table, taking leases again at recover.
//!
//! Locks: one flock per volume (held across its backend call, so two containers preparing one
//! volume cause one mount) and one short in-memory lock over the container index, never held
//! across a backend call or a checkpoint write.

mod cleanup;
mod error;
mod leases;
mod prepare;
mod recover;
mod targets;

pub use error::{CleanupError, IsolatorError, PrepareError};
pub use recover::{GcAction, GcWould};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::backend::{BackendError, BackendProvider, MountRequest, Waits};
use crate::config::Config;
use crate::coord::zk::ZkCoordinator;
use crate::coord::{Coordinator, LeaseLoss};
use crate::mount;
use crate::spec::{CsiVolumeInput, DockerVolumeInput, DriverName, VolumeKey};
use crate::state::{ContainerId, StateError, Store, VolumeRecord};

/// What a container asks for and where it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInput {
    /// The task's (or executor's) environment, in order.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `DOCKER_VOLUME` entries of its `ContainerInfo`.
    pub docker_volumes: Vec<DockerVolumeInput>,
    /// `CSI_VOLUME` entries of its `ContainerInfo`.
    pub csi_volumes: Vec<CsiVolumeInput>,
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
    /// The absolute host path to bind onto: verified, and one no one but root can change until
    /// the bind. For a volume re-homed out of a sandbox its task user owns, a directory of the
    /// agent's, which the task reaches through a link at the path it asked for.
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

use crate::crash::point as crash_point;

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
    // The CSI backend's, around each RPC of a volume's lifecycle: its step recorded as calling
    // (before the RPC) and the RPC answered (before the step is recorded done); likewise when
    // undoing (recorded as undoing, then the RPC answered). CreateVolume is never undone.
    "csi:create_volume:calling",
    "csi:create_volume:answered",
    "csi:controller_publish:calling",
    "csi:controller_publish:answered",
    "csi:node_stage:calling",
    "csi:node_stage:answered",
    "csi:node_publish:calling",
    "csi:node_publish:answered",
    "csi:node_publish:undoing",
    "csi:node_publish:undone",
    "csi:node_stage:undoing",
    "csi:node_stage:undone",
    "csi:controller_publish:undoing",
    "csi:controller_publish:undone",
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
    /// What prepare waits for (a lease, ZooKeeper), named for a progress display, and the handle
    /// that interrupts those waits.
    waits: Waits,
    /// `/proc`, read to find where a volume's file system is still mounted.
    proc_root: PathBuf,
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
            waits: Waits::default(),
            proc_root: PathBuf::from("/proc"),
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

    /// Names its waits (for a lease, for ZooKeeper) in `waits`, and gives them up when `waits` is
    /// interrupted: `dvdi run` passes its backends' waits, so one progress display shows them all
    /// and one Ctrl-C ends them all. A prepare interrupted undoes what it did.
    pub fn with_waits(mut self, waits: Waits) -> Self {
        self.waits = waits;
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

    /// The container index, locked (briefly: never across a backend call or a checkpoint write).
    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// The volumes whose unmount (or lease release) failed and that no one uses, locked.
    fn pending(&self) -> MutexGuard<'_, HashSet<VolumeKey>> {
        lock(&self.pending)
    }

    /// A checkpoint failure about `key`'s record.
    fn state_err(key: &VolumeKey) -> impl FnOnce(StateError) -> IsolatorError + '_ {
        move |source| IsolatorError::State {
            volume: key.clone(),
            source: Box::new(source),
        }
    }

    /// Mounts `record`'s volume through its backend (every backend treats a repeated mount under
    /// the record's id as idempotent) and returns the host mount point.
    fn mount_record(&self, record: &VolumeRecord) -> Result<PathBuf, IsolatorError> {
        self.backends
            .backend(&record.driver, record.dvdcli.as_deref())
            .and_then(|backend| {
                backend.mount(&MountRequest {
                    name: &record.name,
                    opts: &record.opts,
                    explicit_create: record.explicit_create,
                    id: &record.mount_id,
                    read_only: record.users.values().all(|u| u.read_only),
                    csi: record.csi.as_ref(),
                })
            })
            .map_err(|e| about(e, record).into())
    }

    /// Records that `record`'s volume is mounted at `host`: whether that is a mount point of its
    /// own, and then its file system's device (to recognise it later in other namespaces).
    fn note_mount(&self, record: &mut VolumeRecord, host: PathBuf) {
        record.is_mount_point = self.is_mount_point(&host);
        record.device = record
            .is_mount_point
            .then(|| mount::DeviceNumber::of_path(&host))
            .flatten();
        record.host_path = Some(host);
    }

    /// Refuses to mount `record`'s vanished mount again while its file system is still mounted
    /// somewhere (a container's namespace keeps it after the host's mount went): a second
    /// instance beside it (a second loop device on the image, a second FUSE daemon) could
    /// corrupt it.
    fn refuse_second_mount(&self, record: &VolumeRecord) -> Result<(), IsolatorError> {
        let Some(device) = record.device else {
            return Ok(());
        };
        let uses = mount::device_users(&self.proc_root, device, None);
        if uses.is_empty() {
            return Ok(());
        }
        Err(IsolatorError::StillMounted {
            volume: record.key(),
            host: record.host_path.clone().unwrap_or_default(),
            device,
            uses,
        })
    }

    /// Whether `path` is a mount point of its own (a backend may answer a plain directory).
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

/// A backend error about `record`'s volume: errors of the driver as a whole (discovery,
/// activation) name the volume too, so the operator sees which task input led there.
fn about(mut e: BackendError, record: &VolumeRecord) -> BackendError {
    e.volume.get_or_insert_with(|| record.name.clone());
    e
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}
