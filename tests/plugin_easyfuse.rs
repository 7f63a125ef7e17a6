//! The plugin client against a real third-party plugin: PyPI `docker-volume-easyfuse` (aiohttp
//! on a unix socket), mounting a Debian `bindfs` FUSE file system. `.ci/setup` installs both.
//!
//! Runs in a private mount namespace, so the host's mount table never sees the FUSE mounts; the
//! plugin and its `mount -t fuse` children inherit that namespace.

mod support;

use std::fs;
use std::path::Path;

use mesos_dvdi::backend::plugin::{PluginAddr, PluginBackend};
use mesos_dvdi::backend::{
    Backend, BackendError, BackendErrorKind, MountId, MountRequest, Scope, Timeouts,
};
use mesos_dvdi::error::render_chain;
use mesos_dvdi::mount::{read_mountinfo, MountInfoEntry};
use mesos_dvdi::spec::{DriverName, VolumeName, VolumeOpts};
use support::easyfuse::{wait_ready, Easyfuse};
use support::host::{in_private_mount_ns, THREAD_MOUNTINFO};

fn mounts_under(dir: &Path) -> Vec<MountInfoEntry> {
    read_mountinfo(Path::new(THREAD_MOUNTINFO))
        .unwrap()
        .into_iter()
        .filter(|e| e.mount_point.starts_with(dir))
        .collect()
}

/// Unwraps, or fails with the whole error chain and what the plugin logged.
fn ok<T>(plugin: &Easyfuse, r: Result<T, BackendError>) -> T {
    r.unwrap_or_else(|e| panic!("{}\nplugin log:\n{}", render_chain(&e), plugin.log()))
}

#[test]
fn easyfuse_bindfs_volume_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    in_private_mount_ns(|| lifecycle(dir.path()));
    // The namespace is gone with its thread; nothing of the test is mounted here either.
    assert!(mounts_under(dir.path()).is_empty());
}

fn lifecycle(dir: &Path) {
    let plugins = dir.join("plugins");
    let source = dir.join("source");
    fs::create_dir_all(&plugins).unwrap();
    fs::create_dir_all(&source).unwrap();
    let plugin = Easyfuse::start(&plugins, dir);
    // Readiness: the activation retry waits while the socket is missing or refusing.
    let ready = wait_ready(&plugins);
    // easyfuse declares global scope.
    assert_eq!(ok(&plugin, ready.capabilities()).scope, Scope::Global);
    // Now that it listens, discovery finds it where Docker would.
    let b = PluginBackend::discover(
        &DriverName::new("easyfuse").unwrap(),
        std::slice::from_ref(&plugins),
        Timeouts::default(),
    )
    .unwrap();
    assert_eq!(b.addr(), &PluginAddr::Unix(plugins.join("easyfuse.sock")));

    let name = VolumeName::new("shared-data").unwrap();
    let opts =
        VolumeOpts::from_pairs([("device", format!("bindfs#{}", source.display()))]).unwrap();
    // explicit_create: easyfuse answers Get for an unknown volume with an Err, which is "no
    // such volume"; nothing is created.
    let refused = b
        .mount(&MountRequest {
            name: &name,
            opts: &opts,
            explicit_create: true,
            id: &MountId("never".into()),
            read_only: false,
            csi: None,
        })
        .unwrap_err();
    assert!(
        matches!(*refused.kind, BackendErrorKind::NoSuchVolume),
        "{refused:?}"
    );
    assert_eq!(ok(&plugin, b.get(&name)), None);

    ok(&plugin, b.create(&name, &opts));
    let id = MountId("mesos-dvdi-test-1".into());
    let mp = ok(
        &plugin,
        b.mount(&MountRequest {
            name: &name,
            opts: &opts,
            explicit_create: true,
            id: &id,
            read_only: false,
            csi: None,
        }),
    );
    assert_eq!(mp, dir.join("easyfuse-mnt/shared-data"));
    let fuse: Vec<_> = mounts_under(dir)
        .into_iter()
        .filter(|e| e.mount_point == mp)
        .collect();
    assert!(
        matches!(&fuse[..], [e] if e.fstype.starts_with("fuse")),
        "{} is not one FUSE mount: {fuse:?}",
        mp.display()
    );
    fs::write(mp.join("hello.txt"), b"through fuse").unwrap();
    assert_eq!(fs::read(source.join("hello.txt")).unwrap(), b"through fuse");
    assert_eq!(ok(&plugin, b.path(&name)), Some(mp.clone()));
    assert!(ok(&plugin, b.list())
        .iter()
        .any(|v| v.name == "shared-data"));
    let info = ok(&plugin, b.get(&name)).expect("the volume exists");
    assert_eq!(
        (info.name.as_str(), info.mountpoint.as_ref()),
        ("shared-data", Some(&mp))
    );
    assert_eq!(info.status["Mounted"], true);

    // easyfuse insists that Unmount carries the ID given at Mount.
    let wrong = b.unmount(&name, &MountId("other".into())).unwrap_err();
    assert!(
        render_chain(&wrong).contains("the plugin said: Volume ID other not found."),
        "{}",
        render_chain(&wrong)
    );
    ok(&plugin, b.unmount(&name, &id));
    assert!(
        mounts_under(dir).is_empty(),
        "still mounted after unmount: {:?}",
        mounts_under(dir)
    );
    ok(&plugin, b.remove(&name));
    assert_eq!(ok(&plugin, b.get(&name)), None);

    // Without explicit_create, mount creates a missing volume; mounting it again must not
    // create it twice (easyfuse refuses: "already exist"), which is why mount asks Get first.
    let other = VolumeName::new("made-by-mount").unwrap();
    for round in ["1", "2"] {
        let id = MountId(format!("made-by-mount-{round}"));
        let mp = ok(
            &plugin,
            b.mount(&MountRequest {
                name: &other,
                opts: &opts,
                explicit_create: false,
                id: &id,
                read_only: false,
                csi: None,
            }),
        );
        assert_eq!(fs::read(mp.join("hello.txt")).unwrap(), b"through fuse");
        ok(&plugin, b.unmount(&other, &id));
    }
    ok(&plugin, b.remove(&other));
    assert!(mounts_under(dir).is_empty(), "{:?}", mounts_under(dir));
    // easyfuse logs each request as "PATH -> BODY" (besides aiohttp's access log).
    let log = plugin.log();
    assert_eq!(
        log.matches("/VolumeDriver.Create -> ").count(),
        2,
        "one create per volume:\n{log}"
    );
}
