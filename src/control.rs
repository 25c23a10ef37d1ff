//! The changes an operator asks of the orchestrator, in one place for every front end (the
//! admin HTTP API and the admin SQL port): what may be asked ([`Command`]), what comes back
//! ([`Done`]), and how a failure is classified ([`Failure`]), which each front end turns into
//! its own status (HTTP) or error (MySQL) without deciding anything else.
//!
//! In a deployment sharing etcd, a process that does not lead (a router, or an orchestrator
//! standing by) does not refuse: [`Control::run`] asks the leading orchestrator through etcd
//! (see `shard_map::etcd::Request`) and answers with its outcome. A request nobody takes
//! within the lease TTL plus two request timeouts is withdrawn, and the caller told that
//! nothing was done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orchestrator::{
    OperationReport, Orchestrator, OrchestratorError, RebuildMethod, RebuildReport,
};
use serde::{Deserialize, Serialize};
use shard_map::etcd::{EtcdStore, Lease, Request};
use shard_map::NodeFlags;
use tokio::time::Instant;

/// A change asked of the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// A planned switchover, to `to` or to the best replica.
    Switchover {
        cluster: String,
        #[serde(default)]
        to: Option<String>,
    },
    /// A failover an operator asked for.
    Failover { cluster: String },
    /// Rebuild `node` from `source` (or the best one), logical or physical (`method`, else the
    /// orchestrator's setting).
    Rebuild {
        cluster: String,
        node: String,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        method: Option<RebuildMethod>,
    },
    /// Reset the anti-flapping counters.
    ResetFailoverLimits { cluster: String },
    /// Set a node's flags (all three).
    SetFlags {
        cluster: String,
        node: String,
        flags: NodeFlags,
    },
}

impl Command {
    /// The cluster it acts on.
    pub fn cluster(&self) -> &str {
        match self {
            Command::Switchover { cluster, .. }
            | Command::Failover { cluster }
            | Command::Rebuild { cluster, .. }
            | Command::ResetFailoverLimits { cluster }
            | Command::SetFlags { cluster, .. } => cluster,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// A switchover or failover: old and new leader, epoch, every step.
    Changed(OperationReport),
    Rebuilt(RebuildReport),
    LimitsReset {
        cluster: String,
    },
    Flags {
        cluster: String,
        node: String,
        flags: NodeFlags,
    },
}

/// What kind of failure: the front ends' status codes follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    UnknownCluster,
    UnknownNode,
    /// Another operation runs on the cluster, or the node is the leader.
    Conflict,
    /// A check refused it; nothing was changed (or every change was undone).
    Refused,
    /// This process does not lead and could not ask the one that does.
    NotLeader,
    BadRequest,
    /// The leader could not be reached through etcd in time; the message says whether
    /// anything was done.
    Unavailable,
    Failed,
}

impl FailureKind {
    /// The HTTP status the admin API answers.
    pub fn http_status(self) -> u16 {
        match self {
            FailureKind::UnknownCluster | FailureKind::UnknownNode => 404,
            FailureKind::Conflict => 409,
            FailureKind::Refused => 422,
            FailureKind::NotLeader => 421,
            FailureKind::BadRequest => 400,
            FailureKind::Unavailable => 503,
            FailureKind::Failed => 500,
        }
    }
}

/// A command that failed: its kind and the message the operator sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl From<OrchestratorError> for Failure {
    fn from(e: OrchestratorError) -> Self {
        let kind = match &e {
            OrchestratorError::UnknownCluster(_) => FailureKind::UnknownCluster,
            OrchestratorError::UnknownNode { .. } => FailureKind::UnknownNode,
            OrchestratorError::Busy(_) | OrchestratorError::IsLeader { .. } => {
                FailureKind::Conflict
            }
            OrchestratorError::Refused(_) => FailureKind::Refused,
            OrchestratorError::NotLeader(_) => FailureKind::NotLeader,
            OrchestratorError::BadAddress(_) => FailureKind::BadRequest,
            _ => FailureKind::Failed,
        };
        Failure::new(kind, e.to_string())
    }
}

/// Runs a command on this process's orchestrator.
pub async fn execute(
    orchestrator: &Arc<Orchestrator>,
    command: Command,
) -> Result<Done, OrchestratorError> {
    match command {
        Command::Switchover { cluster, to } => orchestrator
            .switchover(&cluster, to.as_deref())
            .await
            .map(Done::Changed),
        Command::Failover { cluster } => orchestrator.failover(&cluster).await.map(Done::Changed),
        Command::Rebuild {
            cluster,
            node,
            source,
            method,
        } => {
            // A task of its own: a caller that goes away does not cut a rebuild short
            // (halfway, the node would stay kept out); it ends within `rebuild_timeout_s`.
            let orchestrator = orchestrator.clone();
            tokio::spawn(async move {
                orchestrator
                    .rebuild(&cluster, &node, source.as_deref(), method)
                    .await
            })
            .await
            .unwrap_or_else(|e| {
                Err(OrchestratorError::Unexpected(format!(
                    "the rebuild task ended abnormally: {e}"
                )))
            })
            .map(Done::Rebuilt)
        }
        Command::ResetFailoverLimits { cluster } => orchestrator
            .reset_failover_limits(&cluster)
            .map(|()| Done::LimitsReset { cluster }),
        Command::SetFlags {
            cluster,
            node,
            flags,
        } => orchestrator
            .set_node_flags(&cluster, &node, flags)
            .map(|()| Done::Flags {
                cluster,
                node,
                flags,
            }),
    }
}

