//! Resolution: a task's environment and `DOCKER_VOLUME` entries → validated [`VolumeSpec`]s.

use super::{DockerVolumeInput, ResolveOptions, VolumeSpec};

/// What resolution produced: the volumes, in a stable order, and warnings for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The volumes: environment form first (index order: none, 1…9), then `DOCKER_VOLUME`s.
    pub volumes: Vec<VolumeSpec>,
    /// Things ignored on purpose (e.g. `DVDI_VOLUME_DVDCLI` when not allowed).
    pub warnings: Vec<SpecWarning>,
}

/// A task input that was ignored on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecWarning {}

/// A task input that breaks the contract; the message names the variable or field, the value and
/// what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {}

/// Resolves a task's environment (NAME=VALUE pairs in order; later entries win) and its
/// `DOCKER_VOLUME` entries into volume specs.
pub fn resolve<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    env: &[(K, V)],
    docker_volumes: &[DockerVolumeInput],
    options: &ResolveOptions,
) -> Result<Resolved, SpecError> {
    let _ = (env, docker_volumes, options);
    todo!("spec resolution")
}
