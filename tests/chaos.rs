//! The chaos soak: a write workload through the router over two replicated clusters (keyspace
//! `app` in four shards) while a seeded fault injector kills leaders with SIGKILL, stops and
//! restarts replicas, freezes replicas and leaders (SIGSTOP: nothing resets their
//! connections), partitions leaders (iptables DROP on their port: no reset either), delays or
//! cuts one node's network through a TCP proxy, and runs planned switchovers. An old leader
//! kept out when it returns (a write cut off on its way committed there) is rebuilt through
//! the admin API, as an operator would. At the end every acknowledged write must be present exactly once, the banks'
//! totals unchanged, every replica converged, and no write accepted by a leader of an older
//! epoch.
//!
//! `SY_CHAOS_SECS` (default 40) bounds the fault phase, `SY_CHAOS_SEED` picks the schedule. The
//! long form: `SY_CHAOS_SECS=600 cargo test --test chaos -- --nocapture`.
//!
//! Transfers (XA transactions, one- or two-phase, as every transaction in a sharded keyspace
//! is) pause while a leader is killed, and resume right after; the inserts (autocommit, no XA)
//! go on. `SY_CHAOS_XA_KILLS=1` kills leaders in the middle of transfers: crash recovery may
//! then leave the old leader's prepared XA transactions out of step with its binlog, which
//! rejoin puts right where the binlogs say how (`rejoin.xa` in the report), and refuses where
//! they can't (a one-phase commit is binlogged without its xid): such a node is kept out for
//! the operator and the run fails on it (see the README's known limits).
//!
//! Replication between the nodes goes direct, except to a node behind the proxy that became
//! leader (replicas are pointed at the address the topology knows). The proxied node is cut
//! only while it is a replica; as a leader it is delayed instead.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::{FaultProxy, Mode};
use common::{eventually, shard_of, TestEnv, SHARDS};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use shard_map::{ClusterPhase, NodeState, Role};
use tokio::time::Instant;

/// Accounts per cluster in each bank.
const ACCOUNTS_PER_CLUSTER: usize = 8;
const START_BALANCE: i64 = 1000;
/// Clients of each bank.
const BANK_CLIENTS: usize = 2;
/// The node behind the fault proxy: cluster `c2`'s second node (a replica at first).
const PROXIED: (&str, usize) = ("c2", 1);

/// A small seeded generator (xorshift64*), so that a schedule can be replayed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the clients saw.
#[derive(Default)]
struct Record {
    /// Ids whose write was acknowledged, with when it was sent and when the OK came.
    acked: BTreeMap<i64, (Instant, Instant)>,
    /// Ids whose outcome is unknown (an error after the write was sent).
    unknown: BTreeSet<i64>,
    inserts_acked: u64,
    transfers_acked: u64,
    /// Client errors by MySQL code (or `io`, `connect`, `driver`, `other`).
    errors: BTreeMap<String, u64>,
}

impl Record {
    fn error(&mut self, e: &mysql_async::Error) {
        let kind = match e {
            mysql_async::Error::Server(s) => s.code.to_string(),
            mysql_async::Error::Io(_) => "io".into(),
            mysql_async::Error::Driver(_) => "driver".into(),
            _ => "other".into(),
        };
        *self.errors.entry(kind).or_default() += 1;
    }
}

fn cluster_of(id: i64) -> &'static str {
    SHARDS[shard_of(id)].2
}

/// A connection error ends the session; a server error (relayed by the router) does not.
fn session_lost(e: &mysql_async::Error) -> bool {
    !matches!(e, mysql_async::Error::Server(_))
}

struct Shared {
    record: Mutex<Record>,
    next_id: AtomicI64,
    stop: AtomicBool,
    /// Transfers (XA transactions, as every transaction in a sharded keyspace) wait while
    /// this is set (see `SY_CHAOS_XA_KILLS`).
    xa_paused: AtomicBool,
    /// How many transferers are waiting.
    xa_parked: AtomicUsize,
}

