//! The sharded rows: switchyard against MariaDB Spider over the same shards and data.
//!
//! Two clusters of one MariaDB each hold four shards of keyspace `sb` (range sharding: a
//! `numeric` vindex, shard `s` owns ids `[s * 1e6, (s + 1) * 1e6)`); the rows are loaded
//! through switchyard. A third MariaDB runs Spider: one `CREATE SERVER` per shard and a Spider
//! table `PARTITION BY RANGE (id)` with the same boundaries, so both read and write exactly the
//! same backend tables. Each row runs one workload with N client connections (mysql_async,
//! text protocol) for a fixed time. A workload a target refuses (1235) is reported as refused.
//!
//! CPU per statement: the clients run on a runtime of their own (threads named
//! [`CLIENT_THREADS`]), so the router's CPU is this process's less theirs; Spider's is its
//! server's process; the shards' is their two servers', for either target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mysql_async::prelude::*;
use mysql_async::Conn;
use orchestrator::{LocalClusters, ProvisionSpec};
use rand::{Rng, SeedableRng};
use shard_map::KeyRange;

use super::cpu::{self, CpuCost, CpuTime};
use super::matrix::{RowSpec, Target};
use super::report::{self, RowResult};
use super::stage::Stage;
use super::sysbench::{Latency, Stats, PASSWORD, USER};
use crate::App;

const KEYSPACE: &str = "sb";
/// The name of the client runtime's threads (the kernel keeps 15 bytes of a name).
const CLIENT_THREADS: &str = "sy-bench-client";
const SHARDS: u64 = 4;
/// Shard `s` owns ids `[s * SHARD_SPAN, (s + 1) * SHARD_SPAN)` (the last one to the end).
const SHARD_SPAN: u64 = 1_000_000;
/// Rows the insert workload adds start here within each shard's span (loaded rows stay below).
const INSERT_BASE: u64 = 500_000;
const TABLE_COLUMNS: &str = "id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, grp INT NOT NULL, \
     val DECIMAL(12,2) NOT NULL, pad CHAR(60) NOT NULL, KEY k (k)";

/// How the sharded data is laid out, for the report.
pub fn setup_description(rows_per_shard: u32) -> String {
    format!(
        "{SHARDS} shards (range: numeric vindex / PARTITION BY RANGE) on 2 MariaDB servers, \
         {rows_per_shard} rows per shard; clients: mysql_async, text protocol"
    )
}

