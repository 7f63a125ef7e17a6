//! The lease tree of one volume: reading its nodes, taking a lease (waiting on a conflicting
//! holder), and giving it back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zookeeper_client as zk;

use super::{lock, Held, Inner};
use crate::coord::{CoordError, Holder, LeaseMode};
use crate::spec::VolumeKey;

/// The read-write lease node's name.
pub(super) const RW_NODE: &str = "rw";
/// The prefix of a read-only lease node's name (`ro-<agent>`).
pub(super) const RO_PREFIX: &str = "ro-";

/// A lease node as read from ZooKeeper.
struct Node {
    name: String,
    path: String,
    holder: Holder,
    /// Its data parsed as a [`Holder`].
    readable: bool,
    version: i32,
    owner: i64,
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

/// What an acquire found and took.
pub(super) struct Taken {
    pub(super) mode: LeaseMode,
    /// The session owning the node the lease rests on (ours, or a live sibling's).
    pub(super) owner: i64,
}

/// The data a lease node carries, or what is known of it when it cannot be parsed: the agent
/// from an `ro-<agent>` name, `?` otherwise, and the node's creation time.
pub(super) fn holder_of(name: &str, data: &[u8], stat: &zk::Stat) -> (Holder, bool) {
    match serde_json::from_slice::<Holder>(data) {
        Ok(h) => (h, true),
        Err(_) => (
            Holder {
                agent: name.strip_prefix(RO_PREFIX).unwrap_or("?").to_owned(),
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

impl Inner {
    fn volume_dir(&self, volume: &VolumeKey) -> String {
        format!(
            "{}/{}/{}",
            self.target.volumes_root(),
            volume.driver.as_str(),
            volume.name.as_str()
        )
    }

    fn ro_node(&self) -> String {
        format!("{RO_PREFIX}{}", self.agent)
    }

    pub(super) fn volume_lock(&self, volume: &VolumeKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(volume.clone()).or_default())
    }

    fn classify(&self, node: &Node, session: i64) -> Owner {
        if !node.readable || node.holder.agent != self.agent {
            return Owner::Other;
        }
        if node.owner == session {
            return Owner::Ours;
        }
        if node.holder.host != self.host || node.holder.pid == 0 {
            return Owner::Other;
        }
        if node.holder.pid == self.pid || !pid_alive(node.holder.pid) {
            return Owner::Stale;
        }
        Owner::Sibling
    }

    /// Reads the lease nodes among `children` of `dir`; nodes gone meanwhile are left out.
    async fn read_nodes(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        dir: &str,
        children: &[String],
    ) -> Result<Vec<Node>, CoordError> {
        let mut nodes = Vec::new();
        for name in children {
            if name != RW_NODE && !name.starts_with(RO_PREFIX) {
                continue;
            }
            let path = format!("{dir}/{name}");
            match client.get_data(&path).await {
                Ok((data, stat)) => {
                    let (holder, readable) = holder_of(name, &data, &stat);
                    nodes.push(Node {
                        name: name.clone(),
                        path,
                        holder,
                        readable,
                        version: stat.version,
                        owner: stat.ephemeral_owner,
                    });
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.zk_error(volume, "get_data", &path, e)),
            }
        }
        Ok(nodes)
    }

    /// Takes `mode` on `volume` in ZooKeeper (the rules of [`Coordinator::acquire`]), waiting up
    /// to `wait` on the volume node's children while another agent holds a conflicting lease.
    pub(super) async fn take(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<Taken, CoordError> {
        let start = Instant::now();
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let ro_name = self.ro_node();
        'check: loop {
            let (children, watcher) = match client.get_and_watch_children(&dir).await {
                Ok((children, _, watcher)) => (children, watcher),
                Err(zk::Error::NoNode) => {
                    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    match client.mkdir(&dir, &opts).await {
                        Ok(()) => continue,
                        Err(e) => return Err(self.zk_error(volume, "create", &dir, e)),
                    }
                }
                Err(e) => return Err(self.zk_error(volume, "get_children", &dir, e)),
            };
            let nodes = self.read_nodes(client, volume, &dir, &children).await?;
            // A stale node of this agent blocks nobody but us: take it over.
            for n in &nodes {
                if self.classify(n, session) == Owner::Stale {
                    log::warn!(
                        "{volume}: taking over the stale lease node {} of {}",
                        n.path,
                        n.holder
                    );
                    match client.delete(&n.path, Some(n.version)).await {
                        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
                        Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                    }
                    continue 'check;
                }
            }
            let mine =
                |n: &&Node| matches!(self.classify(n, session), Owner::Ours | Owner::Sibling);
            let rw = nodes.iter().find(|n| n.name == RW_NODE);
            let ro_me = nodes.iter().find(|n| n.name == ro_name);
            let conflict = match (mode, rw) {
                (_, Some(n)) if mine(&n) => {
                    return Ok(Taken {
                        mode: LeaseMode::ReadWrite,
                        owner: n.owner,
                    })
                }
                (_, Some(n)) => (LeaseMode::ReadWrite, n.holder.clone()),
                (LeaseMode::ReadOnly, None) => match ro_me {
                    Some(n) if mine(&n) => {
                        return Ok(Taken {
                            mode: LeaseMode::ReadOnly,
                            owner: n.owner,
                        })
                    }
                    // Our agent's name on another host's node: never shared.
                    Some(n) => (LeaseMode::ReadOnly, n.holder.clone()),
                    None => {
                        if self
                            .create(client, volume, &format!("{dir}/{ro_name}"))
                            .await?
                        {
                            return Ok(Taken {
                                mode: LeaseMode::ReadOnly,
                                owner: session,
                            });
                        }
                        continue 'check;
                    }
                },
                (LeaseMode::ReadWrite, None) => {
                    let reader = nodes
                        .iter()
                        .filter(|n| n.name != RW_NODE && !mine(n))
                        .min_by_key(|n| n.holder.since);
                    match reader {
                        Some(n) => (LeaseMode::ReadOnly, n.holder.clone()),
                        None => {
                            if !self
                                .create(client, volume, &format!("{dir}/{RW_NODE}"))
                                .await?
                            {
                                continue 'check;
                            }
                            // The upgrade is done: our own read-only node is redundant now. A
                            // sibling's stays: it is that process's to give back.
                            if let Some(n) =
                                ro_me.filter(|n| self.classify(n, session) == Owner::Ours)
                            {
                                match client.delete(&n.path, Some(n.version)).await {
                                    Ok(()) | Err(zk::Error::NoNode) => {}
                                    Err(e) => log::warn!(
                                        "{volume}: cannot delete {} after the upgrade: {e}",
                                        n.path
                                    ),
                                }
                            }
                            return Ok(Taken {
                                mode: LeaseMode::ReadWrite,
                                owner: session,
                            });
                        }
                    }
                }
            };
            let (held_mode, holder) = conflict;
            let held = || CoordError::Held {
                volume: volume.clone(),
                wanted: mode,
                held_mode,
                holder: Box::new(holder.clone()),
                waited: start.elapsed(),
            };
            let Some(left) = wait.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
                return Err(held());
            };
            if tokio::time::timeout(left, watcher.changed()).await.is_err() {
                return Err(held());
            }
        }
    }

    /// Creates our ephemeral lease node at `path`: `false` when it exists already (a race).
    async fn create(
        &self,
        client: &zk::Client,
        volume: &VolumeKey,
        path: &str,
    ) -> Result<bool, CoordError> {
        let holder = Holder {
            agent: self.agent.clone(),
            host: self.host.clone(),
            pid: self.pid,
            since: now_secs(),
        };
        let data = serde_json::to_vec(&holder).map_err(|e| CoordError::Zk {
            volume: volume.clone(),
            op: "create",
            path: path.to_owned(),
            message: format!("cannot encode the holder: {e}"),
        })?;
        let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        match client.create(path, &data, &opts).await {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(self.zk_error(volume, "create", path, e)),
        }
    }

    fn check_agent(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let a = &self.agent;
        if a.is_empty()
            || a.contains('/')
            || a == "."
            || a == ".."
            || a.chars().any(char::is_control)
        {
            return Err(CoordError::Zk {
                volume: volume.clone(),
                op: "create",
                path: format!("{}/{RO_PREFIX}{a}", self.volume_dir(volume)),
                message: format!("agent name {a:?} cannot be part of a ZooKeeper node name"),
            });
        }
        Ok(())
    }

    pub(super) async fn acquire(
        self: &Arc<Self>,
        volume: &VolumeKey,
        mode: LeaseMode,
        wait: Duration,
    ) -> Result<(), CoordError> {
        self.check_agent(volume)?;
        // Fail closed at once: no live session, no lease.
        self.live_client(volume)?;
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let (client, epoch) = self.live_client(volume)?;
        let wanted = {
            let st = lock(&self.state);
            match st.held.get(volume) {
                Some(h) if h.mode >= mode => return Ok(()),
                Some(h) => h.wanted.max(mode),
                None => mode,
            }
        };
        let taken = self.take(&client, volume, mode, wait).await?;
        drop(client);
        // Watch the node before answering, so that a change right after is not missed; if it
        // cannot be set now, the watch task sets it.
        let first = self
            .watch_node(&self.lease_node(volume, taken.mode), taken.owner)
            .await
            .ok()
            .flatten();
        let mut st = lock(&self.state);
        if st.epoch != epoch {
            // The session ended meanwhile: whatever we created went with it.
            return Err(CoordError::Unavailable {
                volume: volume.clone(),
                target: self.target_text.clone(),
                detail: Some("the ZooKeeper session ended while taking the lease".into()),
            });
        }
        st.next_id += 1;
        let id = st.next_id;
        let watch = tokio::spawn(Arc::clone(self).watch_lease(volume.clone(), id, epoch, first));
        st.held.insert(
            volume.clone(),
            Held {
                mode: taken.mode,
                owner: taken.owner,
                wanted,
                id,
                watch: Some(watch.abort_handle()),
            },
        );
        Ok(())
    }

    /// The node that carries the lease `volume` is held by in `mode`.
    pub(super) fn lease_node(&self, volume: &VolumeKey, mode: LeaseMode) -> String {
        match mode {
            LeaseMode::ReadWrite => format!("{}/{RW_NODE}", self.volume_dir(volume)),
            LeaseMode::ReadOnly => format!("{}/{}", self.volume_dir(volume), self.ro_node()),
        }
    }

    pub(super) async fn release(&self, volume: &VolumeKey) -> Result<(), CoordError> {
        let vlock = self.volume_lock(volume);
        let _guard = vlock.lock().await;
        let held = lock(&self.state).held.contains_key(volume);
        let (client, _) = match self.live_client(volume) {
            Ok(c) => c,
            // Holding nothing is success, connected or not.
            Err(_) if !held => return Ok(()),
            Err(e) => return Err(e),
        };
        // Stop watching first: the deletions below are ours, not a loss.
        if let Some(h) = lock(&self.state).held.get_mut(volume) {
            if let Some(w) = h.watch.take() {
                w.abort();
            }
        }
        let dir = self.volume_dir(volume);
        let session = client.session_id().0;
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(self.zk_error(volume, "get_children", &dir, e)),
        };
        for n in self.read_nodes(&client, volume, &dir, &children).await? {
            if matches!(self.classify(&n, session), Owner::Ours | Owner::Stale) {
                match client.delete(&n.path, Some(n.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(self.zk_error(volume, "delete", &n.path, e)),
                }
            }
        }
        lock(&self.state).held.remove(volume);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_node_data_keeps_what_the_node_name_and_stat_tell() {
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
        let (h, ok) = holder_of("ro-agent7", b"not json", &stat);
        assert!(!ok);
        assert_eq!((h.agent.as_str(), h.since), ("agent7", 1_700_000_000));
        let (h, _) = holder_of("rw", b"", &stat);
        assert_eq!(h.agent, "?");
        let json = br#"{"agent":"a","host":"h","pid":7,"since":9}"#;
        let (h, ok) = holder_of("rw", json, &stat);
        assert!(ok);
        assert_eq!((h.agent.as_str(), h.pid, h.since), ("a", 7, 9));
    }
}
