//! `switchyard bench`: what switchyard costs and what it wins, side by side in one run.
//! sysbench drives the same leader three ways: directly, through switchyard (in this
//! process) and through HAProxy in TCP mode, row after row, interleaved so that the noise of
//! a shared machine hits the three alike. The run writes results.json, results.md and
//! chart.png.
//!
//! Modules: [`matrix`] (which rows, in which order), [`sysbench`] (running it, reading its
//! report), [`haproxy`] (the L4 peer), [`cpu`] (CPU time of a process), [`settle`] (the
//! servers between rows), [`report`] (results and their JSON and Markdown forms), [`chart`]
//! (the PNG), [`meta`] (versions, time).

pub mod chart;
pub mod cpu;
pub mod haproxy;
pub mod matrix;
pub mod meta;
pub mod report;
pub mod settle;
pub mod sysbench;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use orchestrator::provision::LocalClusters;

use crate::sandbox::{self, SandboxOptions};
use crate::App;
use cpu::{CpuCost, CpuTime};
use haproxy::Haproxy;
use matrix::{RowSpec, Target};
use report::RouterCounters;
pub use report::{BenchReport, RowResult};
use settle::{connect, first_value};
use sysbench::Sysbench;

/// What to measure and where to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Created if missing; results.json, results.md and chart.png go here.
    pub out_dir: PathBuf,
    /// Fewer rows: oltp_point_select and oltp_read_write, prepared statements only.
    pub quick: bool,
    /// Keep only rows whose `workload/protocol/threads/target` contains one of these.
    pub only: Vec<String>,
    /// sysbench thread counts.
    pub threads: Vec<u32>,
    /// Duration of each row.
    pub seconds: u32,
    pub table_size: u32,
    pub tables: u32,
}

impl Default for BenchOptions {
    /// The full run: 3 workloads × 2 protocols × 3 thread counts × 3 targets, 20 s each
    /// (about 20 minutes).
    fn default() -> Self {
        BenchOptions {
            out_dir: meta::default_out_dir(),
            quick: false,
            only: Vec::new(),
            threads: vec![1, 8, 64],
            seconds: 20,
            table_size: 10_000,
            tables: 4,
        }
    }
}

impl BenchOptions {
    /// About a minute: 2 workloads, prepared statements, 8 threads, 3 s per row.
    pub fn quick() -> Self {
        BenchOptions {
            quick: true,
            threads: vec![8],
            seconds: 3,
            table_size: 2_000,
            tables: 2,
            ..BenchOptions::default()
        }
    }
}

/// The command-line form of [`BenchOptions`], for `switchyard bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// About a minute: oltp_point_select and oltp_read_write, prepared statements only,
    /// 8 threads, 3 s per row, 2 small tables.
    #[arg(long)]
    pub quick: bool,
    /// Run only rows whose name (workload/protocol/threads/target, e.g.
    /// `oltp_read_only/text/64/haproxy`) contains one of these (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// sysbench thread counts, comma-separated [default: 1,8,64; with --quick: 8].
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<u32>,
    /// Seconds per row [default: 20; with --quick: 3].
    #[arg(long)]
    pub seconds: Option<u32>,
    /// sysbench tables [default: 4; with --quick: 2].
    #[arg(long)]
    pub tables: Option<u32>,
    /// Rows per table [default: 10000; with --quick: 2000].
    #[arg(long)]
    pub table_size: Option<u32>,
    /// Where to write the results [default: bench-results/<UTC time>].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

impl BenchArgs {
    pub fn options(self) -> BenchOptions {
        let mut o = if self.quick {
            BenchOptions::quick()
        } else {
            BenchOptions::default()
        };
        o.only = self.only;
        if !self.threads.is_empty() {
            o.threads = self.threads;
        }
        o.seconds = self.seconds.unwrap_or(o.seconds);
        o.tables = self.tables.unwrap_or(o.tables);
        o.table_size = self.table_size.unwrap_or(o.table_size);
        o.out_dir = self.out_dir.unwrap_or(o.out_dir);
        o
    }
}

