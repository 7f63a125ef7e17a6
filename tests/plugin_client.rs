//! The Docker volume plugin client against test plugins served in-process, one fault per test.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesos_dvdi::backend::plugin::{discover, http, DiscoveryError, PluginAddr, PluginBackend};
use mesos_dvdi::backend::{Backend, BackendErrorKind, MountId, MountRequest, Scope, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use serde_json::json;
use support::plugin::{memory_plugin, Reply, TestPlugin};

fn driver(n: &str) -> DriverName {
    DriverName::new(n).unwrap()
}

fn vol(n: &str) -> VolumeName {
    VolumeName::new(n).unwrap()
}

fn timeouts(secs: u64) -> Timeouts {
    Timeouts {
        mount: Duration::from_secs(secs),
        unmount: Duration::from_secs(secs),
    }
}

fn backend(dir: &Path, secs: u64) -> PluginBackend {
    PluginBackend::discover(&driver("test"), &[dir.to_owned()], timeouts(secs)).unwrap()
}

fn mount(
    b: &PluginBackend,
    name: &str,
    id: &str,
) -> Result<PathBuf, mesos_dvdi::backend::BackendError> {
    b.mount(&MountRequest {
        name: &vol(name),
        opts: &VolumeOpts::parse("size=5").unwrap(),
        explicit_create: false,
        id: &MountId(id.into()),
    })
}

/// Answers Activate and Get; `f` answers everything else.
fn activating(
    f: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> impl Fn(&support::plugin::Request) -> Reply + Send + Sync {
    move |req| match req.path.as_str() {
        "/Plugin.Activate" => Reply::Json(200, json!({"Implements": ["VolumeDriver"]})),
        "/VolumeDriver.Get" => Reply::Json(200, json!({"Volume": {"Name": "v"}, "Err": ""})),
        p => f(p),
    }
}

#[test]
fn full_protocol_round_trip_against_a_well_behaved_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("vols")),
    );
    let b = backend(dir.path(), 10);
    assert_eq!(b.capabilities().unwrap().scope, Scope::Global);
    assert_eq!(b.get(&vol("pg")).unwrap(), None);
    let mp = mount(&b, "pg", "id-1").unwrap();
    assert_eq!(mp, dir.path().join("vols/pg"));
    assert_eq!(b.path(&vol("pg")).unwrap(), Some(mp.clone()));
    assert_eq!(b.get(&vol("pg")).unwrap().unwrap().name, "pg");
    assert_eq!(b.list().unwrap().len(), 1);
    b.unmount(&vol("pg"), &MountId("id-1".into())).unwrap();
    b.remove(&vol("pg")).unwrap();

    let reqs = plugin.requests();
    assert_eq!(
        plugin.paths(),
        [
            "/Plugin.Activate",
            "/VolumeDriver.Capabilities",
            "/VolumeDriver.Get",
            "/VolumeDriver.Get",
            "/VolumeDriver.Create",
            "/VolumeDriver.Mount",
            "/VolumeDriver.Path",
            "/VolumeDriver.Get",
            "/VolumeDriver.List",
            "/VolumeDriver.Unmount",
            "/VolumeDriver.Remove",
        ]
    );
    assert!(reqs
        .iter()
        .all(|r| r.accept.as_deref() == Some(http::ACCEPT)));
    let create = &reqs[4].body;
    assert_eq!(create["Opts"], json!({"size": "5"}));
    assert_eq!(reqs[5].body, json!({"Name": "pg", "ID": "id-1"}));
    assert_eq!(reqs[9].body, json!({"Name": "pg", "ID": "id-1"}));
}

#[test]
fn existing_volume_is_mounted_without_create_and_explicit_create_refuses_missing() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("vols")),
    );
    let b = backend(dir.path(), 10);
    b.create(&vol("a"), &VolumeOpts::empty()).unwrap();
    mount(&b, "a", "x").unwrap();
    assert_eq!(
        plugin
            .paths()
            .iter()
            .filter(|p| *p == "/VolumeDriver.Create")
            .count(),
        1
    );

    let e = b
        .mount(&MountRequest {
            name: &vol("missing"),
            opts: &VolumeOpts::empty(),
            explicit_create: true,
            id: &MountId("y".into()),
        })
        .unwrap_err();
    assert!(matches!(*e.kind, BackendErrorKind::NoSuchVolume), "{e:?}");
    assert!(
        !plugin
            .requests()
            .iter()
            .any(|r| r.body["Name"] == "missing" && r.path != "/VolumeDriver.Get"),
        "explicit create sent more than Get for the missing volume"
    );
}

#[test]
fn keep_alive_connection_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("vols")),
    );
    let b = backend(dir.path(), 10);
    for i in 0..5 {
        mount(&b, "v", &format!("id{i}")).unwrap();
    }
    assert!(plugin.requests().len() > 10);
    assert_eq!(plugin.connections(), 1);
}

