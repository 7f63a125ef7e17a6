//! The environment form of the task contract (DESIGN §2), rule by rule.

use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{
    resolve, DriverName, ResolveOptions, Resolved, SpecError, SpecWarning, VolumeSpec,
};

fn options() -> ResolveOptions {
    ResolveOptions {
        default_driver: DriverName::new("rexray").unwrap(),
        allowed_drivers: None,
        allow_task_dvdcli: false,
    }
}

fn ok(env: &[(&str, &str)]) -> Resolved {
    resolve(env, &[], &options()).unwrap_or_else(|e| panic!("{}", render_chain(&e)))
}

fn err(env: &[(&str, &str)]) -> (SpecError, String) {
    err_with(env, &options())
}

fn err_with(env: &[(&str, &str)], options: &ResolveOptions) -> (SpecError, String) {
    let e = resolve(env, &[], options).expect_err("should be refused");
    let text = render_chain(&e);
    (e, text)
}

fn only(env: &[(&str, &str)]) -> VolumeSpec {
    let r = ok(env);
    assert_eq!(r.volumes.len(), 1, "{r:?}");
    r.volumes.into_iter().next().unwrap()
}

#[test]
fn name_alone_gives_default_driver_and_defaults() {
    let v = only(&[("DVDI_VOLUME_NAME", "pgdata")]);
    assert_eq!(v.name.as_str(), "pgdata");
    assert_eq!(v.driver.as_str(), "rexray");
    assert!(v.opts.is_empty());
    assert_eq!(v.container_path, None);
    assert!(!v.read_only);
    assert!(!v.explicit_create);
    assert_eq!(v.dvdcli, None);
}

#[test]
fn unrelated_variables_are_ignored_whatever_their_bytes() {
    let env: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"PATH".to_vec(), b"/bin".to_vec()),
        (b"LATIN1".to_vec(), vec![0xe9, 0xff]),
        (vec![0xff, 0xfe], b"x".to_vec()),
        (b"DVDI_VOLUMES".to_vec(), b"x".to_vec()),
    ];
    let r = resolve(&env, &[], &options()).unwrap();
    assert!(r.volumes.is_empty());
}

#[test]
fn every_field_is_read() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "pgdata"),
        ("DVDI_VOLUME_DRIVER", "scaleio"),
        ("DVDI_VOLUME_OPTS", "size=5,iops=150,url=https://x:1/a#b=c"),
        ("DVDI_VOLUME_CONTAINERPATH", "/var/lib//postgresql/./data/"),
        ("DVDI_VOLUME_READONLY", "TRUE"),
        ("DVDI_VOLUME_EXPLICITCREATE", "true"),
    ]);
    assert_eq!(v.driver.as_str(), "scaleio");
    let opts: Vec<_> = v.opts.iter().collect();
    assert_eq!(
        opts,
        [("size", "5"), ("iops", "150"), ("url", "https://x:1/a#b=c")]
    );
    assert_eq!(
        v.container_path.unwrap().as_path(),
        std::path::Path::new("/var/lib/postgresql/data")
    );
    assert!(v.read_only);
    assert!(v.explicit_create);
}

#[test]
fn suffixes_one_to_nine_give_ten_volumes_in_index_order() {
    let mut env = vec![];
    let names: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    for i in (1..10).rev() {
        env.push((format!("DVDI_VOLUME_NAME{i}"), names[i].clone()));
    }
    env.push(("DVDI_VOLUME_NAME".to_owned(), names[0].clone()));
    let r = resolve(&env, &[], &options()).unwrap();
    let got: Vec<&str> = r.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn later_entry_wins() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "first"),
        ("DVDI_VOLUME_DRIVER", "a"),
        ("DVDI_VOLUME_NAME", "second"),
        ("DVDI_VOLUME_DRIVER", "b"),
    ]);
    assert_eq!(v.name.as_str(), "second");
    assert_eq!(v.driver.as_str(), "b");
}

