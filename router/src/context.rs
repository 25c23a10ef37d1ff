//! What every router session shares: settings, users, backend pools, the topology and shard
//! map snapshots, the classification cache and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use shard_map::{ClusterPhase, ShardMap, TopologyHandle};

use crate::backend::Pools;
use crate::classify::Classifier;
use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::protocol::handshake::native_password_hash;

/// A user the router accepts.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    pub password: Arc<str>,
    pub hash: [u8; 20],
    /// The user table this entry belongs to (see [`RouterContext::users_generation`]).
    pub generation: u64,
}

/// Counters exposed by the admin API.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_refused: AtomicU64,
    pub auth_failures: AtomicU64,
    pub statements: AtomicU64,
    pub statements_to_replicas: AtomicU64,
    /// Statements sqlparser could not parse, forwarded as they were.
    pub unparsed: AtomicU64,
    /// Text statements on sharded tables placed on their one shard from their cache key's
    /// syntax tree (parsed once per key), without parsing their own text.
    pub sharded_by_key: AtomicU64,
    pub errors: AtomicU64,
    pub backend_retries: AtomicU64,
    /// Statements held while a cluster changed leader, and those that waited too long.
    pub held_statements: AtomicU64,
    pub hold_timeouts: AtomicU64,
    /// Statements planned again because the shard map changed while they were held.
    pub replanned: AtomicU64,
    /// Statements re-run on a new leader after the old one refused or lost them unexecuted.
    pub leader_change_retries: AtomicU64,
    /// Backend connections cut because their server was replaced as leader.
    pub deposed_cuts: AtomicU64,
    pub session_panics: AtomicU64,
    /// Login failures answered late because their address failed too often.
    pub auth_throttled: AtomicU64,
    /// Client connections switched to TLS.
    pub tls_connections: AtomicU64,
    /// Client connections in the compressed protocol.
    pub compressed_connections: AtomicU64,
    /// Plain-text logins refused because `require_secure_transport` is on.
    pub insecure_refused: AtomicU64,
    /// Client commands by kind (`StatementClass` order) and their latency.
    pub by_class: [AtomicU64; 3],
    pub latency: [LatencyHistogram; 3],
    /// Error packets sent to clients, by error code (the router's own and relayed ones).
    pub errors_by_code: dashmap::DashMap<u16, AtomicU64>,
    /// Routing decisions per cluster: `[leader, replica]`.
    pub routed: dashmap::DashMap<Arc<str>, [AtomicU64; 2], crate::FastHash>,
    /// Statements a cluster's server answered with an error, per cluster.
    pub cluster_errors: dashmap::DashMap<Arc<str>, AtomicU64>,
    /// Recent samples of the per-cluster counters, for rates.
    pub rates: crate::rates::ClusterRates,
}

