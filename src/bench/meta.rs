//! What a run ran on, for the record: versions of everything measured, the commit, the
//! machine's CPU count, and the time (UTC, computed here to spare a date crate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The run's context, written at the top of results.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub switchyard_version: String,
    /// `git rev-parse HEAD` of the source tree, `-dirty` when it has changes.
    pub git_commit: Option<String>,
    pub mariadbd_version: String,
    pub sysbench_version: String,
    pub haproxy_version: String,
    /// CPUs this process may use; everything (servers, router, proxy, sysbench) shares them.
    pub nproc: usize,
    /// UTC, RFC 3339.
    pub started_at: String,
    pub duration_s: f64,
    pub settings: Settings,
    /// How each figure is computed.
    pub method: Vec<String>,
}

/// The options the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    pub only: Vec<String>,
    pub threads: Vec<u32>,
    pub seconds: u32,
    pub tables: u32,
    pub table_size: u32,
    pub cluster: String,
    pub sysbench_args: String,
    /// Runs of each sysbench and sharded row.
    #[serde(default = "one")]
    pub repeat: u32,
    /// Trials of each failover event.
    #[serde(default)]
    pub failover_trials: u32,
    /// The sharded rows' servers and data.
    #[serde(default)]
    pub sharded: String,
    /// The failover trials' servers and load.
    #[serde(default)]
    pub failover: String,
}

/// `repeat` of results written before it was recorded.
fn one() -> u32 {
    1
}

/// How the figures are computed, for readers of results.json and results.md.
pub fn method() -> Vec<String> {
    [
        "Rows run in groups of direct, switchyard, switchyard-socket, haproxy back to back for \
         each workload, protocol and thread count, so that drift on the machine hits them all \
         alike. Before \
         each row the replica has applied everything the leader wrote (GTID positions equal), \
         so that no row pays for the replication work of the one before.",
        "With --repeat N each group is measured N times before the next, its targets in turn \
         and the first target moving one place each time; qps, tps and latencies are the \
         medians of the runs (qps_spread holds each run's qps and the min-max), counts and \
         time their totals, CPU per query over all the runs' queries, ratios from the \
         medians.",
        "qps, tps, errors (sysbench's ignored errors), avg and max latency are sysbench's own; \
         latency is per event (a transaction; one query for oltp_point_select).",
        "p50 and p99 come from sysbench's --histogram output (buckets to 0.001 ms), by the rule \
         sysbench applies for --percentile: the first bucket by which that share of the events \
         is counted. sysbench's own --percentile=99 (two decimals) is kept as p99_sysbench.",
        "ratio is qps over the direct row's qps of the same workload, protocol and threads.",
        "switchyard CPU: getrusage(RUSAGE_SELF) of the bench process, which hosts the router, \
         from just before sysbench starts to just after it exits (connects included), divided \
         by sysbench's query count. It includes the orchestrator's polling and the harness; \
         the same reading on direct rows (bench-process) shows that floor.",
        "haproxy CPU: utime and stime of its process from /proc/<pid>/stat over its rows.",
        "leader CPU: the same for the leader's mariadbd, on every row.",
        "Sharded rows (sharded_*): N client connections (mysql_async, text protocol) repeat \
         one statement for the row's time against Spider or switchyard over the same shards; \
         qps is statements acknowledged per second; p50 and p99 are nearest-rank percentiles \
         of each statement's latency as the client measured it; ratio is switchyard's qps \
         over Spider's. A target that answers the first statement with 1235 is refused.",
        "Failover rows: each trial on fresh servers under 4 writers. kill_leader: from the \
         kill -9 to the acknowledgement of the first write sent after it. switchover: the \
         longest pause between acknowledged writes from 1 s before it to 2 s after. p50 is \
         the median over the trials; client errors are every error the writers saw.",
        "Etcd rows: each measurement on fresh servers and a fresh etcd, the single process \
         measured in the same trial; times are medians over the trials, polled every 2 ms \
         (so 0.0 means within one poll); point selects are prepared SELECT ? from 8 clients \
         for 3 s through one router; ratio is over etcd / single process.",
    ]
    .map(String::from)
    .to_vec()
}

/// `bench-results/<UTC timestamp>` under the current directory.
pub fn default_out_dir() -> PathBuf {
    let stamp = utc(SystemTime::now())
        .replace([':', '-'], "")
        .replace('T', "-");
    PathBuf::from("bench-results").join(stamp.trim_end_matches('Z'))
}

/// RFC 3339 UTC, to the second: `2026-05-01T12:30:05Z`.
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The commit of the source tree this binary was built from, if it is still there.
pub fn git_commit() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_timestamps_follow_the_calendar() {
        let at = |s: u64| utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn the_default_directory_is_named_by_the_time() {
        let dir = default_out_dir();
        assert!(dir.starts_with("bench-results"));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), "20260501-123005".len(), "{name}");
        assert!(
            name.chars().all(|c| c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}
