//! The lease tree of one volume: reading its nodes, taking a lease in one transaction (waiting on
//! a conflicting holder), and giving it back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zookeeper_client as zk;

use super::doubt::outcome_unknown;
use super::worker::Reply;
use super::{lock, Held, Inner};
use crate::coord::{CoordError, Holder, LeaseMode};
use crate::spec::VolumeKey;

/// The mode a child of a volume node stands for, by its name: `rw-…` (or the single `rw` of
/// earlier versions) is read-write, `ro-…` read-only; anything else is not a lease node.
pub(super) fn mode_of_name(name: &str) -> Option<LeaseMode> {
    if name == "rw" || name.starts_with("rw-") {
        Some(LeaseMode::ReadWrite)
    } else if name.starts_with("ro-") {
        Some(LeaseMode::ReadOnly)
    } else {
        None
    }
}

/// The name of session `session`'s lease node in `mode`: `rw-<session>` or `ro-<session>`,
/// the session id in 16 hex digits. Only that session ever creates it, so deleting it by name
/// never deletes another holder's node.
pub(super) fn node_name(mode: LeaseMode, session: i64) -> String {
    let prefix = match mode {
        LeaseMode::ReadWrite => "rw",
        LeaseMode::ReadOnly => "ro",
    };
    // The id's bits as they are: session ids are unsigned on the wire's other end.
    format!("{prefix}-{:016x}", session as u64)
}

/// A lease node as read from ZooKeeper.
struct Node {
    name: String,
    path: String,
    mode: LeaseMode,
    holder: Holder,
    /// Its data parsed as a [`Holder`].
    readable: bool,
    version: i32,
    owner: i64,
}

/// A volume node's lease nodes, read after its child list, and the data version that list was
/// read at. A transaction that sets the data at this version succeeds only if no lease node
/// was created since (every creation sets it), so a decision taken on this view still holds.
struct View {
    nodes: Vec<Node>,
    version: i32,
    /// Fires when the child list changes (asked for when the caller may wait).
    watcher: Option<zk::OneshotWatcher>,
}

/// Whose a node is, as seen from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Our own session's.
    Ours,
    /// A live sibling process of this agent on this host: shared, never touched.
    Sibling,
    /// A dead previous process of this agent (or an earlier session of this process).
    Stale,
    /// Another agent's, or unreadable.
    Other,
}

/// What an acquire took.
pub(super) struct Taken {
    pub(super) mode: LeaseMode,
    /// Our node the lease rests on.
    pub(super) path: String,
}

/// The data a lease node carries, or what is known of it when it cannot be parsed: agent `?`,
/// host `?`, pid 0 and the node's creation time.
pub(super) fn holder_of(data: &[u8], stat: &zk::Stat) -> (Holder, bool) {
    match serde_json::from_slice::<Holder>(data) {
        Ok(h) => (h, true),
        Err(_) => (
            Holder {
                agent: "?".into(),
                host: "?".into(),
                pid: 0,
                since: u64::try_from(stat.ctime / 1000).unwrap_or(0),
            },
            false,
        ),
    }
}

/// Whether a process with this pid exists (a zombie counts: it has not been reaped yet).
fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        // EPERM and anything else: something is there, or we cannot tell; never take over.
        Err(_) => true,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Errors of a transaction that mean another process changed the volume meanwhile: read again.
fn raced(e: &zk::MultiWriteError) -> bool {
    matches!(
        e,
        zk::MultiWriteError::OperationFailed {
            source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
            ..
        }
    )
}

impl Inner {
    pub(super) fn volume_dir(&self, volume: &VolumeKey) -> String {
        format!(
            "{}/{}/{}",
            self.target.volumes_root(),
            volume.driver.as_str(),
            volume.name.as_str()
        )
    }