impl RouterMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One client command done: counted by kind, its latency recorded.
    pub fn record_command(&self, class: StatementClass, elapsed: std::time::Duration) {
        let i = class as usize;
        self.by_class[i].fetch_add(1, Ordering::Relaxed);
        self.latency[i].observe(elapsed);
    }

    /// An error packet with `code` went to a client.
    pub fn count_error(&self, code: u16) {
        if let Some(c) = self.errors_by_code.get(&code) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors_by_code
            .entry(code)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A statement routed to `cluster` got an error from its server.
    pub fn count_cluster_error(&self, cluster: &Arc<str>) {
        if let Some(c) = self.cluster_errors.get(cluster) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.cluster_errors
            .entry(cluster.clone())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn count_route(&self, cluster: &str, leader: bool) {
        let i = usize::from(!leader);
        if let Some(c) = self.routed.get(cluster) {
            c[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.routed.entry(cluster.into()).or_default()[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// What a client command was, for the statement counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementClass {
    /// `SELECT` (not locking), `SHOW`, `DESCRIBE`, `EXPLAIN`.
    Read = 0,
    /// DML, DDL, locking reads.
    Write = 1,
    /// Everything else: `SET`, `USE`, transaction control, pings, prepares, ...
    Other = 2,
}

impl StatementClass {
    pub const ALL: [StatementClass; 3] = [Self::Read, Self::Write, Self::Other];

    pub fn of(kind: &crate::classify::StatementKind) -> Self {
        use crate::classify::StatementKind as K;
        match kind {
            K::Select { locking: false } | K::Show => Self::Read,
            K::Select { locking: true } | K::Write | K::Ddl => Self::Write,
            _ => Self::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Other => "other",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket histogram of atomics: one increment per bucket, sum and count.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is above every bound.
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub sum_us: AtomicU64,
    pub count: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by all sessions of one router.
#[derive(Debug)]
pub struct RouterContext {
    pub config: RouterConfig,
    /// The users logins are checked against; replaced whole by a configuration reload.
    pub users: ArcSwap<HashMap<String, Arc<User>>>,
    /// Bumped after each new user table: a session whose user is of an older table takes
    /// the new entry (a changed password) before its next command.
    pub users_generation: AtomicU64,
    pub pools: Pools,
    pub topology: TopologyHandle,
    pub shard_map: ArcSwap<ShardMap>,
    pub classifier: Classifier,
    pub metrics: RouterMetrics,
    pub server_version: String,
    next_conn_id: AtomicU32,
    replica_rr: AtomicUsize,
    failure_reporter: Option<FailureReporter>,
    /// Statements waiting out a leader change right now.
    pub held: AtomicU64,
    /// Set while this router's lease in the topology store (etcd) does not surely hold: it
    /// may have missed a change of leader, so writes wait (and then fail) and connections
    /// to leaders are not reused; reads go on. Never set in the single-process mode.
    pub writes_fenced: std::sync::atomic::AtomicBool,
    /// Position of each sharded table's key column, `(keyspace, table)`, read from a shard's
    /// catalog for INSERTs without a column list; cleared by DDL on sharded tables.
    pub key_positions: dashmap::DashMap<(String, String), usize>,
    /// How this router names its distributed transactions.
    pub xa: crate::xa::XaIds,
    /// Credentials for the router's own work on the backends (the XA decision log and
    /// recovery): the orchestrator's user when the binary wires it.
    pub internal_user: Option<(Arc<str>, Arc<str>)>,
    /// Each sharded table's AUTO_INCREMENT column (name, position), `(keyspace, table)`, read
    /// from a shard's catalog; cleared with `key_positions`.
    pub auto_increment: dashmap::DashMap<(String, String), Option<(String, usize)>>,
    /// Blocks of global ids held for each `keyspace.table`.
    pub sequences: dashmap::DashMap<String, Arc<tokio::sync::Mutex<crate::sequence::Block>>>,
    /// Recent login failures per client address.
    pub login_failures: LoginThrottle,
    /// The live client sessions.
    pub sessions: Arc<crate::sessions::SessionRegistry>,
    /// TLS towards clients and backends (none until [`RouterContext::with_tls`]).
    pub tls: crate::tls::RouterTls,
}

fn user_table(users: &[crate::config::UserConfig], generation: u64) -> HashMap<String, Arc<User>> {
    users
        .iter()
        .map(|u| {
            let pw = u.password.expose().clone();
            (
                u.name.clone(),
                Arc::new(User {
                    name: u.name.as_str().into(),
                    hash: native_password_hash(pw.as_bytes()),
                    password: pw,
                    generation,
                }),
            )
        })
        .collect()
}

/// Failed logins per client address over a 10-second window. Past the configured limit, each
/// further failure from that address is answered after a delay growing by 100 ms per failure,
/// which slows password guessing without touching correct logins; one log line marks the
/// start of throttling and one every 100 failures after it, instead of one per attempt.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    by_peer: dashmap::DashMap<String, (std::time::Instant, u32)>,
}

/// What to do about one failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Failures from the address in the current window, this one included.
    pub failures: u32,
    pub delay: std::time::Duration,
}

impl LoginThrottle {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records a failed login from `peer`.
    pub fn failed(&self, peer: &str, limit: u32, max_delay: std::time::Duration) -> Throttle {
        let now = std::time::Instant::now();
        if self.by_peer.len() > 10_000 {
            self.by_peer
                .retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let mut entry = self.by_peer.entry(peer.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let failures = entry.1;
        let over = failures.saturating_sub(limit);
        let delay = std::time::Duration::from_millis(100 * u64::from(over)).min(max_delay);
        Throttle { failures, delay }
    }
}

impl RouterContext {
    pub fn new(config: RouterConfig, topology: TopologyHandle, shard_map: ShardMap) -> Self {
        let users = ArcSwap::from_pointee(user_table(&config.users, 0));
        let server_version = config
            .server_version
            .clone()
            .unwrap_or_else(|| "5.5.5-10.11.0-MariaDB-switchyard".into());
        RouterContext {
            pools: Pools::new(config.pool_options()),
            users,
            users_generation: AtomicU64::new(0),
            topology,
            shard_map: ArcSwap::from_pointee(shard_map),
            classifier: Classifier::new(10_000),
            metrics: RouterMetrics::default(),
            server_version,
            next_conn_id: AtomicU32::new(crate::sessions::SESSION_ID_BASE),
            replica_rr: AtomicUsize::new(0),
            failure_reporter: None,
            held: AtomicU64::new(0),
            writes_fenced: std::sync::atomic::AtomicBool::new(false),
            key_positions: dashmap::DashMap::new(),
            xa: crate::xa::XaIds::new(config.router_id.as_deref().unwrap_or(&config.listen)),
            internal_user: None,
            auto_increment: dashmap::DashMap::new(),
            sequences: dashmap::DashMap::new(),
            login_failures: LoginThrottle::default(),
            sessions: Arc::default(),
            tls: crate::tls::RouterTls::default(),
            config,
        }
    }

    /// Puts a new list of users in force for the next logins, and returns the names added,
    /// removed or given a new password. Sessions already logged in keep their user; pooled
    /// backend connections of a removed or changed user are not handed out again.
    pub fn set_users(&self, users: &[crate::config::UserConfig]) -> Vec<String> {
        let generation = self.users_generation.load(Ordering::Relaxed) + 1;
        let new = user_table(users, generation);
        let old = self.users.load_full();
        let mut changed: Vec<String> = old
            .iter()
            .filter(|(name, u)| new.get(*name).is_none_or(|n| n.password != u.password))
            .map(|(name, _)| name.clone())
            .collect();
        changed.extend(new.keys().filter(|n| !old.contains_key(*n)).cloned());
        changed.sort();
        self.users.store(Arc::new(new));
        self.users_generation.store(generation, Ordering::Release);
        for name in &changed {
            self.pools.forget_user(name);
        }
        changed
    }

    /// Loads the certificates and keys the config names: TLS offered to clients and used
    /// towards backends. Fails on a missing or unreadable file.
    pub fn with_tls(mut self) -> Result<Self, crate::tls::TlsError> {
        self.tls = crate::tls::RouterTls::load(&self.config)?;
        self.pools = Pools::new(crate::backend::PoolOptions {
            tls: self.tls.backends.clone(),
            ..self.config.pool_options()
        });
        Ok(self)
    }

    /// Wires router-observed backend failures to the orchestrator's detection.
    pub fn with_failure_reporter(mut self, reporter: FailureReporter) -> Self {
        self.failure_reporter = Some(reporter);
        self
    }

    /// Credentials for the router's own statements (XA decision log, recovery).
    pub fn with_internal_user(mut self, user: &str, password: &str) -> Self {
        self.internal_user = Some((user.into(), password.into()));
        self
    }

    pub fn next_conn_id(&self) -> u32 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Where a statement on `db`'s cluster goes now: the leader, or with `replica_ok` a
    /// fresh-enough replica when replica reads are configured.
    pub fn route(&self, db: Option<&str>, replica_ok: bool) -> Result<Route, RouteError> {
        let map = self.shard_map.load();
        self.route_cluster(map.cluster_for_db(db), replica_ok)
    }

    /// Where a statement for `cluster` goes now (see [`RouterContext::route`]).
    pub fn route_cluster(&self, cluster: &str, replica_ok: bool) -> Result<Route, RouteError> {
        self.route_cluster_in(cluster, replica_ok, false)
    }

    /// Like [`RouterContext::route_cluster`]; with `in_transaction` (a distributed
    /// transaction already open elsewhere, taking a new branch) a draining cluster is routed
    /// to: the transaction began before the hold, and the drain waits for it to end.
    pub fn route_cluster_in(
        &self,
        cluster: &str,
        replica_ok: bool,
        in_transaction: bool,
    ) -> Result<Route, RouteError> {
        let topo = self.topology.load();
        let Some(c) = topo.cluster(cluster) else {
            return Err(RouteError::Fatal(RouterError::UnknownCluster {
                cluster: cluster.to_string(),
            }));
        };
        if replica_ok {
            if let Some(max_lag) = self.config.replica_read_max_lag {
                let fresh: Vec<_> = c.fresh_replicas(max_lag).collect();
                if !fresh.is_empty() {
                    let i = self.replica_rr.fetch_add(1, Ordering::Relaxed) % fresh.len();
                    RouterMetrics::inc(&self.metrics.statements_to_replicas);
                    self.metrics.count_route(cluster, false);
                    return Ok(Route {
                        addr: fresh[i].addr.as_str().into(),
                        cluster: cluster.into(),
                        epoch: c.epoch,
                        leader: false,
                        version: topo.version,
                    });
                }
            }
        }
        if c.phase == ClusterPhase::Held || (c.phase.holds() && !in_transaction) {
            return Err(RouteError::Wait {
                version: topo.version,
                why: WaitReason::Held(cluster.to_string()),
            });
        }
        match c.leader.as_deref() {
            Some(addr) => {
                self.metrics.count_route(cluster, true);
                Ok(Route {
                    addr: addr.into(),
                    cluster: cluster.into(),
                    epoch: c.epoch,
                    leader: true,
                    version: topo.version,
                })
            }
            None => Err(RouteError::Wait {
                version: topo.version,
                why: WaitReason::NoLeader(cluster.to_string()),
            }),
        }
    }

    /// Whether a connection checked out for `route` may still take statements: a leader
    /// connection only while its cluster is serving under the same epoch and leader.
    pub fn route_current(&self, route: &Route) -> bool {
        if !route.leader {
            return true;
        }
        if self.writes_fenced.load(Ordering::Relaxed) {
            return false;
        }
        let topo = self.topology.load();
        topo.cluster(&route.cluster).is_some_and(|c| {
            c.epoch == route.epoch
                && c.phase != ClusterPhase::Held
                && c.leader.as_deref() == Some(&*route.addr)
        })
    }

    /// Whether `cluster` is draining (a move's cutover): new statements wait, open
    /// transactions go on.
    pub fn draining(&self, cluster: &str) -> bool {
        self.topology
            .load()
            .cluster(cluster)
            .is_some_and(|c| c.phase == ClusterPhase::Draining)
    }

    /// Sets or lifts the write fence; lifting it wakes the statements waiting on it (they
    /// wait for a topology change).
    pub fn set_writes_fenced(&self, fenced: bool) {
        let was = self.writes_fenced.swap(fenced, Ordering::Relaxed);
        if was && !fenced {
            self.topology.publish(|_| {});
        }
    }

    /// Waits until the topology is newer than `version`, or `deadline`. True if it changed.
    pub async fn wait_topology_change(&self, version: u64, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.topology.subscribe();
        loop {
            if self.topology.load().version > version {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.topology.load().version > version;
            }
        }
    }

    /// Tells the orchestrator (if wired) that a backend failed on live traffic.
    pub fn report_failure(&self, addr: &str) {
        if let Some(report) = &self.failure_reporter {
            (report.0)(addr);
        }
    }
}

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub addr: Arc<str>,
    pub cluster: Arc<str>,
    /// The cluster's leadership epoch when routed.
    pub epoch: u64,
    /// Routed to the leader (as opposed to a replica).
    pub leader: bool,
    /// The topology version routed with.
    pub version: u64,
}

/// Why a statement can't be routed right now.
#[derive(Debug)]
pub enum RouteError {
    /// Wait for the next topology (a leader change is under way), then route again.
    Wait { version: u64, why: WaitReason },
    /// Give up with this error.
    Fatal(RouterError),
}

/// What a held statement waits for.
#[derive(Debug, Clone)]
pub enum WaitReason {
    Held(String),
    NoLeader(String),
    /// Writes are fenced ([`RouterContext::writes_fenced`]).
    Fenced(String),
}

/// Called with a backend address when live traffic to it fails.
#[derive(Clone)]
pub struct FailureReporter(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for FailureReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailureReporter")
    }
}
