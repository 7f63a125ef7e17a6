//! Where each volume is bound: the container paths verified, and each bind target a path that
//! no one but root can change until Mesos binds onto it.
//!
//! Mesos' launch helper performs `ContainerLaunchInfo.mounts` long after prepare (after isolate
//! and the fetcher), by the target's path string, following symbolic links. A bind target is
//! therefore only as safe as every directory on its path: the mount layer checks that no one but
//! root could change any of them ([`ResolvedTarget::audit`](crate::mount::ResolvedTarget::audit)).
//! - An absolute path (in the rootfs, or on the host) that fails the check is refused, naming
//!   the directory and who could change it.
//! - A sandbox-relative path fails it whenever the task runs as a user other than root, since
//!   Mesos gives the sandbox to that user. Such a volume is *re-homed*: bound on a directory of
//!   the agent's (`<work_dir>/binds/N` on the host, `/mnt/mesos/dvdi/N` in a rootfs; every
//!   container has its own mount namespace, so containers share these names without sharing
//!   what is mounted there), and reached through a symbolic link put at the path the task asked
//!   for. The task can replace that link, which changes only what the name leads to for itself.

use std::path::{Path, PathBuf};

use nix::unistd::User;

use crate::error::render_chain;
use crate::mount::{self, CreatedDirs, ResolvedTarget, TargetError, TargetPolicy};
use crate::spec::{self, ContainerPath, VolumeSpec};

use super::{ContainerInput, Isolator, IsolatorError, SANDBOX_IN_ROOTFS};

/// Where, in a container's rootfs, a volume is bound when the path it asked for in its sandbox
/// could be changed by someone besides root (one numbered directory per such volume).
const BINDS_IN_ROOTFS: &str = "/mnt/mesos/dvdi";

/// The same for a container without a rootfs: this directory under `work_dir`, on the host.
/// Every container has its own mount namespace, so they share these directories without sharing
/// what is mounted on them; in the host's namespace they stay empty.
const BINDS_IN_WORK_DIR: &str = "binds";

impl Isolator {
    /// The bind target of each volume that has a container path, in order, with the directories
    /// and links made for them (armed to be removed again).
    pub(super) fn resolve_targets(
        &self,
        volumes: &[VolumeSpec],
        input: &ContainerInput,
    ) -> Result<(Vec<Option<PathBuf>>, CreatedDirs), IsolatorError> {
        let mut created = CreatedDirs::new();
        let mut targets = Vec::with_capacity(volumes.len());
        let mut rehomed = 0;
        for spec in volumes {
            let target = match &spec.container_path {
                None => None,
                Some(path) => {
                    let (target, made) = self.resolve_target(spec, path, input, &mut rehomed)?;
                    created.append(made);
                    Some(target)
                }
            };
            targets.push(target);
        }
        Ok((targets, created))
    }

    /// Verifies (creating where allowed) where a volume is bound and returns the bind target.
    ///
    /// Mesos' rules (its `docker/volume` isolator, which the env form follows too): an absolute
    /// path is inside the rootfs when the container has one, else a host path; a relative path is
    /// in the sandbox, which a container with a rootfs sees at [`SANDBOX_IN_ROOTFS`] — so the
    /// directory is made in the host sandbox and the bind targets the rootfs's view of it.
    ///
    /// Also returns what it created, armed to be removed again. A refusal names the variable and
    /// the components as the container sees them; the host path goes to the agent's log only.
    fn resolve_target(
        &self,
        spec: &VolumeSpec,
        path: &ContainerPath,
        input: &ContainerInput,
        rehomed: &mut usize,
    ) -> Result<(PathBuf, CreatedDirs), IsolatorError> {
        let refused = |source: TargetError| {
            log::warn!(
                "{}: container path {} refused at host path {}: {}",
                spec.key(),
                path,
                source.host_path().display(),
                render_chain(&source)
            );
            IsolatorError::Target {
                volume: spec.key(),
                place: spec
                    .origin
                    .0
                    .as_ref()
                    .map(spec::Origin::container_path_place),
                source: Box::new(source),
            }
        };
        if !path.is_absolute() {
            return self
                .sandbox_target(spec, path, input, rehomed)
                .map_err(refused);
        }
        let (root, policy) = match &input.rootfs {
            Some(rootfs) => (rootfs.as_path(), TargetPolicy::CreateMissing),
            None => (
                Path::new("/"),
                TargetPolicy::HostPath {
                    tmp: self.host_tmp.clone(),
                },
            ),
        };
        // A rootfs is the container's `/`; a host path is its own view.
        let mut verified =
            mount::resolve_target_in(root, Path::new("/"), path, &policy).map_err(refused)?;
        // Armed: a refusal below takes back what was made.
        let made = verified.take_created();
        verified.audit(None).map_err(refused)?;
        Ok((verified.path().to_owned(), made))
    }

