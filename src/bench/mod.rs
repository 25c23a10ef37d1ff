//! `switchyard bench`: what switchyard costs and what it wins, side by side in one run.
//! Three parts, each optional (`--only`), all in one report:
//!
//! - sysbench rows: the same leader directly, through switchyard (in this process) and
//!   through HAProxy in TCP mode ([`oltp`]);
//! - sharded rows: switchyard against MariaDB Spider over the same shards and data
//!   ([`sharded`]);
//! - failover rows: `kill -9` of the leader and a planned switchover under writes, time to
//!   the first write and client errors over N trials ([`failover`]);
//! - etcd rows: three routers and two orchestrators over etcd against one process, on the
//!   same events, plus a lost orchestrator and point selects ([`etcd`]);
//! - moves rows: a shard split under writes: copy, catch-up and diff rates, the copy's cost
//!   to the clients' latency, the write cutover's pause ([`moves`]).
//!
//! With `--repeat N` every row is measured N times, interleaved across the targets of its
//! group, and reported as the median with its spread ([`spread`]). The run writes
//! results.json, results.md and the charts.
//!
//! Other modules: [`matrix`] (which rows, in which order), [`sysbench`] (running it, reading
//! its report), [`haproxy`] (the L4 peer), [`cpu`] (CPU time of a process), [`settle`] (the
//! servers between rows), [`report`] (results and their JSON and Markdown forms), [`chart`]
//! (the PNGs), [`meta`] (versions, time), [`stage`] (servers and switchyard of a part),
//! [`cargo`] (the `cargo bench` targets).

pub mod cargo;
pub mod chart;
pub mod cpu;
pub mod etcd;
pub mod failover;
pub mod faults;
pub mod haproxy;
pub mod matrix;
pub mod meta;
pub mod moves;
pub mod oltp;
pub mod report;
pub mod settle;
pub mod sharded;
pub mod spread;
pub mod stage;
pub mod sysbench;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{ensure, Context};

use matrix::RowSpec;
pub use report::{BenchReport, RowResult};

/// mysql_async options for a TCP connection to `127.0.0.1:port` (never the unix socket).
pub fn loopback_opts(port: u16, user: &str, password: &str, db: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// What to measure and where to write it.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// Created if missing; results.json, results.md and the charts go here.
    pub out_dir: PathBuf,
    /// Fewer rows: two sysbench workloads with prepared statements, two sharded workloads,
    /// one trial of each failover event.
    pub quick: bool,
    /// Keep only rows whose name (`workload/protocol/threads/target`, or
    /// `failover/<event>`) contains one of these.
    pub only: Vec<String>,
    /// Client thread counts of the sysbench and sharded rows.
    pub threads: Vec<u32>,
    /// Duration of each run of a row.
    pub seconds: u32,
    /// Rows per sysbench table, and rows per shard of the sharded table.
    pub table_size: u32,
    pub tables: u32,
    /// Runs of each sysbench and sharded row, interleaved across the targets of its group.
    pub repeat: u32,
    /// Trials of each failover event.
    pub failover_trials: u32,
    /// The sysbench rows' router reaches the leader through its Unix-domain socket
    /// (`router.backend_sockets`), as a router on the database host would.
    pub backend_sockets: bool,
}

impl Default for BenchOptions {
    /// The full run: 3 workloads × 2 protocols × 3 thread counts × 3 targets, 20 s each
    /// (about 20 minutes), 6 sharded workloads × 3 thread counts × 2 targets (about 13
    /// minutes), 5 trials of each failover event (a few minutes).
    fn default() -> Self {
        BenchOptions {
            out_dir: meta::default_out_dir(),
            quick: false,
            only: Vec::new(),
            threads: vec![1, 8, 64],
            seconds: 20,
            table_size: 10_000,
            tables: 4,
            repeat: 1,
            failover_trials: 5,
            backend_sockets: false,
        }
    }
}

impl BenchOptions {
    /// About a minute and a half: 2 sysbench workloads (prepared statements), 2 sharded
    /// workloads, 8 threads, 3 s per row, one trial of each failover event.
    pub fn quick() -> Self {
        BenchOptions {
            quick: true,
            threads: vec![8],
            seconds: 3,
            table_size: 2_000,
            tables: 2,
            failover_trials: 1,
            ..BenchOptions::default()
        }
    }
}

