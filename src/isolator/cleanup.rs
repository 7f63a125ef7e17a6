//! Cleanup: a container's volumes released, each unmounted (and its lease given back) when its
//! last user is gone; unmounts that failed before are retried here.

use crate::error::render_chain;
use crate::spec::VolumeKey;
use crate::state::{ContainerId, Phase, VolumeGuard, VolumeRecord};

use super::{about, crash_point, CleanupError, Isolator, IsolatorError};

impl Isolator {
    /// Releases every volume `id` holds; an unknown id is fine. Unmount failures are kept
    /// recorded and retried at the next cleanup or recover.
    pub fn cleanup(&self, id: &str) -> Result<(), CleanupError> {
        let Ok(id) = ContainerId::new(id) else {
            // No container with an invalid id was ever prepared.
            return Ok(());
        };
        // A container destroyed while its prepare runs: wait for the prepare to finish, so what
        // it records is released here rather than left behind.
        let keys = {
            let mut index = self.index();
            while let Some(None) = index.get(&id) {
                index = self.prepared.wait(index).unwrap_or_else(|p| p.into_inner());
            }
            index.get(&id).cloned().flatten().unwrap_or_default()
        };
        let mut failures: Vec<IsolatorError> = keys
            .iter()
            .filter_map(|key| self.release(key, &id).err())
            .collect();
        // Retry unmounts that failed before, now that their backend may be back.
        let retry: Vec<VolumeKey> = self
            .pending()
            .iter()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for key in retry {
            if let Err(e) = self.retry_unused(&key) {
                log::warn!("{}", render_chain(&e));
            }
        }
        self.index().remove(&id);
        if failures.is_empty() {
            Ok(())
        } else {
            failures.shrink_to_fit();
            Err(CleanupError {
                container: id,
                failures,
            })
        }
    }

    /// Retries the unmount of `key` when it still has no users; forgets it otherwise.
    fn retry_unused(&self, key: &VolumeKey) -> Result<(), IsolatorError> {
        let guard = self.store.lock(key).map_err(Self::state_err(key))?;
        match guard.load().map_err(Self::state_err(key))? {
            Some(record) if record.users.is_empty() => self.unmount_unused(&guard, record),
            _ => {
                self.pending().remove(key);
                Ok(())
            }
        }
    }

    /// Drops `id`'s use of the volume; unmounts it when no one else uses it.
    pub(super) fn release(&self, key: &VolumeKey, id: &ContainerId) -> Result<(), IsolatorError> {
        let guard = self.store.lock(key).map_err(Self::state_err(key))?;
        let Some(mut record) = guard.load().map_err(Self::state_err(key))? else {
            return Ok(());
        };
        if record.users.remove(id).is_some() {
            if !record.users.is_empty() {
                guard.save(&record).map_err(Self::state_err(key))?;
                crash_point("cleanup:ref-dropped");
                // Other processes of the agent still use it: this one gives up its part of the
                // lease once its own last user is gone, and the last to unmount gives it back.
                if record.lease.is_some() && !record.users.values().any(Self::own_user) {
                    self.leave_lease(key);
                }
                return Ok(());
            }
            crash_point("cleanup:user-removed");
        } else if !record.users.is_empty() {
            return Ok(());
        }
        self.unmount_unused(&guard, record)
    }

    /// Unmounts a volume that has no users, under its lock; keeps it recorded with the error when
    /// the unmount fails.
    pub(super) fn unmount_unused(
        &self,
        guard: &VolumeGuard,
        mut record: VolumeRecord,
    ) -> Result<(), IsolatorError> {
        let key = record.key();
        // Unmounted already, its lease release having failed: only that is left to do.
        if record.phase != Phase::Unmounted {
            record.phase = Phase::Unmounting;
            guard.save(&record).map_err(Self::state_err(&key))?;
            crash_point("cleanup:unmount-intent-saved");
            let result = self
                .backends
                .backend(&record.driver, record.dvdcli.as_deref())
                .and_then(|b| b.unmount(&record.name, &record.mount_id))
                .map_err(|e| about(e, &record));
            if let Err(e) = result {
                record.last_error = Some(render_chain(&e));
                guard.save(&record).map_err(Self::state_err(&key))?;
                self.pending().insert(key);
                return Err(e.into());
            }
            crash_point("cleanup:backend-unmounted");
        }
        // The lease goes only now that the volume is off this host; the record keeps saying it
        // is held until it is given back.
        if record.lease.is_some() {
            if let Err(e) = self.release_lease(&key) {
                record.phase = Phase::Unmounted;
                record.last_error = Some(render_chain(&e));
                guard.save(&record).map_err(Self::state_err(&key))?;
                self.pending().insert(key);
                return Err(e);
            }
            crash_point("cleanup:lease-released");
        }
        guard.remove().map_err(Self::state_err(&key))?;
        log::info!("{key}: unmounted (no container uses it)");
        self.pending().remove(&key);
        Ok(())
    }
}