    /// The bind target of a sandbox-relative path: the path itself when it is safe to bind
    /// onto, else a re-homed one, with a link at the path.
    fn sandbox_target(
        &self,
        spec: &VolumeSpec,
        path: &ContainerPath,
        input: &ContainerInput,
        rehomed: &mut usize,
    ) -> Result<(PathBuf, CreatedDirs), TargetError> {
        // How the task names its sandbox: a fixed path inside a rootfs, else its variable (the
        // host path of a sandbox is the agent's business).
        let view = Path::new(match input.rootfs {
            Some(_) => SANDBOX_IN_ROOTFS,
            None => "$MESOS_SANDBOX",
        });
        let (mut parent, name) =
            mount::resolve_parent_in(&input.sandbox, view, path, &TargetPolicy::CreateMissing)?;
        let mut made = parent.take_created();
        let why = match self.safe_in_sandbox(&parent, &name, input, &mut made) {
            Ok(()) => {
                let mut full = mount::resolve_target_in(
                    &input.sandbox,
                    view,
                    path,
                    &TargetPolicy::CreateMissing,
                )?;
                made.append(full.take_created());
                // Judged safe a moment ago; checked again now that the target exists.
                full.audit(None)?;
                let target = match &input.rootfs {
                    Some(rootfs) => rootfs
                        .join(SANDBOX_IN_ROOTFS.trim_start_matches('/'))
                        .join(path.relative()),
                    None => full.path().to_owned(),
                };
                return Ok((target, made));
            }
            Err(why @ TargetError::Writable { .. }) => why,
            Err(other) => return Err(other),
        };
        let (target, text, ours) = self.stage(path, input, *rehomed, &mut made)?;
        log::info!(
            "{}: {} is not bound where asked ({}); bound on {} instead and reached through a \
             link there to {}",
            spec.key(),
            path,
            render_chain(&why),
            target.display(),
            text.display()
        );
        made.append(parent.place_link(&name, &text, &ours, why)?);
        *rehomed += 1;
        Ok((target, made))
    }

    /// Whether binding onto `name` in the sandbox directory `parent` would be safe: no one but
    /// root could change that path (nor, in a rootfs, the path to the sandbox's mount point).
    fn safe_in_sandbox(
        &self,
        parent: &ResolvedTarget,
        name: &std::ffi::OsStr,
        input: &ContainerInput,
        made: &mut CreatedDirs,
    ) -> Result<(), TargetError> {
        parent.audit_entry(name)?;
        if let Some(rootfs) = &input.rootfs {
            // Mesos binds the sandbox here before the volume; the walk to the volume's target
            // passes through it.
            let point =
                ContainerPath::absolute(SANDBOX_IN_ROOTFS).map_err(|_| TargetError::Io {
                    path: SANDBOX_IN_ROOTFS.into(),
                    op: "naming",
                    component: SANDBOX_IN_ROOTFS.into(),
                    host: rootfs.clone(),
                    source: nix::errno::Errno::EINVAL,
                })?;
            let mut mp = mount::resolve_target_in(
                rootfs,
                Path::new("/"),
                &point,
                &TargetPolicy::CreateMissing,
            )?;
            made.append(mp.take_created());
            mp.audit(None)?;
        }
        Ok(())
    }

    /// Makes and checks the `n`th re-homed bind target of a container: returns it (a host
    /// path), the text of the link that leads to it as the container sees it, and where such
    /// links lead (so that one left by an earlier prepare is recognised).
    fn stage(
        &self,
        asked: &ContainerPath,
        input: &ContainerInput,
        n: usize,
        made: &mut CreatedDirs,
    ) -> Result<(PathBuf, PathBuf, PathBuf), TargetError> {
        let no_place = |cause: TargetError| TargetError::NoSafePlace {
            path: asked.as_path().to_owned(),
            cause: Box::new(cause),
        };
        let search = !runs_as_root(input.user.as_deref());
        let (root, rel, view, ours) = match &input.rootfs {
            Some(rootfs) => (
                rootfs.clone(),
                format!("{BINDS_IN_ROOTFS}/{n}"),
                PathBuf::from("/"),
                PathBuf::from(BINDS_IN_ROOTFS),
            ),
            // The container sees the host's paths: the view is the host's.
            None => (
                self.config.work_dir.clone(),
                format!("{BINDS_IN_WORK_DIR}/{n}"),
                self.config.work_dir.clone(),
                self.config.work_dir.join(BINDS_IN_WORK_DIR),
            ),
        };
        let staged_path = ContainerPath::any(&rel).map_err(|_| {
            no_place(TargetError::Io {
                path: rel.clone().into(),
                op: "naming",
                component: rel.clone().into(),
                host: root.clone(),
                source: nix::errno::Errno::EINVAL,
            })
        })?;
        let mut staged =
            mount::resolve_target_in(&root, &view, &staged_path, &TargetPolicy::CreateMissing)
                .map_err(no_place)?;
        match &input.rootfs {
            // Made in this container's own rootfs: taken back with the rest should prepare fail.
            Some(_) => made.append(staged.take_created()),
            // Shared by every container (another may have just chosen this one): kept.
            None => staged.take_created().disarm(),
        }
        // A task reaches it from its own `/`: the rootfs, or the host's.
        let from = match &input.rootfs {
            Some(rootfs) => rootfs.as_path(),
            None => Path::new("/"),
        };
        staged.audit(search.then_some(from)).map_err(no_place)?;
        let text = match &input.rootfs {
            Some(_) => Path::new("/").join(staged_path.relative()),
            None => staged.path().to_owned(),
        };
        Ok((staged.path().to_owned(), text, ours))
    }
}

/// Whether a task run as `user` runs as root (no user: as the agent, which is root).
fn runs_as_root(user: Option<&str>) -> bool {
    match user {
        None => true,
        Some(name) => User::from_name(name)
            .ok()
            .flatten()
            .is_some_and(|u| u.uid.is_root()),
    }
}
