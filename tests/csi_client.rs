//! The CSI client against the test plugin on a real unix socket: identity, idempotent
//! CreateVolume, and every way a call can fail, each naming the plugin, the RPC and the cause.

mod support;

use std::time::{Duration, Instant};

use mesos_dvdi::csi::proto::*;
use mesos_dvdi::csi::{Client, Code, CsiError, Rpc};
use support::csi::{CsiPlugin, Fault, Options};

const T: Duration = Duration::from_secs(10);

fn plugin(dir: &std::path::Path, options: Options) -> (CsiPlugin, Client) {
    let socket = dir.join("csi.sock");
    let plugin = CsiPlugin::start(&socket, &dir.join("plugin"), options);
    (plugin, Client::new("hostpath.csi.k8s.io", socket))
}

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(Default::default())),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create(client: &Client, name: &str, bytes: i64) -> Result<Volume, CsiError> {
    client.create_volume(
        CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            ..Default::default()
        },
        T,
    )
}

#[test]
fn identity_and_capabilities_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_plugin, client) = plugin(
        dir.path(),
        Options {
            controller_publish: true,
            ..Options::default()
        },
    );
    assert_eq!(
        client.get_plugin_info(T).unwrap().name,
        "hostpath.csi.k8s.io"
    );
    assert_eq!(
        client.get_plugin_capabilities(T).unwrap(),
        [plugin_capability::ServiceType::ControllerService]
    );
    assert!(client.probe(T).unwrap());
    assert_eq!(client.node_id(T).unwrap(), "node-1");
    assert_eq!(
        client.node_capabilities(T).unwrap(),
        [node_service_capability::RpcType::StageUnstageVolume]
    );
    use controller_service_capability::RpcType;
    assert_eq!(
        client.controller_capabilities(T).unwrap(),
        [RpcType::CreateDeleteVolume, RpcType::PublishUnpublishVolume]
    );
}

#[test]
fn create_volume_is_idempotent_by_name_and_another_size_is_named_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (_plugin, client) = plugin(dir.path(), Options::default());
    let a = create(&client, "pgdata", 1 << 20).unwrap();
    assert_eq!(
        create(&client, "pgdata", 1 << 20).unwrap().volume_id,
        a.volume_id
    );
    assert_ne!(
        create(&client, "other", 1 << 20).unwrap().volume_id,
        a.volume_id
    );
    let e = create(&client, "pgdata", 2 << 20).unwrap_err();
    assert_eq!(e.code(), Some(Code::AlreadyExists));
    let msg = e.to_string();
    for part in [
        "hostpath.csi.k8s.io",
        "CreateVolume",
        "ALREADY_EXISTS",
        "another size",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
}

#[test]
fn a_failure_names_the_plugin_the_rpc_the_code_and_the_plugins_message() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, client) = plugin(dir.path(), Options::default());
    plugin.fail(Rpc::Probe, Code::Unavailable, "warming up");
    let e = client.probe(T).unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable));
    assert_eq!(
        e.to_string(),
        "CSI plugin \"hostpath.csi.k8s.io\": Probe failed with UNAVAILABLE: warming up"
    );
    plugin.heal(Rpc::Probe);
    assert!(client.probe(T).unwrap());
}

#[test]
fn a_call_that_hangs_ends_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, client) = plugin(dir.path(), Options::default());
    plugin.fault(Rpc::NodeGetInfo, Fault::Hang);
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let e = client.node_id(deadline).unwrap_err();
    assert!(
        matches!(
            e,
            CsiError::Timeout {
                rpc: Rpc::NodeGetInfo,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    assert!(e.to_string().contains("did not answer within 0.3 s"), "{e}");
    // The connection still serves other calls.
    assert!(client.probe(T).unwrap());
}

#[test]
fn answers_without_required_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, client) = plugin(dir.path(), Options::default());
    for rpc in [Rpc::GetPluginInfo, Rpc::NodeGetInfo, Rpc::CreateVolume] {
        plugin.fault(rpc, Fault::Wrong);
    }
    let e = client.get_plugin_info(T).unwrap_err();
    assert!(
        e.to_string()
            .contains("GetPluginInfo answered without a plugin name"),
        "{e}"
    );
    let e = client.node_id(T).unwrap_err();
    assert!(
        e.to_string()
            .contains("NodeGetInfo answered without a node id"),
        "{e}"
    );
    let e = create(&client, "v", 0).unwrap_err();
    assert!(
        e.to_string()
            .contains("CreateVolume answered without a volume id"),
        "{e}"
    );
}

#[test]
fn no_plugin_at_the_socket_is_unreachable_not_a_grpc_code() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new("gone.csi", dir.path().join("none.sock"));
    let e = client.probe(T).unwrap_err();
    assert!(matches!(e, CsiError::Unreachable { .. }), "{e:?}");
    assert!(e.is_connection());
    assert!(e.to_string().contains("is the plugin running?"), "{e}");
}

#[test]
fn a_restarted_plugin_is_reached_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, client) = plugin(dir.path(), Options::default());
    assert!(client.probe(T).unwrap());
    drop(plugin);
    let e = client.probe(T).unwrap_err();
    assert!(e.is_connection(), "{e:?}");
    let (_again, _) = self::plugin(dir.path(), Options::default());
    assert!(client.probe(T).unwrap());
}