/// The external programs a run needs.
struct Tools {
    sysbench: PathBuf,
    haproxy: PathBuf,
}

impl Tools {
    fn locate() -> anyhow::Result<Tools> {
        let sysbench = find_program("sysbench");
        let haproxy = find_program("haproxy");
        match (sysbench, haproxy) {
            (Some(sysbench), Some(haproxy)) => Ok(Tools { sysbench, haproxy }),
            (s, h) => {
                let missing: Vec<&str> = [("sysbench", s.is_none()), ("haproxy", h.is_none())]
                    .into_iter()
                    .filter_map(|(name, gone)| gone.then_some(name))
                    .collect();
                bail!(
                    "the benchmark needs {} (not found on PATH or in /usr/sbin); install: \
                     apt-get install -y haproxy sysbench (or scripts/install-deps)",
                    missing.join(" and ")
                )
            }
        }
    }
}

/// A program on `$PATH` or in the system directories Debian keeps daemons in (`haproxy` is
/// in /usr/sbin, often not on a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs the benchmark and writes results.json, results.md and chart.png to `opts.out_dir`.
/// Every server and proxy it starts is stopped when it returns, also on error, and killed if
/// the future is dropped.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    ensure!(
        opts.seconds > 0 && opts.tables > 0 && opts.table_size > 0,
        "seconds, tables and table size must be positive"
    );
    ensure!(!opts.threads.is_empty(), "no thread counts given");
    let rows = matrix::rows(opts.quick, &opts.threads, &opts.only);
    ensure!(
        !rows.is_empty(),
        "--only {:?} matches no row; rows are named like oltp_point_select/ps/8/switchyard",
        opts.only
    );
    let tools = Tools::locate()?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("sy-bench-")
        .tempdir()
        .context("creating a temp dir")?;

    eprintln!(
        "starting a leader, a replica and switchyard in {}",
        tmp.path().display()
    );
    let sandbox_opts = SandboxOptions {
        dir: tmp.path().join("cluster"),
        clusters: 1,
        replicas: 1,
        base_port: None,
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: format!("{:016x}", rand::random::<u64>()),
        app_user: sysbench::USER.into(),
        app_password: sysbench::PASSWORD.into(),
        shards: 0,
    };
    // Dropping `local` kills the servers: every early return below stops them.
    let local = sandbox::provision(&sandbox_opts)
        .await
        .context("starting MariaDB (the benchmark needs it: apt-get install -y mariadb-server)")?;
    let app = App::start(sandbox::config_for(&local, &sandbox_opts))
        .await
        .context("starting switchyard")?;
    let outcome = measure(&opts, &tools, &local, &app, tmp.path(), &rows).await;
    app.shutdown().await;
    if let Err(e) = local.stop().await {
        tracing::warn!(error = %e, "stopping the benchmark's servers");
    }
    let (mut results, versions) = outcome?;

    report::set_ratios(&mut results);
    let report = BenchReport {
        meta: meta::RunMeta {
            switchyard_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: meta::git_commit(),
            mariadbd_version: versions.mariadbd,
            sysbench_version: versions.sysbench,
            haproxy_version: versions.haproxy,
            nproc: meta::nproc(),
            started_at: meta::utc(started_at),
            duration_s: clock.elapsed().as_secs_f64(),
            settings: meta::Settings {
                quick: opts.quick,
                only: opts.only.clone(),
                threads: opts.threads.clone(),
                seconds: opts.seconds,
                tables: opts.tables,
                table_size: opts.table_size,
                cluster: "1 leader + 1 replica, semi-sync, MariaDB on loopback".into(),
                sysbench_args: "--rand-type=uniform --percentile=99 --histogram=on \
                                --db-ps-mode=auto|disable"
                    .into(),
            },
            method: meta::method(),
        },
        rows: results,
        out_dir: opts.out_dir.clone(),
    };
    write_results(&report, &opts.out_dir)?;
    eprintln!(
        "done in {:.0} s: {}",
        report.meta.duration_s,
        opts.out_dir.join("results.md").display()
    );
    Ok(report)
}

