//! Which rows a run measures and in what order: every sysbench workload × protocol × thread
//! count against the three targets back to back, every sharded workload × thread count against
//! Spider and switchyard, and the failover events; with `--repeat` each group of targets is
//! measured again and again in turn, so that drift on a shared machine hits all alike.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The sysbench OLTP scripts a full run measures, lightest first.
pub const WORKLOADS: &[&str] = &["oltp_point_select", "oltp_read_only", "oltp_read_write"];
/// A quick run: the lightest and the heaviest.
pub const QUICK_WORKLOADS: &[&str] = &["oltp_point_select", "oltp_read_write"];

/// How sysbench sends statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Server-side prepared statements (`--db-ps-mode=auto`).
    Ps,
    /// Text protocol, COM_QUERY (`--db-ps-mode=disable`).
    Text,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Ps, Protocol::Text];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ps => "ps",
            Protocol::Text => "text",
        }
    }

    /// sysbench's `--db-ps-mode` value.
    pub fn ps_mode(self) -> &'static str {
        match self {
            Protocol::Ps => "auto",
            Protocol::Text => "disable",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where sysbench connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The leader's own port: the baseline.
    Direct,
    /// switchyard's router, hosted by the bench process.
    Switchyard,
    /// The same router through its Unix-domain socket (a client on the same host).
    #[serde(rename = "switchyard-socket")]
    SwitchyardSocket,
    /// HAProxy in TCP mode: a proxy that parses nothing.
    Haproxy,
    /// MariaDB Spider over the same shards as switchyard: the baseline of sharded rows.
    Spider,
}

impl Target {
    /// The targets of a sysbench group, in the order each group runs them.
    pub const SYSBENCH: [Target; 4] = [
        Target::Direct,
        Target::Switchyard,
        Target::SwitchyardSocket,
        Target::Haproxy,
    ];
    /// The targets of a sharded group.
    pub const SHARDED: [Target; 2] = [Target::Spider, Target::Switchyard];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Switchyard => "switchyard",
            Target::SwitchyardSocket => "switchyard-socket",
            Target::Haproxy => "haproxy",
            Target::Spider => "spider",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One measurement to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    pub workload: &'static str,
    pub protocol: Protocol,
    pub threads: u32,
    pub target: Target,
}

impl RowSpec {
    /// The name `--only` filters match against: `workload/protocol/threads/target`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.workload, self.protocol, self.threads, self.target
        )
    }

    /// The same row against another target: the rows a ratio compares and `--repeat`
    /// interleaves.
    pub fn same_group(&self, other: &RowSpec) -> bool {
        self.workload == other.workload
            && self.protocol == other.protocol
            && self.threads == other.threads
    }

    /// A row of the sharded comparison (switchyard against Spider) rather than of sysbench's.
    pub fn is_sharded(&self) -> bool {
        is_sharded(self.workload)
    }
}

/// Whether a workload belongs to the sharded comparison: their names start with `sharded_`.
pub fn is_sharded(workload: &str) -> bool {
    workload.starts_with(SHARDED_PREFIX)
}

/// What every sharded workload's name starts with, so that `--only sharded` picks them all.
pub const SHARDED_PREFIX: &str = "sharded_";

impl fmt::Display for RowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} t={} {}",
            self.workload, self.protocol, self.threads, self.target
        )
    }
}

