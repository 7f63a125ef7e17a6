//! A CSI plugin served from inside the test process, behaving as Kubernetes' reference plugin
//! (`csi-driver-host-path`) was measured to: a test double of a real plugin, which exists to be
//! told per RPC to fail with a code, hang or answer wrong, and to record every call.
//!
//! What it does, as the reference plugin does:
//! - Controller: `CREATE_DELETE_VOLUME`; `PUBLISH_UNPUBLISH_VOLUME` only when asked
//!   ([`Options::controller_publish`]). CreateVolume with a known name returns the same id; with
//!   another size, `ALREADY_EXISTS`. Each volume is a directory under the plugin's own root.
//! - Node: `STAGE_UNSTAGE_VOLUME` (unless [`Options::stage_unstage`] is off). NodeStage records
//!   the volume as staged and leaves the staging path alone (it must exist: the caller makes it);
//!   NodePublish before NodeStage fails `FAILED_PRECONDITION`; NodePublish creates the target
//!   directory (its parent must exist), bind-mounts the volume there (read-only when asked) and
//!   fails on a target that is a regular file; NodeUnpublish unmounts and removes the target;
//!   NodeUnstage while published fails `FAILED_PRECONDITION`; an unknown volume id is
//!   `NOT_FOUND`.
//! - With `PUBLISH_UNPUBLISH_VOLUME`, NodeStage also wants the volume attached to this node first
//!   (`FAILED_PRECONDITION`), so the order of the caller's calls is checked.
//!
//! The server (hyper's HTTP/2 on a unix socket, with the routing written here: each gRPC path to
//! tonic's unary handler with the prost codec) runs on a thread and runtime of its own, inside the
//! mount namespace of the thread that started it, so its mounts are where the test looks. Dropping
//! it stops the server and unmounts whatever it still has mounted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fs;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesos_dvdi::csi::proto::*;
use mesos_dvdi::csi::{Code, Rpc};
use mesos_dvdi::mount::{Host, MntFlags, Mounter, MsFlags};
use tonic::{Request, Response, Status};

/// What the plugin offers.
#[derive(Debug, Clone)]
pub struct Options {
    /// `GetPluginInfo`'s name.
    pub name: String,
    /// `NodeGetInfo`'s node id.
    pub node_id: String,
    /// Whether it has a Controller service at all.
    pub controller: bool,
    /// Controller `PUBLISH_UNPUBLISH_VOLUME` (the reference plugin has not).
    pub controller_publish: bool,
    /// Node `STAGE_UNSTAGE_VOLUME` (the reference plugin has).
    pub stage_unstage: bool,
    /// Node and controller `SINGLE_NODE_MULTI_WRITER`.
    pub single_node_multi_writer: bool,
    /// What `Probe` answers.
    pub ready: bool,
    /// Whether NodePublish bind-mounts the volume (off: it only makes the target directory, an
    /// answer at once for benchmarks of the caller's own cost).
    pub mount: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: "hostpath.csi.k8s.io".into(),
            node_id: "node-1".into(),
            controller: true,
            controller_publish: false,
            stage_unstage: true,
            single_node_multi_writer: false,
            ready: true,
            mount: true,
        }
    }
}

/// What the plugin does instead of its job for one RPC.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fail with this code and message.
    Fail(Code, String),
    /// Never answer (until the plugin is dropped).
    Hang,
    /// Answer at once with an empty answer, doing nothing: required fields missing, or success
    /// claimed for work not done.
    Wrong,
}

/// One call as the plugin saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// The RPC.
    pub rpc: Option<Rpc>,
    /// `name` (CreateVolume).
    pub name: String,
    /// `volume_id`.
    pub volume_id: String,
    /// `node_id` (controller calls).
    pub node_id: String,
    /// `staging_target_path`.
    pub staging: String,
    /// `target_path`.
    pub target: String,
    /// `readonly`.
    pub readonly: bool,
    /// `capacity_range.required_bytes` (CreateVolume).
    pub required_bytes: i64,
    /// `parameters` (CreateVolume).
    pub parameters: BTreeMap<String, String>,
    /// The access mode of the volume capability (`volume_capabilities[0]` for CreateVolume).
    pub access_mode: Option<i32>,
    /// The file system type of the volume capability.
    pub fs_type: String,
    /// The mount flags of the volume capability.
    pub mount_flags: Vec<String>,
    /// `volume_context` (node calls).
    pub volume_context: BTreeMap<String, String>,
    /// `secrets` (node stage and publish): a real plugin would use them, so the test can check
    /// they arrived.
    pub secrets: BTreeMap<String, String>,
    /// The publish context passed (node calls).
    pub publish_context: BTreeMap<String, String>,
}

