//! The listing of every lease in the cluster, for `dvdi leases`.

use zookeeper_client as zk;

use super::tree::{holder_of, mode_of_name};
use super::{lock, Inner};
use crate::coord::{CoordError, Lease};
use crate::spec::{DriverName, VolumeKey, VolumeName};

impl Inner {
    pub(super) async fn leases(&self) -> Result<Vec<Lease>, CoordError> {
        let root = self.target.volumes_root();
        let client = {
            let st = lock(&self.state);
            match (&st.client, st.connected) {
                (Some(c), true) => c.clone(),
                _ => {
                    return Err(CoordError::List {
                        path: root,
                        message: format!(
                            "not connected to ZooKeeper at {}{}",
                            self.target_text,
                            st.last_error
                                .as_deref()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ),
                    })
                }
            }
        };
        let list_err = |path: &str, e: zk::Error| CoordError::List {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let children = |path: String| {
            let client = client.clone();
            async move {
                match client.list_children(&path).await {
                    Ok(c) => Ok(c),
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(list_err(&path, e)),
                }
            }
        };
        let mut leases = Vec::new();
        for driver in children(root.clone()).await? {
            let Ok(driver_name) = DriverName::new(driver.as_str()) else {
                log::warn!("{root}/{driver}: not a valid driver name; skipped");
                continue;
            };
            let ddir = format!("{root}/{driver}");
            for name in children(ddir.clone()).await? {
                let Ok(volume_name) = VolumeName::new(name.as_str()) else {
                    log::warn!("{ddir}/{name}: not a valid volume name; skipped");
                    continue;
                };
                let vdir = format!("{ddir}/{name}");
                for node in children(vdir.clone()).await? {
                    let Some(mode) = mode_of_name(&node) else {
                        continue;
                    };
                    let path = format!("{vdir}/{node}");
                    let (data, stat) = match client.get_data(&path).await {
                        Ok(d) => d,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(list_err(&path, e)),
                    };
                    let (holder, readable) = holder_of(&data, &stat);
                    if !readable {
                        log::warn!("{path}: lease data is not a holder's JSON; listed as {holder}");
                    }
                    leases.push(Lease {
                        volume: VolumeKey {
                            driver: driver_name.clone(),
                            name: volume_name.clone(),
                        },
                        mode,
                        holder,
                    });
                }
            }
        }
        leases.sort_by(|a, b| {
            let key = |l: &Lease| {
                (
                    l.volume.clone(),
                    std::cmp::Reverse(l.mode),
                    l.holder.agent.clone(),
                    l.holder.pid,
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(leases)
    }
}
