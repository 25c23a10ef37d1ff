//! A session's distributed transaction in a sharded keyspace: one XA branch per cluster it
//! touches (shard databases on the same cluster share the branch), started with `XA START`
//! on the connection that runs the cluster's first statement; COMMIT is one phase for one
//! branch and two phases with a logged decision for several (see [`crate::xa`]).
//!
//! Every transaction in a sharded keyspace is XA from its start: a branch can't become XA
//! after a plain BEGIN, and a transaction can't know at BEGIN which clusters it will touch.
//! A single branch commits with `XA COMMIT ... ONE PHASE` (no prepare, no decision log).

use std::sync::Arc;

use crate::backend::{BackendError, PooledConn};
use crate::context::Route;
use crate::error::RouterError;
use crate::protocol::ServerError;
use crate::xa::{self as coord, xid_sql};

use super::{Failure, Session, Target};

/// One branch's connection and where it was routed.
type Branch = (PooledConn, Option<Route>);

/// A distributed transaction of one session.
#[derive(Debug)]
pub(crate) struct XaTxn {
    pub gtrid: String,
    /// The keyspace's default cluster: where the commit decision is logged.
    pub log_cluster: String,
    /// Branches other than the one in `Session::pinned`.
    pub parked: Vec<Branch>,
    /// Clusters with a branch, in the order they joined.
    pub clusters: Vec<String>,
    /// Why the transaction was rolled back under the client (a lost branch, a failed
    /// multi-shard statement): statements fail until the client ends it.
    pub failed: Option<String>,
    /// Started by the router for one multi-shard statement outside a transaction.
    pub implicit: bool,
}

impl XaTxn {
    pub fn new(gtrid: String, log_cluster: String) -> XaTxn {
        XaTxn {
            gtrid,
            log_cluster,
            parked: Vec::new(),
            clusters: Vec::new(),
            failed: None,
            implicit: false,
        }
    }

    fn xid(&self, cluster: &str) -> String {
        xid_sql(&self.gtrid, cluster)
    }
}

/// Whether a client's BEGIN can become `XA START` (options such as READ ONLY or WITH
/// CONSISTENT SNAPSHOT can't be given to XA START: such transactions stay plain and on one
/// cluster).
pub(crate) fn xa_capable_begin(sql: &str) -> bool {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["BEGIN"]
            | ["BEGIN", "WORK"]
            | ["START", "TRANSACTION"]
            | ["START", "TRANSACTION", "READ", "WRITE"]
    )
}

impl Session {
    /// Starts a distributed transaction for a client BEGIN (deferred: branches start with
    /// the statements that need them).
    pub(super) fn xa_begin(&mut self) {
        let map = self.ctx.shard_map.load();
        let log_cluster = map.cluster_for_db(self.state.db.as_deref()).to_string();
        self.xa = Some(Box::new(XaTxn::new(self.ctx.xa.next_gtrid(), log_cluster)));
    }

    /// Whether the session's `autocommit` is off.
    pub(super) fn autocommit_off(&self) -> bool {
        // Recorded as the statement that replays it: SET SESSION `autocommit` = <value>.
        self.state.vars.iter().any(|(n, sql)| {
            let value = sql.rsplit('=').next().unwrap_or("").trim();
            n.eq_ignore_ascii_case("autocommit")
                && matches!(
                    value.trim_matches('\'').to_ascii_uppercase().as_str(),
                    "0" | "OFF" | "FALSE"
                )
        })
    }

    /// The `XA START` for the deferred BEGIN on `cluster`, when the transaction is XA.
    pub(super) fn xa_start_sql(&mut self, cluster: &str) -> Option<String> {
        let xa = self.xa.as_mut()?;
        xa.clusters.push(cluster.to_string());
        Some(format!("XA START {}", xa.xid(cluster)))
    }

    /// Makes `cluster`'s branch the session's current connection, starting it if the
    /// transaction has none there yet. Nothing to do outside a distributed transaction or
    /// before its first branch (the deferred BEGIN starts that one).
    pub(super) async fn xa_use_cluster(&mut self, cluster: &str) -> Result<(), Failure> {
        let Some(xa) = self.xa.as_mut() else {
            return Ok(());
        };
        if let Some(why) = &xa.failed {
            return Err(RouterError::XaRolledBack(why.clone()).into());
        }
        if xa.clusters.is_empty() && self.pending_begin.is_some() {
            return Ok(());
        }
        if self
            .pinned_route
            .as_ref()
            .is_some_and(|r| *r.cluster == *cluster)
        {
            return Ok(());
        }
        if let Some(c) = self.pinned.take() {
            xa.parked.push((c, self.pinned_route.take()));
        }
        if let Some(i) = xa
            .parked
            .iter()
            .position(|(_, r)| r.as_ref().is_some_and(|r| *r.cluster == *cluster))
        {
            let (c, r) = xa.parked.remove(i);
            self.pinned = Some(c);
            self.pinned_route = r;
            return Ok(());
        }
        let xid = xa.xid(cluster);
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let (mut conn, route) = self
            .route_and_checkout(Target::Cluster(cluster), deadline)
            .await?;
        let started = async {
            self.sync(&mut conn, false).await?;
            conn.query(&format!("XA START {xid}"))
                .await
                .map_err(RouterError::from)
        }
        .await;
        if let Err(e) = started {
            conn.discard();
            return Err(e.into());
        }
        if let Some(xa) = self.xa.as_mut() {
            xa.clusters.push(cluster.to_string());
        }
        self.keep(conn, route);
        Ok(())
    }

