//! Write traffic through the router with a ledger of what each client was told, and the
//! checks every failure scenario ends with: no acknowledged write lost, no row nobody was
//! told about, replicas converged, a returning old leader fenced. Each check returns what it
//! saw, or why it failed; the tests assert on the same functions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use orchestrator::LocalClusters;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::App;

/// The writers' table, created through the router by [`setup`].
pub const TABLE: &str = "fo.t";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `f` every 10 ms until it gives a value, or `limit` passes (`None`; `f` is tried
/// once more at the deadline).
pub async fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the writers saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids whose INSERT returned OK: when it was sent and when acknowledged.
    pub acked: Mutex<BTreeMap<u64, (Instant, Instant)>>,
    /// Ids whose INSERT failed with a connection error: they may or may not have committed.
    pub uncertain: Mutex<BTreeSet<u64>>,
    /// Client errors by code (0: the connection to the router itself).
    pub errors: Mutex<Vec<(u16, String)>>,
}

impl Ledger {
    pub fn acked_count(&self) -> usize {
        lock(&self.acked).len()
    }

    pub fn acked_ids(&self) -> BTreeSet<u64> {
        lock(&self.acked).keys().copied().collect()
    }

    pub fn uncertain_ids(&self) -> BTreeSet<u64> {
        lock(&self.uncertain).clone()
    }

    pub fn error_count(&self) -> usize {
        lock(&self.errors).len()
    }

    /// The error codes seen, in order.
    pub fn error_codes(&self) -> Vec<u16> {
        lock(&self.errors).iter().map(|e| e.0).collect()
    }

    /// How long after `t` the first write was acknowledged.
    pub fn first_ack_after(&self, t: Instant) -> Option<Duration> {
        lock(&self.acked)
            .values()
            .map(|(_, acked)| *acked)
            .filter(|at| *at > t)
            .min()
            .map(|at| at - t)
    }

    /// How long after `t` the first write sent after `t` was acknowledged (one that could
    /// not have been answered before `t`).
    pub fn first_sent_after(&self, t: Instant) -> Option<Duration> {
        lock(&self.acked)
            .values()
            .filter(|(sent, _)| *sent > t)
            .map(|(_, acked)| *acked)
            .min()
            .map(|at| at - t)
    }

    /// The longest time between two consecutive acknowledgements from `from` on: the pause
    /// the clients saw.
    pub fn longest_pause(&self, from: Instant) -> Duration {
        let mut acks: Vec<Instant> = lock(&self.acked)
            .values()
            .map(|(_, acked)| *acked)
            .filter(|t| *t >= from)
            .collect();
        acks.sort();
        acks.windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Waits until `more` writes were acknowledged beyond those acknowledged now.
    pub async fn wait_for_more(&self, more: usize, limit: Duration) -> Result<(), String> {
        let base = self.acked_count();
        let enough = poll_until(limit, || (self.acked_count() >= base + more).then_some(())).await;
        enough.ok_or_else(|| {
            format!(
                "{} of {more} more writes acknowledged within {limit:?} (last error: {})",
                self.acked_count() - base,
                lock(&self.errors)
                    .last()
                    .map_or("none".into(), |(c, m)| format!("{c} {m}"))
            )
        })
    }
}

/// Writers inserting unique ids into [`TABLE`] through the router until stopped.
pub struct Writers {
    pub ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    /// `count` writers connecting with `opts`.
    pub fn start(opts: &Opts, count: u64) -> Writers {
        Self::start_at(opts, count, 0)
    }

    /// Like [`Writers::start`], the ids offset by `offset` (so that writers started later do
    /// not reuse the ids of earlier ones).
    pub fn start_at(opts: &Opts, count: u64, offset: u64) -> Writers {
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|w| {
                tokio::spawn(writer(
                    opts.clone(),
                    offset + (w + 1) * 1_000_000,
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Writers {
            ledger,
            stop,
            tasks,
        }
    }

    /// Stops the writers; one still waiting on its statement after `limit` is an error (the
    /// router left it hanging).
    pub async fn stop(mut self, limit: Duration) -> Result<Arc<Ledger>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        for t in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "a writer still waits on its statement {limit:?} after being told to \
                         stop: the router left it hanging"
                    ))
                }
            }
        }
        Ok(self.ledger.clone())
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Inserts unique ids from `base` through the router until `stop`, reconnecting after a lost
/// connection.
pub async fn writer(opts: Opts, base: u64, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Conn> = None;
    let mut next = base;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::new(opts.clone()).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    lock(&ledger.errors).push((0, format!("connect: {e}")));
                    // Not a synchronisation: a pause between reconnects while the router
                    // has no leader, so that a writer does not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let id = next;
        next += 1;
        let sent = Instant::now();
        let sql = format!("INSERT INTO {TABLE} (id, v) VALUES (?, ?)");
        match c.exec_drop(sql, (id, id * 7)).await {
            Ok(()) => {
                lock(&ledger.acked).insert(id, (sent, Instant::now()));
            }
            Err(mysql_async::Error::Server(e)) => {
                lock(&ledger.errors).push((e.code, e.message.clone()));
                // The statement was cut off on its way: it may have committed.
                if matches!(e.code, 2013 | 1317 | 1927) {
                    lock(&ledger.uncertain).insert(id);
                }
            }
            Err(e) => {
                // The connection to the router itself broke: outcome unknown.
                lock(&ledger.uncertain).insert(id);
                lock(&ledger.errors).push((0, e.to_string()));
                conn = None;
            }
        }
    }
}

