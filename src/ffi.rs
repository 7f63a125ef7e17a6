//! The cxx bridge: the only Rust code C++ calls.
//!
//! Plain data in and out. Every entry point runs under [`guard`]: a panic becomes an error naming
//! the call, so no unwind ever crosses into C++ (it would abort the agent), and every error's whole
//! `source()` chain is rendered into its message here, once, since only `what()` reaches C++.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::backend::registry::Registry;
use crate::config::{Config, Loaded};
use crate::error::render_chain;
use crate::isolator::{ContainerInput, Isolator, KnownContainer};
use crate::metrics::{Counted, Metrics};
use crate::mount::Host;
use crate::spec::{CsiVolumeInput, DockerVolumeInput, SecretInput};
use crate::state::{ContainerId, Owner, StateError};
use crate::status;

/// The types and functions both languages see (C++ namespace `mesos_dvdi`).
#[cxx::bridge(namespace = "mesos_dvdi")]
pub mod bridge {
    // --- Shared structs: plain data both languages see. ---

    /// One module parameter (`isolator.json`).
    struct Param {
        /// The parameter's name.
        key: String,
        /// Its value.
        value: String,
    }

    /// One environment variable of the task, as bytes (a task's environment need not be UTF-8).
    struct EnvVar {
        /// The variable's name.
        name: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    }

    /// A `DOCKER_VOLUME` of `ContainerInfo.volumes`.
    struct DockerVolume {
        /// `source.docker_volume.driver`; empty when unset.
        driver: String,
        /// `source.docker_volume.name`.
        name: String,
        /// `source.docker_volume.driver_options`, in order.
        options: Vec<Param>,
        /// `container_path`.
        container_path: String,
        /// `mode == RO`.
        read_only: bool,
    }

    /// One secret of a `CSI_VOLUME` (`map<string, Secret>` entry).
    struct CsiSecret {
        /// The map's key.
        key: String,
        /// `Secret.type`: 1 `REFERENCE`, 2 `VALUE`, 0 unset.
        kind: i32,
        /// `value.data` for a `VALUE` secret.
        value: Vec<u8>,
        /// `reference.name` for a `REFERENCE` secret.
        reference: String,
    }

    /// A `CSI_VOLUME` of `ContainerInfo.volumes` (static provisioning).
    struct CsiVolume {
        /// Its position in `container_info.volumes`.
        index: u64,
        /// `source.csi_volume.plugin_name`.
        plugin_name: String,
        /// `static_provisioning` is set.
        has_static_provisioning: bool,
        /// `static_provisioning.volume_id`.
        volume_id: String,
        /// `volume_capability.block` is set.
        block: bool,
        /// `volume_capability.mount.fs_type`.
        fs_type: String,
        /// `volume_capability.mount.mount_flags`.
        mount_flags: Vec<String>,
        /// `volume_capability.access_mode.mode`.
        access_mode: i32,
        /// `static_provisioning.volume_context`.
        volume_context: Vec<Param>,
        /// `static_provisioning.node_stage_secrets`.
        node_stage_secrets: Vec<CsiSecret>,
        /// `static_provisioning.node_publish_secrets`.
        node_publish_secrets: Vec<CsiSecret>,
        /// `container_path`.
        container_path: String,
        /// `mode == RO`.
        read_only: bool,
    }

    /// What the shim reads from `ContainerConfig`.
    struct ContainerRequest {
        /// The task's (else the executor's) environment, in order.
        env: Vec<EnvVar>,
        /// `DOCKER_VOLUME` entries of `container_info.volumes`.
        docker_volumes: Vec<DockerVolume>,
        /// `CSI_VOLUME` entries of `container_info.volumes`.
        csi_volumes: Vec<CsiVolume>,
        /// The sandbox (`ContainerConfig.directory`).
        sandbox: String,
        /// The rootfs; empty when the container has none.
        rootfs: String,
        /// The user; empty when unknown.
        user: String,
    }

    /// One bind for `ContainerLaunchInfo.mounts` (`MS_BIND | MS_REC`, `| MS_RDONLY`).
    struct BindMount {
        /// The volume's host mount point.
        source: String,
        /// The verified target.
        target: String,
        /// Add `MS_RDONLY`.
        read_only: bool,
    }

    /// The answer to prepare.
    struct Launch {
        /// The binds, in order.
        mounts: Vec<BindMount>,
        /// Ask for `CLONE_NEWNS`.
        new_mount_namespace: bool,
        /// Task input ignored on purpose, for the agent's log.
        warnings: Vec<String>,
    }

