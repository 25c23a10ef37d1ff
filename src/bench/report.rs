//! The results of a run and their two text forms: results.json (every figure, for
//! machines) and results.md (a table per part of the run, read side by side).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use router::context::RouterMetrics;
use serde::{Deserialize, Serialize};

use super::cpu::{CpuCost, CpuTime};
use super::failover::FailoverResult;
use super::matrix::{self, Protocol, RowSpec, Target};
use super::meta::RunMeta;
use super::sharded;
use super::spread::{self, Spread};
use super::sysbench::Stats;

/// Everything a run measured; results.json holds exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub meta: RunMeta,
    /// The sysbench rows, then the sharded rows (see [`RowResult::is_sharded`]).
    pub rows: Vec<RowResult>,
    /// Leader failovers and switchovers, one entry per kind of event.
    #[serde(default)]
    pub failover: Vec<FailoverResult>,
    /// Several processes over etcd against one (`etcd` part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<super::etcd::EtcdResult>,
    /// A shard split under writes (`moves` part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves: Option<super::moves::MovesResult>,
    /// Where results.json, results.md and the charts were written.
    pub out_dir: PathBuf,
}

/// One workload × protocol × threads × target measurement (the median of its runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub workload: String,
    pub protocol: Protocol,
    pub threads: u32,
    pub target: Target,
    /// Zero when the row failed or was refused. Measured more than once (`--repeat`): rates
    /// and latencies are the medians of the runs, counts and time their totals.
    #[serde(flatten)]
    pub stats: Stats,
    /// QPS of each run, their median (`qps` above) and range.
    #[serde(default)]
    pub qps_spread: Option<Spread>,
    /// qps over the qps of the group's baseline row (same workload, protocol and threads):
    /// direct for sysbench rows, Spider for sharded rows. From the medians.
    #[serde(alias = "ratio_to_direct")]
    pub ratio: Option<f64>,
    /// The proxy's CPU: the bench process (hosting the router) on switchyard rows, HAProxy's
    /// process on haproxy rows; on direct rows the bench process with no router traffic,
    /// the floor under the switchyard figure. None on sharded rows.
    pub cpu: Option<CpuCost>,
    /// The leader's mariadbd.
    pub leader_cpu: Option<CpuCost>,
    /// The router's own counters over a switchyard row.
    pub router: Option<RouterCounters>,
    /// Why the row has no figures.
    pub failure: Option<String>,
    /// The target refused the workload (the router's 1235, "not supported yet"): its message.
    #[serde(default)]
    pub refused: Option<String>,
}

impl RowResult {
    pub fn new(spec: &RowSpec, stats: Stats) -> RowResult {
        RowResult {
            workload: spec.workload.to_string(),
            protocol: spec.protocol,
            threads: spec.threads,
            target: spec.target,
            stats,
            qps_spread: None,
            ratio: None,
            cpu: None,
            leader_cpu: None,
            router: None,
            failure: None,
            refused: None,
        }
    }

    pub fn failed(spec: &RowSpec, error: &anyhow::Error) -> RowResult {
        RowResult {
            failure: Some(format!("{error:#}")),
            ..RowResult::new(spec, Stats::default())
        }
    }

    /// `workload/protocol/threads/target`, the name `--only` matches.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.workload, self.protocol, self.threads, self.target
        )
    }

    /// `workload protocol t=threads`: the group the targets share.
    pub fn group(&self) -> String {
        format!("{} {} t={}", self.workload, self.protocol, self.threads)
    }

    /// A row of the sharded comparison (switchyard against Spider).
    pub fn is_sharded(&self) -> bool {
        matrix::is_sharded(&self.workload)
    }

    /// The target the ratios of this row's group are relative to.
    pub fn baseline(&self) -> Target {
        if self.is_sharded() {
            Target::Spider
        } else {
            Target::Direct
        }
    }

    /// Whether the row has figures (it neither failed nor was refused).
    pub fn measured(&self) -> bool {
        self.failure.is_none() && self.refused.is_none()
    }
}

