//! The multi-process rows of `switchyard bench` (part `etcd`): three routers (processes `a`
//! and `b` with role `all`, `r` with role `router`, in this process) over a local etcd and one
//! cluster of a leader and two semi-sync replicas, two writers through each router (the
//! failure scenarios' writers and ledger), against the single-process baseline (one
//! switchyard, no etcd) measured in the same trial. Each measurement on fresh servers and a
//! fresh etcd:
//!
//! - kill leader: `kill -9` of the MariaDB leader; per router the ms from the kill to the first
//!   acknowledged write sent after it; the trial's time is the slowest router's.
//! - publish to routers: for the same failover, the ms from the first router applying the new
//!   epoch to each other router applying it.
//! - switchover asked over the admin API: `POST .../switchover` to the single process, and to
//!   router `r`, which asks the leading orchestrator through etcd: the longest pause between
//!   acknowledged writes on any router, the client errors, and the ms until the API answered.
//! - orchestrator lost: `kill -9` of a leading `switchyard serve` process; the ms until another
//!   orchestrator leads (lease 5 s, the default).
//! - point selects: prepared `SELECT ?` from 8 clients for 3 s through the single process's
//!   router and through router `r`: queries per second (etcd is off the statement path).
//!
//! A measurement that fails (a timeout, a process that does not start) is reported with the
//! reason and leaves its trial out of that row.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use orchestrator::provision::LocalEtcd;
use shard_map::etcd::{EtcdOptions, EtcdStore};

use super::spread::Spread;
use crate::config::ProcessRole;
use crate::sandbox::{self, SandboxOptions};
use crate::scenario::writes::{loopback, poll_until, setup, Writers};
use crate::App;

const WRITERS_PER_ROUTER: u64 = 2;
/// The longest one measurement may take.
const MEASUREMENT_LIMIT: Duration = Duration::from_secs(300);

static SERVE_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The `switchyard` binary the "orchestrator lost" row starts as `serve` (this executable by
/// default; a `cargo bench` target sets the real one).
pub fn set_serve_binary(path: impl Into<PathBuf>) {
    let _ = SERVE_BINARY.set(path.into());
}

fn serve_binary() -> anyhow::Result<PathBuf> {
    match SERVE_BINARY.get() {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?),
    }
}

/// One row: the single process's median, the deployment's, and their ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdRow {
    pub measure: String,
    /// `None` where one process has nothing to compare.
    pub single: Option<Spread>,
    pub multi: Option<Spread>,
    /// What the figures count when they are not plain medians (percentiles, totals).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl EtcdRow {
    fn new(measure: &str, single: &[f64], multi: &[f64]) -> EtcdRow {
        EtcdRow {
            measure: measure.into(),
            single: Spread::of(single),
            multi: Spread::of(multi),
            note: String::new(),
        }
    }

    /// multi / single of the medians.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.single, &self.multi) {
            (Some(s), Some(m)) if s.median > 0.0 => Some(m.median / s.median),
            _ => None,
        }
    }
}

/// The part's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdResult {
    pub trials: u32,
    pub rows: Vec<EtcdRow>,
    /// Why measurements failed.
    pub failures: Vec<String>,
}

/// Runs `trials` trials of every measurement.
pub async fn run(trials: u32) -> EtcdResult {
    let mut failures = Vec::new();
    let mut m = Measured::default();
    for i in 0..trials {
        eprintln!("etcd trial {}/{trials}", i + 1);
        if let Some((w, _)) =
            bounded("kill leader, single", kill_leader(false), &mut failures).await
        {
            m.single_kill.push(w[0]);
        }
        if let Some((w, s)) = bounded("kill leader, etcd", kill_leader(true), &mut failures).await {
            eprintln!("  kill leader: three routers {w:.0?} ms, publish spread {s:.1?} ms");
            m.multi_kill.push(w.iter().cloned().fold(0.0, f64::max));
            m.spread.extend(s);
        }
        if let Some((p, e, a)) =
            bounded("switchover, single", switchover(false), &mut failures).await
        {
            m.single_sw.push(p[0]);
            m.single_asked.push(a);
            m.sw_errors.0 += e;
        }
        if let Some((p, e, a)) = bounded("switchover, etcd", switchover(true), &mut failures).await
        {
            eprintln!("  switchover: three routers {p:.0?} ms, errors {e}, asked of r {a:.0} ms");
            m.multi_sw.push(p.iter().cloned().fold(0.0, f64::max));
            m.multi_asked.push(a);
            m.sw_errors.1 += e;
        }
        if let Some(ms) = bounded("orchestrator lost", orchestrator_lost(), &mut failures).await {
            eprintln!("  orchestrator lost: {ms:.0} ms");
            m.lost.push(ms);
        }
        if let Some(q) = bounded("point selects, single", point_selects(false), &mut failures).await
        {
            m.single_qps.push(q);
        }
        if let Some(q) = bounded("point selects, etcd", point_selects(true), &mut failures).await {
            m.multi_qps.push(q);
        }
    }
    EtcdResult {
        trials,
        rows: m.rows(),
        failures,
    }
}

