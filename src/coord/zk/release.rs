//! Giving a lease back: this process's part (our session's nodes on the volume), or the agent's
//! whole lease (those of its other processes too).

use std::sync::Arc;

use zookeeper_client as zk;

use super::doubt::outcome_unknown;
use super::tree::{mode_of_name, node_name, Owner};
use super::{lock, Inner};
use crate::coord::{CoordError, LeaseMode};
use crate::spec::VolumeKey;

impl Inner {
    /// Deletes our session's nodes on `volume`: `held`, the one the lease rested on, or (not
    /// held, or in doubt) whichever of them may be there, all at once (one round trip). When the
    /// answer is lost the volume is in doubt, and the error says so.
    pub(super) async fn delete_ours(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        held: Option<String>,
    ) -> Result<(), CoordError> {
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let ours: Vec<String> = match held.filter(|_| !lock(&self.state).doubt.contains(volume)) {
            // One node, one write: a deletion that finds nothing costs a write too.
            Some(path) => vec![path],
            None => [LeaseMode::ReadOnly, LeaseMode::ReadWrite]
                .map(|mode| format!("{dir}/{}", node_name(mode, session)))
                .to_vec(),
        };
        let deletes: Vec<_> = ours.iter().map(|p| client.delete(p, None)).collect();
        for (path, delete) in ours.iter().zip(deletes) {
            match delete.await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) if outcome_unknown(&e) => {
                    self.doubt(volume);
                    return Err(self.unavailable(
                        volume,
                        format!(
                            "delete {path}: {e}; the lease is no longer held here, and its node \
                             is deleted when the session can be used again (or goes with it)"
                        ),
                    ));
                }
                Err(e) => return Err(self.zk_error(volume, "delete", path, e)),
            }
        }
        let mut st = lock(&self.state);
        st.doubt.remove(volume);
        if let Some(view) = st.known.get_mut(volume) {
            view.nodes.retain(|n| n.owner != session);
        }
        Ok(())
    }

    /// Gives this agent's lease on `volume` back: our session's nodes, and every other node of
    /// this agent on this host (a dead process's, or a live process's part that it did not give
    /// up: the caller knows that no one here uses the volume). The lease is forgotten before
    /// anything is sent: if the answer is lost, the volume is in doubt, and our nodes are
    /// deleted when the session can be used again (or go with it).
    pub(super) async fn release(self: &Arc<Self>, volume: &VolumeKey) -> Result<(), CoordError> {
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let held = lock(&self.state).held.contains_key(volume);
        let (client, _) = match self.live_client(volume) {
            Ok(c) => c,
            // Holding nothing is success, connected or not; a lease held stays held (and is
            // reported lost if the session goes).
            Err(_) if !held => return Ok(()),
            Err(e) => return Err(e),
        };
        // Dropping the entry stops its watch: the deletions below are ours, not a loss.
        let path = lock(&self.state)
            .held
            .remove(volume)
            .map(|h| h.path.clone());
        let dir = self.volume_dir(volume);
        // Sent with the deletions: one round trip.
        let listed = client.list_children(&dir);
        self.delete_ours(&client, volume, path).await?;
        let session = client.session_id().0;
        let ours = [LeaseMode::ReadOnly, LeaseMode::ReadWrite].map(|mode| node_name(mode, session));
        let others = match listed.await {
            Ok(children) => children
                .iter()
                .any(|c| mode_of_name(c).is_some() && !ours.contains(c)),
            Err(zk::Error::NoNode) => false,
            Err(e) => return Err(self.zk_error(volume, "get_children", &dir, e)),
        };
        if others {
            lock(&self.state).known.remove(volume);
            self.delete_agents_nodes(&client, volume, &dir).await?;
        }
        Ok(())
    }

    /// Gives up our session's part of the agent's lease on `volume`; the other processes of
    /// this agent keep theirs. Forgotten at once: without a session (or when the answer is
    /// lost), our nodes are deleted when the session can be used again, or go with it.
    pub(super) async fn leave(self: &Arc<Self>, volume: &VolumeKey) -> Result<(), CoordError> {
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let held = lock(&self.state)
            .held
            .remove(volume)
            .map(|h| h.path.clone());
        match self.live_client(volume) {
            Ok((client, _)) => self.delete_ours(&client, volume, held).await,
            Err(_) => {
                if held.is_some() {
                    self.doubt(volume);
                }
                Ok(())
            }
        }
    }

    /// Deletes the nodes of this agent's other processes on `volume`, dead or alive.
    async fn delete_agents_nodes(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
    ) -> Result<(), CoordError> {
        let session = client.session_id().0;
        let Some(view) = self.read_view(client, volume, dir, false).await? else {
            return Ok(());
        };
        for n in view.nodes {
            if matches!(self.classify(&n, session), Owner::Stale | Owner::Sibling) {
                match client.delete(&n.path, Some(n.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                    Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                }
            }
        }
        Ok(())
    }
}