#[test]
fn refuses_suffix_ten() {
    let (e, text) = err(&[("DVDI_VOLUME_NAME10", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
    assert!(text.contains("DVDI_VOLUME_NAME10"), "{text}");
    assert!(text.contains("1-9"), "{text}");
}

#[test]
fn refuses_letter_suffix() {
    let (e, text) = err(&[("DVDI_VOLUME_NAMEX", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
    assert!(text.contains("DVDI_VOLUME_NAMEX"), "{text}");
}

#[test]
fn refuses_suffix_zero() {
    let (e, _) = err(&[("DVDI_VOLUME_NAME0", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
}

#[test]
fn refuses_unknown_variable_naming_the_known_ones() {
    let (e, text) = err(&[
        ("DVDI_VOLUME_NAME", "x"),
        ("DVDI_VOLUME_CONTAINER_PATH", "/data"),
    ]);
    assert!(matches!(e, SpecError::UnknownVariable { .. }), "{e:?}");
    assert!(text.contains("DVDI_VOLUME_CONTAINER_PATH"), "{text}");
    assert!(text.contains("DVDI_VOLUME_CONTAINERPATH"), "{text}");
}

#[test]
fn refuses_fields_for_an_index_without_name() {
    for field in [
        "DRIVER",
        "OPTS",
        "CONTAINERPATH",
        "READONLY",
        "EXPLICITCREATE",
        "DVDCLI",
    ] {
        let var = format!("DVDI_VOLUME_{field}3");
        let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), (var.as_str(), "x")]);
        assert!(matches!(e, SpecError::MissingName { .. }), "{e:?}");
        assert!(text.contains(&var), "{text}");
        assert!(text.contains("DVDI_VOLUME_NAME3"), "{text}");
    }
}

#[test]
fn refuses_non_utf8_dvdi_values() {
    let env = [(b"DVDI_VOLUME_NAME".to_vec(), vec![b'a', 0xff])];
    let e = resolve(&env, &[], &options()).unwrap_err();
    assert!(matches!(e, SpecError::NotUtf8 { .. }), "{e:?}");
    assert!(render_chain(&e).contains("DVDI_VOLUME_NAME"));
}

#[test]
fn refuses_every_forbidden_character_in_names_and_drivers() {
    let forbidden = [
        "%", "/", ":", ";", "<", ">", "|", "`", "$", "'", "\"", "?", "^", "&", "{", "}", "[", "]",
        "\\", " ", "\t", "\n", "\0", "\u{7f}", "\u{a0}",
    ];
    for c in forbidden {
        let bad = format!("a{c}b");
        let (e, text) = err(&[("DVDI_VOLUME_NAME", bad.as_str())]);
        assert!(matches!(e, SpecError::BadName { .. }), "{c:?}: {e:?}");
        assert!(text.contains("DVDI_VOLUME_NAME"), "{text}");
        let (e, text) = err(&[
            ("DVDI_VOLUME_NAME", "ok"),
            ("DVDI_VOLUME_DRIVER", bad.as_str()),
        ]);
        assert!(matches!(e, SpecError::BadDriver { .. }), "{c:?}: {e:?}");
        assert!(text.contains("DVDI_VOLUME_DRIVER"), "{text}");
    }
}

#[test]
fn accepts_names_with_dots_dashes_underscores_and_unicode() {
    for name in [
        "a.b-c_d",
        "Vol1",
        "données",
        ".hidden",
        "x".repeat(255).as_str(),
    ] {
        assert_eq!(only(&[("DVDI_VOLUME_NAME", name)]).name.as_str(), name);
    }
}

#[test]
fn refuses_empty_too_long_and_dot_names() {
    let long = "x".repeat(256);
    for (value, needle) in [("", "empty"), (long.as_str(), "256 bytes"), ("..", "..")] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME", value)]);
        assert!(matches!(e, SpecError::BadName { .. }), "{e:?}");
        assert!(text.contains(needle), "{text}");
    }
    let (e, _) = err(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DRIVER", "")]);
    assert!(matches!(e, SpecError::BadDriver { .. }), "{e:?}");
}

#[test]
fn opts_accept_paths_urls_and_equals_in_values() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "a"),
        (
            "DVDI_VOLUME_OPTS",
            "path=/mnt/x:y,url=tcp://h:1#frag,expr=a=b",
        ),
    ]);
    assert_eq!(v.opts.get("expr"), Some("a=b"));
    assert_eq!(v.opts.get("path"), Some("/mnt/x:y"));
}

#[test]
fn empty_opts_mean_no_options() {
    assert!(only(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_OPTS", "")])
        .opts
        .is_empty());
}

#[test]
fn refuses_bad_opts_naming_the_variable() {
    for (opts, needle) in [
        ("size", "no '='"),
        ("=5", "empty key"),
        ("size=5,size=6", "twice"),
        ("size=5,,iops=1", "no '='"),
        ("a=b\u{1}", "control"),
        ("a=b\0", "control"),
    ] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME2", "a"), ("DVDI_VOLUME_OPTS2", opts)]);
        assert!(matches!(e, SpecError::BadOpts { .. }), "{opts:?}: {e:?}");
        assert!(text.contains("DVDI_VOLUME_OPTS2"), "{text}");
        assert!(text.contains(needle), "{opts:?}: {text}");
    }
}

#[test]
fn refuses_relative_dotdot_nul_and_root_container_paths() {
    for (path, needle) in [
        ("data", "not absolute"),
        ("/data/../etc", "'..'"),
        ("/../etc", "'..'"),
        ("/a\0b", "NUL"),
        ("/", "root"),
        ("", "empty"),
    ] {
        let (e, text) = err(&[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_CONTAINERPATH", path),
        ]);
        assert!(
            matches!(e, SpecError::BadContainerPath { .. }),
            "{path:?}: {e:?}"
        );
        assert!(text.contains("DVDI_VOLUME_CONTAINERPATH"), "{text}");
        assert!(text.contains(needle), "{path:?}: {text}");
    }
}

#[test]
fn refuses_booleans_other_than_true_or_false() {
    for value in ["yes", "1", "", "truee"] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_READONLY", value)]);
        assert!(matches!(e, SpecError::BadBool { .. }), "{e:?}");
        assert!(text.contains("true or false"), "{text}");
    }
    assert!(
        !only(&[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_EXPLICITCREATE", "False")
        ])
        .explicit_create
    );
}

#[test]
fn task_dvdcli_is_ignored_with_a_warning_unless_allowed() {
    let env = [
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_DVDCLI", "/tmp/evil"),
    ];
    let r = ok(&env);
    assert_eq!(r.volumes[0].dvdcli, None);
    assert_eq!(
        r.warnings,
        [SpecWarning::TaskDvdcliIgnored {
            variable: "DVDI_VOLUME_DVDCLI".into()
        }]
    );
    let allowed = ResolveOptions {
        allow_task_dvdcli: true,
        ..options()
    };
    let r = resolve(&env, &[], &allowed).unwrap();
    assert_eq!(
        r.volumes[0].dvdcli.as_deref(),
        Some(std::path::Path::new("/tmp/evil"))
    );
    assert!(r.warnings.is_empty());
    let (e, _) = err_with(
        &[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_DVDCLI", "bin/dvdcli"),
        ],
        &allowed,
    );
    assert!(matches!(e, SpecError::BadDvdcli { .. }), "{e:?}");
}

#[test]
fn refuses_drivers_the_operator_does_not_allow() {
    let opts = ResolveOptions {
        allowed_drivers: Some(vec![DriverName::new("local").unwrap()]),
        ..options()
    };
    let (e, text) = err_with(
        &[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DRIVER", "rexray")],
        &opts,
    );
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    assert!(
        text.contains("\"rexray\"") && text.contains("local"),
        "{text}"
    );
    // The default driver is subject to the same list.
    let (e, _) = err_with(&[("DVDI_VOLUME_NAME", "a")], &opts);
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    let ok = resolve(
        &[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DRIVER", "local")],
        &[],
        &opts,
    );
    assert!(ok.is_ok());
}

#[test]
fn same_volume_twice_without_container_paths_is_accepted_once() {
    let r = ok(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_NAME1", "a")]);
    assert_eq!(r.volumes.len(), 1);
}

#[test]
fn same_volume_twice_with_a_container_path_is_refused() {
    let (e, text) = err(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_NAME1", "a"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/data"),
    ]);
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
    assert!(
        text.contains("DVDI_VOLUME_NAME1") && text.contains("DVDI_VOLUME_NAME "),
        "{text}"
    );
}

#[test]
fn same_volume_twice_with_different_options_is_refused() {
    let (e, _) = err(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_NAME1", "a"),
        ("DVDI_VOLUME_OPTS1", "size=1"),
    ]);
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
}

#[test]
fn same_name_on_different_drivers_is_two_volumes() {
    let r = ok(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_NAME1", "a"),
        ("DVDI_VOLUME_DRIVER1", "other"),
    ]);
    assert_eq!(r.volumes.len(), 2);
}

#[test]
fn two_volumes_on_one_container_path_are_refused() {
    let (e, text) = err(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ("DVDI_VOLUME_NAME1", "b"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/data/"),
    ]);
    assert!(
        matches!(e, SpecError::DuplicateContainerPath { .. }),
        "{e:?}"
    );
    assert!(text.contains("/data"), "{text}");
}
