//! Properties of resolution over generated input: no input makes it panic or print a multi-line
//! message; random valid volume sets (in any order, with overridden earlier values and unrelated
//! variables mixed in) resolve to exactly the volumes asked for; every accepted spec survives its
//! JSON form.

use std::collections::BTreeMap;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{resolve, DockerVolumeInput, DriverName, ResolveOptions, VolumeSpec};
use proptest::prelude::*;

fn options(allow_task_dvdcli: bool) -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli,
    }
}

/// Variable names near the contract: prefixes that almost match, the real fields and near
/// misses, any suffix bytes; and arbitrary bytes.
fn var_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (
            prop::sample::select(vec![
                "DVDI_VOLUME_",
                "DVDI_VOLUME_",
                "DVDI_VOLUME",
                "DVDI_VOLUM",
                "DVDI_VOLUME__",
                "dvdi_volume_",
                "XDVDI_VOLUME_",
            ]),
            prop::sample::select(vec![
                "NAME",
                "DRIVER",
                "OPTS",
                "CONTAINERPATH",
                "READONLY",
                "EXPLICITCREATE",
                "DVDCLI",
                "NAM",
                "name",
                "CONTAINER_PATH",
                "",
            ]),
            prop_oneof![
                Just(Vec::new()),
                (0u8..=12).prop_map(|d| d.to_string().into_bytes()),
                prop::collection::vec(any::<u8>(), 0..4),
            ],
        )
            .prop_map(|(p, f, s)| {
                let mut v = format!("{p}{f}").into_bytes();
                v.extend(s);
                v
            }),
        1 => prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[a-z/=,.:\\- ]{0,20}".prop_map(String::into_bytes),
        "\\PC{0,12}".prop_map(String::into_bytes),
        prop::sample::select(vec!["true", "FALSE", "/data", "rexray", "k=v", ".."])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn docker_input() -> impl Strategy<Value = DockerVolumeInput> {
    (
        "\\PC{0,10}|rexray|",
        "\\PC{0,10}|pg",
        prop::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..3),
        "\\PC{0,16}|data|/data|\\.\\./x",
        any::<bool>(),
    )
        .prop_map(
            |(driver, name, driver_options, container_path, read_only)| DockerVolumeInput {
                driver,
                name,
                driver_options,
                container_path,
                read_only,
            },
        )
}

/// Checks what must hold for any outcome: a refusal is one bounded line; an accepted spec
/// survives JSON unchanged.
fn check_outcome(result: Result<mesos_dvdi::spec::Resolved, mesos_dvdi::spec::SpecError>) {
    match result {
        Err(e) => {
            let text = render_chain(&e);
            assert!(!text.contains(['\n', '\r']), "multi-line message: {text:?}");
            assert!(text.len() < 2000, "unbounded message: {} bytes", text.len());
        }
        Ok(r) => {
            for v in r.volumes {
                let json = serde_json::to_string(&v).unwrap();
                let back: VolumeSpec = serde_json::from_str(&json).unwrap();
                assert_eq!(back, v);
            }
        }
    }
}

/// One valid environment-form volume: name, driver (None: the default), opts, container path,
/// read-only, explicit-create (None: unset), dvdcli, and which spelling of true/false to use.
#[derive(Debug, Clone)]
struct EnvVolume {
    name: String,
    driver: Option<String>,
    opts: Vec<(String, String)>,
    path: Option<String>,
    read_only: Option<bool>,
    explicit_create: Option<bool>,
    dvdcli: Option<String>,
    spelling: usize,
}

fn env_volume() -> impl Strategy<Value = EnvVolume> {
    (
        "[a-zA-Z0-9._-]{1,20}",
        prop::option::of("[a-z0-9-]{1,10}"),
        prop::collection::btree_map("[a-z]{1,6}", "[a-zA-Z0-9/:#=.]{0,10}", 0..4),
        prop::option::of("(/[a-z0-9]{1,8}){1,3}/?"),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of("(/[a-z]{1,6}){1,3}"),
        0usize..3,
    )
        .prop_map(
            |(name, driver, opts, path, read_only, explicit_create, dvdcli, spelling)| EnvVolume {
                name,
                driver,
                opts: opts.into_iter().collect(),
                path,
                read_only,
                explicit_create,
                dvdcli,
                spelling,
            },
        )
}

