//! The plugin client against a real third-party plugin: PyPI `docker-volume-easyfuse`, mounting a
//! Debian `bindfs` FUSE file system. `.ci/setup` installs both.

mod support;

use std::fs;
use std::path::Path;

use mesos_dvdi::backend::plugin::{discover, PluginAddr};
use mesos_dvdi::backend::{Backend, MountId, MountRequest, Scope};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{is_mount_point, read_mountinfo};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use support::easyfuse::{wait_ready, Easyfuse};

const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

#[test]
fn easyfuse_bindfs_volume_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let source = dir.path().join("source");
    fs::create_dir_all(&plugins).unwrap();
    fs::create_dir_all(&source).unwrap();
    let _plugin = Easyfuse::start(&plugins, dir.path());
    // Until the plugin binds its socket, activation sees "no such socket" and retries with
    // backoff: the client's own wait, not the test's.
    let b = wait_ready(&plugins);
    let sock = plugins.join("easyfuse.sock");
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
