//! Rebuilding a node from a copy of another: the way back for a node kept out (it holds
//! transactions the leader lacks) or a replica broken beyond repair. Under the cluster's
//! operation lock, each step an event:
//!
//! 1. refuse the leader, and a source that is not a healthy replica of the leader (or the
//!    leader); without a requested source, take the most up-to-date healthy replica, sparing
//!    the leader, else the leader;
//! 2. empty the node: kept out from here on (read-only, role `Unknown`), semi-sync master off,
//!    client connections killed, replication stopped and removed, its prepared XA
//!    transactions rolled back, every database but the
//!    system ones dropped (a physical copy replaces the whole data directory instead),
//!    `RESET MASTER` (its own binlog and errant GTIDs go);
//! 3. copy: `mariadb-dump` of the source (one consistent snapshot) into the node (see
//!    [`copy`]), or a physical backup of the source into the restore program, which restarts
//!    the node on it (see [`physical`]; the node is then awaited and fenced again);
//!    `rebuild.step` with the bytes copied every few seconds; the node's binlog carries a
//!    mark meanwhile (see [`mark`]); then events disabled as on a replica, the mark removed,
//!    `gtid_slave_pos` set to the snapshot's position, read from the dump (or the backup's
//!    log);
//! 4. replicate from the leader from that position (semi-sync replica side as the other
//!    replicas have it), wait until it receives and applies, no longer kept out.
//!
//! A failure after step 2 began leaves the node kept out: read-only, not replicating.

pub(super) mod copy;
mod physical;
mod source;

use shard_map::sql::quote_ident;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shard_map::Role;
use tokio::time::{sleep, Instant};

use super::node::{NodeConn, NodeSnapshot};
use super::settings::RebuildMethod;
use super::{Event, OpLog, Orchestrator, OrchestratorError, Others};
use crate::gtid::GtidPos;
use crate::monitor::split_host_port;
use source::{choose_source, unfit_source, SourceFacts};

const STEP: &str = "rebuild.step";
/// How often the copy reports the bytes copied so far.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the rebuilt node may take to connect to the leader and start applying.
const REPLICATE_WAIT: Duration = Duration::from_secs(10);
/// `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the leader refuses the position asked for.
const POSITION_REFUSED: &str = "1236";
/// How long a drop waits for a metadata lock a session still holds (s), rather than the whole
/// `rebuild_timeout_s`.
const DROP_LOCK_WAIT_S: u32 = 30;
/// The GTID domain of the mark a node being rebuilt carries in its binlog state (see
/// [`mark`]).
const MARK_DOMAIN: u32 = u32::MAX;
/// Schemas a rebuild never drops (the server's own).
const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "sys", "information_schema", "performance_schema"];

/// The outcome of a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    pub cluster: String,
    /// The rebuilt node.
    pub node: String,
    /// The node copied from.
    pub source: String,
    /// The leader it now replicates from.
    pub leader: String,
    /// Where it started replicating: the position of the source's snapshot.
    pub gtid_slave_pos: String,
    /// How it was copied.
    pub method: RebuildMethod,
    pub bytes_copied: u64,
    /// Whether it had applied what the leader had written when replication started, within
    /// `apply_timeout_ms` (it replicates either way).
    pub caught_up: bool,
    /// Every event of the operation, in order.
    pub steps: Vec<Event>,
    pub duration_ms: u64,
}

/// The binlog state a node carries from the moment it is emptied until its copy is complete:
/// one GTID in a domain nobody writes to, so that until then it holds a transaction no leader
/// has. A node that restarts halfway through a rebuild (which clears `kept_out`) is then kept
/// out again by the rejoin, instead of replicating from the empty position its reset binlog
/// would otherwise give it. `gtid_binlog_state` survives restarts (it is the binlog's).
fn mark(server_id: u32) -> String {
    format!("{MARK_DOMAIN}-{server_id}-1")
}

