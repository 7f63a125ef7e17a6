//! One plugin socket, called synchronously; the gRPC machinery runs on this layer's own thread.
//!
//! A connection (HTTP/2 over the unix socket) is made on first use and kept; a closed one (the
//! plugin restarted) is replaced by a new one on the next call. A connection that fails to be made
//! is reported as such ([`CsiError::Unreachable`]), never as a gRPC code the plugin did not send.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper::http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;

use super::proto::*;
use super::CsiError;

/// How much longer than a call's deadline its caller waits for the runtime thread to report the
/// timeout itself (a thread busy elsewhere must not hold a caller for ever).
const MARGIN: Duration = Duration::from_secs(1);

/// The RPCs this client makes (and the test plugin serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    /// Identity: `GetPluginInfo`.
    GetPluginInfo,
    /// Identity: `GetPluginCapabilities`.
    GetPluginCapabilities,
    /// Identity: `Probe`.
    Probe,
    /// Controller: `CreateVolume`.
    CreateVolume,
    /// Controller: `DeleteVolume` (served by the test plugin; never called by this project).
    DeleteVolume,
    /// Controller: `ControllerPublishVolume`.
    ControllerPublishVolume,
    /// Controller: `ControllerUnpublishVolume`.
    ControllerUnpublishVolume,
    /// Controller: `ControllerGetCapabilities`.
    ControllerGetCapabilities,
    /// Node: `NodeStageVolume`.
    NodeStageVolume,
    /// Node: `NodeUnstageVolume`.
    NodeUnstageVolume,
    /// Node: `NodePublishVolume`.
    NodePublishVolume,
    /// Node: `NodeUnpublishVolume`.
    NodeUnpublishVolume,
    /// Node: `NodeGetCapabilities`.
    NodeGetCapabilities,
    /// Node: `NodeGetInfo`.
    NodeGetInfo,
}

impl Rpc {
    /// Every RPC, in the order of the specification's services.
    pub const ALL: [Rpc; 14] = [
        Rpc::GetPluginInfo,
        Rpc::GetPluginCapabilities,
        Rpc::Probe,
        Rpc::CreateVolume,
        Rpc::DeleteVolume,
        Rpc::ControllerPublishVolume,
        Rpc::ControllerUnpublishVolume,
        Rpc::ControllerGetCapabilities,
        Rpc::NodeStageVolume,
        Rpc::NodeUnstageVolume,
        Rpc::NodePublishVolume,
        Rpc::NodeUnpublishVolume,
        Rpc::NodeGetCapabilities,
        Rpc::NodeGetInfo,
    ];

    /// The method's name, as in the specification.
    pub fn name(self) -> &'static str {
        self.path().rsplit('/').next().unwrap_or_default()
    }

    /// The gRPC path: `/csi.v1.<Service>/<Method>`.
    pub fn path(self) -> &'static str {
        match self {
            Rpc::GetPluginInfo => "/csi.v1.Identity/GetPluginInfo",
            Rpc::GetPluginCapabilities => "/csi.v1.Identity/GetPluginCapabilities",
            Rpc::Probe => "/csi.v1.Identity/Probe",
            Rpc::CreateVolume => "/csi.v1.Controller/CreateVolume",
            Rpc::DeleteVolume => "/csi.v1.Controller/DeleteVolume",
            Rpc::ControllerPublishVolume => "/csi.v1.Controller/ControllerPublishVolume",
            Rpc::ControllerUnpublishVolume => "/csi.v1.Controller/ControllerUnpublishVolume",
            Rpc::ControllerGetCapabilities => "/csi.v1.Controller/ControllerGetCapabilities",
            Rpc::NodeStageVolume => "/csi.v1.Node/NodeStageVolume",
            Rpc::NodeUnstageVolume => "/csi.v1.Node/NodeUnstageVolume",
            Rpc::NodePublishVolume => "/csi.v1.Node/NodePublishVolume",
            Rpc::NodeUnpublishVolume => "/csi.v1.Node/NodeUnpublishVolume",
            Rpc::NodeGetCapabilities => "/csi.v1.Node/NodeGetCapabilities",
            Rpc::NodeGetInfo => "/csi.v1.Node/NodeGetInfo",
        }
    }

    /// The RPC served at a gRPC path.
    pub fn from_path(path: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|r| r.path() == path)
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The layer's runtime, started once; an error start is kept and reported by every call.
static RUNTIME: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();

