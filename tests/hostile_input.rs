//! Hostile task input, collected in one place: everything a task (or a framework acting for it)
//! can put in its environment or ContainerInfo is refused with an error naming it, or handled
//! without escaping its container, and leaves the mount table as it was.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::DockerVolumeInput;
use mesos_dvdi::state::Owner;
use support::isolator::Fixture;

/// Prepares `env` (plus `docker`) for a container with a rootfs; returns the error text, and
/// checks that nothing was recorded or created outside the fixture.
fn refused(fx: &Fixture, env: &[(&str, &str)], docker: Vec<DockerVolumeInput>) -> String {
    let iso = fx.isolator();
    let mut input = fx.input("hostile", env, true);
    input.docker_volumes = docker;
    let err = iso
        .prepare("hostile", Owner::Mesos, &input)
        .expect_err("hostile input was accepted");
    // A volume's file outlives its record (a tombstone): count records, not files.
    let recorded = mesos_dvdi::state::Store::open(&fx.config.work_dir)
        .unwrap()
        .scan()
        .unwrap()
        .len();
    assert_eq!(recorded, 0, "a refused prepare left a record");
    render_chain(&err)
}

#[test]
fn path_traversal_in_container_paths() {
    let fx = Fixture::new();
    for p in ["/../../etc", "/data/../../../etc/shadow", "/a/./../../b"] {
        let t = refused(
            &fx,
            &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_CONTAINERPATH", p)],
            vec![],
        );
        assert!(t.contains("'..'"), "{p}: {t}");
    }
    let dv = DockerVolumeInput {
        driver: "local".into(),
        name: "v".into(),
        container_path: "../../outside".into(),
        ..Default::default()
    };
    assert!(refused(&fx, &[], vec![dv]).contains("'..'"));
}

#[test]
fn symlink_escapes_from_rootfs_and_sandbox() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let outside = fx.mkdir("outside");
    let mut input = fx.input(
        "c",
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/x/y"),
        ],
        true,
    );
    symlink(&outside, input.rootfs.as_ref().unwrap().join("x")).unwrap();
    let e = iso.prepare("c", Owner::Mesos, &input).unwrap_err();
    assert!(render_chain(&e).contains("symbolic link"));
    assert!(!outside.join("y").exists());

    input.env.clear();
    input.rootfs = None;
    symlink(&outside, input.sandbox.join("s")).unwrap();
    input.docker_volumes = vec![DockerVolumeInput {
        driver: "local".into(),
        name: "v".into(),
        container_path: "s/deeper".into(),
        ..Default::default()
    }];
    let e = iso.prepare("c", Owner::Mesos, &input).unwrap_err();
    assert!(render_chain(&e).contains("symbolic link"));
    assert!(!outside.join("deeper").exists());
}

#[test]
fn driver_and_volume_names_cannot_traverse() {
    let fx = Fixture::new();
    for (var, value) in [
        ("DVDI_VOLUME_DRIVER", "../../../tmp/evil"),
        ("DVDI_VOLUME_DRIVER", ".."),
        ("DVDI_VOLUME_NAME", "../../etc/passwd"),
        ("DVDI_VOLUME_NAME", ".."),
    ] {
        let mut env = vec![("DVDI_VOLUME_NAME", "v")];
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let t = refused(&fx, &env, vec![]);
        assert!(t.contains(var), "{var}={value}: {t}");
    }
}

#[test]
fn option_injection_never_reaches_a_shell() {
    let fx = Fixture::new();
    let marker = fx.root().join("pwned");
    let bin = fx.mkdir("bin");
    let log = fx.root().join("argv");
    let program = bin.join("dvdcli");
    support::host::write_script(
        &program,
        &format!(
            "printf '%s\\n' \"$@\" > {}\necho {}",
            log.display(),
            fx.mkdir("vol").display()
        ),
    );
    let mut fx = fx;
    fx.config.backend = mesos_dvdi::config::BackendKind::Dvdcli;
    fx.config.dvdcli_path = program;
    let iso = fx.isolator();
    let evil = format!(
        "size=1 --volumedriver=other;touch {0}|touch {0}&&$(touch {0})",
        marker.display()
    );
    let env = [
        ("DVDI_VOLUME_DRIVER", "rexray"),
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_OPTS", evil.as_str()),
    ];
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    assert!(!marker.exists(), "an option value reached a shell");
    let argv = fs::read_to_string(&log).unwrap();
    // One argument, exactly as given: the driver flag inside it is data, not a flag.
    assert!(
        argv.lines().any(|l| l == format!("--volumeopts={evil}")),
        "{argv}"
    );
    assert_eq!(
        argv.lines()
            .filter(|l| l.starts_with("--volumedriver="))
            .count(),
        1,
        "{argv}"
    );
    iso.cleanup("c").unwrap();
}

