//! Properties of resolution: no input makes it panic; accepted specs round-trip through JSON.

use mesos_dvdi::spec::{resolve, DockerVolumeInput, DriverName, ResolveOptions, VolumeSpec};
use proptest::prelude::*;

fn options() -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: true,
    }
}

/// Variable names near the contract: the real fields with any suffix, and arbitrary bytes.
fn var_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::sample::select(vec![
                "NAME",
                "DRIVER",
                "OPTS",
                "CONTAINERPATH",
                "READONLY",
                "EXPLICITCREATE",
                "DVDCLI",
                "NAM",
                ""
            ]),
            prop::collection::vec(any::<u8>(), 0..3)
        )
            .prop_map(|(f, s)| {
                let mut v = format!("DVDI_VOLUME_{f}").into_bytes();
                v.extend(s);
                v
            }),
        prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[a-z/=,.:]{0,20}".prop_map(String::into_bytes),
        Just(b"true".to_vec()),
    ]
}

/// A valid volume in the environment form: (index, name, driver, opts, container path, read-only).
type EnvVolume = (
    Option<u8>,
    String,
    String,
    Vec<(String, String)>,
    Option<String>,
    bool,
);

fn valid_env_volume() -> impl Strategy<Value = EnvVolume> {
    (
        prop::option::of(1u8..=9),
        "[a-zA-Z0-9._-]{1,30}".prop_filter("not dots", |s| s != "." && s != ".."),
        "[a-z0-9-]{1,12}",
        prop::collection::btree_map("[a-z]{1,6}", "[a-zA-Z0-9/:#=.]{0,10}", 0..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        prop::option::of("(/[a-z0-9]{1,8}){1,4}"),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn resolve_never_panics_on_arbitrary_env(env in prop::collection::vec((var_name(), value()), 0..12)) {
        let _ = resolve(&env, &[], &options());
    }

    #[test]
    fn resolve_never_panics_on_arbitrary_docker_volumes(
        vols in prop::collection::vec(
            (".{0,12}", ".{0,12}", prop::collection::vec((".{0,6}", ".{0,6}"), 0..3), ".{0,16}", any::<bool>()),
            0..4)
    ) {
        let vols: Vec<DockerVolumeInput> = vols.into_iter().map(|(driver, name, driver_options, container_path, read_only)| {
            DockerVolumeInput { driver, name, driver_options, container_path, read_only }
        }).collect();
        let _ = resolve(&[] as &[(&str, &str)], &vols, &options());
    }

    #[test]
    fn accepted_specs_round_trip_through_json(env in prop::collection::vec((var_name(), value()), 0..12)) {
        if let Ok(r) = resolve(&env, &[], &options()) {
            for v in r.volumes {
                let json = serde_json::to_string(&v).unwrap();
                let back: VolumeSpec = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(back, v);
            }
        }
    }

    #[test]
    fn valid_volumes_resolve_to_exactly_what_was_asked(vols in prop::collection::btree_map(prop::option::of(1u8..=9), valid_env_volume(), 1..5)) {
        let mut env: Vec<(String, String)> = vec![];
        let mut paths = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        let mut expected = vec![];
        for (index, (_, name, driver, opts, path, ro)) in &vols {
            // Keep the generated set free of duplicates, which have rules of their own.
            if !keys.insert((driver.clone(), name.clone())) { continue; }
            let path = path.clone().filter(|p| paths.insert(p.clone()));
            let sfx = index.map(|i| i.to_string()).unwrap_or_default();
            env.push((format!("DVDI_VOLUME_NAME{sfx}"), name.clone()));
            env.push((format!("DVDI_VOLUME_DRIVER{sfx}"), driver.clone()));
            let opt_str = opts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            env.push((format!("DVDI_VOLUME_OPTS{sfx}"), opt_str));
            if let Some(p) = &path { env.push((format!("DVDI_VOLUME_CONTAINERPATH{sfx}"), p.clone())); }
            env.push((format!("DVDI_VOLUME_READONLY{sfx}"), ro.to_string()));
            expected.push((name.clone(), driver.clone(), opts.clone(), path, *ro));
        }
        let r = resolve(&env, &[], &options()).unwrap();
        prop_assert_eq!(r.volumes.len(), expected.len());
        for (v, (name, driver, opts, path, ro)) in r.volumes.iter().zip(expected) {
            prop_assert_eq!(v.name.as_str(), name);
            prop_assert_eq!(v.driver.as_str(), driver);
            let got: Vec<(String, String)> = v.opts.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            prop_assert_eq!(got, opts);
            prop_assert_eq!(v.container_path.as_ref().map(|p| p.to_string()), path);
            prop_assert_eq!(v.read_only, ro);
        }
    }
}

#[test]
fn json_form_has_the_documented_shape() {
    let env = [
        ("DVDI_VOLUME_NAME", "pg"),
        ("DVDI_VOLUME_OPTS", "size=5,iops=1"),
    ];
    let r = resolve(&env, &[], &options()).unwrap();
    let json = serde_json::to_string(&r.volumes[0]).unwrap();
    assert_eq!(
        json,
        r#"{"driver":"rexray","name":"pg","opts":{"size":"5","iops":"1"},"container_path":null,"read_only":false,"explicit_create":false}"#
    );
}

#[test]
fn json_with_invalid_parts_is_refused() {
    for bad in [
        r#"{"driver":"a/b","name":"pg","opts":{},"container_path":null,"read_only":false,"explicit_create":false}"#,
        r#"{"driver":"a","name":"pg","opts":{"k":"a,b"},"container_path":null,"read_only":false,"explicit_create":false}"#,
        r#"{"driver":"a","name":"pg","opts":{},"container_path":"/../x","read_only":false,"explicit_create":false}"#,
    ] {
        assert!(serde_json::from_str::<VolumeSpec>(bad).is_err(), "{bad}");
    }
}
