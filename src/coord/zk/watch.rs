//! The watch on a held lease's node: re-taking the lease when its node is deleted under us, or
//! reporting it lost.

use std::sync::Arc;
use std::time::Duration;

use zookeeper_client as zk;

use super::session::is_connection_error;
use super::tree::Taken;
use super::{lock, Inner};
use crate::coord::{CoordError, Holder, LeaseLoss, LossReason};
use crate::spec::VolumeKey;

impl Inner {
    /// Sets a watch on our lease node `path` if it is still our session's; `None` when it is
    /// gone or another session's now.
    pub(super) async fn watch_node(
        &self,
        path: &str,
    ) -> Result<Option<zk::OneshotWatcher>, zk::Error> {
        // The client handle goes before anyone waits on the watch: a waiting watch must not
        // keep the session open when the coordinator closes it.
        let client = lock(&self.state).client.clone();
        let client = client.ok_or(zk::Error::ConnectionLoss)?;
        let session = client.session_id().0;
        match client.check_and_watch_stat(path).await? {
            (Some(stat), w) if stat.ephemeral_owner == session => Ok(Some(w)),
            _ => Ok(None),
        }
    }

    /// Watches a held lease's node; when it is deleted under us (or found replaced), re-takes
    /// the lease at once or reports it lost. Ends when the lease is released or lost, or the
    /// session ends (the supervisor reports that).
    pub(super) async fn watch_lease(
        self: Arc<Self>,
        volume: VolumeKey,
        id: u64,
        epoch: u64,
        mut watcher: Option<zk::OneshotWatcher>,
    ) {
        loop {
            let path = {
                let st = lock(&self.state);
                match st.held.get(&volume) {
                    Some(h) if h.id == id && st.epoch == epoch => h.path.clone(),
                    _ => return,
                }
            };
            match watcher.take() {
                Some(w) => match w.changed().await.event_type {
                    zk::EventType::NodeDeleted => {}
                    // Session trouble is the supervisor's to report.
                    zk::EventType::Session => return,
                    // Anything else: watch again (and check the node is still the one).
                    _ => continue,
                },
                None => match self.watch_node(&path).await {
                    Ok(Some(w)) => {
                        watcher = Some(w);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let connected = {
                            let st = lock(&self.state);
                            st.epoch == epoch && st.connected
                        };
                        if connected && !is_connection_error(&e) {
                            self.lose(&volume, id, None, &format!("cannot watch {path}: {e}"));
                            return;
                        }
                        // The connection broke under the request: watch again once it is
                        // back; if the session is lost instead, the supervisor reports it.
                        if !self.reconnected(epoch).await {
                            return;
                        }
                        continue;
                    }
                },
            }
            // The node is gone (or not ours any more): take the lease again at once, or
            // report it lost. A write in doubt is settled first: it may have replaced the node.
            let vlock = self.volume_lock(&volume);
            let _guard = vlock.lock().await;
            let retaken = match self.live_client(&volume) {
                Ok((client, _)) => self.retake(&client, &volume, id, epoch, &path).await,
                Err(e) => Err(e),
            };
            match retaken {
                // Ours again (a write in doubt was settled), or no longer held by this entry.
                Ok(None) => {}
                Ok(Some(taken)) => {
                    log::warn!("{volume}: lease node {path} was deleted; taken again");
                    let mut st = lock(&self.state);
                    if st.epoch != epoch {
                        return;
                    }
                    match st.held.get_mut(&volume) {
                        Some(h) if h.id == id => {
                            h.mode = taken.mode;
                            h.path = taken.path;
                            watcher = taken.watcher;
                        }
                        _ => return,
                    }
                }
                Err(CoordError::Held { holder, .. }) => {
                    self.lose(&volume, id, Some(*holder), "its node was deleted");
                    return;
                }
                Err(e) => {
                    self.lose(&volume, id, None, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Under the volume's lock, after lease `id`'s node `path` was seen gone: settles a write in
    /// doubt (which may have replaced the node), then takes the lease again unless the node is
    /// ours again. `None` when nothing was taken.
    async fn retake(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        id: u64,
        epoch: u64,
        path: &str,
    ) -> Result<Option<Taken>, CoordError> {
        self.settle(client, volume).await?;
        let wanted = {
            let st = lock(&self.state);
            match st.held.get(volume) {
                Some(h) if h.id == id && st.epoch == epoch => h.wanted,
                _ => return Ok(None),
            }
        };
        let session = client.session_id().0;
        match client.check_stat(path).await {
            Ok(Some(stat)) if stat.ephemeral_owner == session => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(self.zk_error(volume, "exists", path, e)),
        }
        self.take(client, volume, wanted, Duration::ZERO)
            .await
            .map(Some)
    }

    /// Forgets lease `id` on `volume` and reports it lost (taken over).
    pub(super) fn lose(&self, volume: &VolumeKey, id: u64, holder: Option<Holder>, why: &str) {
        {
            let mut st = lock(&self.state);
            match st.held.get_mut(volume) {
                Some(h) if h.id == id => {
                    // This runs on the watch task itself: do not abort it from under us.
                    h.watch = None;
                }
                _ => return,
            }
            st.held.remove(volume);
        }
        log::warn!("{volume}: lease lost ({why})");
        self.report(LeaseLoss {
            volume: volume.clone(),
            reason: LossReason::TakenOver,
            holder,
        });
    }
}
