//! The real third-party plugin PyPI `docker-volume-easyfuse` (installed by `.ci/setup`), run as a
//! child process with its socket and all its state under a test's directory.
//!
//! How it runs (easyfuse 0.2.1, `easyfuse/__main__.py`): there is no console script, only
//! `python -m easyfuse`; `--sock` is the unix socket it serves (aiohttp), `--mntpt` the directory
//! under which it mounts volume NAME at `MNTPT/NAME`, `--mntdb` its JSON state file. Defaults
//! come from `EASYFUSE_*` variables and point at `/run/easyfuse`, so every path is passed
//! explicitly and the TCP variables are removed (with them set it would also listen on TCP).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend};
use mesos_dvdi::backend::{Backend, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::read_mountinfo;
use mesos_dvdi::spec::DriverName;

use super::host::THREAD_MOUNTINFO;

/// A python that can `import easyfuse`: `$DVDI_EASYFUSE`, else the repository's `.venv`. Fails
/// the test, naming `.ci/setup`, when there is none: a missing plugin must not pass as a skip.
pub fn python() -> PathBuf {
    let p = std::env::var_os("DVDI_EASYFUSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let importable = Command::new(&p)
        .args(["-c", "import easyfuse"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        importable,
        "the easyfuse plugin is not installed: {} cannot import easyfuse. Run .ci/setup (it \
         creates .venv and installs docker-volume-easyfuse), or set DVDI_EASYFUSE to a python \
         that has it",
        p.display()
    );
    p
}

/// The plugin process. On drop (test failures included) it is killed and everything mounted
/// under its directory in the calling thread's mount namespace is lazily unmounted.
pub struct Easyfuse {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Easyfuse {
    /// Starts the plugin with its socket at `plugins/easyfuse.sock`, and its mounts
    /// (`dir/easyfuse-mnt`), state (`dir/easyfuse-db`) and log (`dir/easyfuse.log`) under `dir`.
    /// It is not ready yet: see [`wait_ready`].
    pub fn start(plugins: &Path, dir: &Path) -> Self {
        let log = dir.join("easyfuse.log");
        let child = Command::new(python())
            .args(["-m", "easyfuse", "--sock"])
            .arg(plugins.join("easyfuse.sock"))
            .arg("--mntpt")
            .arg(dir.join("easyfuse-mnt"))
            .arg("--mntdb")
            .arg(dir.join("easyfuse-db/mntdb.json"))
            .env_remove("EASYFUSE_SOCK_HOST")
            .env_remove("EASYFUSE_SOCK_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the plugin's log"))
            .spawn()
            .expect("start easyfuse");
        Self {
            child,
            dir: dir.to_owned(),
            log,
        }
    }

    /// What the plugin logged so far (each request, and the errors of `mount -t fuse`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Easyfuse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(table) = read_mountinfo(Path::new(THREAD_MOUNTINFO)) {
            let mut left: Vec<&Path> = table
                .iter()
                .map(|e| e.mount_point.as_path())
                .filter(|m| m.starts_with(&self.dir))
                .collect();
            // Deepest first, so a mount on top of another goes first.
            left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in left {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// A backend for the plugin at `plugins/easyfuse.sock`, once it answers. Readiness is the
/// client's activation retry (the socket is missing, then refuses, until the plugin listens),
/// not a sleep.
pub fn wait_ready(plugins: &Path) -> PluginBackend {
    let b = PluginBackend::at(
        DriverName::new("easyfuse").unwrap(),
        PluginAddr::Unix(plugins.join("easyfuse.sock")),
        Timeouts {
            mount: Duration::from_secs(60),
            unmount: Duration::from_secs(60),
        },
    );
    if let Err(e) = b.capabilities() {
        panic!("easyfuse did not answer: {}", render_chain(&e));
    }
    b
}