struct Volume {
    name: String,
    required_bytes: i64,
    dir: PathBuf,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    faults: HashMap<Rpc, Fault>,
    volumes: BTreeMap<String, Volume>,
    next_id: u32,
    attached: BTreeSet<(String, String)>,
    staged: BTreeMap<String, String>,
    /// target → volume id.
    published: BTreeMap<String, String>,
}

struct Shared {
    options: Options,
    root: PathBuf,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running test plugin (see the module docs).
pub struct CsiPlugin {
    shared: Arc<Shared>,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CsiPlugin {
    /// Starts a plugin listening on `socket`, keeping its volumes under `root`.
    pub fn start(socket: &Path, root: &Path, options: Options) -> Self {
        fs::create_dir_all(root.join("volumes")).unwrap();
        let shared = Arc::new(Shared {
            options,
            root: root.to_owned(),
            state: Mutex::default(),
        });
        let ns: OwnedFd = fs::File::open("/proc/thread-self/ns/mnt").unwrap().into();
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("csi-test-plugin".into())
            .spawn(move || {
                // Into the starting thread's mount namespace (which needs an fs context of its
                // own first), so the mounts made here are the ones the test sees.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(Arc::clone(&server), listener, stopped, ready_tx));
                drop(rt);
                server.unmount_all();
            })
            .unwrap();
        ready_rx.recv().unwrap();
        Self {
            shared,
            socket: socket.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// From now on, `rpc` does `fault` instead of its job.
    pub fn fault(&self, rpc: Rpc, fault: Fault) {
        lock(&self.shared.state).faults.insert(rpc, fault);
    }

    /// From now on, `rpc` fails with `code` and `message`.
    pub fn fail(&self, rpc: Rpc, code: Code, message: &str) {
        self.fault(rpc, Fault::Fail(code, message.to_owned()));
    }

    /// `rpc` does its job again.
    pub fn heal(&self, rpc: Rpc) {
        lock(&self.shared.state).faults.remove(&rpc);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared.state).calls.clone()
    }

    /// The RPCs called so far, in order.
    pub fn rpcs(&self) -> Vec<Rpc> {
        self.calls().iter().filter_map(|c| c.rpc).collect()
    }

    /// How many times `rpc` was called.
    pub fn count(&self, rpc: Rpc) -> usize {
        self.rpcs().iter().filter(|r| **r == rpc).count()
    }

    /// The calls of volume-changing RPCs (not the identity and capability questions), in order.
    pub fn lifecycle(&self) -> Vec<Rpc> {
        self.rpcs()
            .into_iter()
            .filter(|r| {
                matches!(
                    r,
                    Rpc::CreateVolume
                        | Rpc::DeleteVolume
                        | Rpc::ControllerPublishVolume
                        | Rpc::ControllerUnpublishVolume
                        | Rpc::NodeStageVolume
                        | Rpc::NodeUnstageVolume
                        | Rpc::NodePublishVolume
                        | Rpc::NodeUnpublishVolume
                )
            })
            .collect()
    }

    /// Creates the volume `name` as an operator would, before any task names it (a mount-access
    /// single-node-writer volume, through the real client as plugin type `plugin_type`), forgets
    /// that call, and returns the volume's id.
    pub fn provision(&self, plugin_type: &str, name: &str) -> String {
        let made = mesos_dvdi::csi::Client::new(plugin_type, self.socket())
            .create_volume(
                CreateVolumeRequest {
                    name: name.into(),
                    volume_capabilities: vec![VolumeCapability {
                        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
                        access_mode: Some(volume_capability::AccessMode { mode: 1 }),
                    }],
                    ..Default::default()
                },
                std::time::Duration::from_secs(10),
            )
            .unwrap();
        self.clear_calls();
        made.volume_id
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        lock(&self.shared.state).calls.clear();
    }

    /// The data directory of the volume with this id.
    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.shared.root.join("volumes").join(id)
    }

    /// The ids of the volumes it has, by name.
    pub fn volumes(&self) -> BTreeMap<String, String> {
        lock(&self.shared.state)
            .volumes
            .iter()
            .map(|(id, v)| (v.name.clone(), id.clone()))
            .collect()
    }

    /// Volume ids staged now.
    pub fn staged(&self) -> Vec<String> {
        lock(&self.shared.state).staged.keys().cloned().collect()
    }

    /// Targets published now.
    pub fn published(&self) -> Vec<String> {
        lock(&self.shared.state).published.keys().cloned().collect()
    }

    /// (volume id, node id) pairs attached now.
    pub fn attached(&self) -> Vec<(String, String)> {
        lock(&self.shared.state).attached.iter().cloned().collect()
    }

    /// Whether nothing is attached, staged or published.
    pub fn is_idle(&self) -> bool {
        let s = lock(&self.shared.state);
        s.attached.is_empty() && s.staged.is_empty() && s.published.is_empty()
    }

    /// A Mesos `CSIPluginInfo` file for this plugin under `type` in `dir`, listing its socket
    /// for the node service (and the controller service, when it has one).
    pub fn write_config(&self, dir: &Path, plugin_type: &str) -> PathBuf {
        let mut endpoints = vec![serde_json::json!({
            "csi_service": "NODE_SERVICE",
            "endpoint": format!("unix://{}", self.socket.display()),
        })];
        if self.shared.options.controller {
            endpoints.push(serde_json::json!({
                "csi_service": "CONTROLLER_SERVICE",
                "endpoint": format!("unix://{}", self.socket.display()),
            }));
        }
        fs::create_dir_all(dir).unwrap();
        let file = dir.join(format!("{plugin_type}.json"));
        fs::write(
            &file,
            serde_json::json!({"type": plugin_type, "endpoints": endpoints}).to_string(),
        )
        .unwrap();
        file
    }
}

impl Drop for CsiPlugin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

async fn serve(
    shared: Arc<Shared>,
    listener: std::os::unix::net::UnixListener,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    ready.send(()).unwrap();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let router = Router(Arc::clone(&shared));
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), router)
                        .await;
                });
            }
        }
    }
}

