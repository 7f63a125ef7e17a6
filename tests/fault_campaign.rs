//! Fault campaign: every fault kind a plugin can show (refused, hang past the timeout, HTTP 500
//! with Err, 200 with Err, garbage, truncated answer, slow but in time) × every operation
//! (prepare, cleanup, recover). After each: the error (or success) is as expected, and the mount
//! table and the plugin's own view of its mounts are exactly as they should be.
//!
//! The plugin here is a test double: it keeps its state across restarts and misbehaves on demand.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{Isolator, KnownContainer};
use mesos_dvdi::state::{ContainerId, Owner};
use serde_json::json;
use support::isolator::Fixture;
use support::plugin::{Reply, Request, TestPlugin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Refused,
    Hang,
    Http500Err,
    Ok200Err,
    Garbage,
    Truncated,
    SlowInTime,
}

const FAULTS: [Fault; 7] = [
    Fault::Refused,
    Fault::Hang,
    Fault::Http500Err,
    Fault::Ok200Err,
    Fault::Garbage,
    Fault::Truncated,
    Fault::SlowInTime,
];

/// What the error must say for each fault.
fn expected(fault: Fault) -> &'static str {
    match fault {
        Fault::Refused => "connecting failed",
        Fault::Hang => "no complete answer within",
        Fault::Http500Err => "the plugin said: disk on fire",
        Fault::Ok200Err => "the plugin said: quota exceeded",
        Fault::Garbage => "not valid HTTP/1.1",
        Fault::Truncated => "closed the connection before the answer was complete",
        Fault::SlowInTime => "",
    }
}

#[derive(Default)]
struct State {
    /// Volume → the mount IDs the plugin holds.
    volumes: BTreeMap<String, Vec<String>>,
    /// Which endpoint misbehaves, and how.
    fault: Option<(&'static str, Fault)>,
}

/// The plugin, restartable with its state.
struct FaultPlugin {
    state: Arc<Mutex<State>>,
    sock: PathBuf,
    root: PathBuf,
    server: Option<TestPlugin>,
}

impl FaultPlugin {
    fn start(sock: PathBuf, root: PathBuf) -> Self {
        let mut p = Self {
            state: Arc::default(),
            sock,
            root,
            server: None,
        };
        p.up();
        p
    }

    fn up(&mut self) {
        let (state, root) = (Arc::clone(&self.state), self.root.clone());
        self.server = Some(TestPlugin::unix(&self.sock, move |req: &Request| {
            handle(&state, &root, req)
        }));
    }

    /// Stops serving and leaves a socket nobody listens on: connections are refused.
    fn down(&mut self) {
        if self.server.is_none() {
            return;
        }
        self.server = None;
        drop(std::os::unix::net::UnixListener::bind(&self.sock).unwrap());
    }

    fn set_fault(&mut self, endpoint: &'static str, fault: Fault) {
        if fault == Fault::Refused {
            self.down();
        } else {
            self.state.lock().unwrap().fault = Some((endpoint, fault));
        }
    }

    fn heal(&mut self) {
        self.state.lock().unwrap().fault = None;
        if self.server.is_none() {
            self.up();
        }
    }

