//! The isolator core, for real: root, private mount namespaces, the built-in local and loop
//! backends through the production registry.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mesos_dvdi::backend::registry::Registry;
use mesos_dvdi::error::render_chain;
use mesos_dvdi::isolator::{IsolatorError, KnownContainer, LaunchPlan};
use mesos_dvdi::mount::{self, Host, Mounter};
use mesos_dvdi::spec::DriverName;
use mesos_dvdi::state::{ContainerId, Owner};
use support::host::in_private_mount_ns;
use support::isolator::{is_mounted, Counting, Fixture};

fn known(ids: &[&str]) -> Vec<KnownContainer> {
    ids.iter()
        .map(|id| KnownContainer {
            id: ContainerId::new(*id).unwrap(),
        })
        .collect()
}

/// Carries out a plan's binds as the containerizer would, in a thread with its own mount
/// namespace, and returns what `f` sees there.
fn in_container<T: Send>(plan: &LaunchPlan, f: impl FnOnce() -> T + Send) -> T {
    in_private_mount_ns(|| {
        for m in &plan.mounts {
            mount::bind(&Host, &m.source, &m.target, m.read_only).expect("bind");
        }
        f()
    })
}

#[test]
fn two_containers_share_one_volume_until_the_last_cleanup() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let iso = fx.isolator();
        let env1 = [
            ("DVDI_VOLUME_DRIVER", "loop"),
            ("DVDI_VOLUME_NAME", "shared"),
            ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ];
        let env2 = [
            ("DVDI_VOLUME_DRIVER", "loop"),
            ("DVDI_VOLUME_NAME", "shared"),
            ("DVDI_VOLUME_CONTAINERPATH", "/srv/other"),
        ];
        let p1 = iso
            .prepare("c1", Owner::Mesos, &fx.input("c1", &env1, true))
            .unwrap();
        let p2 = iso
            .prepare("c2", Owner::Mesos, &fx.input("c2", &env2, true))
            .unwrap();
        assert_eq!(p1.mounts.len(), 1);
        assert_eq!(p2.mounts.len(), 1);
        assert_eq!(p1.mounts[0].source, p2.mounts[0].source, "one host mount");
        assert!(p1.mounts[0].target.ends_with("rootfs/c1/data"));
        assert!(p2.mounts[0].target.ends_with("rootfs/c2/srv/other"));
        assert!(p1.needs_new_mount_ns);
        let host = p1.mounts[0].source.clone();
        assert!(is_mounted(&host));

        // Data written by one container is seen by the other.
        in_container(&p1, || {
            fs::write(p1.mounts[0].target.join("hello"), b"hi").unwrap()
        });
        let seen = in_container(&p2, || fs::read(p2.mounts[0].target.join("hello")).unwrap());
        assert_eq!(seen, b"hi");

        iso.cleanup("c1").unwrap();
        assert!(is_mounted(&host), "unmounted while c2 still uses it");
        iso.cleanup("c2").unwrap();
        assert!(!is_mounted(&host), "still mounted after the last user left");
        assert!(!fx.recorded("loop", "shared"));
    });
}

#[test]
fn read_only_bind_refuses_writes_with_erofs() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "ro"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
        ("DVDI_VOLUME_READONLY", "true"),
    ];
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, true))
        .unwrap();
    assert!(plan.mounts[0].read_only);
    let target = plan.mounts[0].target.clone();
    let err = in_container(&plan, || fs::write(target.join("x"), b"x").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // Outside the container's namespace the bind does not exist.
    assert!(!is_mounted(&plan.mounts[0].target));
    iso.cleanup("c").unwrap();
}

#[test]
fn read_write_bind_passes_writes_to_the_volume() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "rw"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
    ];
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, true))
        .unwrap();
    let target = plan.mounts[0].target.clone();
    in_container(&plan, || fs::write(target.join("x"), b"x").unwrap());
    assert_eq!(fs::read(plan.mounts[0].source.join("x")).unwrap(), b"x");
    iso.cleanup("c").unwrap();
}

