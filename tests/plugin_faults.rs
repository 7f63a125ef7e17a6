//! The Docker volume plugin client against test plugins served in-process on unix sockets (test
//! doubles that misbehave on demand), one fault per test; then the protocol as a well-behaved
//! plugin sees it, and the response parser under arbitrary bytes.
//!
//! No test sleeps to synchronise or measures time: a timeout test sets a short timeout and
//! checks the error's kind, and the activation retry is observed through its log records.

mod support;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;

use mesos_dvdi::backend::plugin::http::{self, HttpError};
use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend, PluginError};
use mesos_dvdi::backend::{
    Backend, BackendError, BackendErrorKind, Call, MountId, MountRequest, Scope, Timeouts,
};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use serde_json::json;
use support::plugin::{memory_plugin, Reply, Request, TestPlugin};

fn driver(n: &str) -> DriverName {
    DriverName::new(n).unwrap()
}

fn vol(n: &str) -> VolumeName {
    VolumeName::new(n).unwrap()
}

fn timeouts(t: Duration) -> Timeouts {
    Timeouts {
        mount: t,
        unmount: t,
    }
}

/// Generous: only a broken test would wait this long.
const LONG: Duration = Duration::from_secs(60);
/// Short: for tests whose point is that the deadline passes.
const SHORT: Duration = Duration::from_millis(200);

fn backend(dir: &Path, t: Duration) -> PluginBackend {
    PluginBackend::discover(&driver("test"), &[dir.to_owned()], timeouts(t)).unwrap()
}

fn mount(b: &PluginBackend, name: &str, id: &str) -> Result<PathBuf, BackendError> {
    b.mount(&MountRequest {
        name: &vol(name),
        opts: &VolumeOpts::parse("size=5").unwrap(),
        explicit_create: false,
        id: &MountId(id.into()),
        read_only: false,
        csi: None,
    })
}

/// A test plugin on `dir/test.sock` that answers Activate and Get (the volume exists) itself
/// and everything else with `f`.
fn plugin(dir: &Path, f: impl Fn(&str) -> Reply + Send + Sync + 'static) -> TestPlugin {
    TestPlugin::unix(&dir.join("test.sock"), move |req: &Request| {
        match req.path.as_str() {
            "/Plugin.Activate" => Reply::Json(200, json!({"Implements": ["VolumeDriver"]})),
            "/VolumeDriver.Get" => Reply::Json(200, json!({"Volume": {"Name": "v"}, "Err": ""})),
            p => f(p),
        }
    })
}

/// The plugin error under a backend error, and the HTTP step under that when there is one.
fn plugin_error(e: &BackendError) -> &PluginError {
    match &*e.kind {
        BackendErrorKind::Plugin(p) => p,
        other => panic!("not a plugin error: {other:?}"),
    }
}

fn http_error(e: &BackendError) -> &HttpError {
    match plugin_error(e) {
        PluginError::Http { source, .. } => source,
        other => panic!("not an HTTP failure: {other:?}"),
    }
}

// --- Activation and its retry -------------------------------------------------------------

/// Log records, so a test can wait for the client to have retried (instead of sleeping).
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOGGED: Condvar = Condvar::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOG.lock().unwrap().push(record.args().to_string());
        LOGGED.notify_all();
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Blocks until a log record contains every one of `needles`.
fn wait_for_log(needles: &[&str]) {
    let log = LOG.lock().unwrap();
    let (_log, waited) = LOGGED
        .wait_timeout_while(log, LONG, |l| {
            !l.iter().any(|r| needles.iter().all(|n| r.contains(n)))
        })
        .unwrap();
    assert!(!waited.timed_out(), "no log record with {needles:?}");
}

#[test]
fn activation_waits_for_a_socket_that_is_missing_then_refusing_then_up() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("test.sock");
    let b = PluginBackend::at(
        driver("test"),
        PluginAddr::Unix(sock.clone()),
        timeouts(LONG),
    );
    let retrying = format!("{}: not listening yet", PluginAddr::Unix(sock.clone()));
    std::thread::scope(|s| {
        let call = s.spawn(|| b.capabilities());
        // No socket file yet: retried.
        wait_for_log(&[&retrying, "No such file"]);
        // A socket file nobody listens on: connect(2) is refused, retried.
        drop(UnixListener::bind(&sock).unwrap());
        wait_for_log(&[&retrying, "refused"]);
        let plugin = TestPlugin::unix(&sock, memory_plugin(dir.path().join("vols")));
        assert_eq!(call.join().unwrap().unwrap().scope, Scope::Global);
        assert_eq!(
            plugin.paths(),
            ["/Plugin.Activate", "/VolumeDriver.Capabilities"]
        );
    });
}