#[test]
fn nul_bytes_are_refused_wherever_they_appear() {
    let fx = Fixture::new();
    let t = refused(&fx, &[("DVDI_VOLUME_NAME", "a\0b")], vec![]);
    assert!(t.contains("DVDI_VOLUME_NAME"), "{t}");
    let t = refused(
        &fx,
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/a\0/b"),
        ],
        vec![],
    );
    assert!(t.contains("NUL"), "{t}");
    let t = refused(
        &fx,
        &[("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_OPTS", "k=v\0x")],
        vec![],
    );
    assert!(t.contains("DVDI_VOLUME_OPTS"), "{t}");
}

#[test]
fn hundred_kilobyte_values_are_refused_or_handled() {
    let fx = Fixture::new();
    let big = "x".repeat(100 * 1024);
    // Refused by name, and the message quotes only the start of the value.
    let t = refused(&fx, &[("DVDI_VOLUME_NAME", big.as_str())], vec![]);
    assert!(
        t.contains("102400 bytes") && t.len() < 500,
        "{}",
        &t[..t.len().min(600)]
    );
    let path = format!("/{big}");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", path.as_str()),
    ];
    let t = refused(&fx, &env, vec![]);
    assert!(
        t.contains("at most 4095 bytes") && t.len() < 500,
        "{}",
        &t[..t.len().min(600)]
    );
    let long_component = format!("/data/{}", "y".repeat(300));
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", long_component.as_str()),
    ];
    assert!(refused(&fx, &env, vec![]).contains("at most 255 bytes"));
    let var = format!("DVDI_VOLUME_{big}");
    let t = refused(
        &fx,
        &[("DVDI_VOLUME_NAME", "v"), (var.as_str(), "x")],
        vec![],
    );
    assert!(
        t.contains("not a known variable") && t.len() < 1000,
        "{}",
        &t[..t.len().min(600)]
    );
    // A 100 KB option value is data: accepted by the contract, passed along intact.
    let opts = format!("note={big}");
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_OPTS", opts.as_str()),
    ];
    iso.prepare("ok", Owner::Mesos, &fx.input("ok", &env, false))
        .unwrap();
    iso.cleanup("ok").unwrap();
}

#[test]
fn ten_volumes_at_once_and_an_eleventh_refused() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let mut env: Vec<(String, String)> = Vec::new();
    for i in 0..10 {
        let sfx = if i == 0 { String::new() } else { i.to_string() };
        env.push((format!("DVDI_VOLUME_NAME{sfx}"), format!("vol{i}")));
        env.push((
            format!("DVDI_VOLUME_CONTAINERPATH{sfx}"),
            format!("/data{i}"),
        ));
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let plan = iso
        .prepare("ten", Owner::Mesos, &fx.input("ten", &pairs, true))
        .unwrap();
    assert_eq!(plan.mounts.len(), 10);
    iso.cleanup("ten").unwrap();
    for i in 0..10 {
        assert!(!fx.recorded("local", &format!("vol{i}")));
    }
    let mut eleven = pairs.clone();
    eleven.push(("DVDI_VOLUME_NAME10", "vol10"));
    assert!(refused(&fx, &eleven, vec![]).contains("DVDI_VOLUME_NAME10"));
}

#[test]
fn duplicate_volumes_and_targets() {
    let fx = Fixture::new();
    let t = refused(
        &fx,
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/a"),
            ("DVDI_VOLUME_NAME1", "v"),
            ("DVDI_VOLUME_CONTAINERPATH1", "/b"),
        ],
        vec![],
    );
    assert!(t.contains("asks again"), "{t}");
    let t = refused(
        &fx,
        &[
            ("DVDI_VOLUME_NAME", "v"),
            ("DVDI_VOLUME_CONTAINERPATH", "/a"),
            ("DVDI_VOLUME_NAME1", "w"),
            ("DVDI_VOLUME_CONTAINERPATH1", "/a/"),
        ],
        vec![],
    );
    assert!(t.contains("uses container path"), "{t}");
}

#[test]
fn task_chosen_dvdcli_is_never_run_unless_allowed() {
    let fx = Fixture::new();
    let marker = fx.root().join("ran");
    let evil = fx.mkdir("bin").join("evil");
    support::host::write_script(&evil, &format!("touch {}\necho /tmp", marker.display()));
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_DVDCLI", evil.to_str().unwrap()),
    ];
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("DVDI_VOLUME_DVDCLI")),
        "{plan:?}"
    );
    assert!(!marker.exists(), "a task-chosen program ran as root");
    iso.cleanup("c").unwrap();
    assert!(Path::new(&fx.config.local_root).join("v").exists());
}