fn assert_refused_and_nothing_recorded(
    fx: &Fixture,
    iso: &mesos_dvdi::isolator::Isolator,
    env: &[(&str, &str)],
    rootfs_setup: impl FnOnce(&std::path::Path),
    expect: &str,
) {
    let input = fx.input("c", env, true);
    rootfs_setup(input.rootfs.as_deref().unwrap());
    let err = iso.prepare("c", Owner::Mesos, &input).unwrap_err();
    let text = render_chain(&err);
    assert!(text.contains(expect), "{text}");
    assert!(fs::read_dir(fx.config.work_dir.join("volumes"))
        .unwrap()
        .all(|d| fs::read_dir(d.unwrap().path()).unwrap().all(|f| f
            .unwrap()
            .path()
            .extension()
            .is_none_or(|e| e != "json"))));
    // The id is free again after a refused prepare.
    iso.cleanup("c").unwrap();
}

#[test]
fn prepare_refuses_container_path_with_dot_dot() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data/../../etc"),
    ];
    assert_refused_and_nothing_recorded(&fx, &iso, &env, |_| {}, "DVDI_VOLUME_CONTAINERPATH");
}

#[test]
fn prepare_refuses_container_path_that_escapes_rootfs_via_symlink() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", "/data"),
    ];
    assert_refused_and_nothing_recorded(
        &fx,
        &iso,
        &env,
        |root| symlink("/etc", root.join("data")).unwrap(),
        "data",
    );
    assert!(!fx.dir.path().join("local/v").exists(), "no volume created");
}

#[test]
fn prepare_refuses_container_path_through_a_symlinked_parent() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", "/var/lib/db"),
    ];
    let outside = fx.mkdir("outside");
    assert_refused_and_nothing_recorded(
        &fx,
        &iso,
        &env,
        |root| {
            fs::create_dir_all(root.join("var")).unwrap();
            symlink(&outside, root.join("var/lib")).unwrap();
        },
        "var/lib",
    );
    assert!(
        !outside.join("db").exists(),
        "created a directory outside the rootfs"
    );
}

#[test]
fn prepare_refuses_sandbox_relative_path_through_a_symlink() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let mut input = fx.input("c", &[], false);
    input.docker_volumes = vec![mesos_dvdi::spec::DockerVolumeInput {
        driver: "local".into(),
        name: "v".into(),
        container_path: "logs/app".into(),
        ..Default::default()
    }];
    symlink("/etc", input.sandbox.join("logs")).unwrap();
    let err = iso.prepare("c", Owner::Mesos, &input).unwrap_err();
    let text = render_chain(&err);
    assert!(text.contains("logs"), "{text}");
    assert!(matches!(*err.cause, IsolatorError::Target { .. }), "{text}");
}

#[test]
fn host_container_path_must_exist_unless_under_tmp() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let missing = fx.dir.path().join("nope/data");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", missing.to_str().unwrap()),
    ];
    let err = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    assert!(
        render_chain(&err).contains("nope"),
        "{}",
        render_chain(&err)
    );

    let under_tmp = fx.dir.path().join("tmp/made/here");
    let env = [
        ("DVDI_VOLUME_NAME", "v"),
        ("DVDI_VOLUME_CONTAINERPATH", under_tmp.to_str().unwrap()),
    ];
    let plan = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    assert_eq!(plan.mounts[0].target, under_tmp);
    assert!(under_tmp.is_dir());
    iso.cleanup("c").unwrap();
}

#[test]
fn prepare_is_all_or_nothing() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let iso = fx.isolator();
        let env = [
            ("DVDI_VOLUME_DRIVER", "loop"),
            ("DVDI_VOLUME_NAME", "first"),
            ("DVDI_VOLUME_CONTAINERPATH", "/a"),
            ("DVDI_VOLUME_NAME1", "missing"),
            ("DVDI_VOLUME_EXPLICITCREATE1", "true"),
            ("DVDI_VOLUME_CONTAINERPATH1", "/b"),
        ];
        let err = iso
            .prepare("c", Owner::Mesos, &fx.input("c", &env, true))
            .unwrap_err();
        let text = render_chain(&err);
        assert!(text.contains("\"missing\""), "{text}");
        assert!(err.rollback.is_empty(), "{text}");
        assert!(!fx.recorded("loop", "first"), "first volume left recorded");
        assert!(
            !is_mounted(&fx.config.loop_root.join("mnt/first")),
            "first volume left mounted"
        );
    });
}

