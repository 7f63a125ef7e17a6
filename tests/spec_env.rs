//! The environment form of the task contract (README, "The task contract"), rule by rule: what is accepted, and
//! what is refused with a message naming the variable and the value.

use std::path::Path;

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
    ok_with(env, &options())
}

fn ok_with(env: &[(&str, &str)], options: &ResolveOptions) -> Resolved {
    resolve(env, &[], &[], options).unwrap_or_else(|e| panic!("{}", render_chain(&e)))
}

/// The error and its whole chain as the operator sees it.
fn err(env: &[(&str, &str)]) -> (SpecError, String) {
    err_with(env, &options())
}

fn err_with(env: &[(&str, &str)], options: &ResolveOptions) -> (SpecError, String) {
    let e = resolve(env, &[], &[], options).expect_err("should be refused");
    let text = render_chain(&e);
    assert!(!text.contains('\n'), "a message must be one line: {text}");
    (e, text)
}

fn only(env: &[(&str, &str)]) -> VolumeSpec {
    let r = ok(env);
    assert_eq!(r.volumes.len(), 1, "{r:?}");
    r.volumes.into_iter().next().unwrap()
}

fn names(r: &Resolved) -> Vec<&str> {
    r.volumes.iter().map(|v| v.name.as_str()).collect()
}

// ---- accepted ----

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
fn default_driver_is_the_operators() {
    let options = ResolveOptions {
        default_driver: DriverName::new("local").unwrap(),
        ..options()
    };
    let r = ok_with(&[("DVDI_VOLUME_NAME", "a")], &options);
    assert_eq!(r.volumes[0].driver.as_str(), "local");
}

#[test]
fn no_dvdi_variables_means_no_volumes() {
    let r = ok(&[("PATH", "/bin")]);
    assert!(r.volumes.is_empty() && r.warnings.is_empty());
}

#[test]
fn unrelated_variables_are_ignored_whatever_their_bytes() {
    let env: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"PATH".to_vec(), b"/bin".to_vec()),
        (b"LATIN1".to_vec(), vec![0xe9, 0xff]),
        (vec![0xff, 0xfe], b"x".to_vec()),
        (b"DVDI_VOLUMES".to_vec(), b"x".to_vec()),
        (b"DVDI_VOLUME".to_vec(), b"x".to_vec()),
        (b"dvdi_volume_name".to_vec(), b"a/b".to_vec()),
        (b"XDVDI_VOLUME_NAME".to_vec(), b"a/b".to_vec()),
        (b"DVDI_VOLS_JSON_ARRAY".to_vec(), b"[".to_vec()),
        (b"".to_vec(), b"".to_vec()),
    ];
    let r = resolve(&env, &[], &[], &options()).unwrap();
    assert!(r.volumes.is_empty(), "{r:?}");
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
        Path::new("/var/lib/postgresql/data")
    );
    assert!(v.read_only);
    assert!(v.explicit_create);
}

/// The examples of the original module's README must keep working unchanged (drop-in).
#[test]
fn original_module_readme_examples_are_accepted() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "VolXYZ"),
        ("DVDI_VOLUME_DRIVER", "rexray"),
        (
            "DVDI_VOLUME_OPTS",
            "size=5,iops=150,volumetype=io1,newfstype=xfs,overwritefs=true",
        ),
        ("DVDI_VOLUME_CONTAINERPATH", "/tmp/ebs-auto"),
    ]);
    assert_eq!(v.opts.get("newfstype"), Some("xfs"));
    assert_eq!(v.opts.len(), 5);

    let r = ok(&[
        ("DVDI_VOLUME_NAME", "testing"),
        ("DVDI_VOLUME_DRIVER", "platform1"),
        (
            "DVDI_VOLUME_OPTS",
            "size=5,iops=150,volumetype=io1,newfstype=ext4,overwritefs=false",
        ),
        ("DVDI_VOLUME_NAME1", "testing2"),
        ("DVDI_VOLUME_DRIVER1", "platform2"),
        (
            "DVDI_VOLUME_OPTS1",
            "size=6,volumetype=gp2,newfstype=xfs,overwritefs=true",
        ),
    ]);
    assert_eq!(names(&r), ["testing", "testing2"]);
    assert_eq!(r.volumes[1].driver.as_str(), "platform2");
    assert_eq!(r.volumes[1].opts.get("volumetype"), Some("gp2"));
}

