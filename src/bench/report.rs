//! The results of a run and their two text forms: results.json (every figure, for
//! machines) and results.md (one table a person reads side by side).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use router::context::RouterMetrics;
use serde::{Deserialize, Serialize};

use super::cpu::CpuCost;
use super::matrix::{Protocol, RowSpec, Target};
use super::meta::RunMeta;
use super::sysbench::Stats;

/// Everything a run measured; results.json holds exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub meta: RunMeta,
    pub rows: Vec<RowResult>,
    /// Where results.json, results.md and chart.png were written.
    pub out_dir: PathBuf,
}

/// One workload × protocol × threads × target measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub workload: String,
    pub protocol: Protocol,
    pub threads: u32,
    pub target: Target,
    /// Zero when the row failed.
    #[serde(flatten)]
    pub stats: Stats,
    /// qps over the direct row's qps of the same workload, protocol and threads.
    pub ratio_to_direct: Option<f64>,
    /// The proxy's CPU: the bench process (hosting the router) on switchyard rows, HAProxy's
    /// process on haproxy rows; on direct rows the bench process with no router traffic,
    /// the floor under the switchyard figure.
    pub cpu: Option<CpuCost>,
    /// The leader's mariadbd.
    pub leader_cpu: Option<CpuCost>,
    /// The router's own counters over a switchyard row.
    pub router: Option<RouterCounters>,
    /// Why the row has no figures.
    pub failure: Option<String>,
}