#[test]
fn second_prepare_of_one_container_is_refused() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let env = [("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    let err = iso
        .prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap_err();
    assert!(
        matches!(*err.cause, IsolatorError::AlreadyPrepared(_)),
        "{err:?}"
    );
    iso.cleanup("c").unwrap();
    assert!(!fx.recorded("local", "v"));
}

#[test]
fn cleanup_is_idempotent_and_unknown_ids_are_fine() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    iso.cleanup("never-seen").unwrap();
    iso.cleanup("").unwrap();
    let env = [("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c", Owner::Mesos, &fx.input("c", &env, false))
        .unwrap();
    iso.cleanup("c").unwrap();
    iso.cleanup("c").unwrap();
}

#[test]
fn volume_without_container_path_is_used_at_its_host_path() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    let plan = iso
        .prepare(
            "c",
            Owner::Mesos,
            &fx.input("c", &[("DVDI_VOLUME_NAME", "v")], false),
        )
        .unwrap();
    assert!(plan.mounts.is_empty());
    assert!(!plan.needs_new_mount_ns);
    assert_eq!(plan.volumes.len(), 1);
    assert_eq!(plan.volumes[0].1, fx.config.local_root.join("v"));
    iso.cleanup("c").unwrap();
}

#[test]
fn recover_drops_orphans_and_keeps_live_users() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = [("DVDI_VOLUME_DRIVER", "loop"), ("DVDI_VOLUME_NAME", "db")];
        let host = {
            let iso = fx.isolator();
            iso.prepare("live", Owner::Mesos, &fx.input("live", &env, false))
                .unwrap();
            let p = iso
                .prepare("orphan", Owner::Mesos, &fx.input("orphan", &env, false))
                .unwrap();
            iso.prepare(
                "forgotten",
                Owner::Mesos,
                &fx.input("forgotten", &env, false),
            )
            .unwrap();
            p.volumes[0].1.clone()
        };
        // Agent restart: a new isolator over the same checkpoint.
        let iso = fx.isolator();
        let orphans = [ContainerId::new("orphan").unwrap()];
        let report = iso.recover(&known(&["live", "orphan"]), &orphans).unwrap();
        assert_eq!(report.dropped.len(), 2, "{report:?}");
        assert!(report.unmounted.is_empty());
        assert!(
            is_mounted(&host),
            "unmounted a volume a live container uses"
        );

        iso.cleanup("live").unwrap();
        assert!(!is_mounted(&host));
        assert!(!fx.recorded("loop", "db"));
    });
}

/// Whether some process waits in flock(2) on the file with inode `ino` (a blocked request shows
/// in /proc/locks as a `->` line).
fn flock_waiter_on(ino: u64) -> bool {
    fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
        l.contains("-> FLOCK")
            && l.split_whitespace()
                .any(|f| f.ends_with(&format!(":{ino}")))
    })
}

#[test]
fn recover_reads_settled_volumes_without_waiting_for_their_locks() {
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;
    let fx = Fixture::new();
    let env = [
        ("DVDI_VOLUME_DRIVER", "local"),
        ("DVDI_VOLUME_NAME", "busy"),
    ];
    fx.isolator()
        .prepare("live", Owner::Mesos, &fx.input("live", &env, false))
        .unwrap();
    // Another holder (a `dvdi` process adding itself, say) has the volume's lock.
    let iso = fx.isolator();
    let key = mesos_dvdi::spec::VolumeKey {
        driver: mesos_dvdi::spec::DriverName::new("local").unwrap(),
        name: mesos_dvdi::spec::VolumeName::new("busy").unwrap(),
    };
    let held = iso.store().lock(&key).unwrap();
    let lock_file = held.path().to_owned();
    let ino = fs::metadata(&lock_file).unwrap().ino();

    let (done, finished) = mpsc::channel();
    std::thread::scope(|s| {
        let iso = &iso;
        s.spawn(move || {
            let report = iso.recover(&known(&["live"]), &[]).unwrap();
            done.send(report).unwrap();
        });
        // Either recovery finishes, or it is seen waiting for the lock (then let it go on, so
        // the test ends, and fail).
        let report = loop {
            match finished.try_recv() {
                Ok(report) => break Ok(report),
                Err(mpsc::TryRecvError::Disconnected) => break Err("recovery failed"),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if flock_waiter_on(ino) {
                break Err("recovery waited for the lock of a volume it need not change");
            }
            std::thread::yield_now();
        };
        drop(held);
        let report = report.unwrap();
        assert_eq!(report.kept.len(), 1, "{report:?}");
        assert!(report.dropped.is_empty() && report.unmounted.is_empty());
    });
    // What recovery learned without the lock is complete: the live container's cleanup releases
    // the volume.
    iso.cleanup("live").unwrap();
    assert!(!fx.recorded("local", "busy"));
}

#[test]
fn recover_unmounts_volumes_no_known_container_uses() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = [("DVDI_VOLUME_DRIVER", "loop"), ("DVDI_VOLUME_NAME", "db")];
        let plan = fx
            .isolator()
            .prepare("gone", Owner::Mesos, &fx.input("gone", &env, false))
            .unwrap();
        let report = fx.isolator().recover(&[], &[]).unwrap();
        assert_eq!(report.unmounted.len(), 1, "{report:?}");
        assert!(!is_mounted(&plan.volumes[0].1));
        assert!(!fx.recorded("loop", "db"));
    });
}