impl Orchestrator {
    /// Rebuilds `node` of `cluster` from a copy of `source` (or of the best replica, else the
    /// leader), logical or physical (`method`, else the settings'), and makes it a replica of
    /// the leader. See the `rebuild` module.
    pub async fn rebuild(
        &self,
        cluster: &str,
        node: &str,
        source: Option<&str>,
        method: Option<RebuildMethod>,
    ) -> Result<RebuildReport, OrchestratorError> {
        let ctl = self.ctl(cluster)?;
        let nodes = ctl.spec.all_nodes();
        for addr in std::iter::once(node).chain(source) {
            if !nodes.iter().any(|a| a == addr) {
                return Err(OrchestratorError::UnknownNode {
                    cluster: cluster.into(),
                    addr: addr.into(),
                });
            }
        }
        let _guard = self.try_op(cluster)?;
        self.ensure_leader().await?;
        let mut log = OpLog::new(self, cluster);
        let mut emptied = false;
        let result = self
            .rebuild_locked(&mut log, cluster, node, source, method, &mut emptied)
            .await;
        match &result {
            Ok(_) => {}
            Err(e) if !emptied => {
                // Refusals are logged where they are decided; nothing was changed.
                if !matches!(
                    e,
                    OrchestratorError::Refused(_) | OrchestratorError::IsLeader { .. }
                ) {
                    log.step(
                        "rebuild.failed",
                        format!("{node}: {e}; nothing was changed"),
                    );
                }
            }
            Err(e) => {
                let left = self.leave_out(cluster, node).await;
                log.step(
                    "rebuild.failed",
                    format!(
                        "{node}: {e}; it stays kept out ({left}); rebuild it again once the \
                         cause is fixed"
                    ),
                );
            }
        }
        self.settle(cluster);
        let (steps, duration_ms) = log.finish();
        result.map(|mut r| {
            r.steps = steps;
            r.duration_ms = duration_ms;
            r
        })
    }

