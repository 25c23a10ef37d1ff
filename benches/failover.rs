//! Failover and switchover, measured through the router under a steady write workload.
//!
//! Unplanned: `kill -9` of the leader while writers insert through the router; reported is
//! the time from the kill to the acknowledgement of the first write sent after it (which ran
//! on the new leader), and the client errors seen (writes in flight at the kill get 2013:
//! their outcome is unknown, as on a direct connection). Planned: a switchover under the same load; reported is the longest
//! pause between acknowledged writes and the client errors. Each run uses fresh clusters.
//!
//! `cargo bench --bench failover`; `SWITCHYARD_BENCH_RUNS` (default 10) failovers and
//! `SWITCHYARD_BENCH_SWITCHOVERS` (default 5) switchovers. Results go to stdout and to
//! `bench-results/failover.json`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::App;

const WRITERS: u64 = 4;

#[derive(Default)]
struct Timeline {
    /// When each acknowledged write was sent and when its OK arrived.
    sent_acked: Mutex<Vec<(Instant, Instant)>>,
    acks: Mutex<Vec<Instant>>,
    errors: Mutex<Vec<u16>>,
}

fn opts(port: u16) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false)
        .into()
}

async fn writer(port: u16, base: u64, tl: Arc<Timeline>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Conn> = None;
    let mut id = base;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::new(opts(port)).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tl.errors.lock().unwrap().push(0);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        id += 1;
        let sent = Instant::now();
        match c.exec_drop("INSERT INTO b.t (id) VALUES (?)", (id,)).await {
            Ok(()) => {
                let now = Instant::now();
                tl.acks.lock().unwrap().push(now);
                tl.sent_acked.lock().unwrap().push((sent, now));
            }
            Err(mysql_async::Error::Server(e)) => tl.errors.lock().unwrap().push(e.code),
            Err(_) => {
                tl.errors.lock().unwrap().push(0);
                conn = None;
            }
        }
    }
}

struct Run {
    local: orchestrator::LocalClusters,
    app: App,
    _dir: tempfile::TempDir,
}

async fn start() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let opts = SandboxOptions {
        dir: dir.path().to_path_buf(),
        clusters: 1,
        replicas: 2,
        base_port: None,
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: "bench".into(),
        app_user: "app".into(),
        app_password: "app".into(),
        shards: 0,
    };
    let local = sandbox::provision(&opts)
        .await
        .expect("MariaDB must be installed: apt-get install -y mariadb-server");
    let app = App::start(sandbox::config_for(&local, &opts))
        .await
        .unwrap();
    assert!(app.wait_ready(Duration::from_secs(30)).await);
    let mut c = Conn::new(opts_port(&app)).await.unwrap();
    c.query_drop("CREATE DATABASE b; CREATE TABLE b.t (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    // Replicas caught up and seen by the monitor before the clock starts.
    wait_for(Duration::from_secs(20), || {
        let t = app.topology.load();
        let cl = t.cluster("c1").unwrap();
        cl.nodes
            .iter()
            .filter(|n| Some(&n.addr) != cl.leader.as_ref())
            .all(|n| n.io_running == Some(true) && n.lag_seconds == Some(0))
    })
    .await;
    Run {
        local,
        app,
        _dir: dir,
    }
}

fn opts_port(app: &App) -> Opts {
    opts(app.router_addr.port())
}

