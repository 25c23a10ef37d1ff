//! The multi-process mode under load: three routers (processes `a` and `b` with role `all`,
//! `r` with role `router`, in this process) over a local etcd and one cluster of a leader and
//! two semi-sync replicas, two writers through each router (the
//! failure scenarios' writers and ledger). Each trial on fresh servers and a
//! fresh etcd, and, in the same run, the single-process baseline (one switchyard, no etcd):
//!
//! - kill leader: `kill -9` of the MariaDB leader; per router, the ms from the kill to the
//!   first acknowledged write sent after it; the trial's time is the slowest router's.
//! - publish to routers: for the same failover, the ms from the moment the leading
//!   orchestrator published the new epoch to the moment each other router applied it.
//! - switchover: a planned switchover; per router the longest pause between acknowledged
//!   writes, and every client error on every router.
//! - orchestrator lost: `kill -9` of a leading `switchyard serve` process; the ms until
//!   another orchestrator leads (lease 5 s: the default).
//! - switchover asked over the admin API: `POST .../switchover` to the single process, and
//!   (over etcd) to router `r`, which asks the leading orchestrator through etcd; the ms until
//!   the answer. Measured on the switchover trials above.
//! - point selects: prepared `SELECT ?` from 8 clients for 3 s through the single process's
//!   router and through router `r`: queries per second (the store is off the statement path,
//!   so the ratio should be 1 within the machine's noise).
//!
//! `cargo bench --bench etcd`; `SWITCHYARD_BENCH_TRIALS` (default 3). Markdown on stdout.

use std::time::Duration;

use tokio::time::Instant;

use orchestrator::provision::LocalEtcd;
use shard_map::etcd::{EtcdOptions, EtcdStore};
use switchyard::config::{EtcdConfig, ProcessRole};
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::scenario::writes::{loopback, poll_until, setup, Writers};
use switchyard::App;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WRITERS_PER_ROUTER: u64 = 2;

/// Polls `f` until it returns `Some`, or panics after `limit`.
async fn until<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, f)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

fn etcd_config(etcd: &LocalEtcd, name: &str) -> EtcdConfig {
    sandbox::etcd_section(etcd, name)
}

struct Deployment {
    apps: Vec<(String, App)>,
    local: orchestrator::LocalClusters,
    _etcd: Option<LocalEtcd>,
    _dir: tempfile::TempDir,
}

/// Fresh servers and either one switchyard (no etcd) or a, b and r over a fresh etcd.
async fn deploy(multi: bool) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let opts = sandbox_options(dir.path());
    let local = sandbox::provision(&opts)
        .await
        .expect("MariaDB must be installed: scripts/install-deps");
    let mut apps = Vec::new();
    let etcd = if multi {
        let etcd = LocalEtcd::start(dir.path().join("etcd"), 1)
            .await
            .expect("etcd must be installed: scripts/install-deps");
        for (name, role) in [
            ("a", ProcessRole::All),
            ("b", ProcessRole::All),
            ("r", ProcessRole::Router),
        ] {
            let mut c = sandbox::config_for(&local, &opts);
            c.router.socket = None;
            if name != "a" {
                c.state_dir = None;
                c.shard_map_dir = None;
            }
            c.etcd = Some(etcd_config(&etcd, name));
            c.role = role;
            apps.push((name.to_owned(), App::start(c).await.unwrap()));
        }
        Some(etcd)
    } else {
        let mut c = sandbox::config_for(&local, &opts);
        c.router.socket = None;
        apps.push(("single".to_owned(), App::start(c).await.unwrap()));
        None
    };
    assert!(apps[0].1.wait_ready(Duration::from_secs(30)).await);
    setup(&loopback(apps[0].1.router_port(), "app", "app"))
        .await
        .unwrap();
    Deployment {
        apps,
        local,
        _etcd: etcd,
        _dir: dir,
    }
}

/// Writers through each router of `d`, one set (with its own ids) per router, in full swing.
async fn load(d: &Deployment) -> Vec<Writers> {
    let writers: Vec<Writers> = d
        .apps
        .iter()
        .enumerate()
        .map(|(i, (_, app))| {
            let opts = loopback(app.router_port(), "app", "app");
            Writers::start_at(&opts, WRITERS_PER_ROUTER, i as u64 * 100_000_000)
        })
        .collect();
    for w in &writers {
        until(
            "writes through every router",
            Duration::from_secs(30),
            || (w.ledger.acked_count() > 200).then_some(()),
        )
        .await;
    }
    writers
}

/// Stops the writers: the client errors they saw, all routers together.
async fn unload(writers: Vec<Writers>) -> u64 {
    let mut errors = 0;
    for w in writers {
        let ledger = w.stop(Duration::from_secs(30)).await.expect("writers stop");
        errors += ledger.error_count() as u64;
    }
    errors
}

