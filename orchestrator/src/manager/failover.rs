//! Unplanned failover: the leader is gone. Read every reachable replica now, elect the one
//! that received most (so a semi-sync-acknowledged commit survives), hold the routers, let
//! the winner apply its relay log, promote it, repoint the other replicas, publish the new
//! leader with the next epoch.

use std::time::Duration;

use shard_map::{ClusterPhase, Role};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::node::{NodeConn, NodeSnapshot};
use super::{OpLog, OperationReport, Orchestrator, OrchestratorError, Others};
use crate::elect::{elect, Rules};

/// How long a new leader waits for a semi-sync replica before turning semi-sync on.
pub(super) const SEMI_SYNC_WAIT: Duration = Duration::from_secs(5);

impl Orchestrator {
    /// Fails over `cluster`. `detected` is the detector's verdict for an automatic failover,
    /// `None` when an operator asked.
    pub(super) async fn run_failover(
        &self,
        cluster: &str,
        _guard: OwnedMutexGuard<()>,
        detected: Option<String>,
    ) -> Result<OperationReport, OrchestratorError> {
        let result = self.failover_locked(cluster, detected.as_deref()).await;
        self.settle(cluster);
        result
    }

    /// A refusal: an event (once per episode for automatic failovers) and the error.
    fn refuse_failover(
        &self,
        log: &mut OpLog<'_>,
        automatic: bool,
        why: String,
    ) -> OrchestratorError {
        if automatic {
            self.refuse_once(log.cluster, &why);
        } else {
            log.step("failover.refused", why.clone());
        }
        OrchestratorError::Refused(why)
    }

    async fn failover_locked(
        &self,
        cluster: &str,
        detected: Option<&str>,
    ) -> Result<OperationReport, OrchestratorError> {
        let automatic = detected.is_some();
        let mut log = OpLog::new(self, cluster);
        let ctl = self.ctl(cluster)?;
        let cs = self.cluster_status(cluster)?;
        let Some(old) = cs.leader.clone() else {
            let why = format!("cluster {cluster} has no leader to replace");
            return Err(self.refuse_failover(&mut log, automatic, why));
        };
        if !automatic && NodeConn::connect(&old, &self.access).await.is_ok() {
            let why = format!("the leader {old} is reachable: use a switchover");
            return Err(self.refuse_failover(&mut log, automatic, why));
        }

        // Fresh facts: the monitor's are up to a round old.
        let others = self.others(ctl, &old).await;
        let unreachable = others.unreachable_list();
        let Others {
            mut conns,
            mut snaps,
            ..
        } = others;
        // A replica connected to the leader, or to an address we do not know (the leader
        // under another name, say), is evidence that the leader lives.
        let nodes = ctl.spec.all_nodes();
        let still: Vec<String> = snaps
            .iter()
            .filter_map(|(addr, s)| {
                let r = s.replication.as_ref()?;
                let elsewhere = r.source != old && nodes.contains(&r.source);
                (r.io_running && !elsewhere).then(|| format!("{addr} (from {})", r.source))
            })
            .collect();
        if !still.is_empty() {
            let why = format!(
                "{old} may be alive: replicas still replicate (Slave_IO_Running=Yes): {}",
                still.join(", ")
            );
            return Err(self.refuse_failover(&mut log, automatic, why));
        }

        let facts = self.leader_facts(&old, &snaps.values().collect::<Vec<_>>());
        let candidates: Vec<_> = snaps
            .iter()
            .map(|(addr, snap)| self.candidate(&cs, addr, snap))
            .collect();
        let even = self.settings.load_full().failover_even_if_lagging;
        let rules = Rules {
            require_io: false,
            require_sql: !even,
            max_lag_s: (!even).then_some(self.settings.load_full().max_lag_s),
            lossless: !even,
        };
        let election = match elect(&candidates, &facts, &rules, None) {
            Ok(e) => e,
            Err(e) => {
                let mut why = format!("failover of {old}: {e}");
                if !unreachable.is_empty() {
                    why.push_str(&format!("; unreachable: {unreachable}"));
                }
                return Err(self.refuse_failover(&mut log, automatic, why));
            }
        };
        let winner = election.winner.clone();
        if let Some(mut m) = self.memory(cluster) {
            m.history
                .record(Instant::now(), self.settings.load_full().limits().window);
        }

        let received = snaps
            .get(&winner)
            .map(|s| s.received().to_string())
            .unwrap_or_default();
        log.step(
            "failover.start",
            format!(
                "{}: promoting {winner}, which received up to {received}",
                detected.unwrap_or("failover requested by the operator")
            ),
        );
        for (addr, why) in &election.excluded {
            log.step("failover.step", format!("not eligible: {addr}: {why}"));
        }
        if !unreachable.is_empty() {
            log.step(
                "failover.step",
                format!("unreachable, left as they are: {unreachable}"),
            );
        }
        self.hook(&mut log, "before_failover", &old, &winner).await;
        self.hook(&mut log, "vip_remove", &old, &winner).await;
        self.publish_phase(cluster, &old, ClusterPhase::Held);
        log.step("failover.step", "routers told to hold statements");

        let (Some(mut leader), Some(winner_snap)) = (conns.remove(&winner), snaps.remove(&winner))
        else {
            return Err(OrchestratorError::Unexpected(format!(
                "the elected {winner} has no connection"
            )));
        };
        if let Err(e) = self
            .catch_up_and_promote(&mut log, &mut leader, &winner_snap)
            .await
        {
            self.publish_phase(cluster, &old, ClusterPhase::Serving);
            log.step(
                "failover.failed",
                format!("{e}; routers released, {old} still named leader"),
            );
            return Err(e);
        }
        self.hook(&mut log, "vip_add", &old, &winner).await;

        // The other replicas follow the winner from their own applied position, which the
        // winner has: it received at least as much as any of them (elect's lossless rule).
        let winner_seq = election.winner_seq;
        let domain = facts.domain;
        let repoints = conns.iter_mut().filter_map(|(addr, conn)| {
            let snap = snaps.get(addr)?;
            snap.replication.as_ref()?;
            let ahead = snap.received().seq(domain) > winner_seq;
            let login = &self.login;
            let winner = &winner;
            Some(async move {
                if ahead {
                    return (
                        addr.clone(),
                        Err(
                            "it received transactions the new leader lacks: left as it is"
                                .to_owned(),
                        ),
                    );
                }
                let r = conn.replicate_from(winner, login, false).await;
                (addr.clone(), r.map_err(|e| e.to_string()))
            })
        });
        for (addr, result) in futures::future::join_all(repoints).await {
            match result {
                Ok(()) => log.step(
                    "failover.step",
                    format!("{addr} now replicates from {winner}"),
                ),
                Err(why) => log.step("failover.warning", format!("{addr} not repointed: {why}")),
            }
        }

        let epoch = self.publish_leader(cluster, &winner, &old, Role::Unknown);
        log.step(
            "failover.done",
            format!("{winner} leads {cluster} at epoch {epoch} (was {old})"),
        );
        self.hook(&mut log, "after_failover", &old, &winner).await;
        if winner_snap.semi_sync_slave {
            self.semi_sync_on(&mut log, &mut leader).await;
        }
        Ok(log.report(&old, &winner, epoch))
    }