/// Routes each gRPC path to its handler.
#[derive(Clone)]
struct Router(Arc<Shared>);

type Reply = hyper::Response<tonic::body::Body>;

impl hyper::service::Service<hyper::Request<Incoming>> for Router {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let s = Arc::clone(&self.0);
        Box::pin(async move {
            let Some(rpc) = Rpc::from_path(req.uri().path()) else {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            };
            Ok(match rpc {
                Rpc::GetPluginInfo => unary(s, rpc, req, Shared::plugin_info).await,
                Rpc::GetPluginCapabilities => unary(s, rpc, req, Shared::plugin_caps).await,
                Rpc::Probe => unary(s, rpc, req, Shared::probe).await,
                Rpc::CreateVolume => unary(s, rpc, req, Shared::create).await,
                Rpc::DeleteVolume => unary(s, rpc, req, Shared::delete).await,
                Rpc::ControllerPublishVolume => unary(s, rpc, req, Shared::attach).await,
                Rpc::ControllerUnpublishVolume => unary(s, rpc, req, Shared::detach).await,
                Rpc::ControllerGetCapabilities => unary(s, rpc, req, Shared::controller_caps).await,
                Rpc::NodeStageVolume => unary(s, rpc, req, Shared::stage).await,
                Rpc::NodeUnstageVolume => unary(s, rpc, req, Shared::unstage).await,
                Rpc::NodePublishVolume => unary(s, rpc, req, Shared::publish).await,
                Rpc::NodeUnpublishVolume => unary(s, rpc, req, Shared::unpublish).await,
                Rpc::NodeGetCapabilities => unary(s, rpc, req, Shared::node_caps).await,
                Rpc::NodeGetInfo => unary(s, rpc, req, Shared::node_info).await,
            })
        })
    }
}

type Handler<Req, Resp> = fn(&Shared, Req, &mut Call) -> Result<Resp, Status>;

