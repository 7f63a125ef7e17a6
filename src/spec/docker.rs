//! The `ContainerInfo` form: `DOCKER_VOLUME` entries of `ContainerInfo.volumes`.
//!
//! Follows Mesos' own `docker/volume` isolator (src/slave/containerizer/mesos/isolators/docker/
//! volume/isolator.cpp), which frameworks already target:
//! - a volume without a driver is refused (Mesos: "The volume driver is not specified");
//! - `container_path` is absolute (inside the rootfs, or a host path without one) or relative to
//!   the sandbox;
//! - mode `RO` binds read-only;
//! - `driver_options` are passed to the driver as they are, values may hold `=`;
//! - the same driver+name twice in one container is refused.
//!
//! Stricter than Mesos, because names become file names and arguments and paths must stay in
//! the container: names are validated like the environment form's, container paths may not
//! hold `..` or name the sandbox itself, and an option key given twice is refused (Mesos keeps
//! the last silently).

use super::resolve::{check_allowed, Origin, SpecError};
use super::{
    shown, Asked, ContainerPath, DockerVolumeInput, DriverName, ResolveOptions, VolumeName,
    VolumeOpts, VolumeSpec,
};

/// Validates `ContainerInfo.volumes[index]`.
pub(super) fn resolve_docker_volume(
    index: usize,
    input: &DockerVolumeInput,
    options: &ResolveOptions,
) -> Result<(Origin, VolumeSpec), SpecError> {
    // Every message names the field and the entry by its (possibly invalid) name, as a framework
    // author would look for it.
    let place = |field: &str| {
        format!(
            "ContainerInfo.volumes[{index}].{field} (DOCKER_VOLUME {:?})",
            shown(&input.name)
        )
    };
    let name = VolumeName::new(input.name.as_str()).map_err(|source| SpecError::BadName {
        place: place("source.docker_volume.name"),
        value: shown(&input.name),
        source,
    })?;
    if input.driver.is_empty() {
        return Err(SpecError::DockerVolumeWithoutDriver {
            place: place("source.docker_volume.driver"),
        });
    }
    let driver = DriverName::new(input.driver.as_str()).map_err(|source| SpecError::BadDriver {
        place: place("source.docker_volume.driver"),
        value: shown(&input.driver),
        source,
    })?;
    check_allowed(|| place("source.docker_volume.driver"), &driver, options)?;
    let opts = VolumeOpts::from_pairs(input.driver_options.iter().cloned()).map_err(|source| {
        SpecError::BadOpts {
            place: place("source.docker_volume.driver_options"),
            value: shown(
                &input
                    .driver_options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            source,
        }
    })?;
    let container_path = ContainerPath::any(&input.container_path).map_err(|source| {
        SpecError::BadContainerPath {
            place: place("container_path"),
            value: shown(&input.container_path),
            source,
        }
    })?;
    let origin = Origin::DockerVolume {
        index,
        name: input.name.clone(),
    };
    Ok((
        origin.clone(),
        VolumeSpec {
            driver,
            name,
            opts,
            container_path: Some(container_path),
            read_only: input.read_only,
            // Mesos has no such notion for DOCKER_VOLUME: a missing volume is created.
            explicit_create: false,
            dvdcli: None,
            csi: None,
            origin: Asked(Some(origin)),
        },
    ))
}
