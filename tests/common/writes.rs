//! Write traffic through the router with a ledger of what each client was told, and the
//! checks every failure scenario ends with: no acknowledged write lost, no row nobody was
//! told about, replicas converged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{query_one, TestEnv};

/// What the writers saw.
#[derive(Default)]
pub struct Ledger {
    /// Ids whose INSERT returned OK, and when.
    pub acked: Mutex<BTreeMap<u64, Instant>>,
    /// Ids whose INSERT failed with a connection error: they may or may not have committed.
    pub uncertain: Mutex<BTreeSet<u64>>,
    /// Client errors by code (0: the connection to the router itself).
    pub errors: Mutex<Vec<(u16, String)>>,
}

impl Ledger {
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn acked_ids(&self) -> BTreeSet<u64> {
        self.acked.lock().unwrap().keys().copied().collect()
    }

    pub fn uncertain_ids(&self) -> BTreeSet<u64> {
        self.uncertain.lock().unwrap().clone()
    }

    /// How long after `t` the first write was acknowledged.
    pub fn first_ack_after(&self, t: Instant) -> Option<Duration> {
        self.acked
            .lock()
            .unwrap()
            .values()
            .filter(|at| **at > t)
            .min()
            .map(|at| *at - t)
    }

    /// Waits until `more` writes were acknowledged beyond those acknowledged now.
    pub async fn wait_for_more(&self, more: usize, limit: Duration, what: &str) {
        let base = self.acked_count();
        super::eventually(limit, what, || async {
            (self.acked_count() >= base + more).then_some(())
        })
        .await;
    }
}

/// Writers inserting unique ids into `fo.t` through the router until stopped.
pub struct Writers {
    pub ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(env: &TestEnv, count: u64) -> Writers {
        Self::start_at(env, count, 0)
    }

    /// Like `start`, the ids offset by `offset` (so that writers started later do not reuse
    /// the ids of earlier ones).
    pub fn start_at(env: &TestEnv, count: u64, offset: u64) -> Writers {
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|w| {
                tokio::spawn(writer(
                    env.router_opts(None),
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

    /// Stops the writers; a writer still waiting on a statement after `limit` fails the test.
    pub async fn stop(self, limit: Duration) -> Arc<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(limit, t)
                .await
                .expect("a writer still waits on its statement: the router left it hanging")
                .unwrap();
        }
        self.ledger
    }
}

/// One cluster of a leader and two replicas with `fo.t`, and `count` writers through the
/// router that have had `warm` writes acknowledged. Returns the leader and its epoch too.
pub async fn cluster_under_writes(count: u64, warm: usize) -> (TestEnv, String, u64, Writers) {
    writes_on(TestEnv::start(1, 2).await, count, warm).await
}

/// Like [`cluster_under_writes`], on `env` (one cluster, `c1`).
pub async fn writes_on(env: TestEnv, count: u64, warm: usize) -> (TestEnv, String, u64, Writers) {
    setup(&env).await;
    let (leader, epoch) = leader_of(&env, "c1");
    let writers = Writers::start(&env, count);
    writers
        .ledger
        .wait_for_more(warm, Duration::from_secs(10), "writes flowing")
        .await;
    (env, leader, epoch, writers)
}

/// Inserts unique ids through the router until `stop`.
pub async fn writer(opts: Opts, base: u64, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Conn> = None;
    let mut next = base;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::new(opts.clone()).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    ledger
                        .errors
                        .lock()
                        .unwrap()
                        .push((0, format!("connect: {e}")));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let id = next;
        next += 1;
        match c
            .exec_drop("INSERT INTO fo.t (id, v) VALUES (?, ?)", (id, id * 7))
            .await
        {
            Ok(()) => {
                ledger.acked.lock().unwrap().insert(id, Instant::now());
            }
            Err(mysql_async::Error::Server(e)) => {
                ledger
                    .errors
                    .lock()
                    .unwrap()
                    .push((e.code, e.message.clone()));
                // The statement was cut off on its way: it may have committed.
                if matches!(e.code, 2013 | 1317 | 1927) {
                    ledger.uncertain.lock().unwrap().insert(id);
                }
            }
            Err(e) => {
                // The connection to the router itself broke: outcome unknown.
                ledger.uncertain.lock().unwrap().insert(id);
                ledger.errors.lock().unwrap().push((0, e.to_string()));
                conn = None;
            }
        }
    }
}

/// `CREATE DATABASE fo` with the writers' table, through the router.
pub async fn setup(env: &TestEnv) {
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE fo; CREATE TABLE fo.t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .unwrap();
}

pub async fn ids_on(conn: &mut Conn) -> BTreeSet<u64> {
    conn.query::<u64, _>("SELECT id FROM fo.t")
        .await
        .unwrap()
        .into_iter()
        .collect()
}

pub async fn gtid_and_checksum(conn: &mut Conn) -> (String, i64) {
    let gtid: String = query_one(conn, "SELECT @@gtid_current_pos").await;
    let row: (String, i64) = conn
        .query_first("CHECKSUM TABLE fo.t")
        .await
        .unwrap()
        .unwrap();
    (gtid, row.1)
}

/// The cluster's published leader and epoch.
pub fn leader_of(env: &TestEnv, cluster: &str) -> (String, u64) {
    let t = env.app().topology.load();
    let c = t.cluster(cluster).unwrap();
    (c.leader.clone().unwrap_or_default(), c.epoch)
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Prints a cluster's orchestrator events if the test panics while it is alive: the story
/// of a failed scenario.
pub struct EventsOnPanic(Arc<orchestrator::Orchestrator>, String);

impl EventsOnPanic {
    pub fn new(env: &TestEnv, cluster: &str) -> Self {
        EventsOnPanic(env.app().orchestrator.clone(), cluster.to_owned())
    }
}

impl Drop for EventsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let events = self.0.events(&self.1).unwrap_or_default();
            for e in events {
                eprintln!("  {} {}: {}", e.at_ms, e.kind, e.message);
            }
        }
    }
}