/// How often a waiting requester looks at its request.
const POLL: Duration = Duration::from_millis(20);
/// How often it checks that the orchestrator that took its request still leads.
const LEADER_CHECK: Duration = Duration::from_secs(1);
/// The longest a taken request is waited for (a rebuild of a large node included); the
/// taker's leadership is checked meanwhile, so this only bounds the pathological case.
const RUN_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// The front ends' way to the orchestrator.
#[derive(Debug)]
pub struct Control {
    orchestrator: Arc<Orchestrator>,
    forward: Option<Forward>,
}

/// Asking the leading orchestrator through etcd.
#[derive(Debug)]
struct Forward {
    store: EtcdStore,
    name: String,
    sequence: AtomicU64,
}

impl Control {
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Control {
            orchestrator,
            forward: None,
        }
    }

    /// Commands this process cannot run (it does not lead) are asked of the leader through
    /// `store`, as the process `name`.
    pub fn forwarding(mut self, store: EtcdStore, name: &str) -> Self {
        self.forward = Some(Forward {
            store,
            name: name.to_owned(),
            sequence: AtomicU64::new(0),
        });
        self
    }

    /// Runs `command` here if this process leads (or works alone), else asks the leader.
    pub async fn run(&self, command: Command) -> Result<Done, Failure> {
        let Some(forward) = &self.forward else {
            return execute(&self.orchestrator, command)
                .await
                .map_err(Failure::from);
        };
        // Not leading as far as this process knows: ask the leader without trying here.
        if let Err(OrchestratorError::NotLeader(why)) = self.orchestrator.leads() {
            return forward.ask(command, why).await;
        }
        match execute(&self.orchestrator, command.clone()).await {
            // Deposed meanwhile (checked before anything was changed): ask the new leader.
            Err(OrchestratorError::NotLeader(why)) => forward.ask(command, why).await,
            other => other.map_err(Failure::from),
        }
    }
}

impl Forward {
    /// Writes the request, waits for a leader to take it (else withdraws it) and for its
    /// outcome.
    async fn ask(&self, command: Command, why: String) -> Result<Done, Failure> {
        let store = &self.store;
        let unavailable = |what: String| Failure::new(FailureKind::Unavailable, what);
        let lease = Lease::grant(store).await.map_err(|e| {
            unavailable(format!(
                "{why}; the leader is asked through etcd, which does not answer ({e}): \
                 nothing was done"
            ))
        })?;
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{n}", self.name, crate::distributed::now_ms());
        let request = Request {
            id: id.clone(),
            from: self.name.clone(),
            command: serde_json::to_value(&command).map_err(|e| {
                Failure::new(FailureKind::Failed, format!("encoding the request: {e}"))
            })?,
            taken_by: None,
            outcome: None,
        };
        let written = store.put_request(&lease, &request).await.map_err(|e| {
            unavailable(format!(
                "{why}; writing the request for the leader into etcd failed ({e}): nothing \
                 was done"
            ))
        })?;
        let outcome = self.wait(&id, written).await;
        if outcome.is_ok() {
            let _ = store.delete_request(&id).await;
        }
        lease.revoke().await;
        outcome.and_then(
            |o| match serde_json::from_value::<Result<Done, Failure>>(o) {
                Ok(r) => r,
                Err(e) => Err(Failure::new(
                    FailureKind::Failed,
                    format!("the leader's answer could not be read: {e}"),
                )),
            },
        )
    }

