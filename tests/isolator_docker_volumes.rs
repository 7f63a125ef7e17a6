//! `docker_volumes`: whether this isolator acts on a task's `DOCKER_VOLUME` entries (`handle`) or
//! leaves them to another isolator such as Mesos' `docker/volume` (`ignore`), with a task that
//! mixes both forms.

mod support;

use mesos_dvdi::config::DockerVolumes;
use mesos_dvdi::isolator::ContainerInput;
use mesos_dvdi::spec::DockerVolumeInput;
use mesos_dvdi::state::Owner;
use support::isolator::Fixture;

/// A task with one volume in the environment and one `DOCKER_VOLUME`, both of the local driver.
fn mixed(fx: &Fixture) -> ContainerInput {
    let env = [
        ("DVDI_VOLUME_NAME", "from-env"),
        ("DVDI_VOLUME_CONTAINERPATH", "/env"),
    ];
    let mut input = fx.input("c", &env, true);
    input.docker_volumes = vec![DockerVolumeInput {
        driver: "local".into(),
        name: "from-docker".into(),
        container_path: "/docker".into(),
        ..Default::default()
    }];
    input
}

fn names(targets: impl Iterator<Item = String>) -> Vec<String> {
    targets.collect()
}

#[test]
fn handle_mounts_both_forms() {
    let fx = Fixture::new();
    assert_eq!(
        fx.config.docker_volumes,
        DockerVolumes::Handle,
        "the default"
    );
    let iso = fx.isolator();
    let input = mixed(&fx);
    let rootfs = input.rootfs.clone().unwrap();
    let plan = iso.prepare("c", Owner::Mesos, &input).unwrap();
    let volumes = names(plan.volumes.iter().map(|(k, _)| k.name.to_string()));
    assert_eq!(volumes, ["from-env", "from-docker"]);
    let targets: Vec<_> = plan.mounts.iter().map(|m| m.target.clone()).collect();
    assert_eq!(targets, [rootfs.join("env"), rootfs.join("docker")]);
    assert!(fx.recorded("local", "from-env") && fx.recorded("local", "from-docker"));
    iso.cleanup("c").unwrap();
}

#[test]
fn ignore_mounts_only_the_environment_form_and_leaves_docker_volumes_alone() {
    let mut fx = Fixture::new();
    fx.config.docker_volumes = DockerVolumes::Ignore;
    let iso = fx.isolator();
    let mut input = mixed(&fx);
    // An entry this module would refuse (no driver) is the other isolator's to judge.
    input.docker_volumes.push(DockerVolumeInput {
        name: "no-driver".into(),
        container_path: "/other".into(),
        ..Default::default()
    });
    let rootfs = input.rootfs.clone().unwrap();
    let plan = iso.prepare("c", Owner::Mesos, &input).unwrap();
    let volumes = names(plan.volumes.iter().map(|(k, _)| k.name.to_string()));
    assert_eq!(volumes, ["from-env"]);
    assert_eq!(plan.mounts.len(), 1);
    assert_eq!(plan.mounts[0].target, rootfs.join("env"));
    assert!(!fx.recorded("local", "from-docker"));
    assert!(
        !fx.config.local_root.join("from-docker").exists(),
        "created"
    );
    assert!(!rootfs.join("docker").exists(), "made its target");
    iso.cleanup("c").unwrap();
}