/// One statement shape, run over and over by every client of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PointSelect,
    RangeScan,
    ScatterCount,
    ScatterSumGroup,
    OrderByLimit,
    MultiShardInsert,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::PointSelect,
        Workload::RangeScan,
        Workload::ScatterCount,
        Workload::ScatterSumGroup,
        Workload::OrderByLimit,
        Workload::MultiShardInsert,
    ];
    /// A quick run: a single-shard statement and a scatter one.
    pub const QUICK: [Workload; 2] = [Workload::PointSelect, Workload::ScatterCount];

    /// The row name's workload part (every one starts with [`super::matrix::SHARDED_PREFIX`]).
    pub fn name(self) -> &'static str {
        match self {
            Workload::PointSelect => "sharded_point_select",
            Workload::RangeScan => "sharded_range_scan",
            Workload::ScatterCount => "sharded_scatter_count",
            Workload::ScatterSumGroup => "sharded_scatter_sum_group",
            Workload::OrderByLimit => "sharded_order_by_limit",
            Workload::MultiShardInsert => "sharded_multi_shard_insert",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The names of a run's workloads.
    pub fn names(quick: bool) -> Vec<&'static str> {
        let set: &[Workload] = if quick {
            &Workload::QUICK
        } else {
            &Workload::ALL
        };
        set.iter().map(|w| w.name()).collect()
    }

    /// The statement's shape, for the report.
    pub fn shape(self) -> &'static str {
        match self {
            Workload::PointSelect => "SELECT id, k, grp, val, pad FROM t WHERE id = ?",
            Workload::RangeScan => "SELECT id, k, val FROM t WHERE id BETWEEN ? AND ? + 99",
            Workload::ScatterCount => "SELECT COUNT(*) FROM t",
            Workload::ScatterSumGroup => "SELECT grp, SUM(val), COUNT(*) FROM t GROUP BY grp",
            Workload::OrderByLimit => "SELECT id, k FROM t ORDER BY k, id LIMIT 10",
            Workload::MultiShardInsert => "INSERT INTO t VALUES (...), (...), (...), (...)",
        }
    }

    /// One statement; `next_id` numbers inserted rows across every thread and target.
    fn sql(self, rng: &mut impl Rng, rows_per_shard: u64, next_id: &AtomicU64) -> String {
        let shard = rng.random_range(0..SHARDS);
        match self {
            Workload::PointSelect => {
                let id = shard * SHARD_SPAN + rng.random_range(1..=rows_per_shard);
                format!("SELECT id, k, grp, val, pad FROM t WHERE id = {id}")
            }
            Workload::RangeScan => {
                let lo = shard * SHARD_SPAN + rng.random_range(1..=rows_per_shard - 99);
                format!(
                    "SELECT id, k, val FROM t WHERE id BETWEEN {lo} AND {}",
                    lo + 99
                )
            }
            Workload::ScatterCount => "SELECT COUNT(*) FROM t".into(),
            Workload::ScatterSumGroup => {
                "SELECT grp, SUM(val), COUNT(*) FROM t GROUP BY grp".into()
            }
            Workload::OrderByLimit => "SELECT id, k FROM t ORDER BY k, id LIMIT 10".into(),
            Workload::MultiShardInsert => {
                let n = next_id.fetch_add(1, Ordering::Relaxed);
                let rows: Vec<String> = (0..SHARDS)
                    .map(|s| row_values(rng, s * SHARD_SPAN + INSERT_BASE + n, rows_per_shard))
                    .collect();
                format!(
                    "INSERT INTO t (id, k, grp, val, pad) VALUES {}",
                    rows.join(", ")
                )
            }
        }
    }
}

fn row_values(rng: &mut impl Rng, id: u64, rows_per_shard: u64) -> String {
    let k = rng.random_range(1..=rows_per_shard * SHARDS);
    let grp = rng.random_range(0..16);
    let cents: u64 = rng.random_range(0..10_000_000);
    let pad: String = (0..60)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!(
        "({id}, {k}, {grp}, {}.{:02}, '{pad}')",
        cents / 100,
        cents % 100
    )
}

/// The shards: key range, cluster, database.
fn shards() -> Vec<(KeyRange, &'static str, String)> {
    (0..SHARDS)
        .map(|s| {
            let range = KeyRange {
                start: s * SHARD_SPAN,
                end: (s + 1 < SHARDS).then_some((s + 1) * SHARD_SPAN),
            };
            let cluster = if s % 2 == 0 { "c1" } else { "c2" };
            let db = shard_map::shardmap::shard_database_name(KEYSPACE, &range, true);
            (range, cluster, db)
        })
        .collect()
}

/// Measures `rows` in the order of `schedule` ([`super::matrix::schedule`]) with `rows_per_shard`
/// rows loaded in each shard and `seconds` per run; returns one merged result per row and
/// the MariaDB version. Every server it starts is stopped before it returns, also on error.
pub async fn run(
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
    rows_per_shard: u32,
    seconds: u32,
) -> anyhow::Result<(Vec<RowResult>, String)> {
    let rows_per_shard = u64::from(rows_per_shard);
    ensure!(
        (100..INSERT_BASE).contains(&rows_per_shard),
        "sharded rows need 100 to {} rows per shard (--table-size)",
        INSERT_BASE - 1
    );
    eprintln!("starting two clusters, switchyard and a Spider server");
    let stage = Stage::start("sy-bench-sharded-", 2, 0).await?;
    let mut spec = ProvisionSpec::new(stage.tmp.path().join("spider"));
    spec.clusters = 1;
    spec.replicas = 0;
    spec.semi_sync = false;
    let spider = match LocalClusters::start(spec).await {
        Ok(s) => s,
        Err(e) => {
            stage.stop().await;
            return Err(anyhow::Error::new(e).context("starting the Spider server"));
        }
    };
    let outcome = async {
        let ports = prepare(
            &stage.app,
            &stage.local,
            &spider,
            &stage.admin_token,
            rows_per_shard,
        )
        .await?;
        measure(rows, schedule, &ports, rows_per_shard, seconds).await
    }
    .await;
    stage.stop().await;
    if let Err(e) = spider.stop().await {
        tracing::warn!(error = %e, "stopping the Spider server");
    }
    outcome
}