    async fn rebuild_locked(
        &self,
        log: &mut OpLog<'_>,
        cluster: &str,
        node: &str,
        requested: Option<&str>,
        method: Option<RebuildMethod>,
        emptied: &mut bool,
    ) -> Result<RebuildReport, OrchestratorError> {
        let refuse = |log: &mut OpLog<'_>, why: String| {
            log.step("rebuild.refused", why.clone());
            OrchestratorError::Refused(why)
        };
        let ctl = self.ctl(cluster)?;
        let cs = self.cluster_status(cluster)?;
        let Some(leader) = cs.leader.clone() else {
            return Err(refuse(log, format!("cluster {cluster} has no leader")));
        };
        if node == leader {
            let e = OrchestratorError::IsLeader {
                cluster: cluster.into(),
                addr: node.into(),
            };
            log.step("rebuild.refused", e.to_string());
            return Err(e);
        }
        let mut lconn = match NodeConn::connect(&leader, &self.access).await {
            Ok(c) => c,
            Err(e) => {
                return Err(refuse(
                    log,
                    format!("the leader {leader} is unreachable ({e}): nothing to replicate from"),
                ))
            }
        };
        let lsnap = lconn.snapshot().await?;
        if lsnap.read_only || lsnap.replication.is_some() {
            return Err(refuse(
                log,
                format!("the leader {leader} is read-only or replicates: it does not serve"),
            ));
        }
        let Others {
            mut conns,
            snaps,
            unreachable,
        } = self.others(ctl, &leader).await;
        let Some(mut target) = conns.remove(node) else {
            let why = unreachable
                .iter()
                .find(|(a, _)| a == node)
                .map_or("no connection", |(_, e)| e.as_str());
            return Err(refuse(log, format!("{node} is unreachable: {why}")));
        };
        // Read after the replicas: under writes they may have received beyond what the leader
        // had written when it was first read.
        let leader_binlog = GtidPos::parse_lossy(&lconn.binlog_pos().await?);
        let mut facts: Vec<SourceFacts> = snaps
            .iter()
            .filter(|(addr, _)| addr.as_str() != node)
            .map(|(addr, snap)| SourceFacts {
                addr: addr.clone(),
                unfit: unfit_source(
                    snap,
                    &leader,
                    &leader_binlog,
                    cs.node(addr).is_some_and(|n| n.flags.maintenance),
                ),
                applied: GtidPos::parse_lossy(&snap.gtid_slave_pos),
            })
            .collect();
        facts.extend(unreachable.iter().map(|(addr, e)| SourceFacts {
            addr: addr.clone(),
            unfit: Some(format!("unreachable ({e})")),
            applied: GtidPos::default(),
        }));
        let source = match choose_source(requested, node, &leader, lsnap.domain_id, &facts) {
            Ok(s) => s,
            Err(why) => return Err(refuse(log, why)),
        };
        let tsnap = snaps.get(node).cloned().unwrap_or_default();
        let (shost, sport) = split_host_port(&source)
            .ok_or_else(|| OrchestratorError::BadAddress(source.clone()))?;
        let (thost, tport) =
            split_host_port(node).ok_or_else(|| OrchestratorError::BadAddress(node.into()))?;
        let from = copy::Endpoint {
            host: &shost,
            port: sport,
            user: &self.access.user,
            connect_timeout: self.access.connect_timeout,
            tls: &self.access.tls,
        };
        let into = copy::Endpoint {
            host: &thost,
            port: tport,
            ..from.clone()
        };
        let settings = self.settings.load_full();
        let method = method.unwrap_or(settings.rebuild_method);
        let physical = match method {
            RebuildMethod::Logical => None,
            RebuildMethod::Physical => {
                let names = physical::Names {
                    cluster,
                    node,
                    source: &source,
                    source_endpoint: &from,
                    node_endpoint: &into,
                };
                match physical::programs(&settings, &names) {
                    Ok(p) => Some(p),
                    Err(why) => return Err(refuse(log, why)),
                }
            }
        };
        let physical = physical.as_ref();
        // Semi-sync replica side as the other replicas have it (as the leader expects, when
        // there are none).
        let others_semi: Vec<bool> = snaps
            .iter()
            .filter(|(a, s)| a.as_str() != node && s.replication.is_some())
            .map(|(_, s)| s.semi_sync_slave)
            .collect();
        let semi_sync = if others_semi.is_empty() {
            lsnap.semi_sync_master
        } else {
            others_semi.contains(&true)
        };
        log.step(
            "rebuild.start",
            format!(
                "{} rebuild of {node} from {source}{}, then a replica of {leader}; its data, \
                 binlog and GTIDs ({}) are replaced",
                method.name(),
                if requested.is_some() {
                    String::new()
                } else {
                    let passed: Vec<String> = facts
                        .iter()
                        .filter_map(|f| f.unfit.as_ref().map(|why| format!("{}: {why}", f.addr)))
                        .collect();
                    if passed.is_empty() {
                        " (chosen)".to_owned()
                    } else {
                        format!(" (chosen; not a source: {})", passed.join("; "))
                    }
                },
                if tsnap.gtid_binlog_pos.is_empty() {
                    "none"
                } else {
                    tsnap.gtid_binlog_pos.as_str()
                }
            ),
        );