/// A running switchyard over local clusters, as the checks see it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub app: &'a App,
    pub local: &'a LocalClusters,
}

/// `host:port`'s port (0 when there is none).
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn sql_err(what: &str) -> impl Fn(mysql_async::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Target<'_> {
    /// Connection options for the router as the application user.
    pub fn router_opts(&self) -> Opts {
        let spec = self.local.spec();
        loopback(self.app.router_port(), &spec.app_user, &spec.app_password)
    }

    /// Connection options for a node as the orchestrator's (admin) user.
    pub fn admin_opts(&self, addr: &str) -> Opts {
        let spec = self.local.spec();
        loopback(port_of(addr), &spec.admin_user, &spec.admin_password)
    }

    /// The cluster's leader and epoch as published.
    pub fn leader_of(&self, cluster: &str) -> (String, u64) {
        let t = self.app.topology.load();
        t.cluster(cluster)
            .map(|c| (c.leader.clone().unwrap_or_default(), c.epoch))
            .unwrap_or_default()
    }

    /// Every node of a cluster.
    pub fn nodes(&self, cluster: &str) -> Vec<String> {
        self.local
            .cluster(cluster)
            .map(|c| c.nodes.iter().map(|n| n.addr.clone()).collect())
            .unwrap_or_default()
    }

    /// Waits for a leader other than `old` with an epoch above `old_epoch`.
    pub async fn new_leader(
        &self,
        cluster: &str,
        old: &str,
        old_epoch: u64,
        limit: Duration,
    ) -> Result<(String, u64), String> {
        poll_until(limit, || {
            let (l, e) = self.leader_of(cluster);
            (e > old_epoch && l != old).then_some((l, e))
        })
        .await
        .ok_or_else(|| format!("no new leader of {cluster} within {limit:?}"))
    }

    /// Every acknowledged write is on `leader`, and every row there was acknowledged or left
    /// uncertain to its client. Returns the rows present.
    pub async fn no_write_lost(
        &self,
        leader: &str,
        ledger: &Ledger,
    ) -> Result<BTreeSet<u64>, String> {
        self.none_lost(leader, &[ledger]).await
    }

    /// [`Target::no_write_lost`] for the writers of several ledgers (writers stopped and
    /// started again).
    pub async fn none_lost(
        &self,
        leader: &str,
        ledgers: &[&Ledger],
    ) -> Result<BTreeSet<u64>, String> {
        let mut conn = Conn::new(self.admin_opts(leader))
            .await
            .map_err(sql_err("connecting to the leader"))?;
        let present = ids_on(&mut conn).await?;
        let acked: BTreeSet<u64> = ledgers.iter().flat_map(|l| l.acked_ids()).collect();
        let lost: Vec<_> = acked.difference(&present).collect();
        if !lost.is_empty() {
            return Err(format!("acknowledged writes lost: {lost:?}"));
        }
        let uncertain: BTreeSet<u64> = ledgers.iter().flat_map(|l| l.uncertain_ids()).collect();
        let phantom: Vec<_> = present
            .difference(&acked)
            .filter(|id| !uncertain.contains(id))
            .collect();
        if !phantom.is_empty() {
            return Err(format!("rows nobody was told about: {phantom:?}"));
        }
        Ok(present)
    }

    /// Every node of `cluster` but `skip` reaches the GTID position and checksum of
    /// `leader` within `limit`.
    pub async fn converged(
        &self,
        cluster: &str,
        leader: &str,
        skip: &[&str],
        limit: Duration,
    ) -> Result<(), String> {
        let mut lconn = Conn::new(self.admin_opts(leader))
            .await
            .map_err(sql_err("connecting to the leader"))?;
        let want = gtid_and_checksum(&mut lconn).await?;
        let deadline = Instant::now() + limit;
        for addr in self.nodes(cluster) {
            if addr == leader || skip.contains(&addr.as_str()) {
                continue;
            }
            loop {
                let got = match Conn::new(self.admin_opts(&addr)).await {
                    Ok(mut c) => gtid_and_checksum(&mut c).await.ok(),
                    Err(_) => None,
                };
                if got.as_ref() == Some(&want) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{addr} at {got:?}, not the leader's {want:?} within {limit:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Waits until `addr` is read-only and either follows `leader` (its GTID position and
    /// checksum) or was kept out (`rejoin.refused` naming it); a node kept out may hold,
    /// beyond `present`, only writes whose clients were left unsure. Returns whether it
    /// rejoined.
    pub async fn fenced_and_in_place(
        &self,
        cluster: &str,
        addr: &str,
        leader: &str,
        present: &BTreeSet<u64>,
        ledger: &Ledger,
        limit: Duration,
    ) -> Result<bool, String> {
        let mut lconn = Conn::new(self.admin_opts(leader))
            .await
            .map_err(sql_err("connecting to the leader"))?;
        let want = gtid_and_checksum(&mut lconn).await?;
        let deadline = Instant::now() + limit;
        let rejoined = loop {
            if let Some(r) = self.fence_state(cluster, addr, &want).await {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{addr} neither read-only and following {leader} nor kept out within \
                     {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !rejoined {
            let mut c = Conn::new(self.admin_opts(addr))
                .await
                .map_err(sql_err("connecting to the old leader"))?;
            let only_here: BTreeSet<u64> =
                ids_on(&mut c).await?.difference(present).copied().collect();
            if !only_here.is_subset(&ledger.uncertain_ids()) {
                return Err(format!(
                    "{addr}, kept out, has rows no client was left unsure about: {only_here:?}"
                ));
            }
        }
        Ok(rejoined)
    }

    /// `Some(true)`: read-only and following; `Some(false)`: read-only and kept out.
    async fn fence_state(&self, cluster: &str, addr: &str, want: &(String, i64)) -> Option<bool> {
        let refused = self
            .app
            .orchestrator
            .events(cluster)
            .ok()?
            .iter()
            .any(|e| e.kind == "rejoin.refused" && e.message.contains(addr));
        let mut c = Conn::new(self.admin_opts(addr)).await.ok()?;
        let ro: i64 = c.query_first("SELECT @@global.read_only").await.ok()??;
        if ro != 1 {
            return None;
        }
        if refused {
            return Some(false);
        }
        (gtid_and_checksum(&mut c).await.ok()? == *want).then_some(true)
    }

    /// No failover was attempted, and `cluster` is still led by `leader` at `epoch`.
    pub fn no_failover(&self, cluster: &str, leader: &str, epoch: u64) -> Result<(), String> {
        let now = self.leader_of(cluster);
        if now != (leader.to_owned(), epoch) {
            return Err(format!(
                "the leader changed: {} at epoch {} (was {leader} at {epoch})",
                now.0, now.1
            ));
        }
        let events = self.app.orchestrator.events(cluster).unwrap_or_default();
        let tried: Vec<String> = events
            .iter()
            .filter(|e| e.kind.starts_with("failover."))
            .map(|e| format!("{}: {}", e.kind, e.message))
            .collect();
        if tried.is_empty() {
            Ok(())
        } else {
            Err(format!("a failover was attempted: {tried:?}"))
        }
    }
}

/// Plain-text options for a loopback port.
pub fn loopback(port: u16, user: &str, password: &str) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .into()
}

/// `CREATE DATABASE fo` with the writers' table, through the router.
pub async fn setup(router: &Opts) -> Result<(), String> {
    let mut c = Conn::new(router.clone())
        .await
        .map_err(sql_err("connecting to the router"))?;
    c.query_drop("CREATE DATABASE fo; CREATE TABLE fo.t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .map_err(sql_err("creating fo.t"))?;
    Ok(())
}

/// The ids in [`TABLE`] on a node.
pub async fn ids_on(conn: &mut Conn) -> Result<BTreeSet<u64>, String> {
    let ids: Vec<u64> = conn
        .query(format!("SELECT id FROM {TABLE}"))
        .await
        .map_err(sql_err("reading the writers' rows"))?;
    Ok(ids.into_iter().collect())
}

/// A node's `gtid_current_pos` and the checksum of [`TABLE`].
pub async fn gtid_and_checksum(conn: &mut Conn) -> Result<(String, i64), String> {
    let gtid: Option<String> = conn
        .query_first("SELECT @@global.gtid_current_pos")
        .await
        .map_err(sql_err("reading gtid_current_pos"))?;
    let row: Option<(String, Option<i64>)> = conn
        .query_first(format!("CHECKSUM TABLE {TABLE}"))
        .await
        .map_err(sql_err("CHECKSUM TABLE"))?;
    Ok((
        gtid.unwrap_or_default(),
        row.and_then(|r| r.1).unwrap_or_default(),
    ))
}