/// The command-line form of [`BenchOptions`], for `switchyard bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// A short run: oltp_point_select and oltp_read_write (prepared statements), sharded
    /// point select and scatter COUNT(*), 8 threads, 3 s per row, 2 small tables, one trial
    /// of each failover event.
    #[arg(long)]
    pub quick: bool,
    /// Run only rows whose name contains one of these (comma-separated or repeated). Rows are
    /// named workload/protocol/threads/target, e.g. `oltp_read_only/text/64/haproxy`,
    /// `sharded_point_select/text/8/spider`, and `failover/kill_leader`,
    /// `failover/switchover`; `sharded`, `failover`, `etcd` and `moves` pick those parts
    /// whole.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Client thread counts of the sysbench and sharded rows, comma-separated [default:
    /// 1,8,64; with --quick: 8].
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<u32>,
    /// Seconds per run of a row [default: 20; with --quick: 3].
    #[arg(long)]
    pub seconds: Option<u32>,
    /// sysbench tables [default: 4; with --quick: 2].
    #[arg(long)]
    pub tables: Option<u32>,
    /// Rows per sysbench table and per shard of the sharded table [default: 10000; with
    /// --quick: 2000].
    #[arg(long)]
    pub table_size: Option<u32>,
    /// Measure each sysbench and sharded row N times, interleaved across the targets of its
    /// group; the report gives the median QPS, its min–max and ratios of the medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Trials of each failover event (kill -9 of the leader, switchover) [default: 5; with
    /// --quick: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub trials: Option<u32>,
    /// Where to write the results [default: bench-results/<UTC time>].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The sysbench rows' router reaches the leader through the leader's Unix-domain socket
    /// (router.backend_sockets), as a router on the database host would; TCP otherwise.
    #[arg(long)]
    pub backend_sockets: bool,
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
        o.repeat = self.repeat.max(1);
        o.failover_trials = self.trials.unwrap_or(o.failover_trials);
        o.out_dir = self.out_dir.unwrap_or(o.out_dir);
        o.backend_sockets = self.backend_sockets;
        o
    }
}

/// The rows a run measures, by part.
struct Plan {
    sysbench: Vec<RowSpec>,
    sharded: Vec<RowSpec>,
    failover: Vec<failover::Event>,
    /// The multi-process part (picked whole, as `etcd`).
    etcd: bool,
    /// The online move part (picked whole, as `moves`).
    moves: bool,
}

impl Plan {
    fn of(opts: &BenchOptions) -> Plan {
        let workloads = sharded::Workload::names(opts.quick);
        Plan {
            sysbench: matrix::rows(opts.quick, &opts.threads, &opts.only),
            sharded: matrix::sharded_rows(&workloads, &opts.threads, &opts.only),
            failover: failover::events(&opts.only),
            etcd: matrix::picked("etcd", &opts.only),
            moves: matrix::picked("moves", &opts.only),
        }
    }

    fn is_empty(&self) -> bool {
        self.sysbench.is_empty()
            && self.sharded.is_empty()
            && self.failover.is_empty()
            && !self.etcd
            && !self.moves
    }
}

/// Runs the benchmark and writes results.json, results.md and the charts to `opts.out_dir`.
/// Every server and proxy it starts is stopped when it returns, also on error, and killed if
/// the future is dropped.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    ensure!(
        opts.seconds > 0 && opts.tables > 0 && opts.table_size > 0,
        "seconds, tables and table size must be positive"
    );
    ensure!(
        opts.repeat > 0 && opts.failover_trials > 0,
        "repeat and trials must be positive"
    );
    ensure!(!opts.threads.is_empty(), "no thread counts given");
    let plan = Plan::of(&opts);
    ensure!(
        !plan.is_empty(),
        "--only {:?} matches no row; rows are named like oltp_point_select/ps/8/switchyard, \
         sharded_point_select/text/8/spider, failover/kill_leader or etcd",
        opts.only
    );
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    let not_run = || "not run".to_string();
    let mut versions = oltp::Versions {
        mariadbd: String::new(),
        sysbench: not_run(),
        haproxy: not_run(),
    };
    let mut rows = Vec::new();
    if !plan.sysbench.is_empty() {
        let schedule = matrix::schedule(&plan.sysbench, opts.repeat);
        let (measured, v) = oltp::run(&opts, &plan.sysbench, &schedule).await?;
        rows.extend(measured);
        versions = v;
    }
    if !plan.sharded.is_empty() {
        let schedule = matrix::schedule(&plan.sharded, opts.repeat);
        let (measured, mariadbd) =
            sharded::run(&plan.sharded, &schedule, opts.table_size, opts.seconds).await?;
        rows.extend(measured);
        if versions.mariadbd.is_empty() {
            versions.mariadbd = mariadbd;
        }
    }
    let mut failover = Vec::new();
    if !plan.failover.is_empty() {
        let (measured, mariadbd) = failover::run(&plan.failover, opts.failover_trials).await;
        failover = measured;
        if versions.mariadbd.is_empty() {
            versions.mariadbd = mariadbd.unwrap_or_else(|| "unknown".into());
        }
    }

    let etcd = match plan.etcd {
        true => Some(etcd::run(opts.failover_trials).await),
        false => None,
    };
    let moves = match plan.moves {
        true => Some(moves::run(opts.table_size * 10, opts.failover_trials).await),
        false => None,
    };

    report::set_ratios(&mut rows);
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
                cluster: format!(
                    "1 leader + 1 replica, semi-sync, MariaDB on loopback; the router to the \
                     leader over {}",
                    if opts.backend_sockets {
                        "its Unix-domain socket"
                    } else {
                        "TCP"
                    }
                ),
                sysbench_args: "--rand-type=uniform --percentile=99 --histogram=on \
                                --db-ps-mode=auto|disable"
                    .into(),
                repeat: opts.repeat,
                failover_trials: opts.failover_trials,
                sharded: sharded::setup_description(opts.table_size),
                failover: format!(
                    "each trial on fresh servers: 1 leader + 2 replicas, semi-sync, default \
                     monitor settings; {} writers inserting through switchyard (prepared \
                     statements)",
                    failover::WRITERS
                ),
            },
            method: meta::method(),
        },
        rows,
        failover,
        etcd,
        moves,
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

