//! Measures failover and switchover on a local semi-sync cluster (a leader and 2 replicas):
//! `cargo run --release -p orchestrator --example failover_timing -- [RUNS] [SWITCHOVERS] [DIR]`
//! (DIR, kept afterwards, holds the servers' datadirs and logs; a temporary one by default).
//!
//! Failover, RUNS times (default 10): kill -9 the leader; time until the new leader is
//! published, and until a first write on it succeeds; then the old leader is restarted and
//! rejoins before the next run. The monitor and detection use their defaults (500 ms tick,
//! down after 3 failed polls); only the anti-flapping limits are relaxed so that runs can
//! follow each other.
//!
//! Switchover, SWITCHOVERS times (default 10): a writer inserts rows in a loop, following
//! the published leader and holding while the cluster is `Held` (as the router does); the
//! write pause is the longest gap between two successful inserts around the switchover.
//! Errors the writer saw are counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use orchestrator::{
    monitor, LocalClusters, MonitorConfig, Orchestrator, OrchestratorSettings, ProvisionSpec,
};
use shard_map::{ClusterPhase, NodeState, Role, TopologyHandle};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let switchovers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = 1;
    spec.replicas = 2;
    let mut lc = LocalClusters::start(spec.clone()).await?;
    let specs = vec![lc.clusters()[0].monitor_spec()];
    let topology = TopologyHandle::new(monitor::initial_topology(&specs));
    let settings = OrchestratorSettings {
        failover_limit: 1000,
        failover_min_interval_s: 0,
        ..OrchestratorSettings::default()
    };
    let orch = Orchestrator::new(
        MonitorConfig::new(&spec.admin_user, &spec.admin_password),
        settings,
        specs,
        topology.clone(),
        spec.repl_user.clone(),
        spec.repl_password.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(orch.clone().run(async {
        let _ = stopped.await;
    }));
    wait_settled(&topology).await?;
    let leader = current_leader(&topology)?;
    let mut c = connect(&leader, &spec.app_user, &spec.app_password).await?;
    c.query_drop("CREATE DATABASE IF NOT EXISTS bench").await?;
    c.query_drop("CREATE TABLE IF NOT EXISTS bench.t (id BIGINT PRIMARY KEY)")
        .await?;
    drop(c);
    let ids = AtomicU64::new(1);

    let mut published = Vec::new();
    let mut first_write = Vec::new();
    for run in 1..=runs {
        wait_settled(&topology).await?;
        let old = current_leader(&topology)?;
        let epoch = epoch_of(&topology);
        let t0 = Instant::now();
        lc.kill_node("c1", &old)?;
        let mut changes = topology.subscribe();
        while epoch_of(&topology) == epoch {
            tokio::time::timeout(WAIT, changes.changed())
                .await
                .context("no failover within 60 s")??;
        }
        let t1 = t0.elapsed();
        let new = current_leader(&topology)?;
        loop {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let ok = async {
                let mut c = connect(&new, &spec.app_user, &spec.app_password).await?;
                c.query_drop(format!("INSERT INTO bench.t VALUES ({id})"))
                    .await?;
                anyhow::Ok(())
            }
            .await;
            if ok.is_ok() {
                break;
            }
            anyhow::ensure!(t0.elapsed() < WAIT, "no write on {new} within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t2 = t0.elapsed();
        println!(
            "failover {run:2}: {old} -> {new}: published after {} ms, first write after {} ms",
            t1.as_millis(),
            t2.as_millis()
        );
        published.push(t1);
        first_write.push(t2);
        // As the sandbox does: the state file follows the leader; the old one comes back.
        lc.set_leader("c1", &new)?;
        lc.start_node("c1", &old).await?;
    }
    if runs > 0 {
        summary("kill -9 -> new leader published", &mut published);
        summary("kill -9 -> first write on the new leader", &mut first_write);
    }

    let mut pauses = Vec::new();
    let mut total_errors = 0;
    let mut slowest: Option<(Duration, orchestrator::OperationReport)> = None;
    for run in 1..=switchovers {
        wait_settled(&topology).await?;
        let writer = Writer::start(topology.clone(), &spec.app_user, &spec.app_password, &ids);
        writer.wait_writes(50).await?;
        let report = orch.switchover("c1", None).await?;
        writer.wait_writes(50).await?;
        let (pause, errors) = writer.stop().await;
        println!(
            "switchover {run:2}: {} -> {}: longest write pause {} ms, {errors} write error(s), \
             operation {} ms",
            report.old_leader,
            report.new_leader,
            pause.as_millis(),
            report.duration_ms
        );
        pauses.push(pause);
        total_errors += errors;
        if slowest.as_ref().is_none_or(|(p, _)| pause > *p) {
            slowest = Some((pause, report));
        }
    }
    if switchovers > 0 {
        summary("switchover write pause", &mut pauses);
        println!("switchover write errors in total: {total_errors}");
    }
    if let Some((pause, report)) = slowest {
        println!(
            "steps of the switchover with the longest pause ({} ms):",
            pause.as_millis()
        );
        let start = report.steps.first().map_or(0, |e| e.at_ms);
        for e in &report.steps {
            println!("  +{:4} ms {:18} {}", e.at_ms - start, e.kind, e.message);
        }
    }

    let _ = stop.send(());
    task.await?;
    lc.stop().await?;
    Ok(())
}

fn summary(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "{what}: median {} ms, max {} ms over {} runs",
        median.as_millis(),
        max.as_millis(),
        samples.len()
    );
}

async fn connect(addr: &str, user: &str, password: &str) -> anyhow::Result<Conn> {
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse()?)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    Ok(Conn::new(opts).await?)
}

