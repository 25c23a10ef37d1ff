//! Planned switchover, the seed's workflow, each step an event:
//!
//! 1. verify replication settings (leader `log_bin`; candidates `log_bin`, `gtid_strict_mode`,
//!    `log_slave_updates`);
//! 2. check the replicas and elect (or take the requested one): with
//!    `switchover_check_replicas`, a candidate must have both threads running and lag at most
//!    `max_lag_s`;
//! 3. wait up to `switchover_wait_trx_ms` for the transactions and queries running on the
//!    leader to end, else refuse;
//! 4. let the candidate catch up with the leader while it still takes writes;
//! 5. `before_switchover` and `vip_remove` hooks, then `Held` for the routers;
//! 6. freeze the old leader: a short drain, `FLUSH TABLES WITH READ LOCK`, `read_only=1`,
//!    `max_connections` lowered, client connections killed, `UNLOCK TABLES`;
//! 7. wait for the candidate to reach the old leader's `gtid_binlog_pos`; promote it;
//!    `vip_add`; publish it with the next epoch, `Serving`;
//! 8. repoint the other replicas and the old leader (from its `gtid_binlog_pos`, semi-sync
//!    master off, `max_connections` restored); semi-sync on at the new leader.
//!
//! Anything failing before the promotion is undone (old leader writable with its
//! `max_connections`, candidate replicating again, `Serving` with the old leader and epoch).

use std::time::Duration;

use shard_map::{ClusterPhase, Role};
use tokio::sync::OwnedMutexGuard;
use tokio::time::{sleep, Instant};

use super::node::{NodeConn, NodeSnapshot, SERVER_COMMANDS, SYSTEM_USERS};
use super::{OpLog, OperationReport, Orchestrator, OrchestratorError, Others};
use crate::elect::{elect, LeaderFacts, Rules};
use crate::gtid::GtidPos;

const STEP: &str = "switchover.step";
/// How often the leader's transactions are listed while waiting for them. More than 100 ms:
/// InnoDB refreshes its `INNODB_TRX` cache only when nobody read it for 100 ms
/// (`CACHE_MIN_IDLE_TIME_US`), so reading faster shows the same, stale list forever.
const BUSY_POLL: Duration = Duration::from_millis(150);
/// How often running statements are listed while draining (`PROCESSLIST` is not cached).
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// What has been changed so far, to undo it.
#[derive(Debug, Default)]
struct Changes {
    vip_removed: bool,
    held: bool,
    read_only: bool,
    max_connections: Option<u64>,
    candidate_stopped: bool,
}

/// A transaction or query running on the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Busy {
    /// Identifies it across listings.
    key: String,
    /// Says what it is, for the refusal.
    what: String,
}

impl Orchestrator {
    pub(super) async fn run_switchover(
        &self,
        cluster: &str,
        to: Option<&str>,
        _guard: OwnedMutexGuard<()>,
    ) -> Result<OperationReport, OrchestratorError> {
        let result = self.switchover_locked(cluster, to).await;
        if let Err(e) = &result {
            // Refusals are logged where they are decided.
            if !matches!(e, OrchestratorError::Refused(_)) {
                self.event(cluster, "switchover.failed", e.to_string());
            }
        }
        self.settle(cluster);
        result
    }

    async fn switchover_locked(
        &self,
        cluster: &str,
        to: Option<&str>,
    ) -> Result<OperationReport, OrchestratorError> {
        let mut log = OpLog::new(self, cluster);
        let refuse = |log: &mut OpLog<'_>, why: String| {
            log.step("switchover.refused", why.clone());
            OrchestratorError::Refused(why)
        };
        let ctl = self.ctl(cluster)?;
        self.ensure_leader().await?;
        let cs = self.cluster_status(cluster)?;
        let Some(old) = cs.leader.clone() else {
            return Err(refuse(&mut log, format!("cluster {cluster} has no leader")));
        };
        if to == Some(old.as_str()) {
            return Err(refuse(&mut log, format!("{old} already leads {cluster}")));
        }
        log.step(
            "switchover.start",
            format!(
                "switchover of {cluster} from {old}{}",
                to.map(|t| format!(" to {t}")).unwrap_or_default()
            ),
        );
        let mut leader = match NodeConn::connect(&old, &self.access).await {
            Ok(c) => c,
            Err(e) => {
                return Err(refuse(
                    &mut log,
                    format!("the leader {old} is unreachable ({e}): use a failover"),
                ))
            }
        };
        let lsnap = leader.snapshot().await?;
        if lsnap.read_only {
            return Err(refuse(&mut log, format!("the leader {old} is read_only")));
        }

