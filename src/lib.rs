//! mesos-dvdi: external persistent volumes for Apache Mesos tasks.
//!
//! A Mesos agent isolator module (and the `dvdi` operator CLI) that gives a task the same volume back
//! wherever it lands. A task names volumes in its environment (`DVDI_VOLUME_NAME`, …) or as
//! `DOCKER_VOLUME` entries of its `ContainerInfo`; the isolator asks a storage backend to attach and
//! mount each one on the agent and hands Mesos bind mounts into the container's mount namespace.
//!
//! # Layers
//!
//! Each layer uses only the ones listed before it:
//!
//! - [`error`]: rendering an error with its whole `source()` chain, once, where it is reported.
//! - [`durable`]: files replaced whole (temp file, fsync, rename, directory fsync).
//! - [`spec`]: task input → validated [`spec::VolumeSpec`] list. Pure: no I/O, no syscalls.
//! - [`csi`]: the gRPC client of Container Storage Interface plugins, and their configuration
//!   files.
//! - [`config`]: module parameters and CLI flags → one [`config::Config`].
//! - [`mount`]: the only code that calls mount(2)/umount(2)/openat2(2), behind a trait.
//! - [`backend`]: one [`backend::Backend`] trait; the Docker volume plugin client, `dvdcli`, and
//!   the built-in `local` and `loop` drivers.
//! - [`state`]: the mount table: who uses which volume, checkpointed under per-volume flocks.
//! - [`legacy`]: the original module's checkpoint, imported into the mount table at recover.
//! - [`status`]: what an operator sees: the status and health JSON (`dvdi status`, the endpoints).
//! - [`metrics`]: the counters and gauges the agent publishes.
//! - [`pool`]: a bounded pool of threads for calls that may block for minutes; knows nothing of
//!   what they do.
//! - [`isolator`]: prepare / cleanup / recover, composing the layers above; owns the ordering that
//!   makes crashes safe.
//! - [`calls`]: the isolator's calls as the module makes them: each on the bounded pool, with its
//!   time limit to start, answered through a callback.
//!
//! Only the FFI bridge and the C++ shim know that Mesos exists.

pub mod backend;
pub mod calls;
pub mod config;
pub mod coord;
mod crash;
pub mod csi;
pub mod durable;
pub mod error;
pub mod ffi;
pub mod isolator;
pub mod legacy;
pub mod metrics;
pub mod mount;
pub mod pool;
pub mod spec;
pub mod state;
pub mod status;
