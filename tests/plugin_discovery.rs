//! Plugin discovery by driver name, in Docker's order (moby `pkg/plugins/discovery.go`), against
//! real files and sockets in temporary plugin directories.

mod support;

use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use mesos_dvdi::backend::plugin::discovery::PluginFileKind;
use mesos_dvdi::backend::plugin::{
    discover, list_plugins, DiscoveryError, PluginAddr, PluginBackend,
};
use mesos_dvdi::backend::{Backend, BackendErrorKind, MountId, MountRequest, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use serde_json::json;
use support::plugin::{memory_plugin, TestPlugin};

fn driver(n: &str) -> DriverName {
    DriverName::new(n).unwrap()
}

/// A socket file at `path` (bound, then closed: discovery only looks at the file type).
fn socket_file(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(UnixListener::bind(path).unwrap());
}

fn found(name: &str, dirs: &[&Path]) -> PluginAddr {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    discover(&driver(name), &dirs)
        .unwrap_or_else(|e| panic!("{}", render_chain(&e)))
        .addr
}

#[test]
fn sockets_in_any_dir_win_over_spec_files_in_earlier_dirs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("x.spec"), "tcp://127.0.0.1:1").unwrap();
    fs::write(a.path().join("x.json"), r#"{"Addr": "tcp://127.0.0.1:2"}"#).unwrap();
    socket_file(&b.path().join("x/x.sock"));
    assert_eq!(
        found("x", &[a.path(), b.path()]),
        PluginAddr::Unix(b.path().join("x/x.sock"))
    );
}

#[test]
fn socket_order_is_dir_by_dir_and_flat_before_subdirectory() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    socket_file(&a.path().join("x/x.sock"));
    socket_file(&b.path().join("x.sock"));
    assert_eq!(
        found("x", &[a.path(), b.path()]),
        PluginAddr::Unix(a.path().join("x/x.sock")),
        "an earlier directory wins"
    );
    socket_file(&a.path().join("x.sock"));
    assert_eq!(
        found("x", &[a.path(), b.path()]),
        PluginAddr::Unix(a.path().join("x.sock")),
        "NAME.sock before NAME/NAME.sock"
    );
}

#[test]
fn a_regular_file_named_like_a_socket_is_not_a_plugin() {
    let a = tempfile::tempdir().unwrap();
    fs::write(a.path().join("x.sock"), "").unwrap();
    fs::write(a.path().join("x.spec"), "unix:///run/x.sock").unwrap();
    assert_eq!(
        found("x", &[a.path()]),
        PluginAddr::Unix("/run/x.sock".into())
    );
}

#[test]
fn spec_files_in_docker_order_within_and_across_dirs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tcp = |port: u16| PluginAddr::Tcp(format!("127.0.0.1:{port}"));
    // In one directory: NAME.spec, NAME/NAME.spec, NAME.json, NAME/NAME.json.
    fs::create_dir(b.path().join("y")).unwrap();
    fs::write(
        b.path().join("y/y.json"),
        r#"{"Addr": "tcp://127.0.0.1:4"}"#,
    )
    .unwrap();
    assert_eq!(found("y", &[b.path()]), tcp(4));
    fs::write(b.path().join("y.json"), r#"{"Addr": "tcp://127.0.0.1:3"}"#).unwrap();
    assert_eq!(found("y", &[b.path()]), tcp(3));
    fs::write(b.path().join("y/y.spec"), "tcp://127.0.0.1:2\n").unwrap();
    assert_eq!(found("y", &[b.path()]), tcp(2));
    fs::write(b.path().join("y.spec"), "tcp://127.0.0.1:1\n").unwrap();
    assert_eq!(found("y", &[b.path()]), tcp(1));
    // Across directories: the earlier directory's json beats the later one's spec.
    fs::write(a.path().join("y.json"), r#"{"Addr": "tcp://127.0.0.1:9"}"#).unwrap();
    assert_eq!(found("y", &[a.path(), b.path()]), tcp(9));
}

#[test]
fn the_first_spec_file_found_decides_even_when_it_is_bad() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(a.path().join("z.spec"), "ftp://nope").unwrap();
    fs::write(b.path().join("z.spec"), "tcp://127.0.0.1:1").unwrap();
    let e = discover(&driver("z"), &[a.path().to_owned(), b.path().to_owned()]).unwrap_err();
    assert!(matches!(e, DiscoveryError::BadAddress { .. }), "{e:?}");
    let text = render_chain(&e);
    assert!(
        text.contains(&a.path().join("z.spec").display().to_string()) && text.contains("unix:///"),
        "names the file and the forms that work: {text}"
    );
}

