//! What backend calls are waiting for right now, for a progress display (`dvdi run` prints it
//! beside its seconds counter): a backend names its wait while it lasts, the display reads it.

use std::sync::{Arc, Mutex, MutexGuard};

/// The waits of every backend of one registry. Clones share one list.
#[derive(Debug, Clone, Default)]
pub struct Waits(Arc<Mutex<List>>);

#[derive(Debug, Default)]
struct List {
    next: u64,
    waits: Vec<(u64, String)>,
}

impl Waits {
    fn list(&self) -> MutexGuard<'_, List> {
        // Plain inserts and removes: a panic elsewhere leaves the list usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
}

/// Ends its wait when dropped.
#[derive(Debug)]
pub struct WaitGuard {
    waits: Waits,
    id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.waits.list().waits.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::Waits;

    #[test]
    fn a_wait_lasts_as_long_as_its_guard() {
        let waits = Waits::default();
        let a = waits.begin("a".into());
        let b = waits.clone().begin("b".into());
        assert_eq!(waits.current(), ["a", "b"]);
        drop(a);
        assert_eq!(waits.current(), ["b"]);
        drop(b);
        assert!(waits.current().is_empty());
    }
}