    fn mounts(&self, volume: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .volumes
            .get(volume)
            .map_or(0, Vec::len)
    }
}

fn handle(state: &Mutex<State>, root: &Path, req: &Request) -> Reply {
    let fault = state.lock().unwrap().fault;
    if let Some((endpoint, fault)) = fault {
        if req.path == endpoint {
            match fault {
                Fault::Hang => return Reply::Hang,
                Fault::Http500Err => return Reply::Json(500, json!({"Err": "disk on fire"})),
                Fault::Ok200Err => return Reply::Json(200, json!({"Err": "quota exceeded"})),
                Fault::Garbage => return Reply::RawThenClose(b"\x00\x01garbage\r\n\r\n".to_vec()),
                Fault::Truncated => {
                    return Reply::RawThenClose(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"Mountpoint\":".to_vec(),
                    )
                }
                // The plugin's own work, well inside the call's limit.
                Fault::SlowInTime => std::thread::sleep(Duration::from_millis(150)),
                Fault::Refused => {}
            }
        }
    }
    let name = req.body["Name"].as_str().unwrap_or("").to_owned();
    let id = req.body["ID"].as_str().unwrap_or("").to_owned();
    let mp = root.join(&name);
    let mut st = state.lock().unwrap();
    let ok = |v| Reply::Json(200, v);
    match req.path.as_str() {
        "/Plugin.Activate" => ok(json!({"Implements": ["VolumeDriver"]})),
        "/VolumeDriver.Get" => match st.volumes.get(&name) {
            Some(_) => ok(json!({"Volume": {"Name": name}, "Err": ""})),
            None => Reply::Json(500, json!({"Err": "no such volume"})),
        },
        "/VolumeDriver.Create" => {
            st.volumes.entry(name).or_default();
            ok(json!({"Err": ""}))
        }
        "/VolumeDriver.Mount" => {
            std::fs::create_dir_all(&mp).unwrap();
            st.volumes.entry(name).or_default().push(id);
            ok(json!({"Mountpoint": mp, "Err": ""}))
        }
        "/VolumeDriver.Unmount" => {
            let ids = st.volumes.entry(name).or_default();
            match ids.iter().position(|i| *i == id) {
                Some(i) => {
                    ids.remove(i);
                    ok(json!({"Err": ""}))
                }
                None => Reply::Json(500, json!({"Err": "unknown mount ID"})),
            }
        }
        _ => Reply::Json(404, json!({"Err": "not implemented"})),
    }
}

// Fields drop in order: the plugin goes before the fixture's directories.
struct Setup {
    plugin: FaultPlugin,
    fx: Fixture,
}

fn setup() -> Setup {
    let mut fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    fx.config.plugin_dirs = vec![plugins.clone()];
    fx.config.mount_timeout = Duration::from_secs(1);
    fx.config.unmount_timeout = Duration::from_secs(1);
    let plugin = FaultPlugin::start(plugins.join("flaky.sock"), fx.mkdir("plugin-volumes"));
    Setup { fx, plugin }
}

const ENV: [(&str, &str); 2] = [("DVDI_VOLUME_DRIVER", "flaky"), ("DVDI_VOLUME_NAME", "vol")];

fn prepare(s: &Setup, iso: &Isolator, id: &str) -> Result<(), String> {
    iso.prepare(id, Owner::Mesos, &s.fx.input(id, &ENV, false))
        .map(|_| ())
        .map_err(|e| render_chain(&e))
}

#[test]
fn faults_during_prepare_leave_nothing_behind() {
    for (endpoint, fault) in ["/VolumeDriver.Create", "/VolumeDriver.Mount"]
        .into_iter()
        .flat_map(|e| FAULTS.map(|f| (e, f)))
    {
        let mut s = setup();
        let iso = s.fx.isolator();
        s.plugin.set_fault(endpoint, fault);
        let result = prepare(&s, &iso, "c");
        if fault == Fault::SlowInTime {
            assert!(result.is_ok(), "{fault:?}: {result:?}");
            assert!(s.fx.recorded("flaky", "vol"));
            iso.cleanup("c").unwrap();
        } else {
            let err = result.expect_err("a faulty create or mount was accepted");
            assert!(err.contains(expected(fault)), "{endpoint} {fault:?}: {err}");
            assert!(
                err.contains("volume \"vol\" (driver \"flaky\")"),
                "{fault:?}: {err}"
            );
        }
        s.plugin.heal();
        assert!(!s.fx.recorded("flaky", "vol"), "{fault:?}: record left");
        assert_eq!(
            s.plugin.mounts("vol"),
            0,
            "{fault:?}: the plugin holds a mount"
        );
        // The same container can be prepared once the plugin is well again.
        prepare(&s, &iso, "c").unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        iso.cleanup("c").unwrap();
        assert_eq!(s.plugin.mounts("vol"), 0);
    }
}

#[test]
fn faults_during_cleanup_keep_the_volume_recorded_until_a_retry_succeeds() {
    for fault in FAULTS {
        let mut s = setup();
        let iso = s.fx.isolator();
        prepare(&s, &iso, "c").unwrap();
        assert_eq!(s.plugin.mounts("vol"), 1);
        s.plugin.set_fault("/VolumeDriver.Unmount", fault);
        let result = iso.cleanup("c").map_err(|e| render_chain(&e));
        if fault == Fault::SlowInTime {
            assert!(result.is_ok(), "{fault:?}: {result:?}");
            assert!(!s.fx.recorded("flaky", "vol"));
            continue;
        }
        let err = result.expect_err("a faulty unmount was accepted");
        assert!(err.contains(expected(fault)), "{fault:?}: {err}");
        assert!(
            s.fx.recorded("flaky", "vol"),
            "{fault:?}: forgot a volume still mounted"
        );
        s.plugin.heal();
        // Whether the plugin did the unmount before failing to answer (a hang, a truncated
        // answer) or not, the retry ends with nothing mounted and nothing recorded.
        iso.cleanup("another").unwrap();
        assert!(!s.fx.recorded("flaky", "vol"), "{fault:?}: not retried");
        assert_eq!(
            s.plugin.mounts("vol"),
            0,
            "{fault:?}: plugin still holds the mount"
        );
    }
}

#[test]
fn faults_during_recover_are_reported_and_recovered_later() {
    for fault in FAULTS {
        let mut s = setup();
        prepare(&s, &s.fx.isolator(), "gone").unwrap();
        // Agent restart: "gone" is no longer known, so recover must unmount its volume.
        s.plugin.set_fault("/VolumeDriver.Unmount", fault);
        let report = s.fx.isolator().recover(&[], &[]).unwrap();
        if fault == Fault::SlowInTime {
            assert!(report.errors.is_empty(), "{fault:?}: {report:?}");
            assert!(!s.fx.recorded("flaky", "vol"));
            continue;
        }
        assert_eq!(report.errors.len(), 1, "{fault:?}: {report:?}");
        assert!(
            report.errors[0].contains(expected(fault)),
            "{fault:?}: {report:?}"
        );
        assert!(
            s.fx.recorded("flaky", "vol"),
            "{fault:?}: forgot a volume still mounted"
        );
        s.plugin.heal();
        let report = s.fx.isolator().recover(&[], &[]).unwrap();
        assert!(report.errors.is_empty(), "{fault:?}: {report:?}");
        assert!(!s.fx.recorded("flaky", "vol"), "{fault:?}");
        assert_eq!(s.plugin.mounts("vol"), 0, "{fault:?}");
    }
}

#[test]
fn a_live_container_keeps_its_volume_whatever_the_plugin_does_at_recover() {
    for fault in FAULTS {
        let mut s = setup();
        prepare(&s, &s.fx.isolator(), "live").unwrap();
        s.plugin.set_fault("/VolumeDriver.Unmount", fault);
        s.plugin.set_fault("/VolumeDriver.Mount", fault);
        let known = [KnownContainer {
            id: ContainerId::new("live").unwrap(),
        }];
        let report = s.fx.isolator().recover(&known, &[]).unwrap();
        assert!(report.errors.is_empty(), "{fault:?}: {report:?}");
        assert!(s.fx.recorded("flaky", "vol"), "{fault:?}");
        s.plugin.heal();
        assert_eq!(
            s.plugin.mounts("vol"),
            1,
            "{fault:?}: the live container lost its mount"
        );
    }
}
