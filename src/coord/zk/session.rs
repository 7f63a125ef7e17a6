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

/// Keeps a session: connects (retrying with backoff), watches its state, proves it alive with a
/// heartbeat, and reports every held lease lost when the session expires or has not been heard
/// from for two thirds of its timeout.
pub(super) async fn supervise(inner: Arc<Inner>) {
    let hosts = inner.target.hosts.join(",");
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let connector = zk::Client::connector()
            .with_session_timeout(inner.session_timeout)
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
        let granted = client.session_timeout();
        if granted < inner.session_timeout && !warned {
            warned = true;
            log::warn!(
                "ZooKeeper {} granted a session timeout of {} ms where {} ms was asked \
                 (its maxSessionTimeout is lower): leases are judged by the granted {} ms",
                inner.target_text,
                granted.as_millis(),
                inner.session_timeout.as_millis(),
                granted.as_millis()
            );
        }
        let mut states = client.state_watcher();
        {
            let mut st = lock(&inner.state);
            st.session = Some(format!("{:#x}", client.session_id().0));
            st.connected = true;
            st.client = Some(client.clone());
            inner.publish(&st);
        }
        log::info!(
            "ZooKeeper session established with {} (timeout {} ms)",
            inner.target_text,
            granted.as_millis()
        );
        let lost = keep(&inner, &client, &mut states, granted).await;
        drop(client);
        inner.lose_all(lost);
    }
}

/// Serves one session until it must be given up. A heartbeat (`sync`, which the server we are
/// connected to answers only through the ensemble's leader) goes out every tenth of the
/// session timeout; an answer proves that the server heard from this session at or after the
/// moment the heartbeat was sent. The server expires a session no earlier than one session
/// timeout after it last heard from it, so giving up two thirds of it after the last proof
/// leaves a third of the session timeout to fence before any other agent can get in.
async fn keep(
    inner: &Arc<Inner>,
    client: &zk::Client,
    states: &mut zk::StateWatcher,
    timeout: Duration,
) -> LossReason {
    let give_up = timeout * 2 / 3;
    let every = (timeout / 10).max(Duration::from_millis(10));
    // The session was established just now: its connect request was heard.
    let mut heard = Instant::now();
    let mut beat = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut pending: Option<(Instant, BoxedBeat<'_>)> = None;
    loop {
        tokio::select! {
            state = states.changed() => match state {
                zk::SessionState::SyncConnected => {
                    {
                        let mut st = lock(&inner.state);
                        st.connected = true;
                        inner.publish(&st);
                    }
                    inner.settle_all();
                }
                zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {
                    let mut st = lock(&inner.state);
                    st.connected = false;
                    st.last_error = Some("connection to ZooKeeper lost".into());
                    inner.publish(&st);
                }
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => return LossReason::SessionExpired,
            },
            () = &mut beat, if pending.is_none() => {
                pending = Some((Instant::now(), Box::pin(client.sync("/"))));
            }
            answer = async { pending.as_mut().expect("a heartbeat is out").1.as_mut().await },
                if pending.is_some() =>
            {
                let (sent, _) = pending.take().expect("a heartbeat is out");
                if answer.is_ok() {
                    heard = heard.max(sent);
                }
                beat.as_mut().reset((sent + every).into());
            }
            () = tokio::time::sleep_until((heard + give_up).into()) => {
                return LossReason::Disconnected(heard.elapsed());
            }
        }
    }
}

/// A heartbeat's answer.
type BoxedBeat<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), zk::Error>> + Send + 'a>>;

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
            // The library's own I/O errors and "no response from connection".
            | zk::Error::Custom(_)
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
            // Nothing is in doubt any more: the session's nodes go with it.
            st.doubt.clear();
            st.known.clear();
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