/// One RPC's handler as tonic's unary service: records the call, then does the fault set for
/// the RPC or the handler's work.
struct Unary<Req, Resp> {
    shared: Arc<Shared>,
    rpc: Rpc,
    handler: Handler<Req, Resp>,
}

impl<Req, Resp> tower_service::Service<Request<Req>> for Unary<Req, Resp>
where
    Req: Send + 'static,
    Resp: Default + Send + 'static,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Req>) -> Self::Future {
        let (shared, rpc, handler) = (Arc::clone(&self.shared), self.rpc, self.handler);
        Box::pin(async move {
            let fault = lock(&shared.state).faults.get(&rpc).cloned();
            let mut call = Call {
                rpc: Some(rpc),
                ..Call::default()
            };
            let result = match fault {
                Some(Fault::Fail(code, message)) => Err(Status::new(code, message)),
                Some(Fault::Wrong) => Ok(Resp::default()),
                Some(Fault::Hang) => {
                    lock(&shared.state).calls.push(call);
                    return std::future::pending().await;
                }
                None => handler(&shared, req.into_inner(), &mut call),
            };
            lock(&shared.state).calls.push(call);
            result.map(Response::new)
        })
    }
}

async fn unary<Req, Resp>(
    shared: Arc<Shared>,
    rpc: Rpc,
    req: hyper::Request<Incoming>,
    handler: Handler<Req, Resp>,
) -> Reply
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(
        Unary {
            shared,
            rpc,
            handler,
        },
        req,
    )
    .await
}

fn capability_of(call: &mut Call, cap: Option<&VolumeCapability>) -> Result<(), Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument("volume capability missing"))?;
    call.access_mode = cap.access_mode.map(|m| m.mode);
    if let Some(volume_capability::AccessType::Mount(m)) = &cap.access_type {
        call.fs_type = m.fs_type.clone();
        call.mount_flags = m.mount_flags.clone();
    }
    if call.access_mode.is_none() {
        return Err(Status::invalid_argument("access mode missing"));
    }
    Ok(())
}

impl Shared {
    fn plugin_info(
        &self,
        _: GetPluginInfoRequest,
        _: &mut Call,
    ) -> Result<GetPluginInfoResponse, Status> {
        Ok(GetPluginInfoResponse {
            name: self.options.name.clone(),
            vendor_version: "test".into(),
            manifest: BTreeMap::new(),
        })
    }

    fn plugin_caps(
        &self,
        _: GetPluginCapabilitiesRequest,
        _: &mut Call,
    ) -> Result<GetPluginCapabilitiesResponse, Status> {
        let service = |t: plugin_capability::ServiceType| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let mut capabilities = Vec::new();
        if self.options.controller {
            capabilities.push(service(plugin_capability::ServiceType::ControllerService));
        }
        Ok(GetPluginCapabilitiesResponse { capabilities })
    }

    fn probe(&self, _: ProbeRequest, _: &mut Call) -> Result<ProbeResponse, Status> {
        Ok(ProbeResponse {
            ready: Some(BoolValue {
                value: self.options.ready,
            }),
        })
    }