#[test]
fn recover_remounts_a_vanished_mount_that_is_still_used() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let env = [("DVDI_VOLUME_DRIVER", "loop"), ("DVDI_VOLUME_NAME", "db")];
        let plan = fx
            .isolator()
            .prepare("live", Owner::Mesos, &fx.input("live", &env, false))
            .unwrap();
        let host = plan.volumes[0].1.clone();
        fs::write(host.join("keep"), b"1").unwrap();
        // Someone unmounted it behind our back (the loop device stays attached).
        nix::mount::umount2(&host, nix::mount::MntFlags::empty()).unwrap();
        assert!(!is_mounted(&host));

        let iso = fx.isolator();
        let report = iso.recover(&known(&["live"]), &[]).unwrap();
        assert_eq!(report.remounted.len(), 1, "{report:?}");
        assert!(is_mounted(&host));
        assert_eq!(fs::read(host.join("keep")).unwrap(), b"1");
        iso.cleanup("live").unwrap();
        assert!(!is_mounted(&host));
    });
}

#[test]
fn corrupt_checkpoint_is_reported_and_kept() {
    let fx = Fixture::new();
    let iso = fx.isolator();
    iso.prepare(
        "c",
        Owner::Mesos,
        &fx.input("c", &[("DVDI_VOLUME_NAME", "v")], false),
    )
    .unwrap();
    let file = fx.config.work_dir.join("volumes/local/v.json");
    fs::write(&file, b"not json").unwrap();
    let report = fx.isolator().recover(&known(&["c"]), &[]).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("v.json"), "{report:?}");
    assert_eq!(fs::read(&file).unwrap(), b"not json", "replaced silently");
}

#[test]
fn sixty_four_threads_sharing_eight_volumes_mount_each_once() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let counting = Arc::new(Counting::new(Arc::new(Registry::new(
            fx.config.clone(),
            Arc::new(Host),
        ))));
        let iso = fx.isolator_with(counting.clone());
        let inputs: Vec<_> = (0..64)
            .map(|i| {
                let name = format!("vol{}", i % 8);
                let env = [("DVDI_VOLUME_NAME", name.as_str())];
                fx.input(&format!("c{i}"), &env, false)
            })
            .collect();
        std::thread::scope(|s| {
            for (i, input) in inputs.iter().enumerate() {
                let iso = &iso;
                s.spawn(move || iso.prepare(&format!("c{i}"), Owner::Mesos, input).unwrap());
            }
        });
        assert_eq!(counting.mounts.load(Ordering::SeqCst), 8);
        for v in 0..8 {
            assert!(fx.recorded("local", &format!("vol{v}")));
        }
        std::thread::scope(|s| {
            for i in 0..64 {
                let iso = &iso;
                s.spawn(move || iso.cleanup(&format!("c{i}")).unwrap());
            }
        });
        assert_eq!(counting.unmounts.load(Ordering::SeqCst), 8);
        for v in 0..8 {
            assert!(!fx.recorded("local", &format!("vol{v}")));
        }
    });
}