/// Writes the three result files; the chart last, so that a chart failure keeps the figures.
fn write_results(report: &BenchReport, dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("results.json"), json + "\n").context("writing results.json")?;
    std::fs::write(dir.join("results.md"), report::markdown(report))
        .context("writing results.md")?;
    chart::draw(report, &dir.join("chart.png")).with_context(|| {
        format!(
            "results.json and results.md are in {}, but the chart failed",
            dir.display()
        )
    })
}

struct Versions {
    mariadbd: String,
    sysbench: String,
    haproxy: String,
}

/// How long the replica may take to apply a row's writes before the next row starts anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where each target listens and whose CPU to read.
struct Targets {
    leader_addr: String,
    replica_addrs: Vec<String>,
    leader_port: u16,
    leader_pid: Option<u32>,
    router_port: u16,
    haproxy: Haproxy,
}

impl Targets {
    fn port(&self, target: Target) -> u16 {
        match target {
            Target::Direct => self.leader_port,
            Target::Switchyard => self.router_port,
            Target::Haproxy => self.haproxy.port,
        }
    }
}

/// Everything between start-up and shut-down: HAProxy, the data, then the rows.
async fn measure(
    opts: &BenchOptions,
    tools: &Tools,
    local: &LocalClusters,
    app: &App,
    tmp: &Path,
    rows: &[RowSpec],
) -> anyhow::Result<(Vec<RowResult>, Versions)> {
    ensure!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard saw no healthy leader within 30 s"
    );
    let cluster = local.clusters().first().context("no cluster")?;
    let leader = cluster.leader_node().context("no leader")?;
    let (program, dir, backend) = (
        tools.haproxy.clone(),
        tmp.to_path_buf(),
        leader.addr.clone(),
    );
    let haproxy =
        tokio::task::spawn_blocking(move || Haproxy::start(&program, &dir, &backend)).await??;
    let targets = Targets {
        leader_addr: leader.addr.clone(),
        replica_addrs: cluster.replicas().map(|n| n.addr.clone()).collect(),
        leader_port: leader.port,
        leader_pid: local.pid(&leader.addr),
        router_port: app.router_addr.port(),
        haproxy,
    };

    // The database, and one query through each target before anything is timed.
    let mut conn = connect(&targets.leader_addr).await?;
    let mariadbd = first_value(&mut conn, "SELECT VERSION()").await?;
    conn.query(&format!("CREATE DATABASE IF NOT EXISTS {}", sysbench::DB))
        .await
        .context("creating the sysbench database")?;
    for target in Target::ALL {
        let addr = format!("127.0.0.1:{}", targets.port(target));
        let mut c = connect(&addr)
            .await
            .with_context(|| format!("through {target}"))?;
        first_value(&mut c, "SELECT 1")
            .await
            .with_context(|| format!("SELECT 1 through {target}"))?;
    }
    let sb = Sysbench {
        program: tools.sysbench.clone(),
        tables: opts.tables,
        table_size: opts.table_size,
    };
    let versions = Versions {
        mariadbd,
        sysbench: sb.version().await?,
        haproxy: haproxy::version(&tools.haproxy)?,
    };
    eprintln!(
        "preparing {} tables x {} rows",
        opts.tables, opts.table_size
    );
    sb.prepare(targets.leader_port).await?;
    let waited = settle(&targets).await?;
    eprintln!(
        "the replica applied the data in {:.1} s",
        waited.as_secs_f64()
    );
    warm_up(&sb, &targets).await?;

    let mut results = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        eprint!("[{}/{}] {row} ... ", i + 1, rows.len());
        let result = measure_row(&sb, &targets, app, row, opts.seconds).await;
        match (&result.failure, result.target) {
            (Some(why), _) => eprintln!("FAILED: {}", why.lines().next().unwrap_or_default()),
            (None, Target::Direct) => eprintln!("{:.0} qps", result.stats.qps),
            (None, _) => eprintln!(
                "{:.0} qps, {:.1} µs CPU/query",
                result.stats.qps,
                result.cpu.as_ref().map_or(f64::NAN, |c| c.us_per_query)
            ),
        }
        results.push(result);
        settle(&targets).await?;
    }
    drop(targets);
    Ok((results, versions))
}

