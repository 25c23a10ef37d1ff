//! The records kept in etcd besides the clusters: orchestrator candidates and routers. JSON,
//! so that `etcdctl get --prefix /switchyard` shows an operator what each process says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EtcdError;

/// An orchestrator candidate (or the leader, under `{p}/leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Unique per process: its configured name, or host and pid.
    pub id: String,
    /// Its admin API, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
}

/// A live router: what it is, and for each cluster the epoch whose hold it acknowledged (it
/// sends no statement to that epoch's leader until it sees a newer epoch or the hold lifted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRecord {
    pub id: String,
    /// Its MySQL listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Its admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    pub started_ms: u64,
    /// Cluster name -> the epoch it holds statements for.
    #[serde(default)]
    pub holds: BTreeMap<String, u64>,
    /// Cluster name -> the epoch it routes with now.
    #[serde(default)]
    pub epochs: BTreeMap<String, u64>,
}

/// A change of leader an orchestrator is about to make, written (guarded by its leadership)
/// just before the promotion and removed once the outcome is published: an orchestrator that
/// takes over finds it and completes or undoes the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub cluster: String,
    /// `failover` or `switchover`.
    pub op: String,
    pub old_leader: String,
    pub new_leader: String,
    /// The epoch being replaced: the change publishes `epoch + 1`.
    pub epoch: u64,
    /// The orchestrator that began it.
    pub by: String,
    pub started_ms: u64,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, EtcdError> {
    serde_json::from_slice(value).map_err(|e| EtcdError::Corrupt {
        key: key.to_owned(),
        error: e.to_string(),
    })
}