async fn connect(opts: &Opts, shared: &Shared) -> Option<Conn> {
    match Conn::new(opts.clone()).await {
        Ok(mut c) => {
            // Deadlocks across clusters end in a lock wait timeout: keep it short.
            match c
                .query_drop("SET SESSION innodb_lock_wait_timeout = 2")
                .await
            {
                Ok(()) => Some(c),
                Err(e) => {
                    shared.record.lock().unwrap().error(&e);
                    None
                }
            }
        }
        Err(_) => {
            *shared
                .record
                .lock()
                .unwrap()
                .errors
                .entry("connect".into())
                .or_default() += 1;
            // Pacing of the reconnect attempts, not synchronisation.
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Inserts unique ids, one autocommit statement each.
async fn inserter(opts: Opts, shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = connect(&opts, &shared).await;
            continue;
        }
        let c = conn.as_mut().unwrap();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let r = c
            .query_drop(format!(
                "INSERT INTO ledger (id, kind, sid) VALUES ({id}, 0, @@server_id)"
            ))
            .await;
        let mut rec = shared.record.lock().unwrap();
        match r {
            Ok(()) => {
                rec.acked.insert(id, (sent, Instant::now()));
                rec.inserts_acked += 1;
            }
            Err(e) => {
                rec.unknown.insert(id);
                rec.error(&e);
                if session_lost(&e) {
                    conn = None;
                }
            }
        }
    }
}

/// Moves money between accounts, logging each transfer in the ledger in the same transaction.
/// `pick` draws (from, to); `two_phase` says they are on different clusters.
async fn transferer(
    opts: Opts,
    shared: Arc<Shared>,
    mut rng: Rng,
    two_phase: bool,
    pick: impl Fn(&mut Rng) -> (i64, i64),
) {
    let mut conn: Option<Conn> = None;
    let mut parked = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let paused = shared.xa_paused.load(Ordering::Relaxed);
        if paused != parked {
            parked = paused;
            if parked {
                shared.xa_parked.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.xa_parked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if parked {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if conn.is_none() {
            conn = connect(&opts, &shared).await;
            continue;
        }
        let c = conn.as_mut().unwrap();
        let (src, dst) = pick(&mut rng);
        let amount = rng.below(20) as i64 + 1;
        // A transfer within one cluster logs itself on that cluster too, so that it commits
        // in one phase; the ids passed over are never used.
        let id = loop {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            if two_phase || cluster_of(id) == cluster_of(src) {
                break id;
            }
        };
        let sent = Instant::now();
        let r: Result<(), mysql_async::Error> = async {
            c.query_drop("BEGIN").await?;
            c.query_drop(format!(
                "UPDATE customers SET balance = balance - {amount} WHERE id = {src}"
            ))
            .await?;
            c.query_drop(format!(
                "UPDATE customers SET balance = balance + {amount} WHERE id = {dst}"
            ))
            .await?;
            c.query_drop(format!(
                "INSERT INTO ledger (id, kind, src, dst, amount, sid) \
                 VALUES ({id}, 1, {src}, {dst}, {amount}, @@server_id)"
            ))
            .await?;
            c.query_drop("COMMIT").await
        }
        .await;
        let lost = {
            let mut rec = shared.record.lock().unwrap();
            match &r {
                Ok(()) => {
                    rec.acked.insert(id, (sent, Instant::now()));
                    rec.transfers_acked += 1;
                    false
                }
                Err(e) => {
                    rec.unknown.insert(id);
                    rec.error(e);
                    session_lost(e)
                }
            }
        };
        // A session that survived the error is rolled back; one that fails even that is
        // given up like a lost one.
        if lost || (r.is_err() && c.query_drop("ROLLBACK").await.is_err()) {
            conn = None;
        }
    }
}

/// Every leadership each cluster had, as the topology published it.
#[derive(Debug, Clone)]
struct Leadership {
    epoch: u64,
    leader: String,
    /// The last moment the previous leadership was still seen: this one began after it.
    after: Instant,
    /// When it was first seen: it had begun by then.
    seen: Instant,
}

type EpochLog = Arc<Mutex<BTreeMap<String, Vec<Leadership>>>>;

/// Records every leadership change. The watcher may run late, so each change is bracketed:
/// it happened between the last look that still saw the old leadership and the first look
/// that saw the new one.
async fn watch_epochs(topology: shard_map::TopologyHandle, log: EpochLog, stop: Arc<Shared>) {
    let mut changes = topology.subscribe();
    let mut last_look: BTreeMap<String, Instant> = BTreeMap::new();
    let origin = Instant::now();
    while !stop.stop.load(Ordering::Relaxed) {
        let t = topology.load();
        let now = Instant::now();
        {
            let mut log = log.lock().unwrap();
            for (name, c) in &t.clusters {
                let Some(leader) = c.leader.clone() else {
                    continue;
                };
                let entries = log.entry(name.clone()).or_default();
                if entries
                    .last()
                    .is_none_or(|l| l.epoch != c.epoch || l.leader != leader)
                {
                    let after = last_look.get(name).copied().unwrap_or(origin);
                    entries.push(Leadership {
                        epoch: c.epoch,
                        leader,
                        after,
                        seen: now,
                    });
                }
                last_look.insert(name.clone(), now);
            }
        }
        if tokio::time::timeout(Duration::from_millis(200), changes.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return;
        }
    }
}

/// The soak's view of the cluster: the proxy and how to name nodes.
struct Chaos {
    env: TestEnv,
    proxy: FaultProxy,
    /// Proxy address -> the node's own address.
    proxied: (String, String),
}

impl Chaos {
    /// The node's own address (what `LocalClusters` knows) for a topology address.
    fn direct(&self, addr: &str) -> String {
        if addr == self.proxied.0 {
            self.proxied.1.clone()
        } else {
            addr.to_owned()
        }
    }

    /// One of the cluster's nodes other than `leader`, as the topology names it.
    fn random_replica(&self, cluster: &str, leader: &str, rng: &mut Rng) -> String {
        let t = self.env.app().topology.load();
        let replicas: Vec<String> = t
            .cluster(cluster)
            .unwrap()
            .nodes
            .iter()
            .filter(|n| n.addr != leader)
            .map(|n| n.addr.clone())
            .collect();
        replicas[rng.below(replicas.len())].clone()
    }

    fn leader(&self, cluster: &str) -> (String, u64) {
        let t = self.env.app().topology.load();
        let c = t.cluster(cluster).expect("cluster");
        (c.leader.clone().unwrap_or_default(), c.epoch)
    }

    /// Records the topology's leaders in the local clusters' state, so that a restarted node
    /// that was leader comes back read-only.
    fn follow_leaders(&mut self) {
        for cluster in ["c1", "c2"] {
            let leader = self.direct(&self.leader(cluster).0);
            self.env
                .local_mut()
                .set_leader(cluster, &leader)
                .expect("record leader");
        }
    }

    fn port(&self, addr: &str) -> u16 {
        self.direct(addr)
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Why the system is not yet back to normal, or `None` when it is: every cluster serving
    /// with a leader, every node up, every other node replicating with both threads running.
    fn trouble(&self) -> Option<String> {
        let t = self.env.app().topology.load();
        for (name, c) in &t.clusters {
            let Some(leader) = &c.leader else {
                return Some(format!("{name} has no leader"));
            };
            if c.phase != ClusterPhase::Serving {
                return Some(format!("{name} is {:?}", c.phase));
            }
            for n in &c.nodes {
                if n.state != NodeState::Up {
                    return Some(format!("{name}/{} is {:?}", n.addr, n.state));
                }
                if n.addr == *leader {
                    continue;
                }
                if n.role != Role::Replica
                    || n.io_running != Some(true)
                    || n.sql_running != Some(true)
                {
                    return Some(format!(
                        "{name}/{} is {:?} (io {:?}, sql {:?}, {:?})",
                        n.addr, n.role, n.io_running, n.sql_running, n.last_error
                    ));
                }
            }
        }
        None
    }

    /// Waits until the system is back to normal; a node kept out by the orchestrator (it
    /// holds transactions the leader lacks) fails the soak at once.
    /// Waits for a new leader of `cluster` (not `leader`, an epoch above `epoch`).
    async fn failed_over(&self, cluster: &str, leader: &str, epoch: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (l, e) = self.leader(cluster);
            if e > epoch && l != leader {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no failover of {cluster} within 60 s after losing {leader}\n\
                 topology: {:#?}\nevents: {:#?}",
                self.env.app().topology.load().cluster(cluster),
                self.env.app().orchestrator.events(cluster).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An old leader back after a freeze or partition: it rejoins by itself, or is kept out
    /// (a write cut off on its way committed there when it returned) and then rebuilt through
    /// the admin API, as an operator would. Says which.
    async fn back_in_place(&self, cluster: &str, addr: &str) -> &'static str {
        let since = unix_ms();
        let outcome = eventually(
            Duration::from_secs(60),
            "the old leader in place",
            || async {
                let t = self.env.app().topology.load();
                let n = t.cluster(cluster)?.node(addr)?.clone();
                let events = self.env.app().orchestrator.events(cluster).ok()?;
                let refused = events.iter().any(|e| {
                    e.kind == "rejoin.refused" && e.at_ms >= since && e.message.contains(addr)
                });
                if refused {
                    return Some(false);
                }
                (n.state == NodeState::Up && n.role == Role::Replica && n.io_running == Some(true))
                    .then_some(true)
            },
        )
        .await;
        if outcome {
            return "rejoined";
        }
        let http = common::http();
        let url = self
            .env
            .admin_url(&format!("/api/v1/clusters/{cluster}/nodes/{addr}/rebuild"));
        // 409 while the rejoin that kept it out still holds the cluster.
        eventually(
            Duration::from_secs(60),
            "a rebuild of the kept-out node",
            || async {
                let resp = http
                    .post(&url)
                    .bearer_auth("test-token")
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .ok()?;
                match resp.status().as_u16() {
                    200 => Some(()),
                    409 => None,
                    other => panic!(
                        "rebuilding {addr}: {other} {}",
                        resp.text().await.unwrap_or_default()
                    ),
                }
            },
        )
        .await;
        "kept out, rebuilt"
    }

    async fn recovered(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for cluster in ["c1", "c2"] {
                let events = self.env.app().orchestrator.events(cluster).unwrap();
                // A node kept out and rebuilt since (see `back_in_place`) is back.
                let rebuilt = |refusal: &orchestrator::Event| {
                    events.iter().any(|d| {
                        d.kind == "rebuild.done"
                            && d.at_ms >= refusal.at_ms
                            && refusal
                                .message
                                .split(' ')
                                .next()
                                .is_some_and(|n| d.message.contains(n.trim_end_matches("'s")))
                    })
                };
                if let Some(e) = events
                    .iter()
                    .find(|e| e.kind == "rejoin.refused" && !rebuilt(e))
                {
                    panic!("after {after}: {cluster}: {}", e.message);
                }
            }
            let Some(why) = self.trouble() else {
                return;
            };
            if Instant::now() >= deadline {
                self.diagnose(&why).await;
            }
            assert!(
                Instant::now() < deadline,
                "after {after}: not recovered within 90 s: {why}\nevents c1: {:#?}\nevents c2: {:#?}",
                self.env.app().orchestrator.events("c1").unwrap(),
                self.env.app().orchestrator.events("c2").unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints what the nodes named in `why` say about themselves: positions, prepared XA
    /// transactions, the end of the error log.
    async fn diagnose(&self, why: &str) {
        for c in self.env.local().clusters() {
            for n in &c.nodes {
                let proxied = self.proxied.1 == n.addr && why.contains(&self.proxied.0);
                if !why.contains(&n.addr) && !proxied {
                    continue;
                }
                let opts = common::opts_for(n.port, "switchyard", "switchyard", None);
                if let Ok(mut conn) = Conn::new(opts).await {
                    let pos: Option<(String, String, String)> = conn
                        .query_first(
                            "SELECT @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos",
                        )
                        .await
                        .ok()
                        .flatten();
                    let xa: Vec<mysql_async::Row> =
                        conn.query("XA RECOVER").await.unwrap_or_default();
                    println!("{}: positions {pos:?}, {} prepared XA", n.addr, xa.len());
                }
                let log = std::fs::read_to_string(n.datadir.join("error.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                println!(
                    "{} error.log (end):\n{}",
                    n.addr,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }

    /// Starts a node again once its process is gone.
    async fn start_node(&mut self, cluster: &str, direct: &str) {
        self.follow_leaders();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.env.local_mut().start_node(cluster, direct).await {
                Ok(()) => return,
                Err(orchestrator::ProvisionError::AlreadyRunning { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restarting {direct}: {e}"),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    FreezeLeader,
    PartitionLeader,
    RestartReplica,
    FreezeReplica,
    CutNode,
    DelayNode,
    Switchover,
}

const FAULTS: [Fault; 8] = [
    Fault::KillLeader,
    Fault::FreezeLeader,
    Fault::PartitionLeader,
    Fault::RestartReplica,
    Fault::FreezeReplica,
    Fault::CutNode,
    Fault::DelayNode,
    Fault::Switchover,
];

/// Pauses the transfers and waits until none is in flight on the leader `direct` (see the
/// module's documentation); the caller resumes them (`xa_paused`) once the leader is lost.
async fn settle_xa(chaos: &Chaos, shared: &Shared, direct: &str) {
    shared.xa_paused.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(30), "XA transactions settled", || {
        let port = chaos.port(direct);
        let parked = shared.xa_parked.load(Ordering::Relaxed);
        async move {
            if parked < 2 * BANK_CLIENTS {
                return None;
            }
            let opts = common::opts_for(port, "switchyard", "switchyard", None);
            let mut c = Conn::new(opts).await.ok()?;
            let rows: Vec<mysql_async::Row> = c.query("XA RECOVER").await.ok()?;
            rows.is_empty().then_some(())
        }
    })
    .await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The accounts of each bank on each cluster: `local` ids move money only within their
/// cluster, `global` ids only across clusters.
fn accounts(base: i64, cluster: &str) -> Vec<i64> {
    (base..)
        .filter(|id| cluster_of(*id) == cluster)
        .take(ACCOUNTS_PER_CLUSTER)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_no_acknowledged_write() {
    let secs = env_u64("SY_CHAOS_SECS", 40);
    let seed = env_u64("SY_CHAOS_SEED", 7);
    let xa_kills = env_u64("SY_CHAOS_XA_KILLS", 0) != 0;
    println!("chaos soak: SY_CHAOS_SECS={secs} SY_CHAOS_SEED={seed} SY_CHAOS_XA_KILLS={xa_kills}");
    let proxy_slot: Arc<Mutex<Option<(FaultProxy, String)>>> = Arc::default();
    let env = {
        let slot = proxy_slot.clone();
        TestEnv::start_sharded_with(2, 2, 4, move |config| {
            // Anti-flapping off: the soak fails over many times on purpose.
            config.failover.failover_limit = 1_000_000;
            config.failover.failover_min_interval_s = 0;
            let c = config
                .clusters
                .iter_mut()
                .find(|c| c.name == PROXIED.0)
                .expect("proxied cluster");
            let direct = c.nodes[PROXIED.1].clone();
            let target: SocketAddr = direct.parse().expect("node address");
            let proxy = FaultProxy::start(target);
            c.nodes[PROXIED.1] = proxy.addr().to_string();
            *slot.lock().unwrap() = Some((proxy, direct));
            config.keyspaces[0]
                .tables
                .push(shard_map::TableSpec::sharded(
                    "ledger",
                    "id",
                    shard_map::VindexKind::Hash,
                ));
        })
        .await
    };
    let (proxy, direct) = proxy_slot.lock().unwrap().take().expect("proxy started");
    let mut chaos = Chaos {
        proxied: (proxy.addr().to_string(), direct),
        proxy,
        env,
    };

    // Schema and banks.
    let mut c = chaos.env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20), \
         balance BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    c.query_drop(
        "CREATE TABLE ledger (id BIGINT PRIMARY KEY, kind TINYINT NOT NULL, src BIGINT, \
         dst BIGINT, amount BIGINT, sid INT UNSIGNED NOT NULL)",
    )
    .await
    .unwrap();
    let local: BTreeMap<&str, Vec<i64>> = ["c1", "c2"]
        .into_iter()
        .map(|cl| (cl, accounts(1, cl)))
        .collect();
    let global: BTreeMap<&str, Vec<i64>> = ["c1", "c2"]
        .into_iter()
        .map(|cl| (cl, accounts(10_001, cl)))
        .collect();
    let all_accounts: Vec<i64> = local
        .values()
        .chain(global.values())
        .flatten()
        .copied()
        .collect();
    let values: Vec<String> = all_accounts
        .iter()
        .map(|id| format!("({id}, 'acct', {START_BALANCE})"))
        .collect();
    c.query_drop(format!(
        "INSERT INTO customers (id, name, balance) VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    drop(c);

    // The workload.
    let shared = Arc::new(Shared {
        record: Mutex::default(),
        next_id: AtomicI64::new(1_000_000),
        stop: AtomicBool::new(false),
        xa_paused: AtomicBool::new(false),
        xa_parked: AtomicUsize::new(0),
    });
    let epochs: EpochLog = Arc::default();
    let opts = chaos.env.router_opts(Some("app"));
    let mut tasks = vec![tokio::spawn(watch_epochs(
        chaos.env.app().topology.clone(),
        epochs.clone(),
        shared.clone(),
    ))];
    for _ in 0..3 {
        tasks.push(tokio::spawn(inserter(opts.clone(), shared.clone())));
    }
    for t in 0..BANK_CLIENTS as u64 {
        let local = local.clone();
        tasks.push(tokio::spawn(transferer(
            opts.clone(),
            shared.clone(),
            Rng::new(seed ^ (100 + t)),
            false,
            move |rng| {
                let cluster = if rng.below(2) == 0 { "c1" } else { "c2" };
                let a = &local[cluster];
                let i = rng.below(a.len());
                let j = (i + 1 + rng.below(a.len() - 1)) % a.len();
                (a[i], a[j])
            },
        )));
        let global = global.clone();
        tasks.push(tokio::spawn(transferer(
            opts.clone(),
            shared.clone(),
            Rng::new(seed ^ (200 + t)),
            true,
            move |rng| {
                let (x, y) = (&global["c1"], &global["c2"]);
                let (a, b) = (x[rng.below(x.len())], y[rng.below(y.len())]);
                if rng.below(2) == 0 {
                    (a, b)
                } else {
                    (b, a)
                }
            },
        )));
    }
    let acked = || shared.record.lock().unwrap().acked.len();
    let progress = |what: String| {
        let from = acked();
        let shared = shared.clone();
        async move {
            eventually(Duration::from_secs(60), &what, || {
                let n = shared.record.lock().unwrap().acked.len();
                async move { (n >= from + 30).then_some(()) }
            })
            .await;
        }
    };
    progress("writes flowing before any fault".into()).await;

    // The faults: each kind once in a seeded order, then seeded draws, until time is up.
    let mut rng = Rng::new(seed);
    let mut order = FAULTS.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let http = common::http();
    let began = Instant::now();
    let mut n = 0usize;
    while n < FAULTS.len() || began.elapsed() < Duration::from_secs(secs) {
        let fault = order
            .get(n)
            .copied()
            .unwrap_or_else(|| FAULTS[rng.below(FAULTS.len())]);
        n += 1;
        let cluster = if rng.below(2) == 0 { "c1" } else { "c2" };
        let (leader, epoch) = chaos.leader(cluster);
        let label = match fault {
            Fault::KillLeader => {
                let direct = chaos.direct(&leader);
                if !xa_kills {
                    settle_xa(&chaos, &shared, &direct).await;
                }
                chaos.env.local_mut().kill_node(cluster, &direct).unwrap();
                shared.xa_paused.store(false, Ordering::Relaxed);
                chaos.failed_over(cluster, &leader, epoch).await;
                progress(format!("writes after the failover of {cluster}")).await;
                chaos.start_node(cluster, &direct).await;
                format!("kill -9 leader {cluster} {direct}")
            }
            Fault::FreezeLeader | Fault::PartitionLeader => {
                let direct = chaos.direct(&leader);
                // Transfers settle first, as for a kill; the inserts go on, and one cut off
                // on its way may commit when the old leader returns (it is then kept out,
                // and rebuilt as an operator would).
                settle_xa(&chaos, &shared, &direct).await;
                let pid = chaos.env.local().pid(&direct).expect("leader running");
                let (frozen, cut) = if fault == Fault::FreezeLeader {
                    (Some(common::faults::freeze(pid)), None)
                } else {
                    (None, Some(common::faults::blackhole(chaos.port(&direct))))
                };
                shared.xa_paused.store(false, Ordering::Relaxed);
                chaos.failed_over(cluster, &leader, epoch).await;
                progress(format!("writes after the failover of {cluster}")).await;
                if let Some(f) = frozen {
                    f.thaw();
                }
                if let Some(c) = cut {
                    c.heal();
                }
                let how = chaos.back_in_place(cluster, &leader).await;
                let what = if fault == Fault::FreezeLeader {
                    "freeze+thaw"
                } else {
                    "partition+heal"
                };
                format!("{what} leader {cluster} {direct} ({how})")
            }
            Fault::RestartReplica => {
                let victim = chaos.direct(&chaos.random_replica(cluster, &leader, &mut rng));
                let pid = chaos.env.local().pid(&victim).expect("replica running");
                // SAFETY: kill(2) on a server this test started and that is still running.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
                let port = chaos.port(&victim);
                eventually(Duration::from_secs(60), "the replica to stop", || async {
                    std::net::TcpStream::connect(("127.0.0.1", port))
                        .is_err()
                        .then_some(())
                })
                .await;
                progress(format!("writes while a replica of {cluster} is down")).await;
                chaos.start_node(cluster, &victim).await;
                format!("stop+start replica {cluster} {victim}")
            }
            Fault::FreezeReplica => {
                let victim = chaos.random_replica(cluster, &leader, &mut rng);
                let direct = chaos.direct(&victim);
                let pid = chaos.env.local().pid(&direct).expect("replica running");
                let frozen = common::faults::freeze(pid);
                eventually(
                    Duration::from_secs(30),
                    "the frozen replica seen down",
                    || async {
                        let t = chaos.env.app().topology.load();
                        let n = t.cluster(cluster)?.node(&victim)?.clone();
                        (n.state != NodeState::Up).then_some(())
                    },
                )
                .await;
                progress(format!("writes while a replica of {cluster} is frozen")).await;
                frozen.thaw();
                format!("freeze+thaw replica {cluster} {direct}")
            }
            Fault::CutNode | Fault::DelayNode => {
                let (pc, _) = PROXIED;
                let (pl, _) = chaos.leader(pc);
                // The proxied node is cut only while it is a replica: a cut leader would be a
                // partition whose in-flight commits its semi-sync timeout lets through later
                // (an errant transaction, kept out by rejoin); a leader gets a delay instead.
                let mode = if fault == Fault::CutNode && pl != chaos.proxied.0 {
                    if rng.below(2) == 0 {
                        Mode::Cut
                    } else {
                        Mode::Blackhole
                    }
                } else {
                    Mode::Delay(Duration::from_millis(50 + rng.below(200) as u64))
                };
                chaos.proxy.set(mode);
                let role = if pl == chaos.proxied.0 {
                    "leader"
                } else {
                    "replica"
                };
                if matches!(mode, Mode::Cut | Mode::Blackhole) {
                    eventually(
                        Duration::from_secs(30),
                        "the cut node seen down",
                        || async {
                            let t = chaos.env.app().topology.load();
                            let n = t.cluster(pc)?.node(&chaos.proxied.0)?.clone();
                            (n.state != NodeState::Up).then_some(())
                        },
                    )
                    .await;
                }
                progress(format!("writes while {pc}'s proxied node is {mode:?}")).await;
                chaos.proxy.set(Mode::Pass);
                format!("{mode:?} {pc} {role} {}", chaos.proxied.1)
            }
            Fault::Switchover => {
                let resp = http
                    .post(
                        chaos
                            .env
                            .admin_url(&format!("/api/v1/clusters/{cluster}/switchover")),
                    )
                    .bearer_auth("test-token")
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                match status {
                    200 => {
                        let (l, e) = chaos.leader(cluster);
                        assert!(e > epoch && l != leader, "switchover said done: {body}");
                        format!(
                            "switchover {cluster} {} -> {}",
                            chaos.direct(&leader),
                            chaos.direct(&l)
                        )
                    }
                    422 | 409 => {
                        *injected.entry("switchover refused".into()).or_default() += 1;
                        format!("switchover {cluster} refused ({status}): {}", body["error"])
                    }
                    _ => panic!("switchover of {cluster}: {status} {body}"),
                }
            }
        };
        *injected.entry(format!("{fault:?}")).or_default() += 1;
        println!(
            "[{:>6.1}s] fault {n}: {label}",
            began.elapsed().as_secs_f64()
        );
        chaos.recovered(&label).await;
        progress(format!("writes after {label}")).await;
        // Pacing: traffic runs undisturbed for a while between faults.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500) as u64)).await;
    }
    let fault_secs = began.elapsed().as_secs_f64();

    // Quiesce and check.
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    chaos.recovered("the workload's end").await;
    let record = std::mem::take(&mut *shared.record.lock().unwrap());
    println!(
        "chaos soak report (seed {seed}, {fault_secs:.0} s of faults)\n\
         faults injected: {injected:?}\n\
         writes acknowledged: {} ({} inserts, {} transfers)\n\
         writes with unknown outcome: {}\n\
         client errors by kind: {:?}\n\
         leaderships per cluster: {:?}",
        record.acked.len(),
        record.inserts_acked,
        record.transfers_acked,
        record.unknown.len(),
        record.errors,
        epochs
            .lock()
            .unwrap()
            .iter()
            .map(|(c, v)| (c.clone(), v.len()))
            .collect::<Vec<_>>()
    );
    let rejoin_events: BTreeMap<String, usize> = ["c1", "c2"]
        .iter()
        .flat_map(|c| chaos.env.app().orchestrator.events(c).unwrap())
        .filter(|e| e.kind.starts_with("rejoin."))
        .fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.kind).or_default() += 1;
            m
        });
    println!("rejoin events: {rejoin_events:?}");
    for c in ["c1", "c2"] {
        for e in chaos.env.app().orchestrator.events(c).unwrap() {
            if e.kind == "rejoin.xa" || e.kind == "rejoin.refused" {
                println!("  {c} {}: {}", e.kind, e.message);
            }
        }
    }
    let verdict = verify(&chaos, &record, &epochs, &local, &global).await;
    println!(
        "writes lost: {} (unknown-outcome writes present afterwards: {})",
        verdict.lost.len(),
        verdict.unknown_present
    );
    assert!(
        verdict.lost.is_empty(),
        "acknowledged writes lost: {:?}",
        verdict.lost
    );
    assert!(record.acked.len() > 100, "the workload made progress");
    let Chaos { env, proxy, .. } = chaos;
    drop(proxy);
    env.stop().await;
}

struct Verdict {
    lost: Vec<i64>,
    unknown_present: usize,
}

/// One row of the ledger: (id, kind, src, dst, amount, sid).
type LedgerRow = (i64, i64, Option<i64>, Option<i64>, Option<i64>, u32);

async fn verify(
    chaos: &Chaos,
    record: &Record,
    epochs: &EpochLog,
    local: &BTreeMap<&str, Vec<i64>>,
    global: &BTreeMap<&str, Vec<i64>>,
) -> Verdict {
    let env = &chaos.env;
    let topo = env.app().topology.load();
    // Server ids -> (cluster, node address).
    let mut servers: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for c in env.local().clusters() {
        for n in &c.nodes {
            servers.insert(n.server_id, (c.name.clone(), n.addr.clone()));
        }
    }

    // Every node of a cluster converges on the leader's GTID position, with the same tables.
    for cluster in ["c1", "c2"] {
        let (leader, _) = chaos.leader(cluster);
        let lport = chaos.port(&leader);
        let nodes: Vec<u16> = topo
            .cluster(cluster)
            .unwrap()
            .nodes
            .iter()
            .map(|n| chaos.port(&n.addr))
            .collect();
        let mut l = env.admin_conn(lport).await;
        let want: String = common::query_one(&mut l, "SELECT @@gtid_binlog_pos").await;
        for port in &nodes {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let opts = common::opts_for(*port, "switchyard", "switchyard", None);
                let pos: Option<String> = match Conn::new(opts).await {
                    Ok(mut c) => c
                        .query_first("SELECT @@gtid_binlog_pos")
                        .await
                        .ok()
                        .flatten(),
                    Err(_) => None,
                };
                if pos.as_deref() == Some(want.as_str()) {
                    break;
                }
                if Instant::now() >= deadline {
                    let addr = format!("127.0.0.1:{port}");
                    chaos.diagnose(&addr).await;
                    panic!(
                        "{cluster} node {addr} is at {pos:?}, not at the leader's GTID {want}; \
                         topology: {:#?}\nevents: {:#?}",
                        env.app().topology.load().cluster(cluster),
                        env.app().orchestrator.events(cluster).unwrap()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // No distributed transaction left in doubt.
        eventually(
            Duration::from_secs(30),
            &format!("no prepared XA branch on {cluster}"),
            || async {
                let mut c = env.admin_conn(lport).await;
                let rows: Vec<mysql_async::Row> = c.query("XA RECOVER").await.ok()?;
                rows.is_empty().then_some(())
            },
        )
        .await;
        for (_, _, cl, db) in SHARDS {
            if cl != cluster {
                continue;
            }
            let mut sums = Vec::new();
            for port in &nodes {
                let mut c = env.admin_conn(*port).await;
                let rows: Vec<(String, Option<u64>)> = c
                    .query(format!("CHECKSUM TABLE {db}.ledger, {db}.customers"))
                    .await
                    .unwrap();
                sums.push((*port, rows));
            }
            if sums.windows(2).any(|w| w[0].1 != w[1].1) {
                // Which rows: those not on every node alike.
                let mut seen: BTreeMap<String, Vec<u16>> = BTreeMap::new();
                for port in &nodes {
                    let mut c = env.admin_conn(*port).await;
                    let rows: Vec<mysql_async::Row> =
                        c.query(format!("SELECT * FROM {db}.ledger")).await.unwrap();
                    for r in rows {
                        seen.entry(format!("{:?}", r.unwrap()))
                            .or_default()
                            .push(*port);
                    }
                }
                let odd: Vec<_> = seen
                    .iter()
                    .filter(|(_, p)| p.len() != nodes.len())
                    .collect();
                panic!(
                    "{cluster} {db}: table checksums differ between nodes: {sums:?}\n\
                     ledger rows not on every node: {odd:#?}\nevents: {:#?}",
                    env.app().orchestrator.events(cluster).unwrap()
                );
            }
        }
    }

    // The ledger and the accounts, read from each shard's leader.
    let mut rows: Vec<LedgerRow> = Vec::new();
    let mut balances: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, _, cluster, db) in SHARDS {
        let port = chaos.port(&chaos.leader(cluster).0);
        let mut c = env.admin_conn(port).await;
        let r: Vec<LedgerRow> = c
            .query(format!(
                "SELECT id, kind, src, dst, amount, sid FROM {db}.ledger"
            ))
            .await
            .unwrap();
        rows.extend(r);
        let b: Vec<(i64, i64)> = c
            .query(format!("SELECT id, balance FROM {db}.customers"))
            .await
            .unwrap();
        balances.extend(b);
    }
    let mut count: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &rows {
        *count.entry(r.0).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ids present more than once: {twice:?}");
    let lost: Vec<i64> = record
        .acked
        .keys()
        .filter(|id| !count.contains_key(id))
        .copied()
        .collect();
    let phantom: Vec<i64> = count
        .keys()
        .filter(|id| !record.acked.contains_key(id) && !record.unknown.contains(id))
        .copied()
        .collect();
    assert!(phantom.is_empty(), "rows no client wrote: {phantom:?}");
    let unknown_present = record
        .unknown
        .iter()
        .filter(|id| count.contains_key(id))
        .count();

    // The banks: every balance is its start plus the transfers the ledger holds (so no half
    // transfer), per cluster for the local bank and overall for the global one.
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.1 == 1) {
        let (src, dst, amount) = (r.2.unwrap(), r.3.unwrap(), r.4.unwrap());
        *expected.entry(src).or_insert(START_BALANCE) -= amount;
        *expected.entry(dst).or_insert(START_BALANCE) += amount;
    }
    for (id, balance) in &balances {
        let want = expected.get(id).copied().unwrap_or(START_BALANCE);
        assert_eq!(*balance, want, "account {id}: balance against its ledger");
    }
    for (cluster, ids) in local {
        let total: i64 = ids.iter().map(|id| balances[id]).sum();
        assert_eq!(
            total,
            START_BALANCE * ids.len() as i64,
            "local bank total on {cluster}"
        );
    }
    let total: i64 = global.values().flatten().map(|id| balances[id]).sum();
    assert_eq!(
        total,
        START_BALANCE * (global.values().map(Vec::len).sum::<usize>()) as i64,
        "global bank total"
    );

    // No write accepted by a leader of an older epoch: the server that ran each acknowledged
    // write (its row's `sid`) led its cluster at some moment between the write's sending and
    // its acknowledgement, as the published epochs tell.
    let epochs = epochs.lock().unwrap();
    let origin = epochs
        .values()
        .filter_map(|h| h.first())
        .map(|l| l.after)
        .min()
        .unwrap_or_else(Instant::now);
    let ms = |t: Instant| t.saturating_duration_since(origin).as_millis() as u64;
    let mut stale = Vec::new();
    for r in &rows {
        let Some(&(sent, acked)) = record.acked.get(&r.0) else {
            continue;
        };
        let (cluster, addr) = servers.get(&r.5).expect("a known server id");
        let history = &epochs[cluster];
        // Leadership i ran from at the earliest its `after` (or forever, for the first) to
        // at the latest the next one's `seen`; the write ran between `sent` and `acked`.
        let led = history.iter().enumerate().any(|(i, l)| {
            let until = history.get(i + 1).map(|n| n.seen);
            chaos.direct(&l.leader) == *addr
                && (i == 0 || l.after <= acked)
                && until.is_none_or(|u| u > sent)
        });
        if !led {
            stale.push(format!(
                "id {} ran on {addr}, sent at {} ms, acknowledged at {} ms",
                r.0,
                ms(sent),
                ms(acked)
            ));
        }
    }
    if !stale.is_empty() {
        let history: Vec<String> = epochs
            .iter()
            .flat_map(|(c, h)| {
                h.iter().map(move |l| {
                    format!(
                        "{c} epoch {} {} between {} and {} ms",
                        l.epoch,
                        l.leader,
                        ms(l.after),
                        ms(l.seen)
                    )
                })
            })
            .collect();
        panic!(
            "writes run by a server that was not the leader of its epoch:\n{}\nleaderships:\n{}",
            stale.join("\n"),
            history.join("\n")
        );
    }
    Verdict {
        lost,
        unknown_present,
    }
}