/// Marathon's DVDIProvider numbers a task's volumes "", "1", "2", … and writes CONTAINERPATH
/// before NAME.
#[test]
fn marathon_generated_environment_is_accepted() {
    let r = ok(&[
        ("DVDI_VOLUME_CONTAINERPATH", "/path"),
        ("DVDI_VOLUME_NAME", "foo"),
        ("DVDI_VOLUME_DRIVER", "bar"),
        ("DVDI_VOLUME_OPTS", "size=1"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/other"),
        ("DVDI_VOLUME_NAME1", "foo2"),
        ("DVDI_VOLUME_DRIVER1", "bar"),
    ]);
    assert_eq!(names(&r), ["foo", "foo2"]);
    assert_eq!(r.volumes[0].opts.get("size"), Some("1"));
    assert_eq!(
        r.volumes[1].container_path.as_ref().unwrap().as_path(),
        Path::new("/other")
    );
}

#[test]
fn suffixes_one_to_nine_give_ten_volumes_in_index_order() {
    let mut env = vec![];
    let expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    // Given in reverse, and the unsuffixed one last: the output is still none, 1, …, 9.
    for i in (1..10).rev() {
        env.push((format!("DVDI_VOLUME_NAME{i}"), expected[i].clone()));
    }
    env.push(("DVDI_VOLUME_NAME".to_owned(), expected[0].clone()));
    let r = resolve(&env, &[], &[], &options()).unwrap();
    assert_eq!(names(&r), expected);
}

#[test]
fn fields_pair_with_the_name_of_their_own_index() {
    let r = ok(&[
        ("DVDI_VOLUME_DRIVER7", "seven"),
        ("DVDI_VOLUME_NAME", "zero"),
        ("DVDI_VOLUME_NAME7", "v7"),
        ("DVDI_VOLUME_READONLY7", "true"),
        ("DVDI_VOLUME_CONTAINERPATH", "/zero"),
    ]);
    let (zero, seven) = (&r.volumes[0], &r.volumes[1]);
    assert_eq!((zero.driver.as_str(), zero.read_only), ("rexray", false));
    assert_eq!((seven.driver.as_str(), seven.read_only), ("seven", true));
    assert_eq!(seven.container_path, None);
}

#[test]
fn later_entry_wins() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "first"),
        ("DVDI_VOLUME_DRIVER", "a"),
        ("DVDI_VOLUME_READONLY", "true"),
        ("DVDI_VOLUME_NAME", "second"),
        ("DVDI_VOLUME_DRIVER", "b"),
        ("DVDI_VOLUME_READONLY", "false"),
    ]);
    assert_eq!(v.name.as_str(), "second");
    assert_eq!(v.driver.as_str(), "b");
    assert!(!v.read_only);
}

/// A value the task replaced never reaches anything, so it is not judged either.
#[test]
fn later_entry_replaces_an_invalid_earlier_value() {
    let env: Vec<(&[u8], &[u8])> = vec![
        (b"DVDI_VOLUME_NAME", b"bad/name"),
        (b"DVDI_VOLUME_OPTS", b"no-equals"),
        (b"DVDI_VOLUME_DRIVER", &[0xff]),
        (b"DVDI_VOLUME_NAME", b"good"),
        (b"DVDI_VOLUME_OPTS", b"k=v"),
        (b"DVDI_VOLUME_DRIVER", b"local"),
    ];
    let r = resolve(&env, &[], &[], &options()).unwrap();
    assert_eq!(names(&r), ["good"]);
    assert_eq!(r.volumes[0].driver.as_str(), "local");
    assert_eq!(r.volumes[0].opts.get("k"), Some("v"));
}