    pub(super) fn volume_lock(&self, volume: &VolumeKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(volume.clone()).or_default())
    }

    fn classify(&self, node: &Node, session: i64) -> Owner {
        if node.owner == session {
            return Owner::Ours;
        }
        if !node.readable
            || node.holder.agent != self.agent
            || node.holder.host != self.host
            || node.holder.pid == 0
        {
            // A node naming our agent but another host is another agent's: two hosts sharing
            // one agent name must not share a read-write lease.
            return Owner::Other;
        }
        if node.holder.pid == self.pid || !pid_alive(node.holder.pid) {
            return Owner::Stale;
        }
        Owner::Sibling
    }

    /// Reads the volume node's lease nodes and its version (`None` when it does not exist); with
    /// `watch`, also a watch on its child list. Every node's data is asked for at once, so the
    /// reads cost one round trip however many holders there are.
    async fn read_view(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
        watch: bool,
    ) -> Result<Option<View>, CoordError> {
        let listed = if watch {
            client
                .get_and_watch_children(dir)
                .await
                .map(|(c, s, w)| (c, s, Some(w)))
        } else {
            client.get_children(dir).await.map(|(c, s)| (c, s, None))
        };
        let (children, stat, watcher) = match listed {
            Ok(l) => l,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(self.zk_error(volume, "get_children", dir, e)),
        };
        let named: Vec<(String, LeaseMode)> = children
            .into_iter()
            .filter_map(|name| mode_of_name(&name).map(|mode| (name, mode)))
            .collect();
        // Sent in this order now, answered in this order: one round trip for them all.
        let reads: Vec<_> = named
            .iter()
            .map(|(name, _)| client.get_data(&format!("{dir}/{name}")))
            .collect();
        let mut nodes = Vec::new();
        for ((name, mode), read) in named.into_iter().zip(reads) {
            let path = format!("{dir}/{name}");
            match read.await {
                Ok((data, stat)) => {
                    let (holder, readable) = holder_of(&data, &stat);
                    nodes.push(Node {
                        name,
                        path,
                        mode,
                        holder,
                        readable,
                        version: stat.version,
                        owner: stat.ephemeral_owner,
                    });
                }
                // Gone meanwhile: a deletion only ever frees a lease.
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.zk_error(volume, "get_data", &path, e)),
            }
        }
        Ok(Some(View {
            nodes,
            version: stat.version,
            watcher,
        }))
    }

    /// Takes `mode` on `volume` in ZooKeeper (the rules of [`crate::coord::Coordinator::acquire`]),
    /// waiting up to `wait` on the volume node's children while another agent holds a
    /// conflicting lease.
    ///
    /// The decision is atomic: a view of the volume's nodes is read, and the lease is taken by a
    /// transaction that also sets the volume node's data at the version the view was read at.
    /// Another process that took a lease meanwhile changed that version, so the transaction
    /// fails and the view is read again. Deletions do not change the version: they only ever
    /// free a lease, so a decision to grant stays right after them.
    pub(super) async fn take(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<Taken, CoordError> {
        let start = Instant::now();
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        loop {
            let left = wait.checked_sub(start.elapsed()).unwrap_or_default();
            let Some(view) = self
                .read_view(client, volume, &dir, !left.is_zero())
                .await?
            else {
                // The volume's first lease: its node is created in the same transaction.
                if self.commit(client, volume, &dir, None, mode, &[]).await? {
                    return Ok(self.taken(&dir, mode, session));
                }
                continue;
            };
            let mut stale = Vec::new();
            let mut conflict: Option<&Node> = None;
            let mut have: Option<LeaseMode> = None;
            let mine = node_name(mode, session);
            for n in &view.nodes {
                if n.name == mine && n.owner != session {
                    // Our node's name on another session's node (made by hand): it blocks us.
                    conflict = Some(n);
                    break;
                }
                match self.classify(n, session) {
                    Owner::Ours => have = have.max(Some(n.mode)),
                    Owner::Sibling => {}
                    Owner::Stale => stale.push(n),
                    Owner::Other => {
                        if mode == LeaseMode::ReadWrite || n.mode == LeaseMode::ReadWrite {
                            // Name the strongest, then the oldest, holder.
                            let key = |n: &Node| (std::cmp::Reverse(n.mode), n.holder.since);
                            if conflict.is_none_or(|c| key(n) < key(c)) {
                                conflict = Some(n);
                            }
                        }
                    }
                }
            }
            if let Some(held) = have.filter(|&h| h >= mode) {
                // Our own node already carries it.
                return Ok(self.taken(&dir, held, session));
            }
            let Some(holder) = conflict else {
                for n in &stale {
                    log::warn!(
                        "{volume}: taking over the stale lease node {} of {}",
                        n.path,
                        n.holder
                    );
                }
                if self
                    .commit(client, volume, &dir, Some(&view), mode, &stale)
                    .await?
                {
                    return Ok(self.taken(&dir, mode, session));
                }
                continue;
            };
            let held = || CoordError::Held {
                volume: volume.clone(),
                wanted: mode,
                held_mode: holder.mode,
                holder: Box::new(holder.holder.clone()),
                waited: start.elapsed(),
            };
            let Some(watcher) = view.watcher.filter(|_| !left.is_zero()) else {
                return Err(held());
            };
            if tokio::time::timeout(left, watcher.changed()).await.is_err() {
                return Err(held());
            }
        }
    }

    fn taken(&self, dir: &str, mode: LeaseMode, session: i64) -> Taken {
        Taken {
            mode,
            path: format!("{dir}/{}", node_name(mode, session)),
        }
    }

    /// Creates our node for `mode` in one transaction with setting the volume node's data at the
    /// version `view` was read at (or with creating the volume node, when there was none), and
    /// deletes our node of the other mode (an upgrade) and the `stale` nodes in it. `false` when
    /// another process changed the volume meanwhile.
    async fn commit(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
        view: Option<&View>,
        mode: LeaseMode,
        stale: &[&Node],
    ) -> Result<bool, CoordError> {
        let session = client.session_id().0;
        let path = format!("{dir}/{}", node_name(mode, session));
        let failed = |op: &'static str, e: zk::Error| self.zk_error(volume, op, &path, e);
        let data = self.holder_json(volume, &path)?;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let mut multi = client.new_multi_writer();
        match view {
            Some(view) => {
                multi
                    .add_set_data(dir, b"", Some(view.version))
                    .map_err(|e| failed("multi", e))?;
                if mode == LeaseMode::ReadWrite {
                    let ro = node_name(LeaseMode::ReadOnly, session);
                    if let Some(n) = view
                        .nodes
                        .iter()
                        .find(|n| n.name == ro && n.owner == session)
                    {
                        multi
                            .add_delete(&n.path, None)
                            .map_err(|e| failed("multi", e))?;
                    }
                }
            }
            None => multi
                .add_create(dir, b"", &persistent)
                .map_err(|e| failed("multi", e))?,
        }
        multi
            .add_create(&path, &data, &ephemeral)
            .map_err(|e| failed("multi", e))?;
        for n in stale {
            multi
                .add_delete(&n.path, Some(n.version))
                .map_err(|e| failed("multi", e))?;
        }
        match multi.commit().await {
            Ok(_) => Ok(true),
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NoNode,
                ..
            }) if view.is_none() => {
                // The volume node's parents are missing: create them, then try again.
                let parent = &dir[..dir.rfind('/').unwrap_or(0)];
                match client.mkdir(parent, &persistent).await {
                    Ok(()) => Ok(false),
                    Err(e) => Err(self.zk_error(volume, "create", parent, e)),
                }
            }
            Err(e) if raced(&e) => Ok(false),
            Err(e) => {
                let e = zk::Error::from(e);
                if outcome_unknown(&e) {
                    self.doubt(volume);
                }
                Err(failed("multi", e))
            }
        }
    }

    /// The data of a lease node this process creates: its [`Holder`] as JSON.
    pub(super) fn holder_json(
        &self,
        volume: &VolumeKey,
        path: &str,
    ) -> Result<Vec<u8>, CoordError> {
        let holder = Holder {
            agent: self.agent.clone(),
            host: self.host.clone(),
            pid: self.pid,
            since: now_secs(),
        };
        serde_json::to_vec(&holder).map_err(|e| CoordError::Zk {
            volume: volume.clone(),
            op: "create",
            path: path.to_owned(),
            message: format!("cannot encode the holder: {e}"),
        })
    }

    /// Takes `mode` on `volume` (see [`Inner::take`]) and hands the answer to `reply` while
    /// the volume's lock is held. If the caller gave up meanwhile, what this call took is given
    /// back, and only that: a lease held before the call stays as it was.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
        reply: &Reply<Result<(), CoordError>>,
    ) -> Result<(), CoordError> {
        // Fail closed at once: no live session, no lease.
        self.live_client(volume)?;
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let (client, epoch) = self.live_client(volume)?;
        self.settle(&client, volume).await?;
        let before = lock(&self.state)
            .held
            .get(volume)
            .map(|h| (h.mode, h.wanted));
        if before.is_some_and(|(held, _)| held >= mode) {
            // Held already: this call takes nothing, and so gives nothing back if answered late.
            let _ = reply.deliver(Ok(()));
            return Ok(());
        }
        let wanted = before.map_or(mode, |(_, wanted)| wanted.max(mode));
        let taken = self.take(&client, volume, mode, wait).await?;
        // Watch the node before answering, so that a change right after is not missed; if it
        // cannot be set now, the watch task sets it.
        let first = self.watch_node(&taken.path).await.ok().flatten();
        if !self.hold(volume, taken, wanted, epoch, first) {
            // The session ended meanwhile: whatever we created went with it.
            return Err(self.unavailable(
                volume,
                "the ZooKeeper session ended while taking the lease".into(),
            ));
        }
        if reply.deliver(Ok(())).is_err() {
            log::warn!(
                "{volume}: lease taken after its caller gave up; giving back what that call took"
            );
            self.undo(&client, volume, before, epoch).await;
        }
        Ok(())
    }

    /// Records `taken` as held by session `epoch` (replacing an earlier entry, whose watch
    /// stops) and starts watching its node; `false` when that session is over.
    pub(super) fn hold(
        self: &Arc<Self>,
        volume: &VolumeKey,
        taken: Taken,
        wanted: LeaseMode,
        epoch: u64,
        first: Option<zk::OneshotWatcher>,
    ) -> bool {
        let mut st = lock(&self.state);
        if st.epoch != epoch {
            return false;
        }
        st.next_id += 1;
        let id = st.next_id;
        let watch = tokio::spawn(Arc::clone(self).watch_lease(volume.clone(), id, epoch, first));
        st.held.insert(
            volume.clone(),
            Held {
                mode: taken.mode,
                path: taken.path,
                wanted,
                id,
                watch: Some(watch.abort_handle()),
            },
        );
        true
    }

    /// Gives back what an acquire took whose caller gave up: `before` is the mode (and the mode
    /// wanted) held before it, if any. What cannot be undone now is settled later.
    async fn undo(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        before: Option<(LeaseMode, LeaseMode)>,
        epoch: u64,
    ) {
        let undone = match before {
            None => {
                lock(&self.state).held.remove(volume);
                self.delete_ours(client, volume).await
            }
            Some((mode, wanted)) => {
                // An upgrade: back to the read-only node, under a new watch.
                let dir = self.volume_dir(volume);
                let taken = self.taken(&dir, mode, client.session_id().0);
                self.hold(volume, taken, wanted, epoch, None);
                self.downgrade(client, volume).await
            }
        };
        if let Err(e) = undone {
            log::warn!("{e}");
            self.doubt(volume);
        }
    }

    /// Deletes our session's nodes on `volume`, both at once (one round trip). When the answer
    /// is lost the volume is in doubt, and the error says so.
    async fn delete_ours(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
    ) -> Result<(), CoordError> {
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let ours = [LeaseMode::ReadOnly, LeaseMode::ReadWrite]
            .map(|mode| format!("{dir}/{}", node_name(mode, session)));
        let deletes = ours.each_ref().map(|p| client.delete(p, None));
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
        lock(&self.state).doubt.remove(volume);
        Ok(())
    }

    /// Gives back our lease on `volume`: deletes our session's nodes on it (and stale nodes of
    /// this agent). The lease is forgotten before anything is sent: if the answer is lost, the
    /// volume is in doubt, and its nodes are deleted when the session can be used again (or go
    /// with the session).
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
        lock(&self.state).held.remove(volume);
        let dir = self.volume_dir(volume);
        // Sent with the deletions: one round trip.
        let listed = client.list_children(&dir);
        self.delete_ours(&client, volume).await?;
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
            self.delete_stale(&client, volume, &dir).await?;
        }
        Ok(())
    }

    /// Deletes the nodes of this agent's dead processes on `volume`.
    async fn delete_stale(
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
            if self.classify(&n, session) == Owner::Stale {
                match client.delete(&n.path, Some(n.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                    Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_node_data_keeps_what_the_stat_tells() {
        let stat = zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 1_700_000_000_123,
            mtime: 1_700_000_000_123,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let (h, ok) = holder_of(b"not json", &stat);
        assert!(!ok);
        assert_eq!((h.agent.as_str(), h.since), ("?", 1_700_000_000));
        let json = br#"{"agent":"a","host":"h","pid":7,"since":9}"#;
        let (h, ok) = holder_of(json, &stat);
        assert!(ok);
        assert_eq!((h.agent.as_str(), h.pid, h.since), ("a", 7, 9));
    }

    #[test]
    fn node_names_carry_the_mode_and_the_session() {
        assert_eq!(
            node_name(LeaseMode::ReadWrite, 0x1234),
            "rw-0000000000001234"
        );
        assert_eq!(node_name(LeaseMode::ReadOnly, -1), "ro-ffffffffffffffff");
        for (name, mode) in [
            ("rw-0000000000001234", Some(LeaseMode::ReadWrite)),
            ("rw", Some(LeaseMode::ReadWrite)),
            ("ro-alpha", Some(LeaseMode::ReadOnly)),
            ("ro-ffffffffffffffff", Some(LeaseMode::ReadOnly)),
            ("rwx", None),
            ("lock", None),
        ] {
            assert_eq!(mode_of_name(name), mode, "{name}");
        }
    }
}
