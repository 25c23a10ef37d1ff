//! Running sysbench 1.0.20 against one port and reading its report: totals and rates from the
//! "SQL statistics" block, latency avg/max from the "Latency" block, and p50 and p99 from the
//! latency histogram (`--histogram`): one run prints only one `--percentile`, and only to two
//! decimals. sysbench's own p99 is kept beside ours as a check of the histogram reading.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::matrix::RowSpec;

/// The database sysbench's tables live in.
pub const DB: &str = "sbtest";
/// The application account, the same on the servers and in the router.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app";

/// Where sysbench connects: a port on 127.0.0.1 or a Unix-domain socket.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Port(u16),
    Socket(PathBuf),
}

/// sysbench, and the data set every command of a run shares.
#[derive(Debug, Clone)]
pub struct Sysbench {
    pub program: PathBuf,
    pub tables: u32,
    pub table_size: u32,
}

impl Sysbench {
    fn args(&self, to: &Endpoint) -> Vec<String> {
        let mut args = vec!["--db-driver=mysql".to_string()];
        match to {
            Endpoint::Port(port) => {
                args.push("--mysql-host=127.0.0.1".into());
                args.push(format!("--mysql-port={port}"));
            }
            Endpoint::Socket(path) => args.push(format!("--mysql-socket={}", path.display())),
        }
        args.extend([
            format!("--mysql-user={USER}"),
            format!("--mysql-password={PASSWORD}"),
            format!("--mysql-db={DB}"),
            format!("--tables={}", self.tables),
            format!("--table-size={}", self.table_size),
        ]);
        args
    }

    /// Creates and fills the tables (the same tables serve every workload).
    pub async fn prepare(&self, port: u16) -> anyhow::Result<()> {
        let mut args = vec!["oltp_read_write".to_string()];
        args.extend(self.args(&Endpoint::Port(port)));
        args.push(format!("--threads={}", self.tables.clamp(1, 4)));
        args.push("prepare".into());
        let rows = u64::from(self.tables) * u64::from(self.table_size);
        let timeout = Duration::from_secs(120 + rows / 1000);
        self.exec(&args, timeout).await.map(drop)
    }

    /// Runs one row for `seconds` and parses its report.
    pub async fn run(&self, to: &Endpoint, row: &RowSpec, seconds: u32) -> anyhow::Result<Stats> {
        let mut args = vec![row.workload.to_string()];
        args.extend(self.args(to));
        args.extend([
            format!("--threads={}", row.threads),
            format!("--time={seconds}"),
            format!("--db-ps-mode={}", row.protocol.ps_mode()),
            // Uniform keys: sysbench's default (special) concentrates on a few rows, and the
            // server's deadlocks between writers would be counted as errors.
            "--rand-type=uniform".into(),
            "--percentile=99".into(),
            "--histogram=on".into(),
            "--report-interval=0".into(),
            "run".into(),
        ]);
        let out = self
            .exec(&args, Duration::from_secs(u64::from(seconds) + 60))
            .await?;
        parse(&out).with_context(|| format!("reading sysbench's report:\n{out}"))
    }

    /// `sysbench --version`, e.g. `1.0.20`.
    pub async fn version(&self) -> anyhow::Result<String> {
        let out = self
            .exec(&["--version".to_string()], Duration::from_secs(10))
            .await?;
        Ok(out
            .split_whitespace()
            .nth(1)
            .unwrap_or(out.trim())
            .to_string())
    }

    /// Runs sysbench and returns its stdout; fails on a non-zero exit, a timeout or a FATAL
    /// line. The child is killed if this future is dropped.
    async fn exec(&self, args: &[String], timeout: Duration) -> anyhow::Result<String> {
        let child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("can't run {}", self.program.display()))?;
        let shown = args.join(" ");
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("`sysbench {shown}` did not finish within {timeout:?}"))?
            .with_context(|| format!("waiting for `sysbench {shown}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stdout.contains("FATAL") || stderr.contains("FATAL") {
            bail!(
                "`sysbench {shown}` failed ({}):\n{}\n{}",
                out.status,
                tail(&stdout, 20),
                tail(&stderr, 20)
            );
        }
        Ok(stdout)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What one sysbench run reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub queries: u64,
    pub qps: f64,
    pub transactions: u64,
    pub tps: f64,
    /// Errors sysbench ignored and carried on after (deadlocks, lock wait timeouts).
    pub errors: u64,
    pub reconnects: u64,
    /// Seconds sysbench measured for.
    pub time_s: f64,
    #[serde(rename = "latency_ms")]
    pub latency: Latency,
}

/// Latency of one sysbench event (a transaction: one query for `oltp_point_select`), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub avg: f64,
    /// From the histogram (three decimals), by sysbench's rule for `--percentile`.
    pub p50: f64,
    /// From the histogram, like `p50`.
    pub p99: f64,
    /// sysbench's own `--percentile=99` (two decimals): `p99` rounded.
    pub p99_sysbench: f64,
    pub max: f64,
}