/// Waits for the replica to apply what the leader has written.
async fn settle(targets: &Targets) -> anyhow::Result<Duration> {
    settle::replicas_caught_up(&targets.leader_addr, &targets.replica_addrs, SETTLE_TIMEOUT).await
}

/// A second of point selects through each target: buffer pool, router pools and the
/// classifier's cache are warm before the first timed row.
async fn warm_up(sb: &Sysbench, targets: &Targets) -> anyhow::Result<()> {
    for target in Target::ALL {
        let row = RowSpec {
            workload: "oltp_point_select",
            protocol: matrix::Protocol::Ps,
            threads: 4,
            target,
        };
        sb.run(targets.port(target), &row, 1)
            .await
            .with_context(|| format!("warming up {target}"))?;
    }
    Ok(())
}

/// Runs one row, reading the CPU of this process, HAProxy and the leader around it.
async fn measure_row(
    sb: &Sysbench,
    targets: &Targets,
    app: &App,
    row: &RowSpec,
    seconds: u32,
) -> RowResult {
    let haproxy_pid = targets.haproxy.pid();
    let read_pid = |pid: Option<u32>| pid.and_then(|p| cpu::process(p).ok());
    let self_before = cpu::this_process().ok();
    let haproxy_before = read_pid(Some(haproxy_pid));
    let leader_before = read_pid(targets.leader_pid);
    let router_before = RouterCounters::read(&app.router.metrics);
    let outcome = sb.run(targets.port(row.target), row, seconds).await;
    let router_after = RouterCounters::read(&app.router.metrics);
    let leader_after = read_pid(targets.leader_pid);
    let haproxy_after = read_pid(Some(haproxy_pid));
    let self_after = cpu::this_process().ok();

    let stats = match outcome {
        Ok(stats) => stats,
        Err(e) => return RowResult::failed(row, &e),
    };
    let used = |before: Option<CpuTime>, after: Option<CpuTime>| Some(after?.since(before?));
    let cost = |name: &str, before, after| {
        used(before, after).and_then(|t| CpuCost::new(name, t, stats.queries))
    };
    let mut result = RowResult::new(row, stats);
    result.leader_cpu = cost("mariadbd", leader_before, leader_after);
    result.cpu = match row.target {
        Target::Direct => cost("bench-process", self_before, self_after),
        Target::Switchyard => cost("switchyard", self_before, self_after),
        Target::Haproxy => cost("haproxy", haproxy_before, haproxy_after),
    };
    if row.target == Target::Switchyard {
        result.router = Some(router_after.since(router_before));
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible RunMeta for the report and chart tests.
    pub(crate) fn meta() -> meta::RunMeta {
        meta::RunMeta {
            switchyard_version: "0.1.0".into(),
            git_commit: Some("abc".into()),
            mariadbd_version: "10.11.19-MariaDB".into(),
            sysbench_version: "1.0.20".into(),
            haproxy_version: "2.6.12".into(),
            nproc: 2,
            started_at: "2026-05-01T12:30:05Z".into(),
            duration_s: 60.0,
            settings: meta::Settings {
                quick: true,
                only: vec![],
                threads: vec![8],
                seconds: 3,
                tables: 2,
                table_size: 2000,
                cluster: "1 leader + 1 replica".into(),
                sysbench_args: "--rand-type=uniform".into(),
            },
            method: meta::method(),
        }
    }

    #[test]
    fn quick_args_start_from_quick_defaults_and_keep_what_was_given() {
        let o = BenchArgs {
            quick: true,
            seconds: Some(5),
            ..BenchArgs::default()
        }
        .options();
        assert!(o.quick);
        assert_eq!(
            (o.threads.as_slice(), o.seconds, o.tables),
            (&[8][..], 5, 2)
        );
        let o = BenchArgs {
            threads: vec![2, 4],
            ..BenchArgs::default()
        }
        .options();
        assert!(!o.quick);
        assert_eq!((o.threads.as_slice(), o.seconds), (&[2, 4][..], 20));
    }
}