#[test]
fn connection_refused_then_up_is_retried_until_the_plugin_listens() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("test.sock");
    // A socket file nobody listens on: connect(2) is refused.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let b = backend(dir.path(), 30);
    std::thread::scope(|s| {
        let call = s.spawn(|| b.capabilities());
        let _plugin = TestPlugin::unix(&sock, memory_plugin(dir.path().join("vols")));
        assert_eq!(call.join().unwrap().unwrap().scope, Scope::Global);
    });
}

#[test]
fn refused_until_the_deadline_names_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("test.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let b = PluginBackend::at(
        driver("test"),
        PluginAddr::Unix(sock.clone()),
        Timeouts {
            mount: Duration::from_millis(100),
            unmount: Duration::from_millis(100),
        },
    );
    let e = b.capabilities().unwrap_err();
    let text = render_chain(&e);
    assert!(
        text.contains("activate failed") && text.contains("connecting failed"),
        "{text}"
    );
    assert!(text.contains(&sock.display().to_string()), "{text}");
}

#[test]
fn plugin_that_never_answers_times_out_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let _plugin = TestPlugin::unix(&dir.path().join("test.sock"), activating(|_| Reply::Hang));
    let b = PluginBackend::discover(
        &driver("test"),
        &[dir.path().to_owned()],
        Timeouts {
            mount: Duration::from_millis(300),
            unmount: Duration::from_millis(300),
        },
    )
    .unwrap();
    let e = mount(&b, "v", "id").unwrap_err();
    let text = render_chain(&e);
    assert!(text.contains("mount failed"), "{text}");
    assert!(
        text.contains("VolumeDriver.Mount") && text.contains("no complete answer within"),
        "{text}"
    );
}

#[test]
fn http_500_with_err_is_the_plugins_message() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| {
            Reply::Json(
                500,
                json!({"Err": "volume is attached to another instance"}),
            )
        }),
    );
    let e = mount(&backend(dir.path(), 5), "v", "id").unwrap_err();
    let text = render_chain(&e);
    assert!(
        text.contains("the plugin said: volume is attached to another instance"),
        "{text}"
    );
    assert!(text.contains("volume \"v\" (driver \"test\")"), "{text}");
}

#[test]
fn http_200_with_err_is_a_failure_too() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| Reply::Json(200, json!({"Mountpoint": "/x", "Err": "quota exceeded"}))),
    );
    let text = render_chain(&mount(&backend(dir.path(), 5), "v", "id").unwrap_err());
    assert!(text.contains("quota exceeded"), "{text}");
}

#[test]
fn chunked_answer_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| Reply::Chunked(json!({"Mountpoint": "/mnt/chunked/volume", "Err": ""}), 3)),
    );
    assert_eq!(
        mount(&backend(dir.path(), 5), "v", "id").unwrap(),
        Path::new("/mnt/chunked/volume")
    );
}

#[test]
fn garbage_answer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| Reply::RawThenClose(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec())),
    );
    let text = render_chain(&mount(&backend(dir.path(), 5), "v", "id").unwrap_err());
    assert!(text.contains("not valid HTTP/1.1"), "{text}");
}

#[test]
fn non_json_body_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| {
            Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html/>!!".to_vec())
        }),
    );
    let text = render_chain(&mount(&backend(dir.path(), 5), "v", "id").unwrap_err());
    assert!(
        text.contains("not the expected JSON") && text.contains("<html/>"),
        "{text}"
    );
}

#[test]
fn connection_closed_mid_body_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| {
            Reply::RawThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"Mountpoint\":".to_vec(),
            )
        }),
    );
    let text = render_chain(&mount(&backend(dir.path(), 5), "v", "id").unwrap_err());
    assert!(
        text.contains("closed the connection before the answer was complete"),
        "{text}"
    );
}

#[test]
fn relative_mountpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| Reply::Json(200, json!({"Mountpoint": "relative/path", "Err": ""}))),
    );
    let text = render_chain(&mount(&backend(dir.path(), 5), "v", "id").unwrap_err());
    assert!(text.contains("not an absolute path"), "{text}");
}

#[test]
fn plugin_that_is_not_a_volume_driver_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        |_: &support::plugin::Request| Reply::Json(200, json!({"Implements": ["NetworkDriver"]})),
    );
    let text = render_chain(&backend(dir.path(), 5).capabilities().unwrap_err());
    assert!(
        text.contains("not a volume driver") && text.contains("NetworkDriver"),
        "{text}"
    );
}

#[test]
fn missing_capabilities_endpoint_means_local_scope() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        activating(|_| Reply::Json(404, json!("404 page not found"))),
    );
    assert_eq!(
        backend(dir.path(), 5).capabilities().unwrap().scope,
        Scope::Local
    );
}