#[test]
fn refused_until_the_deadline_is_not_listening_naming_the_plugin_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("test.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let b = backend(dir.path(), SHORT);
    let e = b.capabilities().unwrap_err();
    assert_eq!(e.call, Call::Activate);
    assert!(
        matches!(plugin_error(&e), PluginError::NotListening { source: HttpError::Connect(io), .. }
            if io.kind() == ErrorKind::ConnectionRefused),
        "{e:?}"
    );
    let text = render_chain(&e);
    assert!(
        text.contains(&format!(
            "Plugin.Activate: the plugin is not listening at unix://{}; connecting was tried for",
            sock.display()
        )),
        "{text}"
    );
}

#[test]
fn activation_happens_once_and_other_failures_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let p = TestPlugin::unix(&dir.path().join("test.sock"), |req: &Request| {
        match req.path.as_str() {
            "/Plugin.Activate" => Reply::Json(500, json!({"Err": "warming up"})),
            _ => Reply::Json(200, json!({})),
        }
    });
    let b = backend(dir.path(), LONG);
    let text = render_chain(&b.list().unwrap_err());
    assert!(text.contains("the plugin said: warming up"), "{text}");
    assert_eq!(p.count("/Plugin.Activate"), 1, "an answer is not retried");

    let dir = tempfile::tempdir().unwrap();
    let p = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("v")),
    );
    let b = backend(dir.path(), LONG);
    b.list().unwrap();
    b.capabilities().unwrap();
    mount(&b, "v", "1").unwrap();
    assert_eq!(p.count("/Plugin.Activate"), 1);
}

#[test]
fn plugin_that_is_not_a_volume_driver_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _p = TestPlugin::unix(&dir.path().join("test.sock"), |_: &Request| {
        Reply::Json(200, json!({"Implements": ["NetworkDriver"]}))
    });
    let e = backend(dir.path(), LONG).capabilities().unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::NotVolumeDriver { implements, .. } if implements == &["NetworkDriver"]),
        "{e:?}"
    );
}

// --- Faults in one call --------------------------------------------------------------------

#[test]
fn plugin_that_never_answers_times_out_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| Reply::Hang);
    let e = mount(&backend(dir.path(), SHORT), "v", "id").unwrap_err();
    assert_eq!(e.call, Call::Mount);
    assert!(
        matches!(plugin_error(&e), PluginError::Http { endpoint: "VolumeDriver.Mount", source: HttpError::Timeout { after }, .. } if *after == SHORT),
        "{e:?}"
    );
    let text = render_chain(&e);
    assert!(
        text.starts_with(
            "volume \"v\" (driver \"test\"): mount failed: VolumeDriver.Mount at unix://"
        ) && text.ends_with(&format!("no complete answer within {SHORT:?}")),
        "{text}"
    );
}

#[test]
fn unmount_and_remove_use_the_unmount_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| Reply::Hang);
    let b = PluginBackend::discover(
        &driver("test"),
        &[dir.path().to_owned()],
        Timeouts {
            mount: LONG,
            unmount: SHORT,
        },
    )
    .unwrap();
    for e in [
        b.unmount(&vol("v"), &MountId("id".into())).unwrap_err(),
        b.remove(&vol("v")).unwrap_err(),
    ] {
        assert!(
            matches!(http_error(&e), HttpError::Timeout { after } if *after == SHORT),
            "{e:?}"
        );
    }
}

#[test]
fn plugin_that_never_accepts_times_out_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("test.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // A listen backlog of zero holds one pending connection; with it taken, connect(2) waits
    // for the plugin to accept, which it never does (a wedged plugin).
    // SAFETY: listen(2) on a socket descriptor the listener owns; it takes no pointers.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let _pending = UnixStream::connect(&sock).unwrap();
    let e = backend(dir.path(), SHORT).capabilities().unwrap_err();
    assert!(matches!(http_error(&e), HttpError::Timeout { .. }), "{e:?}");
}

