//! `DOCKER_VOLUME` entries of `ContainerInfo.volumes`, following Mesos' docker/volume isolator.

use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{resolve, DockerVolumeInput, DriverName, ResolveOptions, SpecError};

fn options() -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: false,
    }
}

fn dv(driver: &str, name: &str, path: &str) -> DockerVolumeInput {
    DockerVolumeInput {
        driver: driver.into(),
        name: name.into(),
        driver_options: vec![],
        container_path: path.into(),
        read_only: false,
    }
}

const NO_ENV: [(&str, &str); 0] = [];

#[test]
fn docker_volume_becomes_a_spec_with_relative_or_absolute_path() {
    let mut a = dv("rexray", "pg", "data");
    a.read_only = true;
    a.driver_options = vec![("size".into(), "5".into()), ("expr".into(), "x=y".into())];
    let b = dv("local", "logs", "/var/log/app");
    let r = resolve(&NO_ENV, &[a, b], &options()).unwrap();
    assert_eq!(r.volumes.len(), 2);
    let (a, b) = (&r.volumes[0], &r.volumes[1]);
    assert_eq!(a.container_path.as_ref().unwrap().to_string(), "data");
    assert!(!a.container_path.as_ref().unwrap().is_absolute());
    assert!(a.read_only);
    assert_eq!(a.opts.get("expr"), Some("x=y"));
    assert_eq!(
        b.container_path.as_ref().unwrap().to_string(),
        "/var/log/app"
    );
}

#[test]
fn docker_volume_without_driver_is_refused_as_mesos_does() {
    let e = resolve(&NO_ENV, &[dv("", "pg", "data")], &options()).unwrap_err();
    assert!(
        matches!(e, SpecError::DockerVolumeWithoutDriver { .. }),
        "{e:?}"
    );
    assert!(render_chain(&e).contains("ContainerInfo.volumes[0]"));
}

#[test]
fn docker_volume_fields_are_validated_with_their_place_named() {
    let cases = [
        (dv("rexray", "a/b", "data"), "source.docker_volume.name"),
        (dv("re:x", "a", "data"), "source.docker_volume.driver"),
        (dv("rexray", "a", "../x"), "container_path"),
        (dv("rexray", "a", ""), "container_path"),
    ];
    for (input, needle) in cases {
        let e = resolve(&NO_ENV, &[input], &options()).unwrap_err();
        let text = render_chain(&e);
        assert!(text.contains(needle), "{text}");
    }
    let mut bad_opts = dv("rexray", "a", "data");
    bad_opts.driver_options = vec![("k".into(), "a,b".into())];
    let e = resolve(&NO_ENV, &[bad_opts], &options()).unwrap_err();
    assert!(matches!(e, SpecError::BadOpts { .. }), "{e:?}");
}

#[test]
fn docker_volume_duplicate_is_refused() {
    let e = resolve(
        &NO_ENV,
        &[dv("rexray", "a", "x"), dv("rexray", "a", "y")],
        &options(),
    )
    .unwrap_err();
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
}

#[test]
fn env_and_docker_forms_mix_env_first() {
    let env = [
        ("DVDI_VOLUME_NAME", "e"),
        ("DVDI_VOLUME_CONTAINERPATH", "/e"),
    ];
    let r = resolve(&env, &[dv("rexray", "d", "d")], &options()).unwrap();
    let names: Vec<_> = r.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["e", "d"]);
    let env = [
        ("DVDI_VOLUME_NAME", "d"),
        ("DVDI_VOLUME_CONTAINERPATH", "/e"),
    ];
    let e = resolve(&env, &[dv("rexray", "d", "d")], &options()).unwrap_err();
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
}

#[test]
fn docker_volume_drivers_obey_the_allow_list() {
    let opts = ResolveOptions {
        allowed_drivers: Some(vec![DriverName::new("local").unwrap()]),
        ..options()
    };
    let e = resolve(&NO_ENV, &[dv("rexray", "a", "x")], &opts).unwrap_err();
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
}