#[test]
fn spec_file_addresses() {
    let a = tempfile::tempdir().unwrap();
    for (content, want) in [
        (
            "unix:///run/p.sock\n",
            Ok(PluginAddr::Unix("/run/p.sock".into())),
        ),
        (
            "  tcp://127.0.0.1:8080  ",
            Ok(PluginAddr::Tcp("127.0.0.1:8080".into())),
        ),
        (
            "tcp://[::1]:8080/",
            Ok(PluginAddr::Tcp("[::1]:8080".into())),
        ),
        // Docker speaks plain HTTP to any scheme but https.
        (
            "http://localhost:80",
            Ok(PluginAddr::Tcp("localhost:80".into())),
        ),
        ("unix://relative.sock", Err("address")),
        ("tcp://127.0.0.1", Err("address")),
        ("tcp://:80", Err("address")),
        ("", Err("address")),
        ("https://example.com:443", Err("tls")),
    ] {
        fs::write(a.path().join("s.spec"), content).unwrap();
        let got = discover(&driver("s"), &[a.path().to_owned()]);
        match (want, got) {
            (Ok(addr), Ok(f)) => {
                assert_eq!(f.addr, addr, "{content:?}");
                assert_eq!(f.kind, PluginFileKind::Spec);
            }
            (Err("address"), Err(DiscoveryError::BadAddress { .. })) => {}
            (Err("tls"), Err(DiscoveryError::TlsUnsupported { .. })) => {}
            (want, got) => panic!("{content:?}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn json_description_and_its_tls_config() {
    let a = tempfile::tempdir().unwrap();
    let sock = a.path().join("real.sock");
    let _p = TestPlugin::unix(&sock, memory_plugin(a.path().join("vols")));
    let write = |v: serde_json::Value| fs::write(a.path().join("j.json"), v.to_string()).unwrap();
    let unix = format!("unix://{}", sock.display());

    write(json!({"Name": "j", "Addr": unix}));
    let f = discover(&driver("j"), &[a.path().to_owned()]).unwrap();
    assert_eq!(
        (f.addr, f.kind),
        (PluginAddr::Unix(sock.clone()), PluginFileKind::Json)
    );

    // Docker uses TLS only for https://; a TLSConfig that names no file asks for nothing.
    write(json!({"Name": "j", "Addr": unix, "TLSConfig": {"InsecureSkipVerify": true}}));
    assert_eq!(found("j", &[a.path()]), PluginAddr::Unix(sock.clone()));

    for asks in [
        json!({"Name": "j", "Addr": "tcp://127.0.0.1:1", "TLSConfig": {"CAFile": "/ca.pem"}}),
        json!({"Name": "j", "Addr": "tcp://127.0.0.1:1", "TLSConfig": {"CertFile": "/c", "KeyFile": "/k"}}),
        json!({"Name": "j", "Addr": "https://plugins.example:443"}),
    ] {
        write(asks.clone());
        let e = discover(&driver("j"), &[a.path().to_owned()]).unwrap_err();
        assert!(
            matches!(e, DiscoveryError::TlsUnsupported { .. }),
            "{asks}: {e:?}"
        );
        assert!(
            render_chain(&e).contains("does not speak"),
            "{}",
            render_chain(&e)
        );
    }

    fs::write(a.path().join("j.json"), "{not json").unwrap();
    let e = discover(&driver("j"), &[a.path().to_owned()]).unwrap_err();
    assert!(matches!(e, DiscoveryError::BadJson { .. }), "{e:?}");
}

#[test]
fn a_json_described_plugin_serves_a_mount() {
    let a = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &a.path().join("elsewhere.sock"),
        memory_plugin(a.path().join("vols")),
    );
    fs::write(
        a.path().join("viajson.json"),
        json!({"Name": "viajson", "Addr": format!("unix://{}", a.path().join("elsewhere.sock").display())})
            .to_string(),
    )
    .unwrap();
    let b = PluginBackend::discover(
        &driver("viajson"),
        &[a.path().to_owned()],
        Timeouts::default(),
    )
    .unwrap();
    let name = VolumeName::new("v").unwrap();
    let mp = b
        .mount(&MountRequest {
            name: &name,
            opts: &VolumeOpts::empty(),
            explicit_create: false,
            id: &MountId("i".into()),
            read_only: false,
            csi: None,
        })
        .unwrap();
    assert_eq!(mp, a.path().join("vols/v"));
    assert_eq!(plugin.count("/VolumeDriver.Mount"), 1);
}

#[test]
fn spec_file_pointing_at_tcp_loopback_serves_a_mount() {
    // The literal address, and a host name (looked up on the side, within the call's deadline;
    // `localhost` may come first as ::1, where nothing listens, then as 127.0.0.1).
    for by_name in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let plugin = TestPlugin::tcp(memory_plugin(dir.path().join("vols")));
        let hostport = if by_name {
            let port = plugin.tcp_addr().rsplit(':').next().unwrap().to_owned();
            format!("localhost:{port}")
        } else {
            plugin.tcp_addr()
        };
        fs::write(dir.path().join("test.spec"), format!("tcp://{hostport}\n")).unwrap();
        tcp_plugin_serves_a_mount(dir.path(), &hostport, &plugin);
    }
}

fn tcp_plugin_serves_a_mount(dir: &Path, hostport: &str, plugin: &TestPlugin) {
    let b =
        PluginBackend::discover(&driver("test"), &[dir.to_owned()], Timeouts::default()).unwrap();
    assert_eq!(b.addr(), &PluginAddr::Tcp(hostport.to_owned()));
    let name = VolumeName::new("v").unwrap();
    let id = MountId("i".into());
    let mp = b
        .mount(&MountRequest {
            name: &name,
            opts: &VolumeOpts::empty(),
            explicit_create: false,
            id: &id,
            read_only: false,
            csi: None,
        })
        .unwrap();
    assert_eq!(mp, dir.join("vols/v"));
    b.unmount(&name, &id).unwrap();
    assert_eq!(
        plugin.paths(),
        [
            "/Plugin.Activate",
            "/VolumeDriver.Get",
            "/VolumeDriver.Create",
            "/VolumeDriver.Mount",
            "/VolumeDriver.Unmount"
        ]
    );
}

#[test]
fn not_found_names_the_driver_every_path_looked_at_and_what_to_do() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = PluginBackend::discover(
        &driver("rexray"),
        &[a.path().to_owned(), b.path().to_owned()],
        Timeouts {
            mount: Duration::from_secs(1),
            unmount: Duration::from_secs(1),
        },
    )
    .unwrap_err();
    let BackendErrorKind::NoSuchDriver(DiscoveryError::NotFound { driver, searched }) = &*e.kind
    else {
        panic!("{e:?}")
    };
    assert_eq!(driver, "rexray");
    let expected: Vec<PathBuf> = [a.path(), b.path()]
        .iter()
        .flat_map(|d| [d.join("rexray.sock"), d.join("rexray/rexray.sock")])
        .chain([a.path(), b.path()].iter().flat_map(|d| {
            [
                d.join("rexray.spec"),
                d.join("rexray/rexray.spec"),
                d.join("rexray.json"),
                d.join("rexray/rexray.json"),
            ]
        }))
        .collect();
    assert_eq!(searched, &expected, "Docker's order");
    let text = render_chain(&e);
    assert!(
        text.starts_with("driver \"rexray\": activate failed"),
        "{text}"
    );
    for p in &expected {
        assert!(text.contains(&p.display().to_string()), "{text}");
    }
    assert!(text.contains("start the plugin"), "{text}");
}