        let limit = settings.rebuild_timeout();
        let deadline = Instant::now() + limit;
        let mut sconn = if source == leader {
            None
        } else {
            conns.remove(&source)
        };
        let mut attempt = 0;
        let (copied_bytes, position, leader_pos, caught_up) = loop {
            attempt += 1;
            // 2. Empty the node. From here on a failure leaves it kept out.
            *emptied = true;
            if let Some(mut m) = self.memory(cluster) {
                m.kept_out.insert(node.to_owned());
            }
            self.publish_role(cluster, node, Role::Unknown);
            self.fence_node(&mut target, &tsnap).await?;
            // A physical copy replaces the whole data directory: nothing to drop first.
            let dropped = match physical {
                None => self.drop_databases(&mut target, deadline).await?,
                Some(_) => Vec::new(),
            };
            self.mark_node(&mut target, &tsnap).await?;
            log.step(
                STEP,
                format!(
                    "{node} emptied: read-only, replication removed, {}, binlog reset",
                    if physical.is_some() {
                        "its data to be replaced by a physical backup".to_owned()
                    } else if dropped.is_empty() {
                        "no database to drop".to_owned()
                    } else {
                        format!("dropped {}", dropped.join(", "))
                    }
                ),
            );

            // A snapshot taken while an XA transaction is prepared misses it, and its commit
            // after the snapshot then finds nothing to commit: the copy starts when the
            // source has none prepared (bounded; a snapshot that still falls inside one is
            // caught when replication starts, and copied again).
            let xa_free = match sconn.as_mut() {
                Some(c) => wait_xa_free(c, XA_FREE_WAIT).await?,
                None => wait_xa_free(&mut lconn, XA_FREE_WAIT).await?,
            };
            if !xa_free {
                log.step(
                    STEP,
                    format!(
                        "{source} still had prepared XA transactions after {} ms; copying \
                         anyway",
                        XA_FREE_WAIT.as_millis()
                    ),
                );
            }
            // 3. Copy.
            let started = Instant::now();
            let copied = {
                let mut progress = |bytes: u64| {
                    log.step(
                        STEP,
                        format!(
                            "{} copied from {source} to {node} in {} s",
                            bytes_text(bytes),
                            started.elapsed().as_secs()
                        ),
                    );
                };
                let (dump, load) = match physical {
                    Some(p) => (p.backup.clone(), p.restore.clone()),
                    None => (
                        copy::Program::new(copy::DUMP_PROGRAM, copy::dump_args(&from)),
                        copy::Program::new(copy::LOAD_PROGRAM, copy::load_args(&into)),
                    ),
                };
                copy::copy_with(
                    dump,
                    load,
                    &self.access.password,
                    deadline,
                    PROGRESS_EVERY,
                    &mut progress,
                )
                .await
            };
            let copied = copied.map_err(|e| match e {
                copy::CopyError::Timeout => OrchestratorError::Timeout {
                    addr: node.to_owned(),
                    what: format!("emptying it and copying {source} into it"),
                    after: limit,
                },
                e => OrchestratorError::Copy {
                    from: source.clone(),
                    to: node.to_owned(),
                    why: e.to_string(),
                },
            })?;
            let position = match physical {
                None => copied.position,
                Some(_) => physical::backup_position(&copied.from_stderr),
            };
            let Some(position) = position else {
                return Err(OrchestratorError::Copy {
                    from: source.clone(),
                    to: node.to_owned(),
                    why: match physical {
                        None => "the dump did not end with its gtid_slave_pos (cut short?)",
                        Some(_) => {
                            "the backup's log did not name its position (\"GTID of the last \
                             change\"): is the backup program's stderr mariadb-backup's?"
                        }
                    }
                    .to_owned(),
                });
            };
            if physical.is_some() {
                target = self
                    .restarted(node, tsnap.server_id, deadline, limit)
                    .await?;
                log.step(
                    STEP,
                    format!(
                        "{node} answers again after the restore ({} ms)",
                        started.elapsed().as_millis()
                    ),
                );
            }
            let after = target.snapshot().await?;
            let marked = mark(tsnap.server_id);
            // The load went to no binlog: the node's binlog holds only the mark (or nothing,
            // when the restore replaced a binlog kept in the data directory).
            let binlog_ok = after.gtid_binlog_pos == marked
                || (physical.is_some() && after.gtid_binlog_pos.is_empty());
            if !binlog_ok {
                return Err(OrchestratorError::Unexpected(format!(
                    "{node} after the copy: gtid_binlog_pos {:?}, should be {marked:?} (the load \
                     was binlogged?)",
                    after.gtid_binlog_pos
                )));
            }
            let disabled = disable_events(&mut target).await?;
            target
                .exec("removing the rebuild's mark (RESET MASTER)", "RESET MASTER")
                .await?;
            target
                .exec(
                    "setting gtid_slave_pos to the snapshot's position",
                    &format!(
                        "SET GLOBAL gtid_slave_pos = {}",
                        shard_map::sql::quote(&position)
                    ),
                )
                .await?;
            log.step(
                STEP,
                format!(
                    "copied {} from {source} ({}) in {} ms; {node} resumes at {position}{}",
                    bytes_text(copied.bytes),
                    method.name(),
                    started.elapsed().as_millis(),
                    if disabled.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; events disabled on the replica as replication does: {}",
                            disabled.join(", ")
                        )
                    }
                ),
            );

            // 4. Replicate.
            if after.semi_sync_slave != semi_sync {
                target
                    .exec(
                        "setting the semi-sync replica side",
                        &format!(
                            "SET GLOBAL rpl_semi_sync_slave_enabled = {}",
                            u8::from(semi_sync)
                        ),
                    )
                    .await?;
            }
            target.replicate_from(&leader, &self.login, false).await?;
            let replicating = async {
                self.wait_replicating(&mut target, &leader).await?;
                let leader_pos = lconn.binlog_pos().await?;
                let caught_up = target
                    .gtid_wait(&leader_pos, settings.apply_timeout())
                    .await?;
                // Still applying: the first transactions may be what it cannot apply.
                self.wait_replicating(&mut target, &leader).await?;
                Ok::<_, OrchestratorError>((leader_pos, caught_up))
            };
            match replicating.await {
                Err(e) if attempt < COPY_ATTEMPTS && e.to_string().contains(XA_NOT_PREPARED) => {
                    log.step(
                        STEP,
                        format!(
                            "{e}: the snapshot fell inside an XA transaction (prepared before it, \
                             committed after it), which a logical copy cannot carry; copying \
                             again (attempt {} of {COPY_ATTEMPTS})",
                            attempt + 1
                        ),
                    );
                    target.stop_replication().await?;
                    target
                        .exec("removing the replication configuration", "RESET SLAVE ALL")
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
                Ok((leader_pos, caught_up)) => {
                    break (copied.bytes, position, leader_pos, caught_up)
                }
            }
        };
        if let Some(mut m) = self.memory(cluster) {
            m.kept_out.remove(node);
            m.retry_after.remove(node);
        }
        self.publish_role(cluster, node, Role::Replica);
        log.step(
            "rebuild.done",
            format!(
                "{node} rebuilt from {source} ({}) and replicating from {leader} from {position}{}",
                bytes_text(copied_bytes),
                if caught_up {
                    format!(", caught up with {leader_pos}")
                } else {
                    format!(
                        "; not yet at the leader's {leader_pos} after {} ms, still applying",
                        settings.apply_timeout_ms
                    )
                }
            ),
        );
        Ok(RebuildReport {
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            source,
            leader,
            gtid_slave_pos: position,
            method,
            bytes_copied: copied_bytes,
            caught_up,
            steps: Vec::new(),
            duration_ms: 0,
        })
    }

    /// Step 2, first: the node read-only, its clients gone, not replicating, no XA transaction
    /// prepared.
    async fn fence_node(
        &self,
        target: &mut NodeConn,
        snap: &NodeSnapshot,
    ) -> Result<(), OrchestratorError> {
        // Semi-sync master off first: `read_only = 1` would wait for the acknowledgements a
        // former leader's hung commits still wait for (see the rejoin).
        if snap.semi_sync_master {
            target
                .exec(
                    "turning semi-sync master off",
                    "SET GLOBAL rpl_semi_sync_master_enabled = 0",
                )
                .await?;
        }
        target
            .exec("fencing (read_only = 1)", "SET GLOBAL read_only = 1")
            .await?;
        // Clients would hold metadata locks the drops wait for (and read data about to go).
        // The orchestrator's own user is spared: it is the monitor's.
        let spare = [self.access.user.as_str(), self.login.user.as_str()];
        target.kill_clients(&spare).await?;
        target.stop_replication().await?;
        target
            .exec("removing the replication configuration", "RESET SLAVE ALL")
            .await?;
        // Its prepared XA transactions go with its data: their locks would hold the drops
        // back (one the replication of a failed copy attempt prepared, whose commit came
        // after that attempt stopped, or a crashed old leader's). The leader's binlog says
        // what became of each, and the node replays that from its new position.
        for xid in target.prepared_xa().await? {
            target
                .exec(
                    "rolling back a prepared XA transaction of the data being replaced",
                    &format!("XA ROLLBACK {xid}"),
                )
                .await?;
        }
        Ok(())
    }

    /// Step 2 of a logical rebuild: every database but the system ones dropped. Returns them.
    async fn drop_databases(
        &self,
        target: &mut NodeConn,
        deadline: Instant,
    ) -> Result<Vec<String>, OrchestratorError> {
        let mut sql = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME \
                       NOT IN ("
            .to_owned();
        sql.push_str(
            &SYSTEM_SCHEMAS
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        sql.push_str(") ORDER BY SCHEMA_NAME");
        let schemas: Vec<String> = target.rows("listing databases", &sql).await?;
        // Not binlogged (the binlog is reset next anyway); a drop waiting on a session's
        // metadata lock fails in DROP_LOCK_WAIT_S.
        target
            .exec(
                "turning the binlog off",
                &format!(
                    "SET SESSION sql_log_bin = 0, SESSION lock_wait_timeout = {DROP_LOCK_WAIT_S}"
                ),
            )
            .await?;
        for schema in &schemas {
            let left = deadline.saturating_duration_since(Instant::now());
            target
                .exec_within(
                    &format!("dropping database {schema}"),
                    &format!("DROP DATABASE {}", quote_ident(schema)),
                    left.max(Duration::from_millis(1)),
                )
                .await?;
        }
        Ok(schemas)
    }

    /// Step 2, last: its binlog reset, carrying only the rebuild's mark (see [`mark`]).
    async fn mark_node(
        &self,
        target: &mut NodeConn,
        snap: &NodeSnapshot,
    ) -> Result<(), OrchestratorError> {
        target.exec("resetting its binlog", "RESET MASTER").await?;
        // Cleared before the mark: MariaDB refuses a gtid_slave_pos that lacks a domain of the
        // binlog (error 1948), the mark's.
        target
            .exec("clearing gtid_slave_pos", "SET GLOBAL gtid_slave_pos = ''")
            .await?;
        target
            .exec(
                "marking it as being rebuilt",
                &format!(
                    "SET GLOBAL gtid_binlog_state = {}",
                    shard_map::sql::quote(&mark(snap.server_id))
                ),
            )
            .await?;
        Ok(())
    }

    /// After a physical restore: a connection to `node` once it answers again (polled until
    /// `deadline`), checked to be the same server (`server_id`, which its configuration sets,
    /// not its data) and fenced as before the copy: read-only, not replicating.
    async fn restarted(
        &self,
        node: &str,
        server_id: u32,
        deadline: Instant,
        limit: Duration,
    ) -> Result<NodeConn, OrchestratorError> {
        let mut conn = loop {
            match NodeConn::connect(node, &self.access).await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => {
                    return Err(OrchestratorError::Timeout {
                        addr: node.to_owned(),
                        what: format!("its server to answer after the restore (last: {e})"),
                        after: limit,
                    })
                }
                Err(_) => sleep(Duration::from_millis(200)).await,
            }
        };
        conn.exec("fencing (read_only = 1)", "SET GLOBAL read_only = 1")
            .await?;
        let snap = conn.snapshot().await?;
        if snap.server_id != server_id {
            return Err(OrchestratorError::Unexpected(format!(
                "{node} answers with server_id {} after the restore, {server_id} before: \
                 another server is on its address",
                snap.server_id
            )));
        }
        conn.stop_replication().await?;
        conn.exec("removing the replication configuration", "RESET SLAVE ALL")
            .await?;
        Ok(conn)
    }

    /// Waits until the rebuilt node receives from the leader and applies (both threads
    /// running, the leader sending), failing on a replication error or after
    /// [`REPLICATE_WAIT`].
    async fn wait_replicating(
        &self,
        target: &mut NodeConn,
        leader: &str,
    ) -> Result<(), OrchestratorError> {
        let deadline = Instant::now() + REPLICATE_WAIT;
        loop {
            let snap = target.snapshot().await?;
            let rep = snap.replication.as_ref();
            if rep.is_some_and(|r| r.io_running && r.sql_running) && target.receiving().await? {
                return Ok(());
            }
            if let Some(r) = rep {
                let error = r.last_sql_error.as_ref().filter(|_| !r.sql_running).or(r
                    .last_io_error
                    .as_ref()
                    .filter(|e| e.contains(POSITION_REFUSED)));
                if let Some(e) = error {
                    return Err(OrchestratorError::Unexpected(format!(
                        "{}: replication from {leader} failed: {e}",
                        target.addr
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(OrchestratorError::Timeout {
                    addr: target.addr.clone(),
                    what: format!("replicating from the leader {leader}"),
                    after: REPLICATE_WAIT,
                });
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a failed rebuild: the node read-only and not replicating, on a new connection
    /// (the old one may be what failed), kept out. Says what it did or could not do.
    async fn leave_out(&self, cluster: &str, node: &str) -> String {
        if let Some(mut m) = self.memory(cluster) {
            m.kept_out.insert(node.to_owned());
        }
        self.publish_role(cluster, node, Role::Unknown);
        let result = async {
            let mut conn = NodeConn::connect(node, &self.access).await?;
            conn.exec("fencing (read_only = 1)", "SET GLOBAL read_only = 1")
                .await?;
            conn.stop_replication().await?;
            conn.exec("removing the replication configuration", "RESET SLAVE ALL")
                .await?;
            conn.disconnect().await;
            Ok::<_, OrchestratorError>(())
        }
        .await;
        match result {
            Ok(()) => "read-only, not replicating".to_owned(),
            Err(e) => format!("could not make sure it is read-only and not replicating: {e}"),
        }
    }
}

/// Events the copy created enabled (those of a leader source) are set `DISABLE ON SLAVE`, the
/// state replication gives the events it creates on a replica: enabled, they would run on the
/// node, as its own transactions. Returns the events disabled.
async fn disable_events(target: &mut NodeConn) -> Result<Vec<String>, OrchestratorError> {
    let enabled: Vec<(String, String)> = target
        .rows(
            "listing enabled events",
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS \
             WHERE STATUS = 'ENABLED' ORDER BY EVENT_SCHEMA, EVENT_NAME",
        )
        .await?;
    let mut disabled = Vec::new();
    for (schema, name) in enabled {
        target
            .exec(
                "disabling an event on the replica",
                &format!(
                    "ALTER EVENT {}.{} DISABLE ON SLAVE",
                    quote_ident(&schema),
                    quote_ident(&name)
                ),
            )
            .await?;
        disabled.push(format!("{schema}.{name}"));
    }
    Ok(disabled)
}

/// `12.3 MiB`, `512 B`.
fn bytes_text(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// How many times a rebuild copies when its snapshot falls inside an XA transaction.
const COPY_ATTEMPTS: u32 = 3;
/// How long a rebuild waits for its source to have no prepared XA transaction.
const XA_FREE_WAIT: Duration = Duration::from_secs(5);
/// The replica's error on the commit of an XA transaction it never saw prepared.
const XA_NOT_PREPARED: &str = "XAER_NOTA";

/// Waits until `conn`'s server has no prepared XA transaction (`XA RECOVER` empty), up to
/// `limit`; whether it came to that.
async fn wait_xa_free(conn: &mut NodeConn, limit: Duration) -> Result<bool, OrchestratorError> {
    let deadline = Instant::now() + limit;
    loop {
        let prepared: Vec<mysql_async::Row> = conn
            .rows("listing prepared XA transactions", "XA RECOVER")
            .await?;
        if prepared.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_a_gtid_of_a_domain_nobody_writes() {
        let m = GtidPos::parse(&mark(7)).unwrap();
        assert_eq!(m.domains().collect::<Vec<_>>(), vec![u32::MAX]);
        // Whatever the leader has written, the mark is not in it: the rejoin keeps the node out.
        let leader = GtidPos::parse("0-1-1000000,1-2-5").unwrap();
        assert_eq!(m.not_in(&leader).len(), 1);
    }
}
