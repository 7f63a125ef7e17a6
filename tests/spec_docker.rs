//! `DOCKER_VOLUME` entries of `ContainerInfo.volumes`, following Mesos' `docker/volume` isolator,
//! alone and mixed with the environment form.

use std::path::Path;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{
    resolve, DockerVolumeInput, DriverName, ResolveOptions, Resolved, SpecError,
};

fn options() -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: true,
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

fn ok(env: &[(&str, &str)], vols: &[DockerVolumeInput]) -> Resolved {
    resolve(env, vols, &[], &options()).unwrap_or_else(|e| panic!("{}", render_chain(&e)))
}

fn err(env: &[(&str, &str)], vols: &[DockerVolumeInput]) -> (SpecError, String) {
    let e = resolve(env, vols, &[], &options()).expect_err("should be refused");
    let text = render_chain(&e);
    assert!(!text.contains('\n'), "a message must be one line: {text}");
    (e, text)
}

#[test]
fn docker_volume_becomes_a_spec_with_relative_or_absolute_path() {
    let mut a = dv("rexray", "pg", "data");
    a.read_only = true;
    a.driver_options = vec![("size".into(), "5".into()), ("expr".into(), "x=y".into())];
    let b = dv("local", "logs", "/var/log/app");
    let r = ok(&NO_ENV, &[a, b]);
    assert_eq!(r.volumes.len(), 2);
    let (a, b) = (&r.volumes[0], &r.volumes[1]);
    assert_eq!((a.driver.as_str(), a.name.as_str()), ("rexray", "pg"));
    let path = a.container_path.as_ref().unwrap();
    assert_eq!(path.as_path(), Path::new("data"));
    assert!(
        !path.is_absolute(),
        "relative paths stay relative to the sandbox"
    );
    assert!(a.read_only, "mode RO binds read-only");
    let opts: Vec<_> = a.opts.iter().collect();
    assert_eq!(opts, [("size", "5"), ("expr", "x=y")]);
    assert!(!b.read_only);
    assert_eq!(
        b.container_path.as_ref().unwrap().as_path(),
        Path::new("/var/log/app")
    );
    assert!(b.container_path.as_ref().unwrap().is_absolute());
}

#[test]
fn docker_volume_is_never_explicit_create_and_has_no_dvdcli() {
    let r = ok(&NO_ENV, &[dv("rexray", "pg", "data")]);
    assert!(!r.volumes[0].explicit_create);
    assert_eq!(r.volumes[0].dvdcli, None);
    assert!(r.warnings.is_empty());
}

#[test]
fn container_paths_are_normalised() {
    for (given, want) in [
        ("./data/", "data"),
        ("a//b/./c", "a/b/c"),
        ("//srv///x/", "/srv/x"),
    ] {
        let r = ok(&NO_ENV, &[dv("rexray", "pg", given)]);
        assert_eq!(
            r.volumes[0].container_path.as_ref().unwrap().as_path(),
            Path::new(want),
            "{given:?}"
        );
    }
}

#[test]
fn docker_volume_without_driver_is_refused_as_mesos_does() {
    let (e, text) = err(
        &NO_ENV,
        &[dv("rexray", "ok", "x"), dv("", "pgdata", "data")],
    );
    assert!(
        matches!(e, SpecError::DockerVolumeWithoutDriver { .. }),
        "{e:?}"
    );
    assert!(
        text.starts_with(
            r#"ContainerInfo.volumes[1].source.docker_volume.driver (DOCKER_VOLUME "pgdata"): no driver is set"#
        ),
        "{text}"
    );
}

#[test]
fn refuses_bad_fields_naming_the_entry_field_and_value() {
    let cases = [
        (
            dv("rexray", "a/b", "data"),
            r#"ContainerInfo.volumes[0].source.docker_volume.name (DOCKER_VOLUME "a/b"): invalid volume name "a/b": contains '/'"#,
        ),
        (
            dv("rexray", "", "data"),
            r#"ContainerInfo.volumes[0].source.docker_volume.name (DOCKER_VOLUME ""): invalid volume name "": is empty"#,
        ),
        (
            dv("re:x", "pgdata", "data"),
            r#"ContainerInfo.volumes[0].source.docker_volume.driver (DOCKER_VOLUME "pgdata"): invalid driver name "re:x": contains ':'"#,
        ),
        (
            dv("rexray", "pgdata", "../x"),
            r#"ContainerInfo.volumes[0].container_path (DOCKER_VOLUME "pgdata"): invalid container path "../x": contains a '..' component"#,
        ),
        (
            dv("rexray", "pgdata", "/srv/../etc"),
            r#"ContainerInfo.volumes[0].container_path (DOCKER_VOLUME "pgdata"): invalid container path "/srv/../etc": contains a '..' component"#,
        ),
        (
            dv("rexray", "pgdata", ""),
            r#"ContainerInfo.volumes[0].container_path (DOCKER_VOLUME "pgdata"): invalid container path "": is empty"#,
        ),
        (
            dv("rexray", "pgdata", "."),
            r#"ContainerInfo.volumes[0].container_path (DOCKER_VOLUME "pgdata"): invalid container path ".": names the root"#,
        ),
        (
            dv("rexray", "pgdata", "a\0b"),
            r#"ContainerInfo.volumes[0].container_path (DOCKER_VOLUME "pgdata"): invalid container path "a\0b": contains a NUL"#,
        ),
    ];
    for (input, head) in cases {
        let (_, text) = err(&NO_ENV, &[input]);
        assert!(text.starts_with(head), "want {head}\n got {text}");
    }
}

