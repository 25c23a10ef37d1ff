//! A lease kept alive in the background, and a conservative view of until when it holds.
//!
//! etcd expires a lease `ttl` after the last keep-alive it *received*; we only know when we
//! *sent* the last one that was answered. So the lease surely holds until that send time plus
//! the TTL, and this is what [`Lease::holds`] reports: a process that stops acting when its
//! lease no longer surely holds has stopped before anyone else can see the lease gone.

use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{bounded, EtcdError, EtcdStore};

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Surely alive until then (it may be alive longer).
    Held { until: Instant },
    /// etcd said it expired: keys bound to it are gone; a new lease is needed.
    Expired,
}

impl LeaseState {
    /// Whether a lease in this state surely holds now.
    pub fn holds(&self) -> bool {
        match self {
            LeaseState::Held { until } => Instant::now() < *until,
            LeaseState::Expired => false,
        }
    }
}

/// A lease and the task that keeps it alive; dropping it stops the keep-alives (the lease
/// then expires after its TTL) — [`Lease::revoke`] ends it at once.
pub struct Lease {
    id: i64,
    state: watch::Receiver<LeaseState>,
    task: JoinHandle<()>,
    client: Client,
    timeout: Duration,
}

impl Lease {
    /// Grants a lease of the store's TTL and starts keeping it alive.
    pub async fn grant(store: &EtcdStore) -> Result<Lease, EtcdError> {
        let ttl = store.lease_ttl();
        let timeout = store.request_timeout();
        let mut client = store.client();
        let sent = Instant::now();
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let granted = bounded(
            timeout,
            "granting a lease",
            client.lease_grant(ttl_secs, None),
        )
        .await?;
        let id = granted.id();
        let (tx, state) = watch::channel(LeaseState::Held {
            until: sent + Duration::from_secs(granted.ttl().max(0) as u64),
        });
        let task = tokio::spawn(keep_alive(client.clone(), id, ttl, timeout, tx));
        Ok(Lease {
            id,
            state,
            task,
            client,
            timeout,
        })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The lease's state now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// Whether the lease surely holds now.
    pub fn holds(&self) -> bool {
        self.state().holds()
    }

    /// Changes of the state (each answered keep-alive, or expiry).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Ends the lease now: every key bound to it is deleted.
    pub async fn revoke(self) {
        self.task.abort();
        let mut client = self.client.clone();
        let _ = bounded(
            self.timeout,
            "revoking a lease",
            client.lease_revoke(self.id),
        )
        .await;
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends a keep-alive every third of the TTL; each answer moves `until` to its send time plus
/// the TTL granted. A broken stream is opened again on the next round.
async fn keep_alive(
    mut client: Client,
    id: i64,
    ttl: Duration,
    timeout: Duration,
    state: watch::Sender<LeaseState>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut stream = None;
    loop {
        let sent = Instant::now();
        if stream.is_none() {
            // Opening the stream is itself a keep-alive, answered with the lease's TTL.
            match bounded(timeout, "lease keep-alive", client.lease_keep_alive(id)).await {
                Ok(s) => {
                    stream = Some(s);
                    state.send_replace(LeaseState::Held { until: sent + ttl });
                }
                Err(EtcdError::Client(etcd_client::Error::LeaseKeepAliveError(why)))
                    if why.contains("not found") =>
                {
                    state.send_replace(LeaseState::Expired);
                    return;
                }
                Err(_) => {}
            }
        } else if let Some((keeper, answers)) = stream.as_mut() {
            let answered = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            match tokio::time::timeout(timeout.min(every), answered).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    let until = sent + Duration::from_secs(resp.ttl() as u64);
                    state.send_replace(LeaseState::Held { until });
                }
                Ok(Ok(Some(_))) => {
                    state.send_replace(LeaseState::Expired);
                    return;
                }
                // Broken or silent: opened again on the next round.
                _ => stream = None,
            }
        }
        tokio::time::sleep(every).await;
    }
}
