//! One leading orchestrator: the one whose record sits at `{p}/leader`, bound to its lease.
//! Its token is the key's create revision; every write the leader makes compares it, so a
//! leader that lost its lease (paused, cut off) changes nothing even if it does not know yet.

use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};

use super::records::{decode, encode, Member};
use super::{bounded, EtcdError, EtcdStore, Lease};

/// Proof of leadership: the create revision of the leader key this process wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderToken {
    create_revision: i64,
}

impl LeaderToken {
    /// The compare that holds while this leadership lasts.
    pub(crate) fn guard(&self, leader_key: &str) -> Compare {
        Compare::create_revision(leader_key, CompareOp::Equal, self.create_revision)
    }

    /// The revision at which this leadership began: it orders leaderships.
    pub fn revision(&self) -> i64 {
        self.create_revision
    }
}

impl EtcdStore {
    /// Becomes the leader if nobody is: `Ok(Ok(token))`; else `Ok(Err(leader))`, the current
    /// leader's record.
    pub async fn try_lead(
        &self,
        lease: &Lease,
        me: &Member,
    ) -> Result<Result<LeaderToken, Member>, EtcdError> {
        let key = self.leader_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                encode(me),
                Some(etcd_client::PutOptions::new().with_lease(lease.id())),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = bounded(self.timeout, "campaigning", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(Ok(LeaderToken {
                create_revision: revision,
            }));
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    return Ok(Err(decode(&key, kv.value())?));
                }
            }
        }
        // Deleted between the compare and the get: nobody leads; the caller tries again.
        Err(EtcdError::NotLeader)
    }

    /// The leading orchestrator, if any.
    pub async fn leader(&self) -> Result<Option<Member>, EtcdError> {
        self.record(self.leader_key(), "reading the leader").await
    }

    /// Succeeds only while `token` leads (a linearizable read of the leader key).
    pub async fn check_leader(&self, token: &LeaderToken) -> Result<(), EtcdError> {
        let txn = Txn::new().when([self.leader_guard(token)]);
        let resp = bounded(self.timeout, "checking leadership", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader)
        }
    }

    /// Gives the leadership up (the leader key is deleted if it is still ours).
    pub async fn resign(&self, token: &LeaderToken) -> Result<(), EtcdError> {
        let key = self.leader_key();
        let txn = Txn::new()
            .when([self.leader_guard(token)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        bounded(self.timeout, "resigning", self.kv().txn(txn)).await?;
        Ok(())
    }

    /// Waits (at most `within`) until the leader key is deleted: `Ok(true)` when it was, or is
    /// already gone.
    pub async fn wait_leader_gone(&self, within: std::time::Duration) -> Result<bool, EtcdError> {
        let key = self.leader_key();
        let work = async {
            let resp = self.kv().get(key.as_str(), None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(true);
            };
            let from = kv.mod_revision() + 1;
            let mut stream = self
                .client()
                .watch_client()
                .watch(
                    key.as_str(),
                    Some(WatchOptions::new().with_start_revision(from)),
                )
                .await?;
            while let Some(resp) = stream.message().await? {
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(true);
                }
                if resp.canceled() {
                    break;
                }
            }
            Ok::<bool, etcd_client::Error>(false)
        };
        match tokio::time::timeout(within, work).await {
            Ok(r) => Ok(r?),
            Err(_) => Ok(false),
        }
    }
}
