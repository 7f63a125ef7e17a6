//! The module's counters and its recent problems, as the agent publishes them (`/metrics/snapshot`,
//! `GET /dvdi/health`).
//!
//! The core owns every count; the shim only reads them ([`Metrics::snapshot`]), so there is one
//! bookkeeping. Counters are relaxed atomics: each is exact, but a snapshot taken while calls run
//! may see one counter ahead of another.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{
    Backend, BackendError, BackendProvider, Capabilities, MountId, MountRequest, VolumeInfo,
};
use crate::spec::{DriverName, VolumeName, VolumeOpts};

/// How many recent problems the health endpoint shows.
pub const RECENT_ERRORS: usize = 32;

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A level that goes up and down.
    Gauge,
    /// A count that only grows.
    Counter,
}

impl Kind {
    /// `"gauge"` or `"counter"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// Every metric, by name (each published as `dvdi/<name>`), in the order [`Metrics::snapshot`]
/// gives them.
pub const NAMES: &[(&str, Kind)] = &[
    ("dvdi/volumes_mounted", Kind::Gauge),
    ("dvdi/containers_using_volumes", Kind::Gauge),
    ("dvdi/prepares", Kind::Counter),
    ("dvdi/prepare_failures", Kind::Counter),
    ("dvdi/cleanups", Kind::Counter),
    ("dvdi/cleanup_failures", Kind::Counter),
    ("dvdi/backend_calls", Kind::Counter),
    ("dvdi/backend_call_failures", Kind::Counter),
    ("dvdi/recover_errors", Kind::Counter),
    ("dvdi/containers_fenced", Kind::Counter),
];

/// The isolator's level at one moment (from [`crate::isolator::Isolator::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    /// Volumes the isolator holds mounted (used, or waiting for a retried unmount).
    pub volumes_mounted: u64,
    /// Containers holding at least one volume.
    pub containers_using_volumes: u64,
}

/// The counters, shared by the bridge and the backends it counts.
#[derive(Debug, Default)]
pub struct Metrics {
    prepares: AtomicU64,
    prepare_failures: AtomicU64,
    cleanups: AtomicU64,
    cleanup_failures: AtomicU64,
    backend_calls: AtomicU64,
    backend_call_failures: AtomicU64,
    recover_errors: AtomicU64,
    containers_fenced: AtomicU64,
    recent: Mutex<VecDeque<String>>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a prepare and whether it failed.
    pub fn prepared(&self, ok: bool) {
        bump(&self.prepares);
        if !ok {
            bump(&self.prepare_failures);
        }
    }

    /// Counts a cleanup; a failed one is kept among the recent problems.
    pub fn cleaned_up(&self, failure: Option<String>) {
        bump(&self.cleanups);
        if let Some(e) = failure {
            bump(&self.cleanup_failures);
            self.remember(e);
        }
    }

    /// Counts a recover's problems (`errors`; a recover that failed as a whole is one) and keeps
    /// them among the recent problems.
    pub fn recovered(&self, errors: &[String]) {
        self.recover_errors.fetch_add(
            u64::try_from(errors.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        for e in errors {
            self.remember(format!("recover: {e}"));
        }
    }

    /// Counts a container fenced (a lease its volumes need was lost) and keeps why among the
    /// recent problems.
    pub fn fenced(&self, container: &str, why: &str) {
        bump(&self.containers_fenced);
        self.remember(format!("fenced container {container}: {why}"));
    }

    fn remember(&self, error: String) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(error);
    }

    /// The recent problems, oldest first (at most [`RECENT_ERRORS`]).
    pub fn recent_errors(&self) -> Vec<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Every metric of [`NAMES`], in order, with its value now.
    pub fn snapshot(&self, levels: Levels) -> Vec<(&'static str, Kind, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let values = [
            levels.volumes_mounted,
            levels.containers_using_volumes,
            get(&self.prepares),
            get(&self.prepare_failures),
            get(&self.cleanups),
            get(&self.cleanup_failures),
            get(&self.backend_calls),
            get(&self.backend_call_failures),
            get(&self.recover_errors),
            get(&self.containers_fenced),
        ];
        NAMES
            .iter()
            .zip(values)
            .map(|(&(name, kind), value)| (name, kind, value))
            .collect()
    }

    fn call<T>(&self, result: Result<T, BackendError>) -> Result<T, BackendError> {
        bump(&self.backend_calls);
        if result.is_err() {
            bump(&self.backend_call_failures);
        }
        result
    }
}

/// A [`BackendProvider`] whose backends count their calls in [`Metrics`]. Finding a backend that
/// fails (an unknown driver, a plugin that is not there) counts as a failed call.
pub struct Counted {
    inner: Arc<dyn BackendProvider>,
    metrics: Arc<Metrics>,
}

impl Counted {
    /// Counts the calls of `inner`'s backends.
    pub fn new(inner: Arc<dyn BackendProvider>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl BackendProvider for Counted {
    fn backend(
        &self,
        driver: &DriverName,
        dvdcli: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let inner = match self.inner.backend(driver, dvdcli) {
            Ok(b) => b,
            Err(e) => return self.metrics.call(Err(e)),
        };
        Ok(Arc::new(CountedBackend {
            inner,
            metrics: Arc::clone(&self.metrics),
        }))
    }
}

struct CountedBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl Backend for CountedBackend {
    fn driver(&self) -> &DriverName {
        self.inner.driver()
    }
    fn create(&self, name: &VolumeName, opts: &VolumeOpts) -> Result<(), BackendError> {
        self.metrics.call(self.inner.create(name, opts))
    }
    fn remove(&self, name: &VolumeName) -> Result<(), BackendError> {
        self.metrics.call(self.inner.remove(name))
    }
    fn mount(&self, req: &MountRequest<'_>) -> Result<PathBuf, BackendError> {
        self.metrics.call(self.inner.mount(req))
    }
    fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<(), BackendError> {
        self.metrics.call(self.inner.unmount(name, id))
    }
    fn path(&self, name: &VolumeName) -> Result<Option<PathBuf>, BackendError> {
        self.metrics.call(self.inner.path(name))
    }
    fn get(&self, name: &VolumeName) -> Result<Option<VolumeInfo>, BackendError> {
        self.metrics.call(self.inner.get(name))
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        self.metrics.call(self.inner.list())
    }
    fn capabilities(&self) -> Result<Capabilities, BackendError> {
        self.metrics.call(self.inner.capabilities())
    }
}