fn spell(b: bool, spelling: usize) -> String {
    let s = if b { "true" } else { "false" };
    match spelling {
        0 => s.to_owned(),
        1 => s.to_uppercase(),
        _ => format!("{}{}", s[..1].to_uppercase(), &s[1..]),
    }
}

/// A valid `DOCKER_VOLUME`: driver, name, options, container path, read-only.
type DockerVolume = (String, String, Vec<(String, String)>, String, bool);

fn docker_volume() -> impl Strategy<Value = DockerVolume> {
    (
        "[a-z0-9-]{1,10}",
        "[a-zA-Z0-9._-]{1,20}",
        prop::collection::btree_map("[a-z]{1,6}", "[a-zA-Z0-9/:#=.]{0,10}", 0..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        "/?([a-z0-9]{1,8}/){0,2}[a-z0-9]{1,8}",
        any::<bool>(),
    )
}

/// What a test expects of one spec, compared field by field as plain strings.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    driver: String,
    name: String,
    opts: Vec<(String, String)>,
    path: Option<String>,
    read_only: bool,
    explicit_create: bool,
    dvdcli: Option<String>,
}

fn actual(v: &VolumeSpec) -> Expected {
    Expected {
        driver: v.driver.to_string(),
        name: v.name.to_string(),
        opts: v
            .opts
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        path: v.container_path.as_ref().map(ToString::to_string),
        read_only: v.read_only,
        explicit_create: v.explicit_create,
        dvdcli: v.dvdcli.as_ref().map(|p| p.display().to_string()),
    }
}

/// A generated task: its environment and `DOCKER_VOLUME`s, and the specs it must resolve to.
#[derive(Debug, Clone)]
struct Task {
    env: Vec<(Vec<u8>, Vec<u8>)>,
    docker: Vec<DockerVolumeInput>,
    expected: Vec<Expected>,
}

