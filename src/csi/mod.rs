//! The CSI client: talks to Container Storage Interface plugins over gRPC on unix sockets.
//!
//! # Contract
//!
//! - [`Client`] calls one plugin socket. Every call is synchronous and bounded by the deadline
//!   its caller gives (the plugin is told it too, as gRPC's `grpc-timeout`); a call that runs out
//!   ends in [`CsiError::Timeout`], and the caller is free again.
//! - Every failure names the plugin (its configured type), the RPC, and either the gRPC code and
//!   the plugin's own message, or what failed on the way (no connection, a broken connection, an
//!   answer without a field the specification requires).
//! - [`plugins`] reads the plugin configuration files (Mesos' `CSIPluginInfo`), refusing a bad
//!   file by name and field.
//! - [`proto`] holds the CSI v1 messages, written as prost derives with the specification's field
//!   numbers.
//!
//! # Threading
//!
//! gRPC here is tonic, which is async. Its executor (a tokio current-thread runtime) runs on one
//! thread owned by this layer, started on the first call and shared by every client; a call hands
//! its future to that thread and waits for the answer. Nothing async leaves this layer.
//!
//! # Must never
//!
//! Log or keep a secret (`secrets` fields), hold a caller past its deadline plus a bounded margin,
//! or retry a call on its own: whether a call may be repeated is the caller's decision (CSI calls
//! are idempotent, and the caller records what it asked before asking).

pub mod client;
pub mod plugins;
pub mod proto;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{Client, Rpc};
pub use plugins::{load_dir, PluginConfigError, PluginInfo};
pub use tonic::Code;

/// A failed CSI call; each names the plugin and the RPC.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// The plugin answered with a gRPC error.
    #[error("CSI plugin {plugin:?}: {rpc} failed with {}: {message}", code_name(*code))]
    Status {
        /// The plugin (its configured type).
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// The gRPC code.
        code: Code,
        /// The plugin's message.
        message: String,
    },
    /// No answer within the deadline.
    #[error("CSI plugin {plugin:?}: {rpc} did not answer within {:.1} s", after.as_secs_f64())]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// The deadline.
        after: Duration,
    },
    /// The socket could not be connected to: the plugin is not running (or not there).
    #[error("CSI plugin {plugin:?}: {rpc}: cannot connect to {}; is the plugin running?", socket.display())]
    Unreachable {
        /// The plugin.
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// Its socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed during the call (the plugin may have died).
    #[error("CSI plugin {plugin:?}: {rpc}: the connection to {} failed: {message}", socket.display())]
    Transport {
        /// The plugin.
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// Its socket.
        socket: PathBuf,
        /// What failed, with its causes.
        message: String,
    },
    /// An answer without something the specification requires.
    #[error("CSI plugin {plugin:?}: {rpc} answered without {what}")]
    BadAnswer {
        /// The plugin.
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// What is missing or wrong.
        what: String,
    },
    /// The layer's runtime thread could not be started.
    #[error("CSI plugin {plugin:?}: {rpc}: the CSI client thread could not be started: {message}")]
    Runtime {
        /// The plugin.
        plugin: String,
        /// The RPC.
        rpc: Rpc,
        /// Why.
        message: String,
    },
}

impl CsiError {
    /// The gRPC code the plugin answered, when it answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            CsiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the plugin may have gone away (no connection, or a broken one): what it said
    /// about itself before may no longer hold.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            CsiError::Unreachable { .. } | CsiError::Transport { .. }
        )
    }

    /// The RPC that failed.
    pub fn rpc(&self) -> Rpc {
        match self {
            CsiError::Status { rpc, .. }
            | CsiError::Timeout { rpc, .. }
            | CsiError::Unreachable { rpc, .. }
            | CsiError::Transport { rpc, .. }
            | CsiError::BadAnswer { rpc, .. }
            | CsiError::Runtime { rpc, .. } => *rpc,
        }
    }
}

/// The name gRPC gives a code (`NOT_FOUND`), as plugins' documentation and logs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