#[test]
fn failed_unmount_is_kept_with_its_error_and_retried() {
    let fx = Fixture::new();
    // A stand-in dvdcli (test double): mounts print a directory; unmount fails while a flag file
    // exists.
    let bin = fx.mkdir("bin");
    let flag = fx.dir.path().join("fail-unmount");
    let data = fx.mkdir("dvdcli-data");
    let script = format!(
        "case \"$1\" in\n  mount) if [ -e {fail_mount} ]; then echo 'attach failed' >&2; exit 1; fi; echo {data};;\n  unmount) if [ -e {flag} ]; then echo 'device busy' >&2; exit 1; fi;;\nesac\n",
        data = data.display(),
        flag = flag.display(),
        fail_mount = fx.dir.path().join("fail-mount").display(),
    );
    let program = bin.join("dvdcli");
    support::host::write_script(&program, &script);
    let mut fx = fx;
    fx.config.backend = mesos_dvdi::config::BackendKind::Dvdcli;
    fx.config.dvdcli_path = program;
    let iso = fx.isolator();
    let env = [("DVDI_VOLUME_DRIVER", "rexray"), ("DVDI_VOLUME_NAME", "v")];
    iso.prepare("c1", Owner::Mesos, &fx.input("c1", &env, false))
        .unwrap();
    fs::write(&flag, b"").unwrap();
    let err = iso.cleanup("c1").unwrap_err();
    assert!(
        render_chain(&err).contains("device busy"),
        "{}",
        render_chain(&err)
    );
    let kept = fs::read_to_string(fx.config.work_dir.join("volumes/rexray/v.json")).unwrap();
    assert!(kept.contains("device busy"), "{kept}");

    // A new user's mount that fails too must not forget the pending unmount.
    let fail_mount = fx.dir.path().join("fail-mount");
    fs::write(&fail_mount, b"").unwrap();
    assert!(iso
        .prepare("c2", Owner::Mesos, &fx.input("c2", &env, false))
        .is_err());
    assert!(
        fx.recorded("rexray", "v"),
        "a failed mount forgot a volume still to unmount"
    );
    fs::remove_file(&fail_mount).unwrap();

    // The next cleanup (of any container) retries it.
    fs::remove_file(&flag).unwrap();
    iso.cleanup("other").unwrap();
    assert!(!fx.recorded("rexray", "v"));
}