    /// Every branch's connection, out of the session.
    fn xa_take_branches(&mut self) -> Vec<(String, Branch)> {
        let mut out = Vec::new();
        let Some(xa) = self.xa.as_mut() else {
            return out;
        };
        let mut all: Vec<Branch> = xa.parked.drain(..).collect();
        if let Some(c) = self.pinned.take() {
            all.push((c, self.pinned_route.take()));
        }
        for (c, r) in all {
            let cluster = r
                .as_ref()
                .map(|r| r.cluster.to_string())
                .unwrap_or_default();
            out.push((cluster, (c, r)));
        }
        out
    }

    /// A branch was lost (its connection died or its leader changed): the others are rolled
    /// back by closing their connections (an unprepared branch dies with its connection).
    pub(super) fn xa_lost(&mut self, why: &str) {
        let branches = self.xa_take_branches();
        for (_, (c, _)) in branches {
            c.discard();
        }
        if let Some(xa) = self.xa.as_mut() {
            xa.clusters.clear();
            if !xa.implicit {
                xa.failed = Some(why.to_string());
            }
        }
    }

    /// Rolls every branch back (not prepared yet) and keeps the transaction failed with
    /// `why` until the client ends it (or ends it now when the router started it).
    pub(super) async fn xa_abort(&mut self, why: &str) {
        let branches = self.xa_take_branches();
        let gtrid = self
            .xa
            .as_ref()
            .map(|x| x.gtrid.clone())
            .unwrap_or_default();
        for (cluster, (mut c, _)) in branches {
            let xid = xid_sql(&gtrid, &cluster);
            let _ = c.query(&format!("XA END {xid}")).await;
            if c.query(&format!("XA ROLLBACK {xid}")).await.is_err() {
                c.discard();
            }
        }
        match self.xa.as_mut() {
            Some(xa) if !xa.implicit => {
                xa.clusters.clear();
                xa.failed = Some(why.to_string());
            }
            _ => self.xa = None,
        }
    }

    /// The client's COMMIT (`commit`) or ROLLBACK of a distributed transaction.
    pub(super) async fn xa_end(&mut self, commit: bool, seq: u8) -> Result<(), Failure> {
        self.pending_begin = None;
        let failed = self.xa.as_ref().and_then(|x| x.failed.clone());
        let result = if commit && failed.is_some() {
            self.xa_abort("").await;
            Err(RouterError::XaRolledBack(failed.unwrap_or_default()).into())
        } else if commit {
            self.xa_commit().await
        } else {
            self.xa_abort("").await;
            Ok(())
        };
        self.xa = None;
        self.release_if_free();
        result?;
        self.reply_ok(seq).await
    }

