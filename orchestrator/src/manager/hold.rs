//! Writes held on a cluster for an operation that is not a change of leader: a reshard's or
//! MoveTables' write cutover. The cluster is published `Draining`: routers hold its new
//! statements (confirmed by every router, as for a switchover's hold) while transactions
//! already open there go on; the leader stays, and the cluster's operation lock is kept until
//! the hold is released, so that no switchover or failover starts under it.

use shard_map::ClusterPhase;
use tokio::sync::OwnedMutexGuard;

use super::{Orchestrator, OrchestratorError};

/// A hold in force; give it back with [`Orchestrator::release_writes`].
#[derive(Debug)]
pub struct WriteHold {
    pub cluster: String,
    /// The leader the hold was taken on.
    pub leader: String,
    pub epoch: u64,
    _op: OwnedMutexGuard<()>,
}

impl Orchestrator {
    /// Holds the routers' statements for `cluster` (`why` goes to its events), once every
    /// router has confirmed. Fails (holding nothing) when another operation runs on the
    /// cluster, it has no leader, or the routers' hold is not confirmed.
    pub async fn hold_writes(
        &self,
        cluster: &str,
        why: &str,
    ) -> Result<WriteHold, OrchestratorError> {
        self.ensure_leader().await?;
        let op = self.try_op(cluster)?;
        let cs = self.cluster_status(cluster)?;
        let leader = cs.leader.clone().ok_or_else(|| {
            OrchestratorError::Refused(format!("cluster {cluster} has no leader to hold writes on"))
        })?;
        if cs.phase.holds() {
            return Err(OrchestratorError::Busy(cluster.to_owned()));
        }
        self.publish_phase(cluster, &leader, ClusterPhase::Draining);
        let c = self.coordinator.load_full();
        if let Err(e) = c.hold(cluster, cs.epoch).await {
            self.publish_phase(cluster, &leader, ClusterPhase::Serving);
            let _ = c.publish(cluster).await;
            return Err(OrchestratorError::Refused(format!(
                "the routers' hold is not confirmed: {e}"
            )));
        }
        self.event(cluster, "hold", format!("routers hold writes: {why}"));
        Ok(WriteHold {
            cluster: cluster.to_owned(),
            leader,
            epoch: cs.epoch,
            _op: op,
        })
    }

    /// Ends a hold: the cluster serves again and every router is told.
    pub async fn release_writes(&self, hold: WriteHold, why: &str) {
        self.publish_phase(&hold.cluster, &hold.leader, ClusterPhase::Serving);
        let c = self.coordinator.load_full();
        if let Err(e) = c.publish(&hold.cluster).await {
            self.event(
                &hold.cluster,
                "hold.release",
                format!("the routers could not be told yet: {e}"),
            );
        }
        self.event(
            &hold.cluster,
            "hold.release",
            format!("writes released: {why}"),
        );
    }
}
