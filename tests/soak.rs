//! Soak: 1,000 prepare/cleanup cycles on 8 threads across local and loop volumes; afterwards the
//! mount table, this process's open file descriptors and the loop devices are as before.
//! Ignored by default: `cargo test --test soak -- --ignored soak`.

mod support;

use mesos_dvdi::state::Owner;
use support::host::loop_devices_under;
use support::host::{in_private_mount_ns, THREAD_MOUNTINFO};
use support::isolator::Fixture;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
#[ignore = "soak: run with `cargo test --test soak -- --ignored soak`"]
fn soak_thousand_cycles_on_eight_threads_leave_nothing() {
    in_private_mount_ns(|| {
        let fx = Fixture::new();
        let iso = fx.isolator();
        let mounts_before = std::fs::read_to_string(THREAD_MOUNTINFO).unwrap();
        let fds_before = open_fds();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (iso, fx) = (&iso, &fx);
                s.spawn(move || {
                    for i in 0..125 {
                        // Four volumes per driver, shared across threads.
                        let (driver, n) = if (t + i) % 2 == 0 {
                            ("local", i % 4)
                        } else {
                            ("loop", i % 4)
                        };
                        let name = format!("{driver}{n}");
                        let env = [
                            ("DVDI_VOLUME_DRIVER", driver),
                            ("DVDI_VOLUME_NAME", name.as_str()),
                            ("DVDI_VOLUME_CONTAINERPATH", "/data"),
                        ];
                        let id = format!("t{t}-{i}");
                        iso.prepare(&id, Owner::Mesos, &fx.input(&id, &env, true))
                            .unwrap();
                        iso.cleanup(&id).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            std::fs::read_to_string(THREAD_MOUNTINFO).unwrap(),
            mounts_before
        );
        assert_eq!(open_fds(), fds_before);
        assert_eq!(loop_devices_under(fx.root()).len(), 0);
        assert!(fx.isolator().store().scan().unwrap().is_empty());
    });
}