async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spawn_writers(
    port: u16,
    tl: &Arc<Timeline>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| tokio::spawn(writer(port, (w + 1) << 40, tl.clone(), stop.clone())))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("SWITCHYARD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let switchovers: usize = std::env::var("SWITCHYARD_BENCH_SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut failover_ms = Vec::new();
    let mut failover_errors = Vec::new();
    for i in 0..runs {
        let mut run = start().await;
        let tl = Arc::new(Timeline::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_writers(run.app.router_addr.port(), &tl, &stop);
        wait_for(Duration::from_secs(10), || {
            tl.acks.lock().unwrap().len() > 300
        })
        .await;
        let leader = run
            .app
            .topology
            .load()
            .cluster("c1")
            .unwrap()
            .leader
            .clone()
            .unwrap();
        // SIGKILL and reap: once kill_node returns the old leader is gone.
        run.local.kill_node("c1", &leader).unwrap();
        let killed = Instant::now();
        // The first write sent after the kill and acknowledged: it ran on the new leader.
        let first_after = |tl: &Timeline| {
            tl.sent_acked
                .lock()
                .unwrap()
                .iter()
                .filter(|(sent, _)| *sent > killed)
                .map(|(_, acked)| *acked)
                .min()
        };
        wait_for(Duration::from_secs(60), || first_after(&tl).is_some()).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let first = *tl
            .acks
            .lock()
            .unwrap()
            .iter()
            .find(|t| **t > killed)
            .unwrap();
        let ms = (first - killed).as_secs_f64() * 1000.0;
        let errors = tl.errors.lock().unwrap().len();
        eprintln!(
            "failover {}/{runs}: first write after {ms:.0} ms, {errors} client errors",
            i + 1
        );
        failover_ms.push(ms);
        failover_errors.push(errors);
        run.app.shutdown().await;
        run.local.stop().await.unwrap();
    }
    let mut pause_ms = Vec::new();
    let mut switchover_errors = Vec::new();
    for i in 0..switchovers {
        let run = start().await;
        let tl = Arc::new(Timeline::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_writers(run.app.router_addr.port(), &tl, &stop);
        wait_for(Duration::from_secs(10), || {
            tl.acks.lock().unwrap().len() > 300
        })
        .await;
        let began = Instant::now();
        let report = run.app.orchestrator.switchover("c1", None).await;
        let ended = Instant::now();
        let before = tl.acks.lock().unwrap().len();
        wait_for(Duration::from_secs(10), || {
            tl.acks.lock().unwrap().len() > before + 300
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        if let Err(e) = report {
            eprintln!("switchover {}/{switchovers}: refused or failed: {e}", i + 1);
            continue;
        }
        let mut acks = tl.acks.lock().unwrap().clone();
        acks.sort();
        // The longest gap between acknowledged writes around the switchover.
        let window: Vec<Instant> = acks
            .into_iter()
            .filter(|t| {
                *t >= began - Duration::from_secs(1) && *t <= ended + Duration::from_secs(2)
            })
            .collect();
        let gap = window
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max);
        let errors = tl.errors.lock().unwrap().len();
        eprintln!(
            "switchover {}/{switchovers}: longest write pause {gap:.0} ms, {errors} client errors, took {:.0} ms",
            i + 1,
            (ended - began).as_secs_f64() * 1000.0
        );
        pause_ms.push(gap);
        switchover_errors.push(errors);
        run.app.shutdown().await;
        run.local.stop().await.unwrap();
    }
    let mut f = failover_ms.clone();
    f.sort_by(f64::total_cmp);
    let mut p = pause_ms.clone();
    p.sort_by(f64::total_cmp);
    println!("| measure | runs | median ms | max ms | client errors (total) |");
    println!("|---|---|---|---|---|");
    println!(
        "| kill -9 leader -> first acknowledged write | {} | {:.0} | {:.0} | {} |",
        f.len(),
        percentile(&f, 0.5),
        f.last().copied().unwrap_or(f64::NAN),
        failover_errors.iter().sum::<usize>()
    );
    println!(
        "| switchover: longest write pause | {} | {:.0} | {:.0} | {} |",
        p.len(),
        percentile(&p, 0.5),
        p.last().copied().unwrap_or(f64::NAN),
        switchover_errors.iter().sum::<usize>()
    );
    let json = serde_json::json!({
        "writers": WRITERS,
        "failover_first_write_ms": failover_ms,
        "failover_client_errors": failover_errors,
        "switchover_longest_pause_ms": pause_ms,
        "switchover_client_errors": switchover_errors,
    });
    std::fs::create_dir_all("bench-results").ok();
    std::fs::write(
        "bench-results/failover.json",
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .ok();
}
