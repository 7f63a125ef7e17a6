//! Module parameters and `--config` files → one `Config`.

use std::path::PathBuf;
use std::time::Duration;

use mesos_dvdi::config::{
    BackendKind, Config, ConfigError, CsiVolumes, DockerVolumes, KEYS, LEGACY_MODULE_NAME,
    MODULE_NAME,
};
use mesos_dvdi::error::render_chain;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn refused(pairs: &[(&str, &str)]) -> (ConfigError, String) {
    let e = Config::from_params(&params(pairs)).expect_err("should be refused");
    let text = render_chain(&e);
    (e, text)
}

#[test]
fn defaults_are_those_of_the_design() {
    let c = Config::from_params(&[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.work_dir, PathBuf::from("/var/run/mesos/isolators/dvdi"));
    assert_eq!(c.default_driver.as_str(), "rexray");
    assert_eq!(c.backend, BackendKind::Plugin);
    assert_eq!(c.dvdcli_path, PathBuf::from("/usr/bin/dvdcli"));
    assert_eq!(
        c.plugin_dirs,
        [
            "/run/docker/plugins",
            "/etc/docker/plugins",
            "/usr/lib/docker/plugins"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(c.local_root, PathBuf::from("/var/lib/dvdi/local"));
    assert_eq!(c.loop_root, PathBuf::from("/var/lib/dvdi/loop"));
    assert_eq!(c.mount_timeout, Duration::from_secs(120));
    assert_eq!(c.unmount_timeout, Duration::from_secs(600));
    assert_eq!(c.allowed_drivers, None);
    assert!(!c.allow_task_dvdcli);
    assert_eq!(c.docker_volumes, DockerVolumes::Handle);
    assert!(c.plugin_mount_roots.is_empty());
    assert_eq!(c.plugin_connect_timeout, Duration::from_secs(15));
    assert_eq!(c.call_threads, 512);
    assert_eq!(
        c.legacy_checkpoint,
        [
            "/var/run/mesos/isolators/mesos-module-dvdi/dvdimounts.pb",
            "/tmp/mesos/meta/dvdimounts.pb",
            "/tmp/mesos/meta/dvdimounts.json",
            "/var/lib/mesos/dvdi/dvdimounts.json"
        ]
        .map(PathBuf::from)
    );
}

#[test]
fn every_key_is_read() {
    let c = Config::from_params(&params(&[
        ("work_dir", "/w"),
        ("default_driver", "local"),
        ("backend", "dvdcli"),
        ("dvdcli_path", "/opt/dvdcli"),
        ("plugin_dirs", "/a:/b"),
        ("local_root", "/l"),
        ("loop_root", "/lo"),
        ("mount_timeout_secs", "5"),
        ("unmount_timeout_secs", "6"),
        ("allowed_drivers", "local,rexray"),
        ("allow_task_dvdcli", "true"),
        ("docker_volumes", "ignore"),
        ("csi_volumes", "ignore"),
        ("plugin_mount_roots", "/mnt/plugins:/var/lib/rexray"),
        ("plugin_connect_secs", "3"),
        ("legacy_checkpoint", "/old/a.pb:/old/b.json"),
        ("call_threads", "64"),
    ]))
    .unwrap();
    assert_eq!(c.work_dir, PathBuf::from("/w"));
    assert_eq!(c.default_driver.as_str(), "local");
    assert_eq!(c.backend, BackendKind::Dvdcli);
    assert_eq!(c.dvdcli_path, PathBuf::from("/opt/dvdcli"));
    assert_eq!(c.plugin_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(c.local_root, PathBuf::from("/l"));
    assert_eq!(c.loop_root, PathBuf::from("/lo"));
    assert_eq!(c.mount_timeout, Duration::from_secs(5));
    assert_eq!(c.unmount_timeout, Duration::from_secs(6));
    let allowed: Vec<&str> = c
        .allowed_drivers
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| d.as_str())
        .collect();
    assert_eq!(allowed, ["local", "rexray"]);
    assert!(c.allow_task_dvdcli);
    assert_eq!(c.docker_volumes, DockerVolumes::Ignore);
    assert_eq!(c.csi_volumes, CsiVolumes::Ignore);
    assert_eq!(
        c.plugin_mount_roots,
        [
            PathBuf::from("/mnt/plugins"),
            PathBuf::from("/var/lib/rexray")
        ]
    );
    assert_eq!(c.plugin_connect_timeout, Duration::from_secs(3));
    assert_eq!(
        c.legacy_checkpoint,
        [PathBuf::from("/old/a.pb"), PathBuf::from("/old/b.json")]
    );
    assert_eq!(c.call_threads, 64);
    assert_eq!(KEYS.len(), 24);
}

#[test]
fn unknown_key_is_refused_listing_the_known_ones() {
    let (e, text) = refused(&[("work_dri", "/x")]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert!(
        text.contains("\"work_dri\"") && text.contains("work_dir"),
        "{text}"
    );
}

#[test]
fn key_given_twice_is_refused() {
    let (e, _) = refused(&[("backend", "plugin"), ("backend", "dvdcli")]);
    assert!(matches!(e, ConfigError::DuplicateKey { .. }), "{e:?}");
}

#[test]
fn bad_values_are_refused_naming_key_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        ("work_dir", "relative/dir", "absolute"),
        ("dvdcli_path", "dvdcli", "absolute"),
        ("plugin_dirs", "/a::/b", "empty entry"),
        ("plugin_dirs", "relative", "absolute"),
        ("local_root", "", "absolute"),
        ("loop_root", "x", "absolute"),
        ("mount_timeout_secs", "0", "positive"),
        ("mount_timeout_secs", "-1", "positive"),
        ("unmount_timeout_secs", "1.5", "positive"),
        ("backend", "docker", "plugin or dvdcli"),
        ("allow_task_dvdcli", "yes", "true or false"),
        ("default_driver", "../x", "driver"),
        ("allowed_drivers", "local,", "empty entry"),
        ("allowed_drivers", "lo cal", "driver"),
        ("docker_volumes", "Ignore", "handle"),
        ("docker_volumes", "", "ignore"),
        ("csi_volumes", "sometimes", "volume/csi"),
        ("plugin_mount_roots", "mnt", "absolute"),
        ("plugin_mount_roots", "/a::/b", "empty entry"),
        ("plugin_connect_secs", "0", "positive"),
        ("legacy_checkpoint", "/a.pb::/b.pb", "empty entry"),
        ("legacy_checkpoint", "dvdimounts.pb", "absolute"),
        ("state_dir", "state", "absolute"),
        ("call_threads", "0", "positive whole number"),
        ("call_threads", "many", "positive whole number"),
        ("call_threads", "-4", "positive whole number"),
    ];
    for (key, value, needle) in cases {
        let (_, text) = refused(&[(key, value)]);
        assert!(text.contains(key), "{key}: {text}");
        assert!(text.contains(&format!("{value:?}")), "{key}: {text}");
        assert!(text.contains(needle), "{key}={value}: {text}");
    }
}

#[test]
fn json_config_file_accepts_strings_numbers_booleans_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        r#"{"mount_timeout_secs": 7, "allow_task_dvdcli": true,
            "plugin_dirs": ["/p1", "/p2"], "allowed_drivers": ["local"], "work_dir": "/w",
            "plugin_mount_roots": ["/m1", "/m2"]}"#,
    )
    .unwrap();
    let c = Config::from_params(&Config::params_from_json_file(&file).unwrap()).unwrap();
    assert_eq!(c.mount_timeout, Duration::from_secs(7));
    assert!(c.allow_task_dvdcli);
    assert_eq!(c.plugin_dirs, [PathBuf::from("/p1"), PathBuf::from("/p2")]);
    assert_eq!(c.work_dir, PathBuf::from("/w"));
    assert_eq!(
        c.plugin_mount_roots,
        [PathBuf::from("/m1"), PathBuf::from("/m2")]
    );

    std::fs::write(&file, r#"{"work_dir": {"nested": 1}}"#).unwrap();
    let e = Config::params_from_json_file(&file).unwrap_err();
    assert!(
        render_chain(&e).contains("work_dir"),
        "{}",
        render_chain(&e)
    );
    std::fs::write(&file, "[1]").unwrap();
    assert!(matches!(
        Config::params_from_json_file(&file),
        Err(ConfigError::ParseFile { .. })
    ));
}