        // 1. Replication settings.
        if !lsnap.log_bin {
            return Err(refuse(
                &mut log,
                format!("the leader {old} has log_bin OFF"),
            ));
        }
        let others = self.others(ctl, &old).await;
        let unreachable = others.unreachable.clone();
        let Others {
            mut conns,
            mut snaps,
            ..
        } = others;
        if let Some(to) = to {
            if let Some((_, e)) = unreachable.iter().find(|(a, _)| a == to) {
                return Err(refuse(&mut log, format!("{to} is unreachable: {e}")));
            }
        }
        let candidates: Vec<_> = snaps
            .iter()
            .map(|(addr, snap)| self.candidate(&cs, addr, snap))
            .collect();
        log.step(
            STEP,
            "replication settings verified (leader: log_bin; candidates: log_bin, \
             gtid_strict_mode, log_slave_updates)",
        );

        // 2. Replicas, election.
        let check = self.settings.load_full().switchover_check_replicas;
        let rules = Rules {
            require_io: check,
            require_sql: check,
            max_lag_s: check.then_some(self.settings.load_full().max_lag_s),
            lossless: false,
        };
        let facts = LeaderFacts {
            domain: lsnap.domain_id,
            server_id: Some(lsnap.server_id),
            binlog: GtidPos::parse_lossy(&lsnap.gtid_binlog_pos),
        };
        let election = match elect(&candidates, &facts, &rules, to) {
            Ok(e) => e,
            Err(e) => {
                let mut why = e.to_string();
                for (addr, err) in &unreachable {
                    why.push_str(&format!("; {addr}: unreachable ({err})"));
                }
                return Err(refuse(&mut log, why));
            }
        };
        let winner = election.winner.clone();
        log.step(
            STEP,
            format!(
                "replicas checked; elected {winner}{}",
                if election.excluded.is_empty() {
                    String::new()
                } else {
                    let ex: Vec<String> = election
                        .excluded
                        .iter()
                        .map(|(a, r)| format!("{a}: {r}"))
                        .collect();
                    format!(" (not eligible: {})", ex.join("; "))
                }
            ),
        );

        // 3. Long transactions and queries.
        if let Err(why) = self.wait_for_quiet(&mut leader, &mut log).await? {
            return Err(refuse(&mut log, why));
        }

        // 4. Catch up while the leader still takes writes, so the frozen wait is short.
        let (Some(mut cand), Some(cand_snap)) = (conns.remove(&winner), snaps.remove(&winner))
        else {
            return Err(OrchestratorError::Unexpected(format!(
                "the elected {winner} has no connection"
            )));
        };
        if cand_snap
            .replication
            .as_ref()
            .is_some_and(|r| !r.io_running || !r.sql_running)
        {
            cand.exec("starting replication", "START SLAVE").await?;
        }
        let target = leader.binlog_pos().await?;
        let limit = self.settings.load_full().apply_timeout();
        if !cand.gtid_wait(&target, limit).await? {
            return Err(refuse(
                &mut log,
                format!(
                    "{winner} did not catch up with the leader's {target} within {} ms",
                    limit.as_millis()
                ),
            ));
        }
        log.step(
            STEP,
            format!(
                "{winner} caught up with GTID {}",
                shown_pos(&target.to_string())
            ),
        );