    /// What recover did, counted, with every problem that did not stop it.
    struct RecoverSummary {
        /// References dropped because their container is gone.
        dropped: u64,
        /// Volumes unmounted because no one uses them.
        unmounted: u64,
        /// Volumes mounted again because their mount had vanished.
        remounted: u64,
        /// Volumes still in use.
        kept: u64,
        /// Containers fenced because a lease their volumes need is held elsewhere (the shim
        /// has been told of each through the fence sink).
        fenced: u64,
        /// Problems that did not stop recovery, each naming its volume or file.
        errors: Vec<String>,
    }

    /// The module's health.
    struct Health {
        /// Nothing needs an operator.
        ok: bool,
        /// `{"ok", "unreadable", "failing", "recent_errors", "coordination"}` (see `status::health`).
        json: String,
    }

    /// One of the module's metrics, published as `name` in the agent's `/metrics/snapshot`.
    struct Metric {
        /// Its name, `dvdi/...`.
        name: String,
        /// `"gauge"` or `"counter"`.
        kind: String,
        /// Its value now.
        value: f64,
    }

    // --- Rust, called from C++. ---
    extern "Rust" {
        /// The isolator (opaque to C++).
        type IsolatorCore;

        /// Builds the isolator from the parameters of the module loaded under `module` (one of the
        /// library's two names; unknown parameters are an error).
        fn create(module: &str, params: &Vec<Param>) -> Result<Box<IsolatorCore>>;
        /// Reconciles the checkpoint with the containers the agent knows.
        fn recover(
            self: &IsolatorCore,
            known: &Vec<String>,
            orphans: &Vec<String>,
        ) -> Result<RecoverSummary>;
        /// Mounts what the container asks for and says what to bind where.
        fn prepare(
            self: &IsolatorCore,
            container_id: &str,
            request: &ContainerRequest,
        ) -> Result<Launch>;
        /// Releases the container's volumes.
        fn cleanup(self: &IsolatorCore, container_id: &str) -> Result<()>;
        /// Routes fencing (a lost lease: stop this container) to `sink`; set it before recover.
        fn set_fence_sink(self: &IsolatorCore, sink: UniquePtr<FenceSink>);
        /// The mount table as JSON, as `dvdi status --json` prints it (`GET /dvdi/volumes`).
        fn status_json(self: &IsolatorCore) -> Result<String>;
        /// The module's health (`GET /dvdi/health`).
        fn health(self: &IsolatorCore) -> Result<Health>;
        /// Every metric with its value now.
        fn metrics(self: &IsolatorCore) -> Result<Vec<Metric>>;
        /// Routes the core's log records to `sink` (the agent's glog, or stderr).
        fn set_log_sink(sink: UniquePtr<LogSink>);
        /// Always fails: panics inside the bridge's guard, so a caller can check that a Rust
        /// panic arrives as an exception (and never aborts the process).
        fn panic_guard_self_test(message: &str) -> Result<()>;
    }

    // --- C++, called from Rust. ---
    unsafe extern "C++" {
        include!("mesos-dvdi/cpp/log_sink.h");

        /// Where log records go.
        type LogSink;
        /// Records one message.
        fn log(self: &LogSink, level: u8, message: &str);

        include!("mesos-dvdi/cpp/fence_sink.h");

        /// Where fencing goes.
        type FenceSink;
        /// The container must be stopped, for the reason `message`.
        fn fence(self: &FenceSink, container_id: &str, message: &str);
    }
}

// SAFETY: every LogSink implementation (glog in the shim, stderr in the harness) may be called
// from any thread at once; glog and stdio are thread-safe.
unsafe impl Send for bridge::LogSink {}
// SAFETY: as above: `log` takes `&self` and is safe to call concurrently.
unsafe impl Sync for bridge::LogSink {}

// SAFETY: every FenceSink implementation (the shim's promise table behind a mutex, the harness's
// recorder behind a mutex) may be called from any thread at once.
unsafe impl Send for bridge::FenceSink {}
// SAFETY: as above: `fence` takes `&self` and is safe to call concurrently.
unsafe impl Sync for bridge::FenceSink {}

/// An error as C++ sees it: the whole chain, rendered once.
#[derive(Debug)]
pub struct BridgeError(String);

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs one entry point: its error rendered with its chain, a panic turned into an error that
/// names the call.
fn guard<T, E: std::error::Error + 'static>(
    call: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, BridgeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BridgeError(render_chain(&e))),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(BridgeError(format!(
                "mesos-dvdi {call}: internal error (a panic, caught at the bridge): {what}"
            )))
        }
    }
}

