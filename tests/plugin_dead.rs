//! A plugin that died and left its socket file behind (SIGTERM does): every connection is
//! refused. It costs the connect budget (`plugin_connect_secs`), not the whole mount timeout;
//! the wait is named while it lasts, and the error at the end says the plugin is not listening
//! at its address and for how long connecting was tried.
//!
//! No test here measures time: the budget is short so a test ends soon, and the message (which
//! only the connect budget produces; the mount timeout's reads "no complete answer within") is
//! what is asserted.

mod support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend};
use mesos_dvdi::backend::{Backend, Timeouts, Waits};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::Owner;
use support::isolator::{text, Fixture};

/// A socket file nobody listens on: bound, then closed without unlinking.
fn stale_socket(dir: &Path, name: &str) -> PathBuf {
    let sock = dir.join(format!("{name}.sock"));
    drop(UnixListener::bind(&sock).unwrap());
    sock
}

/// What the final error must say about the plugin at `sock`.
fn not_listening(sock: &Path) -> String {
    format!(
        "the plugin is not listening at unix://{}; connecting was tried for",
        sock.display()
    )
}

#[test]
fn prepare_against_a_stale_socket_fails_saying_the_plugin_is_not_listening() {
    let mut fx = Fixture::new();
    let sock = stale_socket(&fx.mkdir("plugins"), "dead");
    fx.config.plugin_connect_timeout = Duration::from_secs(2);
    let env = [("DVDI_VOLUME_NAME", "v"), ("DVDI_VOLUME_DRIVER", "dead")];
    let e = fx
        .isolator()
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    let text = render_chain(&e);
    assert!(
        text.contains("volume \"v\" (driver \"dead\"): activate failed")
            && text.contains(&not_listening(&sock))
            && text.ends_with("Connection refused (os error 111)"),
        "{text}"
    );
    assert!(!fx.recorded("dead", "v"));
}

#[test]
fn dvdi_run_against_a_stale_socket_fails_saying_the_plugin_is_not_listening() {
    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let sock = stale_socket(&plugins, "local-persist");
    let out = fx
        .dvdi()
        .arg("--plugin-dir")
        .arg(&plugins)
        .args([
            "--plugin-connect-timeout",
            "2",
            "run",
            "-e",
            "DVDI_VOLUME_NAME=lp1",
            "-e",
            "DVDI_VOLUME_DRIVER=local-persist",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dvdi: error: ")
            && stderr.contains("(driver \"local-persist\"): activate failed")
            && stderr.contains(&not_listening(&sock)),
        "{stderr}"
    );
    assert!(!fx.recorded("local-persist", "lp1"));
}

#[test]
fn refused_connections_are_named_as_the_wait_while_they_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sock = stale_socket(dir.path(), "dead");
    let waits = Waits::default();
    let b = PluginBackend::at(
        DriverName::new("dead").unwrap(),
        PluginAddr::Unix(sock.clone()),
        Timeouts::default(),
    )
    .with_connect_timeout(Duration::from_secs(2))
    .with_waits(waits.clone());
    let seen = std::thread::scope(|s| {
        let call = s.spawn(|| b.capabilities());
        // Read the waits as a progress display does, until the call names one or ends.
        let seen = loop {
            let now = waits.current();
            if !now.is_empty() || call.is_finished() {
                break now;
            }
            std::thread::park_timeout(Duration::from_millis(5));
        };
        let e = call.join().unwrap().unwrap_err();
        assert!(render_chain(&e).contains(&not_listening(&sock)), "{e}");
        seen
    });
    assert_eq!(
        seen,
        ["plugin dead is not accepting connections (connection refused); retrying"]
    );
    assert!(waits.current().is_empty(), "the wait ends with the call");
}