#[test]
fn host_name_whose_name_server_never_answers_times_out_within_the_call() {
    // A name server (test double) that takes queries and never answers, made this thread's only
    // one with a resolv.conf bound over /etc/resolv.conf in a private mount namespace.
    let dir = tempfile::tempdir().unwrap();
    let server = std::net::UdpSocket::bind("127.77.0.53:53").expect("bind a UDP port 53");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(&conf, "nameserver 127.77.0.53\n").unwrap();
    let e = support::host::in_private_mount_ns(|| {
        nix::mount::mount(
            Some(&conf),
            "/etc/resolv.conf",
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind resolv.conf");
        let client = http::Client::new(PluginAddr::Tcp("plugin.unanswered.test:8080".into()));
        client
            .post("/Plugin.Activate", b"{}", SHORT)
            .expect_err("no name server answered")
    });
    assert!(
        matches!(e, HttpError::Timeout { after } if after == SHORT),
        "{e:?}"
    );
    drop(server);
}

#[test]
fn http_500_with_err_is_the_plugins_message() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::Json(
            500,
            json!({"Err": "volume is attached to another instance"}),
        )
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::PluginErr { endpoint: "VolumeDriver.Mount", message, .. } if message == "volume is attached to another instance"),
        "{e:?}"
    );
    assert_eq!(
        render_chain(&e),
        format!(
            "volume \"v\" (driver \"test\"): mount failed: VolumeDriver.Mount at unix://{}: the plugin said: volume is attached to another instance",
            dir.path().join("test.sock").display()
        )
    );
}

#[test]
fn http_200_with_err_is_a_failure_too() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::Json(200, json!({"Mountpoint": "/x", "Err": "quota exceeded"}))
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::PluginErr { message, .. } if message == "quota exceeded"),
        "{e:?}"
    );
}

#[test]
fn non_200_without_err_is_a_status_error_with_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::RawThenClose(b"HTTP/1.1 503 Busy\r\nContent-Length: 9\r\n\r\ntry later".to_vec())
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::Status { status: 503, body, .. } if body == "try later"),
        "{e:?}"
    );
}

#[test]
fn chunked_answer_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::Chunked(json!({"Mountpoint": "/mnt/chunked/volume", "Err": ""}), 3)
    });
    assert_eq!(
        mount(&backend(dir.path(), LONG), "v", "id").unwrap(),
        Path::new("/mnt/chunked/volume")
    );
}

#[test]
fn garbage_answer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::RawThenClose(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec())
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(matches!(http_error(&e), HttpError::Malformed(_)), "{e:?}");
    assert!(render_chain(&e).contains("not valid HTTP/1.1"));
}

#[test]
fn non_json_body_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html/>!!".to_vec())
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::BadJson { body, .. } if body == "<html/>!!"),
        "{e:?}"
    );
}

#[test]
fn json_that_is_not_an_object_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| Reply::Json(200, json!(["/mnt/x"])));
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::MissingField { .. }),
        "{e:?}"
    );
}

#[test]
fn connection_closed_mid_body_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::RawThenClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"Mountpoint\":".to_vec(),
        )
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(matches!(http_error(&e), HttpError::Truncated), "{e:?}");
    assert!(render_chain(&e).contains("closed the connection before the answer was complete"));
}

#[test]
fn oversized_answer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| {
        Reply::RawThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                http::MAX_BODY + 1
            )
            .into_bytes(),
        )
    });
    let e = mount(&backend(dir.path(), LONG), "v", "id").unwrap_err();
    assert!(
        matches!(http_error(&e), HttpError::TooLarge { .. }),
        "{e:?}"
    );
}

#[test]
fn mount_answers_are_passed_on_as_given_for_the_registry_to_judge() {
    // Judged (and undone) by backend::answer::Checked: see tests/plugin_answers.rs.
    for mp in ["relative/path", ""] {
        let dir = tempfile::tempdir().unwrap();
        let _p = plugin(dir.path(), move |_| {
            Reply::Json(200, json!({"Mountpoint": mp, "Err": ""}))
        });
        let answer = mount(&backend(dir.path(), LONG), "v", "id").unwrap();
        assert_eq!(answer, PathBuf::from(mp));
    }
}

// --- Connection reuse ----------------------------------------------------------------------