    /// Lets the elected replica apply everything it received, then promotes it.
    async fn catch_up_and_promote(
        &self,
        log: &mut OpLog<'_>,
        conn: &mut NodeConn,
        snap: &NodeSnapshot,
    ) -> Result<(), OrchestratorError> {
        if snap.replication.as_ref().is_some_and(|r| !r.sql_running) {
            conn.exec("starting the SQL thread", "START SLAVE SQL_THREAD")
                .await?;
            log.step(
                "failover.step",
                format!("{}: SQL thread started", conn.addr),
            );
        }
        let target = snap.received().to_string();
        let limit = self.settings.load_full().apply_timeout();
        if !conn.gtid_wait(&target, limit).await? {
            return Err(OrchestratorError::Timeout {
                addr: conn.addr.clone(),
                what: format!("applying its relay log up to {target}"),
                after: limit,
            });
        }
        log.step(
            "failover.step",
            format!("{} applied everything it received ({target})", conn.addr),
        );
        conn.promote().await?;
        log.step(
            "failover.step",
            format!("{} promoted: replication removed, read_only=0", conn.addr),
        );
        Ok(())
    }

    /// Turns semi-sync on at a new leader once a semi-sync replica is connected.
    pub(super) async fn semi_sync_on(&self, log: &mut OpLog<'_>, leader: &mut NodeConn) {
        let kind = "semisync";
        match leader.enable_semi_sync_master(SEMI_SYNC_WAIT).await {
            Ok(true) => log.step(kind, format!("{}: semi-sync master enabled", leader.addr)),
            Ok(false) => log.step(
                kind,
                format!(
                    "{}: no semi-sync replica connected within {} s: semi-sync stays off until \
                     one rejoins",
                    leader.addr,
                    SEMI_SYNC_WAIT.as_secs()
                ),
            ),
            Err(e) => log.step(kind, format!("enabling semi-sync failed: {e}")),
        }
    }
}