/// One row from its runs (`--repeat`), in the order taken: a failed or refused run makes
/// the row failed or refused; otherwise rates and latencies are the runs' medians (with the
/// QPS spread), counts their totals and CPU per query over all the runs' queries.
pub fn merge_runs(mut runs: Vec<RowResult>) -> Option<RowResult> {
    let n = runs.len();
    if let Some(i) = runs.iter().position(|r| !r.measured()) {
        let mut row = runs.swap_remove(i);
        if n > 1 {
            if let Some(why) = &mut row.failure {
                *why = format!("one of {n} runs: {why}");
            }
        }
        return Some(row);
    }
    let stats: Vec<Stats> = runs.iter().map(|r| r.stats).collect();
    let qps: Vec<f64> = stats.iter().map(|s| s.qps).collect();
    let cpu = merge_cpu(runs.iter().map(|r| (r.cpu.as_ref(), r.stats.queries)));
    let leader_cpu = merge_cpu(
        runs.iter()
            .map(|r| (r.leader_cpu.as_ref(), r.stats.queries)),
    );
    let router = runs
        .iter()
        .map(|r| r.router)
        .sum::<Option<RouterCounters>>();
    let first = runs.into_iter().next()?;
    Some(RowResult {
        stats: spread::combine(&stats),
        qps_spread: Spread::of(&qps),
        cpu,
        leader_cpu,
        router,
        ..first
    })
}

/// Measures `rows` in the order of `schedule` ([`matrix::schedule`]) with `measure`, saying
/// which on stderr, and merges each row's runs ([`merge_runs`]): one result per row, in row
/// order. Stops at the first error `measure` returns.
pub async fn measure_scheduled(
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
    mut measure: impl AsyncFnMut(&RowSpec) -> anyhow::Result<RowResult>,
) -> anyhow::Result<Vec<RowResult>> {
    let mut runs: Vec<Vec<RowResult>> = vec![Vec::new(); rows.len()];
    for (n, &(i, rep)) in schedule.iter().enumerate() {
        let row = &rows[i];
        eprint!(
            "[{}/{}] {row} (run {}) ... ",
            n + 1,
            schedule.len(),
            rep + 1
        );
        runs[i].push(measure(row).await?);
    }
    Ok(runs.into_iter().filter_map(merge_runs).collect())
}

/// The CPU of several runs per query of all of them; `None` if a run has no figure.
fn merge_cpu<'a>(runs: impl Iterator<Item = (Option<&'a CpuCost>, u64)>) -> Option<CpuCost> {
    let (mut user, mut system, mut queries, mut process) = (0.0, 0.0, 0, None);
    for (cost, n) in runs {
        let cost = cost?;
        user += cost.user_s;
        system += cost.system_s;
        queries += n;
        process.get_or_insert(cost.process.as_str());
    }
    let used = CpuTime {
        user: Duration::from_secs_f64(user),
        system: Duration::from_secs_f64(system),
    };
    CpuCost::new(process?, used, queries)
}

/// The router's counters, or what they grew by over a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterCounters {
    pub connections: u64,
    pub statements: u64,
    pub errors: u64,
    pub backend_retries: u64,
}

impl RouterCounters {
    pub fn read(m: &RouterMetrics) -> RouterCounters {
        RouterCounters {
            connections: m.connections_total.load(Ordering::Relaxed),
            statements: m.statements.load(Ordering::Relaxed),
            errors: m.errors.load(Ordering::Relaxed),
            backend_retries: m.backend_retries.load(Ordering::Relaxed),
        }
    }

    pub fn since(self, earlier: RouterCounters) -> RouterCounters {
        RouterCounters {
            connections: self.connections.saturating_sub(earlier.connections),
            statements: self.statements.saturating_sub(earlier.statements),
            errors: self.errors.saturating_sub(earlier.errors),
            backend_retries: self.backend_retries.saturating_sub(earlier.backend_retries),
        }
    }
}

impl std::iter::Sum for RouterCounters {
    fn sum<I: Iterator<Item = RouterCounters>>(iter: I) -> RouterCounters {
        iter.fold(RouterCounters::default(), |a, b| RouterCounters {
            connections: a.connections + b.connections,
            statements: a.statements + b.statements,
            errors: a.errors + b.errors,
            backend_retries: a.backend_retries + b.backend_retries,
        })
    }
}

