//! Bringing nodes back in place once the leader is confirmed healthy (up, writable, not
//! replicating). Nodes under maintenance are left to the operator. A writable node that is
//! not the leader is fenced (`read_only=1`, clients killed) whatever `rejoin` says; with
//! `rejoin`, a node that does not replicate (a
//! recovered old leader) or replicates from another node of the cluster (a replica that
//! missed a failover) is made a replica of the leader, provided it holds no transaction the
//! leader lacks. One that does is kept out: read-only, not replicating, role `Unknown`,
//! `rejoin.refused` listing the extra GTIDs, until it goes down and comes back. Before it
//! replicates, its prepared XA transactions are brought in step with its binlog, and a
//! replica of the leader stopped on the end of an XA transaction it lost is repaired or kept
//! out (see [`super::xa`]).

use std::time::Duration;

use shard_map::{ClusterStatus, NodeState, Role};
use tokio::sync::OwnedMutexGuard;
use tokio::time::{sleep, Instant};

use super::node::NodeConn;
use super::xa::{self, LostXa};
use super::{lock, ClusterCtl, Orchestrator, OrchestratorError, REJOIN_RETRY};
use crate::gtid::{self, GtidPos};
use crate::monitor::MonitorState;

/// How long a rejoined node may take to connect to its leader.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the leader refuses the position asked for.
const POSITION_REFUSED: &str = "1236";

impl Orchestrator {
    /// The first node out of place in a cluster whose leader is confirmed, if any.
    pub(super) fn rejoin_target(
        &self,
        ctl: &ClusterCtl,
        cs: &ClusterStatus,
        leader: &str,
        state: &MonitorState,
    ) -> Option<String> {
        let lh = state.node(leader)?;
        let lobs = lh.last_observation.as_ref()?;
        if lh.status.state != NodeState::Up || lobs.read_only || lobs.replication.is_some() {
            return None;
        }
        let m = lock(&ctl.memory);
        let nodes = ctl.spec.all_nodes();
        let now = Instant::now();
        for addr in nodes.iter().filter(|a| a.as_str() != leader) {
            let Some(h) = state.node(addr) else {
                continue;
            };
            let Some(obs) = &h.last_observation else {
                continue;
            };
            // Polled before the last operation ended: it may already be in place.
            let stale = m
                .settled_at
                .is_some_and(|t| h.last_ok_at.is_none_or(|ok| ok <= t));
            let flags = cs.node(addr).map(|n| n.flags).unwrap_or_default();
            if h.status.state != NodeState::Up
                || stale
                || flags.maintenance
                || m.retry_after.get(addr).is_some_and(|t| *t > now)
            {
                continue;
            }
            if !obs.read_only {
                return Some(addr.clone());
            }
            let out_of_place = match &obs.replication {
                None => true,
                Some(r) => {
                    (r.source != leader && nodes.contains(&r.source))
                        || (!r.sql_running
                            && r.last_sql_error.as_deref().and_then(xa::lost_xa).is_some())
                }
            };
            if out_of_place && self.settings.load_full().rejoin && !m.kept_out.contains(addr) {
                return Some(addr.clone());
            }
        }
        None
    }

    pub(super) async fn run_rejoin(&self, cluster: &str, addr: &str, _guard: OwnedMutexGuard<()>) {
        if let Err(e) = self.rejoin_locked(cluster, addr).await {
            self.event(
                cluster,
                "rejoin.failed",
                format!("{addr}: {e}; next attempt in {} s", REJOIN_RETRY.as_secs()),
            );
            if let Some(mut m) = self.memory(cluster) {
                m.retry_after
                    .insert(addr.to_owned(), Instant::now() + REJOIN_RETRY);
            }
        }
        self.settle(cluster);
    }