#[test]
fn list_plugins_reports_every_announcement_once_with_its_kind() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    socket_file(&a.path().join("flat.sock"));
    socket_file(&a.path().join("nested/nested.sock"));
    fs::write(a.path().join("spec.spec"), "tcp://127.0.0.1:5").unwrap();
    fs::write(
        b.path().join("desc.json"),
        r#"{"Addr": "unix:///run/d.sock"}"#,
    )
    .unwrap();
    // Shadowed by a's socket; a regular ".sock" file and other files announce nothing.
    fs::write(b.path().join("flat.spec"), "tcp://127.0.0.1:6").unwrap();
    fs::write(b.path().join("plain.sock"), "").unwrap();
    fs::write(b.path().join("README"), "").unwrap();
    fs::write(b.path().join("broken.spec"), "gopher://x").unwrap();

    let listed = list_plugins(&[a.path().to_owned(), b.path().to_owned()]);
    let ok: Vec<(String, PluginFileKind)> = listed
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|f| (f.name.clone(), f.kind))
        .collect();
    assert_eq!(
        ok,
        [
            ("desc".to_owned(), PluginFileKind::Json),
            ("flat".to_owned(), PluginFileKind::Sock),
            ("nested".to_owned(), PluginFileKind::Sock),
            ("spec".to_owned(), PluginFileKind::Spec),
        ]
    );
    let errors: Vec<_> = listed.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        matches!(errors[..], [DiscoveryError::BadAddress { .. }]),
        "{errors:?}"
    );
    assert!(list_plugins(&[PathBuf::from("/nonexistent/dvdi-plugins")]).is_empty());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever name is accepted as a driver, every path discovery looks at is a direct
        /// child of a plugin directory, or `NAME/NAME.ext` below one: never `..`, never an
        /// absolute path smuggled in, never elsewhere.
        #[test]
        fn driver_names_never_escape_the_plugin_dirs(name in "\\PC{1,40}|\\.{1,3}|[./a]{1,6}") {
            let Ok(d) = DriverName::new(name.as_str()) else { return Ok(()) };
            let dir = tempfile::tempdir().unwrap();
            let Err(DiscoveryError::NotFound { searched, .. }) =
                discover(&d, &[dir.path().to_owned()])
            else {
                panic!("an empty directory announced {name:?}")
            };
            prop_assert_eq!(searched.len(), 6);
            for p in searched {
                let rel = p.strip_prefix(dir.path()).unwrap();
                let parts: Vec<Component> = rel.components().collect();
                prop_assert!(
                    parts.iter().all(|c| matches!(c, Component::Normal(_))),
                    "{}", p.display()
                );
                prop_assert!(matches!(parts.len(), 1 | 2), "{}", p.display());
                if parts.len() == 2 {
                    prop_assert_eq!(parts[0].as_os_str(), name.as_str());
                }
            }
        }
    }

    #[test]
    fn names_that_would_escape_are_not_driver_names() {
        for bad in ["../etc/x", "a/b", "/abs", "..", ".", "x\0y", ""] {
            assert!(DriverName::new(bad).is_err(), "{bad:?}");
        }
    }
}
