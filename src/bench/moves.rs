//! Bench rows for online moves (part `moves`): a split of keyspace `app`'s single shard (on
//! c1) into `-80` on c2 and `80-` on c3, with eight clients updating rows through the router
//! the whole time. Measured per trial, on fresh servers:
//!
//! - the copy: rows/s and MB/s (the table's data length over the copy's duration), and the
//!   clients' p99 statement latency during the copy against the same clients' p99 just
//!   before it (the baseline, same run);
//! - the catch-up: a backlog of single-row transactions written on the source while
//!   switchyard is down, applied after it starts again (transactions/s);
//! - the diff: rows compared per second;
//! - the write cutover under the clients' load: the pause and its parts as the cutover
//!   reports them, the longest statement latency the clients saw around it (their view of
//!   the pause), and their errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mover::plan::MoveRequest;
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::spread::Spread;
use crate::sandbox::{self, SandboxOptions};
use crate::scenario::writes::loopback;
use crate::App;

/// Client threads updating rows through the router.
const CLIENTS: usize = 8;

/// The part's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovesResult {
    pub trials: u32,
    pub rows: u32,
    pub measures: Vec<MovesRow>,
    pub failures: Vec<String>,
}

/// One measure over the trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovesRow {
    pub measure: String,
    pub values: Option<Spread>,
    pub note: String,
}

#[derive(Default)]
struct Measured {
    copy_rows_s: Vec<f64>,
    copy_mb_s: Vec<f64>,
    base_p99: Vec<f64>,
    copy_p99: Vec<f64>,
    catch_up: Vec<f64>,
    diff_rows_s: Vec<f64>,
    pause: Vec<f64>,
    drain: Vec<f64>,
    catch_up_held: Vec<f64>,
    publish: Vec<f64>,
    client_max: Vec<f64>,
    errors: Vec<f64>,
}

/// Runs `trials` trials on tables of `rows` rows.
pub async fn run(rows: u32, trials: u32) -> MovesResult {
    let mut m = Measured::default();
    let mut failures = Vec::new();
    for i in 0..trials {
        eprintln!("moves trial {}/{trials}", i + 1);
        let bound = Duration::from_secs(600);
        match tokio::time::timeout(bound, trial(rows, &mut m)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("trial {}: {e:#}", i + 1)),
            Err(_) => failures.push(format!("trial {}: not done within {bound:?}", i + 1)),
        }
    }
    let row = |measure: &str, v: &[f64], note: &str| MovesRow {
        measure: measure.into(),
        values: Spread::of(v),
        note: note.into(),
    };
    let ratio: Vec<f64> = m
        .copy_p99
        .iter()
        .zip(&m.base_p99)
        .map(|(c, b)| c / b)
        .collect();
    MovesResult {
        trials,
        rows,
        measures: vec![
            row("copy: rows/s", &m.copy_rows_s, "while the clients write"),
            row(
                "copy: MB/s",
                &m.copy_mb_s,
                "the table's data length over the copy's duration",
            ),
            row(
                "clients' p99 before the copy (ms)",
                &m.base_p99,
                "baseline, same run",
            ),
            row("clients' p99 during the copy (ms)", &m.copy_p99, ""),
            row(
                "p99 during / before the copy",
                &ratio,
                "the copy's cost to the source",
            ),
            row(
                "catch-up: transactions/s",
                &m.catch_up,
                "a backlog of single-row updates written while switchyard was down",
            ),
            row(
                "diff: rows/s",
                &m.diff_rows_s,
                "both sides, at one position",
            ),
            row(
                "cutover: writes paused (ms)",
                &m.pause,
                "from the routers' hold to its release",
            ),
            row(
                "cutover: drain (ms)",
                &m.drain,
                "in-flight statements and transactions ending",
            ),
            row("cutover: catch-up while held (ms)", &m.catch_up_held, ""),
            row(
                "cutover: publish (ms)",
                &m.publish,
                "reverse streams prepared, new shard map",
            ),
            row(
                "cutover: longest client statement around it (ms)",
                &m.client_max,
                "what a client saw of the pause",
            ),
            row("cutover: client errors", &m.errors, "target 0"),
        ],
        failures,
    }
}

/// Statement latencies (start offset, duration, error) of the clients.
type Samples = Arc<Mutex<Vec<(Duration, Duration, bool)>>>;

struct Clients {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(port: u16, rows: u32, origin: Instant, samples: Samples) -> Clients {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..CLIENTS)
            .map(|i| {
                let (stop, samples) = (stop.clone(), samples.clone());
                tokio::spawn(async move {
                    let Ok(mut c) = mysql_async::Conn::new(loopback(port, "app", "app")).await
                    else {
                        return;
                    };
                    let _ = c.query_drop("USE app").await;
                    let mut n = i as u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n = n
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let id = (n >> 33) % u64::from(rows) + 1;
                        let at = Instant::now();
                        let r = c
                            .exec_drop("UPDATE customers SET name = ? WHERE id = ?", (n, id))
                            .await;
                        samples.lock().unwrap_or_else(|p| p.into_inner()).push((
                            at - origin,
                            at.elapsed(),
                            r.is_err(),
                        ));
                    }
                })
            })
            .collect();
        Clients { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// p99 (ms) of the samples started within `[from, to)`.
fn p99(samples: &Samples, from: Duration, to: Duration) -> Option<f64> {
    let mut v: Vec<f64> = samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(at, _, err)| *at >= from && *at < to && !err)
        .map(|(_, d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() * 99 / 100).min(v.len() - 1)])
}

