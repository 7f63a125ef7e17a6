//! The isolator's calls as the module makes them: each one handed to a bounded [`Pool`] and
//! answered through a callback, so the agent's thread that asked returns at once.
//!
//! [`Calls`] owns the isolator, its counts and two pools: `call_threads` threads for recover,
//! prepare and cleanup (which may wait minutes on a plugin), and two threads of their own for the
//! endpoints' reads (status and health), which therefore answer while every call thread is stuck
//! in a plugin. A call that cannot start within its own time limit (a prepare within the mount
//! timeout, a cleanup within the unmount timeout: what it would have been given to finish had it
//! started at once) is refused with a message saying why the pool is full. Recover, the first
//! call an agent makes, always waits for its thread.
//!
//! Each backend call says what it is doing (through [`pool::note`]), so that the message of a
//! refused call names the volume and driver the oldest running call waits for.

use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::registry::Registry;
use crate::backend::{
    Backend, BackendError, BackendProvider, Capabilities, MountId, MountRequest, VolumeInfo,
};
use crate::config::Config;
use crate::error::render_chain;
use crate::isolator::{
    CleanupError, ContainerInput, Isolator, IsolatorError, KnownContainer, LaunchPlan,
    PrepareError, RecoverReport,
};
use crate::metrics::{Counted, Kind, Metrics};
use crate::mount::Host;
use crate::pool::{self, panic_message, Pool, PoolStats, Refused};
use crate::spec::{DriverName, VolumeName, VolumeOpts};
use crate::state::{ContainerId, Owner, StateError};
use crate::status::{self, Health};

/// Threads for the endpoints' reads: they only read the checkpoint directory.
const READ_THREADS: usize = 2;

/// How long an endpoint's read may wait for one of them.
const READ_LIMIT: Limit = Limit {
    after: Duration::from_secs(60),
    setting: "the endpoints' fixed limit",
};

/// The call pool's metrics, in the order [`Calls::metrics_now`] gives them.
pub const POOL_METRICS: &[(&str, Kind)] = &[
    ("dvdi/calls_running", Kind::Gauge),
    ("dvdi/calls_waiting", Kind::Gauge),
    ("dvdi/calls_refused", Kind::Counter),
];

/// What a refused call's message ends with: what an operator can do.
const REMEDY: &str = "raise call_threads, or fix the plugin or storage the oldest call waits for";

/// Why a call has no answer of its own.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: Error + 'static> {
    /// The call ran and failed.
    #[error(transparent)]
    Failed(E),
    /// The call never started.
    #[error("mesos-dvdi {call}: not started within {limit}")]
    NotStarted {
        /// The call (`prepare of container c1`).
        call: String,
        /// Its time limit, with the setting it comes from.
        limit: String,
        /// Why.
        #[source]
        source: Refused,
    },
    /// The call panicked (a bug); the panic was caught on the call's thread.
    #[error("mesos-dvdi {call}: internal error (a panic, caught in its thread): {message}")]
    Panicked {
        /// The call.
        call: String,
        /// The panic's message.
        message: String,
    },
}