#[test]
fn accepts_names_with_dots_dashes_underscores_and_unicode() {
    let longest = "x".repeat(255);
    for name in ["a.b-c_d", "Vol1", "données", ".hidden", longest.as_str()] {
        assert_eq!(only(&[("DVDI_VOLUME_NAME", name)]).name.as_str(), name);
        let v = only(&[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_DRIVER", name)]);
        assert_eq!(v.driver.as_str(), name);
    }
}

#[test]
fn booleans_are_true_or_false_in_any_letter_case() {
    for (text, want) in [
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("false", false),
        ("FALSE", false),
        ("fAlSe", false),
    ] {
        let v = only(&[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_READONLY", text),
            ("DVDI_VOLUME_EXPLICITCREATE", text),
        ]);
        assert_eq!((v.read_only, v.explicit_create), (want, want), "{text}");
    }
}

#[test]
fn opts_accept_paths_urls_and_equals_in_values() {
    let v = only(&[
        ("DVDI_VOLUME_NAME", "a"),
        (
            "DVDI_VOLUME_OPTS",
            "path=/mnt/x:y,url=tcp://h:1#frag,expr=a=b,empty=",
        ),
    ]);
    assert_eq!(v.opts.get("expr"), Some("a=b"));
    assert_eq!(v.opts.get("path"), Some("/mnt/x:y"));
    assert_eq!(v.opts.get("url"), Some("tcp://h:1#frag"));
    assert_eq!(v.opts.get("empty"), Some(""));
}

#[test]
fn empty_opts_mean_no_options() {
    let v = only(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_OPTS", "")]);
    assert!(v.opts.is_empty());
}

// ---- variable names ----

#[test]
fn refuses_suffix_ten() {
    let (e, text) = err(&[("DVDI_VOLUME_NAME10", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
    assert!(text.starts_with("DVDI_VOLUME_NAME10: "), "{text}");
    assert!(text.contains("\"10\"") && text.contains("1-9"), "{text}");
}

#[test]
fn refuses_letter_suffix() {
    let (e, text) = err(&[("DVDI_VOLUME_NAMEX", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
    assert!(text.contains("DVDI_VOLUME_NAMEX"), "{text}");
    assert!(text.contains("\"X\""), "{text}");
}

#[test]
fn refuses_suffix_zero() {
    // The original module read NAME0 as the unsuffixed volume; the contract says 1-9.
    let (e, text) = err(&[("DVDI_VOLUME_NAME0", "x")]);
    assert!(matches!(e, SpecError::BadSuffix { .. }), "{e:?}");
    assert!(text.contains("DVDI_VOLUME_NAME0"), "{text}");
}

#[test]
fn refuses_bad_suffixes_on_every_field() {
    for field in [
        "NAME",
        "DRIVER",
        "OPTS",
        "CONTAINERPATH",
        "READONLY",
        "EXPLICITCREATE",
        "DVDCLI",
    ] {
        for suffix in ["0", "10", "1X", "X", "é"] {
            let variable = format!("DVDI_VOLUME_{field}{suffix}");
            let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), (variable.as_str(), "x")]);
            assert!(
                matches!(e, SpecError::BadSuffix { .. }),
                "{variable}: {e:?}"
            );
            assert!(text.contains(&format!("{suffix:?}")), "{text}");
            assert!(text.contains(&format!("DVDI_VOLUME_{field}1")), "{text}");
        }
    }
}

#[test]
fn refuses_unknown_variable_naming_the_known_ones() {
    let (e, text) = err(&[
        ("DVDI_VOLUME_NAME", "x"),
        ("DVDI_VOLUME_CONTAINER_PATH", "/data"),
    ]);
    assert!(matches!(e, SpecError::UnknownVariable { .. }), "{e:?}");
    assert!(
        text.starts_with("DVDI_VOLUME_CONTAINER_PATH is not a known variable"),
        "{text}"
    );
    for known in [
        "DVDI_VOLUME_NAME[1-9]",
        "DVDI_VOLUME_DRIVER[1-9]",
        "DVDI_VOLUME_OPTS[1-9]",
        "DVDI_VOLUME_CONTAINERPATH[1-9]",
        "DVDI_VOLUME_READONLY[1-9]",
        "DVDI_VOLUME_EXPLICITCREATE[1-9]",
        "DVDI_VOLUME_DVDCLI[1-9]",
    ] {
        assert!(text.contains(known), "{known} missing: {text}");
    }
}

#[test]
fn refuses_other_unknown_dvdi_variables() {
    for variable in [
        "DVDI_VOLUME_",
        "DVDI_VOLUME_SIZE",
        "DVDI_VOLUME_NAMESPACE",
        "DVDI_VOLUME_name",
        "DVDI_VOLUME_NAME_1",
        "DVDI_VOLUME_READ_ONLY",
    ] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), (variable, "x")]);
        assert!(
            matches!(e, SpecError::UnknownVariable { .. }),
            "{variable}: {e:?}"
        );
        assert!(text.contains(variable), "{text}");
    }
}

#[test]
fn unknown_variable_with_control_characters_is_quoted_escaped() {
    let (e, text) = err(&[("DVDI_VOLUME_X\nFAKE LOG LINE", "x")]);
    assert!(matches!(e, SpecError::UnknownVariable { .. }), "{e:?}");
    assert!(
        text.starts_with(r#""DVDI_VOLUME_X\nFAKE LOG LINE""#),
        "{text}"
    );
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
        let variable = format!("DVDI_VOLUME_{field}3");
        let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), (variable.as_str(), "x")]);
        assert!(matches!(e, SpecError::MissingName { .. }), "{e:?}");
        assert!(text.starts_with(&variable), "{text}");
        assert!(text.contains("DVDI_VOLUME_NAME3 is not"), "{text}");
    }
    // The unsuffixed index too, even when other indexes have names.
    let (e, text) = err(&[("DVDI_VOLUME_NAME1", "a"), ("DVDI_VOLUME_OPTS", "k=v")]);
    assert!(matches!(e, SpecError::MissingName { .. }), "{e:?}");
    assert!(
        text.contains("DVDI_VOLUME_OPTS is set but DVDI_VOLUME_NAME is not"),
        "{text}"
    );
}

