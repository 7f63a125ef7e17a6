//! The real third-party plugin PyPI `docker-volume-easyfuse` (installed by `.ci/setup`), run as a
//! child process with all its state under a test's directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend};
use mesos_dvdi::backend::{Backend, Timeouts};
use mesos_dvdi::mount::read_mountinfo;
use mesos_dvdi::spec::DriverName;

/// The venv's python that has `easyfuse`, or a failure naming `.ci/setup`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DVDI_EASYFUSE_PYTHON") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists()
            && Command::new(&p)
                .args(["-c", "import easyfuse"])
                .status()
                .is_ok_and(|s| s.success()),
        "the easyfuse plugin is not installed in {}: run .ci/setup (or set DVDI_EASYFUSE_PYTHON)",
        p.display()
    );
    p
}

/// The plugin process; on drop it is killed and anything mounted under its directory is
/// lazily unmounted, even when the test failed.
pub struct Easyfuse {
    child: Child,
    dir: PathBuf,
}

impl Easyfuse {
    /// Starts the plugin with its socket `plugins/easyfuse.sock` and its state under `dir`.
    pub fn start(plugins: &Path, dir: &Path) -> Self {
        let child = Command::new(python())
            .args(["-m", "easyfuse", "--sock"])
            .arg(plugins.join("easyfuse.sock"))
            .arg("--mntpt")
            .arg(dir.join("easyfuse-mnt"))
            .arg("--mntdb")
            .arg(dir.join("easyfuse-db/mntdb.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start easyfuse");
        Self {
            child,
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Easyfuse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(table) = read_mountinfo(Path::new("/proc/thread-self/mountinfo")) {
            for e in table
                .iter()
                .filter(|e| e.mount_point.starts_with(&self.dir))
            {
                let _ = nix::mount::umount2(&e.mount_point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Waits until the plugin answers: the client's activation retries while its socket is missing
/// or refuses (no sleeping in the test).
pub fn wait_ready(plugins: &Path) -> PluginBackend {
    let b = PluginBackend::at(
        DriverName::new("easyfuse").unwrap(),
        PluginAddr::Unix(plugins.join("easyfuse.sock")),
        Timeouts {
            mount: Duration::from_secs(60),
            unmount: Duration::from_secs(60),
        },
    );
    b.capabilities().expect("easyfuse answers");
    b
}
