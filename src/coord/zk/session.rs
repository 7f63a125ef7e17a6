//! The session: connecting with backoff, watching its state, and reporting every lease lost when
//! it expires or stays silent too long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{lock, Inner, State, CLOSE_WAIT};
use crate::coord::{CoordError, LeaseLoss, LossReason};
use crate::spec::VolumeKey;

/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keeps a session: connects (retrying with backoff), watches its state, and reports every held
/// lease lost when the session expires or stays disconnected past the session timeout.
pub(super) async fn supervise(inner: Arc<Inner>) {
    let hosts = inner.target.hosts.join(",");
    let mut backoff = Duration::from_millis(50);
    loop {
        let connector = zk::Client::connector()
            .with_session_timeout(inner.session_timeout)
            .with_connection_timeout(inner.session_timeout * 2 / 5)
            .with_fail_eagerly();
        let connect_bound = inner.session_timeout * 2 + Duration::from_secs(1);
        let client = match tokio::time::timeout(connect_bound, connector.connect(&hosts)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                inner.connection_failed(format!("cannot connect: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                inner.connection_failed(format!(
                    "cannot connect: no session within {} s",
                    connect_bound.as_secs()
                ));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let timeout = client.session_timeout();
        // The library calls a connection lost after it has been silent for 2/5 of the session
        // timeout: the disconnection began that long before it is seen, and the server may
        // expire the session a session timeout after that.
        let silent = timeout * 2 / 5;
        let mut states = client.state_watcher();
        {
            let mut st = lock(&inner.state);
            st.session = Some(format!("{:#x}", client.session_id().0));
            st.connected = true;
            st.client = Some(client);
            inner.publish(&st);
        }
        log::info!("ZooKeeper session established with {}", inner.target_text);
        let mut disconnected_at: Option<Instant> = None;
        let lost = loop {
            let state = match disconnected_at {
                None => states.changed().await,
                Some(at) => {
                    tokio::select! {
                        s = states.changed() => s,
                        _ = tokio::time::sleep_until((at + timeout).into()) => {
                            break LossReason::Disconnected(at.elapsed());
                        }
                    }
                }
            };
            match state {
                zk::SessionState::SyncConnected => {
                    disconnected_at = None;
                    let mut st = lock(&inner.state);
                    st.connected = true;
                    inner.publish(&st);
                }
                zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {
                    disconnected_at.get_or_insert_with(|| {
                        let now = Instant::now();
                        now.checked_sub(silent).unwrap_or(now)
                    });
                    let mut st = lock(&inner.state);
                    st.connected = false;
                    st.last_error = Some("connection to ZooKeeper lost".into());
                    inner.publish(&st);
                }
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => break LossReason::SessionExpired,
            }
        };
        inner.lose_all(lost);
    }
}

/// Errors that mean the session cannot be used now.
pub(super) fn is_connection_error(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::Timeout
            | zk::Error::NoHosts
    )
}

impl Inner {
    pub(super) fn unavailable(&self, volume: &VolumeKey, detail: String) -> CoordError {
        CoordError::Unavailable {
            volume: volume.clone(),
            target: self.target_text.clone(),
            detail: Some(detail),
        }
    }

    pub(super) fn zk_error(
        &self,
        volume: &VolumeKey,
        op: &'static str,
        path: &str,
        e: zk::Error,
    ) -> CoordError {
        if is_connection_error(&e) {
            return self.unavailable(volume, format!("{op} on {path}: {e}"));
        }
        CoordError::Zk {
            volume: volume.clone(),
            op,
            path: path.to_owned(),
            message: e.to_string(),
        }
    }

    /// Tells lease watches the session's epoch and whether it is connected.
    pub(super) fn publish(&self, st: &State) {
        self.conn.send_replace((st.epoch, st.connected));
    }

    /// Waits until session `epoch` is connected (`true`) or over (`false`).
    pub(super) async fn reconnected(&self, epoch: u64) -> bool {
        let mut conn = self.conn.subscribe();
        let now = conn
            .wait_for(|&(e, connected)| e != epoch || connected)
            .await
            .map(|v| v.0);
        now.ok() == Some(epoch)
    }

    pub(super) async fn expire_session(&self, direct: &str) -> Result<(), String> {
        let info = lock(&self.state)
            .client
            .as_ref()
            .map(|c| c.session().clone())
            .ok_or("no session")?;
        let other = zk::Client::connector()
            .with_session(info)
            .with_session_timeout(self.session_timeout)
            .connect(direct)
            .await
            .map_err(|e| format!("cannot attach to the session: {e}"))?;
        let mut states = other.state_watcher();
        drop(other);
        tokio::time::timeout(CLOSE_WAIT, async {
            while !states.peek_state().is_terminated() {
                states.changed().await;
            }
        })
        .await
        .map_err(|_| "the session did not close".to_string())
    }

    fn connection_failed(&self, message: String) {
        log::debug!("ZooKeeper {}: {message}", self.target_text);
        lock(&self.state).last_error = Some(message);
    }
    /// The client of the live session and its epoch; `Unavailable` when there is none.
    pub(super) fn live_client(&self, volume: &VolumeKey) -> Result<(zk::Client, u64), CoordError> {
        let st = lock(&self.state);
        match (&st.client, st.connected) {
            (Some(c), true) => Ok((c.clone(), st.epoch)),
            _ => Err(CoordError::Unavailable {
                volume: volume.clone(),
                target: self.target_text.clone(),
                detail: st.last_error.clone(),
            }),
        }
    }

    /// Every held lease is lost: the session is over (or must be assumed over). Forgets them,
    /// drops the session's client (the library closes the session if it ever reconnects) and
    /// reports each loss.
    fn lose_all(&self, reason: LossReason) {
        let (held, client) = {
            let mut st = lock(&self.state);
            st.epoch += 1;
            st.connected = false;
            st.session = None;
            st.last_error = Some(match &reason {
                LossReason::SessionExpired => "the ZooKeeper session expired".into(),
                other => other.to_string(),
            });
            self.publish(&st);
            (std::mem::take(&mut st.held), st.client.take())
        };
        drop(client);
        log::warn!(
            "ZooKeeper {}: session lost ({reason}); {} lease(s) lost",
            self.target_text,
            held.len()
        );
        for volume in held.into_keys() {
            self.report(LeaseLoss {
                volume,
                reason: reason.clone(),
                holder: None,
            });
        }
    }

    pub(super) fn report(&self, loss: LeaseLoss) {
        let handler = self
            .handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match handler {
            Some(h) => h(loss),
            None => log::error!("{loss} (no loss handler is set)"),
        }
    }
}