    async fn rejoin_locked(&self, cluster: &str, addr: &str) -> Result<(), OrchestratorError> {
        self.ensure_leader().await?;
        let cs = self.cluster_status(cluster)?;
        let Some(leader) = cs.leader.clone() else {
            return Ok(());
        };
        let mut node = NodeConn::connect(addr, &self.access).await?;
        let snap = node.snapshot().await?;
        // Semi-sync off first: a former leader that hung (frozen, cut off) comes back with
        // commits still waiting for an acknowledgement no replica will send, and
        // `read_only = 1` would wait for them (`rpl_semi_sync_master_timeout`, 10 s by
        // default) while the node stays writable.
        if snap.semi_sync_master {
            node.exec(
                "turning semi-sync master off",
                "SET GLOBAL rpl_semi_sync_master_enabled = 0",
            )
            .await?;
        }
        if !snap.read_only {
            node.fence(&self.access).await?;
            let spare = [self.access.user.as_str(), self.login.user.as_str()];
            let killed = node.kill_clients(&spare).await?;
            self.event(
                cluster,
                "rejoin.fence",
                format!(
                    "{addr} was writable although {leader} leads: read_only=1, {killed} client \
                     connection(s) killed"
                ),
            );
        }
        let was_replicating = snap.replication.is_some();
        if !self.settings.load_full().rejoin {
            if !was_replicating {
                self.publish_role(cluster, addr, Role::Unknown);
            }
            return Ok(());
        }

        if let Some(r) = snap.replication.as_ref().filter(|r| r.source == leader) {
            if let Some(lost) = r.last_sql_error.as_deref().and_then(xa::lost_xa) {
                return self.repair_lost_xa(cluster, addr, &mut node, lost, r).await;
            }
        }

        let mut lconn = NodeConn::connect(&leader, &self.access).await?;
        let lsnap = lconn.snapshot().await?;
        if was_replicating {
            // Nothing applied while the prepared transactions are compared with the binlogs.
            node.exec("stopping replication", "STOP SLAVE").await?;
        }
        // A former leader resumes from what it wrote; a replica from what it applied.
        let start = GtidPos::parse_lossy(if was_replicating {
            &snap.gtid_slave_pos
        } else {
            &snap.gtid_binlog_pos
        });
        let resolved = match xa::reconcile(&mut node, &mut lconn, &start).await? {
            Ok(r) => r,
            Err(xa::Unresolvable(xids)) => {
                let why = format!(
                    "{addr} holds prepared XA transactions that neither its binlog nor the \
                     leader {leader}'s names: {} (an orphan of its crash, or a one-phase commit \
                     its binlog records without the xid; only the data can tell); kept out: \
                     read-only, not replicating; end them with XA COMMIT or XA ROLLBACK as the \
                     data says, then restart it, or rebuild it",
                    xids.join(", ")
                );
                return self.keep_out(cluster, addr, &mut node, why).await;
            }
        };
        if !resolved.is_empty() {
            let list: Vec<String> = resolved
                .iter()
                .map(|r| {
                    format!(
                        "{} {} (its binlog: {})",
                        if r.committed {
                            "committed"
                        } else {
                            "rolled back"
                        },
                        r.xid,
                        match r.logged {
                            Some(xa::Logged::Committed) => "committed",
                            Some(xa::Logged::RolledBack) => "rolled back",
                            _ => "nothing",
                        }
                    )
                })
                .collect();
            self.event(
                cluster,
                "rejoin.xa",
                format!(
                    "{addr}: prepared XA transactions out of step with the history it resumes \
                     at {start}, resolved without binlogging as the leader's binlog has them: {}",
                    list.join("; ")
                ),
            );
        }

        let mine = GtidPos::parse_lossy(&snap.gtid_binlog_pos);
        let theirs = GtidPos::parse_lossy(&lsnap.gtid_binlog_pos);
        let extra = mine.not_in(&theirs);
        // `cut`: its binlog was cut back and it replicates already; `rewound`: by flashback.
        let mut cut = false;
        let mut rewound = false;
        if !extra.is_empty() {
            // Unless all it has in excess are XA PREPAREs nobody received.
            match xa::unsent_prepares(&mut node).await? {
                Some(u) if u.before.not_in(&theirs).is_empty() => {
                    self.cut_unsent(cluster, addr, &leader, &mut node, &u)
                        .await?;
                    cut = true;
                }
                _ => {
                    let why = format!(
                        "{addr} has transactions the leader {leader} lacks: {} (its \
                         gtid_binlog_pos {mine}, the leader's {theirs})",
                        gtid::list(&extra)
                    );
                    if !self
                        .rewind_or_keep_out(cluster, addr, &leader, &mut node, &mut lconn, why)
                        .await?
                    {
                        return Ok(());
                    }
                    cut = true;
                    rewound = true;
                }
            }
        }
        // A former leader starts from what it wrote; a replica from what it applied.
        if !cut {
            node.replicate_from(&leader, &self.login, !was_replicating)
                .await?;
        }
        let mut deadline = Instant::now() + CONNECT_WAIT;
        loop {
            let now = node.snapshot().await?;
            let rep = now.replication.as_ref();
            // Connected is not enough: the leader may still refuse the position it asks for.
            if rep.is_some_and(|r| r.io_running) && node.receiving().await? {
                break;
            }
            if let Some(e) = rep.and_then(|r| r.last_io_error.as_ref()) {
                if e.contains(POSITION_REFUSED) && !cut {
                    node.exec("stopping replication", "STOP SLAVE").await?;
                    if let Some(u) = xa::unsent_prepares(&mut node).await? {
                        self.cut_unsent(cluster, addr, &leader, &mut node, &u)
                            .await?;
                        cut = true;
                        deadline = Instant::now() + CONNECT_WAIT;
                        continue;
                    }
                }
                if e.contains(POSITION_REFUSED) {
                    let why = format!(
                        "{addr}'s history diverged from the leader {leader}'s, which refused \
                         its position ({e})"
                    );
                    if rewound {
                        let why = format!(
                            "{why}, also once rewound; kept out: read-only, not replicating"
                        );
                        return self.keep_out(cluster, addr, &mut node, why).await;
                    }
                    node.exec("stopping replication", "STOP SLAVE").await?;
                    if !self
                        .rewind_or_keep_out(cluster, addr, &leader, &mut node, &mut lconn, why)
                        .await?
                    {
                        return Ok(());
                    }
                    cut = true;
                    rewound = true;
                    deadline = Instant::now() + CONNECT_WAIT;
                    continue;
                }
            }
            if Instant::now() >= deadline {
                return Err(OrchestratorError::Timeout {
                    addr: addr.to_owned(),
                    what: format!("connecting to the leader {leader}"),
                    after: CONNECT_WAIT,
                });
            }
            sleep(Duration::from_millis(50)).await;
        }
        self.publish_role(cluster, addr, Role::Replica);
        let mut message = format!(
            "{addr} rejoined as a replica of {leader} from {}",
            if was_replicating {
                &snap.gtid_slave_pos
            } else {
                &snap.gtid_binlog_pos
            }
        );
        if snap.semi_sync_slave && !lsnap.semi_sync_master {
            match lconn
                .enable_semi_sync_master(super::failover::SEMI_SYNC_WAIT)
                .await
            {
                Ok(true) => message.push_str("; semi-sync master enabled on the leader"),
                Ok(false) => message.push_str("; it did not connect as a semi-sync replica"),
                Err(e) => message.push_str(&format!("; enabling semi-sync failed: {e}")),
            }
        }
        self.event(cluster, "rejoin.done", message);
        Ok(())
    }