/// Fills in each row's ratio to the baseline row of its group (direct, or Spider for sharded
/// rows).
pub fn set_ratios(rows: &mut [RowResult]) {
    let baselines: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.target == r.baseline() && r.measured() && r.stats.qps > 0.0)
        .map(|r| (r.group(), r.stats.qps))
        .collect();
    for row in rows.iter_mut() {
        row.ratio = baselines
            .iter()
            .find(|(g, _)| *g == row.group())
            .filter(|_| row.measured())
            .map(|(_, qps)| row.stats.qps / qps);
    }
}

/// results.md: the run's context, a table per part of the run (sysbench, sharded, failover),
/// how to read them, and failures if any.
pub fn markdown(report: &BenchReport) -> String {
    let m = &report.meta;
    let s = &m.settings;
    let mut out = String::new();
    let _ = writeln!(out, "# switchyard benchmark, {}\n", m.started_at);
    let runs = match s.repeat {
        0 | 1 => "one run per row".to_string(),
        n => format!("{n} runs per row, interleaved across targets: the median shown"),
    };
    let _ = writeln!(
        out,
        "switchyard {} ({}), MariaDB {}, sysbench {}, HAProxy {}; {} CPUs shared by all \
         processes; {runs}.\n",
        m.switchyard_version,
        m.git_commit.as_deref().unwrap_or("commit unknown"),
        m.mariadbd_version,
        m.sysbench_version,
        m.haproxy_version,
        m.nproc,
    );
    let (sharded, sysbench): (Vec<&RowResult>, Vec<&RowResult>) =
        report.rows.iter().partition(|r| r.is_sharded());
    if !sysbench.is_empty() {
        sysbench_table(&mut out, report, &sysbench);
    }
    if !sharded.is_empty() {
        sharded_table(&mut out, report, &sharded);
    }
    if !report.failover.is_empty() {
        failover_table(&mut out, report);
    }
    if let Some(e) = &report.etcd {
        etcd_table(&mut out, e);
    }
    if let Some(mv) = &report.moves {
        moves_table(&mut out, mv);
    }
    out.push_str("How each figure is computed:\n\n");
    for line in &m.method {
        let _ = writeln!(out, "- {line}");
    }
    let refused: Vec<&RowResult> = report.rows.iter().filter(|r| r.refused.is_some()).collect();
    if !refused.is_empty() {
        out.push_str("\n## Refused rows\n\n");
        for r in refused {
            let why = r.refused.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- `{}`: {}", r.key(), why.trim());
        }
    }
    let failures: Vec<&RowResult> = report.rows.iter().filter(|r| r.failure.is_some()).collect();
    let failed_trials: Vec<(&FailoverResult, &String)> = report
        .failover
        .iter()
        .flat_map(|f| f.failures.iter().map(move |why| (f, why)))
        .collect();
    if !failures.is_empty() || !failed_trials.is_empty() {
        out.push_str("\n## Failed rows\n\n");
        for r in failures {
            let why = r.failure.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- `{}`:\n\n```\n{}\n```", r.key(), why.trim());
        }
        for (f, why) in failed_trials {
            let _ = writeln!(out, "- `{}`:\n\n```\n{}\n```", f.key(), why.trim());
        }
    }
    out
}

/// QPS (the median) and its range over the runs, the two first figures of every table.
fn qps_cells(r: &RowResult) -> [String; 2] {
    if let Some(why) = &r.refused {
        let code = if why.contains("1235") { " (1235)" } else { "" };
        return [format!("refused{code}"), "—".into()];
    }
    if r.failure.is_some() {
        return ["failed".into(), "—".into()];
    }
    let range = match &r.qps_spread {
        Some(s) if s.runs.len() > 1 => format!("{:.0}–{:.0}", s.min, s.max),
        _ => "—".into(),
    };
    [format!("{:.0}", r.stats.qps), range]
}

fn latency_cells(r: &RowResult) -> [String; 2] {
    if r.measured() {
        [ms(r.stats.latency.p50), ms(r.stats.latency.p99)]
    } else {
        ["—".into(), "—".into()]
    }
}