    /// The outcome of request `id` (written at `written`), within the bounds in the module
    /// docs.
    async fn wait(&self, id: &str, written: i64) -> Result<serde_json::Value, Failure> {
        let store = &self.store;
        let unavailable = |what: String| Failure::new(FailureKind::Unavailable, what);
        let unknown = |what: String| {
            unavailable(format!(
                "{what}: whether the change was made is not known here; see the cluster's \
                 events and status"
            ))
        };
        // A leader is elected within the TTL after the last one went; one that leads takes
        // a request within a request timeout or two.
        let take_within = store.lease_ttl() + store.request_timeout() * 2;
        let mut deadline = Instant::now() + take_within;
        let mut taken_by: Option<String> = None;
        let mut leader_checked = Instant::now();
        loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            let seen = match store.request(id).await {
                Ok(seen) => seen,
                // etcd unreachable for a moment: the deadline decides.
                Err(e) if now < deadline => {
                    tracing::debug!(error = %e, "reading a request");
                    continue;
                }
                Err(e) => return Err(unknown(format!("etcd does not answer ({e})"))),
            };
            let Some(seen) = seen else {
                return Err(unknown(format!("the request {id} vanished from etcd")));
            };
            if let Some(outcome) = seen.outcome {
                return Ok(outcome);
            }
            match (&taken_by, seen.taken_by) {
                (None, Some(by)) => {
                    deadline = now + RUN_LIMIT;
                    taken_by = Some(by);
                    continue;
                }
                (None, None) if now >= deadline => {
                    return match store.withdraw_request(id, written).await {
                        Ok(true) => Err(unavailable(format!(
                            "no orchestrator took the request within {} ms (none leads, or \
                             the leader is cut off from etcd): nothing was done",
                            take_within.as_millis()
                        ))),
                        Ok(false) => Err(unknown(
                            "the request was taken just as it was withdrawn".into(),
                        )),
                        Err(e) => Err(unknown(format!("withdrawing the request failed ({e})"))),
                    };
                }
                _ => {}
            }
            if let Some(by) = &taken_by {
                if now >= deadline {
                    return Err(unknown(format!(
                        "{by} took the request and did not answer within {} s",
                        RUN_LIMIT.as_secs()
                    )));
                }
                if now.duration_since(leader_checked) >= LEADER_CHECK {
                    leader_checked = now;
                    if let Ok(leader) = store.leader().await {
                        if leader.as_ref().is_none_or(|l| &l.id != by) {
                            return Err(unknown(format!(
                                "{by} took the request and stopped leading before it answered \
                                 (a change it began is completed or undone by the next leader)"
                            )));
                        }
                    }
                }
            }
        }
    }
}

/// The leader's side: takes the requests other processes write and answers each with its
/// outcome, while `token` leads and until `stop`.
pub async fn serve_requests(
    store: EtcdStore,
    orchestrator: Arc<Orchestrator>,
    token: shard_map::etcd::LeaderToken,
    name: String,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        loop {
            let (pending, revision) = match store.pending_requests().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "listing the requests");
                    tokio::time::sleep(crate::distributed::RETRY).await;
                    continue;
                }
            };
            for p in pending {
                let request = match store.take_request(&token, &p, &name).await {
                    Ok(Some(taken)) => taken,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "taking a request");
                        continue;
                    }
                };
                let (store, orchestrator) = (store.clone(), orchestrator.clone());
                tokio::spawn(async move { answer(&store, &orchestrator, request).await });
            }
            // Any change under the prefix: list again.
            match store.watch_requests(revision).await {
                Ok(mut w) => {
                    let _ = w.next().await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watching the requests");
                    tokio::time::sleep(crate::distributed::RETRY).await;
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

/// Runs a taken request and writes its outcome.
async fn answer(store: &EtcdStore, orchestrator: &Arc<Orchestrator>, request: Request) {
    let outcome: Result<Done, Failure> =
        match serde_json::from_value::<Command>(request.command.clone()) {
            Ok(command) => {
                tracing::info!(from = %request.from, ?command, "running a request");
                execute(orchestrator, command).await.map_err(Failure::from)
            }
            Err(e) => Err(Failure::new(
                FailureKind::BadRequest,
                format!("the leader does not understand the request: {e}"),
            )),
        };
    let value = serde_json::to_value(&outcome).unwrap_or_else(
        |e| serde_json::json!({ "Err": { "kind": "failed", "message": e.to_string() } }),
    );
    if let Err(e) = store.finish_request(&request, value).await {
        tracing::warn!(id = %request.id, error = %e, "answering a request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_outcomes_cross_etcd_unchanged() {
        let c = Command::SetFlags {
            cluster: "c1".into(),
            node: "127.0.0.1:3306".into(),
            flags: NodeFlags {
                maintenance: true,
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["op"], "set_flags");
        assert_eq!(serde_json::from_value::<Command>(v).unwrap(), c);
        let failed: Result<Done, Failure> = Err(Failure::new(FailureKind::Conflict, "x"));
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(
            serde_json::from_value::<Result<Done, Failure>>(v).unwrap(),
            failed
        );
    }

    #[test]
    fn every_failure_kind_has_its_own_status() {
        let kinds = [
            FailureKind::UnknownCluster,
            FailureKind::Conflict,
            FailureKind::Refused,
            FailureKind::NotLeader,
            FailureKind::BadRequest,
            FailureKind::Unavailable,
            FailureKind::Failed,
        ];
        let statuses: std::collections::BTreeSet<u16> =
            kinds.iter().map(|k| k.http_status()).collect();
        assert_eq!(statuses.len(), kinds.len());
    }
}