/// Writes results.json and results.md, then the charts (a chart failure keeps the figures):
/// chart.png for the sysbench rows, chart-sharded.png and chart-failover.png for the others.
fn write_results(report: &BenchReport, dir: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("results.json"), json + "\n").context("writing results.json")?;
    std::fs::write(dir.join("results.md"), report::markdown(report))
        .context("writing results.md")?;
    let chart_failed = |e: anyhow::Error| {
        e.context(format!(
            "results.json and results.md are in {}, but a chart failed",
            dir.display()
        ))
    };
    if report.rows.iter().any(|r| !r.is_sharded()) {
        chart::draw(report, &dir.join("chart.png")).map_err(chart_failed)?;
    }
    if report.rows.iter().any(RowResult::is_sharded) {
        chart::draw_sharded(report, &dir.join("chart-sharded.png")).map_err(chart_failed)?;
    }
    if !report.failover.is_empty() {
        chart::draw_failover(report, &dir.join("chart-failover.png")).map_err(chart_failed)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A measured row of 8 threads, `qps` over 10 s, for the report and chart tests.
    pub(crate) fn row(
        workload: &'static str,
        protocol: matrix::Protocol,
        target: matrix::Target,
        qps: f64,
    ) -> RowResult {
        let spec = RowSpec {
            workload,
            protocol,
            threads: 8,
            target,
        };
        let stats = sysbench::Stats {
            qps,
            queries: (qps * 10.0) as u64,
            ..sysbench::Stats::default()
        };
        RowResult::new(&spec, stats)
    }

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
                repeat: 1,
                failover_trials: 1,
                sharded: sharded::setup_description(2000),
                failover: "fresh servers per trial".into(),
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
        assert_eq!((o.repeat, o.failover_trials), (1, 5));
    }

    #[test]
    fn the_command_line_takes_repeat_and_trials() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let o = Cli::try_parse_from(["bench", "--quick", "--repeat", "3", "--only", "sharded"])
            .unwrap()
            .bench
            .options();
        assert_eq!((o.repeat, o.failover_trials), (3, 1));
        assert_eq!(o.only, ["sharded"]);
        assert!(!o.backend_sockets);
        let o = Cli::try_parse_from(["bench", "--backend-sockets"])
            .unwrap()
            .bench
            .options();
        assert!(o.backend_sockets);
        assert!(Cli::try_parse_from(["bench", "--repeat", "0"]).is_err());
    }

    #[test]
    fn only_picks_parts_of_the_run() {
        let plan = |only: &[&str]| {
            Plan::of(&BenchOptions {
                only: only.iter().map(|s| s.to_string()).collect(),
                ..BenchOptions::quick()
            })
        };
        let p = plan(&["sharded_point_select", "failover/kill"]);
        assert!(p.sysbench.is_empty());
        assert_eq!(p.sharded.len(), 2);
        assert_eq!(p.failover, [failover::Event::KillLeader]);
        let p = plan(&["oltp_point_select"]);
        assert_eq!((p.sysbench.len(), p.sharded.len()), (4, 0));
        assert!(p.failover.is_empty());
        let p = plan(&[]);
        assert_eq!(
            (p.sysbench.len(), p.sharded.len(), p.failover.len()),
            (8, 4, 6)
        );
        let p = plan(&["failover/freeze", "failover/partition"]);
        assert_eq!(
            p.failover,
            [
                failover::Event::FreezeLeader,
                failover::Event::PartitionLeader
            ]
        );
        let p = plan(&["failover/disk_full"]);
        assert_eq!(p.failover, [failover::Event::DiskFullLeader]);
        assert!(!p.etcd);
        let p = plan(&["etcd"]);
        assert!(p.etcd && p.failover.is_empty() && p.sysbench.is_empty());
        assert!(plan(&["nothing"]).is_empty());
    }
}
