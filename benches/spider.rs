//! `cargo bench --bench spider`: switchyard against MariaDB Spider over the same shards.
//!
//! Two clusters of one MariaDB each hold four shards of keyspace `sb` (range sharding: a
//! `numeric` vindex, shard `s` owns ids `[s * 1e6, (s + 1) * 1e6)`). The rows are loaded through
//! switchyard. A third MariaDB runs Spider: one `CREATE SERVER` per shard and a Spider table
//! `PARTITION BY RANGE (id)` with the same boundaries, so both read and write exactly the same
//! backend tables. Each workload runs for a fixed time with N client threads (mysql_async, text
//! protocol) against Spider and then switchyard (the order alternates). A workload the router
//! refuses (1235) is reported as refused.
//!
//! Settings come from the environment (cargo owns the command line) or `-- --quick`:
//! - `SWITCHYARD_BENCH_QUICK=1` or `--quick`: 3 s per row, 5,000 rows per shard
//! - `SWITCHYARD_BENCH_SECONDS`, `SWITCHYARD_BENCH_THREADS` (default 8), `SWITCHYARD_BENCH_ROWS`
//!   (rows per shard)
//! - `SWITCHYARD_BENCH_OUT=dir` (default `benches/results`): `spider[-quick].{md,json,png}`
//!
//! `cargo test --all-targets` runs bench targets without `--bench`: then this does nothing.

#[path = "spider/report.rs"]
mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use orchestrator::{LocalClusters, ProvisionSpec};
use rand::{Rng, SeedableRng};
use report::{Measured, Report, Row, Status};
use shard_map::KeyRange;
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::App;

const KEYSPACE: &str = "sb";
const SHARDS: u64 = 4;
/// Shard `s` owns ids `[s * SHARD_SPAN, (s + 1) * SHARD_SPAN)` (the last one to the end).
const SHARD_SPAN: u64 = 1_000_000;
/// Rows the insert workload adds start here within each shard's span (loaded rows stay below).
const INSERT_BASE: u64 = 500_000;
const TABLE_COLUMNS: &str = "id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, grp INT NOT NULL, \
     val DECIMAL(12,2) NOT NULL, pad CHAR(60) NOT NULL, KEY k (k)";

pub struct Settings {
    quick: bool,
    seconds: u64,
    threads: usize,
    rows_per_shard: u64,
    out_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    PointSelect,
    RangeScan,
    ScatterCount,
    ScatterSumGroup,
    OrderByLimit,
    MultiShardInsert,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::PointSelect,
        Workload::RangeScan,
        Workload::ScatterCount,
        Workload::ScatterSumGroup,
        Workload::OrderByLimit,
        Workload::MultiShardInsert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::PointSelect => "point select",
            Workload::RangeScan => "range scan (100 rows)",
            Workload::ScatterCount => "scatter COUNT(*)",
            Workload::ScatterSumGroup => "scatter SUM/GROUP BY",
            Workload::OrderByLimit => "ORDER BY non-key LIMIT 10",
            Workload::MultiShardInsert => "multi-shard INSERT (4 rows)",
        }
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

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Spider,
    Switchyard,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Spider => "spider",
            Target::Switchyard => "switchyard",
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

fn opts(port: u16, user: &str, password: &str, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .into()
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("Spider comparison: skipped outside `cargo bench --bench spider`");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick") || env("SWITCHYARD_BENCH_QUICK").is_some();
    let settings = Settings {
        quick,
        seconds: env_parse("SWITCHYARD_BENCH_SECONDS")?.unwrap_or(if quick { 3 } else { 15 }),
        threads: env_parse("SWITCHYARD_BENCH_THREADS")?.unwrap_or(8),
        rows_per_shard: env_parse("SWITCHYARD_BENCH_ROWS")?.unwrap_or(if quick {
            5_000
        } else {
            50_000
        }),
        out_dir: env("SWITCHYARD_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results")),
    };
    ensure!(
        settings.seconds > 0 && settings.threads > 0 && settings.rows_per_shard >= 100,
        "seconds and threads must be positive, rows per shard at least 100"
    );
    ensure!(
        settings.rows_per_shard < INSERT_BASE,
        "at most {} rows per shard",
        INSERT_BASE - 1
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&settings))?;
    let stem = if settings.quick {
        "spider-quick"
    } else {
        "spider"
    };
    std::fs::create_dir_all(&settings.out_dir)?;
    let md = report.markdown();
    std::fs::write(settings.out_dir.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        settings.out_dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&report.json())? + "\n",
    )?;
    report.chart(&settings.out_dir.join(format!("{stem}.png")))?;
    println!("{md}");
    eprintln!("written to {}/{stem}.*", settings.out_dir.display());
    Ok(())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty() && v != "0")
}

fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    env(name)
        .map(|v| v.trim().parse().with_context(|| format!("{name}={v}")))
        .transpose()
}

/// The servers and the router of one run; stopped by `stop`, killed on drop.
struct Setup {
    local: LocalClusters,
    spider: LocalClusters,
    app: App,
}

async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("sy-spider-")
        .tempdir()
        .context("creating a temp dir")?;
    eprintln!(
        "starting two clusters, switchyard and a Spider server in {}",
        tmp.path().display()
    );
    let sandbox_opts = SandboxOptions {
        dir: tmp.path().join("clusters"),
        clusters: 2,
        replicas: 0,
        base_port: None,
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: format!("{:016x}", rand::random::<u64>()),
        app_user: "app".into(),
        app_password: "app".into(),
        shards: 0,
    };
    let local = sandbox::provision(&sandbox_opts)
        .await
        .context("starting MariaDB (apt-get install -y mariadb-server)")?;
    let app = App::start(sandbox::config_for(&local, &sandbox_opts))
        .await
        .context("starting switchyard")?;
    let mut spec = ProvisionSpec::new(tmp.path().join("spider"));
    spec.clusters = 1;
    spec.replicas = 0;
    spec.semi_sync = false;
    let spider = LocalClusters::start(spec)
        .await
        .context("starting the Spider server")?;
    let setup = Setup { local, spider, app };
    let outcome = measure(settings, &setup, &sandbox_opts.admin_token).await;
    setup.app.shutdown().await;
    for l in [setup.local, setup.spider] {
        if let Err(e) = l.stop().await {
            eprintln!("stopping the benchmark's servers: {e}");
        }
    }
    let (rows, mariadbd) = outcome?;
    Ok(Report {
        started_at: switchyard::bench::meta::utc(started_at),
        duration_s: clock.elapsed().as_secs_f64(),
        git_commit: switchyard::bench::meta::git_commit(),
        nproc: switchyard::bench::meta::nproc(),
        mariadbd,
        quick: settings.quick,
        seconds: settings.seconds,
        threads: settings.threads,
        rows_per_shard: settings.rows_per_shard,
        shards: SHARDS,
        rows,
    })
}

fn leader_port(l: &LocalClusters, cluster: &str) -> anyhow::Result<u16> {
    Ok(l.cluster(cluster)
        .and_then(|c| c.leader_node())
        .with_context(|| format!("no leader of {cluster}"))?
        .port)
}

