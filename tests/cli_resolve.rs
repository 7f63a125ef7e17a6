//! `dvdi resolve`: how an operator checks an app's volumes before deploying it.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

fn dvdi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvdi"))
        .args(args)
        .output()
        .expect("run dvdi")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn marathon_app_with_three_volumes_resolves_to_json() {
    let out = dvdi(&[
        "resolve",
        "--env-file",
        &example("marathon-app.json"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = json!([
        {"driver": "rexray", "name": "shop-pgdata",
         "opts": {"size": "20", "volumetype": "gp2", "newfstype": "xfs"},
         "container_path": "/var/lib/postgresql/data", "read_only": false, "explicit_create": false},
        {"driver": "local", "name": "shop-wal-archive", "opts": {},
         "container_path": "/var/lib/postgresql/archive", "read_only": false, "explicit_create": false},
        {"driver": "rexray", "name": "shop-backups", "opts": {"volumetype": "sc1", "size": "100"},
         "container_path": "backups", "read_only": false, "explicit_create": false}
    ]);
    assert_eq!(got, want);
}

#[test]
fn env_file_lines_form_and_e_overrides() {
    let out = dvdi(&[
        "resolve",
        "--env-file",
        &example("volumes.env"),
        "-e",
        "DVDI_VOLUME_CONTAINERPATH=/srv/demo",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0]["name"], "demo");
    assert_eq!(got[0]["container_path"], "/srv/demo");
    assert_eq!(got[1]["driver"], "loop");
    assert_eq!(got[1]["opts"], json!({"size": "1", "fstype": "ext4"}));
}

#[test]
fn invalid_env_exits_2_with_one_line_naming_the_variable() {
    let out = dvdi(&[
        "resolve",
        "-e",
        "DVDI_VOLUME_NAME=ok",
        "-e",
        "DVDI_VOLUME_OPTS=size",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("dvdi: error: DVDI_VOLUME_OPTS"), "{err}");
    assert!(err.contains("\"size\""), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flag_value_exits_2_naming_the_flag() {
    let out = dvdi(&["--unmount-timeout", "soon", "resolve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--unmount-timeout"),
        "{}",
        stderr(&out)
    );
    let out = dvdi(&[
        "resolve",
        "--default-driver",
        "a/b",
        "-e",
        "DVDI_VOLUME_NAME=x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--default-driver"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn flags_shape_resolution_like_module_parameters() {
    let out = dvdi(&[
        "--default-driver",
        "local",
        "resolve",
        "-e",
        "DVDI_VOLUME_NAME=x",
        "--json",
    ]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0]["driver"], "local");
    let out = dvdi(&[
        "--allow-driver",
        "local",
        "resolve",
        "-e",
        "DVDI_VOLUME_NAME=x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not allowed"), "{}", stderr(&out));
}

#[test]
fn table_output_piped_lists_every_volume_with_whole_values() {
    let out = dvdi(&["resolve", "--env-file", &example("marathon-app.json")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("DRIVER"));
    assert!(
        lines[3].contains("shop-backups") && lines[3].contains(" rw "),
        "{text}"
    );
    // stdout is a pipe: nothing is cut, however wide.
    assert!(
        lines[1].ends_with(" size=20,volumetype=gp2,newfstype=xfs"),
        "{text}"
    );
}

#[test]
fn marathon_secret_reference_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.json");
    std::fs::write(&f, r#"{"env": {"DB_PASSWORD": {"secret": "pw"}}}"#).unwrap();
    let out = dvdi(&["resolve", "--env-file", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("env.DB_PASSWORD"), "{}", stderr(&out));
}

#[test]
fn env_file_line_without_equals_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vars");
    std::fs::write(&f, "# comment\n\nDVDI_VOLUME_NAME=x\nOOPS\n").unwrap();
    let out = dvdi(&["resolve", "--env-file", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("vars:4"), "{}", stderr(&out));
}

#[test]
fn help_shows_examples() {
    let out = dvdi(&["resolve", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Examples:") && text.contains("--env-file"),
        "{text}"
    );
}

#[test]
fn marathon_external_volume_follows_marathons_dvdi_provider() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.json");
    std::fs::write(
        &f,
        r#"{"container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "mode": "RO", "external": {"name": "v", "provider": "dvdi",
             "size": 7, "options": {"dvdi/driver": " rexray ", "dvdi/size": "1",
             "dvdi/iops": " 300 ", "other/x": "ignored"}}}]}}"#,
    )
    .unwrap();
    let out = dvdi(&["resolve", "--env-file", f.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // external.size wins over dvdi/size; values are trimmed; other providers' options are not ours.
    assert_eq!(got[0]["driver"], "rexray");
    assert_eq!(got[0]["opts"], json!({"iops": "300", "size": "7"}));
    assert_eq!(got[0]["read_only"], true);
    let table = dvdi(&["resolve", "--env-file", f.to_str().unwrap()]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines().nth(1).is_some_and(|l| l.contains(" ro ")),
        "{text}"
    );

    std::fs::write(
        &f,
        r#"{"container": {"volumes": [{"containerPath": "data",
            "external": {"name": "v", "provider": "dvdi"}}]}}"#,
    )
    .unwrap();
    let out = dvdi(&["resolve", "--env-file", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(r#"external.options["dvdi/driver"] is missing"#),
        "{}",
        stderr(&out)
    );
}

#[test]
fn built_in_drivers_options_are_judged_as_run_judges_them() {
    let dir = tempfile::tempdir().unwrap();
    let flags = |cmd: &str| -> Vec<String> {
        let mut v = vec![
            "--work-dir".to_owned(),
            dir.path().join("work").display().to_string(),
            "--local-root".to_owned(),
            dir.path().join("local").display().to_string(),
            "--loop-root".to_owned(),
            dir.path().join("loop").display().to_string(),
            cmd.to_owned(),
        ];
        v.extend(["-e", "DVDI_VOLUME_NAME3=v"].map(str::to_owned));
        v
    };
    // Refused by the loop driver: resolve refuses it too, naming the variable and the option.
    for (opts, needle) in [
        (
            "fstype=btrfs",
            "option fstype=\"btrfs\" is invalid; use ext4 or xfs",
        ),
        ("size=0", "option size=\"0\" is invalid"),
        ("colour=blue", "unknown option \"colour\""),
    ] {
        let mut args = flags("resolve");
        args.extend(["-e", "DVDI_VOLUME_DRIVER3=loop"].map(str::to_owned));
        args.push(format!("DVDI_VOLUME_OPTS3={opts}"));
        args.insert(args.len() - 1, "-e".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dvdi(&args);
        assert_eq!(out.status.code(), Some(2), "{opts}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("dvdi: error: DVDI_VOLUME_OPTS3: volume \"v\" (driver \"loop\"): ")
                && err.contains(needle)
                && err.lines().count() == 1,
            "{opts}: {err}"
        );
        assert!(out.stdout.is_empty());
        // And run refuses it the same way.
        let mut run: Vec<&str> = args.clone();
        run[6] = "run";
        run.extend(["--", "true"]);
        let out = dvdi(&run);
        assert_eq!(out.status.code(), Some(125), "{opts}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{opts}: {}", stderr(&out));
    }
    // Ignored by the local driver: said, not refused, by resolve and by run.
    let warning =
        "volume \"v\" (driver \"local\"): options size=5 are ignored: the local driver takes none";
    for (cmd, tail) in [("resolve", &[][..]), ("run", &["--", "true"][..])] {
        let mut args = flags(cmd);
        args.extend(
            [
                "-e",
                "DVDI_VOLUME_DRIVER3=local",
                "-e",
                "DVDI_VOLUME_OPTS3=size=5",
            ]
            .map(str::to_owned),
        );
        args.extend(tail.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dvdi(&args);
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains(warning), "{cmd}: {}", stderr(&out));
    }
}

#[test]
fn marathon_external_volume_of_another_provider_is_left_out_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.json");
    std::fs::write(
        &app,
        r#"{"id": "/shop/db", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "mode": "RW",
             "external": {"name": "pg", "provider": "rexray", "options": {"dvdi/driver": "rexray"}}},
            {"containerPath": "keep", "mode": "RW",
             "external": {"name": "kept", "provider": "dvdi", "options": {"dvdi/driver": "local"}}},
            {"containerPath": "other", "mode": "RW", "external": {"name": "np"}}
        ]}}"#,
    )
    .unwrap();
    let out = dvdi(&["resolve", "--env-file", app.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("dvdi: warning: container.volumes[0].external.provider: external volume \"pg\" has provider \"rexray\", not \"dvdi\": ignored"),
        "{err}"
    );
    assert!(
        err.contains(
            "container.volumes[2].external.provider: external volume \"np\" has provider none"
        ),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("kept") && !table.contains(" pg "), "{table}");
}