/// Where the two targets listen, and the servers' version.
struct Ports {
    spider: u16,
    router: u16,
    mariadbd: String,
    /// The Spider server's process, and the shards' servers'.
    spider_pid: Option<u32>,
    shard_pids: Vec<u32>,
}

impl Ports {
    fn of(&self, target: Target) -> u16 {
        match target {
            Target::Spider => self.spider,
            _ => self.router,
        }
    }
}

/// The process of `cluster`'s leader, for its CPU.
fn leader_pid(l: &LocalClusters, cluster: &str) -> Option<u32> {
    let node = l.cluster(cluster)?.leader_node()?;
    l.pid(&node.addr)
}

fn leader_port(l: &LocalClusters, cluster: &str) -> anyhow::Result<u16> {
    Ok(l.cluster(cluster)
        .and_then(|c| c.leader_node())
        .with_context(|| format!("no leader of {cluster}"))?
        .port)
}

/// The shard map, the table and its rows through switchyard, then Spider over the same
/// backend tables; checks that both see the same rows.
async fn prepare(
    app: &App,
    local: &LocalClusters,
    spider: &LocalClusters,
    token: &str,
    rows_per_shard: u64,
) -> anyhow::Result<Ports> {
    ensure!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard saw no healthy leader within 30 s"
    );
    // The bench keyspace: four range shards, table `t` by `id` with the numeric vindex.
    let shards = shards();
    let map = serde_json::json!({"keyspaces": [{
        "name": KEYSPACE,
        "default_cluster": "c1",
        "shards": shards.iter().map(|(r, c, _)| serde_json::json!({"name": r.name(), "cluster": c}))
            .collect::<Vec<_>>(),
        "tables": [{"name": "t", "kind": "sharded", "column": "id", "vindex": "numeric"}],
    }]});
    let r = reqwest::Client::new()
        .put(format!("http://{}/api/v1/shard-map", app.admin_addr))
        .bearer_auth(token)
        .json(&map)
        .send()
        .await
        .context("setting the shard map")?;
    let status = r.status();
    ensure!(
        status.is_success(),
        "the shard map was refused: {status} {}",
        r.text().await.unwrap_or_default()
    );

    let router = app.router_port();
    let mut c = Conn::new(super::loopback_opts(router, USER, PASSWORD, None))
        .await
        .context("connecting through switchyard")?;
    c.query_drop(format!("CREATE DATABASE {KEYSPACE}")).await?;
    c.query_drop(format!("USE {KEYSPACE}")).await?;
    c.query_drop(format!("CREATE TABLE t ({TABLE_COLUMNS})"))
        .await
        .context("creating the sharded table")?;
    let mariadbd: String = c.query_first("SELECT VERSION()").await?.unwrap_or_default();
    eprintln!("loading {rows_per_shard} rows per shard through switchyard");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for s in 0..SHARDS {
        let ids: Vec<u64> = (1..=rows_per_shard).map(|i| s * SHARD_SPAN + i).collect();
        for chunk in ids.chunks(500) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|id| row_values(&mut rng, *id, rows_per_shard))
                .collect();
            c.query_drop(format!(
                "INSERT INTO t (id, k, grp, val, pad) VALUES {}",
                rows.join(", ")
            ))
            .await
            .context("loading through switchyard")?;
        }
    }
    drop(c);

    // Spider over the same backend tables.
    let spider_port = leader_port(spider, "c1")?;
    let spec = spider.spec();
    let mut admin = Conn::new(super::loopback_opts(
        spider_port,
        &spec.admin_user,
        spec.admin_password.as_str(),
        None,
    ))
    .await
    .context("connecting to the Spider server")?;
    admin
        .query_drop("INSTALL SONAME 'ha_spider'")
        .await
        .context("INSTALL SONAME 'ha_spider' (apt-get install -y mariadb-plugin-spider)")?;
    admin
        .query_drop(format!("CREATE DATABASE {KEYSPACE}"))
        .await?;
    let mut partitions = Vec::new();
    for (i, (range, cluster, db)) in shards.iter().enumerate() {
        let port = leader_port(local, cluster)?;
        admin
            .query_drop(format!(
                "CREATE SERVER sh{i} FOREIGN DATA WRAPPER mysql OPTIONS \
                 (HOST '127.0.0.1', DATABASE '{db}', USER '{USER}', PASSWORD '{PASSWORD}', \
                 PORT {port})"
            ))
            .await
            .context("creating a Spider server entry")?;
        let bound = match range.end {
            Some(end) => format!("({end})"),
            None => "MAXVALUE".into(),
        };
        partitions.push(format!(
            "PARTITION p{i} VALUES LESS THAN {bound} COMMENT = 'srv \"sh{i}\"'"
        ));
    }
    admin
        .query_drop(format!(
            "CREATE TABLE {KEYSPACE}.t ({TABLE_COLUMNS}) ENGINE=SPIDER \
             COMMENT='wrapper \"mysql\", table \"t\"' PARTITION BY RANGE (id) ({})",
            partitions.join(", ")
        ))
        .await
        .context("creating the Spider table")?;
    drop(admin);

    let ports = Ports {
        spider: spider_port,
        router,
        mariadbd,
        spider_pid: leader_pid(spider, "c1"),
        shard_pids: ["c1", "c2"]
            .iter()
            .filter_map(|c| leader_pid(local, c))
            .collect(),
    };
    // Both see every row, and the same rows.
    let total = rows_per_shard * SHARDS;
    for target in Target::SHARDED {
        let mut c = Conn::new(super::loopback_opts(
            ports.of(target),
            USER,
            PASSWORD,
            Some(KEYSPACE),
        ))
        .await
        .with_context(|| format!("connecting through {target}"))?;
        let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await?;
        ensure!(
            n == Some(total),
            "{target} sees {n:?} rows, expected {total}"
        );
        let probe = SHARD_SPAN * 3 + 7;
        let k: Option<u64> = c
            .query_first(format!("SELECT k FROM t WHERE id = {probe}"))
            .await?;
        ensure!(k.is_some(), "{target} lacks row {probe}");
    }
    Ok(ports)
}