impl RowResult {
    pub fn new(spec: &RowSpec, stats: Stats) -> RowResult {
        RowResult {
            workload: spec.workload.to_string(),
            protocol: spec.protocol,
            threads: spec.threads,
            target: spec.target,
            stats,
            ratio_to_direct: None,
            cpu: None,
            leader_cpu: None,
            router: None,
            failure: None,
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

    /// `workload protocol t=threads`: the group the three targets share.
    pub fn group(&self) -> String {
        format!("{} {} t={}", self.workload, self.protocol, self.threads)
    }
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

/// Fills in each row's ratio to the direct row of its group.
pub fn set_ratios(rows: &mut [RowResult]) {
    let direct: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.target == Target::Direct && r.failure.is_none() && r.stats.qps > 0.0)
        .map(|r| (r.group(), r.stats.qps))
        .collect();
    for row in rows.iter_mut() {
        row.ratio_to_direct = direct
            .iter()
            .find(|(g, _)| *g == row.group())
            .filter(|_| row.failure.is_none())
            .map(|(_, qps)| row.stats.qps / qps);
    }
}

/// results.md: the run's context, one table, how to read it, and failures if any.
pub fn markdown(report: &BenchReport) -> String {
    let m = &report.meta;
    let s = &m.settings;
    let mut out = String::new();
    let _ = writeln!(out, "# switchyard benchmark, {}\n", m.started_at);
    let _ = writeln!(
        out,
        "switchyard {} ({}), MariaDB {}, sysbench {}, HAProxy {}; {} CPUs shared by all \
         processes. {}; {} tables x {} rows; {} s per row; `{}`.\n",
        m.switchyard_version,
        m.git_commit.as_deref().unwrap_or("commit unknown"),
        m.mariadbd_version,
        m.sysbench_version,
        m.haproxy_version,
        m.nproc,
        s.cluster,
        s.tables,
        s.table_size,
        s.seconds,
        s.sysbench_args,
    );
    out.push_str(
        "| workload | protocol | threads | target | QPS | ratio | p50 ms | p99 ms | errors \
         | proxy CPU µs/query (user/sys) | leader CPU µs/query |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &report.rows {
        let ratio = r.ratio_to_direct.map_or("—".into(), |x| format!("{x:.2}"));
        let cpu = match (&r.cpu, r.target) {
            (None, _) => "—".into(),
            (Some(c), Target::Direct) => format!("({:.2})", c.us_per_query),
            (Some(c), _) => format!(
                "{:.1} ({:.1}/{:.1})",
                c.us_per_query, c.user_us_per_query, c.system_us_per_query
            ),
        };
        let leader = r
            .leader_cpu
            .as_ref()
            .map_or("—".into(), |c| format!("{:.1}", c.us_per_query));
        let errors = match (r.failure.is_some(), r.stats.reconnects) {
            (true, _) => "failed".to_string(),
            (false, 0) => r.stats.errors.to_string(),
            (false, n) => format!("{} (+{n} reconnects)", r.stats.errors),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.protocol,
            r.threads,
            r.target,
            r.stats.qps,
            ratio,
            ms(r.stats.latency.p50),
            ms(r.stats.latency.p99),
            errors,
            cpu,
            leader,
        );
    }
    out.push_str(
        "\nratio: QPS over direct's in the same group. proxy CPU: the bench process (which \
         hosts the router) on switchyard rows, HAProxy's process on haproxy rows; in \
         parentheses on direct rows, the bench process with no router traffic (orchestrator \
         polling, the harness): the floor under the switchyard figure. Latency is per \
         sysbench event (one query for oltp_point_select, a transaction otherwise).\n\n",
    );
    out.push_str("How each figure is computed:\n\n");
    for line in &m.method {
        let _ = writeln!(out, "- {line}");
    }
    let failures: Vec<&RowResult> = report.rows.iter().filter(|r| r.failure.is_some()).collect();
    if !failures.is_empty() {
        out.push_str("\n## Failed rows\n\n");
        for r in failures {
            let why = r.failure.as_deref().unwrap_or_default();
            let _ = writeln!(out, "- `{}`:\n\n```\n{}\n```", r.key(), why.trim());
        }
    }
    out
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
    use crate::bench::cpu::CpuTime;
    use std::time::Duration;

    fn row(workload: &'static str, target: Target, qps: f64) -> RowResult {
        let spec = RowSpec {
            workload,
            protocol: Protocol::Ps,
            threads: 8,
            target,
        };
        RowResult::new(
            &spec,
            Stats {
                qps,
                queries: (qps * 10.0) as u64,
                ..Stats::default()
            },
        )
    }

    #[test]
    fn ratios_are_relative_to_the_direct_row_of_the_same_group() {
        let mut rows = vec![
            row("oltp_point_select", Target::Direct, 1000.0),
            row("oltp_point_select", Target::Switchyard, 600.0),
            row("oltp_point_select", Target::Haproxy, 800.0),
            row("oltp_read_write", Target::Switchyard, 100.0),
        ];
        set_ratios(&mut rows);
        let ratios: Vec<Option<f64>> = rows.iter().map(|r| r.ratio_to_direct).collect();
        assert_eq!(ratios, [Some(1.0), Some(0.6), Some(0.8), None]);
    }

    #[test]
    fn the_markdown_table_has_a_row_per_measurement() {
        let mut rows = vec![
            row("oltp_point_select", Target::Direct, 1000.0),
            row("oltp_point_select", Target::Switchyard, 600.0),
        ];
        rows[1].cpu = CpuCost::new(
            "switchyard",
            CpuTime {
                user: Duration::from_millis(150),
                system: Duration::from_millis(50),
            },
            rows[1].stats.queries,
        );
        set_ratios(&mut rows);
        let report = BenchReport {
            meta: crate::bench::tests::meta(),
            rows,
            out_dir: PathBuf::from("x"),
        };
        let md = markdown(&report);
        assert!(
            md.contains("| oltp_point_select | ps | 8 | switchyard | 600 | 0.60 |"),
            "{md}"
        );
        assert!(md.contains("| 33.3 (25.0/8.3) |"), "{md}");
        assert!(md.contains("| oltp_point_select | ps | 8 | direct | 1000 | 1.00 |"));
        assert!(!md.contains("Failed rows"));
    }
}