/// Reads sysbench's report.
pub fn parse(out: &str) -> anyhow::Result<Stats> {
    let (queries, qps) = count_and_rate(out, "queries:")?;
    let (transactions, tps) = count_and_rate(out, "transactions:")?;
    let (errors, _) = count_and_rate(out, "ignored errors:")?;
    let (reconnects, _) = count_and_rate(out, "reconnects:")?;
    let time_s = value(out, "total time:")?
        .trim_end_matches('s')
        .parse()
        .context("total time")?;
    let num = |label: &str| -> anyhow::Result<f64> {
        value(out, label)?
            .parse()
            .with_context(|| format!("`{label}` is not a number"))
    };
    let histogram = histogram(out);
    let p50 = percentile(&histogram, 50.0).context("no latency histogram in the report")?;
    let p99 = percentile(&histogram, 99.0).context("no latency histogram in the report")?;
    Ok(Stats {
        queries,
        qps,
        transactions,
        tps,
        errors,
        reconnects,
        time_s,
        latency: Latency {
            avg: num("avg:")?,
            p50,
            p99,
            p99_sysbench: num("99th percentile:")?,
            max: num("max:")?,
        },
    })
}

/// The first word after `label` at the start of a (trimmed) line.
fn value<'a>(out: &'a str, label: &str) -> anyhow::Result<&'a str> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no `{label}` line"))
}

/// `queries:   160000 (15991.81 per sec.)` -> (160000, 15991.81).
fn count_and_rate(out: &str, label: &str) -> anyhow::Result<(u64, f64)> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .with_context(|| format!("no `{label}` line"))?;
    let count = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("`{label}` has no count"))?;
    let rate = line
        .split_once('(')
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("`{label}` has no rate"))?;
    Ok((count, rate))
}

/// The (bucket value in ms, events) pairs of sysbench's latency histogram, in order:
/// lines like `       0.051 |*****                                    1234`.
fn histogram(out: &str) -> Vec<(f64, u64)> {
    let Some(start) = out.find("Latency histogram") else {
        return Vec::new();
    };
    out[start..]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (value, rest) = l.split_once('|')?;
            let value = value.trim().parse().ok()?;
            let count = rest.split_whitespace().last()?.parse().ok()?;
            Some((value, count))
        })
        .collect()
}

/// The value of the first bucket by which `pct` percent of the events (rounded to the nearest
/// event) are counted: the rule sysbench applies to its own histogram for `--percentile`
/// (`sb_histogram.c`, `get_pct_cumulative`).
fn percentile(histogram: &[(f64, u64)], pct: f64) -> Option<f64> {
    let total: u64 = histogram.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * pct / 100.0 + 0.5).floor() as u64;
    let mut seen = 0;
    histogram.iter().find_map(|&(v, n)| {
        seen += n;
        (seen >= wanted).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)

Running the test with following options:
Number of threads: 4

Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.104 |*                                        10
       0.106 |****************************************  300
       0.108 |**********                               80
       0.110 |                                         9
       2.300 |                                         1

SQL statistics:
    queries performed:
        read:                            400
        write:                           0
        other:                           0
        total:                           400
    transactions:                        400    (199.52 per sec.)
    queries:                             400    (199.52 per sec.)
    ignored errors:                      2      (1.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          2.0043s
    total number of events:              400

Latency (ms):
         min:                                    0.10
         avg:                                    0.11
         max:                                    2.30
         99th percentile:                        0.11
         sum:                                   44.12

Threads fairness:
    events (avg/stddev):           100.0000/1.22
    execution time (avg/stddev):   0.0110/0.00
";

    #[test]
    fn a_report_gives_totals_rates_and_latency() {
        let s = parse(REPORT).unwrap();
        assert_eq!(s.queries, 400);
        assert_eq!(s.qps, 199.52);
        assert_eq!(s.transactions, 400);
        assert_eq!(s.errors, 2);
        assert_eq!(s.reconnects, 0);
        assert_eq!(s.time_s, 2.0043);
        assert_eq!(s.latency.avg, 0.11);
        assert_eq!(s.latency.max, 2.30);
        assert_eq!(s.latency.p99_sysbench, 0.11);
        assert_eq!(s.latency.p99, 0.110);
        // 10 events up to 0.104, 310 up to 0.106: half of 400 is reached in that bucket.
        assert_eq!(s.latency.p50, 0.106);
    }

    #[test]
    fn percentiles_come_from_cumulative_bucket_counts() {
        let h = histogram(REPORT);
        assert_eq!(h.len(), 5);
        assert_eq!(percentile(&h, 1.0), Some(0.104));
        assert_eq!(percentile(&h, 2.5), Some(0.104));
        assert_eq!(percentile(&h, 2.6), Some(0.104), "10.4 events round to 10");
        assert_eq!(percentile(&h, 2.7), Some(0.106), "10.8 events round to 11");
        assert_eq!(percentile(&h, 99.0), Some(0.110));
        assert_eq!(percentile(&h, 100.0), Some(2.3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_report_without_a_histogram_is_an_error() {
        let start = REPORT.find("Latency histogram").unwrap();
        let end = REPORT.find("SQL statistics").unwrap();
        let cut = format!("{}{}", &REPORT[..start], &REPORT[end..]);
        assert!(parse(&cut).is_err());
    }
}
