//! A recording [`Mounter`] for tests (a test double): mount logic above the mount layer is tested
//! as an exact sequence of calls, with any call scripted to fail. It touches nothing on the host.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;

use super::{MntFlags, MountError, Mounter, MsFlags};

/// One call made to a [`FakeMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// mount(2).
    Mount {
        /// Source.
        source: PathBuf,
        /// Target.
        target: PathBuf,
        /// File system type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data.
        data: Option<String>,
    },
    /// umount2(2).
    Umount {
        /// Target.
        target: PathBuf,
        /// Flags.
        flags: MntFlags,
    },
}

/// A test double: records every call, in order, and fails the calls it is told to. Calls that do
/// not fail have no effect.
///
/// ```
/// use std::path::Path;
/// use mesos_dvdi::mount::{bind, FakeMounter, MountCall};
///
/// let m = FakeMounter::new();
/// m.fail_call(1, nix::errno::Errno::EPERM); // the read-only remount
/// assert!(bind(&m, Path::new("/vol"), Path::new("/ctr/data"), true).is_err());
/// assert!(matches!(m.calls()[2], MountCall::Umount { .. })); // the bind is taken away
/// ```
#[derive(Debug, Default)]
pub struct FakeMounter {
    calls: Mutex<Vec<MountCall>>,
    /// Call numbers (0-based, in order of arrival) that fail, with their errno.
    failures: Mutex<Vec<(usize, Errno)>>,
}

impl FakeMounter {
    /// A fake that accepts every call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`th call (0-based) fail with `errno`.
    pub fn fail_call(&self, n: usize, errno: Errno) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((n, errno));
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<MountCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, call: MountCall) -> Option<Errno> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.len();
        calls.push(call);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(i, _)| *i == n)
            .map(|(_, e)| *e)
    }
}

impl Mounter for FakeMounter {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError> {
        match self.record(MountCall::Mount {
            source: source.to_owned(),
            target: target.to_owned(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        }) {
            None => Ok(()),
            Some(errno) => Err(MountError::Mount {
                source_path: source.to_owned(),
                target: target.to_owned(),
                fstype: fstype.unwrap_or("-").to_owned(),
                errno,
            }),
        }
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<(), MountError> {
        match self.record(MountCall::Umount {
            target: target.to_owned(),
            flags,
        }) {
            None => Ok(()),
            Some(errno) => Err(MountError::Unmount {
                target: target.to_owned(),
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::{bind, make_rprivate, make_rslave, UnmountGuard};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn read_write_bind_is_one_recursive_bind() {
        let m = FakeMounter::new();
        bind(&m, &p("/src"), &p("/dst"), false).unwrap();
        assert_eq!(
            m.calls(),
            [MountCall::Mount {
                source: p("/src"),
                target: p("/dst"),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None
            }]
        );
    }

    #[test]
    fn read_only_bind_is_a_bind_then_a_read_only_remount() {
        let m = FakeMounter::new();
        bind(&m, &p("/src"), &p("/dst"), true).unwrap();
        let call = |flags| MountCall::Mount {
            source: p("/src"),
            target: p("/dst"),
            fstype: None,
            flags,
            data: None,
        };
        assert_eq!(
            m.calls(),
            [
                call(MsFlags::MS_BIND | MsFlags::MS_REC),
                call(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY),
            ]
        );
    }

    #[test]
    fn failed_read_only_remount_takes_the_writable_bind_away() {
        let m = FakeMounter::new();
        m.fail_call(1, Errno::EPERM);
        let err = bind(&m, &p("/src"), &p("/dst"), true).unwrap_err();
        assert!(matches!(err, MountError::ReadOnly { .. }), "{err:?}");
        assert_eq!(err.to_string(), "making the bind on /dst read-only failed");
        assert_eq!(m.calls().len(), 3);
        assert_eq!(
            m.calls()[2],
            MountCall::Umount {
                target: p("/dst"),
                flags: MntFlags::MNT_DETACH
            }
        );
    }

    #[test]
    fn failed_bind_makes_no_further_call() {
        for read_only in [false, true] {
            let m = FakeMounter::new();
            m.fail_call(0, Errno::ENOENT);
            let err = bind(&m, &p("/src"), &p("/dst"), read_only).unwrap_err();
            assert!(matches!(err, MountError::Mount { .. }), "{err:?}");
            assert_eq!(m.calls().len(), 1, "read_only={read_only}");
        }
    }

    #[test]
    fn propagation_changes_are_recursive() {
        let m = FakeMounter::new();
        make_rslave(&m, &p("/")).unwrap();
        make_rprivate(&m, &p("/x")).unwrap();
        let change = |target: &str, kind| MountCall::Mount {
            source: p("none"),
            target: p(target),
            fstype: None,
            flags: MsFlags::MS_REC | kind,
            data: None,
        };
        assert_eq!(
            m.calls(),
            [
                change("/", MsFlags::MS_SLAVE),
                change("/x", MsFlags::MS_PRIVATE)
            ]
        );
    }

    #[test]
    fn scripted_unmount_failure_is_returned() {
        let m = FakeMounter::new();
        m.fail_call(0, Errno::EBUSY);
        let err = m.umount(&p("/a"), MntFlags::empty()).unwrap_err();
        assert!(matches!(
            err,
            MountError::Unmount {
                errno: Errno::EBUSY,
                ..
            }
        ));
        // Only the scripted call fails.
        m.umount(&p("/a"), MntFlags::empty()).unwrap();
    }

    #[test]
    fn guard_unmounts_on_drop_unless_disarmed() {
        let m = FakeMounter::new();
        let guard = UnmountGuard::new(&m, &p("/a"));
        assert_eq!(guard.target(), p("/a"));
        drop(guard);
        UnmountGuard::new(&m, &p("/b")).disarm();
        assert_eq!(
            m.calls(),
            [MountCall::Umount {
                target: p("/a"),
                flags: MntFlags::MNT_DETACH
            }]
        );
    }

    #[test]
    fn guard_survives_a_failing_unmount() {
        let m = FakeMounter::new();
        m.fail_call(0, Errno::EINVAL);
        // Logged, not returned or panicked: Drop has no way to report it.
        drop(UnmountGuard::new(&m, &p("/gone")));
        assert_eq!(m.calls().len(), 1);
    }
}