/// Every row of a run, in run order. `only` keeps the rows whose key contains any of its
/// strings (all rows when empty); a quick run measures fewer workloads and only prepared
/// statements.
pub fn rows(quick: bool, threads: &[u32], only: &[String]) -> Vec<RowSpec> {
    let (workloads, protocols): (&[&'static str], &[Protocol]) = if quick {
        (QUICK_WORKLOADS, &[Protocol::Ps])
    } else {
        (WORKLOADS, &Protocol::ALL)
    };
    let mut out = Vec::new();
    for &workload in workloads {
        for &protocol in protocols {
            for &threads in threads {
                for target in Target::SYSBENCH {
                    let row = RowSpec {
                        workload,
                        protocol,
                        threads,
                        target,
                    };
                    if picked(&row.key(), only) {
                        out.push(row);
                    }
                }
            }
        }
    }
    out
}

/// The sharded rows of a run, in run order: each of `workloads` × thread count against Spider
/// and switchyard (text protocol: the clients send plain statements), the first target
/// alternating from one workload to the next.
pub fn sharded_rows(workloads: &[&'static str], threads: &[u32], only: &[String]) -> Vec<RowSpec> {
    let mut out = Vec::new();
    for (i, &workload) in workloads.iter().enumerate() {
        for &threads in threads {
            let mut targets = Target::SHARDED;
            if i % 2 == 1 {
                targets.reverse();
            }
            for target in targets {
                let row = RowSpec {
                    workload,
                    protocol: Protocol::Text,
                    threads,
                    target,
                };
                if picked(&row.key(), only) {
                    out.push(row);
                }
            }
        }
    }
    out
}

/// Whether `--only` keeps the row or event named `key`: all when no filter is given, else
/// those whose name contains one of the filters.
pub fn picked(key: &str, only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|f| key.contains(f.as_str()))
}

/// The order in which `rows` are measured `repeat` times: `(index into rows, repetition)`.
/// Each group (the targets of one workload, protocol and thread count, adjacent in `rows`)
/// is measured `repeat` times before the next group starts, its targets one after the other
/// and the first target moving one place on each repetition, so that drift (a busy
/// neighbour, a warming cache) hits every target of the group alike.
pub fn schedule(rows: &[RowSpec], repeat: u32) -> Vec<(usize, u32)> {
    let mut out = Vec::with_capacity(rows.len() * repeat as usize);
    let mut start = 0;
    while start < rows.len() {
        let len = rows[start..]
            .iter()
            .take_while(|r| r.same_group(&rows[start]))
            .count();
        for rep in 0..repeat {
            for k in 0..len {
                out.push((start + (k + rep as usize) % len, rep));
            }
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_interleaves_the_targets_of_each_group() {
        let rows = rows(false, &[1, 8, 64], &[]);
        assert_eq!(rows.len(), 3 * 2 * 3 * 4);
        assert_eq!(rows[0].key(), "oltp_point_select/ps/1/direct");
        assert_eq!(rows[1].key(), "oltp_point_select/ps/1/switchyard");
        assert_eq!(rows[2].key(), "oltp_point_select/ps/1/switchyard-socket");
        assert_eq!(rows[3].key(), "oltp_point_select/ps/1/haproxy");
        assert_eq!(rows[4].key(), "oltp_point_select/ps/8/direct");
        assert_eq!(rows[71].key(), "oltp_read_write/text/64/haproxy");
        assert_eq!(rows[5].to_string(), "oltp_point_select ps t=8 switchyard");
    }

    #[test]
    fn quick_runs_measure_two_workloads_with_prepared_statements() {
        let keys: Vec<String> = rows(true, &[8], &[]).iter().map(RowSpec::key).collect();
        assert_eq!(
            keys,
            [
                "oltp_point_select/ps/8/direct",
                "oltp_point_select/ps/8/switchyard",
                "oltp_point_select/ps/8/switchyard-socket",
                "oltp_point_select/ps/8/haproxy",
                "oltp_read_write/ps/8/direct",
                "oltp_read_write/ps/8/switchyard",
                "oltp_read_write/ps/8/switchyard-socket",
                "oltp_read_write/ps/8/haproxy",
            ]
        );
    }

    #[test]
    fn repeated_groups_rotate_their_targets() {
        let rows = rows(true, &[8], &["point_select".to_string()]);
        let order: Vec<(String, u32)> = schedule(&rows, 2)
            .into_iter()
            .map(|(i, rep)| (rows[i].target.to_string(), rep))
            .collect();
        let want = [
            ("direct", 0),
            ("switchyard", 0),
            ("switchyard-socket", 0),
            ("haproxy", 0),
            ("switchyard", 1),
            ("switchyard-socket", 1),
            ("haproxy", 1),
            ("direct", 1),
        ];
        let want: Vec<(String, u32)> = want.iter().map(|(t, r)| (t.to_string(), *r)).collect();
        assert_eq!(order, want);
        // Once each, in row order, without --repeat.
        let all = super::rows(true, &[8], &[]);
        let once: Vec<usize> = schedule(&all, 1).into_iter().map(|(i, _)| i).collect();
        assert_eq!(once, (0..all.len()).collect::<Vec<_>>());
    }

    #[test]
    fn sharded_rows_pair_spider_and_switchyard() {
        let w = ["sharded_point_select", "sharded_scatter_count"];
        let keys: Vec<String> = sharded_rows(&w, &[8], &["sharded".to_string()])
            .iter()
            .map(RowSpec::key)
            .collect();
        assert_eq!(
            keys,
            [
                "sharded_point_select/text/8/spider",
                "sharded_point_select/text/8/switchyard",
                "sharded_scatter_count/text/8/switchyard",
                "sharded_scatter_count/text/8/spider",
            ]
        );
        assert!(sharded_rows(&w, &[8], &["oltp_point_select".to_string()]).is_empty());
        assert!(is_sharded("sharded_point_select") && !is_sharded("oltp_point_select"));
    }

    #[test]
    fn only_keeps_rows_whose_key_contains_any_filter() {
        let only = vec!["read_only/text".to_string(), "/64/haproxy".to_string()];
        let keys: Vec<String> = rows(false, &[1, 64], &only)
            .iter()
            .map(RowSpec::key)
            .collect();
        assert_eq!(
            keys,
            [
                "oltp_point_select/ps/64/haproxy",
                "oltp_point_select/text/64/haproxy",
                "oltp_read_only/ps/64/haproxy",
                "oltp_read_only/text/1/direct",
                "oltp_read_only/text/1/switchyard",
                "oltp_read_only/text/1/switchyard-socket",
                "oltp_read_only/text/1/haproxy",
                "oltp_read_only/text/64/direct",
                "oltp_read_only/text/64/switchyard",
                "oltp_read_only/text/64/switchyard-socket",
                "oltp_read_only/text/64/haproxy",
                "oltp_read_write/ps/64/haproxy",
                "oltp_read_write/text/64/haproxy",
            ]
        );
    }
}
