//! The cxx bridge: the only Rust code C++ calls.
//!
//! Plain data in and out. Every entry point runs under [`guard`]: a panic becomes an error naming
//! the call, so no unwind ever crosses into C++ (it would abort the agent), and every error's whole
//! `source()` chain is rendered into its message here, once, since only `what()` reaches C++.
//!
//! The calls that may block (recover, prepare, cleanup, and the endpoints' reads) return at once:
//! each takes a C++ completion, hands the work to the core's bounded pool ([`crate::calls`]) and
//! is answered through that completion from a pool thread, exactly once, success or failure
//! (a call refused because the pool stayed full included). The shim's completions fulfil
//! libprocess promises, so no agent thread ever waits on the core, and no thread is started per
//! call.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::calls::Calls;
use crate::config::{Config, Loaded};
use crate::error::render_chain;
use crate::isolator::{ContainerInput, KnownContainer, LaunchPlan, RecoverReport};
use crate::pool::panic_message;
use crate::spec::{CsiVolumeInput, DockerVolumeInput, SecretInput};
use crate::state::ContainerId;

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
        /// Reconciles the checkpoint with the containers the agent knows, on a thread of the
        /// core's pool; returns at once and answers through `done`.
        fn start_recover(
            self: &IsolatorCore,
            known: &Vec<String>,
            orphans: &Vec<String>,
            done: UniquePtr<RecoverDone>,
        );
        /// Mounts what the container asks for and says what to bind where, on a thread of the
        /// core's pool; returns at once and answers through `done`.
        fn start_prepare(
            self: &IsolatorCore,
            container_id: &str,
            request: &ContainerRequest,
            done: UniquePtr<PrepareDone>,
        );
        /// Releases the container's volumes, on a thread of the core's pool; returns at once and
        /// answers through `done`.
        fn start_cleanup(self: &IsolatorCore, container_id: &str, done: UniquePtr<CleanupDone>);
        /// Routes fencing (a lost lease: stop this container) to `sink`; set it before recover.
        fn set_fence_sink(self: &IsolatorCore, sink: UniquePtr<FenceSink>);
        /// The mount table as JSON, as `dvdi status --json` prints it (`GET /dvdi/volumes`):
        /// answered through `done` (always `ok`).
        fn start_status_json(self: &IsolatorCore, done: UniquePtr<ReadDone>);
        /// The module's health (`GET /dvdi/health`): answered through `done` with the JSON and
        /// whether all is well.
        fn start_health(self: &IsolatorCore, done: UniquePtr<ReadDone>);
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

        include!("mesos-dvdi/cpp/completion.h");

        /// The answer to `start_recover`. Each completion is answered once, through one of its
        /// methods, from a thread of the core; none of its methods throws.
        type RecoverDone;
        /// Recover is done.
        fn recovered(self: &RecoverDone, summary: &RecoverSummary);
        /// Recover failed, or never ran, for the reason `message`.
        fn failed(self: &RecoverDone, message: &str);

        /// The answer to `start_prepare`.
        type PrepareDone;
        /// The container is prepared: `launch` is what the containerizer must do.
        fn prepared(self: &PrepareDone, launch: &Launch);
        /// Prepare failed, or never ran, for the reason `message`.
        fn failed(self: &PrepareDone, message: &str);

        /// The answer to `start_cleanup`.
        type CleanupDone;
        /// The container's volumes are released.
        fn cleaned_up(self: &CleanupDone);
        /// Cleanup failed, or never ran, for the reason `message`.
        fn failed(self: &CleanupDone, message: &str);

        /// The answer to an endpoint's read (`start_status_json`, `start_health`).
        type ReadDone;
        /// The JSON `body`; `ok`: all is well (the health endpoint answers 503 otherwise).
        fn answered(self: &ReadDone, ok: bool, body: &str);
        /// The read failed, or never ran, for the reason `message`.
        fn failed(self: &ReadDone, message: &str);
    }
}

// SAFETY: every LogSink implementation (glog in the shim, stderr in the harness) may be called
// from any thread at once; glog and stdio are thread-safe.
unsafe impl Send for bridge::LogSink {}
// SAFETY: as above: `log` takes `&self` and is safe to call concurrently.
unsafe impl Sync for bridge::LogSink {}

// SAFETY: a completion is owned by one thread at a time (the entry point, then the pool thread
// that answers it), and each implementation completes a promise, which may be done from any
// thread (libprocess' Promise is thread-safe; the harness's stand-in locks a mutex).
unsafe impl Send for bridge::RecoverDone {}
// SAFETY: as above.
unsafe impl Send for bridge::PrepareDone {}
// SAFETY: as above.
unsafe impl Send for bridge::CleanupDone {}
// SAFETY: as above.
unsafe impl Send for bridge::ReadDone {}

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

impl std::error::Error for BridgeError {}