/// A warm-up second per target, then the rows in schedule order.
async fn measure(
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
    ports: &Ports,
    rows_per_shard: u64,
    seconds: u32,
) -> anyhow::Result<(Vec<RowResult>, String)> {
    let next_id = Arc::new(AtomicU64::new(1));
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .context("starting the clients' runtime")?;
    let outcome = measure_on(
        rows,
        schedule,
        ports,
        rows_per_shard,
        seconds,
        &next_id,
        clients.handle(),
    )
    .await;
    clients.shutdown_background();
    outcome
}

/// CPU readings around a row: this process, its client threads, Spider's server, the shards'.
struct Readings {
    process: Option<CpuTime>,
    clients: Option<CpuTime>,
    spider: Option<CpuTime>,
    shards: Option<CpuTime>,
}

impl Readings {
    fn take(ports: &Ports) -> Readings {
        let shards = ports
            .shard_pids
            .iter()
            .map(|p| cpu::process(*p).ok())
            .sum::<Option<CpuTime>>()
            .filter(|_| !ports.shard_pids.is_empty());
        Readings {
            process: cpu::this_process().ok(),
            clients: cpu::threads_named(CLIENT_THREADS).ok(),
            spider: ports.spider_pid.and_then(|p| cpu::process(p).ok()),
            shards,
        }
    }