#[derive(Default)]
struct Measured {
    single_kill: Vec<f64>,
    multi_kill: Vec<f64>,
    spread: Vec<f64>,
    single_sw: Vec<f64>,
    multi_sw: Vec<f64>,
    sw_errors: (u64, u64),
    single_asked: Vec<f64>,
    multi_asked: Vec<f64>,
    lost: Vec<f64>,
    single_qps: Vec<f64>,
    multi_qps: Vec<f64>,
}

impl Measured {
    fn rows(mut self) -> Vec<EtcdRow> {
        let mut spread = EtcdRow::new(
            "new epoch applied by the other routers after the first (ms)",
            &[],
            &[],
        );
        if !self.spread.is_empty() {
            self.spread.sort_by(f64::total_cmp);
            let p =
                |q: usize| self.spread[(self.spread.len() * q / 100).min(self.spread.len() - 1)];
            spread.multi = Spread::of(&self.spread);
            spread.note = format!(
                "p50 {:.1} / p99 {:.1} over {} samples",
                p(50),
                p(99),
                self.spread.len()
            );
        }
        let mut errors = EtcdRow::new(
            "switchover: client errors, all trials",
            &[self.sw_errors.0 as f64],
            &[self.sw_errors.1 as f64],
        );
        errors.note = "totals".into();
        vec![
            EtcdRow::new(
                "kill -9 leader → first write through every router (ms)",
                &self.single_kill,
                &self.multi_kill,
            ),
            EtcdRow::new(
                "switchover: longest write pause on any router (ms)",
                &self.single_sw,
                &self.multi_sw,
            ),
            errors,
            EtcdRow::new(
                "switchover asked over the admin API → answered (ms; over etcd: asked of router \
                 r, made by the leader)",
                &self.single_asked,
                &self.multi_asked,
            ),
            spread,
            EtcdRow::new(
                "kill -9 of the leading orchestrator process → another leads (ms; lease 5 s)",
                &[],
                &self.lost,
            ),
            EtcdRow::new(
                "point selects through one router, 8 clients (queries/s)",
                &self.single_qps,
                &self.multi_qps,
            ),
        ]
    }
}

/// `work` in a task of its own, within [`MEASUREMENT_LIMIT`]: a panic or a timeout becomes a
/// failure named `what`.
async fn bounded<T: Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    failures: &mut Vec<String>,
) -> Option<T> {
    let task = tokio::spawn(work);
    let abort = task.abort_handle();
    let why = match tokio::time::timeout(MEASUREMENT_LIMIT, task).await {
        Ok(Ok(Ok(v))) => return Some(v),
        Ok(Ok(Err(e))) => format!("{e:#}"),
        Ok(Err(e)) => format!("the measurement ended abnormally: {e}"),
        Err(_) => {
            abort.abort();
            format!("not done within {} s", MEASUREMENT_LIMIT.as_secs())
        }
    };
    eprintln!("  {what}: {why}");
    failures.push(format!("{what}: {why}"));
    None
}

/// Polls `f` until it returns `Some`, or fails after `limit`.
async fn until<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    poll_until(limit, f)
        .await
        .ok_or_else(|| anyhow::anyhow!("{what}: not within {limit:?}"))
}

struct Deployment {
    apps: Vec<(String, App)>,
    local: orchestrator::LocalClusters,
    etcd: Option<LocalEtcd>,
    dir: tempfile::TempDir,
}

impl Deployment {
    /// Fresh servers and either one switchyard (no etcd) or a, b and r over a fresh etcd.
    async fn start(multi: bool) -> anyhow::Result<Deployment> {
        let dir = tempfile::tempdir()?;
        let opts = sandbox_options(dir.path());
        let local = sandbox::provision(&opts).await?;
        let mut d = Deployment {
            apps: Vec::new(),
            local,
            etcd: None,
            dir,
        };
        if let Err(e) = d.start_apps(multi, &opts).await {
            d.stop().await;
            return Err(e);
        }
        Ok(d)
    }

