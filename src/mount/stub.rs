// TEMPORARY: stands in for the mount helper's API until its branch is merged.
#![allow(missing_docs)]
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("target")]
pub struct TargetError;
pub enum TargetPolicy {
    CreateMissing,
    HostPath { tmp: PathBuf },
}
pub struct ResolvedTarget(PathBuf);
impl ResolvedTarget {
    pub fn path(&self) -> &Path {
        &self.0
    }
}
pub fn resolve_target(
    root: &Path,
    p: &crate::spec::ContainerPath,
    _: &TargetPolicy,
) -> Result<ResolvedTarget, TargetError> {
    Ok(ResolvedTarget(root.join(p.relative())))
}
pub struct MountInfoEntry {
    pub mount_point: PathBuf,
}
pub fn read_mountinfo(_: &Path) -> std::io::Result<Vec<MountInfoEntry>> {
    Ok(vec![])
}
pub fn is_mount_point(t: &[MountInfoEntry], p: &Path) -> bool {
    t.iter().any(|e| e.mount_point == p)
}