    /// With `rejoin_rewind` on, rewinds `addr` (see [`super::rewind`]) and reports it; `true`
    /// when it replicates from the leader now. Otherwise (the setting is off, or a rewind is
    /// not safe) it is kept out, `why` completed with the reason: `false`.
    async fn rewind_or_keep_out(
        &self,
        cluster: &str,
        addr: &str,
        leader: &str,
        node: &mut NodeConn,
        lconn: &mut NodeConn,
        why: String,
    ) -> Result<bool, OrchestratorError> {
        const OUT: &str = "kept out: read-only, not replicating";
        let refused = if self.settings.load_full().rejoin_rewind {
            match self.rewind(cluster, addr, leader, node, lconn).await? {
                Err(unsafe_why) => format!("{why}; not rewound: {unsafe_why}; {OUT}"),
                Ok(r) => {
                    self.event(
                        cluster,
                        "rejoin.rewound",
                        format!(
                            "{why}: rewound by binlog flashback ({} transaction(s): {}), saved \
                             to {}; replicating from {leader} from {}",
                            r.gtids.len(),
                            gtid::list(&r.gtids),
                            r.file.display(),
                            r.from
                        ),
                    );
                    return Ok(true);
                }
            }
        } else {
            format!("{why}; {OUT}")
        };
        self.keep_out(cluster, addr, node, refused).await?;
        Ok(false)
    }