async fn trial(rows: u32, m: &mut Measured) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("sy-bench-moves-")
        .tempdir()?;
    let mut opts = SandboxOptions::on_free_ports(dir.path(), 3, 0);
    opts.shards = 1;
    let local = sandbox::provision(&opts).await?;
    let result = measure(&local, &opts, rows, m).await;
    local.stop().await?;
    result
}

async fn start_app(
    local: &orchestrator::provision::LocalClusters,
    opts: &SandboxOptions,
) -> anyhow::Result<App> {
    let app = App::start(sandbox::config_for(local, opts)).await?;
    anyhow::ensure!(
        app.wait_ready(Duration::from_secs(30)).await,
        "the clusters have no leader"
    );
    Ok(app)
}

async fn status(app: &App) -> anyhow::Result<serde_json::Value> {
    app.moves
        .status("bench")
        .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn wait_for(
    app: &App,
    what: &str,
    bound: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    loop {
        let s = status(app).await?;
        if ok(&s) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} not within {bound:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure(
    local: &orchestrator::provision::LocalClusters,
    opts: &SandboxOptions,
    rows: u32,
    m: &mut Measured,
) -> anyhow::Result<()> {
    let source = local.cluster("c1").context("c1")?.leader.clone();
    let port: u16 = source.rsplit(':').next().unwrap_or("0").parse()?;
    let mut direct = mysql_async::Conn::new(loopback(port, "switchyard", "switchyard")).await?;
    direct.query_drop("CREATE DATABASE app").await?;
    direct
        .query_drop(
            "CREATE TABLE app.customers (id BIGINT PRIMARY KEY, name VARCHAR(40), \
             pad CHAR(120) NOT NULL DEFAULT '')",
        )
        .await?;
    for start in (1..=rows).step_by(2000) {
        let end = (start + 1999).min(rows);
        direct
            .query_drop(format!(
                "INSERT INTO app.customers (id, name, pad) SELECT seq, CONCAT('n', seq), \
                 REPEAT('x', 120) FROM app.seq_{start}_to_{end}"
            ))
            .await?;
    }
    // Fresh statistics: DATA_LENGTH of a table just filled is not yet counted.
    direct.query_drop("ANALYZE TABLE app.customers").await?;
    let bytes: u64 = direct
        .query_first(
            "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' \
             AND TABLE_NAME = 'customers'",
        )
        .await?
        .unwrap_or(0);

    let app = start_app(local, opts).await?;
    let origin = Instant::now();
    let samples: Samples = Arc::default();
    let clients = Clients::start(app.router_port(), rows, origin, samples.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copy_from = origin.elapsed();
    let base = p99(&samples, Duration::from_secs(1), copy_from).context("no baseline")?;
    let request = MoveRequest::Reshard {
        keyspace: "app".into(),
        from: vec!["-".into()],
        to: vec![
            shard_map::ShardSpec {
                name: "-80".into(),
                cluster: "c2".into(),
            },
            shard_map::ShardSpec {
                name: "80-".into(),
                cluster: "c3".into(),
            },
        ],
    };
    app.moves
        .create("bench", request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for(&app, "the copy", Duration::from_secs(400), |s| {
        s["copied"] == serde_json::json!(true)
    })
    .await?;
    let copy_to = origin.elapsed();
    let secs = (copy_to - copy_from).as_secs_f64();
    m.copy_rows_s.push(f64::from(rows) / secs);
    m.copy_mb_s.push(bytes as f64 / 1e6 / secs);
    m.base_p99.push(base);
    m.copy_p99
        .push(p99(&samples, copy_from, copy_to).context("no samples")?);
    clients.stop().await;
    app.shutdown().await;

    // A backlog while switchyard is down.
    const BACKLOG: u32 = 20_000;
    let mut writers = Vec::new();
    for w in 0..CLIENTS as u32 {
        let opts = loopback(port, "switchyard", "switchyard");
        writers.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await?;
            for i in 0..BACKLOG / CLIENTS as u32 {
                let id = (w * 7919 + i * 13) % rows + 1;
                c.exec_drop("UPDATE app.customers SET name = ? WHERE id = ?", (i, id))
                    .await?;
            }
            Ok::<(), mysql_async::Error>(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let app = start_app(local, opts).await?;
    let t = Instant::now();
    wait_for(&app, "the catch-up", Duration::from_secs(300), |s| {
        s["streams"].as_array().is_some_and(|v| {
            v.iter()
                .all(|st| st["status"]["phase"] == "running" && st["behind_transactions"] == 0)
        })
    })
    .await?;
    m.catch_up
        .push(f64::from(BACKLOG) / t.elapsed().as_secs_f64());

    let t = Instant::now();
    let d = app
        .moves
        .diff("bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        d["clean"] == serde_json::json!(true),
        "the diff found differences: {d}"
    );
    m.diff_rows_s
        .push(f64::from(rows) / t.elapsed().as_secs_f64());

    let origin = Instant::now();
    let samples: Samples = Arc::default();
    let clients = Clients::start(app.router_port(), rows, origin, samples.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = origin.elapsed();
    let r = app
        .moves
        .switch_writes("bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let to = origin.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    clients.stop().await;
    let c = &r["cutovers"][0];
    let num = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
    m.pause.push(num("pause_ms"));
    m.drain.push(num("drain_ms"));
    m.catch_up_held.push(num("catch_up_ms"));
    m.publish.push(num("publish_ms"));
    let around: Vec<(Duration, Duration, bool)> = samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(at, d, _)| *at + *d >= from && *at <= to + Duration::from_millis(500))
        .cloned()
        .collect();
    m.client_max.push(
        around
            .iter()
            .map(|(_, d, _)| d.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max),
    );
    m.errors
        .push(around.iter().filter(|(_, _, e)| *e).count() as f64);
    app.shutdown().await;
    Ok(())
}
