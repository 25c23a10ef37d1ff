//! Distributed transactions across clusters: transaction ids (xids), the durable commit
//! decision log, recovery of prepared branches a crashed router left behind, and failpoints
//! for crash tests.
//!
//! A transaction in a sharded keyspace runs on each cluster it touches as one XA branch
//! (`XA START`). Committing several branches is two-phase: `XA END` + `XA PREPARE` on every
//! branch, then the decision is written to `switchyard.xa_decisions` on the keyspace's default
//! cluster (a replicated, semi-synchronous leader: the decision survives a failover and any
//! router can read it), then `XA COMMIT` on every branch, then the decision row is deleted.
//! Recovery commits a prepared branch whose decision is logged; for one without a decision it
//! first logs `rollback` (so that a commit decision still in flight can't land afterwards:
//! whichever row is written first is the decision), then rolls it back.

use shard_map::sql::quote;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend::{BackendError, PoolKey, PooledConn};
use crate::context::{RouteError, RouterContext};
use crate::protocol::ServerError;

/// The database and table of the decision log.
pub const DECISION_TABLE: &str = "switchyard.xa_decisions";

const CREATE_LOG: &str = "CREATE DATABASE IF NOT EXISTS switchyard; \
    CREATE TABLE IF NOT EXISTS switchyard.xa_decisions (\
    xid VARBINARY(64) NOT NULL PRIMARY KEY, \
    decision ENUM('commit','rollback') NOT NULL, \
    created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB";

pub use shard_map::failpoint::{failpoint, FAILPOINT_ENV};

/// How this router names its transactions: `sy:<router id>:<incarnation>:<n>`. The router id
/// is stable across restarts (so a restarted router recovers its own branches and no other
/// router's); the incarnation (start time in ms, hex) keeps a restarted router's new xids
/// apart from the old ones it is recovering.
#[derive(Debug)]
pub struct XaIds {
    router: String,
    incarnation: String,
    next: AtomicU64,
    /// Clusters whose decision table is known to exist.
    log_ready: Mutex<BTreeSet<String>>,
    /// Transactions of this process between prepare and their end: recovery leaves them to
    /// their sessions.
    in_flight: Mutex<BTreeSet<String>>,
    /// Some branch was left for recovery: the next recovery pass should not wait for a
    /// leader change.
    pub leftovers: std::sync::atomic::AtomicBool,
}

impl XaIds {
    /// `router_id` is cut to 24 characters of `[A-Za-z0-9._-]` (an xid's gtrid holds 64 bytes).
    pub fn new(router_id: &str) -> XaIds {
        let router: String = router_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(24)
            .collect();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        XaIds {
            router,
            incarnation: format!("{ms:x}"),
            next: AtomicU64::new(1),
            log_ready: Mutex::new(BTreeSet::new()),
            in_flight: Mutex::new(BTreeSet::new()),
            leftovers: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A new global transaction id.
    pub fn next_gtrid(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("sy:{}:{}:{n}", self.router, self.incarnation)
    }

    /// Prefix of every xid this router id made, in any incarnation.
    pub fn router_prefix(&self) -> String {
        format!("sy:{}:", self.router)
    }

    /// Prefix of the xids of this process.
    pub fn own_prefix(&self) -> String {
        format!("sy:{}:{}:", self.router, self.incarnation)
    }

    /// `gtrid` has prepared branches that its session is finishing.
    pub fn prepared(&self, gtrid: &str) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.insert(gtrid.to_string());
        }
    }

    /// The session is done with `gtrid`; `leftover` when recovery must finish it.
    pub fn finished(&self, gtrid: &str, leftover: bool) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(gtrid);
        }
        if leftover {
            self.leftovers.store(true, Ordering::Relaxed);
        }
    }

    fn is_in_flight(&self, gtrid: &str) -> bool {
        self.in_flight
            .lock()
            .map(|s| s.contains(gtrid))
            .unwrap_or(true)
    }
}