fn task() -> impl Strategy<Value = Task> {
    (
        prop::collection::btree_map(prop::option::of(1u8..=9), env_volume(), 0..6),
        prop::collection::vec(docker_volume(), 0..4),
        // Earlier values the task replaces (some invalid): (which variable, decoy).
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                prop::sample::select(vec![
                    b"bad/name".to_vec(),
                    vec![0xff, 0xfe],
                    b"notabool".to_vec(),
                    b"k".to_vec(),
                    b"relative".to_vec(),
                    b"true".to_vec(),
                ]),
            ),
            0..4,
        ),
        // Unrelated variables, whatever their bytes.
        prop::collection::vec(
            (
                "[A-Z_]{1,12}"
                    .prop_filter("not ours", |s| !s.starts_with("DVDI_VOLUME_"))
                    .prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..10),
            ),
            0..4,
        ),
    )
        .prop_flat_map(|(env_vols, docker_vols, decoys, noise)| {
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut expected = Vec::new();
            for (index, v) in &env_vols {
                let sfx = index.map(|i| i.to_string()).unwrap_or_default();
                let idx = sfx.clone();
                // Index-specific names and paths keep the set free of duplicates, which have
                // rules of their own.
                let name = format!("e{idx}-{}", v.name);
                let path = v.path.as_ref().map(|p| format!("/e{idx}{p}"));
                let mut add = |field: &str, value: String| {
                    entries.push((
                        format!("DVDI_VOLUME_{field}{sfx}").into_bytes(),
                        value.into_bytes(),
                    ));
                };
                add("NAME", name.clone());
                if let Some(d) = &v.driver {
                    add("DRIVER", d.clone());
                }
                if !v.opts.is_empty() || v.spelling == 0 {
                    let s: Vec<String> = v.opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    add("OPTS", s.join(","));
                }
                if let Some(p) = &path {
                    add("CONTAINERPATH", p.clone());
                }
                if let Some(b) = v.read_only {
                    add("READONLY", spell(b, v.spelling));
                }
                if let Some(b) = v.explicit_create {
                    add("EXPLICITCREATE", spell(b, v.spelling));
                }
                if let Some(d) = &v.dvdcli {
                    add("DVDCLI", d.clone());
                }
                expected.push(Expected {
                    driver: v.driver.clone().unwrap_or_else(|| "rexray".into()),
                    name,
                    opts: v.opts.clone(),
                    path: path.map(|p| p.trim_end_matches('/').to_owned()),
                    read_only: v.read_only.unwrap_or(false),
                    explicit_create: v.explicit_create.unwrap_or(false),
                    dvdcli: v.dvdcli.clone(),
                });
            }
            // Replaced values come before every real one, so the real one is always later.
            let mut front = Vec::new();
            if !entries.is_empty() {
                for (which, decoy) in &decoys {
                    let (var, _) = &entries[which.index(entries.len())];
                    front.push((var.clone(), decoy.clone()));
                }
            }
            entries.extend(noise);
            let mut docker = Vec::new();
            for (i, (driver, name, opts, path, ro)) in docker_vols.into_iter().enumerate() {
                let name = format!("d{i}-{name}");
                let path = match path.strip_prefix('/') {
                    Some(rest) => format!("/d{i}/{rest}"),
                    None => format!("d{i}/{path}"),
                };
                expected.push(Expected {
                    driver: driver.clone(),
                    name: name.clone(),
                    opts: opts.clone(),
                    path: Some(path.clone()),
                    read_only: ro,
                    explicit_create: false,
                    dvdcli: None,
                });
                docker.push(DockerVolumeInput {
                    driver,
                    name,
                    driver_options: opts,
                    container_path: path,
                    read_only: ro,
                });
            }
            (
                Just(entries).prop_shuffle(),
                Just(front),
                Just(docker),
                Just(expected),
            )
                .prop_map(|(entries, front, docker, expected)| Task {
                    env: front.into_iter().chain(entries).collect(),
                    docker,
                    expected,
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn resolve_never_panics_on_arbitrary_env(
        env in prop::collection::vec((var_name(), value()), 0..12),
        allow in any::<bool>(),
    ) {
        check_outcome(resolve(&env, &[], &[], &options(allow)));
    }

    #[test]
    fn resolve_never_panics_on_arbitrary_docker_volumes(
        env in prop::collection::vec((var_name(), value()), 0..4),
        vols in prop::collection::vec(docker_input(), 0..4),
    ) {
        check_outcome(resolve(&env, &vols, &[], &options(false)));
    }

    #[test]
    fn valid_volume_sets_resolve_to_exactly_what_was_asked(task in task()) {
        let r = resolve(&task.env, &task.docker, &[], &options(true))
            .unwrap_or_else(|e| panic!("{}\n{task:?}", render_chain(&e)));
        let got: Vec<Expected> = r.volumes.iter().map(actual).collect();
        prop_assert_eq!(&got, &task.expected);
        prop_assert!(r.warnings.is_empty());
    }

    #[test]
    fn accepted_specs_round_trip_through_json(task in task()) {
        let r = resolve(&task.env, &task.docker, &[], &options(true)).unwrap();
        for v in r.volumes {
            let json = serde_json::to_string(&v).unwrap();
            let back: VolumeSpec = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{json}: {e}"));
            prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn without_permission_every_task_dvdcli_is_dropped_with_one_warning_each(task in task()) {
        let r = resolve(&task.env, &task.docker, &[], &options(false)).unwrap();
        prop_assert!(r.volumes.iter().all(|v| v.dvdcli.is_none()));
        let asked = task.expected.iter().filter(|e| e.dvdcli.is_some()).count();
        prop_assert_eq!(r.warnings.len(), asked);
    }

    /// A field with an index speaks for that index's volume only.
    #[test]
    fn indexes_are_independent(index in 1u8..=9, ro in any::<bool>()) {
        let env = [
            ("DVDI_VOLUME_NAME".to_owned(), "zero".to_owned()),
            (format!("DVDI_VOLUME_NAME{index}"), "other".to_owned()),
            (format!("DVDI_VOLUME_READONLY{index}"), ro.to_string()),
        ];
        let r = resolve(&env, &[], &[], &options(false)).unwrap();
        let by_name: BTreeMap<_, _> = r.volumes.iter().map(|v| (v.name.as_str(), v.read_only)).collect();
        prop_assert_eq!(by_name["zero"], false);
        prop_assert_eq!(by_name["other"], ro);
    }
}