    /// The proxy's CPU (the router: this process less the clients; or Spider's server) and
    /// the shards', from `self` (before) to `after`, per statement of `result`.
    fn charge(&self, after: &Readings, result: &mut RowResult) {
        let used = |a: Option<CpuTime>, b: Option<CpuTime>| Some(b?.since(a?));
        let queries = result.stats.queries;
        result.cpu = match result.target {
            Target::Spider => {
                used(self.spider, after.spider).and_then(|t| CpuCost::new("spider", t, queries))
            }
            _ => used(self.process, after.process)
                .zip(used(self.clients, after.clients))
                .and_then(|(all, clients)| CpuCost::new("switchyard", all.since(clients), queries)),
        };
        result.leader_cpu =
            used(self.shards, after.shards).and_then(|t| CpuCost::new("shards", t, queries));
    }
}

async fn measure_on(
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
    ports: &Ports,
    rows_per_shard: u64,
    seconds: u32,
    next_id: &Arc<AtomicU64>,
    clients: &tokio::runtime::Handle,
) -> anyhow::Result<(Vec<RowResult>, String)> {
    // Buffer pools, pools and caches of both paths warm before the first timed row.
    for target in Target::SHARDED {
        let _ = run_one(
            clients,
            ports.of(target),
            Workload::PointSelect,
            4,
            Duration::from_secs(1),
            rows_per_shard,
            next_id,
        )
        .await;
    }
    let results = report::measure_scheduled(rows, schedule, async |row: &RowSpec| {
        let result = match Workload::from_name(row.workload) {
            Some(w) => {
                let threads = row.threads.max(1) as usize;
                let duration = Duration::from_secs(u64::from(seconds));
                let port = ports.of(row.target);
                let before = Readings::take(ports);
                let outcome =
                    run_one(clients, port, w, threads, duration, rows_per_shard, next_id).await;
                let after = Readings::take(ports);
                let mut result = outcome.into_result(row);
                if result.measured() {
                    before.charge(&after, &mut result);
                }
                result
            }
            None => RowResult::failed(row, &anyhow::anyhow!("no sharded workload of that name")),
        };
        match (&result.refused, &result.failure) {
            (Some(why), _) | (None, Some(why)) => eprintln!("{why}"),
            (None, None) => eprintln!(
                "{:.0} qps, p50 {:.2} ms, p99 {:.2} ms",
                result.stats.qps, result.stats.latency.p50, result.stats.latency.p99
            ),
        }
        Ok(result)
    })
    .await?;
    Ok((results, ports.mariadbd.clone()))
}

/// What one run of a workload against one target came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Measured(Stats),
    /// The first statement got 1235: the target does not support the workload.
    Refused(String),
    Failed(String),
}

impl Outcome {
    fn into_result(self, row: &RowSpec) -> RowResult {
        match self {
            Outcome::Measured(stats) => RowResult::new(row, stats),
            Outcome::Refused(why) => RowResult {
                refused: Some(why),
                ..RowResult::new(row, Stats::default())
            },
            Outcome::Failed(why) => RowResult::failed(row, &anyhow::anyhow!(why)),
        }
    }
}

