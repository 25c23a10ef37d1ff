//! Unplanned failover: the leader is gone. Read every reachable replica now, elect the one
//! that received most (so a semi-sync-acknowledged commit survives), hold the routers, let
//! the winner apply its relay log, promote it, repoint the other replicas, publish the new
//! leader with the next epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use shard_map::{ClusterPhase, Role};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::node::{NodeConn, NodeSnapshot};
use super::{OpLog, OperationReport, Orchestrator, OrchestratorError, Others};
use crate::elect::{elect, Rules};

/// How long a new leader waits for a semi-sync replica before turning semi-sync on.
pub(super) const SEMI_SYNC_WAIT: Duration = Duration::from_secs(5);
/// After an automatic failover that failed without changing anything, the next attempt
/// waits this long.
const FAILOVER_RETRY: Duration = Duration::from_secs(1);
/// After an automatic failover was refused, the next attempt waits this long.
const REFUSED_RETRY: Duration = Duration::from_millis(250);

impl Orchestrator {
    /// Fails over `cluster`. `detected` is the detector's verdict for an automatic failover,
    /// `None` when an operator asked; `alive`: the leader answers but cannot commit (its disk
    /// is full), so replicas still connected to it are no reason to refuse, and it is fenced
    /// before another is promoted.
    pub(super) async fn run_failover(
        &self,
        cluster: &str,
        _guard: OwnedMutexGuard<()>,
        detected: Option<String>,
        alive: bool,
    ) -> Result<OperationReport, OrchestratorError> {
        let result = self
            .failover_locked(cluster, detected.as_deref(), alive)
            .await;
        self.settle(cluster);
        result
    }

    /// A refusal: an event (once per episode for automatic failovers) and the error. An
    /// automatic failover is not tried again before [`REFUSED_RETRY`]: what refused it (no
    /// replica may be elected without losing what another received, say) rarely changes
    /// that fast, and each attempt stops and restarts the replicas' streams (seen: an attempt
    /// every 6 ms, each re-poll of the cluster starting the next).
    fn refuse_failover(
        &self,
        log: &mut OpLog<'_>,
        automatic: bool,
        why: String,
    ) -> OrchestratorError {
        if automatic {
            if let Some(mut m) = self.memory(log.cluster) {
                m.failover_retry_at = Some(Instant::now() + REFUSED_RETRY);
            }
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
        alive: bool,
    ) -> Result<OperationReport, OrchestratorError> {
        let automatic = detected.is_some();
        let mut log = OpLog::new(self, cluster);
        let ctl = self.ctl(cluster)?;
        self.ensure_leader().await?;
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
        // under another name, say), is evidence that the leader lives, unless the monitor
        // saw its stream receive nothing for several heartbeat periods.
        let nodes = ctl.spec.all_nodes();
        let still: Vec<String> = snaps
            .iter()
            .filter_map(|(addr, s)| {
                let r = s.replication.as_ref()?;
                let elsewhere = r.source != old && nodes.contains(&r.source);
                (r.io_running && !elsewhere && !self.stream_stalled(addr))
                    .then(|| format!("{addr} (from {})", r.source))
            })
            .collect();
        if !still.is_empty() && !alive {
            let why = format!(
                "{old} may be alive: replicas still replicate (Slave_IO_Running=Yes): {}",
                still.join(", ")
            );
            return Err(self.refuse_failover(&mut log, automatic, why));
        }

        // Nothing more from the old leader from here on: every reachable replica's IO thread
        // is stopped (killed, so that a leader that hangs holds nothing up), so that the
        // positions read next are final and a leader that comes back sends nothing more.
        // Undone when the failover stops before the promotion. Not on a replica whose SQL
        // thread is stopped: with GTID, starting a thread while both are stopped throws the
        // relay log away, and what it received must still be applied if it wins.
        let applying: Vec<String> = snaps
            .iter()
            .filter(|(_, s)| s.replication.as_ref().is_some_and(|r| r.sql_running))
            .map(|(addr, _)| addr.clone())
            .collect();
        let stopped = self.stop_streams(&mut log, &mut conns, &applying).await;
        for (addr, conn) in &mut conns {
            match conn.snapshot().await {
                Ok(snap) => {
                    snaps.insert(addr.clone(), snap);
                }
                Err(e) => {
                    snaps.remove(addr);
                    log.step("failover.step", format!("{addr} left out: {e}"));
                }
            }
        }
        conns.retain(|addr, _| snaps.contains_key(addr));

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
                self.restart_streams(&mut log, conns.values_mut(), &stopped)
                    .await;
                let mut why = format!("failover of {old}: {e}");
                if !unreachable.is_empty() {
                    why.push_str(&format!("; unreachable: {unreachable}"));
                }
                return Err(self.refuse_failover(&mut log, automatic, why));
            }
        };
        let winner = election.winner.clone();

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
        if let Err(e) = self.await_hold(&mut log, cs.epoch).await {
            self.publish_phase(cluster, &old, ClusterPhase::Serving);
            self.announce(&mut log, "failover.warning").await;
            let others = conns.values_mut().chain(std::iter::once(&mut leader));
            self.restart_streams(&mut log, others, &stopped).await;
            return Err(self.failed_unchanged(&mut log, &old, e));
        }
        if let Err(e) = self.catch_up(&mut log, &mut leader, &winner_snap).await {
            self.publish_phase(cluster, &old, ClusterPhase::Serving);
            self.announce(&mut log, "failover.warning").await;
            let others = conns.values_mut().chain(std::iter::once(&mut leader));
            self.restart_streams(&mut log, others, &stopped).await;
            return Err(self.failed_unchanged(&mut log, &old, e));
        }
        if alive {
            self.fence_stuck_leader(&mut log, &old).await;
        }
        // A deposed orchestrator (paused past its lease, cut off from the store) promotes
        // nothing: another one may be failing the cluster over already.
        if let Err(e) = self
            .begin_change(cluster, "failover", &old, &winner, cs.epoch)
            .await
        {
            self.publish_phase(cluster, &old, ClusterPhase::Serving);
            let others = conns.values_mut().chain(std::iter::once(&mut leader));
            self.restart_streams(&mut log, others, &stopped).await;
            return Err(self.failed_unchanged(&mut log, &old, e));
        }
        // The point of no return: from here on the attempt counts for the failover limits.
        if let Some(mut m) = self.memory(cluster) {
            m.history
                .record(Instant::now(), self.settings.load_full().limits().window);
        }
        if let Err(e) = leader.promote().await {
            self.publish_phase(cluster, &old, ClusterPhase::Serving);
            self.announce(&mut log, "failover.warning").await;
            log.step(
                "failover.failed",
                format!(
                    "{e}; promoting {winner} failed part-way (its replication may be stopped): \
                     routers released, {old} still named leader"
                ),
            );
            return Err(e);
        }
        log.step(
            "failover.step",
            format!("{winner} promoted: replication removed, read_only=0"),
        );
        shard_map::failpoint::failpoint("failover-after-promote");
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
        self.announce(&mut log, "failover.warning").await;
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