/// A recover that failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("mesos-dvdi recover")]
pub struct RecoverError(#[from] IsolatorError);

/// How long a call may wait for a thread, and which setting says so.
#[derive(Debug, Clone, Copy)]
struct Limit {
    after: Duration,
    setting: &'static str,
}

impl Limit {
    fn describe(&self) -> String {
        format!("{} s ({})", self.after.as_secs(), self.setting)
    }
}

/// The isolator behind its pools (see the module's documentation).
pub struct Calls {
    isolator: Arc<Isolator>,
    metrics: Arc<Metrics>,
    calls: Pool,
    reads: Pool,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl Calls {
    /// The module's isolator for `config`: the backends its drivers name (counted, and traced
    /// for the pool's messages) and coordination as configured.
    pub fn open(config: Config) -> Result<Self, StateError> {
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(config.clone(), Arc::new(Host));
        let counted = Counted::new(Arc::new(registry), Arc::clone(&metrics));
        let isolator = Isolator::open(config, traced(Arc::new(counted)))?;
        Ok(Self::new(isolator, metrics))
    }

    /// `isolator`'s calls, on `isolator.config().call_threads` threads, counted in `metrics`.
    pub fn new(isolator: Isolator, metrics: Arc<Metrics>) -> Self {
        let threads = isolator.config().call_threads;
        Self {
            isolator: Arc::new(isolator),
            metrics,
            calls: Pool::new("dvdi-call", threads, REMEDY),
            reads: Pool::new("dvdi-read", READ_THREADS, "retry the read later"),
        }
    }

    /// The isolator.
    pub fn isolator(&self) -> &Isolator {
        &self.isolator
    }

    /// The counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The call pool's counts now.
    pub fn pool_stats(&self) -> PoolStats {
        self.calls.stats()
    }

    /// Every metric with its value now: the core's ([`crate::metrics::NAMES`]), then the call
    /// pool's ([`POOL_METRICS`]).
    pub fn metrics_now(&self) -> Vec<(&'static str, Kind, u64)> {
        let mut all = self.metrics.snapshot(self.isolator.usage());
        let pool = self.calls.stats();
        let values = [pool.running, pool.waiting, pool.refused];
        all.extend(
            POOL_METRICS
                .iter()
                .zip(values)
                .map(|(&(name, kind), value)| (name, kind, value)),
        );
        all
    }

    /// Recovers (see [`Isolator::recover`]); `done` gets the report.
    pub fn recover(
        &self,
        known: Vec<KnownContainer>,
        orphans: Vec<ContainerId>,
        done: impl FnOnce(Result<RecoverReport, CallError<RecoverError>>) + Send + 'static,
    ) {
        let isolator = Arc::clone(&self.isolator);
        let metrics = Arc::clone(&self.metrics);
        let work = move || isolator.recover(&known, &orphans).map_err(RecoverError);
        submit(
            &self.calls,
            "recover".to_owned(),
            None,
            work,
            move |result| {
                match &result {
                    Ok(report) => metrics.recovered(&report.errors),
                    Err(e) => metrics.recovered(&[render_chain(e)]),
                }
                done(result);
            },
        );
    }

    /// Prepares container `id` (see [`Isolator::prepare`]); `done` gets its launch plan.
    pub fn prepare(
        &self,
        id: String,
        input: ContainerInput,
        done: impl FnOnce(Result<LaunchPlan, CallError<PrepareError>>) + Send + 'static,
    ) {
        let label = format!("prepare of container {id}");
        let limit = Limit {
            after: self.isolator.config().mount_timeout,
            setting: "mount_timeout_secs",
        };
        let isolator = Arc::clone(&self.isolator);
        let work = move || isolator.prepare(&id, Owner::Mesos, &input);
        let metrics = Arc::clone(&self.metrics);
        submit(&self.calls, label, Some(limit), work, move |result| {
            metrics.prepared(result.is_ok());
            done(result);
        });
    }

    /// Cleans up container `id` (see [`Isolator::cleanup`]).
    pub fn cleanup(
        &self,
        id: String,
        done: impl FnOnce(Result<(), CallError<CleanupError>>) + Send + 'static,
    ) {
        let label = format!("cleanup of container {id}");
        let limit = Limit {
            after: self.isolator.config().unmount_timeout,
            setting: "unmount_timeout_secs",
        };
        let isolator = Arc::clone(&self.isolator);
        let work = move || isolator.cleanup(&id);
        let metrics = Arc::clone(&self.metrics);
        submit(&self.calls, label, Some(limit), work, move |result| {
            metrics.cleaned_up(result.as_ref().err().map(|e| render_chain(e)));
            done(result);
        });
    }

    /// The status JSON (`dvdi status --json`, `GET /dvdi/volumes`).
    pub fn status_json(
        &self,
        done: impl FnOnce(Result<String, CallError<StateError>>) + Send + 'static,
    ) {
        let isolator = Arc::clone(&self.isolator);
        let work = move || status_rows(&isolator).map(|rows| status::to_json(&rows));
        submit(
            &self.reads,
            "status".to_owned(),
            Some(READ_LIMIT),
            work,
            done,
        );
    }

    /// The module's health (`GET /dvdi/health`).
    pub fn health(
        &self,
        done: impl FnOnce(Result<Health, CallError<StateError>>) + Send + 'static,
    ) {
        let isolator = Arc::clone(&self.isolator);
        let metrics = Arc::clone(&self.metrics);
        let work = move || {
            let rows = status_rows(&isolator)?;
            let coordination = isolator.coordinator().map(|c| c.status());
            Ok(status::health(
                &rows,
                &metrics.recent_errors(),
                coordination.as_ref(),
            ))
        };
        submit(
            &self.reads,
            "health".to_owned(),
            Some(READ_LIMIT),
            work,
            done,
        );
    }
}

fn status_rows(isolator: &Isolator) -> Result<Vec<status::StatusRow>, StateError> {
    status::rows(isolator.store(), &isolator.config().legacy_checkpoint)
}

/// Hands `work` to `pool` and `done` its answer: what `work` returned, or why it never ran (its
/// thread not free before `limit`), or the panic it raised (caught here, so that the caller still
/// hears of the failure instead of waiting for ever).
fn submit<T, E: Error + Send + 'static>(
    pool: &Pool,
    call: String,
    limit: Option<Limit>,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    done: impl FnOnce(Result<T, CallError<E>>) + Send + 'static,
) {
    let deadline = limit.map(|l| Instant::now() + l.after);
    pool.submit(call.clone(), deadline, move |started| {
        done(match started {
            Err(source) => Err(CallError::NotStarted {
                limit: limit.map_or_else(|| "its limit".to_owned(), |l| l.describe()),
                call,
                source,
            }),
            Ok(()) => match catch_unwind(AssertUnwindSafe(work)) {
                Ok(result) => result.map_err(CallError::Failed),
                Err(payload) => Err(CallError::Panicked {
                    call,
                    message: panic_message(payload.as_ref()),
                }),
            },
        })
    });
}

/// `inner`'s backends, each call noted as what the current call is doing (the pool names it
/// when it refuses another call).
pub fn traced(inner: Arc<dyn BackendProvider>) -> Arc<dyn BackendProvider> {
    Arc::new(Traced(inner))
}

struct Traced(Arc<dyn BackendProvider>);

impl BackendProvider for Traced {
    fn backend(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let inner = self.0.backend(driver, dvdcli)?;
        Ok(Arc::new(TracedBackend(inner)))
    }
}

struct TracedBackend(Arc<dyn Backend>);

impl TracedBackend {
    /// Runs one backend call with the pool told what it is.
    fn call<T>(&self, op: &str, volume: Option<&VolumeName>, f: impl FnOnce() -> T) -> T {
        let driver = self.0.driver().as_str();
        pool::note(Some(match volume {
            Some(v) => format!("in {op} of volume {:?} via driver {driver:?}", v.as_str()),
            None => format!("in {op} of driver {driver:?}"),
        }));
        let result = f();
        pool::note(None);
        result
    }
}

impl Backend for TracedBackend {
    fn driver(&self) -> &DriverName {
        self.0.driver()
    }
    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.call("Create", Some(name), || self.0.create(name, opts))
    }
    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        self.call("Remove", Some(name), || self.0.remove(name))
    }
    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        self.call("Mount", Some(req.name), || self.0.mount(req))
    }
    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        self.call("Unmount", Some(name), || self.0.unmount(name, id))
    }
    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        self.call("Path", Some(name), || self.0.path(name))
    }
    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        self.call("Get", Some(name), || self.0.get(name))
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        self.call("List", None, || self.0.list())
    }
    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        self.call("Capabilities", None, || self.0.capabilities())
    }
}