// ---- bytes ----

#[test]
fn refuses_non_utf8_value_naming_the_variable() {
    let env = [
        (b"DVDI_VOLUME_OPTS2".to_vec(), vec![b'k', b'=', 0xff]),
        (b"DVDI_VOLUME_NAME2".to_vec(), b"a".to_vec()),
    ];
    let e = resolve(&env, &[], &[], &options()).unwrap_err();
    assert!(matches!(e, SpecError::ValueNotUtf8 { .. }), "{e:?}");
    let text = render_chain(&e);
    assert!(text.starts_with("DVDI_VOLUME_OPTS2: "), "{text}");
    assert!(text.contains("\"k=\u{fffd}\""), "{text}");
}

#[test]
fn refuses_non_utf8_variable_name() {
    let env = [
        (b"DVDI_VOLUME_NAME".to_vec(), b"a".to_vec()),
        (b"DVDI_VOLUME_\xffNAME".to_vec(), b"b".to_vec()),
    ];
    let e = resolve(&env, &[], &[], &options()).unwrap_err();
    assert!(matches!(e, SpecError::NameNotUtf8 { .. }), "{e:?}");
    let text = render_chain(&e);
    assert!(text.contains("\"DVDI_VOLUME_\u{fffd}NAME\""), "{text}");
    assert!(text.contains("not valid UTF-8"), "{text}");
}

// ---- names and drivers ----