    fn controller_caps(
        &self,
        _: ControllerGetCapabilitiesRequest,
        _: &mut Call,
    ) -> Result<ControllerGetCapabilitiesResponse, Status> {
        use controller_service_capability::RpcType;
        if !self.options.controller {
            return Err(Status::unimplemented("no controller service"));
        }
        let mut types = vec![RpcType::CreateDeleteVolume];
        if self.options.controller_publish {
            types.push(RpcType::PublishUnpublishVolume);
        }
        if self.options.single_node_multi_writer {
            types.push(RpcType::SingleNodeMultiWriter);
        }
        Ok(ControllerGetCapabilitiesResponse {
            capabilities: types
                .into_iter()
                .map(|t| ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc { r#type: t as i32 },
                    )),
                })
                .collect(),
        })
    }

    fn node_caps(
        &self,
        _: NodeGetCapabilitiesRequest,
        _: &mut Call,
    ) -> Result<NodeGetCapabilitiesResponse, Status> {
        use node_service_capability::RpcType;
        let mut types = Vec::new();
        if self.options.stage_unstage {
            types.push(RpcType::StageUnstageVolume);
        }
        if self.options.single_node_multi_writer {
            types.push(RpcType::SingleNodeMultiWriter);
        }
        Ok(NodeGetCapabilitiesResponse {
            capabilities: types
                .into_iter()
                .map(|t| NodeServiceCapability {
                    r#type: Some(node_service_capability::Type::Rpc(
                        node_service_capability::Rpc { r#type: t as i32 },
                    )),
                })
                .collect(),
        })
    }

    fn node_info(
        &self,
        _: NodeGetInfoRequest,
        _: &mut Call,
    ) -> Result<NodeGetInfoResponse, Status> {
        Ok(NodeGetInfoResponse {
            node_id: self.options.node_id.clone(),
            max_volumes_per_node: 0,
        })
    }

    fn create(
        &self,
        req: CreateVolumeRequest,
        call: &mut Call,
    ) -> Result<CreateVolumeResponse, Status> {
        call.name = req.name.clone();
        call.parameters = req.parameters.clone();
        let required = req.capacity_range.map_or(0, |c| c.required_bytes);
        call.required_bytes = required;
        capability_of(call, req.volume_capabilities.first())?;
        if !self.options.controller {
            return Err(Status::unimplemented("no controller service"));
        }
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name missing"));
        }
        let mut s = lock(&self.state);
        if let Some((id, v)) = s.volumes.iter().find(|(_, v)| v.name == req.name) {
            if v.required_bytes != required {
                return Err(Status::already_exists(format!(
                    "volume {} exists with another size ({} bytes, not {required})",
                    req.name, v.required_bytes
                )));
            }
            return Ok(CreateVolumeResponse {
                volume: Some(mesos_dvdi::csi::proto::Volume {
                    capacity_bytes: required,
                    volume_id: id.clone(),
                    volume_context: BTreeMap::from([("name".into(), req.name)]),
                }),
            });
        }
        s.next_id += 1;
        let id = format!("vol-{}", s.next_id);
        let dir = self.root.join("volumes").join(&id);
        fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        s.volumes.insert(
            id.clone(),
            Volume {
                name: req.name.clone(),
                required_bytes: required,
                dir,
            },
        );
        Ok(CreateVolumeResponse {
            volume: Some(mesos_dvdi::csi::proto::Volume {
                capacity_bytes: required,
                volume_id: id,
                volume_context: BTreeMap::from([("name".into(), req.name)]),
            }),
        })
    }

    fn delete(
        &self,
        req: DeleteVolumeRequest,
        call: &mut Call,
    ) -> Result<DeleteVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        if let Some(v) = lock(&self.state).volumes.remove(&req.volume_id) {
            let _ = fs::remove_dir_all(v.dir);
        }
        Ok(DeleteVolumeResponse {})
    }

    fn known(&self, s: &State, id: &str) -> Result<(), Status> {
        if s.volumes.contains_key(id) {
            Ok(())
        } else {
            Err(Status::not_found(format!("volume id {id} does not exist")))
        }
    }

    fn attach(
        &self,
        req: ControllerPublishVolumeRequest,
        call: &mut Call,
    ) -> Result<ControllerPublishVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.node_id = req.node_id.clone();
        call.readonly = req.readonly;
        capability_of(call, req.volume_capability.as_ref())?;
        if !self.options.controller_publish {
            return Err(Status::unimplemented(
                "ControllerPublishVolume is not supported",
            ));
        }
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        if req.node_id != self.options.node_id {
            return Err(Status::not_found(format!(
                "node {} does not exist",
                req.node_id
            )));
        }
        s.attached.insert((req.volume_id.clone(), req.node_id));
        Ok(ControllerPublishVolumeResponse {
            publish_context: BTreeMap::from([("device".into(), req.volume_id)]),
        })
    }

    fn detach(
        &self,
        req: ControllerUnpublishVolumeRequest,
        call: &mut Call,
    ) -> Result<ControllerUnpublishVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.node_id = req.node_id.clone();
        if !self.options.controller_publish {
            return Err(Status::unimplemented(
                "ControllerUnpublishVolume is not supported",
            ));
        }
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        s.attached.remove(&(req.volume_id, req.node_id));
        Ok(ControllerUnpublishVolumeResponse {})
    }

    fn stage(
        &self,
        req: NodeStageVolumeRequest,
        call: &mut Call,
    ) -> Result<NodeStageVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.staging = req.staging_target_path.clone();
        call.publish_context = req.publish_context.clone();
        call.volume_context = req.volume_context.clone();
        call.secrets = req.secrets.clone();
        capability_of(call, req.volume_capability.as_ref())?;
        if !self.options.stage_unstage {
            return Err(Status::unimplemented("NodeStageVolume is not supported"));
        }
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        if self.options.controller_publish
            && !s
                .attached
                .contains(&(req.volume_id.clone(), self.options.node_id.clone()))
        {
            return Err(Status::failed_precondition(format!(
                "volume {} is not attached to this node",
                req.volume_id
            )));
        }
        if !Path::new(&req.staging_target_path).is_dir() {
            return Err(Status::invalid_argument(format!(
                "staging path {} does not exist",
                req.staging_target_path
            )));
        }
        s.staged.insert(req.volume_id, req.staging_target_path);
        Ok(NodeStageVolumeResponse {})
    }

    fn unstage(
        &self,
        req: NodeUnstageVolumeRequest,
        call: &mut Call,
    ) -> Result<NodeUnstageVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.staging = req.staging_target_path.clone();
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        if s.published.values().any(|id| *id == req.volume_id) {
            return Err(Status::failed_precondition(format!(
                "volume {} is still published",
                req.volume_id
            )));
        }
        s.staged.remove(&req.volume_id);
        Ok(NodeUnstageVolumeResponse {})
    }

    fn publish(
        &self,
        req: NodePublishVolumeRequest,
        call: &mut Call,
    ) -> Result<NodePublishVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.staging = req.staging_target_path.clone();
        call.target = req.target_path.clone();
        call.readonly = req.readonly;
        call.publish_context = req.publish_context.clone();
        call.volume_context = req.volume_context.clone();
        call.secrets = req.secrets.clone();
        capability_of(call, req.volume_capability.as_ref())?;
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        if self.options.stage_unstage && !s.staged.contains_key(&req.volume_id) {
            return Err(Status::failed_precondition(format!(
                "volume {} must be staged before it is published",
                req.volume_id
            )));
        }
        if s.published.contains_key(&req.target_path) {
            return Ok(NodePublishVolumeResponse {});
        }
        let target = Path::new(&req.target_path);
        if target.is_file() {
            return Err(Status::failed_precondition(format!(
                "target {} is a file",
                req.target_path
            )));
        }
        fs::create_dir(target)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| Status::internal(format!("mkdir {}: {e}", req.target_path)))?;
        if !self.options.mount {
            s.published.insert(req.target_path, req.volume_id);
            return Ok(NodePublishVolumeResponse {});
        }
        let source = &s.volumes[&req.volume_id].dir;
        let internal = |e: mesos_dvdi::mount::MountError| Status::internal(e.to_string());
        Host.mount(source, target, None, MsFlags::MS_BIND, None)
            .map_err(internal)?;
        if req.readonly {
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = Host.mount(Path::new("none"), target, None, ro, None) {
                let _ = Host.umount(target, MntFlags::MNT_DETACH);
                return Err(internal(e));
            }
        }
        s.published.insert(req.target_path, req.volume_id);
        Ok(NodePublishVolumeResponse {})
    }

    fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
        call: &mut Call,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        call.volume_id = req.volume_id.clone();
        call.target = req.target_path.clone();
        let mut s = lock(&self.state);
        self.known(&s, &req.volume_id)?;
        if s.published.remove(&req.target_path).is_some() && self.options.mount {
            Host.umount(Path::new(&req.target_path), MntFlags::empty())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        match fs::remove_dir(&req.target_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Status::internal(format!("rmdir {}: {e}", req.target_path)))
            }
            _ => {}
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// Unmounts every target still published (the plugin is going away with the test).
    fn unmount_all(&self) {
        let mut s = lock(&self.state);
        let published = std::mem::take(&mut s.published);
        if !self.options.mount {
            return;
        }
        for target in published.into_keys() {
            let _ = Host.umount(Path::new(&target), MntFlags::MNT_DETACH);
        }
    }
}