/// The isolator behind the bridge, with the counts it publishes.
pub struct IsolatorCore {
    inner: Isolator,
    metrics: Arc<Metrics>,
}

/// A failure to build the isolator.
#[derive(Debug, thiserror::Error)]
enum CreateError {
    #[error("mesos-dvdi: invalid module parameters")]
    Config(#[from] crate::config::ConfigError),
    #[error("mesos-dvdi: opening the checkpoint failed")]
    State(#[from] crate::state::StateError),
}

/// A container id Mesos gave that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("mesos-dvdi recover: container id {id:?}")]
struct BadId {
    id: String,
    #[source]
    source: crate::state::ContainerIdError,
}

// cxx passes `rust::Vec const&` as `&Vec`: the signature must match the bridge's.
#[allow(clippy::ptr_arg)]
fn create(module: &str, params: &Vec<bridge::Param>) -> Result<Box<IsolatorCore>, BridgeError> {
    guard("create", || {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let Loaded { config, warnings } = Config::from_module_params(module, &params)?;
        for w in warnings {
            log::warn!("{w}");
        }
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(config.clone(), Arc::new(Host));
        let counted = Counted::new(Arc::new(registry), Arc::clone(&metrics));
        let inner = Isolator::open(config, Arc::new(counted))?;
        Ok::<_, CreateError>(Box::new(IsolatorCore { inner, metrics }))
    })
}

fn ids(list: &[String]) -> Result<Vec<ContainerId>, BadId> {
    list.iter()
        .map(|id| {
            ContainerId::new(id.as_str()).map_err(|source| BadId {
                id: id.clone(),
                source,
            })
        })
        .collect()
}

/// Any error of recover (bad ids or the isolator's own).
#[derive(Debug, thiserror::Error)]
enum RecoverError {
    #[error(transparent)]
    Id(#[from] BadId),
    #[error("mesos-dvdi recover")]
    Isolator(#[from] crate::isolator::IsolatorError),
}

impl IsolatorCore {
    // cxx passes `rust::Vec const&` as `&Vec`: the signature must match the bridge's.
    #[allow(clippy::ptr_arg)]
    fn recover(
        &self,
        known: &Vec<String>,
        orphans: &Vec<String>,
    ) -> Result<bridge::RecoverSummary, BridgeError> {
        guard("recover", || {
            let known: Vec<KnownContainer> = ids(known)?
                .into_iter()
                .map(|id| KnownContainer { id })
                .collect();
            let orphans = ids(orphans)?;
            let r = match self.inner.recover(&known, &orphans) {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.recovered(&[render_chain(&e)]);
                    return Err(e.into());
                }
            };
            self.metrics.recovered(&r.errors);
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            Ok::<_, RecoverError>(bridge::RecoverSummary {
                dropped: count(r.dropped.len()),
                unmounted: count(r.unmounted.len()),
                remounted: count(r.remounted.len()),
                kept: count(r.kept.len()),
                fenced: count(r.fenced.len()),
                errors: r.errors,
            })
        })
    }

    fn prepare(
        &self,
        container_id: &str,
        request: &bridge::ContainerRequest,
    ) -> Result<bridge::Launch, BridgeError> {
        guard("prepare", || {
            let input = ContainerInput {
                env: request
                    .env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect(),
                docker_volumes: request
                    .docker_volumes
                    .iter()
                    .map(|d| DockerVolumeInput {
                        driver: d.driver.clone(),
                        name: d.name.clone(),
                        driver_options: d
                            .options
                            .iter()
                            .map(|p| (p.key.clone(), p.value.clone()))
                            .collect(),
                        container_path: d.container_path.clone(),
                        read_only: d.read_only,
                    })
                    .collect(),
                csi_volumes: request.csi_volumes.iter().map(csi_volume_input).collect(),
                sandbox: PathBuf::from(&request.sandbox),
                rootfs: (!request.rootfs.is_empty()).then(|| PathBuf::from(&request.rootfs)),
                user: (!request.user.is_empty()).then(|| request.user.clone()),
            };
            let plan = self.inner.prepare(container_id, Owner::Mesos, &input);
            self.metrics.prepared(plan.is_ok());
            let plan = plan?;
            Ok::<_, crate::isolator::PrepareError>(bridge::Launch {
                mounts: plan
                    .mounts
                    .iter()
                    .map(|m| bridge::BindMount {
                        source: m.source.to_string_lossy().into_owned(),
                        target: m.target.to_string_lossy().into_owned(),
                        read_only: m.read_only,
                    })
                    .collect(),
                new_mount_namespace: plan.needs_new_mount_ns,
                warnings: plan.warnings,
            })
        })
    }

    fn cleanup(&self, container_id: &str) -> Result<(), BridgeError> {
        guard("cleanup", || {
            let result = self.inner.cleanup(container_id);
            self.metrics
                .cleaned_up(result.as_ref().err().map(|e| render_chain(e)));
            result
        })
    }

    fn status_rows(&self) -> Result<Vec<status::StatusRow>, StateError> {
        status::rows(self.inner.store(), &self.inner.config().legacy_checkpoint)
    }

    fn status_json(&self) -> Result<String, BridgeError> {
        guard("status_json", || {
            self.status_rows().map(|r| status::to_json(&r))
        })
    }

    fn health(&self) -> Result<bridge::Health, BridgeError> {
        guard("health", || {
            self.status_rows().map(|r| {
                let coordination = self.inner.coordinator().map(|c| c.status());
                let h = status::health(&r, &self.metrics.recent_errors(), coordination.as_ref());
                bridge::Health {
                    ok: h.ok,
                    json: h.json,
                }
            })
        })
    }

    fn metrics(&self) -> Result<Vec<bridge::Metric>, BridgeError> {
        guard("metrics", || {
            Ok::<_, std::convert::Infallible>(
                self.metrics
                    .snapshot(self.inner.usage())
                    .into_iter()
                    .map(|(name, kind, value)| bridge::Metric {
                        name: name.to_owned(),
                        kind: kind.as_str().to_owned(),
                        // Counts stay exact in an f64 up to 2^53.
                        value: value as f64,
                    })
                    .collect(),
            )
        })
    }

    fn set_fence_sink(&self, sink: cxx::UniquePtr<bridge::FenceSink>) {
        if sink.is_null() {
            return;
        }
        let metrics = Arc::clone(&self.metrics);
        self.inner.set_fence_handler(Arc::new(move |id, message| {
            metrics.fenced(id.as_str(), message);
            // A panic here would unwind into the coordination thread, not into C++; the sink
            // itself is C++ and does not unwind into Rust (cxx aborts on a C++ exception
            // without a Result), so it must not throw.
            if let Some(s) = sink.as_ref() {
                s.fence(id.as_str(), message);
            }
        }));
    }
}

/// The installed log sink.
static SINK: Mutex<Option<cxx::UniquePtr<bridge::LogSink>>> = Mutex::new(None);

struct SinkLogger;

impl log::Log for SinkLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sink.as_ref() {
            let level = record.level() as u8;
            s.log(level, &format!("mesos-dvdi: {}", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: SinkLogger = SinkLogger;

fn set_log_sink(sink: cxx::UniquePtr<bridge::LogSink>) {
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    // Another logger may be installed already (e.g. by a host program); then it keeps the records.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn panic_guard_self_test(message: &str) -> Result<(), BridgeError> {
    guard("panic_guard_self_test", || -> Result<(), std::io::Error> {
        panic!("{message}")
    })
}

/// A `CSI_VOLUME` as the shim read it, for the spec layer (which validates it).
fn csi_volume_input(v: &bridge::CsiVolume) -> CsiVolumeInput {
    let secrets = |given: &[bridge::CsiSecret]| {
        given
            .iter()
            .map(|s| {
                let secret = match s.kind {
                    2 => SecretInput::Value(s.value.clone()),
                    1 => SecretInput::Reference {
                        name: s.reference.clone(),
                    },
                    _ => SecretInput::Unknown,
                };
                (s.key.clone(), secret)
            })
            .collect()
    };
    CsiVolumeInput {
        index: usize::try_from(v.index).unwrap_or(usize::MAX),
        plugin_name: v.plugin_name.clone(),
        has_static_provisioning: v.has_static_provisioning,
        volume_id: v.volume_id.clone(),
        block: v.block,
        fs_type: v.fs_type.clone(),
        mount_flags: v.mount_flags.clone(),
        access_mode: v.access_mode,
        volume_context: v
            .volume_context
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        node_stage_secrets: secrets(&v.node_stage_secrets),
        node_publish_secrets: secrets(&v.node_publish_secrets),
        container_path: v.container_path.clone(),
        read_only: v.read_only,
    }
}