/// A row's CPU cells: the proxy's per statement (user/sys), in parentheses on direct rows
/// (the bench process with no proxied traffic), and the backends' (leader or shards).
fn cpu_cells(r: &RowResult) -> [String; 2] {
    let proxy = match (&r.cpu, r.target) {
        (None, _) => "—".into(),
        (Some(c), Target::Direct) => format!("({:.2})", c.us_per_query),
        (Some(c), _) => format!(
            "{:.1} ({:.1}/{:.1})",
            c.us_per_query, c.user_us_per_query, c.system_us_per_query
        ),
    };
    let backends = r
        .leader_cpu
        .as_ref()
        .map_or("—".into(), |c| format!("{:.1}", c.us_per_query));
    [proxy, backends]
}

fn sysbench_table(out: &mut String, report: &BenchReport, rows: &[&RowResult]) {
    let s = &report.meta.settings;
    let _ = writeln!(
        out,
        "## sysbench: direct, switchyard (TCP and Unix socket), HAProxy\n\n{}; {} tables x {} \
         rows; {} s per row; \
         `{}`.\n",
        s.cluster, s.tables, s.table_size, s.seconds, s.sysbench_args,
    );
    out.push_str(
        "| workload | protocol | threads | target | QPS | QPS min–max | ratio | p50 ms | p99 ms \
         | errors | proxy CPU µs/query (user/sys) | leader CPU µs/query |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ratio = r.ratio.map_or("—".into(), |x| format!("{x:.2}"));
        let [cpu, leader] = cpu_cells(r);
        let errors = match (r.failure.is_some(), r.stats.reconnects) {
            (true, _) => "failed".to_string(),
            (false, 0) => r.stats.errors.to_string(),
            (false, n) => format!("{} (+{n} reconnects)", r.stats.errors),
        };
        let [qps, range] = qps_cells(r);
        let [p50, p99] = latency_cells(r);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {qps} | {range} | {ratio} | {p50} | {p99} | {errors} | {cpu} \
             | {leader} |",
            r.workload, r.protocol, r.threads, r.target,
        );
    }
    out.push_str(
        "\nratio: QPS over direct's in the same group. switchyard-socket: sysbench through the \
         router's Unix-domain socket (the router to the leader over TCP, as in every row). \
         proxy CPU: the bench process (which hosts the router) on switchyard rows, HAProxy's process on haproxy rows; in \
         parentheses on direct rows, the bench process with no router traffic (orchestrator \
         polling, the harness): the floor under the switchyard figure. Latency is per \
         sysbench event (one query for oltp_point_select, a transaction otherwise).\n\n",
    );
}

fn sharded_table(out: &mut String, report: &BenchReport, rows: &[&RowResult]) {
    let s = &report.meta.settings;
    let _ = writeln!(
        out,
        "## Sharded: switchyard against MariaDB Spider\n\n{}; {} s per row.\n",
        s.sharded, s.seconds,
    );
    out.push_str(
        "| workload | threads | target | QPS | QPS min–max | switchyard / Spider | p50 ms \
         | p99 ms | errors | proxy CPU µs/stmt (user/sys) | shards' CPU µs/stmt |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ratio = match (r.ratio, r.target) {
            (Some(x), Target::Switchyard) => format!("{x:.2}"),
            _ => "—".into(),
        };
        let [qps, range] = qps_cells(r);
        let [p50, p99] = latency_cells(r);
        let errors = if r.measured() {
            r.stats.errors.to_string()
        } else {
            "—".into()
        };
        let [cpu, shards] = cpu_cells(r);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {qps} | {range} | {ratio} | {p50} | {p99} | {errors} | {cpu} \
             | {shards} |",
            r.workload, r.threads, r.target,
        );
    }
    out.push_str(
        "\nBoth read and write the same backend tables: switchyard through its shard map, \
         Spider (a third MariaDB server, `ha_spider` with its default settings) through one \
         `CREATE SERVER` per shard. A ratio above 1 means switchyard served more statements \
         per second. Latency is per statement, as the client sees it. proxy CPU: the router's \
         threads (the bench process less its client threads) on switchyard rows, the Spider \
         server's process on spider rows; shards' CPU: the two servers holding the shards, \
         whichever path reached them. Statements:\n\n",
    );
    let mut seen: Vec<&str> = Vec::new();
    for r in rows {
        if seen.contains(&r.workload.as_str()) {
            continue;
        }
        seen.push(&r.workload);
        if let Some(w) = sharded::Workload::from_name(&r.workload) {
            let _ = writeln!(out, "- {}: `{}`", r.workload, w.shape());
        }
    }
    out.push('\n');
}