        // 5 - 7. Hooks, hold, freeze, final catch-up, promotion.
        let mut changes = Changes::default();
        self.hook(&mut log, "before_switchover", &old, &winner)
            .await;
        if self.settings.load_full().hooks.vip_remove.is_some() {
            self.hook(&mut log, "vip_remove", &old, &winner).await;
            changes.vip_removed = true;
        }
        self.publish_phase(cluster, &old, ClusterPhase::Held);
        changes.held = true;
        log.step(STEP, "routers told to hold statements");
        let frozen = async {
            self.await_hold(&mut log, cs.epoch).await?;
            let pos = self
                .freeze(&mut leader, &lsnap, &mut log, &mut changes)
                .await?;
            let limit = self.settings.load_full().hold_max() / 2;
            if !cand.gtid_wait(&pos, limit).await? {
                return Err(OrchestratorError::Timeout {
                    addr: winner.clone(),
                    what: format!("reaching the frozen leader's {pos}"),
                    after: limit,
                });
            }
            log.step(
                STEP,
                format!(
                    "{winner} reached the old leader's GTID {}",
                    shown_pos(&pos.to_string())
                ),
            );
            changes.candidate_stopped = true;
            self.begin_change(cluster, "switchover", &old, &winner, cs.epoch)
                .await?;
            cand.promote().await?;
            log.step(
                STEP,
                format!("{winner} promoted: replication removed, read_only=0"),
            );
            Ok(())
        }
        .await;
        if let Err(e) = frozen {
            self.undo(&mut log, &old, leader, &mut cand, &changes, &e)
                .await;
            return Err(e);
        }
        self.hook(&mut log, "vip_add", &old, &winner).await;
        let epoch = self.publish_leader(cluster, &winner, &old, Role::Replica);
        self.announce(&mut log, "switchover.warning").await;
        log.step(
            STEP,
            format!("published {winner} as leader at epoch {epoch}"),
        );

