//! CSI through the `dvdi` CLI: `dvdi run` with a CSI volume (data persists across runs),
//! `dvdi plugins` listing CSI plugins, and a bad plugin configuration refused at start.

mod support;

use std::process::Command;

use mesos_dvdi::csi::Rpc;
use support::csi::{CsiPlugin, Options};
use support::host::in_private_mount_ns;
use support::isolator::{text, Fixture};

const TYPE: &str = "hostpath.csi.k8s.io";

fn dvdi(fx: &Fixture) -> Command {
    let mut c = fx.dvdi();
    c.arg("--plugin-dir")
        .arg(fx.root().join("plugins"))
        .arg("--csi-plugin-config-dir")
        .arg(fx.root().join("csi-plugins"));
    c
}

fn start(fx: &Fixture) -> CsiPlugin {
    let plugin = CsiPlugin::start(
        &fx.root().join("csi.sock"),
        &fx.root().join("plugin"),
        Options::default(),
    );
    plugin.write_config(&fx.root().join("csi-plugins"), TYPE);
    plugin
}

#[test]
fn dvdi_run_with_a_csi_volume_keeps_its_data_from_run_to_run() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let plugin = start(&fx);
        let target = fx.root().join("tmp/demo");
        let path = format!("DVDI_VOLUME_CONTAINERPATH={}", target.display());
        let driver = format!("DVDI_VOLUME_DRIVER={TYPE}");
        for expected in ["one\n", "one\none\n"] {
            let out = dvdi(&fx)
                .args([
                    "run",
                    "-e",
                    "DVDI_VOLUME_NAME=demo",
                    "-e",
                    &driver,
                    "-e",
                    &path,
                ])
                .args(["--", "sh", "-c"])
                .arg(format!(
                    "echo one >> {0}/log; cat {0}/log",
                    target.display()
                ))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        }
        let id = &plugin.volumes()["demo"];
        assert!(plugin.volume_dir(id).join("log").exists());
        assert_eq!(plugin.count(Rpc::CreateVolume), 2, "once per run, by name");
        assert_eq!(plugin.count(Rpc::NodeUnpublishVolume), 2);
        assert!(plugin.is_idle());
        assert_eq!(plugin.count(Rpc::DeleteVolume), 0);
    });
}

#[test]
fn dvdi_plugins_lists_csi_plugins_with_node_id_and_capabilities() {
    let fx = Fixture::new();
    let _plugin = start(&fx);
    let out = dvdi(&fx).args(["plugins", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "csi")
        .unwrap_or_else(|| panic!("no CSI row in {rows}"));
    assert_eq!(row["name"], TYPE);
    assert_eq!(row["ready"], true);
    assert_eq!(row["node_id"], "node-1");
    let socket = format!("node=unix://{}", fx.root().join("csi.sock").display());
    assert!(
        row["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == &*socket),
        "{row}"
    );
    let caps: Vec<&str> = row["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for cap in [
        "CONTROLLER_SERVICE",
        "CREATE_DELETE_VOLUME",
        "STAGE_UNSTAGE_VOLUME",
    ] {
        assert!(caps.contains(&cap), "{cap} missing from {caps:?}");
    }

    let table = dvdi(&fx).arg("plugins").output().unwrap();
    let table = text(&table);
    assert!(
        table.contains("CSI TYPE") && table.contains(TYPE) && table.contains("node-1"),
        "{table}"
    );
}

#[test]
fn dvdi_plugins_shows_a_csi_plugin_that_is_not_running_with_the_reason() {
    let fx = Fixture::new();
    drop(start(&fx));
    let out = dvdi(&fx).args(["plugins", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["ready"], false);
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("is the plugin running?"),
        "{row}"
    );
}

#[test]
fn a_bad_plugin_configuration_stops_the_cli_naming_the_file_and_the_field() {
    let fx = Fixture::new();
    let dir = fx.root().join("csi-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("managed.json"),
        r#"{"type": "managed.csi", "containers": [{"services": ["NODE_SERVICE"]}]}"#,
    )
    .unwrap();
    let out = dvdi(&fx).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    for part in [
        "--csi-plugin-config-dir",
        "managed.json",
        "field containers",
        "endpoints",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
}

#[test]
fn the_module_parameters_read_the_plugin_directory_at_load() {
    use mesos_dvdi::config::Config;
    let fx = Fixture::new();
    let dir = fx.root().join("csi-plugins");
    let plugin = start(&fx);
    let param = |d: &std::path::Path| {
        vec![(
            "csi_plugin_config_dir".to_owned(),
            d.to_str().unwrap().to_owned(),
        )]
    };
    let config = Config::from_params(&param(&dir)).unwrap();
    assert_eq!(config.csi_plugins.len(), 1);
    assert_eq!(config.csi_plugins[0].node_socket, plugin.socket());
    assert!(config
        .csi_plugin(&mesos_dvdi::spec::DriverName::new(TYPE).unwrap())
        .is_some());

    std::fs::write(dir.join("broken.json"), "{").unwrap();
    let e = Config::from_params(&param(&dir)).unwrap_err();
    assert_eq!(e.key(), Some("csi_plugin_config_dir"));
    let msg = mesos_dvdi::error::render_chain(&e);
    assert!(
        msg.contains("broken.json") && msg.contains("not JSON"),
        "{msg}"
    );

    let e = Config::from_params(&param(&fx.root().join("missing"))).unwrap_err();
    assert!(
        mesos_dvdi::error::render_chain(&e).contains("missing"),
        "{e}"
    );
}