#[test]
fn shipped_isolator_json_lists_every_parameter_at_its_default() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/isolator.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let module = &v["libraries"][0]["modules"][0];
    assert_eq!(module["name"], "org_apache_mesos_DvdiIsolator");
    let params: Vec<(String, String)> = module["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_owned(),
                p["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(Config::from_params(&params).unwrap(), Config::default());
    // Every parameter, once, in the order of the configuration's own list (which the README's
    // table follows); state_dir is work_dir's other spelling, so not both.
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    let every: Vec<&str> = KEYS.iter().copied().filter(|k| *k != "state_dir").collect();
    assert_eq!(
        keys, every,
        "isolator.json and the configuration's parameters differ"
    );
}

#[test]
fn empty_means_the_default_for_parameters_whose_default_is_none_or_all() {
    let c = Config::from_params(&params(&[
        ("allowed_drivers", ""),
        ("lease_drivers", ""),
        ("plugin_mount_roots", ""),
        ("agent_name", ""),
        ("legacy_checkpoint", ""),
    ]))
    .unwrap();
    assert_eq!(c.allowed_drivers, None, "empty: every driver allowed");
    assert!(c.lease_drivers.is_empty());
    assert!(c.plugin_mount_roots.is_empty());
    assert_eq!(c.agent_name, mesos_dvdi::config::host_name());
    assert!(c.legacy_checkpoint.is_empty());
    // With coordination on, an empty agent_name is judged as no agent_name at all.
    let coord = ("coordination", "zk://127.0.0.1:2181/dvdi");
    assert_eq!(
        Config::from_params(&params(&[coord, ("agent_name", "")])).is_ok(),
        Config::from_params(&params(&[coord])).is_ok()
    );
    // A list whose default is not empty still refuses an empty value.
    let (_, text) = refused(&[("plugin_dirs", "")]);
    assert!(text.contains("plugin_dirs"), "{text}");
}

#[test]
fn coordination_settings_are_read_and_default_to_none() {
    let c = Config::from_params(&[]).unwrap();
    assert_eq!(c.coordination, None);
    assert_eq!(c.lease_session_timeout, Duration::from_secs(10));
    assert_eq!(c.lease_wait, Duration::from_secs(30));
    assert!(c.lease_drivers.is_empty());
    assert_eq!(c.agent_name, mesos_dvdi::config::host_name());

    let c = Config::from_params(&params(&[
        ("coordination", "zk://10.0.0.1:2181,zk2:2181/mesos/dvdi"),
        ("agent_name", "agent-7.example"),
        ("lease_session_timeout_secs", "4"),
        ("lease_wait_secs", "9"),
        ("lease_drivers", "local,nfs"),
    ]))
    .unwrap();
    let target = c.coordination.expect("a ZooKeeper target");
    assert_eq!(target.hosts, ["10.0.0.1:2181", "zk2:2181"]);
    assert_eq!(target.path, "/mesos/dvdi");
    assert_eq!(c.agent_name, "agent-7.example");
    assert_eq!(c.lease_session_timeout, Duration::from_secs(4));
    assert_eq!(c.lease_wait, Duration::from_secs(9));
    let drivers: Vec<&str> = c.lease_drivers.iter().map(|d| d.as_str()).collect();
    assert_eq!(drivers, ["local", "nfs"]);
    let c = Config::from_params(&params(&[("coordination", "none")])).unwrap();
    assert_eq!(c.coordination, None);
}

#[test]
fn the_lease_wait_is_bounded_by_the_mount_timeout() {
    let c = Config::from_params(&params(&[
        ("lease_wait_secs", "300"),
        ("mount_timeout_secs", "60"),
    ]))
    .unwrap();
    assert_eq!(c.lease_wait, Duration::from_secs(60));
}

#[test]
fn bad_coordination_settings_are_refused_naming_the_parameter() {
    let (e, text) = refused(&[("coordination", "http://zk:2181/x")]);
    assert_eq!(e.key(), Some("coordination"));
    assert!(text.contains("zk://host:port"), "{text}");
    let (e, text) = refused(&[("agent_name", "a/b")]);
    assert_eq!(e.key(), Some("agent_name"));
    assert!(text.contains("\"a/b\""), "{text}");
    for name in [".", "..", "a b"] {
        let (e, _) = refused(&[("agent_name", name)]);
        assert_eq!(e.key(), Some("agent_name"), "{name:?}");
    }
    let (e, _) = refused(&[("lease_session_timeout_secs", "0")]);
    assert_eq!(e.key(), Some("lease_session_timeout_secs"));
    let (e, _) = refused(&[("lease_drivers", "local,,x")]);
    assert_eq!(e.key(), Some("lease_drivers"));
}

#[test]
fn docker_volumes_ignore_leaves_docker_volume_entries_to_another_isolator() {
    let entry = mesos_dvdi::spec::DockerVolumeInput {
        driver: "rexray".into(),
        name: "pg".into(),
        container_path: "/data".into(),
        ..Default::default()
    };
    let entries = [entry];
    let handle = Config::from_params(&params(&[("docker_volumes", "handle")])).unwrap();
    assert_eq!(handle.docker_volumes_of(&entries), &entries[..]);
    let ignore = Config::from_params(&params(&[("docker_volumes", "ignore")])).unwrap();
    assert!(ignore.docker_volumes_of(&entries).is_empty());
}

#[test]
fn docker_volumes_flag_reaches_the_same_parser() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"))
        .args(["--docker-volumes", "sometimes", "resolve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--docker-volumes") && err.contains("\"sometimes\""),
        "{err}"
    );
}

