//! Which rows a run measures and in what order: every workload × protocol × thread count,
//! each against the three targets back to back, so that drift on a shared machine hits all
//! three alike.

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
    /// HAProxy in TCP mode: a proxy that parses nothing.
    Haproxy,
}

impl Target {
    /// In the order each group runs them.
    pub const ALL: [Target; 3] = [Target::Direct, Target::Switchyard, Target::Haproxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Switchyard => "switchyard",
            Target::Haproxy => "haproxy",
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

    /// The same row against the direct target: what its ratio is relative to.
    pub fn same_group(&self, other: &RowSpec) -> bool {
        self.workload == other.workload
            && self.protocol == other.protocol
            && self.threads == other.threads
    }
}

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
                for target in Target::ALL {
                    let row = RowSpec {
                        workload,
                        protocol,
                        threads,
                        target,
                    };
                    let key = row.key();
                    if only.is_empty() || only.iter().any(|f| key.contains(f.as_str())) {
                        out.push(row);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_run_interleaves_the_targets_of_each_group() {
        let rows = rows(false, &[1, 8, 64], &[]);
        assert_eq!(rows.len(), 3 * 2 * 3 * 3);
        assert_eq!(rows[0].key(), "oltp_point_select/ps/1/direct");
        assert_eq!(rows[1].key(), "oltp_point_select/ps/1/switchyard");
        assert_eq!(rows[2].key(), "oltp_point_select/ps/1/haproxy");
        assert_eq!(rows[3].key(), "oltp_point_select/ps/8/direct");
        assert_eq!(rows[53].key(), "oltp_read_write/text/64/haproxy");
        assert_eq!(rows[4].to_string(), "oltp_point_select ps t=8 switchyard");
    }

    #[test]
    fn quick_runs_measure_two_workloads_with_prepared_statements() {
        let keys: Vec<String> = rows(true, &[8], &[]).iter().map(RowSpec::key).collect();
        assert_eq!(
            keys,
            [
                "oltp_point_select/ps/8/direct",
                "oltp_point_select/ps/8/switchyard",
                "oltp_point_select/ps/8/haproxy",
                "oltp_read_write/ps/8/direct",
                "oltp_read_write/ps/8/switchyard",
                "oltp_read_write/ps/8/haproxy",
            ]
        );
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
                "oltp_read_only/text/1/haproxy",
                "oltp_read_only/text/64/direct",
                "oltp_read_only/text/64/switchyard",
                "oltp_read_only/text/64/haproxy",
                "oltp_read_write/ps/64/haproxy",
                "oltp_read_write/text/64/haproxy",
            ]
        );
    }
}