    /// A former leader whose binlog ends with `XA PREPARE`s nobody else received (the leader
    /// refused its position): those transactions are rolled back, unlogged, its binlog is reset
    /// (it must not send them to anyone, nor keep their sequence numbers, which the leader's
    /// transactions reuse) and it replicates from the position before them.
    async fn cut_unsent(
        &self,
        cluster: &str,
        addr: &str,
        leader: &str,
        node: &mut NodeConn,
        u: &xa::Unsent,
    ) -> Result<(), OrchestratorError> {
        for g in &u.groups {
            if let Some(xid) = g.prepare_of() {
                node.exec(
                    "rolling back an XA transaction nobody received",
                    &format!(
                        "SET SESSION sql_log_bin = 0; XA ROLLBACK {xid}; SET SESSION sql_log_bin = 1"
                    ),
                )
                .await?;
            }
        }
        node.replicate_afresh(leader, &self.login, &u.before)
            .await?;
        let gtids: Vec<String> = u.groups.iter().map(|g| g.gtid.to_string()).collect();
        self.event(
            cluster,
            "rejoin.xa",
            format!(
                "{addr}'s binlog ended with XA PREPAREs no other node received ({}), which the \
                 leader {leader} does not have: rolled back unlogged, its binlog reset, \
                 replicating from {}",
                gtids.join(", "),
                u.before
            ),
        );
        Ok(())
    }

    /// A replica of the leader stopped on the end of an XA transaction it does not hold (its
    /// crash recovery lost it): past an `XA ROLLBACK`, the end state is the same, so that one
    /// event group is skipped; an `XA COMMIT` would need the changes it lacks, so it is kept out.
    async fn repair_lost_xa(
        &self,
        cluster: &str,
        addr: &str,
        node: &mut NodeConn,
        lost: LostXa,
        r: &crate::monitor::Replication,
    ) -> Result<(), OrchestratorError> {
        let error = r.last_sql_error.clone().unwrap_or_default();
        match lost {
            LostXa::Rollback => {
                node.exec(
                    "skipping the XA ROLLBACK",
                    "SET GLOBAL sql_slave_skip_counter = 1",
                )
                .await?;
                node.exec("restarting the SQL thread", "START SLAVE SQL_THREAD")
                    .await?;
                self.event(
                    cluster,
                    "rejoin.xa",
                    format!(
                        "{addr}: replication stopped on the rollback of an XA transaction its \
                         crash recovery had already dropped ({error}); that event group skipped, \
                         the end state is the same"
                    ),
                );
                Ok(())
            }
            LostXa::Commit => {
                let why = format!(
                    "{addr} lacks an XA transaction the leader committed (lost in its crash \
                     recovery: {error}); kept out: read-only, not replicating; rebuild it from \
                     a replica"
                );
                self.keep_out(cluster, addr, node, why).await
            }
        }
    }

    /// Leaves `addr` out of the cluster: not replicating (so that it is nobody's replica and
    /// the monitor calls it `Unknown`), read-only, not retried until it restarts.
    async fn keep_out(
        &self,
        cluster: &str,
        addr: &str,
        node: &mut NodeConn,
        why: String,
    ) -> Result<(), OrchestratorError> {
        node.exec("stopping replication", "STOP SLAVE").await?;
        node.exec("removing the replication configuration", "RESET SLAVE ALL")
            .await?;
        if let Some(mut m) = self.memory(cluster) {
            m.kept_out.insert(addr.to_owned());
        }
        self.publish_role(cluster, addr, Role::Unknown);
        self.event(cluster, "rejoin.refused", why);
        Ok(())
    }
}
