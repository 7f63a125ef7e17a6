//! What backend calls are waiting for right now, for a progress display (`dvdi run` prints it
//! beside its seconds counter): a backend names its wait while it lasts, the display reads it.
//!
//! The same handle interrupts those waits: once [`Waits::interrupt`] is called (`dvdi run` on
//! Ctrl-C), every pause taken through [`Waits::pause`] ends at once and reports it, so a call that
//! retries (a plugin that refuses connections) or waits (a lease held elsewhere) gives up instead
//! of running to its deadline.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The waits of every backend of one registry. Clones share one list.
#[derive(Debug, Clone, Default)]
pub struct Waits(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    list: Mutex<List>,
    /// Signalled when the waits are interrupted.
    woken: Condvar,
}

#[derive(Debug, Default)]
struct List {
    next: u64,
    waits: Vec<(u64, String)>,
    interrupted: bool,
}

/// A pause ended by [`Waits::interrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

impl Waits {
    fn list(&self) -> MutexGuard<'_, List> {
        // Plain inserts and removes: a panic elsewhere leaves the list usable.
        self.0.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names a wait (e.g. `plugin lp is not accepting connections (connection refused);
    /// retrying`) until the returned guard is dropped.
    pub fn begin(&self, reason: String) -> WaitGuard {
        let mut list = self.list();
        let id = list.next;
        list.next += 1;
        list.waits.push((id, reason));
        WaitGuard {
            waits: self.clone(),
            id,
        }
    }

    /// The waits going on now, oldest first.
    pub fn current(&self) -> Vec<String> {
        self.list().waits.iter().map(|(_, r)| r.clone()).collect()
    }

    /// Ends every pause, now and from now on: the calls waiting give up.
    pub fn interrupt(&self) {
        self.list().interrupted = true;
        self.0.woken.notify_all();
    }

    /// Whether [`Waits::interrupt`] was called.
    pub fn is_interrupted(&self) -> bool {
        self.list().interrupted
    }

    /// Sleeps for `d`, or until interrupted (then at once, and `Err`).
    pub fn pause(&self, d: Duration) -> Result<(), Interrupted> {
        let deadline = Instant::now() + d;
        let mut list = self.list();
        loop {
            if list.interrupted {
                return Err(Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            list = self
                .0
                .woken
                .wait_timeout(list, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Ends its wait when dropped.
#[derive(Debug)]
pub struct WaitGuard {
    waits: Waits,
    id: u64,
}

impl WaitGuard {
    /// Says something else of the same wait (what it learnt while waiting).
    pub fn rename(&self, reason: String) {
        if let Some(w) = self
            .waits
            .list()
            .waits
            .iter_mut()
            .find(|(id, _)| *id == self.id)
        {
            w.1 = reason;
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.waits.list().waits.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::{Interrupted, Waits};
    use std::time::Duration;

    #[test]
    fn a_wait_lasts_as_long_as_its_guard() {
        let waits = Waits::default();
        let a = waits.begin("a".into());
        let b = waits.clone().begin("b".into());
        assert_eq!(waits.current(), ["a", "b"]);
        b.rename("b2".into());
        assert_eq!(waits.current(), ["a", "b2"]);
        drop(a);
        assert_eq!(waits.current(), ["b2"]);
        drop(b);
        assert!(waits.current().is_empty());
    }

    #[test]
    fn an_interrupt_ends_a_pause_at_once_and_every_later_one() {
        let waits = Waits::default();
        assert_eq!(waits.pause(Duration::ZERO), Ok(()));
        let paused = std::thread::scope(|s| {
            // A pause far longer than any test: only the interrupt can end it.
            // Whether it began before the interrupt or after, it ends with it.
            let long = s.spawn(|| waits.pause(Duration::from_secs(3600)));
            waits.interrupt();
            long.join().unwrap()
        });
        assert_eq!(paused, Err(Interrupted));
        assert!(waits.is_interrupted());
        assert_eq!(waits.pause(Duration::from_secs(3600)), Err(Interrupted));
    }
}