#[test]
fn keep_alive_connection_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("vols")),
    );
    let b = backend(dir.path(), LONG);
    for i in 0..5 {
        mount(&b, "v", &format!("id{i}")).unwrap();
    }
    assert_eq!(
        plugin.requests().len(),
        1 + 1 + 5 * 2,
        "activate, create, get+mount ×5"
    );
    assert_eq!(plugin.connections(), 1);
}

#[test]
fn idle_connection_the_plugin_closed_is_replaced_transparently() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(dir.path(), |path| match path {
        // Answers with keep-alive framing, then drops the connection while it sits idle.
        "/VolumeDriver.Capabilities" => {
            Reply::JsonThenClose(200, json!({"Capabilities": {"Scope": "local"}}))
        }
        _ => Reply::Json(200, json!({"Mountpoint": "/mnt/v", "Err": ""})),
    });
    let b = backend(dir.path(), LONG);
    b.capabilities().unwrap();
    assert_eq!(b.path(&vol("v")).unwrap(), Some(PathBuf::from("/mnt/v")));
    assert_eq!(p.connections(), 2);
    assert_eq!(
        p.count("/VolumeDriver.Path"),
        1,
        "sent once, on the new connection"
    );
}

#[test]
fn reused_connection_closed_after_part_of_the_answer_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(dir.path(), |path| match path {
        // A complete head, then nothing: the plugin had begun to answer, so it may have acted.
        "/VolumeDriver.Path" => {
            Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n".to_vec())
        }
        _ => Reply::Json(200, json!({"Capabilities": {"Scope": "local"}})),
    });
    let b = backend(dir.path(), LONG);
    b.capabilities().unwrap();
    let e = b.path(&vol("v")).unwrap_err();
    assert!(matches!(http_error(&e), HttpError::Truncated), "{e:?}");
    assert_eq!(p.count("/VolumeDriver.Path"), 1);
    assert_eq!(p.connections(), 1);
}

// --- The protocol against a well-behaved plugin -------------------------------------------