#[test]
fn spec_file_pointing_at_tcp_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::tcp(memory_plugin(dir.path().join("vols")));
    fs::write(
        dir.path().join("test.spec"),
        format!("tcp://{}\n", plugin.tcp_addr()),
    )
    .unwrap();
    let b = backend(dir.path(), 5);
    assert_eq!(b.addr(), &PluginAddr::Tcp(plugin.tcp_addr()));
    assert!(mount(&b, "v", "id").is_ok());
}

#[test]
fn json_description_and_subdirectory_socket_are_found() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let sock = dir.path().join("sub/sub.sock");
    let _p = TestPlugin::unix(&sock, memory_plugin(dir.path().join("vols")));
    let found = discover(&driver("sub"), &[dir.path().to_owned()]).unwrap();
    assert_eq!(found.addr, PluginAddr::Unix(sock.clone()));

    fs::write(
        dir.path().join("viajson.json"),
        json!({"Name": "viajson", "Addr": format!("unix://{}", sock.display())}).to_string(),
    )
    .unwrap();
    let found = discover(&driver("viajson"), &[dir.path().to_owned()]).unwrap();
    assert_eq!(found.addr, PluginAddr::Unix(sock));

    fs::write(
        dir.path().join("tls.json"),
        r#"{"Name": "tls", "Addr": "tcp://127.0.0.1:1", "TLSConfig": {"CAFile": "/ca"}}"#,
    )
    .unwrap();
    let e = discover(&driver("tls"), &[dir.path().to_owned()]).unwrap_err();
    assert!(matches!(e, DiscoveryError::TlsUnsupported { .. }), "{e:?}");
}

#[test]
fn discovery_prefers_sockets_in_any_dir_then_specs_in_dir_order() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    fs::write(a.path().join("x.spec"), "tcp://127.0.0.1:1").unwrap();
    let _p = TestPlugin::unix(&b.path().join("x.sock"), memory_plugin(b.path().join("v")));
    let found = discover(&driver("x"), &[a.path().to_owned(), b.path().to_owned()]).unwrap();
    assert_eq!(found.addr, PluginAddr::Unix(b.path().join("x.sock")));

    fs::write(a.path().join("y.spec"), "tcp://127.0.0.1:1").unwrap();
    fs::write(b.path().join("y.spec"), "tcp://127.0.0.1:2").unwrap();
    let found = discover(&driver("y"), &[a.path().to_owned(), b.path().to_owned()]).unwrap();
    assert_eq!(found.addr, PluginAddr::Tcp("127.0.0.1:1".into()));

    fs::write(a.path().join("z.spec"), "ftp://nope").unwrap();
    let e = discover(&driver("z"), &[a.path().to_owned()]).unwrap_err();
    assert!(
        render_chain(&e).contains("unix:///"),
        "{}",
        render_chain(&e)
    );
}

#[test]
fn not_found_lists_every_path_looked_at() {
    let a = tempfile::tempdir().unwrap();
    let e = PluginBackend::discover(&driver("rexray"), &[a.path().to_owned()], timeouts(1))
        .unwrap_err();
    let text = render_chain(&e);
    for f in [
        "rexray.sock",
        "rexray/rexray.sock",
        "rexray.spec",
        "rexray.json",
    ] {
        assert!(
            text.contains(&a.path().join(f).display().to_string()),
            "{f}: {text}"
        );
    }
    assert!(matches!(*e.kind, BackendErrorKind::NoSuchDriver(_)));
}

#[test]
fn driver_names_cannot_escape_the_plugin_dirs() {
    for bad in ["../etc/x", "a/b", "..", "."] {
        assert!(DriverName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn parses_raw_responses() {
    let ok = http::parse_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"{}"[..]));
    let chunked = http::parse_response_bytes(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\n{}\r\n0\r\nTrailer: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(chunked.body, b"{}");
    let close = http::parse_response_bytes(b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}").unwrap();
    assert_eq!(close.body, b"{\"a\":1}");
    assert!(matches!(
        http::parse_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
        Err(http::HttpError::TooLarge { .. })
    ));
    assert!(matches!(
        http::parse_response_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        Err(http::HttpError::Malformed(_))
    ));
}

mod props {
    use super::http;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn response_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = http::parse_response_bytes(&bytes);
        }

        #[test]
        fn response_parser_never_panics_on_http_like_input(
            status in 100u16..600,
            headers in prop::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,30}"), 0..6),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut raw = format!("HTTP/1.1 {status} X\r\n");
            for (k, v) in headers { raw.push_str(&format!("{k}: {v}\r\n")); }
            raw.push_str("\r\n");
            let mut bytes = raw.into_bytes();
            bytes.extend(body);
            let _ = http::parse_response_bytes(&bytes);
        }
    }
}