async fn measure(
    settings: &Settings,
    setup: &Setup,
    token: &str,
) -> anyhow::Result<(Vec<Row>, String)> {
    ensure!(
        setup.app.wait_ready(Duration::from_secs(30)).await,
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
        .put(format!("http://{}/api/v1/shard-map", setup.app.admin_addr))
        .bearer_auth(token)
        .json(&map)
        .send()
        .await?;
    let status = r.status();
    ensure!(
        status.is_success(),
        "the shard map was refused: {status} {}",
        r.text().await.unwrap_or_default()
    );

    let router_port = setup.app.router_addr.port();
    let mut c = Conn::new(opts(router_port, "app", "app", None)).await?;
    c.query_drop(format!("CREATE DATABASE {KEYSPACE}")).await?;
    c.query_drop(format!("USE {KEYSPACE}")).await?;
    c.query_drop(format!("CREATE TABLE t ({TABLE_COLUMNS})"))
        .await?;
    let mariadbd: String = c.query_first("SELECT VERSION()").await?.unwrap_or_default();
    eprintln!(
        "loading {} rows per shard through switchyard",
        settings.rows_per_shard
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for s in 0..SHARDS {
        let ids: Vec<u64> = (1..=settings.rows_per_shard)
            .map(|i| s * SHARD_SPAN + i)
            .collect();
        for chunk in ids.chunks(500) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|id| row_values(&mut rng, *id, settings.rows_per_shard))
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
    let spider_port = leader_port(&setup.spider, "c1")?;
    let spec = setup.spider.spec();
    let mut admin = Conn::new(opts(
        spider_port,
        &spec.admin_user,
        spec.admin_password.as_str(),
        None,
    ))
    .await?;
    admin
        .query_drop("INSTALL SONAME 'ha_spider'")
        .await
        .context("INSTALL SONAME 'ha_spider' (apt-get install -y mariadb-plugin-spider)")?;
    admin
        .query_drop(format!("CREATE DATABASE {KEYSPACE}"))
        .await?;
    let mut partitions = Vec::new();
    for (i, (range, cluster, db)) in shards.iter().enumerate() {
        let port = leader_port(&setup.local, cluster)?;
        admin
            .query_drop(format!(
                "CREATE SERVER sh{i} FOREIGN DATA WRAPPER mysql OPTIONS \
                 (HOST '127.0.0.1', DATABASE '{db}', USER 'app', PASSWORD 'app', PORT {port})"
            ))
            .await?;
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

    // Both see every row, and the same rows.
    let total = settings.rows_per_shard * SHARDS;
    for (target, port) in [
        (Target::Spider, spider_port),
        (Target::Switchyard, router_port),
    ] {
        let mut c = Conn::new(opts(port, "app", "app", Some(KEYSPACE))).await?;
        let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM t").await?;
        ensure!(
            n == Some(total),
            "{} sees {n:?} rows, expected {total}",
            target.name()
        );
        let probe = SHARD_SPAN * 3 + 7;
        let k: Option<u64> = c
            .query_first(format!("SELECT k FROM t WHERE id = {probe}"))
            .await?;
        ensure!(k.is_some(), "{} lacks row {probe}", target.name());
    }

    let next_id = Arc::new(AtomicU64::new(1));
    let port_of = |t: Target| match t {
        Target::Spider => spider_port,
        Target::Switchyard => router_port,
    };
    // Warm up the buffer pools, pools and caches of both paths.
    for t in [Target::Spider, Target::Switchyard] {
        run_one(
            port_of(t),
            Workload::PointSelect,
            settings.threads,
            Duration::from_secs(1),
            settings.rows_per_shard,
            &next_id,
        )
        .await;
    }
    let mut rows = Vec::new();
    for (i, w) in Workload::ALL.into_iter().enumerate() {
        let order = if i % 2 == 0 {
            [Target::Spider, Target::Switchyard]
        } else {
            [Target::Switchyard, Target::Spider]
        };
        let mut spider = None;
        let mut switchyard = None;
        for t in order {
            eprint!("{} / {} ... ", w.name(), t.name());
            let m = run_one(
                port_of(t),
                w,
                settings.threads,
                Duration::from_secs(settings.seconds),
                settings.rows_per_shard,
                &next_id,
            )
            .await;
            match &m.status {
                Status::Ok => eprintln!(
                    "{:.0} qps, p50 {:.2} ms, p99 {:.2} ms",
                    m.qps, m.p50_ms, m.p99_ms
                ),
                Status::Refused(why) | Status::Failed(why) => eprintln!("{why}"),
            }
            match t {
                Target::Spider => spider = Some(m),
                Target::Switchyard => switchyard = Some(m),
            }
        }
        rows.push(Row {
            workload: w,
            spider: spider.expect("measured"),
            switchyard: switchyard.expect("measured"),
        });
    }
    Ok((rows, mariadbd))
}

/// Runs `workload` against `port` with `threads` clients for `duration`. A first statement
/// decides whether it runs at all: 1235 is a refusal, another error a failure.
async fn run_one(
    port: u16,
    workload: Workload,
    threads: usize,
    duration: Duration,
    rows_per_shard: u64,
    next_id: &Arc<AtomicU64>,
) -> Measured {
    let probe = async {
        let mut c = Conn::new(opts(port, "app", "app", Some(KEYSPACE))).await?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        c.query_drop(workload.sql(&mut rng, rows_per_shard, next_id))
            .await
    };
    match probe.await {
        Ok(()) => {}
        Err(mysql_async::Error::Server(e)) if e.code == 1235 => {
            return Measured::status(Status::Refused(format!("refused: {}", e.message)));
        }
        Err(e) => return Measured::status(Status::Failed(format!("failed: {e}"))),
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let next_id = next_id.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                let mut c = match Conn::new(opts(port, "app", "app", Some(KEYSPACE))).await {
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
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let status = match &first_error {
        Some(e) if lat.is_empty() => Status::Failed(format!("failed: {e}")),
        _ => Status::Ok,
    };
    if errors > 0 {
        eprint!("({errors} errors: {}) ", first_error.unwrap_or_default());
    }
    Measured {
        status,
        queries: lat.len() as u64,
        errors,
        qps: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}
