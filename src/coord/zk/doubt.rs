//! Writes whose outcome is unknown: the volumes they touched are settled, once the session can
//! be used again, to exactly what this process vouches for.
//!
//! A write whose answer never came (the connection dropped, the request timed out, the caller's
//! call was cut off) may or may not have happened. Nothing in doubt is held: the volume is
//! marked, and before anything else touches it (an acquire, a release, its watch, or the
//! reconnection itself) our session's nodes on it are made to match the held table: a node of
//! this session the table does not name is deleted, and a held read-only lease whose node an
//! upgrade may have replaced is put back. If the session ends first, its nodes go with it.

use std::sync::Arc;

use zookeeper_client as zk;

use super::tree::node_name;
use super::{lock, Inner};
use crate::coord::{CoordError, LeaseMode};
use crate::spec::VolumeKey;

/// Whether a failed request may still have changed something on the server: every error but
/// the server's own refusals (and the session's end, which takes our nodes with it).
pub(super) fn outcome_unknown(e: &zk::Error) -> bool {
    !matches!(
        e,
        zk::Error::NoNode
            | zk::Error::NoAuth
            | zk::Error::BadVersion
            | zk::Error::NoChildrenForEphemerals
            | zk::Error::NodeExists
            | zk::Error::NotEmpty
            | zk::Error::InvalidAcl
            | zk::Error::AuthFailed
            | zk::Error::SessionMoved
            | zk::Error::NotReadOnly
            | zk::Error::QuotaExceeded
            | zk::Error::Throttled
            | zk::Error::MarshallingError
            | zk::Error::Unimplemented
            | zk::Error::BadArguments(_)
            | zk::Error::SessionExpired
            | zk::Error::ClientClosed
    )
}

impl Inner {
    /// Marks `volume` as touched by a write of unknown outcome, and settles it as soon as it can.
    pub(super) fn doubt(self: &Arc<Self>, volume: &VolumeKey) {
        log::warn!(
            "{volume}: a ZooKeeper write's outcome is unknown; its nodes are settled when the \
             session can be used again"
        );
        {
            let mut st = lock(&self.state);
            st.doubt.insert(volume.clone());
            st.known.remove(volume);
        }
        tokio::spawn(Arc::clone(self).settle_later(volume.clone()));
    }

    /// Settles every volume in doubt (the session is usable again).
    pub(super) fn settle_all(self: &Arc<Self>) {
        let doubtful: Vec<VolumeKey> = lock(&self.state).doubt.iter().cloned().collect();
        for volume in doubtful {
            tokio::spawn(Arc::clone(self).settle_later(volume));
        }
    }

    async fn settle_later(self: Arc<Self>, volume: VolumeKey) {
        let vlock = self.volume_lock(&volume);
        let _guard = vlock.lock().await;
        if let Ok((client, _)) = self.live_client(&volume) {
            // Failing, it stays in doubt for the next try (or the session's end).
            if let Err(e) = self.settle(&client, &volume).await {
                log::debug!("{e}");
            }
        }
    }

    /// Makes our session's nodes on `volume` match the held table, if the volume is in doubt.
    /// Runs under the volume's lock.
    pub(super) async fn settle(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
    ) -> Result<(), CoordError> {
        let (epoch, held) = {
            let st = lock(&self.state);
            if !st.doubt.contains(volume) {
                return Ok(());
            }
            (st.epoch, st.held.get(volume).map(|h| (h.id, h.mode)))
        };
        let session = client.session_id().0;
        let dir = self.volume_dir(volume);
        let path = |mode| format!("{dir}/{}", node_name(mode, session));
        let (ro, rw) = (path(LeaseMode::ReadOnly), path(LeaseMode::ReadWrite));
        // Both asked at once: one round trip.
        let (ro_stat, rw_stat) = (client.check_stat(&ro), client.check_stat(&rw));
        let ours = |stat: Result<Option<zk::Stat>, zk::Error>, p: &str| match stat {
            Ok(s) => Ok(s.is_some_and(|s| s.ephemeral_owner == session)),
            Err(e) => Err(self.zk_error(volume, "exists", p, e)),
        };
        let (has_ro, has_rw) = (ours(ro_stat.await, &ro)?, ours(rw_stat.await, &rw)?);
        let mut delete = Vec::new();
        match held {
            None => {
                delete.extend(has_ro.then_some(&ro));
                delete.extend(has_rw.then_some(&rw));
            }
            Some((_, LeaseMode::ReadWrite)) if has_rw => delete.extend(has_ro.then_some(&ro)),
            Some((_, LeaseMode::ReadOnly)) if has_ro => delete.extend(has_rw.then_some(&rw)),
            Some((_, LeaseMode::ReadOnly)) if has_rw => {
                // An upgrade whose answer was lost went through: back to read-only.
                self.downgrade(client, volume).await?;
            }
            Some((id, _)) => {
                lock(&self.state).doubt.remove(volume);
                self.lose(volume, id, None, "its node is gone");
                return Ok(());
            }
        }
        let deletes: Vec<_> = delete.iter().map(|p| client.delete(p, None)).collect();
        for (p, d) in delete.iter().zip(deletes) {
            match d.await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.zk_error(volume, "delete", p, e)),
            }
        }
        let mut st = lock(&self.state);
        if st.epoch == epoch {
            st.doubt.remove(volume);
        }
        Ok(())
    }

    /// Replaces our read-write node on `volume` by a read-only one, in one transaction that also
    /// sets the volume node's data (whatever its version) so that takes decided meanwhile are
    /// decided again. Needs no check: holding read-write, nothing of another agent conflicts
    /// with read-only.
    pub(super) async fn downgrade(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
    ) -> Result<(), CoordError> {
        let session = client.session_id().0;
        let dir = self.volume_dir(volume);
        let ro = format!("{dir}/{}", node_name(LeaseMode::ReadOnly, session));
        let rw = format!("{dir}/{}", node_name(LeaseMode::ReadWrite, session));
        let data = self.holder_json(volume, &ro, &self.holder())?;
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let failed = |e: zk::Error| self.zk_error(volume, "multi", &ro, e);
        // The volume changes under any view kept of it.
        lock(&self.state).known.remove(volume);
        let mut multi = client.new_multi_writer();
        multi.add_set_data(&dir, b"", None).map_err(failed)?;
        multi.add_delete(&rw, None).map_err(failed)?;
        multi.add_create(&ro, &data, &ephemeral).map_err(failed)?;
        multi.commit().await.map_err(|e| failed(e.into()))?;
        Ok(())
    }
}