#[test]
fn full_protocol_round_trip_against_a_well_behaved_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = TestPlugin::unix(
        &dir.path().join("test.sock"),
        memory_plugin(dir.path().join("vols")),
    );
    let b = backend(dir.path(), LONG);
    assert_eq!(b.capabilities().unwrap().scope, Scope::Global);
    assert_eq!(b.get(&vol("pg")).unwrap(), None);
    let mp = mount(&b, "pg", "id-1").unwrap();
    assert_eq!(mp, dir.path().join("vols/pg"));
    assert_eq!(b.path(&vol("pg")).unwrap(), Some(mp.clone()));
    let info = b.get(&vol("pg")).unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.mountpoint), ("pg", Some(mp)));
    assert_eq!(info.status, json!({"mounts": 1}));
    assert_eq!(b.list().unwrap().len(), 1);
    b.unmount(&vol("pg"), &MountId("id-1".into())).unwrap();
    assert_eq!(b.path(&vol("pg")).unwrap(), None);
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
            "/VolumeDriver.Path",
            "/VolumeDriver.Remove",
        ]
    );
    assert!(reqs
        .iter()
        .all(|r| r.accept.as_deref() == Some(http::ACCEPT)));
    assert_eq!(reqs[4].body, json!({"Name": "pg", "Opts": {"size": "5"}}));
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
    let b = backend(dir.path(), LONG);
    b.create(&vol("a"), &VolumeOpts::empty()).unwrap();
    mount(&b, "a", "x").unwrap();
    assert_eq!(plugin.count("/VolumeDriver.Create"), 1);

    let e = b
        .mount(&MountRequest {
            name: &vol("missing"),
            opts: &VolumeOpts::empty(),
            explicit_create: true,
            id: &MountId("y".into()),
            read_only: false,
            csi: None,
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
fn plugin_without_get_still_mounts_as_docker_would() {
    // Docker's volume store reads any failed Get as "no such volume" and calls Create, which
    // plugins answer idempotently; a plugin that predates Get must keep working.
    let dir = tempfile::tempdir().unwrap();
    let p = TestPlugin::unix(&dir.path().join("test.sock"), |req: &Request| {
        match req.path.as_str() {
            "/Plugin.Activate" => Reply::Json(200, json!({"Implements": ["VolumeDriver"]})),
            "/VolumeDriver.Get" => Reply::Json(404, json!("404 page not found")),
            _ => Reply::Json(200, json!({"Mountpoint": "/mnt/old", "Err": ""})),
        }
    });
    let b = backend(dir.path(), LONG);
    assert_eq!(mount(&b, "v", "1").unwrap(), Path::new("/mnt/old"));
    assert_eq!(p.count("/VolumeDriver.Create"), 1);
    // With explicit_create, a plugin that cannot say whether the volume exists is an error,
    // not a guess either way.
    let e = b
        .mount(&MountRequest {
            name: &vol("v"),
            opts: &VolumeOpts::empty(),
            explicit_create: true,
            id: &MountId("2".into()),
            read_only: false,
            csi: None,
        })
        .unwrap_err();
    assert!(
        matches!(plugin_error(&e), PluginError::Status { status: 404, .. }),
        "{e:?}"
    );
    assert_eq!(p.count("/VolumeDriver.Create"), 1);
}

#[test]
fn capabilities_follow_docker_defaults() {
    for (reply, want) in [
        // No such endpoint: the plugin has no way to say, and is local.
        (Reply::Json(404, json!("404 page not found")), Scope::Local),
        (
            Reply::Json(404, json!({"Err": "not implemented"})),
            Scope::Local,
        ),
        (Reply::Json(405, json!("method not allowed")), Scope::Local),
        (
            Reply::Json(501, json!({"Err": "not implemented"})),
            Scope::Local,
        ),
        (Reply::Json(200, json!({})), Scope::Local),
        (
            Reply::Json(200, json!({"Capabilities": {"Scope": "Global"}})),
            Scope::Global,
        ),
        (
            Reply::Json(200, json!({"Capabilities": {"Scope": "cluster"}})),
            Scope::Local,
        ),
        (
            Reply::Json(200, json!({"Capabilities": {"Scope": "local"}})),
            Scope::Local,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let reply = Mutex::new(Some(reply));
        let _p = plugin(dir.path(), move |_| {
            reply.lock().unwrap().take().unwrap_or(Reply::Hang)
        });
        assert_eq!(
            backend(dir.path(), LONG).capabilities().unwrap().scope,
            want
        );
    }
    // A failed answer is not "local" (Docker takes it so): the scope is unknown, and a global
    // plugin that stumbles once must not lose its leases.
    for reply in [
        Reply::Json(500, json!({"Err": "still starting up"})),
        Reply::Json(200, json!({"Err": "no volume driver yet"})),
        Reply::Json(503, json!("unavailable")),
        Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope".to_vec()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let reply = Mutex::new(Some(reply));
        let _p = plugin(dir.path(), move |_| {
            reply.lock().unwrap().take().unwrap_or(Reply::Hang)
        });
        let e = backend(dir.path(), LONG).capabilities().unwrap_err();
        assert!(matches!(e.call, Call::Capabilities), "{e:?}");
        assert!(plugin_error(&e).is_answer(), "{e:?}");
    }
    // A plugin that is down is not "local": it is down.
    let dir = tempfile::tempdir().unwrap();
    let _p = plugin(dir.path(), |_| Reply::Hang);
    let e = backend(dir.path(), SHORT).capabilities().unwrap_err();
    assert!(matches!(http_error(&e), HttpError::Timeout { .. }), "{e:?}");
}

// --- The response parser -------------------------------------------------------------------

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
        Err(HttpError::TooLarge { .. })
    ));
    assert!(matches!(
        http::parse_response_bytes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        http::parse_response_bytes(b""),
        Err(HttpError::Truncated)
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

        #[test]
        fn chunk_sizes_of_any_value_never_panic(size in any::<u64>(), ext in "(;[a-z=]{0,8})?") {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n{size:x}{ext}\r\n");
            let _ = http::parse_response_bytes(raw.as_bytes());
        }

        /// Any body, cut into any chunks, reads back as itself.
        #[test]
        fn chunked_bodies_round_trip(
            body in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(1usize..40, 1..20),
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut rest = &body[..];
            for n in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let (chunk, tail) = rest.split_at((*n).min(rest.len()));
                raw.extend(format!("{:X}\r\n", chunk.len()).into_bytes());
                raw.extend(chunk);
                raw.extend(b"\r\n");
                rest = tail;
            }
            raw.extend(b"0\r\n\r\n");
            prop_assert_eq!(http::parse_response_bytes(&raw).unwrap().body, body);
        }
    }
}
