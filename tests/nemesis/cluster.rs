//! The cluster under test: shared storage, a global-scope plugin that can be made slow, and per
//! agent its directories, its `dvdi` configuration and its proxies to every ensemble member.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::check::{parse_log, Record};
use crate::support::plugin::{memory_plugin, TestPlugin};
use crate::support::zookeeper::{ZkEnsemble, ZkProxy};
use crate::{LEASE_WAIT_SECS, SESSION_SECS};

/// The volumes competed for: (driver, name). The first is a `local` volume under the shared
/// root, the second one of the plugin's.
pub const VOLUMES: [(&str, &str); 2] = [("local", "ledger"), (PLUGIN, "netledger")];

/// The plugin's name (its socket's, in the shared plugin directory).
const PLUGIN: &str = "slowfs";

/// The index in [`VOLUMES`] of the plugin's volume.
pub const PLUGIN_VOLUME: usize = 1;

/// The ZooKeeper path every agent's leases live under.
const ZK_PATH: &str = "/dvdi";

/// Shared storage, the plugin, and each agent's view of the ensemble.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// `[agent][member]`: each agent reaches each member through a proxy of its own.
    proxies: Vec<Vec<ZkProxy>>,
    /// How long the plugin takes to answer Mount and Unmount, in ms.
    plugin_delay: Arc<AtomicU64>,
    _plugin: TestPlugin,
}

impl Cluster {
    /// Directories, the plugin and proxies for `agents` agents of the ensemble `zk`.
    pub fn new(zk: &ZkEnsemble, agents: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dvdi-nemesis-")
            .tempdir()
            .expect("temp dir");
        for d in ["shared", "plugins", "plugin-volumes"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("cluster directory");
        }
        let plugin_delay = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&plugin_delay);
        let inner = memory_plugin(dir.path().join("plugin-volumes"));
        let plugin = TestPlugin::unix(
            &dir.path().join(format!("plugins/{PLUGIN}.sock")),
            move |req| {
                if matches!(
                    req.path.as_str(),
                    "/VolumeDriver.Mount" | "/VolumeDriver.Unmount"
                ) {
                    // The slow plugin fault: an attach or detach that takes its time.
                    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
                }
                inner(req)
            },
        );
        let proxies: Vec<Vec<ZkProxy>> = (0..agents)
            .map(|_| zk.addresses().iter().map(|a| ZkProxy::to(a)).collect())
            .collect();
        let cluster = Cluster {
            dir,
            proxies,
            plugin_delay,
            _plugin: plugin,
        };
        for i in 0..agents {
            std::fs::create_dir_all(cluster.container_path(i)).expect("agent's mount point");
            cluster.write_config(i);
        }
        cluster
    }

    /// The temp directory everything lives under.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Agent `i`'s name.
    pub fn agent_name(i: usize) -> String {
        format!(
            "agent-{}",
            char::from(b'a' + u8::try_from(i).expect("few agents"))
        )
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.path(&format!("{}.json", Cluster::agent_name(i)))
    }

    /// Agent `i`'s own directory.
    pub fn agent_dir(&self, i: usize) -> PathBuf {
        self.path(&Cluster::agent_name(i))
    }

    /// Where agent `i`'s commands see the volume (a host path; each command binds the volume
    /// there in a mount namespace of its own).
    pub fn container_path(&self, i: usize) -> PathBuf {
        self.agent_dir(i).join("mnt")
    }

    /// The `dvdi` configuration of agent `i`, as the module's parameters would give it: its ZooKeeper URL
    /// names its proxies to every member.
    fn write_config(&self, i: usize) {
        let agent = self.agent_dir(i);
        let hosts: Vec<String> = self.proxies[i].iter().map(ZkProxy::address).collect();
        let config = serde_json::json!({
            "work_dir": agent.join("work"),
            "local_root": self.path("shared"),
            "loop_root": agent.join("loop"),
            "plugin_dirs": self.path("plugins"),
            "default_driver": "local",
            "coordination": format!("zk://{}{ZK_PATH}", hosts.join(",")),
            "agent_name": Cluster::agent_name(i),
            "lease_drivers": "local",
            "lease_session_timeout_secs": SESSION_SECS.to_string(),
            "lease_wait_secs": LEASE_WAIT_SECS.to_string(),
        });
        std::fs::write(self.config_path(i), config.to_string()).expect("write agent config");
    }

    /// `dvdi` as agent `i`.
    pub fn dvdi(&self, i: usize) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dvdi"));
        cmd.arg("--config").arg(self.config_path(i));
        cmd
    }

    /// The log a writer of volume `v` appends to: on the volume for read-write holders (as
    /// agent `i` sees it), beside it for read-only ones.
    pub fn log(&self, i: usize, v: usize, rw: bool) -> PathBuf {
        if rw {
            self.container_path(i).join("log")
        } else {
            self.read_only_log(v)
        }
    }

    /// Where read-only holders of volume `v` keep their records (their volume is read-only).
    fn read_only_log(&self, v: usize) -> PathBuf {
        self.path(&format!("{}-read-only.log", VOLUMES[v].1))
    }

    /// Every record written for volume `v` (its log on the shared storage and the read-only
    /// holders' log), and how many torn ones those hold.
    pub fn records(&self, v: usize) -> (Vec<Record>, usize) {
        let on_volume = match v {
            PLUGIN_VOLUME => self.path("plugin-volumes"),
            _ => self.path("shared"),
        }
        .join(VOLUMES[v].1)
        .join("log");
        let mut all = (Vec::new(), 0);
        for p in [on_volume, self.read_only_log(v)] {
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let (records, torn) = parse_log(&text);
                    all.0.extend(records);
                    all.1 += torn;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("read {}: {e}", p.display()),
            }
        }
        all
    }

    /// Cuts agent `i` off from every member, closing nothing.
    pub fn partition(&self, i: usize) {
        self.proxies[i].iter().for_each(ZkProxy::blackhole);
    }

    /// Ends agent `i`'s partition.
    pub fn heal(&self, i: usize) {
        self.proxies[i].iter().for_each(ZkProxy::heal);
    }

    /// Makes the plugin take `delay` for each Mount and Unmount (zero: answer at once).
    pub fn slow_plugin(&self, delay: Duration) {
        self.plugin_delay.store(
            u64::try_from(delay.as_millis()).expect("ms"),
            Ordering::SeqCst,
        );
    }
}