#[test]
fn entry_names_are_escaped_in_messages() {
    let (_, text) = err(&NO_ENV, &[dv("rexray", "evil\nFAKE LOG", "data")]);
    assert!(
        text.starts_with(
            r#"ContainerInfo.volumes[0].source.docker_volume.name (DOCKER_VOLUME "evil\nFAKE LOG")"#
        ),
        "{text}"
    );
}

#[test]
fn refuses_bad_driver_options() {
    for (pairs, needle) in [
        (vec![("k", "a,b")], r#""k=a,b""#),
        (vec![("", "v")], "empty key"),
        (vec![("a=b", "v")], r#"key "a=b" contains '='"#),
        (vec![("k", "v\0")], "control"),
        (vec![("k", "1"), ("k", "2")], r#"key "k" is given twice"#),
    ] {
        let mut input = dv("rexray", "pgdata", "data");
        input.driver_options = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (e, text) = err(&NO_ENV, &[input]);
        assert!(matches!(e, SpecError::BadOpts { .. }), "{e:?}");
        assert!(
            text.starts_with(r#"ContainerInfo.volumes[0].source.docker_volume.driver_options (DOCKER_VOLUME "pgdata"): invalid options"#),
            "{text}"
        );
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn option_values_may_hold_equals_colons_and_slashes() {
    let mut input = dv("rexray", "pgdata", "data");
    input.driver_options = vec![
        ("url".into(), "nfs://srv:2049/export?a=b".into()),
        ("empty".into(), String::new()),
    ];
    let r = ok(&NO_ENV, &[input]);
    assert_eq!(
        r.volumes[0].opts.get("url"),
        Some("nfs://srv:2049/export?a=b")
    );
    assert_eq!(r.volumes[0].opts.get("empty"), Some(""));
}

#[test]
fn same_docker_volume_twice_is_refused_as_mesos_does() {
    let (e, text) = err(&NO_ENV, &[dv("rexray", "a", "x"), dv("rexray", "a", "y")]);
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
    assert!(
        text.starts_with(r#"ContainerInfo.volumes[1] (DOCKER_VOLUME "a") asks again for volume "a" of driver "rexray" (ContainerInfo.volumes[0] (DOCKER_VOLUME "a") did)"#),
        "{text}"
    );
    // Same name, other driver: two volumes.
    let r = ok(&NO_ENV, &[dv("rexray", "a", "x"), dv("local", "a", "y")]);
    assert_eq!(r.volumes.len(), 2);
}

#[test]
fn env_and_docker_forms_mix_env_first_then_docker_in_order() {
    let env = [
        ("DVDI_VOLUME_NAME2", "e2"),
        ("DVDI_VOLUME_NAME", "e0"),
        ("DVDI_VOLUME_CONTAINERPATH", "/e"),
    ];
    let r = ok(&env, &[dv("rexray", "d0", "d0"), dv("local", "d1", "/d1")]);
    let names: Vec<_> = r.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["e0", "e2", "d0", "d1"]);
}

#[test]
fn same_volume_in_env_and_docker_is_refused_naming_both() {
    // A DOCKER_VOLUME always has a container path, so it can never be merged.
    let env = [("DVDI_VOLUME_NAME3", "pgdata")];
    let (e, text) = err(&env, &[dv("rexray", "pgdata", "data")]);
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
    assert!(
        text.starts_with(r#"ContainerInfo.volumes[0] (DOCKER_VOLUME "pgdata") asks again for volume "pgdata" of driver "rexray" (DVDI_VOLUME_NAME3 did) with a container path"#),
        "{text}"
    );
}

#[test]
fn env_and_docker_on_one_container_path_are_refused() {
    let env = [
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
    ];
    let (e, text) = err(&env, &[dv("rexray", "b", "/data/")]);
    assert!(
        matches!(e, SpecError::DuplicateContainerPath { .. }),
        "{e:?}"
    );
    assert_eq!(
        text,
        r#"ContainerInfo.volumes[0] (DOCKER_VOLUME "b") uses container path "/data", which DVDI_VOLUME_NAME uses already; give each volume its own path"#
    );
    // "data" is in the sandbox, "/data" in the root: different places.
    let r = ok(&env, &[dv("rexray", "b", "data")]);
    assert_eq!(r.volumes.len(), 2);
}

#[test]
fn docker_volume_drivers_obey_the_allow_list() {
    let opts = ResolveOptions {
        allowed_drivers: Some(vec![DriverName::new("local").unwrap()]),
        ..options()
    };
    let e = resolve(&NO_ENV, &[dv("rexray", "pg", "x")], &[], &opts).unwrap_err();
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    assert_eq!(
        render_chain(&e),
        r#"ContainerInfo.volumes[0].source.docker_volume.driver (DOCKER_VOLUME "pg"): driver "rexray" is not allowed on this agent; allowed: "local""#
    );
    assert!(resolve(&NO_ENV, &[dv("local", "pg", "x")], &[], &opts).is_ok());
}

#[test]
fn docker_volume_names_follow_the_same_rules_as_env_names() {
    for bad in ["a b", "a;b", "$(x)", "..", &"x".repeat(256)] {
        let (e, _) = err(&NO_ENV, &[dv("rexray", bad, "data")]);
        assert!(matches!(e, SpecError::BadName { .. }), "{bad:?}: {e:?}");
        let (e, _) = err(&NO_ENV, &[dv(bad, "pg", "data")]);
        assert!(matches!(e, SpecError::BadDriver { .. }), "{bad:?}: {e:?}");
    }
}
