//! Changes asked of the leading orchestrator by another process (`{p}/requests/{id}`): a
//! router or a standing-by orchestrator that is asked to switch over, fail over, rebuild or
//! change a flag writes the request under its own lease and waits for the outcome; the leader
//! takes it (a transaction guarded by its leadership and the request's revision, so exactly
//! one leader runs it, once), runs it and writes the outcome into the same key.
//!
//! A requester that goes away takes its request with it (the lease expires); one that gives up
//! before the request was taken withdraws it, so "not taken" always means "nothing was done".

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{bounded, records, EtcdError, EtcdStore, LeaderToken, Lease, Watch};

/// A request and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    /// The process that asked.
    pub from: String,
    /// What is asked (the command as the admin front ends describe it).
    pub command: serde_json::Value,
    /// The orchestrator that took it, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    /// The outcome, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

/// A request as stored, with the revision a transaction compares against.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub request: Request,
    pub mod_revision: i64,
}

impl EtcdStore {
    fn request_prefix(&self) -> String {
        format!("{}/requests/", self.prefix)
    }

    fn request_key(&self, id: &str) -> String {
        format!("{}{id}", self.request_prefix())
    }

    /// Writes a new request bound to `lease`; the revision it was written at.
    pub async fn put_request(&self, lease: &Lease, r: &Request) -> Result<i64, EtcdError> {
        let key = self.request_key(&r.id);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                records::encode(r),
                Some(PutOptions::new().with_lease(lease.id())),
            )]);
        let resp = bounded(self.timeout, "writing a request", self.kv().txn(txn)).await?;
        if !resp.succeeded() {
            return Err(EtcdError::Corrupt {
                key,
                error: "a request with this id exists already".into(),
            });
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// One request as stored now, if it exists.
    pub async fn request(&self, id: &str) -> Result<Option<Request>, EtcdError> {
        self.record(self.request_key(id), "reading a request").await
    }

    /// Every request not taken yet.
    pub async fn pending_requests(&self) -> Result<(Vec<StoredRequest>, i64), EtcdError> {
        let prefix = self.request_prefix();
        let resp = bounded(
            self.timeout,
            "listing the requests",
            self.kv()
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut pending = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let request: Request = records::decode(&key, kv.value())?;
            if request.taken_by.is_none() && request.outcome.is_none() {
                pending.push(StoredRequest {
                    request,
                    mod_revision: kv.mod_revision(),
                });
            }
        }
        Ok((pending, revision))
    }

    /// Watches the requests for changes after `revision`.
    pub async fn watch_requests(&self, revision: i64) -> Result<Watch<Request>, EtcdError> {
        self.watch(self.request_prefix(), true, revision).await
    }

    /// Watches one request for changes after `revision`.
    pub async fn watch_request(
        &self,
        id: &str,
        revision: i64,
    ) -> Result<Watch<Request>, EtcdError> {
        self.watch(self.request_key(id), false, revision).await
    }

    /// Takes a pending request for `by`, provided `token` still leads and nobody took or
    /// withdrew it since it was read: the request as taken. `Ok(None)`: not taken (someone
    /// else did, or it is gone, or this process no longer leads).
    pub async fn take_request(
        &self,
        token: &LeaderToken,
        stored: &StoredRequest,
        by: &str,
    ) -> Result<Option<Request>, EtcdError> {
        let key = self.request_key(&stored.request.id);
        let mut taken = stored.request.clone();
        taken.taken_by = Some(by.to_owned());
        let txn = Txn::new()
            .when([
                self.leader_guard(token),
                Compare::mod_revision(key.as_str(), CompareOp::Equal, stored.mod_revision),
            ])
            .and_then([TxnOp::put(
                key.as_str(),
                records::encode(&taken),
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        let resp = bounded(self.timeout, "taking a request", self.kv().txn(txn)).await?;
        Ok(resp.succeeded().then_some(taken))
    }

    /// Writes the outcome of `request` (as [`EtcdStore::take_request`] returned it), if the
    /// requester still waits (its key exists).
    pub async fn finish_request(
        &self,
        request: &Request,
        outcome: serde_json::Value,
    ) -> Result<(), EtcdError> {
        let key = self.request_key(&request.id);
        let mut done = request.clone();
        done.outcome = Some(outcome);
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                records::encode(&done),
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        bounded(self.timeout, "answering a request", self.kv().txn(txn)).await?;
        Ok(())
    }

    /// Removes a request unless it was taken since `revision` (its last write by the
    /// requester). `Ok(true)`: withdrawn, it will never run; `Ok(false)`: it was taken, or
    /// it is gone (its lease expired), so whether it ran is not known here.
    pub async fn withdraw_request(&self, id: &str, revision: i64) -> Result<bool, EtcdError> {
        let key = self.request_key(id);
        let txn = Txn::new()
            .when([
                Compare::version(key.as_str(), CompareOp::Greater, 0),
                Compare::mod_revision(key.as_str(), CompareOp::Less, revision + 1),
            ])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let resp = bounded(self.timeout, "withdrawing a request", self.kv().txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// Removes a request (its outcome was read).
    pub async fn delete_request(&self, id: &str) -> Result<(), EtcdError> {
        bounded(
            self.timeout,
            "removing a request",
            self.kv().delete(self.request_key(id), None),
        )
        .await?;
        Ok(())
    }
}