/// Runs `workload` against `port` with `threads` clients for `duration`. A first statement
/// decides whether it runs at all: 1235 is a refusal, another error a failure.
async fn run_one(
    clients: &tokio::runtime::Handle,
    port: u16,
    workload: Workload,
    threads: usize,
    duration: Duration,
    rows_per_shard: u64,
    next_id: &Arc<AtomicU64>,
) -> Outcome {
    let opts = super::loopback_opts(port, USER, PASSWORD, Some(KEYSPACE));
    let probe = {
        let (opts, next_id) = (opts.clone(), next_id.clone());
        clients.spawn(async move {
            let mut c = Conn::new(opts).await?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            c.query_drop(workload.sql(&mut rng, rows_per_shard, &next_id))
                .await
        })
    };
    let probe = match probe.await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("the first statement's task failed: {e}")),
    };
    match probe {
        Ok(()) => {}
        Err(mysql_async::Error::Server(e)) if e.code == 1235 => {
            return Outcome::Refused(format!("ERROR {} ({}): {}", e.code, e.state, e.message));
        }
        Err(e) => return Outcome::Failed(format!("the first statement failed: {e}")),
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let next_id = next_id.clone();
            let opts = opts.clone();
            clients.spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                let mut c = match Conn::new(opts).await {
                    Ok(c) => c,
                    Err(e) => return (lat, 1, Some(e.to_string())),
                };
                while Instant::now() < deadline {
                    let sql = workload.sql(&mut rng, rows_per_shard, &next_id);
                    let t0 = Instant::now();
                    match c.query_drop(sql).await {
                        Ok(()) => lat.push(t0.elapsed().as_micros() as u64),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                drop(c);
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((l, e, f)) => {
                lat.extend(l);
                errors += e;
                first_error = first_error.or(f);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    match (lat.is_empty(), first_error) {
        (true, Some(e)) => Outcome::Failed(format!("no statement succeeded: {e}")),
        (true, None) => Outcome::Failed("no statement ran".into()),
        (false, _) => Outcome::Measured(stats(lat, errors, elapsed)),
    }
}

/// Totals, rates and latency (ms) from the statements' latencies in µs.
fn stats(mut lat_us: Vec<u64>, errors: u64, elapsed_s: f64) -> Stats {
    lat_us.sort_unstable();
    let n = lat_us.len();
    // Nearest rank: the smallest latency with at least `p` of the statements at or below it.
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        lat_us[i] as f64 / 1000.0
    };
    let avg = if n == 0 {
        0.0
    } else {
        lat_us.iter().sum::<u64>() as f64 / n as f64 / 1000.0
    };
    let qps = if elapsed_s > 0.0 {
        n as f64 / elapsed_s
    } else {
        0.0
    };
    Stats {
        queries: n as u64,
        qps,
        transactions: n as u64,
        tps: qps,
        errors,
        reconnects: 0,
        time_s: elapsed_s,
        latency: Latency {
            avg,
            p50: pct(0.50),
            p99: pct(0.99),
            p99_sysbench: 0.0,
            max: lat_us.last().map_or(0.0, |&m| m as f64 / 1000.0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_round_trip_and_are_picked_by_sharded() {
        use crate::bench::matrix;
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            assert!(matrix::is_sharded(w.name()), "{}", w.name());
        }
        assert_eq!(Workload::names(true).len(), Workload::QUICK.len());
        assert_eq!(Workload::from_name("oltp_point_select"), None);
    }

    #[test]
    fn latencies_give_nearest_rank_percentiles() {
        let s = stats((1..=200).map(|i| i * 100).collect(), 2, 2.0);
        assert_eq!((s.queries, s.qps, s.errors), (200, 100.0, 2));
        assert_eq!(s.latency.p50, 10.0);
        assert_eq!(s.latency.p99, 19.8);
        assert_eq!(s.latency.max, 20.0);
        assert!((s.latency.avg - 10.05).abs() < 1e-9);
    }

    #[test]
    fn a_refused_workload_becomes_a_refused_row() {
        let row = RowSpec {
            workload: "sharded_scatter_sum_group",
            protocol: crate::bench::matrix::Protocol::Text,
            threads: 8,
            target: Target::Switchyard,
        };
        let r = Outcome::Refused("ERROR 1235 (42000): not yet".into()).into_result(&row);
        assert!(!r.measured() && r.failure.is_none());
        assert_eq!(r.key(), "sharded_scatter_sum_group/text/8/switchyard");
    }
}
