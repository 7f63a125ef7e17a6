//! The lease nodes of one volume as this process sees them: their names, their holders, whose
//! they are, and one read of them all.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zookeeper_client as zk;

use super::{lock, Inner};
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
#[derive(Clone)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) mode: LeaseMode,
    pub(super) holder: Holder,
    /// Its data parsed as a [`Holder`].
    pub(super) readable: bool,
    pub(super) version: i32,
    pub(super) owner: i64,
}

/// A volume node's lease nodes, read after its child list, and the data version that list was
/// read at. A transaction that sets the data at this version succeeds only if no lease node
/// was created since (every creation sets it), so a decision taken on this view still holds.
pub(super) struct View {
    pub(super) nodes: Vec<Node>,
    pub(super) version: i32,
    /// Fires when the child list changes (asked for when the caller may wait).
    pub(super) watcher: Option<zk::OneshotWatcher>,
}

/// Whose a node is, as seen from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// Our own session's.
    Ours,
    /// A live sibling process of this agent on this host: its part of the agent's lease, which
    /// only a release of the agent's whole lease deletes.
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
    /// A watch on it, when one was set with the take.
    pub(super) watcher: Option<zk::OneshotWatcher>,
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
                machine: String::new(),
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

    pub(super) fn classify(&self, node: &Node, session: i64) -> Owner {
        if node.owner == session {
            return Owner::Ours;
        }
        if !node.readable
            || node.holder.agent != self.agent
            || self.machine.is_empty()
            || node.holder.machine != self.machine
            || node.holder.pid == 0
        {
            // A node naming our agent but another machine is another agent's: two hosts
            // sharing one agent name (and host name: cloned hosts) must not share a read-write
            // lease, nor judge each other's pids by their own process table. A node without a
            // machine id (an earlier version's) is never ours either.
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
    pub(super) async fn read_view(
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

    pub(super) fn taken(&self, dir: &str, mode: LeaseMode, session: i64) -> Taken {
        Taken {
            mode,
            path: format!("{dir}/{}", node_name(mode, session)),
            watcher: None,
        }
    }

    /// This process as the holder of a lease node it creates now.
    pub(super) fn holder(&self) -> Holder {
        Holder {
            agent: self.agent.clone(),
            host: self.host.clone(),
            machine: self.machine.clone(),
            pid: self.pid,
            since: now_secs(),
        }
    }

    /// `holder` as a lease node's data (JSON).
    pub(super) fn holder_json(
        &self,
        volume: &VolumeKey,
        path: &str,
        holder: &Holder,
    ) -> Result<Vec<u8>, CoordError> {
        serde_json::to_vec(holder).map_err(|e| CoordError::Zk {
            volume: volume.clone(),
            op: "create",
            path: path.to_owned(),
            message: format!("cannot encode the holder: {e}"),
        })
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