    /// Commits every branch: one phase for one, else prepare, log the decision, commit.
    pub(super) async fn xa_commit(&mut self) -> Result<(), Failure> {
        let Some(xa) = self.xa.as_ref() else {
            return Ok(());
        };
        let (gtrid, log_cluster) = (xa.gtrid.clone(), xa.log_cluster.clone());
        let mut branches = self.xa_take_branches();
        if branches.is_empty() {
            return Ok(());
        }
        if let Some((cluster, _)) = branches
            .iter()
            .find(|(_, (_, r))| r.as_ref().is_some_and(|r| !self.ctx.route_current(r)))
        {
            let e = RouterError::LeaderChanged {
                cluster: cluster.clone(),
            };
            for (_, (c, _)) in branches {
                c.discard();
            }
            return Err(e.into());
        }
        if branches.len() == 1 {
            let (cluster, (mut c, r)) = branches.pop().expect("one branch");
            let xid = xid_sql(&gtrid, &cluster);
            let r2 = c
                .query(&format!("XA END {xid}; XA COMMIT {xid} ONE PHASE"))
                .await;
            return match r2 {
                Ok(_) => {
                    self.keep(c, r);
                    Ok(())
                }
                Err(e) => {
                    let lost = e.is_connection_failure();
                    c.discard();
                    if lost {
                        Err(RouterError::LostDuringQuery {
                            addr: format!("cluster {cluster} during COMMIT"),
                        }
                        .into())
                    } else {
                        Err(RouterError::Backend(e).into())
                    }
                }
            };
        }
        // Phase one, on every branch at once. Registered first, so that a recovery pass of
        // this process never takes these branches for leftovers.
        self.ctx.xa.prepared(&gtrid);
        let prepared = futures::future::join_all(branches.iter_mut().map(|(cluster, (c, _))| {
            let xid = xid_sql(&gtrid, cluster);
            async move {
                c.query(&format!("XA END {xid}; XA PREPARE {xid}"))
                    .await
                    .map(|_| ())
            }
        }))
        .await;
        if let Some(e) = prepared.into_iter().find_map(|r| r.err()) {
            self.xa_rollback_prepared(&gtrid, branches).await;
            return Err(RouterError::Backend(e).into());
        }
        coord::failpoint("xa-after-prepare");
        let fallback = (&self.user.name, &self.user.password);
        if let Err(e) = coord::log_decision(&self.ctx, &log_cluster, &gtrid, Some(fallback)).await {
            if e.outcome_unknown() {
                // Perhaps logged: the branches stay prepared for recovery to decide.
                for (_, (c, _)) in branches {
                    c.discard();
                }
                self.ctx.xa.finished(&gtrid, true);
                return Err(RouterError::XaOutcomeUnknown(e.to_string()).into());
            }
            self.xa_rollback_prepared(&gtrid, branches).await;
            return Err(match e {
                coord::XaError::RolledBack => RouterError::XaRolledBack(e.to_string()),
                e => RouterError::Backend(BackendError::Server(e.to_server())),
            }
            .into());
        }
        coord::failpoint("xa-after-decision");
        // Decided: every branch must commit, now or by recovery.
        let done = futures::future::join_all(branches.into_iter().map(|(cluster, (c, _))| {
            let ctx = self.ctx.clone();
            let gtrid = gtrid.clone();
            let user = (self.user.name.clone(), self.user.password.clone());
            async move { finish_branch(&ctx, c, &cluster, &gtrid, true, &user).await }
        }))
        .await;
        if done.iter().all(|ok| *ok) {
            self.ctx.xa.finished(&gtrid, false);
            // The client need not wait for the tidying (recovery deletes what is left).
            let ctx = self.ctx.clone();
            let user = (self.user.name.clone(), self.user.password.clone());
            tokio::spawn(async move {
                coord::forget_decision(&ctx, &log_cluster, &gtrid, Some((&user.0, &user.1))).await;
            });
        } else {
            self.ctx.xa.finished(&gtrid, true);
        }
        Ok(())
    }

    /// Rolls back branches of which some may be prepared.
    async fn xa_rollback_prepared(&mut self, gtrid: &str, branches: Vec<(String, Branch)>) {
        let user = (self.user.name.clone(), self.user.password.clone());
        let done = futures::future::join_all(branches.into_iter().map(|(cluster, (mut c, _))| {
            let ctx = self.ctx.clone();
            let user = user.clone();
            async move {
                let xid = xid_sql(gtrid, &cluster);
                let _ = c.query(&format!("XA END {xid}")).await;
                finish_branch(&ctx, c, &cluster, gtrid, false, &user).await
            }
        }))
        .await;
        self.ctx.xa.finished(gtrid, !done.iter().all(|ok| *ok));
    }
}

/// Commits (or rolls back) one prepared branch: on its own connection, else again and again
/// on a fresh connection to the cluster's current leader (the branch outlives its
/// connection once prepared) until the hold timeout; true when done. What is left is for
/// recovery.
async fn finish_branch(
    ctx: &Arc<crate::RouterContext>,
    mut conn: PooledConn,
    cluster: &str,
    gtrid: &str,
    commit: bool,
    user: &(Arc<str>, Arc<str>),
) -> bool {
    let xid = xid_sql(gtrid, cluster);
    let sql = format!("XA {} {xid}", if commit { "COMMIT" } else { "ROLLBACK" });
    match conn.query(&sql).await {
        Ok(_) => return true,
        // Not there: a rollback of a branch that was never prepared (it died with its
        // connection or was rolled back by the server).
        Err(BackendError::Server(e)) if e.code == 1397 && !commit => return true,
        Err(e) => {
            tracing::warn!(%cluster, gtrid, error = %e, commit, "finishing an XA branch failed; trying again");
            conn.discard();
        }
    }
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(ctx.config.hold_timeout_ms.max(1000) * 2);
    // A branch whose connection just died may not be detached yet: "unknown xid" counts as
    // finished only when seen twice.
    let mut not_found = 0;
    while tokio::time::Instant::now() < deadline {
        let r = async {
            let mut c = coord::internal_conn(ctx, cluster, Some((&user.0, &user.1))).await?;
            c.query(&sql).await.map_err(coord::XaError::from)
        }
        .await;
        match r {
            Ok(_) => return true,
            // XAER_NOTA: nothing left under this xid (finished already).
            Err(coord::XaError::Backend(BackendError::Server(ServerError {
                code: 1397, ..
            }))) if not_found > 0 || !commit => return true,
            Err(coord::XaError::Backend(BackendError::Server(ServerError {
                code: 1397, ..
            }))) => {
                not_found += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(%cluster, gtrid, error = %e, "finishing an XA branch failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    false
}