/// Runs one entry point: its error rendered with its chain, a panic turned into an error that
/// names the call.
fn guard<T, E: std::error::Error + 'static>(
    call: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, BridgeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BridgeError(render_chain(&e))),
        Err(payload) => Err(BridgeError(format!(
            "mesos-dvdi {call}: internal error (a panic, caught at the bridge): {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// A C++ completion: told of a failure the same way whatever the call.
trait Done: cxx::memory::UniquePtrTarget {
    fn fail(&self, message: &str);
}

impl Done for bridge::RecoverDone {
    fn fail(&self, message: &str) {
        self.failed(message);
    }
}

impl Done for bridge::PrepareDone {
    fn fail(&self, message: &str) {
        self.failed(message);
    }
}

impl Done for bridge::CleanupDone {
    fn fail(&self, message: &str) {
        self.failed(message);
    }
}

impl Done for bridge::ReadDone {
    fn fail(&self, message: &str) {
        self.failed(message);
    }
}

/// A call's completion, shared by its entry point and the pool thread that answers it: whichever
/// answers takes it, so it is answered once. (Dropped unanswered, the C++ side fails its promise.)
struct Answer<D: Done>(Arc<Mutex<Option<cxx::UniquePtr<D>>>>);

impl<D: Done> Clone for Answer<D> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<D: Done> Answer<D> {
    /// Answers with `result`: its value through `ok`, its error through `failed`.
    fn give<T>(&self, result: Result<T, BridgeError>, ok: impl FnOnce(&D, T)) {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(done) = taken.as_ref().and_then(|d| d.as_ref()) {
            match result {
                Ok(v) => ok(done, v),
                Err(e) => done.fail(&e.0),
            }
        }
    }
}

/// Runs the synchronous part of an entry point (checking and translating its input, handing the
/// call to the core) under the guard; its error or panic is the call's answer.
fn entry<D: Done>(
    call: &str,
    done: cxx::UniquePtr<D>,
    start: impl FnOnce(Answer<D>) -> Result<(), BridgeError>,
) {
    let answer = Answer(Arc::new(Mutex::new(Some(done))));
    if let Err(e) = guard(call, || start(answer.clone())) {
        answer.give::<()>(Err(e), |_, ()| {});
    }
}

/// The isolator behind the bridge: its calls, each on the core's bounded pool.
pub struct IsolatorCore {
    calls: Calls,
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
        let calls = Calls::open(config)?;
        Ok::<_, CreateError>(Box::new(IsolatorCore { calls }))
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

/// What the core reads from the shim's `ContainerRequest`.
fn container_input(request: &bridge::ContainerRequest) -> ContainerInput {
    ContainerInput {
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
    }
}

/// The shim's answer to prepare.
fn launch(plan: &LaunchPlan) -> bridge::Launch {
    bridge::Launch {
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
        warnings: plan.warnings.clone(),
    }
}

/// The shim's summary of recover.
fn summary(r: RecoverReport) -> bridge::RecoverSummary {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    bridge::RecoverSummary {
        dropped: count(r.dropped.len()),
        unmounted: count(r.unmounted.len()),
        remounted: count(r.remounted.len()),
        kept: count(r.kept.len()),
        fenced: count(r.fenced.len()),
        errors: r.errors,
    }
}

impl IsolatorCore {
    // cxx passes `rust::Vec const&` as `&Vec`: the signature must match the bridge's.
    #[allow(clippy::ptr_arg)]
    fn start_recover(
        &self,
        known: &Vec<String>,
        orphans: &Vec<String>,
        done: cxx::UniquePtr<bridge::RecoverDone>,
    ) {
        entry("recover", done, |answer| {
            let known: Vec<KnownContainer> = guard("recover", || ids(known))?
                .into_iter()
                .map(|id| KnownContainer { id })
                .collect();
            let orphans = guard("recover", || ids(orphans))?;
            self.calls.recover(known, orphans, move |result| {
                let result = guard("recover", || result.map(summary));
                answer.give(result, |d, s| d.recovered(&s));
            });
            Ok(())
        });
    }

    fn start_prepare(
        &self,
        container_id: &str,
        request: &bridge::ContainerRequest,
        done: cxx::UniquePtr<bridge::PrepareDone>,
    ) {
        entry("prepare", done, |answer| {
            let input = container_input(request);
            self.calls
                .prepare(container_id.to_owned(), input, move |result| {
                    let result = guard("prepare", || result.map(|plan| launch(&plan)));
                    answer.give(result, |d, l| d.prepared(&l));
                });
            Ok(())
        });
    }

    fn start_cleanup(&self, container_id: &str, done: cxx::UniquePtr<bridge::CleanupDone>) {
        entry("cleanup", done, |answer| {
            self.calls.cleanup(container_id.to_owned(), move |result| {
                let result = guard("cleanup", || result);
                answer.give(result, |d, ()| d.cleaned_up());
            });
            Ok(())
        });
    }

    fn start_status_json(&self, done: cxx::UniquePtr<bridge::ReadDone>) {
        entry("status_json", done, |answer| {
            self.calls.status_json(move |result| {
                let result = guard("status_json", || result);
                answer.give(result, |d, json| d.answered(true, &json));
            });
            Ok(())
        });
    }

    fn start_health(&self, done: cxx::UniquePtr<bridge::ReadDone>) {
        entry("health", done, |answer| {
            self.calls.health(move |result| {
                let result = guard("health", || result);
                answer.give(result, |d, h| d.answered(h.ok, &h.json));
            });
            Ok(())
        });
    }

    fn metrics(&self) -> Result<Vec<bridge::Metric>, BridgeError> {
        guard("metrics", || {
            Ok::<_, std::convert::Infallible>(
                self.calls
                    .metrics_now()
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
        let metrics = Arc::clone(self.calls.metrics());
        self.calls
            .isolator()
            .set_fence_handler(Arc::new(move |id, message| {
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
