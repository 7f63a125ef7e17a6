//! The plugin client against a real third-party plugin: PyPI `docker-volume-easyfuse`, mounting a
//! Debian `bindfs` FUSE file system. `.ci/setup` installs both.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesos_dvdi::backend::plugin::{discover, PluginAddr, PluginBackend};
use mesos_dvdi::backend::{Backend, MountId, MountRequest, Scope, Timeouts};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{is_mount_point, read_mountinfo};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};

const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

fn python() -> PathBuf {
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

/// The plugin process and everything it mounted; torn down on drop, even when the test fails.
struct Easyfuse {
    child: Child,
    dir: PathBuf,
}

impl Drop for Easyfuse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(table) = read_mountinfo(Path::new(MOUNTINFO)) {
            for e in table
                .iter()
                .filter(|e| e.mount_point.starts_with(&self.dir))
            {
                let _ = nix::mount::umount2(&e.mount_point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

#[test]
fn easyfuse_bindfs_volume_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let source = dir.path().join("source");
    fs::create_dir_all(&plugins).unwrap();
    fs::create_dir_all(&source).unwrap();
    let _plugin = Easyfuse {
        child: Command::new(python())
            .args(["-m", "easyfuse", "--sock"])
            .arg(plugins.join("easyfuse.sock"))
            .arg("--mntpt")
            .arg(dir.path().join("mnt"))
            .arg("--mntdb")
            .arg(dir.path().join("db/mntdb.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start easyfuse"),
        dir: dir.path().to_owned(),
    };
    // Until the plugin binds its socket, activation sees "no such socket" and retries with
    // backoff: the client's own wait, not the test's.
    let sock = plugins.join("easyfuse.sock");
    let b = PluginBackend::at(
        DriverName::new("easyfuse").unwrap(),
        PluginAddr::Unix(sock.clone()),
        Timeouts {
            mount: Duration::from_secs(60),
            unmount: Duration::from_secs(60),
        },
    );
    // easyfuse declares global scope.
    assert_eq!(b.capabilities().unwrap().scope, Scope::Global);
    // Now that it listens, discovery finds it where Docker would.
    let found = discover(
        &DriverName::new("easyfuse").unwrap(),
        std::slice::from_ref(&plugins),
    )
    .unwrap();
    assert_eq!(found.addr, PluginAddr::Unix(sock));
    let name = VolumeName::new("shared-data").unwrap();
    let opts =
        VolumeOpts::from_pairs([("device", format!("bindfs#{}", source.display()))]).unwrap();
    b.create(&name, &opts).unwrap();
    let id = MountId("mesos-dvdi-test-1".into());
    let mp = b
        .mount(&MountRequest {
            name: &name,
            opts: &opts,
            explicit_create: true,
            id: &id,
        })
        .unwrap_or_else(|e| panic!("{}", render_chain(&e)));
    let table = read_mountinfo(Path::new(MOUNTINFO)).unwrap();
    assert!(
        is_mount_point(&table, &mp),
        "{} is not mounted",
        mp.display()
    );
    fs::write(mp.join("hello.txt"), b"through fuse").unwrap();
    assert_eq!(fs::read(source.join("hello.txt")).unwrap(), b"through fuse");
    assert_eq!(b.path(&name).unwrap(), Some(mp.clone()));
    assert!(b.list().unwrap().iter().any(|v| v.name == "shared-data"));
    assert_eq!(b.get(&name).unwrap().unwrap().name, "shared-data");

    // easyfuse insists that Unmount carries the ID given at Mount.
    let wrong = b.unmount(&name, &MountId("other".into())).unwrap_err();
    assert!(
        render_chain(&wrong).contains("other"),
        "{}",
        render_chain(&wrong)
    );
    b.unmount(&name, &id).unwrap();
    let table = read_mountinfo(Path::new(MOUNTINFO)).unwrap();
    assert!(!is_mount_point(&table, &mp), "still mounted after unmount");
    b.remove(&name).unwrap();
    assert_eq!(b.get(&name).unwrap(), None);
}