fn etcd_table(out: &mut String, e: &super::etcd::EtcdResult) {
    let _ = writeln!(
        out,
        "## Three routers and two orchestrators over etcd vs one process\n\n{} trials, each \
         measurement on fresh servers and a fresh etcd (one member): one cluster of a leader \
         and two semi-sync replicas, two writers per router; routers a and b (role all) and \
         r (role router); lease 5 s.\n",
        e.trials
    );
    out.push_str(
        "| row | single process (median) | over etcd (median) | ratio | note |\n\
         |---|---:|---:|---:|---|\n",
    );
    let shown = |s: &Option<super::spread::Spread>| {
        s.as_ref()
            .map_or("-".to_string(), |s| format!("{:.1}", s.median))
    };
    for r in &e.rows {
        let ratio = r.ratio().map_or(String::new(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} |",
            r.measure,
            shown(&r.single),
            shown(&r.multi),
            r.note
        );
    }
    for f in &e.failures {
        let _ = writeln!(out, "\n- failed: {f}");
    }
    out.push('\n');
}

fn moves_table(out: &mut String, mv: &super::moves::MovesResult) {
    let _ = writeln!(
        out,
        "## A shard split under writes

{} trials, each on fresh servers: keyspace `app`'s \
         single shard (c1) split into `-80` on c2 and `80-` on c3; table `customers` of {} \
         rows of ~150 bytes; 8 clients updating random rows through the router (prepared, \
         autocommit) during the copy and the cutover.\n",
        mv.trials, mv.rows
    );
    out.push_str("| measure | median | min | max | note |\n|---|---:|---:|---:|---|\n");
    for r in &mv.measures {
        let (med, min, max) = match &r.values {
            Some(s) => (
                format!("{:.1}", s.median),
                format!("{:.1}", s.min),
                format!("{:.1}", s.max),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {med} | {min} | {max} | {} |",
            r.measure, r.note
        );
    }
    for f in &mv.failures {
        let _ = writeln!(out, "\n- failed: {f}");
    }
    out.push('\n');
}

fn failover_table(out: &mut String, report: &BenchReport) {
    let _ = writeln!(
        out,
        "## Failover and switchover\n\n{}.\n",
        report.meta.settings.failover
    );
    out.push_str(
        "| event | trials | time to first write p50 ms | max ms | client errors (total) \
         | client errors per trial | acknowledged writes lost |\n|---|---:|---:|---:|---:|---|---:|\n",
    );
    for f in &report.failover {
        let (p50, max) = match &f.time_ms {
            Some(t) => (format!("{:.0}", t.median), format!("{:.0}", t.max)),
            None => ("failed".into(), "—".into()),
        };
        let per_trial: Vec<String> = f.client_errors.iter().map(u64::to_string).collect();
        let ok = f.client_errors.len();
        let _ = writeln!(
            out,
            "| {} | {ok} of {} | {p50} | {max} | {} | {} | {} |",
            f.key(),
            f.trials,
            f.client_errors_total(),
            per_trial.join(", "),
            f.writes_lost_total(),
        );
    }
    out.push('\n');
    for f in &report.failover {
        let _ = writeln!(out, "- {}: {}", f.key(), f.event.measure());
    }
    out.push('\n');
}

/// Milliseconds: three decimals below 1 ms (the histogram's precision), two above, where the
/// third is noise.
fn ms(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &'static str, target: Target, qps: f64) -> RowResult {
        crate::bench::tests::row(workload, Protocol::Ps, target, qps)
    }

    #[test]
    fn ratios_are_relative_to_the_baseline_row_of_the_same_group() {
        let mut rows = vec![
            row("oltp_point_select", Target::Direct, 1000.0),
            row("oltp_point_select", Target::Switchyard, 600.0),
            row("oltp_point_select", Target::Haproxy, 800.0),
            row("oltp_read_write", Target::Switchyard, 100.0),
            row("sharded_point_select", Target::Spider, 500.0),
            row("sharded_point_select", Target::Switchyard, 1500.0),
            row("sharded_scatter_count", Target::Spider, 50.0),
            row("sharded_scatter_count", Target::Switchyard, 0.0),
        ];
        rows[7].refused = Some("ERROR 1235 (42000): not supported yet".into());
        set_ratios(&mut rows);
        let ratios: Vec<Option<f64>> = rows.iter().map(|r| r.ratio).collect();
        assert_eq!(
            ratios,
            [
                Some(1.0),
                Some(0.6),
                Some(0.8),
                None,
                Some(1.0),
                Some(3.0),
                Some(1.0),
                None
            ]
        );
    }

    #[test]
    fn repeated_runs_merge_into_medians_with_their_spread() {
        let runs: Vec<RowResult> = [900.0, 1200.0, 1000.0]
            .into_iter()
            .map(|qps| {
                let mut r = row("oltp_point_select", Target::Switchyard, qps);
                r.cpu = CpuCost::new(
                    "switchyard",
                    CpuTime {
                        user: Duration::from_millis(100),
                        system: Duration::ZERO,
                    },
                    r.stats.queries,
                );
                r
            })
            .collect();
        let merged = merge_runs(runs.clone()).unwrap();
        assert_eq!(merged.stats.qps, 1000.0);
        assert_eq!(merged.stats.queries, 31_000);
        let spread = merged.qps_spread.unwrap();
        assert_eq!((spread.min, spread.max), (900.0, 1200.0));
        assert_eq!(spread.runs, [900.0, 1200.0, 1000.0]);
        let cpu = merged.cpu.unwrap();
        assert!(
            (cpu.us_per_query - 300_000.0 / 31_000.0).abs() < 1e-6,
            "{cpu:?}"
        );

        let mut with_failure = runs;
        with_failure[1].failure = Some("boom".into());
        let merged = merge_runs(with_failure).unwrap();
        assert_eq!(merged.failure.as_deref(), Some("one of 3 runs: boom"));
        assert_eq!(merge_runs(Vec::new()), None);
    }

    #[test]
    fn the_markdown_table_has_a_row_per_measurement() {
        let mut rows = vec![
            row("oltp_point_select", Target::Direct, 1000.0),
            row("oltp_point_select", Target::Switchyard, 600.0),
            row("sharded_point_select", Target::Spider, 500.0),
            row("sharded_point_select", Target::Switchyard, 1500.0),
            row("sharded_scatter_sum_group", Target::Switchyard, 0.0),
        ];
        rows[1].cpu = CpuCost::new(
            "switchyard",
            CpuTime {
                user: Duration::from_millis(150),
                system: Duration::from_millis(50),
            },
            rows[1].stats.queries,
        );
        rows[4].refused = Some("ERROR 1235 (42000): GROUP BY is not supported yet".into());
        let mut rows: Vec<RowResult> = rows
            .into_iter()
            .map(|r| merge_runs(vec![r]).unwrap())
            .collect();
        set_ratios(&mut rows);
        let report = BenchReport {
            meta: crate::bench::tests::meta(),
            rows,
            failover: vec![crate::bench::failover::tests::result()],
            etcd: None,
            moves: None,
            out_dir: PathBuf::from("x"),
        };
        let md = markdown(&report);
        assert!(
            md.contains("| oltp_point_select | ps | 8 | switchyard | 600 | — | 0.60 |"),
            "{md}"
        );
        assert!(md.contains("| 33.3 (25.0/8.3) |"), "{md}");
        assert!(md.contains("| oltp_point_select | ps | 8 | direct | 1000 | — | 1.00 |"));
        assert!(
            md.contains("| sharded_point_select | 8 | switchyard | 1500 | — | 3.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| sharded_scatter_sum_group | 8 | switchyard | refused (1235) |"),
            "{md}"
        );
        assert!(md.contains("## Refused rows"), "{md}");
        assert!(
            md.contains("| failover/kill_leader | 2 of 2 | 160 | 180 | 7 | 3, 4 |"),
            "{md}"
        );
        assert!(!md.contains("Failed rows"));
    }
}
