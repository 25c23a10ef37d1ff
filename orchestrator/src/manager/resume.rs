//! Taking over a change of leader that another orchestrator began and did not publish (it
//! died, froze or was cut off between its promotion and the announcement): the recorded
//! [`Intent`] says which node it meant to promote. If that node is now a writable leader
//! replicating from nobody, the change happened: it is published with the next epoch (the
//! monitor's rejoin then repoints whoever still follows the old leader). Otherwise nothing
//! was promoted: the hold is released and detection decides again. Never two writable
//! leaders published; never a promoted node left unpublished while another is elected.

use shard_map::{ClusterPhase, Role};

use super::node::NodeConn;
use super::{Orchestrator, OrchestratorError};
use crate::coord::Intent;

/// What became of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The outcome was published already (a newer epoch): nothing to do.
    AlreadyPublished,
    /// The promotion had happened: published with this epoch.
    Completed { epoch: u64 },
    /// Nothing was promoted: the hold released, the old leader still named.
    Undone,
}

impl Orchestrator {
    /// Completes or undoes `intent` (see the module docs). Call it before the detection loop
    /// runs, when this orchestrator has just taken the lead.
    pub async fn resume(&self, intent: &Intent) -> Result<Resumed, OrchestratorError> {
        let cluster = intent.cluster.as_str();
        let _guard = self.try_op(cluster)?;
        self.ensure_leader().await?;
        let cs = self.cluster_status(cluster)?;
        if cs.epoch > intent.epoch {
            return Ok(Resumed::AlreadyPublished);
        }
        let new = intent.new_leader.as_str();
        let promoted = async {
            let mut conn = NodeConn::connect(new, &self.access).await?;
            let snap = conn.snapshot().await?;
            Ok::<bool, OrchestratorError>(!snap.read_only && snap.replication.is_none())
        }
        .await;
        let outcome = match promoted {
            Ok(true) => {
                let epoch = self.publish_leader(cluster, new, &intent.old_leader, Role::Unknown);
                self.event(
                    cluster,
                    "intent.completed",
                    format!(
                        "the {} to {new} begun by {} was made but not published: {new} leads \
                         {cluster} at epoch {epoch}",
                        intent.op, intent.by
                    ),
                );
                Resumed::Completed { epoch }
            }
            answer => {
                if intent.op == "switchover" {
                    self.reopen_old_leader(cluster, &intent.old_leader).await;
                }
                if cs.phase == ClusterPhase::Held {
                    if let Some(old) = cs.leader.as_deref() {
                        self.publish_phase(cluster, old, ClusterPhase::Serving);
                    }
                }
                let why = match answer {
                    Ok(_) => format!("{new} is not a writable leader"),
                    Err(e) => format!("{new} does not answer ({e})"),
                };
                self.event(
                    cluster,
                    "intent.undone",
                    format!(
                        "the {} to {new} begun by {} was not made ({why}): routers released, \
                         detection decides again",
                        intent.op, intent.by
                    ),
                );
                Resumed::Undone
            }
        };
        let c = self.coordinator.load_full();
        c.publish(cluster)
            .await
            .map_err(OrchestratorError::NotLeader)?;
        self.settle(cluster);
        Ok(outcome)
    }

    /// An undone switchover may have left the old leader read-only (its lock died with the
    /// orchestrator that took it): writable again, unless it replicates.
    async fn reopen_old_leader(&self, cluster: &str, old: &str) {
        let reopened = async {
            let mut conn = NodeConn::connect(old, &self.access).await?;
            let snap = conn.snapshot().await?;
            if snap.read_only && snap.replication.is_none() {
                conn.exec(
                    "making the old leader writable again",
                    "SET GLOBAL read_only = 0",
                )
                .await?;
            }
            Ok::<(), OrchestratorError>(())
        }
        .await;
        if let Err(e) = reopened {
            self.event(
                cluster,
                "intent.warning",
                format!("{old} could not be made writable again: {e}"),
            );
        }
    }
}