/// An xid as SQL: `X'gtrid',X'bqual'` (hex literals: nothing to escape).
pub fn xid_sql(gtrid: &str, bqual: &str) -> String {
    format!("X'{}',X'{}'", hex(gtrid.as_bytes()), hex(bqual.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why an internal connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum XaError {
    #[error("cluster `{0}` has no reachable leader")]
    NoLeader(String),
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// Recovery decided to roll the transaction back before its commit decision landed.
    #[error("the transaction was rolled back by recovery")]
    RolledBack,
}

impl XaError {
    /// The error as a server error for the client.
    pub fn to_server(&self) -> ServerError {
        match self {
            XaError::Backend(BackendError::Server(e)) => e.clone(),
            other => ServerError {
                code: 2013,
                sqlstate: "HY000".into(),
                message: format!("distributed transaction: {other}"),
                raw: None,
            },
        }
    }

    /// Whether the statement may have run (the connection was lost after sending it).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            XaError::Backend(b) => b.is_connection_failure(),
            XaError::NoLeader(_) | XaError::RolledBack => false,
        }
    }
}

/// A connection to `cluster`'s current leader with the router's internal credentials (the
/// orchestrator's user when wired, else `fallback`), waiting up to the hold timeout for a
/// leader.
pub async fn internal_conn(
    ctx: &RouterContext,
    cluster: &str,
    fallback: Option<(&std::sync::Arc<str>, &std::sync::Arc<str>)>,
) -> Result<PooledConn, XaError> {
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(ctx.config.hold_timeout_ms);
    let (user, password) = match (&ctx.internal_user, fallback) {
        (Some((u, p)), _) => (u.clone(), p.clone()),
        (None, Some((u, p))) => (u.clone(), p.clone()),
        (None, None) => return Err(XaError::NoLeader(cluster.to_string())),
    };
    loop {
        match ctx.route_cluster(cluster, false) {
            Ok(route) => {
                let key = PoolKey {
                    addr: route.addr.clone(),
                    user: user.clone(),
                    deprecate_eof: false,
                    found_rows: false,
                };
                match ctx.pools.checkout(&key, &password, None).await {
                    Ok(c) => return Ok(c),
                    Err(e) if e.is_connection_failure() => {
                        ctx.report_failure(&route.addr);
                        if !ctx.wait_topology_change(route.version, deadline).await {
                            return Err(e.into());
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(RouteError::Wait { version, .. }) => {
                if !ctx.wait_topology_change(version, deadline).await {
                    return Err(XaError::NoLeader(cluster.to_string()));
                }
            }
            Err(RouteError::Fatal(_)) => return Err(XaError::NoLeader(cluster.to_string())),
        }
    }
}

/// Creates the decision log on `cluster` unless this process already did.
async fn ensure_log(
    ctx: &RouterContext,
    cluster: &str,
    conn: &mut PooledConn,
) -> Result<(), XaError> {
    if ctx
        .xa
        .log_ready
        .lock()
        .map(|s| s.contains(cluster))
        .unwrap_or(false)
    {
        return Ok(());
    }
    conn.query(CREATE_LOG).await?;
    if let Ok(mut s) = ctx.xa.log_ready.lock() {
        s.insert(cluster.to_string());
    }
    Ok(())
}

/// Writes the commit decision for `gtrid` on `cluster` (the keyspace's default cluster).
/// `Ok` once it is durably there. A lost connection leaves the outcome unknown, so the write
/// is tried again on a fresh connection: a duplicate key then means the first one landed.
pub async fn log_decision(
    ctx: &RouterContext,
    cluster: &str,
    gtrid: &str,
    fallback: Option<(&std::sync::Arc<str>, &std::sync::Arc<str>)>,
) -> Result<(), XaError> {
    let sql = format!(
        "INSERT INTO {DECISION_TABLE} (xid, decision) VALUES (X'{}', 'commit')",
        hex(gtrid.as_bytes())
    );
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = async {
            let mut conn = internal_conn(ctx, cluster, fallback).await?;
            ensure_log(ctx, cluster, &mut conn).await?;
            match conn.query(&sql).await {
                Ok(_) => Ok(()),
                // A row is there already: an earlier attempt's, or recovery's rollback.
                Err(BackendError::Server(e)) if e.code == 1062 => {
                    match decision(&mut conn, gtrid).await?.as_deref() {
                        Some("commit") => Ok(()),
                        _ => Err(XaError::RolledBack),
                    }
                }
                Err(e) => {
                    conn.discard();
                    Err(e.into())
                }
            }
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.outcome_unknown() && attempts < 5 => {
                tracing::warn!(error = %e, gtrid, "decision write lost, trying again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The decision logged for `gtrid`, if any.
async fn decision(conn: &mut PooledConn, gtrid: &str) -> Result<Option<String>, XaError> {
    let out = conn
        .query(&format!(
            "SELECT decision FROM {DECISION_TABLE} WHERE xid = X'{}'",
            hex(gtrid.as_bytes())
        ))
        .await?;
    Ok(out
        .rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// The decision for `gtrid`, logging `rollback` first if there is none.
async fn decide_undecided(conn: &mut PooledConn, gtrid: &str) -> Result<bool, XaError> {
    conn.query(&format!(
        "INSERT IGNORE INTO {DECISION_TABLE} (xid, decision) VALUES (X'{}', 'rollback')",
        hex(gtrid.as_bytes())
    ))
    .await?;
    Ok(decision(conn, gtrid).await?.as_deref() == Some("commit"))
}

/// Deletes the decision for `gtrid` (every branch is committed). Failures are left for
/// recovery to tidy.
pub async fn forget_decision(
    ctx: &RouterContext,
    cluster: &str,
    gtrid: &str,
    fallback: Option<(&std::sync::Arc<str>, &std::sync::Arc<str>)>,
) {
    let sql = format!(
        "DELETE FROM {DECISION_TABLE} WHERE xid = X'{}'",
        hex(gtrid.as_bytes())
    );
    let r = async {
        let mut conn = internal_conn(ctx, cluster, fallback).await?;
        conn.query(&sql).await.map_err(XaError::from)
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, gtrid, "could not delete a commit decision; recovery will");
    }
}

/// What a recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub committed: Vec<String>,
    pub rolled_back: Vec<String>,
    /// Clusters that could not be examined (their branches wait for the next pass).
    pub unreachable: Vec<String>,
}

/// A prepared branch found by `XA RECOVER`.
#[derive(Debug, Clone)]
struct Branch {
    format_id: String,
    gtrid: String,
    bqual: String,
}

/// Resolves the prepared branches this router id left on every cluster of every sharded
/// keyspace (other than this process's own, which their sessions finish): commit where the
/// decision is logged, roll back elsewhere; then deletes the decisions with no branch left.
pub async fn recover(ctx: &RouterContext) -> Recovery {
    let map = ctx.shard_map.load();
    // Decision cluster -> clusters whose branches it decides.
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for spec in map.keyspace_specs() {
        let Some(ks) = map.keyspace(&spec.name).filter(|k| k.is_sharded()) else {
            continue;
        };
        let entry = groups.entry(ks.default_cluster().to_string()).or_default();
        entry.insert(ks.default_cluster().to_string());
        for s in ks.all_shards() {
            entry.insert(s.cluster.clone());
        }
    }
    let mut out = Recovery::default();
    let ours = ctx.xa.router_prefix();
    for (log_cluster, clusters) in groups {
        let decided = async {
            let mut conn = internal_conn(ctx, &log_cluster, None).await?;
            ensure_log(ctx, &log_cluster, &mut conn).await?;
            let rows = conn
                .query(&format!(
                    "SELECT xid, decision FROM {DECISION_TABLE} WHERE xid LIKE {}",
                    quote(&format!("{}%", ours.replace('_', "\\_")))
                ))
                .await?;
            Ok::<_, XaError>(
                rows.rows
                    .into_iter()
                    .filter_map(|r| {
                        let mut r = r.into_iter();
                        let xid = r.next().flatten()?;
                        let commit = r.next().flatten().as_deref() == Some("commit");
                        Some((xid, commit))
                    })
                    .filter(|(x, _)| !ctx.xa.is_in_flight(x))
                    .collect::<BTreeMap<String, bool>>(),
            )
        }
        .await;
        let mut decided = match decided {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(cluster = %log_cluster, error = %e, "XA recovery: decision log unreadable");
                out.unreachable.push(log_cluster.clone());
                continue;
            }
        };
        let mut complete = true;
        for cluster in &clusters {
            let r = async {
                let mut conn = internal_conn(ctx, cluster, None).await?;
                let rows = conn.query("XA RECOVER").await?;
                let mut branches = Vec::new();
                for r in rows.rows {
                    let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                    let (g, data) = (get(1).parse::<usize>().unwrap_or(0), get(3));
                    if !data.starts_with(&ours)
                        || g > data.len()
                        || !data.is_char_boundary(g)
                        || ctx.xa.is_in_flight(&data[..g])
                    {
                        continue;
                    }
                    branches.push(Branch {
                        format_id: get(0),
                        gtrid: data[..g].to_string(),
                        bqual: data[g..].to_string(),
                    });
                }
                let mut done = Vec::new();
                for b in branches {
                    let commit = match decided.get(&b.gtrid) {
                        Some(c) => *c,
                        None => {
                            let mut log = internal_conn(ctx, &log_cluster, None).await?;
                            let c = decide_undecided(&mut log, &b.gtrid).await?;
                            decided.insert(b.gtrid.clone(), c);
                            c
                        }
                    };
                    let sql = format!(
                        "XA {} {},{}",
                        if commit { "COMMIT" } else { "ROLLBACK" },
                        xid_sql(&b.gtrid, &b.bqual),
                        b.format_id
                    );
                    match conn.query(&sql).await {
                        Ok(_) => done.push((commit, format!("{}/{}", b.gtrid, b.bqual))),
                        // Gone already (another router's recovery finished it).
                        Err(BackendError::Server(e)) if e.code == 1397 => {}
                        Err(e) => return Err(XaError::from(e)),
                    }
                }
                Ok::<_, XaError>(done)
            }
            .await;
            match r {
                Ok(done) => {
                    for (commit, x) in done {
                        tracing::info!(xid = %x, commit, "XA recovery resolved a prepared branch");
                        if commit {
                            out.committed.push(x);
                        } else {
                            out.rolled_back.push(x);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(cluster = %cluster, error = %e, "XA recovery: cluster not examined");
                    out.unreachable.push(cluster.clone());
                    complete = false;
                }
            }
        }
        // A decision may be deleted only once no cluster can hold a branch of it.
        if complete && !decided.is_empty() {
            let list = decided
                .keys()
                .map(|x| format!("X'{}'", hex(x.as_bytes())))
                .collect::<Vec<_>>()
                .join(",");
            let r = async {
                let mut conn = internal_conn(ctx, &log_cluster, None).await?;
                conn.query(&format!(
                    "DELETE FROM {DECISION_TABLE} WHERE xid IN ({list})"
                ))
                .await
                .map_err(XaError::from)
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(cluster = %log_cluster, error = %e, "XA recovery: decisions not tidied");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_carry_the_router_and_incarnation() {
        let ids = XaIds::new("127.0.0.1:6033 main");
        let a = ids.next_gtrid();
        let b = ids.next_gtrid();
        assert_ne!(a, b);
        assert!(a.starts_with("sy:127.0.0.1-6033-main:"), "{a}");
        assert!(a.starts_with(&ids.own_prefix()));
        assert!(a.starts_with(&ids.router_prefix()));
        assert!(a.len() <= 64);
        assert_eq!(xid_sql("ab", "c"), "X'6162',X'63'");
    }
}