        // 8. Everyone follows the new leader.
        let login = &self.login;
        let winner_ref = &winner;
        let old_max = lsnap.max_connections;
        let old_leader = async {
            leader
                .exec(
                    "turning semi-sync master off",
                    "SET GLOBAL rpl_semi_sync_master_enabled = 0",
                )
                .await?;
            leader.replicate_from(winner_ref, login, true).await?;
            leader
                .exec(
                    "restoring max_connections",
                    &format!("SET GLOBAL max_connections = {old_max}"),
                )
                .await
        };
        let replicas = conns.iter_mut().filter_map(|(addr, conn)| {
            snaps.get(addr)?.replication.as_ref()?;
            Some(async move {
                (
                    addr.clone(),
                    conn.replicate_from(winner_ref, login, false).await,
                )
            })
        });
        let (old_result, results) =
            futures::future::join(old_leader, futures::future::join_all(replicas)).await;
        match old_result {
            Ok(()) => log.step(
                STEP,
                format!("{old} is read-only and replicates from {winner}"),
            ),
            Err(e) => log.step("switchover.warning", format!("{old} not repointed: {e}")),
        }
        for (addr, result) in results {
            match result {
                Ok(()) => log.step(STEP, format!("{addr} replicates from {winner}")),
                Err(e) => log.step("switchover.warning", format!("{addr} not repointed: {e}")),
            }
        }
        if lsnap.semi_sync_master {
            self.semi_sync_on(&mut log, &mut cand).await;
        }
        self.hook(&mut log, "after_switchover", &old, &winner).await;
        log.step(
            "switchover.done",
            format!("{winner} leads {cluster} at epoch {epoch} (was {old})"),
        );
        Ok(log.report(&old, &winner, epoch))
    }

    /// Step 3: the transactions and queries running on the leader now must end within
    /// `switchover_wait_trx_ms`. Those starting meanwhile do not count (routers hold new
    /// statements soon). `Ok(Err(why))` names those still running at the deadline.
    async fn wait_for_quiet(
        &self,
        leader: &mut NodeConn,
        log: &mut OpLog<'_>,
    ) -> Result<Result<(), String>, OrchestratorError> {
        let limit = Duration::from_millis(self.settings.load_full().switchover_wait_trx_ms);
        let deadline = Instant::now() + limit;
        let first = busy(leader, true).await?;
        if first.is_empty() {
            log.step(STEP, "no transactions or queries running on the leader");
            return Ok(Ok(()));
        }
        log.step(
            STEP,
            format!(
                "waiting up to {} ms for: {}",
                limit.as_millis(),
                describe(&first)
            ),
        );
        loop {
            sleep(BUSY_POLL).await;
            let now = busy(leader, true).await?;
            let still: Vec<Busy> = now
                .into_iter()
                .filter(|n| first.iter().any(|b| b.key == n.key))
                .collect();
            if still.is_empty() {
                log.step(STEP, "the leader's running transactions and queries ended");
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                return Ok(Err(format!(
                    "long-running transactions or queries on the leader {} did not end within \
                     switchover_wait_trx_ms = {}: {}",
                    leader.addr,
                    limit.as_millis(),
                    describe(&still)
                )));
            }
        }
    }

    /// Step 6: makes the old leader read-only with nobody left writing; returns its final
    /// `gtid_binlog_pos`.
    async fn freeze(
        &self,
        leader: &mut NodeConn,
        lsnap: &NodeSnapshot,
        log: &mut OpLog<'_>,
        changes: &mut Changes,
    ) -> Result<String, OrchestratorError> {
        // Statements in flight when routers began holding get a moment to complete. Only
        // statements: `INNODB_TRX` is too stale to poll quickly (see BUSY_POLL).
        let drain = Duration::from_millis(self.settings.load_full().switchover_wait_trx_ms)
            .min(self.settings.load_full().hold_max() / 4);
        let deadline = Instant::now() + drain;
        let mut left = busy(leader, false).await?;
        while !left.is_empty() && Instant::now() < deadline {
            sleep(DRAIN_POLL).await;
            left = busy(leader, false).await?;
        }
        if !left.is_empty() {
            log.step(
                STEP,
                format!(
                    "still running after {} ms, to be killed: {}",
                    drain.as_millis(),
                    describe(&left)
                ),
            );
        }
        // FTWRL waits for running statements; a bounded wait turns a stuck one into an undo.
        let lock_wait_s = (self.settings.load_full().hold_max().as_secs() / 4).max(1);
        leader
            .exec(
                "limiting lock waits",
                &format!("SET SESSION lock_wait_timeout = {lock_wait_s}"),
            )
            .await?;
        leader
            .exec_within(
                "FLUSH TABLES WITH READ LOCK",
                "FLUSH TABLES WITH READ LOCK",
                Duration::from_secs(lock_wait_s) + self.access.query_timeout,
            )
            .await?;
        log.step(
            STEP,
            format!("{}: FLUSH TABLES WITH READ LOCK", leader.addr),
        );
        changes.read_only = true;
        leader
            .exec("setting read_only = 1", "SET GLOBAL read_only = 1")
            .await?;
        log.step(STEP, format!("{}: read_only=1", leader.addr));
        changes.max_connections = Some(lsnap.max_connections);
        leader
            .exec("lowering max_connections", "SET GLOBAL max_connections = 1")
            .await?;
        let spare = [self.access.user.as_str(), self.login.user.as_str()];
        let killed = leader.kill_clients(&spare).await?;
        log.step(
            STEP,
            format!(
                "{}: max_connections lowered (was {}), {killed} client connection(s) killed",
                leader.addr, lsnap.max_connections
            ),
        );
        leader.exec("UNLOCK TABLES", "UNLOCK TABLES").await?;
        leader.binlog_pos().await
    }

    /// Puts back what a failed switchover changed before the promotion.
    async fn undo(
        &self,
        log: &mut OpLog<'_>,
        old: &str,
        mut leader: NodeConn,
        cand: &mut NodeConn,
        changes: &Changes,
        cause: &OrchestratorError,
    ) {
        let mut problems = Vec::new();
        if let Err(first) = restore(&mut leader, changes).await {
            // The connection may be what failed: a fresh one (closing ours drops its lock).
            leader.disconnect().await;
            let retried = async {
                let mut fresh = NodeConn::connect(old, &self.access).await?;
                restore(&mut fresh, changes).await
            }
            .await;
            if let Err(e) = retried {
                problems.push(format!("restoring {old} failed: {first}; then: {e}"));
            }
        }
        if changes.candidate_stopped {
            if let Err(e) = cand.replicate_from(old, &self.login, false).await {
                problems.push(format!("restarting replication on {}: {e}", cand.addr));
            }
        }
        if changes.held {
            self.publish_phase(log.cluster, old, ClusterPhase::Serving);
            self.announce(log, "switchover.warning").await;
        }
        if changes.vip_removed {
            self.hook(log, "vip_add", old, old).await;
        }
        let outcome = if problems.is_empty() {
            format!("undone: {old} writable again and still the leader, same epoch")
        } else {
            format!("undo incomplete: {}", problems.join("; "))
        };
        log.step("switchover.undo", format!("{cause}; {outcome}"));
    }
}