#[test]
fn refuses_name_with_slash() {
    let (e, text) = err(&[("DVDI_VOLUME_NAME4", "../etc/passwd")]);
    assert!(matches!(e, SpecError::BadName { .. }), "{e:?}");
    assert!(
        text.starts_with(r#"DVDI_VOLUME_NAME4: invalid volume name "../etc/passwd": contains '/'"#),
        "{text}"
    );
}

#[test]
fn refuses_every_forbidden_character_in_names_and_drivers() {
    let forbidden = [
        "%", "/", ":", ";", "<", ">", "|", "`", "$", "'", "\"", "?", "^", "&", "{", "}", "[", "]",
        "\\", " ", "\t", "\n", "\r", "\u{b}", "\u{8}", "\0", "\u{7f}", "\u{a0}",
    ];
    for c in forbidden {
        let bad = format!("a{c}b");
        let quoted = format!("{bad:?}");
        let (e, text) = err(&[("DVDI_VOLUME_NAME", bad.as_str())]);
        assert!(matches!(e, SpecError::BadName { .. }), "{c:?}: {e:?}");
        assert!(text.starts_with("DVDI_VOLUME_NAME: "), "{text}");
        assert!(text.contains(&quoted), "{quoted} not in {text}");
        let (e, text) = err(&[
            ("DVDI_VOLUME_NAME", "ok"),
            ("DVDI_VOLUME_DRIVER", bad.as_str()),
        ]);
        assert!(matches!(e, SpecError::BadDriver { .. }), "{c:?}: {e:?}");
        assert!(text.starts_with("DVDI_VOLUME_DRIVER: "), "{text}");
        assert!(text.contains(&quoted), "{quoted} not in {text}");
    }
}

#[test]
fn refuses_empty_too_long_and_dot_names() {
    let long = "x".repeat(256);
    for (value, needle) in [
        ("", "is empty"),
        (long.as_str(), "256 bytes"),
        ("..", "cannot be \"..\""),
        (".", "cannot be \".\""),
    ] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME", value)]);
        assert!(matches!(e, SpecError::BadName { .. }), "{e:?}");
        assert!(text.contains(needle), "{text}");
        let (e, text) = err(&[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DRIVER", value)]);
        assert!(matches!(e, SpecError::BadDriver { .. }), "{e:?}");
        assert!(text.contains(needle), "{text}");
    }
}

// ---- options ----

#[test]
fn refuses_bad_opts_naming_the_variable_and_value() {
    for (opts, needle) in [
        ("size", r#"item "size" has no '='"#),
        ("=5", "empty key"),
        ("size=5,size=6", r#"key "size" is given twice"#),
        ("size=5,,iops=1", r#"item "" has no '='"#),
        ("size=5,", r#"item "" has no '='"#),
        ("a=b\u{1}", "control"),
        ("a=b\0", "control"),
        ("a\nb=c", "control"),
    ] {
        let (e, text) = err(&[("DVDI_VOLUME_NAME2", "a"), ("DVDI_VOLUME_OPTS2", opts)]);
        assert!(matches!(e, SpecError::BadOpts { .. }), "{opts:?}: {e:?}");
        let head = format!("DVDI_VOLUME_OPTS2: invalid options {opts:?}: ");
        assert!(text.starts_with(&head), "{opts:?}: {text}");
        assert!(text.contains(needle), "{opts:?}: {text}");
    }
}

// ---- container paths ----

#[test]
fn refuses_relative_dotdot_nul_and_root_container_paths() {
    for (path, needle) in [
        ("data", "not absolute"),
        ("./data", "not absolute"),
        ("/data/../etc", "'..'"),
        ("/../etc", "'..'"),
        ("/a\0b", "NUL"),
        ("/", "root"),
        ("//.//", "root"),
        ("", "empty"),
    ] {
        let (e, text) = err(&[
            ("DVDI_VOLUME_NAME5", "a"),
            ("DVDI_VOLUME_CONTAINERPATH5", path),
        ]);
        assert!(
            matches!(e, SpecError::BadContainerPath { .. }),
            "{path:?}: {e:?}"
        );
        let head = format!("DVDI_VOLUME_CONTAINERPATH5: invalid container path {path:?}: ");
        assert!(text.starts_with(&head), "{text}");
        assert!(text.contains(needle), "{path:?}: {text}");
    }
}

#[test]
fn container_path_need_not_exist_here() {
    // Existence is the mount layer's question (and /tmp paths are created there).
    let v = only(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_CONTAINERPATH", "/no/such/dir/anywhere"),
    ]);
    assert!(v.container_path.unwrap().is_absolute());
}

// ---- booleans ----

#[test]
fn refuses_booleans_other_than_true_or_false() {
    for field in ["READONLY", "EXPLICITCREATE"] {
        for value in ["yes", "1", "", "truee", " true", "on"] {
            let variable = format!("DVDI_VOLUME_{field}6");
            let (e, text) = err(&[("DVDI_VOLUME_NAME6", "a"), (variable.as_str(), value)]);
            assert!(matches!(e, SpecError::BadBool { .. }), "{e:?}");
            let head = format!("{variable}: {value:?} is not a boolean");
            assert!(text.starts_with(&head), "{text}");
            assert!(text.contains("true or false"), "{text}");
        }
    }
}

// ---- dvdcli ----

#[test]
fn task_dvdcli_is_ignored_with_a_warning_unless_allowed() {
    let env = [
        ("DVDI_VOLUME_NAME3", "a"),
        ("DVDI_VOLUME_DVDCLI3", "/tmp/evil"),
    ];
    let r = ok(&env);
    assert_eq!(r.volumes[0].dvdcli, None);
    assert_eq!(
        r.warnings,
        [SpecWarning::TaskDvdcliIgnored {
            variable: "DVDI_VOLUME_DVDCLI3".into()
        }]
    );
    let text = r.warnings[0].to_string();
    assert!(
        text.starts_with("DVDI_VOLUME_DVDCLI3 is ignored") && text.contains("allow_task_dvdcli"),
        "{text}"
    );
    // Ignored means not judged: even a nonsensical value only warns.
    let r = ok(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_DVDCLI", "rel/../x"),
    ]);
    assert_eq!(r.warnings.len(), 1);

    let allowed = ResolveOptions {
        allow_task_dvdcli: true,
        ..options()
    };
    let r = ok_with(&env, &allowed);
    assert_eq!(r.volumes[0].dvdcli.as_deref(), Some(Path::new("/tmp/evil")));
    assert!(r.warnings.is_empty());
}

#[test]
fn allowed_task_dvdcli_must_be_an_absolute_normalised_path() {
    let allowed = ResolveOptions {
        allow_task_dvdcli: true,
        ..options()
    };
    let r = ok_with(
        &[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_DVDCLI", "/usr//bin/./dvdcli"),
        ],
        &allowed,
    );
    assert_eq!(
        r.volumes[0].dvdcli.as_deref(),
        Some(Path::new("/usr/bin/dvdcli"))
    );
    for (value, needle) in [
        ("bin/dvdcli", "not absolute"),
        ("/usr/../tmp/x", "'..'"),
        ("/usr/bin/dv\0dcli", "NUL"),
        ("", "empty"),
    ] {
        let (e, text) = err_with(
            &[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DVDCLI", value)],
            &allowed,
        );
        assert!(matches!(e, SpecError::BadDvdcli { .. }), "{e:?}");
        let head = format!("DVDI_VOLUME_DVDCLI: invalid dvdcli path {value:?}: ");
        assert!(text.starts_with(&head), "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

// ---- allowed drivers ----

#[test]
fn refuses_drivers_the_operator_does_not_allow() {
    let opts = ResolveOptions {
        allowed_drivers: Some(vec![
            DriverName::new("local").unwrap(),
            DriverName::new("loop").unwrap(),
        ]),
        ..options()
    };
    let (e, text) = err_with(
        &[
            ("DVDI_VOLUME_NAME2", "a"),
            ("DVDI_VOLUME_DRIVER2", "rexray"),
        ],
        &opts,
    );
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    assert_eq!(
        text,
        r#"DVDI_VOLUME_DRIVER2: driver "rexray" is not allowed on this agent; allowed: "local", "loop""#
    );
    // The default driver is held to the same list, and the message says where it came from.
    let (e, text) = err_with(&[("DVDI_VOLUME_NAME", "a")], &opts);
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    assert!(
        text.starts_with(
            "DVDI_VOLUME_DRIVER (unset, so the agent's default driver): driver \"rexray\""
        ),
        "{text}"
    );
    let r = ok_with(
        &[("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_DRIVER", "loop")],
        &opts,
    );
    assert_eq!(r.volumes[0].driver.as_str(), "loop");
}

#[test]
fn an_empty_allow_list_allows_nothing() {
    let opts = ResolveOptions {
        allowed_drivers: Some(vec![]),
        ..options()
    };
    let (e, text) = err_with(&[("DVDI_VOLUME_NAME", "a")], &opts);
    assert!(matches!(e, SpecError::DriverNotAllowed { .. }), "{e:?}");
    assert!(text.ends_with("allowed: none"), "{text}");
    // No volumes asked for: nothing to refuse.
    assert!(ok_with(&[("PATH", "/bin")], &opts).volumes.is_empty());
}

// ---- duplicates ----

#[test]
fn same_volume_twice_without_container_paths_is_accepted_once() {
    let r = ok(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_OPTS", "size=1"),
        ("DVDI_VOLUME_NAME1", "b"),
        ("DVDI_VOLUME_NAME2", "a"),
        ("DVDI_VOLUME_OPTS2", "size=1"),
    ]);
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn same_volume_twice_with_a_container_path_is_refused() {
    for (first_path, second_path) in [
        (None, Some("/data")),
        (Some("/data"), None),
        (Some("/x"), Some("/y")),
    ] {
        let mut env = vec![("DVDI_VOLUME_NAME", "a"), ("DVDI_VOLUME_NAME1", "a")];
        if let Some(p) = first_path {
            env.push(("DVDI_VOLUME_CONTAINERPATH", p));
        }
        if let Some(p) = second_path {
            env.push(("DVDI_VOLUME_CONTAINERPATH1", p));
        }
        let (e, text) = err(&env);
        assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
        assert!(
            text.starts_with(r#"DVDI_VOLUME_NAME1 asks again for volume "a" of driver "rexray" (DVDI_VOLUME_NAME did) with a container path"#),
            "{text}"
        );
    }
}

#[test]
fn same_volume_twice_with_different_settings_is_refused() {
    for (field, value) in [
        ("OPTS1", "size=1"),
        ("READONLY1", "true"),
        ("EXPLICITCREATE1", "true"),
    ] {
        let variable = format!("DVDI_VOLUME_{field}");
        let (e, text) = err(&[
            ("DVDI_VOLUME_NAME", "a"),
            ("DVDI_VOLUME_NAME1", "a"),
            (variable.as_str(), value),
        ]);
        assert!(matches!(e, SpecError::Duplicate { .. }), "{field}: {e:?}");
        assert!(
            text.contains("with other options, modes or dvdcli"),
            "{text}"
        );
    }
}

#[test]
fn same_name_on_different_drivers_is_two_volumes() {
    let r = ok(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_NAME1", "a"),
        ("DVDI_VOLUME_DRIVER1", "other"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/data"),
    ]);
    assert_eq!(r.volumes.len(), 2);
}

#[test]
fn default_and_explicit_driver_of_the_same_name_are_one_volume() {
    let (e, _) = err(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_NAME1", "a"),
        ("DVDI_VOLUME_DRIVER1", "rexray"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/data"),
    ]);
    assert!(matches!(e, SpecError::Duplicate { .. }), "{e:?}");
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
    assert_eq!(
        text,
        r#"DVDI_VOLUME_NAME1 uses container path "/data", which DVDI_VOLUME_NAME uses already; give each volume its own path"#
    );
}

#[test]
fn nested_container_paths_are_distinct_paths() {
    let r = ok(&[
        ("DVDI_VOLUME_NAME", "a"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ("DVDI_VOLUME_NAME1", "b"),
        ("DVDI_VOLUME_CONTAINERPATH1", "/data/b"),
    ]);
    assert_eq!(r.volumes.len(), 2);
}

// ---- size ----

#[test]
fn huge_values_are_quoted_as_an_excerpt() {
    let big = "x/".repeat(50_000);
    let (_, text) = err(&[("DVDI_VOLUME_NAME", big.as_str())]);
    assert!(
        text.contains("(100000 bytes)") && text.len() < 400,
        "{}",
        &text[..text.len().min(500)]
    );
    let variable = format!("DVDI_VOLUME_{}", "Q".repeat(100_000));
    let (e, text) = err(&[(variable.as_str(), "x")]);
    assert!(matches!(e, SpecError::UnknownVariable { .. }), "{e:?}");
    assert!(text.len() < 1000, "{}", &text[..text.len().min(500)]);
}