/// kill -9 of the leader: per router the ms to its first write acknowledged after, and per
/// other router the ms from the first router's new epoch to its own.
async fn kill_leader(multi: bool) -> (Vec<f64>, Vec<f64>) {
    let mut d = deploy(multi).await;
    let load = load(&d).await;
    let epoch = d.apps[0].1.topology.load().cluster("c1").unwrap().epoch;
    let leader = d.apps[0]
        .1
        .topology
        .load()
        .cluster("c1")
        .unwrap()
        .leader
        .clone()
        .unwrap();
    d.local.kill_node("c1", &leader).unwrap();
    let killed = Instant::now();
    // When each router applied the new epoch (polled every 2 ms).
    let mut applied: Vec<Option<Instant>> = vec![None; d.apps.len()];
    until(
        "every router on the new epoch",
        Duration::from_secs(60),
        || {
            for (i, (_, app)) in d.apps.iter().enumerate() {
                if applied[i].is_none() && app.topology.load().cluster("c1").unwrap().epoch > epoch
                {
                    applied[i] = Some(Instant::now());
                }
            }
            applied.iter().all(Option::is_some).then_some(())
        },
    )
    .await;
    let firsts = until(
        "a write through every router",
        Duration::from_secs(60),
        || {
            load.iter()
                .map(|w| w.ledger.first_sent_after(killed))
                .collect::<Option<Vec<_>>>()
        },
    )
    .await;
    let to_write: Vec<f64> = firsts.iter().map(|f| f.as_secs_f64() * 1e3).collect();
    let published = applied.iter().flatten().min().copied().unwrap();
    let spread: Vec<f64> = applied
        .iter()
        .flatten()
        .filter(|t| **t != published)
        .map(|t| (*t - published).as_secs_f64() * 1e3)
        .collect();
    unload(load).await;
    stop(d).await;
    (to_write, spread)
}

/// A planned switchover asked over the admin API (of the single process, or of router `r`,
/// which asks the leader through etcd): per router the longest pause, the client errors, and
/// the ms until the API answered.
async fn switchover(multi: bool) -> (Vec<f64>, u64, f64) {
    let d = deploy(multi).await;
    let load = load(&d).await;
    let asked = &d.apps.last().unwrap().1;
    if multi {
        let store = EtcdStore::connect(&EtcdOptions::new(d._etcd.as_ref().unwrap().endpoints()))
            .await
            .unwrap();
        until_async_leader(&store).await;
    }
    router::tls::install_default_provider();
    let http = reqwest::Client::new();
    let from = Instant::now();
    let resp = http
        .post(format!(
            "http://{}/api/v1/clusters/c1/switchover",
            asked.admin_addr
        ))
        .bearer_auth("bench")
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("the admin API answers");
    let answered = from.elapsed().as_secs_f64() * 1e3;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let after = Instant::now();
    until(
        "writes after the switchover",
        Duration::from_secs(30),
        || {
            load.iter()
                .all(|w| w.ledger.first_sent_after(after).is_some())
                .then_some(())
        },
    )
    .await;
    let pauses: Vec<f64> = load
        .iter()
        .map(|w| w.ledger.longest_pause(from).as_secs_f64() * 1e3)
        .collect();
    let errors = unload(load).await;
    stop(d).await;
    (pauses, errors, answered)
}

/// Prepared `SELECT ?` from 8 clients for 3 s through the last router of a fresh deployment:
/// queries per second.
async fn point_selects(multi: bool) -> f64 {
    use mysql_async::prelude::Queryable;
    const CLIENTS: usize = 8;
    const FOR: Duration = Duration::from_secs(3);
    let d = deploy(multi).await;
    let opts = loopback(d.apps.last().unwrap().1.router_port(), "app", "app");
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
            let stmt = conn.prep("SELECT ?").await.expect("prepare");
            let end = Instant::now() + FOR;
            let mut n = 0u64;
            while Instant::now() < end {
                let _: Option<i64> = conn.exec_first(&stmt, (n as i64,)).await.expect("select");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    stop(d).await;
    total as f64 / FOR.as_secs_f64()
}

async fn until_async_leader(store: &EtcdStore) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(m)) = store.leader().await {
            return m.id;
        }
        assert!(Instant::now() < deadline, "no orchestrator leads");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stop(d: Deployment) {
    for (_, app) in d.apps {
        app.shutdown().await;
    }
    d.local.stop().await.unwrap();
}

fn sandbox_options(dir: &std::path::Path) -> SandboxOptions {
    SandboxOptions {
        dir: dir.to_path_buf(),
        clusters: 1,
        replicas: 2,
        base_port: None,
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: "bench".into(),
        app_user: "app".into(),
        app_password: "app".into(),
        binlog_disk_mb: None,
        shards: 0,
    }
}

/// A process's configuration over the deployment's clusters and etcd, on free ports.
fn member_config(d: &Deployment, name: &str) -> switchyard::Config {
    let mut c = sandbox::config_for(&d.local, &sandbox_options(d._dir.path()));
    c.router.socket = None;
    c.state_dir = None;
    c.shard_map_dir = None;
    c.etcd = Some(etcd_config(d._etcd.as_ref().unwrap(), name));
    c
}

