//! Taking a lease: one transaction decided on a consistent view of the volume's nodes (waiting
//! on a conflicting holder), and the hand-over of its answer (undone when the caller gave up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::doubt::outcome_unknown;
use super::tree::{node_name, Node, Owner, Taken, View};
use super::worker::Reply;
use super::{lock, Held, Inner};
use crate::coord::{CoordError, LeaseMode};
use crate::spec::VolumeKey;

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

/// What a view says of a take.
enum Verdict<'a> {
    /// Our own node already carries `mode` or more.
    Have(LeaseMode),
    /// Granted; these stale nodes of this agent are deleted with the take.
    Grant(Vec<&'a Node>),
    /// Refused: this node's holder conflicts.
    Conflict(&'a Node),
}

impl Inner {
    /// Judges a take of `mode` by session `session` on `view`.
    fn judge<'a>(&self, view: &'a View, mode: LeaseMode, session: i64) -> Verdict<'a> {
        let mut stale = Vec::new();
        let mut conflict: Option<&Node> = None;
        let mut have: Option<LeaseMode> = None;
        let mine = node_name(mode, session);
        for n in &view.nodes {
            if n.name == mine && n.owner != session {
                // Our node's name on another session's node (made by hand): it blocks us.
                return Verdict::Conflict(n);
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
        match (have.filter(|&h| h >= mode), conflict) {
            (Some(held), _) => Verdict::Have(held),
            (None, Some(n)) => Verdict::Conflict(n),
            (None, None) => Verdict::Grant(stale),
        }
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
    ///
    /// The view this process last committed on is kept: a grant decided on it needs no read, and
    /// commits in one round trip when no lease was taken since (else the transaction fails and
    /// the volume is read). Nothing else is decided on it: what it says is held may be gone.
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
            let kept = lock(&self.state).known.remove(volume);
            let from_kept = kept.is_some();
            let view = match kept {
                Some(view) => Some(view),
                None => {
                    self.read_view(client, volume, &dir, !left.is_zero())
                        .await?
                }
            };
            let Some(mut view) = view else {
                // The volume's first lease: its node is created in the same transaction.
                if let Some(taken) = self.commit(client, volume, &dir, None, mode, &[]).await? {
                    return Ok(taken);
                }
                continue;
            };
            let watcher = view.watcher.take();
            let holder = match self.judge(&view, mode, session) {
                Verdict::Grant(stale) => {
                    for n in &stale {
                        log::warn!(
                            "{volume}: taking over the stale lease node {} of {}",
                            n.path,
                            n.holder
                        );
                    }
                    let committed = self
                        .commit(client, volume, &dir, Some(&view), mode, &stale)
                        .await?;
                    match committed {
                        Some(taken) => return Ok(taken),
                        None => continue,
                    }
                }
                // What a kept view says is held may be gone: read what is there now.
                _ if from_kept => continue,
                Verdict::Have(held) => return Ok(self.taken(&dir, held, session)),
                Verdict::Conflict(holder) => holder,
            };
            let held = || CoordError::Held {
                volume: volume.clone(),
                wanted: mode,
                held_mode: holder.mode,
                holder: Box::new(holder.holder.clone()),
                waited: start.elapsed(),
            };
            let Some(watcher) = watcher.filter(|_| !left.is_zero()) else {
                return Err(held());
            };
            if tokio::time::timeout(left, watcher.changed()).await.is_err() {
                return Err(held());
            }
        }
    }

    /// Creates our node for `mode` in one transaction with setting the volume node's data at the
    /// version `view` was read at (or with creating the volume node, when there was none), and
    /// deletes our node of the other mode (an upgrade) and the `stale` nodes in it. A watch on
    /// the new node is asked for right behind it (the same round trip), and the view as it is
    /// after the transaction is kept. `None` when another process changed the volume meanwhile.
    async fn commit(
        self: &Arc<Self>,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
        view: Option<&View>,
        mode: LeaseMode,
        stale: &[&Node],
    ) -> Result<Option<Taken>, CoordError> {
        let session = client.session_id().0;
        let path = format!("{dir}/{}", node_name(mode, session));
        let failed = |op: &'static str, e: zk::Error| self.zk_error(volume, op, &path, e);
        let holder = self.holder();
        let data = self.holder_json(volume, &path, &holder)?;
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let mut multi = client.new_multi_writer();
        // The nodes this transaction deletes: our read-only node on an upgrade, and the stale.
        let mut gone: Vec<&str> = stale.iter().map(|n| n.path.as_str()).collect();
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
                        gone.push(&n.path);
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
        // Sent in this order: the watch is set once the transaction is through.
        let committed = multi.commit();
        let watch = client.check_and_watch_stat(&path);
        let results = match committed.await {
            Ok(results) => results,
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NoNode,
                ..
            }) if view.is_none() => {
                // The volume node's parents are missing: create them, then try again.
                let parent = &dir[..dir.rfind('/').unwrap_or(0)];
                return match client.mkdir(parent, &persistent).await {
                    Ok(()) => Ok(None),
                    Err(e) => Err(self.zk_error(volume, "create", parent, e)),
                };
            }
            Err(e) if raced(&e) => return Ok(None),
            Err(e) => {
                let e = zk::Error::from(e);
                if outcome_unknown(&e) {
                    self.doubt(volume);
                }
                return Err(failed("multi", e));
            }
        };
        let watcher = match watch.await {
            Ok((Some(stat), w)) if stat.ephemeral_owner == session => Some(w),
            // Gone already, or not to be watched now: the watch task looks again.
            _ => None,
        };
        let version = results
            .iter()
            .find_map(|r| match r {
                zk::MultiWriteResult::SetData { stat } => Some(stat.version),
                _ => None,
            })
            .unwrap_or(0);
        let mut nodes: Vec<Node> = view
            .map(|v| {
                v.nodes
                    .iter()
                    .filter(|n| !gone.contains(&n.path.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        nodes.push(Node {
            name: node_name(mode, session),
            path: path.clone(),
            mode,
            holder,
            readable: true,
            version: 0,
            owner: session,
        });
        lock(&self.state).known.insert(
            volume.clone(),
            View {
                nodes,
                version,
                watcher: None,
            },
        );
        Ok(Some(Taken {
            mode,
            path,
            watcher,
        }))
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
        // The node is watched before the answer (asked for with the transaction), so that a
        // change right after is not missed; if it could not be set, the watch task sets it.
        let taken = self.take(&client, volume, mode, wait).await?;
        if !self.hold(volume, taken, wanted, epoch) {
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
    ) -> bool {
        let mut st = lock(&self.state);
        if st.epoch != epoch {
            return false;
        }
        st.next_id += 1;
        let id = st.next_id;
        let watch =
            tokio::spawn(Arc::clone(self).watch_lease(volume.clone(), id, epoch, taken.watcher));
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
                let path = lock(&self.state)
                    .held
                    .remove(volume)
                    .map(|h| h.path.clone());
                self.delete_ours(client, volume, path).await
            }
            Some((mode, wanted)) => {
                // An upgrade: back to the read-only node, under a new watch.
                let dir = self.volume_dir(volume);
                let taken = self.taken(&dir, mode, client.session_id().0);
                self.hold(volume, taken, wanted, epoch);
                self.downgrade(client, volume).await
            }
        };
        if let Err(e) = undone {
            log::warn!("{e}");
            self.doubt(volume);
        }
    }
}