fn runtime() -> Result<&'static tokio::runtime::Handle, String> {
    RUNTIME
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("dvdi-csi".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            // Drives every call's future for the life of the process; it holds
                            // nothing but idle connections between calls.
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            rx.recv()
                .map_err(|_| "the thread ended before it started".to_owned())?
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A connection to one socket, shared by the calls on it.
#[derive(Debug)]
struct Connection {
    socket: PathBuf,
    sender: Mutex<Option<SendRequest<Body>>>,
}

impl Connection {
    /// The open connection, or a new one when there is none or it closed.
    async fn sender(&self) -> std::io::Result<SendRequest<Body>> {
        if let Some(s) = lock(&self.sender).as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let stream = tokio::net::UnixStream::connect(&self.socket).await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        // The connection's own task: it ends when the plugin closes it or the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *lock(&self.sender) = Some(sender.clone());
        Ok(sender)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tower service tonic's client sends through: one HTTP/2 connection.
#[derive(Clone)]
struct Http2(SendRequest<Body>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<hyper::Request<Body>> for Http2 {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: hyper::Request<Body>) -> Self::Future {
        let fut = self.0.send_request(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A client of one CSI plugin socket (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Client {
    plugin: String,
    conn: Arc<Connection>,
}

/// What one call gave: an answer, a failure to connect, or a gRPC status.
enum Outcome<T> {
    Answer(T),
    Unreachable(std::io::Error),
    Status(tonic::Status),
}

impl Client {
    /// A client of the plugin `plugin` (named so in errors) at the unix socket `socket`. Nothing
    /// is connected until the first call.
    pub fn new(plugin: impl Into<String>, socket: impl Into<PathBuf>) -> Self {
        Self {
            plugin: plugin.into(),
            conn: Arc::new(Connection {
                socket: socket.into(),
                sender: Mutex::new(None),
            }),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.conn.socket
    }

    /// The plugin's name in errors.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Makes one call of `rpc` with `request`, answered within `timeout`.
    pub fn call<Req, Resp>(
        &self,
        rpc: Rpc,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, CsiError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let handle = runtime().map_err(|message| CsiError::Runtime {
            plugin: self.plugin.clone(),
            rpc,
            message,
        })?;
        let conn = Arc::clone(&self.conn);
        let (tx, rx) = mpsc::sync_channel(1);
        handle.spawn(async move {
            let call = async {
                let sender = match conn.sender().await {
                    Ok(s) => s,
                    Err(e) => return Outcome::Unreachable(e),
                };
                let mut grpc = tonic::client::Grpc::with_origin(
                    Http2(sender),
                    hyper::Uri::from_static("http://localhost"),
                );
                let mut request = tonic::Request::new(request);
                request.set_timeout(timeout);
                if let Err(e) = grpc.ready().await {
                    return Outcome::Status(tonic::Status::from_error(e));
                }
                let path = PathAndQuery::from_static(rpc.path());
                match grpc
                    .unary(
                        request,
                        path,
                        tonic_prost::ProstCodec::<Req, Resp>::default(),
                    )
                    .await
                {
                    Ok(r) => Outcome::Answer(r.into_inner()),
                    Err(s) => Outcome::Status(s),
                }
            };
            let _ = tx.send(tokio::time::timeout(timeout, call).await.ok());
        });
        let outcome = rx
            .recv_timeout(timeout + MARGIN)
            .ok()
            .flatten()
            .ok_or_else(|| CsiError::Timeout {
                plugin: self.plugin.clone(),
                rpc,
                after: timeout,
            })?;
        match outcome {
            Outcome::Answer(r) => Ok(r),
            Outcome::Unreachable(source) => Err(CsiError::Unreachable {
                plugin: self.plugin.clone(),
                rpc,
                socket: self.conn.socket.clone(),
                source,
            }),
            Outcome::Status(status) => Err(self.status_error(rpc, timeout, status)),
        }
    }

    /// A status as an error. tonic reports a failed exchange as a status with its cause
    /// attached (a status the plugin sent has none): that is a broken connection, not the
    /// plugin's word.
    fn status_error(&self, rpc: Rpc, timeout: Duration, status: tonic::Status) -> CsiError {
        if let Some(cause) = std::error::Error::source(&status) {
            *lock(&self.conn.sender) = None;
            return CsiError::Transport {
                plugin: self.plugin.clone(),
                rpc,
                socket: self.conn.socket.clone(),
                message: crate::error::render_chain(cause),
            };
        }
        if status.code() == tonic::Code::DeadlineExceeded && status.message().is_empty() {
            return CsiError::Timeout {
                plugin: self.plugin.clone(),
                rpc,
                after: timeout,
            };
        }
        CsiError::Status {
            plugin: self.plugin.clone(),
            rpc,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    fn bad(&self, rpc: Rpc, what: &str) -> CsiError {
        CsiError::BadAnswer {
            plugin: self.plugin.clone(),
            rpc,
            what: what.to_owned(),
        }
    }

    /// `GetPluginInfo`; the answer has a name.
    pub fn get_plugin_info(&self, timeout: Duration) -> Result<GetPluginInfoResponse, CsiError> {
        let rpc = Rpc::GetPluginInfo;
        let info: GetPluginInfoResponse = self.call(rpc, GetPluginInfoRequest {}, timeout)?;
        if info.name.is_empty() {
            return Err(self.bad(rpc, "a plugin name"));
        }
        Ok(info)
    }

    /// `GetPluginCapabilities`: the services the plugin offers.
    pub fn get_plugin_capabilities(
        &self,
        timeout: Duration,
    ) -> Result<Vec<plugin_capability::ServiceType>, CsiError> {
        let caps: GetPluginCapabilitiesResponse = self.call(
            Rpc::GetPluginCapabilities,
            GetPluginCapabilitiesRequest {},
            timeout,
        )?;
        Ok(caps
            .capabilities
            .iter()
            .filter_map(|c| match c.r#type {
                Some(plugin_capability::Type::Service(s)) => {
                    plugin_capability::ServiceType::try_from(s.r#type).ok()
                }
                None => None,
            })
            .collect())
    }

    /// `Probe`: whether the plugin is ready (an answer without readiness means ready).
    pub fn probe(&self, timeout: Duration) -> Result<bool, CsiError> {
        let answer: ProbeResponse = self.call(Rpc::Probe, ProbeRequest {}, timeout)?;
        Ok(answer.ready.is_none_or(|r| r.value))
    }

    /// `ControllerGetCapabilities`: the controller RPCs the plugin offers.
    pub fn controller_capabilities(
        &self,
        timeout: Duration,
    ) -> Result<Vec<controller_service_capability::RpcType>, CsiError> {
        let caps: ControllerGetCapabilitiesResponse = self.call(
            Rpc::ControllerGetCapabilities,
            ControllerGetCapabilitiesRequest {},
            timeout,
        )?;
        Ok(caps
            .capabilities
            .iter()
            .filter_map(|c| match c.r#type {
                Some(controller_service_capability::Type::Rpc(r)) => {
                    controller_service_capability::RpcType::try_from(r.r#type).ok()
                }
                None => None,
            })
            .collect())
    }

    /// `NodeGetCapabilities`: the node RPCs the plugin offers.
    pub fn node_capabilities(
        &self,
        timeout: Duration,
    ) -> Result<Vec<node_service_capability::RpcType>, CsiError> {
        let caps: NodeGetCapabilitiesResponse = self.call(
            Rpc::NodeGetCapabilities,
            NodeGetCapabilitiesRequest {},
            timeout,
        )?;
        Ok(caps
            .capabilities
            .iter()
            .filter_map(|c| match c.r#type {
                Some(node_service_capability::Type::Rpc(r)) => {
                    node_service_capability::RpcType::try_from(r.r#type).ok()
                }
                None => None,
            })
            .collect())
    }

    /// `NodeGetInfo`: this node's id (never empty).
    pub fn node_id(&self, timeout: Duration) -> Result<String, CsiError> {
        let rpc = Rpc::NodeGetInfo;
        let info: NodeGetInfoResponse = self.call(rpc, NodeGetInfoRequest {}, timeout)?;
        if info.node_id.is_empty() {
            return Err(self.bad(rpc, "a node id"));
        }
        Ok(info.node_id)
    }

    /// `CreateVolume`: the volume, with its id (never empty).
    pub fn create_volume(
        &self,
        request: CreateVolumeRequest,
        timeout: Duration,
    ) -> Result<Volume, CsiError> {
        let rpc = Rpc::CreateVolume;
        let answer: CreateVolumeResponse = self.call(rpc, request, timeout)?;
        match answer.volume {
            Some(v) if !v.volume_id.is_empty() => Ok(v),
            _ => Err(self.bad(rpc, "a volume id")),
        }
    }

    /// `ControllerPublishVolume`: the publish context for the node's calls.
    pub fn controller_publish(
        &self,
        request: ControllerPublishVolumeRequest,
        timeout: Duration,
    ) -> Result<ControllerPublishVolumeResponse, CsiError> {
        self.call(Rpc::ControllerPublishVolume, request, timeout)
    }

    /// `ControllerUnpublishVolume`.
    pub fn controller_unpublish(
        &self,
        request: ControllerUnpublishVolumeRequest,
        timeout: Duration,
    ) -> Result<(), CsiError> {
        self.call::<_, ControllerUnpublishVolumeResponse>(
            Rpc::ControllerUnpublishVolume,
            request,
            timeout,
        )
        .map(drop)
    }

    /// `NodeStageVolume`.
    pub fn node_stage(
        &self,
        request: NodeStageVolumeRequest,
        timeout: Duration,
    ) -> Result<(), CsiError> {
        self.call::<_, NodeStageVolumeResponse>(Rpc::NodeStageVolume, request, timeout)
            .map(drop)
    }

    /// `NodeUnstageVolume`.
    pub fn node_unstage(
        &self,
        request: NodeUnstageVolumeRequest,
        timeout: Duration,
    ) -> Result<(), CsiError> {
        self.call::<_, NodeUnstageVolumeResponse>(Rpc::NodeUnstageVolume, request, timeout)
            .map(drop)
    }

    /// `NodePublishVolume`.
    pub fn node_publish(
        &self,
        request: NodePublishVolumeRequest,
        timeout: Duration,
    ) -> Result<(), CsiError> {
        self.call::<_, NodePublishVolumeResponse>(Rpc::NodePublishVolume, request, timeout)
            .map(drop)
    }

    /// `NodeUnpublishVolume`.
    pub fn node_unpublish(
        &self,
        request: NodeUnpublishVolumeRequest,
        timeout: Duration,
    ) -> Result<(), CsiError> {
        self.call::<_, NodeUnpublishVolumeResponse>(Rpc::NodeUnpublishVolume, request, timeout)
            .map(drop)
    }
}