    async fn start_apps(&mut self, multi: bool, opts: &SandboxOptions) -> anyhow::Result<()> {
        if multi {
            let etcd = LocalEtcd::start(self.dir.path().join("etcd"), 1).await?;
            self.etcd = Some(etcd);
            for (name, role) in [
                ("a", ProcessRole::All),
                ("b", ProcessRole::All),
                ("r", ProcessRole::Router),
            ] {
                let mut c = self.member_config(name);
                c.role = role;
                self.apps.push((name.to_owned(), App::start(c).await?));
            }
        } else {
            let mut c = sandbox::config_for(&self.local, opts);
            c.router.socket = None;
            self.apps.push(("single".to_owned(), App::start(c).await?));
        }
        anyhow::ensure!(
            self.apps[0].1.wait_ready(Duration::from_secs(30)).await,
            "no healthy leader within 30 s"
        );
        setup(&loopback(self.apps[0].1.router_port(), "app", "app"))
            .await
            .map_err(|e| anyhow::anyhow!("creating the writers' table: {e}"))?;
        Ok(())
    }

    /// A process's configuration over the deployment's clusters and etcd, on free ports.
    fn member_config(&self, name: &str) -> crate::Config {
        let mut c = sandbox::config_for(&self.local, &sandbox_options(self.dir.path()));
        c.router.socket = None;
        c.state_dir = None;
        c.shard_map_dir = None;
        c.etcd = self
            .etcd
            .as_ref()
            .map(|etcd| sandbox::etcd_section(etcd, name));
        c
    }

    fn store_options(&self) -> anyhow::Result<EtcdOptions> {
        let etcd = self
            .etcd
            .as_ref()
            .context_none("no etcd in a single deployment")?;
        Ok(EtcdOptions::new(etcd.endpoints()))
    }

    async fn stop(self) {
        for (_, app) in self.apps {
            app.shutdown().await;
        }
        let _ = self.local.stop().await;
    }
}

/// `Option::ok_or_else` with a fixed message, as an `anyhow` error.
trait ContextNone<T> {
    fn context_none(self, what: &str) -> anyhow::Result<T>;
}

impl<T> ContextNone<T> for Option<T> {
    fn context_none(self, what: &str) -> anyhow::Result<T> {
        self.ok_or_else(|| anyhow::anyhow!("{what}"))
    }
}

fn sandbox_options(dir: &std::path::Path) -> SandboxOptions {
    SandboxOptions::on_free_ports(dir, 1, 2)
}

/// Writers through each router of `d`, one set (with its own ids) per router, in full swing.
async fn load(d: &Deployment) -> anyhow::Result<Vec<Writers>> {
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
        .await?;
    }
    Ok(writers)
}

/// Stops the writers: the client errors they saw, all routers together.
async fn unload(writers: Vec<Writers>) -> anyhow::Result<u64> {
    let mut errors = 0;
    for w in writers {
        let ledger = w
            .stop(Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("writers did not stop: {e:?}"))?;
        errors += ledger.error_count() as u64;
    }
    Ok(errors)
}

/// kill -9 of the leader: per router the ms to its first write acknowledged after, and per
/// other router the ms from the first router's new epoch to its own.
async fn kill_leader(multi: bool) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut d = Deployment::start(multi).await?;
    let r = kill_leader_in(&mut d).await;
    d.stop().await;
    r
}

async fn kill_leader_in(d: &mut Deployment) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let load = load(d).await?;
    let c = d.apps[0].1.topology.load().cluster("c1").cloned();
    let c = c.context_none("no cluster c1")?;
    let (epoch, leader) = (c.epoch, c.leader.context_none("c1 has no leader")?);
    d.local.kill_node("c1", &leader)?;
    let killed = Instant::now();
    // When each router applied the new epoch (polled every 2 ms).
    let mut applied: Vec<Option<Instant>> = vec![None; d.apps.len()];
    until(
        "every router on the new epoch",
        Duration::from_secs(60),
        || {
            for (i, (_, app)) in d.apps.iter().enumerate() {
                let now = app.topology.load().cluster("c1").map(|c| c.epoch);
                if applied[i].is_none() && now.is_some_and(|e| e > epoch) {
                    applied[i] = Some(Instant::now());
                }
            }
            applied.iter().all(Option::is_some).then_some(())
        },
    )
    .await?;
    let firsts = until(
        "a write through every router",
        Duration::from_secs(60),
        || {
            load.iter()
                .map(|w| w.ledger.first_sent_after(killed))
                .collect::<Option<Vec<_>>>()
        },
    )
    .await?;
    let to_write: Vec<f64> = firsts.iter().map(|f| f.as_secs_f64() * 1e3).collect();
    let published = applied.iter().flatten().min().copied().unwrap_or(killed);
    let spread: Vec<f64> = applied
        .iter()
        .flatten()
        .filter(|t| **t != published)
        .map(|t| (*t - published).as_secs_f64() * 1e3)
        .collect();
    unload(load).await?;
    Ok((to_write, spread))
}