#[test]
fn cleanup_during_a_slow_prepare_releases_what_the_prepare_mounts() {
    use std::sync::mpsc;
    use std::sync::Mutex;
    use support::plugin::{memory_plugin, TestPlugin};

    let fx = Fixture::new();
    let plugins = fx.mkdir("plugins");
    let (mount_seen, seen) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let (mount_seen, released) = (Mutex::new(mount_seen), Mutex::new(released));
    let inner = memory_plugin(fx.mkdir("vols"));
    // A test double for a slow attach that the test lets finish when it chooses.
    let _plugin = TestPlugin::unix(&plugins.join("slow.sock"), move |req| {
        if req.path == "/VolumeDriver.Mount" {
            mount_seen.lock().unwrap().send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
        inner(req)
    });
    let iso = fx.isolator();
    let env = [("DVDI_VOLUME_DRIVER", "slow"), ("DVDI_VOLUME_NAME", "v")];
    let input = fx.input("c", &env, false);
    std::thread::scope(|s| {
        let prep = s.spawn(|| iso.prepare("c", Owner::Mesos, &input));
        seen.recv().unwrap();
        // The agent destroys the container while its prepare is still attaching.
        let clean = s.spawn(|| iso.cleanup("c"));
        release.send(()).unwrap();
        prep.join().unwrap().unwrap();
        clean.join().unwrap().unwrap();
    });
    assert!(
        !fx.recorded("slow", "v"),
        "a reference outlived its container's cleanup"
    );
}

/// The host mount at `path`, as this thread's mount table shows it.
fn host_mount(path: &std::path::Path) -> mount::MountInfoEntry {
    mount::read_mountinfo(std::path::Path::new(support::host::THREAD_MOUNTINFO))
        .unwrap()
        .into_iter()
        .rfind(|m| m.mount_point == path)
        .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
}

#[test]
fn readers_only_mount_a_block_volume_read_only_and_a_writer_waits_for_them() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let iso = fx.isolator();
        let input = |id: &str, read_only: bool| {
            let mut env = vec![
                ("DVDI_VOLUME_DRIVER", "loop"),
                ("DVDI_VOLUME_NAME", "blk"),
                ("DVDI_VOLUME_CONTAINERPATH", "/data"),
            ];
            if read_only {
                env.push(("DVDI_VOLUME_READONLY", "true"));
            }
            fx.input(id, &env, true)
        };
        // Written once, so the readers have something to read.
        let w0 = iso
            .prepare("w0", Owner::Mesos, &input("w0", false))
            .unwrap();
        let host = w0.mounts[0].source.clone();
        assert!(!host_mount(&host).is_read_only());
        fs::write(host.join("row"), b"42").unwrap();
        iso.cleanup("w0").unwrap();

        // Two readers: the file system is mounted read-only on the host, its journal not
        // replayed (ext4 shows `noload` as `norecovery`), so nothing is written to the device.
        for id in ["r1", "r2"] {
            let plan = iso.prepare(id, Owner::Mesos, &input(id, true)).unwrap();
            assert_eq!(plan.mounts[0].source, host);
        }
        let m = host_mount(&host);
        assert!(m.is_read_only(), "{m:?}");
        let sb: Vec<&str> = m.super_options.split(',').collect();
        assert!(sb.contains(&"ro") && sb.contains(&"norecovery"), "{m:?}");
        assert_eq!(fs::read(host.join("row")).unwrap(), b"42");
        let err = fs::write(host.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

        // A writer is refused while the readers use it, and changes nothing.
        let err = render_chain(
            &iso.prepare("w1", Owner::Mesos, &input("w1", false))
                .unwrap_err(),
        );
        for part in ["volume \"blk\" (driver \"loop\")", "read-only", "readers"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
        assert!(host_mount(&host).is_read_only());
        iso.cleanup("r1").unwrap();
        iso.cleanup("r2").unwrap();
        assert!(!is_mounted(&host));
        assert!(!fx.recorded("loop", "blk"));

        // Once they are gone, a writer gets the volume read-write.
        iso.prepare("w2", Owner::Mesos, &input("w2", false))
            .unwrap();
        assert!(!host_mount(&host).is_read_only());
        fs::write(host.join("row"), b"43").unwrap();
        iso.cleanup("w2").unwrap();
        assert!(!is_mounted(&host));
    });
}

/// A test double standing in for a plugin without a guard of its own: it mounts a fresh tmpfs
/// (a new file system instance) at a volume's mount point whenever that is not a mount point,
/// so a second mount of a volume still in use elsewhere would put a second instance beside the
/// first. Counts its mounts.
struct FreshTmpfs {
    driver: DriverName,
    root: std::path::PathBuf,
    mounts: std::sync::atomic::AtomicUsize,
}

impl mesos_dvdi::backend::Backend for FreshTmpfs {
    fn driver(&self) -> &DriverName {
        &self.driver
    }
    fn create(
        &self,
        _: &mesos_dvdi::spec::VolumeName,
        _: &mesos_dvdi::spec::VolumeOpts,
    ) -> Result<(), mesos_dvdi::backend::BackendError> {
        Ok(())
    }
    fn remove(
        &self,
        _: &mesos_dvdi::spec::VolumeName,
    ) -> Result<(), mesos_dvdi::backend::BackendError> {
        Ok(())
    }
    fn mount(
        &self,
        req: &mesos_dvdi::backend::MountRequest<'_>,
    ) -> Result<std::path::PathBuf, mesos_dvdi::backend::BackendError> {
        let p = self.root.join(req.name.as_str());
        fs::create_dir_all(&p).unwrap();
        if mount::is_mount_root(&p) != Some(true) {
            self.mounts.fetch_add(1, Ordering::SeqCst);
            Host.mount(
                std::path::Path::new("tmpfs"),
                &p,
                Some("tmpfs"),
                mount::MsFlags::empty(),
                None,
            )
            .unwrap();
        }
        Ok(p)
    }
    fn unmount(
        &self,
        name: &mesos_dvdi::spec::VolumeName,
        _: &mesos_dvdi::backend::MountId,
    ) -> Result<(), mesos_dvdi::backend::BackendError> {
        let p = self.root.join(name.as_str());
        if mount::is_mount_root(&p) == Some(true) {
            Host.umount(&p, mount::MntFlags::empty()).unwrap();
        }
        Ok(())
    }
    fn path(
        &self,
        _: &mesos_dvdi::spec::VolumeName,
    ) -> Result<Option<std::path::PathBuf>, mesos_dvdi::backend::BackendError> {
        Ok(None)
    }
    fn get(
        &self,
        _: &mesos_dvdi::spec::VolumeName,
    ) -> Result<Option<mesos_dvdi::backend::VolumeInfo>, mesos_dvdi::backend::BackendError> {
        Ok(None)
    }
    fn list(
        &self,
    ) -> Result<Vec<mesos_dvdi::backend::VolumeInfo>, mesos_dvdi::backend::BackendError> {
        Ok(Vec::new())
    }
    fn capabilities(
        &self,
    ) -> Result<mesos_dvdi::backend::Capabilities, mesos_dvdi::backend::BackendError> {
        Ok(mesos_dvdi::backend::Capabilities {
            scope: mesos_dvdi::backend::Scope::Local,
        })
    }
}

