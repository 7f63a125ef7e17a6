//! The JSON form of a `VolumeSpec` (what `dvdi resolve --json` prints and tools feed back): its
//! exact shape, and deserialisation that validates as strictly as resolution does.

use std::path::Path;

use mesos_dvdi::spec::{resolve, DockerVolumeInput, DriverName, ResolveOptions, VolumeSpec};

fn options() -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: true,
    }
}

fn spec(env: &[(&str, &str)]) -> VolumeSpec {
    resolve(env, &[], &[], &options())
        .unwrap()
        .volumes
        .into_iter()
        .next()
        .unwrap()
}

const VALID: &str = r#"{"driver":"rexray","name":"pg","opts":{"size":"5","iops":"1"},"container_path":"/data","read_only":true,"explicit_create":false}"#;

#[test]
fn json_form_has_the_documented_shape() {
    let v = spec(&[
        ("DVDI_VOLUME_NAME", "pg"),
        ("DVDI_VOLUME_OPTS", "size=5,iops=1"),
    ]);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"driver":"rexray","name":"pg","opts":{"size":"5","iops":"1"},"container_path":null,"read_only":false,"explicit_create":false}"#
    );
}

#[test]
fn dvdcli_appears_only_when_set() {
    let v = spec(&[
        ("DVDI_VOLUME_NAME", "pg"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ("DVDI_VOLUME_DVDCLI", "/opt/dvdcli"),
        ("DVDI_VOLUME_READONLY", "true"),
        ("DVDI_VOLUME_EXPLICITCREATE", "true"),
    ]);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"driver":"rexray","name":"pg","opts":{},"container_path":"/data","read_only":true,"explicit_create":true,"dvdcli":"/opt/dvdcli"}"#
    );
}

#[test]
fn sandbox_relative_paths_keep_their_form() {
    let dv = DockerVolumeInput {
        driver: "local".into(),
        name: "logs".into(),
        driver_options: vec![("a".into(), "b=c".into())],
        container_path: "./logs/".into(),
        read_only: false,
    };
    let v = resolve(&[] as &[(&str, &str)], &[dv], &[], &options())
        .unwrap()
        .volumes[0]
        .clone();
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        json,
        r#"{"driver":"local","name":"logs","opts":{"a":"b=c"},"container_path":"logs","read_only":false,"explicit_create":false}"#
    );
    assert_eq!(serde_json::from_str::<VolumeSpec>(&json).unwrap(), v);
}

#[test]
fn valid_json_deserialises_to_the_same_spec_as_resolution() {
    let parsed: VolumeSpec = serde_json::from_str(VALID).unwrap();
    let resolved = spec(&[
        ("DVDI_VOLUME_NAME", "pg"),
        ("DVDI_VOLUME_OPTS", "size=5,iops=1"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ("DVDI_VOLUME_READONLY", "true"),
    ]);
    assert_eq!(parsed, resolved);
    let with_dvdcli = VALID.replacen(
        r#""explicit_create":false"#,
        r#""explicit_create":false,"dvdcli":"/usr//bin/dvdcli""#,
        1,
    );
    let parsed: VolumeSpec = serde_json::from_str(&with_dvdcli).unwrap();
    assert_eq!(parsed.dvdcli.as_deref(), Some(Path::new("/usr/bin/dvdcli")));
}

#[test]
fn json_with_invalid_parts_is_refused() {
    for (from, to, needle) in [
        (r#""driver":"rexray""#, r#""driver":"a/b""#, "'/'"),
        (r#""driver":"rexray""#, r#""driver":"""#, "empty"),
        (r#""name":"pg""#, r#""name":"..""#, ".."),
        (r#""name":"pg""#, r#""name":"a b""#, "' '"),
        (r#""size":"5""#, r#""size":"a,b""#, "','"),
        (r#""iops":"1""#, r#""size":"1""#, "twice"),
        (r#""iops":"1""#, r#""":"1""#, "empty key"),
        (r#""/data""#, r#""/../x""#, "'..'"),
        (r#""/data""#, r#""/""#, "root"),
        (r#""/data""#, r#""""#, "empty"),
        (r#""/data""#, r#""/a\u0000b""#, "NUL"),
        (
            r#""read_only":true"#,
            r#""readonly":true"#,
            "unknown field `readonly`",
        ),
        (
            r#""read_only":true"#,
            r#""read_only":"yes""#,
            "expected a boolean",
        ),
        (
            r#","explicit_create":false"#,
            "",
            "missing field `explicit_create`",
        ),
        (
            r#""explicit_create":false"#,
            r#""explicit_create":false,"dvdcli":"bin/dvdcli""#,
            "not absolute",
        ),
        (
            r#""explicit_create":false"#,
            r#""explicit_create":false,"dvdcli":"/usr/../tmp/x""#,
            "'..'",
        ),
    ] {
        assert!(VALID.contains(from), "{from}");
        let bad = VALID.replacen(from, to, 1);
        let err = serde_json::from_str::<VolumeSpec>(&bad)
            .expect_err(&format!("accepted: {bad}"))
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}