/// A planned switchover asked over the admin API (of the single process, or of router `r`):
/// per router the longest pause, the client errors, and the ms until the API answered.
async fn switchover(multi: bool) -> anyhow::Result<(Vec<f64>, u64, f64)> {
    let d = Deployment::start(multi).await?;
    let r = switchover_in(&d, multi).await;
    d.stop().await;
    r
}

async fn switchover_in(d: &Deployment, multi: bool) -> anyhow::Result<(Vec<f64>, u64, f64)> {
    let load = load(d).await?;
    if multi {
        let store = EtcdStore::connect(&d.store_options()?).await?;
        until_leader(&store, |_| true).await?;
    }
    let asked = &d.apps.last().context_none("no process")?.1;
    router::tls::install_default_provider();
    let from = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/clusters/c1/switchover",
            asked.admin_addr
        ))
        .bearer_auth("bench")
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let answered = from.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        resp.status().is_success(),
        "the switchover was refused: {}",
        resp.text().await.unwrap_or_default()
    );
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
    .await?;
    let pauses: Vec<f64> = load
        .iter()
        .map(|w| w.ledger.longest_pause(from).as_secs_f64() * 1e3)
        .collect();
    let errors = unload(load).await?;
    Ok((pauses, errors, answered))
}

/// Waits until an orchestrator for which `wanted` holds leads: its name.
async fn until_leader(store: &EtcdStore, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(m)) = store.leader().await {
            if wanted(&m.id) {
                return Ok(m.id);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no orchestrator led within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// kill -9 of a leading `switchyard serve` process: ms until another orchestrator leads.
async fn orchestrator_lost() -> anyhow::Result<f64> {
    let mut d = Deployment::start(true).await?;
    let r = orchestrator_lost_in(&mut d).await;
    d.stop().await;
    r
}

async fn orchestrator_lost_in(d: &mut Deployment) -> anyhow::Result<f64> {
    let store = EtcdStore::connect(&d.store_options()?).await?;
    // A serve process "p" takes the lead once a and b stop (and resign); "c" stands by.
    let path = d.dir.path().join("p.toml");
    let text = sandbox::config_text(
        &d.member_config("p"),
        &sandbox_options(d.dir.path()),
        d.local.spec(),
    );
    std::fs::write(&path, text)?;
    let mut p = std::process::Command::new(serve_binary()?)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let measured = async {
        for (_, app) in d.apps.drain(..2) {
            app.shutdown().await;
        }
        until_leader(&store, |id| id == "p").await?;
        let c = App::start(d.member_config("c")).await?;
        let _ = p.kill();
        let killed = Instant::now();
        let led = until_leader(&store, |id| id == "c").await;
        let ms = killed.elapsed().as_secs_f64() * 1e3;
        c.shutdown().await;
        led.map(|_| ms)
    }
    .await;
    let _ = p.kill();
    let _ = p.wait();
    measured
}

/// Prepared `SELECT ?` from 8 clients for 3 s through the last router of a fresh deployment:
/// queries per second.
async fn point_selects(multi: bool) -> anyhow::Result<f64> {
    let d = Deployment::start(multi).await?;
    let r = point_selects_in(&d).await;
    d.stop().await;
    r
}

async fn point_selects_in(d: &Deployment) -> anyhow::Result<f64> {
    use mysql_async::prelude::Queryable;
    const CLIENTS: usize = 8;
    const FOR: Duration = Duration::from_secs(3);
    let port = d.apps.last().context_none("no process")?.1.router_port();
    let opts = loopback(port, "app", "app");
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await?;
            let stmt = conn.prep("SELECT ?").await?;
            let end = Instant::now() + FOR;
            let mut n = 0u64;
            while Instant::now() < end {
                let _: Option<i64> = conn.exec_first(&stmt, (n as i64,)).await?;
                n += 1;
            }
            Ok::<u64, mysql_async::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / FOR.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_medians_and_keep_what_has_no_baseline() {
        let m = Measured {
            single_kill: vec![100.0, 140.0, 120.0],
            multi_kill: vec![180.0, 240.0, 200.0],
            spread: vec![1.0, 3.0],
            lost: vec![5000.0],
            ..Measured::default()
        };
        let rows = m.rows();
        let kill = &rows[0];
        assert_eq!(kill.single.as_ref().unwrap().median, 120.0);
        assert!((kill.ratio().unwrap() - 200.0 / 120.0).abs() < 1e-9);
        let lost = rows
            .iter()
            .find(|r| r.measure.contains("orchestrator"))
            .unwrap();
        assert!(lost.single.is_none() && lost.ratio().is_none());
        let spread = rows.iter().find(|r| r.measure.contains("epoch")).unwrap();
        assert!(spread.note.contains("2 samples"), "{}", spread.note);
    }
}