#[test]
fn call_threads_flag_reaches_the_same_parser() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"))
        .args(["--call-threads", "0", "resolve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--call-threads") && err.contains("\"0\"") && err.contains("positive"),
        "{err}"
    );
}

#[test]
fn csi_volumes_flag_reaches_the_same_parser() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"))
        .args(["--csi-volumes", "sometimes", "resolve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--csi-volumes") && err.contains("\"sometimes\""),
        "{err}"
    );
}

#[test]
fn state_dir_is_another_spelling_of_work_dir_under_the_new_name() {
    let c = Config::from_params(&params(&[("state_dir", "/s")])).unwrap();
    assert_eq!(c.work_dir, PathBuf::from("/s"));
    let (e, text) = refused(&[("work_dir", "/w"), ("state_dir", "/s")]);
    assert!(matches!(e, ConfigError::BothSpellings { .. }), "{e:?}");
    assert!(
        text.contains("work_dir") && text.contains("state_dir"),
        "{text}"
    );
}

#[test]
fn legacy_checkpoint_empty_imports_nothing() {
    let c = Config::from_params(&params(&[("legacy_checkpoint", "")])).unwrap();
    assert!(c.legacy_checkpoint.is_empty());
}

#[test]
fn an_old_modules_json_loads_under_the_old_name() {
    // The original's README example and its work_dir parameter (the agent's work directory).
    let loaded = Config::from_module_params(
        LEGACY_MODULE_NAME,
        &params(&[
            ("isolator_command", "/emc/dvdi_isolator"),
            ("work_dir", "/var/lib/mesos"),
        ]),
    )
    .unwrap();
    // Our own directory stays the default; work_dir only locates the original's checkpoint.
    assert_eq!(loaded.config.work_dir, Config::default().work_dir);
    assert_eq!(
        loaded.config.legacy_checkpoint,
        [
            "/var/run/mesos/isolators/mesos-module-dvdi/dvdimounts.pb",
            "/var/lib/mesos/meta/dvdimounts.pb",
            "/var/lib/mesos/meta/dvdimounts.json",
            "/var/lib/mesos/dvdi/dvdimounts.json"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("isolator_command") && loaded.warnings[0].contains("ignored"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn under_the_old_name_state_dir_is_the_module_directory_beside_work_dir() {
    let loaded = Config::from_module_params(
        LEGACY_MODULE_NAME,
        &params(&[("work_dir", "/agent"), ("state_dir", "/state")]),
    )
    .unwrap();
    assert_eq!(loaded.config.work_dir, PathBuf::from("/state"));
    assert_eq!(
        loaded.config.legacy_checkpoint[1],
        PathBuf::from("/agent/meta/dvdimounts.pb")
    );
    assert!(loaded.warnings.is_empty());
    // An explicit legacy_checkpoint wins over the one work_dir implies.
    let loaded = Config::from_module_params(
        LEGACY_MODULE_NAME,
        &params(&[("work_dir", "/agent"), ("legacy_checkpoint", "/x.pb")]),
    )
    .unwrap();
    assert_eq!(loaded.config.legacy_checkpoint, [PathBuf::from("/x.pb")]);
}

#[test]
fn isolator_command_is_unknown_under_the_new_name_and_names_are_checked() {
    let (e, _) = refused(&[("isolator_command", "/emc/dvdi_isolator")]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    let e = Config::from_module_params("org_apache_mesos_Other", &[]).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownModule { .. }), "{e:?}");
    assert!(Config::from_module_params(MODULE_NAME, &[]).is_ok());
}

#[test]
fn coordination_refuses_a_default_agent_name_that_does_not_tell_hosts_apart() {
    // In a UTS namespace of this thread alone, the host is named like every unnamed host.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).expect("unshare UTS");
        for name in ["localhost", "localhost.localdomain"] {
            nix::unistd::sethostname(name).expect("sethostname");
            let (e, text) = refused(&[("coordination", "zk://zk1:2181/dvdi")]);
            assert_eq!(e.key(), Some("agent_name"), "{text}");
            assert!(
                text.contains(&format!("{name:?}")) && text.contains("set agent_name"),
                "{text}"
            );
            // Named explicitly, or without coordination (no leases), the host name is fine.
            let c = Config::from_params(&params(&[
                ("coordination", "zk://zk1:2181/dvdi"),
                ("agent_name", "agent-7"),
            ]))
            .unwrap();
            assert_eq!(c.agent_name, "agent-7");
            assert_eq!(Config::from_params(&[]).unwrap().agent_name, name);
        }
    })
    .join()
    .unwrap();
}

fn dvdi(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dvdi"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_reads_the_shipped_isolator_json_as_the_agent_would() {
    let iso = concat!(env!("CARGO_MANIFEST_DIR"), "/isolator.json");
    let file = Config::read_file(std::path::Path::new(iso)).unwrap();
    assert_eq!(file.module, MODULE_NAME);
    assert_eq!(
        Config::from_module_params(file.module, &file.params)
            .unwrap()
            .config,
        Config::default()
    );
    // The whole command: the file's parameters, a flag over them.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = dvdi(&[
        "--config",
        iso,
        "--work-dir",
        work.to_str().unwrap(),
        "status",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("no volumes recorded in {}", work.display())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn config_reads_an_old_modules_json_under_the_old_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("modules.json");
    std::fs::write(
        &file,
        r#"{"libraries": [{"file": "/usr/lib/libmesos_dvdi.so", "modules": [
            {"name": "org_apache_mesos_Other"},
            {"name": "com_emccode_mesos_DockerVolumeDriverIsolator", "parameters": [
                {"key": "isolator_command", "value": "/emc/dvdi_isolator"},
                {"key": "work_dir", "value": "/var/lib/mesos"}]}]}]}"#,
    )
    .unwrap();
    let f = Config::read_file(&file).unwrap();
    assert_eq!(f.module, LEGACY_MODULE_NAME);
    let loaded = Config::from_module_params(f.module, &f.params).unwrap();
    assert_eq!(loaded.config.work_dir, Config::default().work_dir);
    assert_eq!(
        loaded.config.legacy_checkpoint[1],
        PathBuf::from("/var/lib/mesos/meta/dvdimounts.pb")
    );
    // dvdi: --work-dir is the module's own directory (state_dir under the old name); the
    // ignored parameter is said.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = dvdi(&[
        "--config",
        file.to_str().unwrap(),
        "--work-dir",
        work.to_str().unwrap(),
        "status",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("dvdi: warning: parameter isolator_command"),
        "{}",
        stderr_of(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&work.display().to_string()));
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, r#"{"work_dri": "/x"}"#).unwrap();
    let modules = dir.path().join("isolator.json");
    std::fs::write(
        &modules,
        r#"{"libraries": [{"modules": [{"name": "org_apache_mesos_DvdiIsolator",
            "parameters": [{"key": "work_dri", "value": "/x"}]}]}]}"#,
    )
    .unwrap();
    for file in [&plain, &modules] {
        let out = dvdi(&["--config", file.to_str().unwrap(), "status"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("configuration file {}", file.display()))
                && err.contains("unknown parameter \"work_dri\""),
            "{err}"
        );
    }
    // A modules file without our module, and one with it twice.
    std::fs::write(
        &modules,
        r#"{"libraries": [{"modules": [{"name": "org_apache_mesos_TestIsolator"}]}]}"#,
    )
    .unwrap();
    let e = render_chain(&Config::read_file(&modules).unwrap_err());
    assert!(
        e.contains(&modules.display().to_string())
            && e.contains("without a org_apache_mesos_DvdiIsolator")
            && e.contains("it declares org_apache_mesos_TestIsolator"),
        "{e}"
    );
    std::fs::write(
        &modules,
        r#"{"libraries": [{"modules": [{"name": "org_apache_mesos_DvdiIsolator"},
            {"name": "com_emccode_mesos_DockerVolumeDriverIsolator"}]}]}"#,
    )
    .unwrap();
    let e = render_chain(&Config::read_file(&modules).unwrap_err());
    assert!(e.contains("more than once"), "{e}");
    std::fs::write(
        &modules,
        r#"{"libraries": [{"modules": [{"name": "org_apache_mesos_DvdiIsolator",
            "parameters": [{"key": "work_dir", "value": 5}]}]}]}"#,
    )
    .unwrap();
    let e = render_chain(&Config::read_file(&modules).unwrap_err());
    assert!(
        e.contains("libraries[0].modules[0].parameters[0].value must be a string"),
        "{e}"
    );
}