/// kill -9 of a leading `switchyard serve` process: ms until another orchestrator leads.
async fn orchestrator_lost() -> f64 {
    let mut d = deploy(true).await;
    let store = EtcdStore::connect(&EtcdOptions::new(d._etcd.as_ref().unwrap().endpoints()))
        .await
        .unwrap();
    // A serve process "p" takes the lead once a and b stop (and resign); "c" stands by.
    let path = d._dir.path().join("p.toml");
    let text = sandbox::config_text(
        &member_config(&d, "p"),
        &sandbox_options(d._dir.path()),
        d.local.spec(),
    );
    std::fs::write(&path, text).unwrap();
    let mut p = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for (_, app) in d.apps.drain(..2) {
        app.shutdown().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while until_async_leader(&store).await != "p" {
        assert!(Instant::now() < deadline, "p never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = App::start(member_config(&d, "c")).await.unwrap();
    let _ = p.kill();
    let killed = Instant::now();
    loop {
        if let Ok(Some(m)) = store.leader().await {
            if m.id == "c" {
                break;
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "c never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ms = killed.elapsed().as_secs_f64() * 1e3;
    let _ = p.wait();
    c.shutdown().await;
    stop(d).await;
    ms
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * p / 100).min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::var("SWITCHYARD_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut single_kill, mut multi_kill, mut spread) = (Vec::new(), Vec::new(), Vec::new());
    let (mut single_sw, mut multi_sw, mut sw_errors) = (Vec::new(), Vec::new(), (0, 0));
    let mut lost = Vec::new();
    let (mut single_asked, mut multi_asked) = (Vec::new(), Vec::new());
    let (mut single_qps, mut multi_qps) = (Vec::new(), Vec::new());
    for i in 0..trials {
        eprintln!("trial {}/{trials}", i + 1);
        let (w, _) = kill_leader(false).await;
        single_kill.push(w[0]);
        let (w, s) = kill_leader(true).await;
        eprintln!(
            "  kill leader: single {:.0} ms, three routers {w:.0?} ms, publish spread {s:.1?} ms",
            single_kill[i]
        );
        multi_kill.push(w.iter().cloned().fold(0.0, f64::max));
        spread.extend(s);
        let (p, e, a) = switchover(false).await;
        single_sw.push(p[0]);
        single_asked.push(a);
        sw_errors.0 += e;
        let (p, e, a) = switchover(true).await;
        multi_asked.push(a);
        eprintln!(
            "  switchover: single {:.0} ms, three routers {p:.0?} ms, errors {e}; asked over the API: single {:.0} ms, of router r {a:.0} ms",
            single_sw[i], single_asked[i]
        );
        multi_sw.push(p.iter().cloned().fold(0.0, f64::max));
        sw_errors.1 += e;
        let ms = orchestrator_lost().await;
        eprintln!("  orchestrator lost: {ms:.0} ms");
        lost.push(ms);
        single_qps.push(point_selects(false).await);
        multi_qps.push(point_selects(true).await);
        eprintln!(
            "  point selects: single {:.0}/s, router r over etcd {:.0}/s",
            single_qps[i], multi_qps[i]
        );
    }
    println!(
        "| row | single process (median) | 3 routers, 2 orchestrators over etcd (median) | ratio |"
    );
    println!("|---|---|---|---|");
    let (s, m) = (median(&mut single_kill), median(&mut multi_kill));
    println!(
        "| kill -9 leader → first write through every router (ms) | {s:.0} | {m:.0} | {:.2} |",
        m / s
    );
    let (s, m) = (median(&mut single_sw), median(&mut multi_sw));
    println!(
        "| switchover: longest write pause on any router (ms) | {s:.0} | {m:.0} | {:.2} |",
        m / s
    );
    println!(
        "| switchover: client errors, all trials | {} | {} | |",
        sw_errors.0, sw_errors.1
    );
    let (s, m) = (median(&mut single_asked), median(&mut multi_asked));
    println!(
        "| switchover asked over the admin API → answered (ms; over etcd: asked of router r, made by the leader) | {s:.0} | {m:.0} | {:.2} |",
        m / s
    );
    let (s, m) = (median(&mut single_qps), median(&mut multi_qps));
    println!(
        "| point selects through one router, 8 clients (queries/s) | {s:.0} | {m:.0} | {:.2} |",
        m / s
    );
    println!(
        "| new epoch applied by the other routers after the first (ms, p50 / p99, {} samples) | - | {:.1} / {:.1} | |",
        spread.len(),
        pct(&mut spread, 50),
        pct(&mut spread, 99)
    );
    println!(
        "| kill -9 of the leading orchestrator process → another leads (ms; lease 5 s) | - | {:.0} | |",
        median(&mut lost)
    );
    println!("\n{trials} trials each, interleaved, fresh servers and etcd per trial.");
}