fn current_leader(t: &TopologyHandle) -> anyhow::Result<String> {
    t.load()
        .cluster("c1")
        .and_then(|c| c.leader.clone())
        .context("no leader")
}

fn epoch_of(t: &TopologyHandle) -> u64 {
    t.load().cluster("c1").map_or(0, |c| c.epoch)
}

/// Every node up, serving, a leader and every other node a replicating replica.
async fn wait_settled(t: &TopologyHandle) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut changes = t.subscribe();
    loop {
        let ok = t.load().cluster("c1").is_some_and(|c| {
            c.phase == ClusterPhase::Serving
                && c.leader.is_some()
                && c.nodes.iter().all(|n| {
                    n.state == NodeState::Up
                        && (n.role == Role::Leader
                            || (n.role == Role::Replica
                                && n.io_running == Some(true)
                                && n.sql_running == Some(true)))
                })
        });
        if ok {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "cluster not settled within 60 s");
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
}

/// A client that writes in a loop to the published leader, holding while `Held`.
struct Writer {
    stop: Arc<AtomicBool>,
    oks: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<usize>,
}

impl Writer {
    fn start(topology: TopologyHandle, user: &str, password: &str, ids: &AtomicU64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let oks: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (user, password) = (user.to_owned(), password.to_owned());
        let first_id = ids.fetch_add(1_000_000, Ordering::Relaxed);
        let (stop2, oks2) = (stop.clone(), oks.clone());
        let task = tokio::spawn(async move {
            let mut errors = 0;
            let mut conn: Option<(String, Conn)> = None;
            let mut id = first_id;
            let mut changes = topology.subscribe();
            while !stop2.load(Ordering::Relaxed) {
                let Some(c) = topology.load().cluster("c1").cloned() else {
                    break;
                };
                let Some(leader) = c.leader.clone() else {
                    break;
                };
                if c.phase == ClusterPhase::Held {
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                    continue;
                }
                if conn.as_ref().is_none_or(|(a, _)| *a != leader) {
                    match connect(&leader, &user, &password).await {
                        Ok(c) => conn = Some((leader.clone(), c)),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
                let Some((_, c)) = conn.as_mut() else {
                    continue;
                };
                id += 1;
                match c
                    .query_drop(format!("INSERT INTO bench.t VALUES ({id})"))
                    .await
                {
                    Ok(()) => oks2.lock().expect("lock").push(Instant::now()),
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            errors
        });
        Writer { stop, oks, task }
    }

    async fn wait_writes(&self, more: usize) -> anyhow::Result<()> {
        let target = self.oks.lock().expect("lock").len() + more;
        let deadline = Instant::now() + WAIT;
        while self.oks.lock().expect("lock").len() < target {
            anyhow::ensure!(Instant::now() < deadline, "the writer is stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The longest gap between two successful writes, and the number of errors.
    async fn stop(self) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.unwrap_or(usize::MAX);
        let oks = self.oks.lock().expect("lock");
        let pause = oks
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (pause, errors)
    }
}