/// Makes the old leader writable again with its `max_connections`.
async fn restore(conn: &mut NodeConn, changes: &Changes) -> Result<(), OrchestratorError> {
    // Releases our global read lock, if the failure left it held.
    conn.exec("UNLOCK TABLES", "UNLOCK TABLES").await?;
    if changes.read_only {
        conn.exec("setting read_only = 0", "SET GLOBAL read_only = 0")
            .await?;
    }
    if let Some(max) = changes.max_connections {
        conn.exec(
            "restoring max_connections",
            &format!("SET GLOBAL max_connections = {max}"),
        )
        .await?;
    }
    Ok(())
}

/// `INNODB_TRX`: id, connection, user, seconds open, current statement.
type TrxRow = (String, u64, Option<String>, i64, Option<String>);
/// `PROCESSLIST`: connection, query id, user, ms running, statement.
type QueryRow = (u64, u64, String, f64, Option<String>);

/// Queries running (and with `transactions`, transactions open) on `conn`'s server, other than
/// `conn`'s own and server threads'. Read before anything on the leader changes, so a lost
/// connection is replaced once and the lists read again.
async fn busy(conn: &mut NodeConn, transactions: bool) -> Result<Vec<Busy>, OrchestratorError> {
    match list_busy(conn, transactions).await {
        Err(e) if e.is_lost_connection() => {
            tracing::warn!(node = %conn.addr, error = %e, "connection lost; reconnecting");
            conn.reconnect().await?;
            list_busy(conn, transactions).await
        }
        r => r,
    }
}

async fn list_busy(
    conn: &mut NodeConn,
    transactions: bool,
) -> Result<Vec<Busy>, OrchestratorError> {
    let trx: Vec<TrxRow> = if !transactions {
        Vec::new()
    } else {
        conn.rows(
            "listing open transactions",
            "SELECT t.trx_id, t.trx_mysql_thread_id, p.USER, \
             TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), LEFT(t.trx_query, 80) \
             FROM information_schema.INNODB_TRX t \
             LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
             WHERE t.trx_mysql_thread_id NOT IN (0, CONNECTION_ID())",
        )
        .await?
    };
    let queries: Vec<QueryRow> = conn
        .rows(
            "listing running queries",
            &format!(
                "SELECT ID, QUERY_ID, USER, TIME_MS, LEFT(INFO, 80) \
                 FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                 AND INFO IS NOT NULL AND COMMAND NOT IN ({SERVER_COMMANDS}, 'Sleep') \
                 AND USER NOT IN ({SYSTEM_USERS})"
            ),
        )
        .await?;
    let mut list: Vec<Busy> = trx
        .into_iter()
        .map(|(id, thread, user, secs, query)| Busy {
            key: format!("trx:{id}"),
            what: format!(
                "transaction {id} of connection {thread} ({}) open for {secs} s{}",
                user.unwrap_or_default(),
                query.map(|q| format!(", running: {q}")).unwrap_or_default()
            ),
        })
        .collect();
    list.extend(
        queries
            .into_iter()
            .map(|(id, query_id, user, ms, info)| Busy {
                key: format!("query:{id}:{query_id}"),
                what: format!(
                    "query of connection {id} ({user}) running for {} ms: {}",
                    ms as u64,
                    info.unwrap_or_default()
                ),
            }),
    );
    Ok(list)
}

fn describe(list: &[Busy]) -> String {
    list.iter()
        .map(|b| b.what.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
/// A GTID position for a step's message; an empty one (nothing written yet) said so.
fn shown_pos(pos: &str) -> &str {
    if pos.is_empty() {
        "(none: nothing written yet)"
    } else {
        pos
    }
}