    /// Makes a leader that answers but cannot commit read-only before another is promoted,
    /// killing its sessions that wait for disk space (see [`NodeConn::fence`]). Failing that,
    /// the routers' epoch still keeps every write away from it, and nothing commits there
    /// while its disk is full; the warning says so.
    async fn fence_stuck_leader(&self, log: &mut OpLog<'_>, old: &str) {
        let fenced = async {
            let mut conn = NodeConn::connect(old, &self.access).await?;
            conn.fence(&self.access).await
        };
        match fenced.await {
            Ok(killed) => log.step(
                "failover.step",
                format!(
                    "{old} fenced: read_only=1, {killed} session(s) waiting for disk space \
                     killed (none was acknowledged)"
                ),
            ),
            Err(e) => log.step(
                "failover.warning",
                format!(
                    "{old} could not be made read-only ({e}); routers send it nothing at the \
                     new epoch"
                ),
            ),
        }
    }

    /// Lets the elected replica apply everything it received (its IO thread is stopped).
    async fn catch_up(
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
        Ok(())
    }

    /// Stops the IO thread of the replicas of `conns` named in `which`; returns those where it
    /// was stopped (to be restarted if the failover stops before the promotion).
    async fn stop_streams(
        &self,
        log: &mut OpLog<'_>,
        conns: &mut BTreeMap<String, NodeConn>,
        which: &[String],
    ) -> Vec<String> {
        let stops = conns
            .iter_mut()
            .filter(|(addr, _)| which.contains(addr))
            .map(|(addr, conn)| async move { (addr.clone(), conn.stop_io_thread().await) });
        let mut stopped = Vec::new();
        let mut lines = Vec::new();
        for (addr, result) in futures::future::join_all(stops).await {
            match result {
                Ok(killed) => {
                    stopped.push(addr.clone());
                    lines.push(format!("{addr} ({killed} IO thread killed)"));
                }
                Err(e) => lines.push(format!("{addr}: {e}")),
            }
        }
        if !lines.is_empty() {
            log.step(
                "failover.step",
                format!("replication stopped: {}", lines.join(", ")),
            );
        }
        stopped
    }

    /// Starts again the IO threads [`Orchestrator::stop_streams`] stopped, on the nodes of
    /// `conns` among `stopped`.
    async fn restart_streams<'c>(
        &self,
        log: &mut OpLog<'_>,
        conns: impl Iterator<Item = &'c mut NodeConn>,
        stopped: &[String],
    ) {
        for conn in conns.filter(|c| stopped.contains(&c.addr)) {
            match conn
                .exec("restarting the IO thread", "START SLAVE IO_THREAD")
                .await
            {
                Ok(()) => log.step(
                    "failover.step",
                    format!("{}: IO thread started again", conn.addr),
                ),
                Err(e) => log.step("failover.warning", format!("{e}")),
            }
        }
    }

    /// A failover that stopped before it changed anything: tried again shortly, without
    /// counting for the failover limits.
    fn failed_unchanged(
        &self,
        log: &mut OpLog<'_>,
        old: &str,
        e: OrchestratorError,
    ) -> OrchestratorError {
        if let Some(mut m) = self.memory(log.cluster) {
            m.failover_retry_at = Some(Instant::now() + FAILOVER_RETRY);
        }
        log.step(
            "failover.failed",
            format!(
                "{e}; nothing changed: routers released, {old} still named leader; trying again \
                 in {} ms",
                FAILOVER_RETRY.as_millis()
            ),
        );
        e
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