struct OneBackend(Arc<FreshTmpfs>);

impl mesos_dvdi::backend::BackendProvider for OneBackend {
    fn backend(
        &self,
        _: &DriverName,
        _: Option<&std::path::Path>,
    ) -> Result<Arc<dyn mesos_dvdi::backend::Backend>, mesos_dvdi::backend::BackendError> {
        Ok(Arc::clone(&self.0) as Arc<dyn mesos_dvdi::backend::Backend>)
    }
}

/// A process killed and reaped when dropped (a failing test leaves none behind); made by
/// [`NamespaceHolder::start`], one in a copy of the calling thread's mount namespace (a
/// container's, with the volume in it).
struct NamespaceHolder(std::process::Child);

impl NamespaceHolder {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("echo ready; exec sleep 1000")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Self(child)
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gc_does_not_mount_again_a_vanished_mount_whose_file_system_a_container_still_has() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let backend = Arc::new(FreshTmpfs {
            driver: DriverName::new("fresh").unwrap(),
            root: fx.root().join("fresh"),
            mounts: Default::default(),
        });
        let iso = fx.isolator_with(Arc::new(OneBackend(Arc::clone(&backend))));
        // A live `dvdi run`-like user, so gc keeps the volume in use.
        let user = NamespaceHolder(
            std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .unwrap(),
        );
        let pid = i32::try_from(user.0.id()).unwrap();
        let owner = Owner::Process {
            pid,
            start_time: mesos_dvdi::isolator::process_start_time(pid).unwrap(),
        };
        let env = [("DVDI_VOLUME_DRIVER", "fresh"), ("DVDI_VOLUME_NAME", "v")];
        iso.prepare("run-1", owner, &fx.input("run-1", &env, false))
            .unwrap();
        let host = fx.root().join("fresh/v");
        fs::write(host.join("data"), b"1").unwrap();
        // The container keeps the file system in its namespace; the host's mount goes by hand.
        let container = NamespaceHolder::start();
        Host.umount(&host, mount::MntFlags::empty()).unwrap();

        let report = iso.gc(false).unwrap();
        assert!(report.remounted.is_empty(), "{report:?}");
        assert_eq!(
            backend.mounts.load(Ordering::SeqCst),
            1,
            "mounted a second instance"
        );
        let error = report.errors.join("\n");
        assert!(
            error.contains("volume \"v\" (driver \"fresh\"): not mounted again at")
                && error.contains(&format!(
                    "mounted at {} in the mount namespace of process {} (",
                    host.display(),
                    container.0.id()
                ))
                && error.contains("could corrupt it"),
            "{error}"
        );
        // dry run judges the same.
        let dry = iso.gc(true).unwrap();
        assert!(
            dry.remounted.is_empty() && !dry.errors.is_empty(),
            "{dry:?}"
        );

        // Once the container is gone, gc mounts it again.
        drop(container);
        let report = iso.gc(false).unwrap();
        assert_eq!(report.remounted.len(), 1, "{report:?}");
        assert_eq!(backend.mounts.load(Ordering::SeqCst), 2);
        iso.cleanup("run-1").unwrap();
        drop(user);
    });
}