/// Waits for a leader other than `old` with a higher epoch than `old_epoch`; on time-out the
/// failure lists the cluster's orchestrator events.
pub async fn new_leader(
    env: &TestEnv,
    cluster: &str,
    old: &str,
    old_epoch: u64,
    limit: Duration,
) -> (String, u64) {
    let deadline = Instant::now() + limit;
    loop {
        let (l, e) = leader_of(env, cluster);
        if e > old_epoch && l != old {
            return (l, e);
        }
        if Instant::now() >= deadline {
            let events = env.app().orchestrator.events(cluster).unwrap_or_default();
            let lines: Vec<String> = events
                .iter()
                .map(|e| format!("{} {}: {}", e.at_ms, e.kind, e.message))
                .collect();
            panic!(
                "no new leader of {cluster} after {limit:?}; orchestrator events:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The end of every scenario: every acknowledged write is on `leader`, and every row there
/// was acknowledged or left uncertain to its client. Returns the rows present.
pub async fn check_no_write_lost(env: &TestEnv, leader: &str, ledger: &Ledger) -> BTreeSet<u64> {
    let mut conn = env.admin_conn(port_of(leader)).await;
    let present = ids_on(&mut conn).await;
    let acked = ledger.acked_ids();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let uncertain = ledger.uncertain_ids();
    let phantom: Vec<_> = present
        .difference(&acked)
        .filter(|id| !uncertain.contains(id))
        .collect();
    assert!(
        phantom.is_empty(),
        "rows nobody was told about: {phantom:?}"
    );
    present
}

/// Every node of `cluster` but `skip` reaches the same GTID position and checksum as
/// `leader`.
pub async fn check_converged(env: &TestEnv, cluster: &str, leader: &str, skip: &[&str]) {
    let mut lconn = env.admin_conn(port_of(leader)).await;
    let want = gtid_and_checksum(&mut lconn).await;
    let others: Vec<u16> = env
        .local()
        .cluster(cluster)
        .unwrap()
        .nodes
        .iter()
        .filter(|n| n.addr != leader && !skip.contains(&n.addr.as_str()))
        .map(|n| n.port)
        .collect();
    for port in others {
        super::eventually(
            Duration::from_secs(30),
            &format!("node {port} converges with the leader {leader}"),
            || async {
                let mut c = Conn::new(super::opts_for(port, "switchyard", "switchyard", None))
                    .await
                    .ok()?;
                (gtid_and_checksum(&mut c).await == want).then_some(())
            },
        )
        .await;
    }
}

/// Waits until `addr` of `cluster` is read-only and either follows the leader (the same GTID
/// position and checksum as `want`) or was kept out (`rejoin.refused` naming it); a node kept
/// out may hold, beyond the leader's rows `present`, only writes whose clients were told their
/// outcome is unknown. Returns whether it rejoined.
pub async fn fenced_and_in_place(
    env: &TestEnv,
    cluster: &str,
    addr: &str,
    want: &(String, i64),
    present: &BTreeSet<u64>,
    ledger: &Ledger,
) -> bool {
    let port = port_of(addr);
    let rejoined = super::eventually(
        Duration::from_secs(40),
        &format!("{addr} read-only, and following the leader or kept out"),
        || async {
            let refused = env
                .app()
                .orchestrator
                .events(cluster)
                .ok()?
                .iter()
                .any(|e| e.kind == "rejoin.refused" && e.message.contains(addr));
            let mut c = Conn::new(super::opts_for(port, "switchyard", "switchyard", None))
                .await
                .ok()?;
            let ro: i64 = c.query_first("SELECT @@global.read_only").await.ok()??;
            if ro != 1 {
                return None;
            }
            if refused {
                return Some(false);
            }
            (gtid_and_checksum(&mut c).await == *want).then_some(true)
        },
    )
    .await;
    if !rejoined {
        let mut c = env.admin_conn(port).await;
        let only_here: BTreeSet<u64> = ids_on(&mut c).await.difference(present).copied().collect();
        assert!(
            only_here.is_subset(&ledger.uncertain_ids()),
            "{addr}, kept out, has rows no client was left unsure about: {only_here:?}"
        );
    }
    rejoined
}
