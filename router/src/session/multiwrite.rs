//! Writes over several shards inside a session: each part on its cluster's branch of the
//! distributed transaction (or, for one part outside a transaction, on its own), a savepoint
//! per branch so that a failed statement inside a transaction is undone everywhere, and one
//! OK for the client with the rows summed.

use crate::context::RouterMetrics;
use crate::error::RouterError;
use crate::protocol::{ok_payload, StatusFlags};

use super::{Failure, Session, Target};

/// The savepoint a multi-shard statement inside a transaction sets on each branch it touches.
const STMT_SAVEPOINT: &str = "switchyard_stmt";

/// The sum of a multi-shard write's results.
#[derive(Debug, Default)]
struct Summary {
    affected: u64,
    first_affected: Option<u64>,
    last_insert_id: u64,
    warnings: u16,
}

impl Session {
    /// A write over several shards (`parts`: each shard and its text), atomically: inside the
    /// client's transaction, or as a distributed transaction of its own (a single part
    /// outside a distributed transaction just runs). One OK in reply, with the affected rows
    /// summed (one copy's for a reference table) and `first_id`, when given, as the last
    /// insert id.
    pub(super) async fn xa_write(
        &mut self,
        parts: Vec<(shard_map::ShardTarget, String)>,
        copies: bool,
        seq: u8,
        first_id: Option<u64>,
    ) -> Result<(), Failure> {
        let plain = self.xa.is_none() && parts.len() == 1;
        if self.xa.is_none() && !plain {
            if self.pinned.is_some() || self.pending_begin.is_some() {
                return Err(RouterError::NotSupported(
                    "writes over several shards inside a transaction that is not distributed \
                     (START TRANSACTION READ ONLY / WITH CONSISTENT SNAPSHOT) or a locked session"
                        .into(),
                )
                .into());
            }
            self.xa_begin();
            if let Some(xa) = self.xa.as_mut() {
                xa.implicit = true;
            }
        }
        if let Some(why) = self.xa.as_ref().and_then(|x| x.failed.clone()) {
            return Err(RouterError::XaRolledBack(why).into());
        }
        // Inside the client's transaction, a savepoint on each branch the statement touches
        // lets a failure undo just the statement, as a server does.
        let explicit = !plain && self.xa.as_ref().is_some_and(|x| !x.implicit);
        let mut touched: Vec<String> = Vec::new();
        let mut sum = Summary::default();
        let mut failure: Option<Failure> = None;
        for (target, sql) in &parts {
            let saved = self.state.db.replace(target.database.clone());
            let savepoint = explicit && !touched.contains(&target.cluster);
            let r = if savepoint {
                touched.push(target.cluster.clone());
                self.xa_run_part(
                    &target.cluster,
                    &format!("SAVEPOINT {STMT_SAVEPOINT}; {sql}"),
                )
                .await
            } else {
                self.xa_run_part(&target.cluster, sql).await
            };
            self.state.db = saved;
            match r {
                Ok(out) => {
                    for ok in out.oks.iter().skip(usize::from(savepoint)) {
                        if sum.first_affected.is_none() {
                            sum.first_affected = Some(ok.affected_rows);
                        }
                        sum.affected += ok.affected_rows;
                        sum.warnings = sum.warnings.saturating_add(ok.warnings);
                        if sum.last_insert_id == 0 {
                            sum.last_insert_id = ok.last_insert_id;
                        }
                    }
                }
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }
        let implicit = self.xa.as_ref().is_some_and(|x| x.implicit);
        if plain {
            self.release_if_free();
            if let Some(f) = failure {
                return Err(f);
            }
        }
        if let Some(f) = failure {
            let branches_kept = self.xa.as_ref().is_some_and(|x| !x.clusters.is_empty());
            if explicit && branches_kept && self.xa_rollback_statement(&touched).await {
                self.release_if_free();
                return Err(f);
            }
            let why = match &f {
                Failure::Reply(e, _) => e.to_client().message,
                Failure::ClientGone => "the client left".into(),
            };
            self.xa_abort(&format!("a statement over several shards failed: {why}"))
                .await;
            self.release_if_free();
            return Err(f);
        }
        if implicit {
            let r = self.xa_commit().await;
            self.xa = None;
            self.release_if_free();
            r?;
        }
        if let Some(id) = first_id {
            sum.last_insert_id = id;
        }
        if sum.last_insert_id != 0 {
            self.state.last_insert_id = sum.last_insert_id;
        }
        let affected = if copies {
            sum.first_affected.unwrap_or(0)
        } else {
            sum.affected
        };
        let mut status = StatusFlags::empty();
        if !self.autocommit_off() {
            status |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.xa.is_some() || self.pinned.as_ref().is_some_and(|c| c.in_transaction()) {
            status |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        let header = 0;
        self.output.push(
            seq,
            &ok_payload(affected, sum.last_insert_id, status, sum.warnings, header),
        );
        self.output.flush().await.map_err(|_| Failure::ClientGone)
    }

    /// Undoes a failed multi-shard statement on every branch it touched (back to the savepoint
    /// taken before it); false when that is not possible (a deadlock rolled a branch back).
    async fn xa_rollback_statement(&mut self, touched: &[String]) -> bool {
        for cluster in touched {
            if self.xa_use_cluster(cluster).await.is_err() {
                return false;
            }
            let Some(conn) = self.pinned.as_mut() else {
                return false;
            };
            if conn
                .query(&format!("ROLLBACK TO SAVEPOINT {STMT_SAVEPOINT}"))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Runs one part of a multi-shard write on its cluster's branch (the session's database
    /// is the part's shard database meanwhile).
    async fn xa_run_part(
        &mut self,
        cluster: &str,
        sql: &str,
    ) -> Result<crate::backend::conn::QueryOutput, Failure> {
        if self.xa.as_ref().is_some_and(|x| x.clusters.is_empty()) {
            // The first branch: started here rather than by a deferred BEGIN.
            self.pending_begin = None;
        }
        self.xa_use_cluster(cluster).await?;
        if self
            .pinned_route
            .as_ref()
            .is_some_and(|r| *r.cluster != *cluster)
        {
            return Err(RouterError::NotSupported(format!(
                "a locked session or non-distributed transaction spanning clusters `{}` and \
                 `{cluster}`",
                self.pinned_route
                    .as_ref()
                    .map(|r| r.cluster.to_string())
                    .unwrap_or_default()
            ))
            .into());
        }
        let (mut conn, route) = match self.pinned.take() {
            Some(c) => (c, self.pinned_route.take()),
            None => {
                let deadline = tokio::time::Instant::now()
                    + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
                let (mut conn, route) = self
                    .route_and_checkout(Target::Cluster(cluster), deadline)
                    .await?;
                if let Some(begin) = self.pending_begin.take() {
                    // A plain (not distributed) transaction's deferred BEGIN starts here.
                    let started = async {
                        self.sync(&mut conn, false).await?;
                        conn.query(&begin).await.map_err(RouterError::from)
                    }
                    .await;
                    if let Err(e) = started {
                        conn.discard();
                        return Err(e.into());
                    }
                }
                (conn, route)
            }
        };
        if let Some(r) = route.as_ref().filter(|r| !self.ctx.route_current(r)) {
            let cluster = r.cluster.to_string();
            conn.discard();
            self.xa_lost("a leader changed");
            return Err(RouterError::LeaderChanged { cluster }.into());
        }
        let r = async {
            self.sync(&mut conn, false).await?;
            conn.query(sql).await.map_err(RouterError::from)
        }
        .await;
        match r {
            Ok(out) => {
                self.keep(conn, route);
                Ok(out)
            }
            Err(RouterError::Backend(b)) if b.is_connection_failure() => {
                conn.discard();
                RouterMetrics::inc(&self.ctx.metrics.errors);
                self.xa_lost("a branch's connection was lost");
                Err(RouterError::LostDuringQuery {
                    addr: format!("cluster {cluster}"),
                }
                .into())
            }
            Err(e) => {
                self.keep(conn, route);
                Err(e.into())
            }
        }
    }
}
