//! The orchestrator's policy settings (the `[failover]`-style section of the root config):
//! automatic or manual failover, anti-flapping, how lag and long transactions are judged,
//! how long routers hold statements, hooks, rejoin.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::FailoverLimits;

/// Whether a dead leader is replaced without an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// Detection triggers the failover.
    Automatic,
    /// Detection only logs a `leader.dead` event; an operator calls `failover`.
    Manual,
}

/// How a rebuild copies a node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RebuildMethod {
    /// `mariadb-dump` of the source piped into the node over SQL: works from anywhere the
    /// orchestrator reaches both servers, rewrites every row.
    #[default]
    Logical,
    /// A `mariadb-backup` stream of the source's files into `rebuild_restore_command`, which
    /// puts them in place of the node's data and restarts it: copies files, not rows (much
    /// faster on large data), needs a program on the node's host.
    Physical,
}

impl RebuildMethod {
    pub fn name(self) -> &'static str {
        match self {
            RebuildMethod::Logical => "logical",
            RebuildMethod::Physical => "physical",
        }
    }
}

impl std::str::FromStr for RebuildMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "logical" => Ok(RebuildMethod::Logical),
            "physical" => Ok(RebuildMethod::Physical),
            _ => Err(format!("{s:?}: a rebuild is logical or physical")),
        }
    }
}

/// External scripts run at the steps of a failover or switchover, each with the arguments
/// `<event> <cluster> <old_leader> <new_leader>` and the same values in `SWITCHYARD_EVENT`,
/// `SWITCHYARD_CLUSTER`, `SWITCHYARD_OLD_LEADER` and `SWITCHYARD_NEW_LEADER`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Hooks {
    /// A failover was decided, before anything is changed.
    pub before_failover: Option<PathBuf>,
    /// A failover is done (the new leader is writable and the others repointed).
    pub after_failover: Option<PathBuf>,
    /// A switchover passed its checks, before the leader is frozen.
    pub before_switchover: Option<PathBuf>,
    /// A switchover is done.
    pub after_switchover: Option<PathBuf>,
    /// Before routers are told to hold statements: take the virtual IP off the old leader.
    pub vip_remove: Option<PathBuf>,
    /// Once the new leader is writable: put the virtual IP on it.
    pub vip_add: Option<PathBuf>,
}

impl Hooks {
    /// Every configured hook, with its event name.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        [
            ("before_failover", &self.before_failover),
            ("after_failover", &self.after_failover),
            ("before_switchover", &self.before_switchover),
            ("after_switchover", &self.after_switchover),
            ("vip_remove", &self.vip_remove),
            ("vip_add", &self.vip_add),
        ]
        .into_iter()
        .filter_map(|(name, path)| path.as_ref().map(|p| (name, p)))
    }
}

/// How the orchestrator decides and acts. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// `automatic` (default) or `manual`.
    #[serde(default = "default_failover")]
    pub failover: FailoverMode,
    /// At most this many failovers of a cluster ...
    #[serde(default = "default_failover_limit")]
    pub failover_limit: u32,
    /// ... within this many seconds.
    #[serde(default = "default_failover_limit_window_s")]
    pub failover_limit_window_s: u64,
    /// Minimum time between two failovers of a cluster.
    #[serde(default = "default_failover_min_interval_s")]
    pub failover_min_interval_s: u64,
    /// Replicas further behind (seconds) are not eligible for promotion.
    #[serde(default = "default_max_lag_s")]
    pub max_lag_s: u64,
    /// Fail over even when every replica lags (or has its SQL thread stopped).
    #[serde(default)]
    pub failover_even_if_lagging: bool,
    /// How long a switchover waits for transactions and queries running on the leader to
    /// end before it refuses (ms).
    #[serde(default = "default_switchover_wait_trx_ms")]
    pub switchover_wait_trx_ms: u64,
    /// Refuse a switchover to a replica that lags more than `max_lag_s` or whose replication
    /// threads are not running.
    #[serde(default = "yes")]
    pub switchover_check_replicas: bool,
    /// How long routers hold a cluster's statements while it is `Held` (ms); the
    /// orchestrator keeps its own frozen phase well inside it.
    #[serde(default = "default_hold_max_ms")]
    pub hold_max_ms: u64,
    /// A hook still running after this long is killed (ms).
    #[serde(default = "default_hook_timeout_ms")]
    pub hook_timeout_ms: u64,
    #[serde(default)]
    pub hooks: Hooks,
    /// A recovered old leader rejoins as a replica when it has nothing the new leader lacks.
    #[serde(default = "yes")]
    pub rejoin: bool,
    /// How long a candidate may take to apply what it has received (failover) or to catch
    /// up before the leader is frozen (switchover), in ms.
    #[serde(default = "default_apply_timeout_ms")]
    pub apply_timeout_ms: u64,
    /// `MASTER_CONNECT_RETRY` (s) for replicas the orchestrator points at a new leader.
    #[serde(default = "default_master_connect_retry_s")]
    pub master_connect_retry_s: u32,
    /// `MASTER_HEARTBEAT_PERIOD` (ms) for replicas the orchestrator points at a new leader.
    #[serde(default = "default_master_heartbeat_ms")]
    pub master_heartbeat_ms: u64,
    /// A leader whose sessions have waited this long to write their commit to a full disk
    /// (the server waits for space, retrying once a minute, instead of failing them; reads
    /// still work, so nothing else notices) is failed over, in ms; 0: never.
    #[serde(default = "default_disk_full_failover_ms")]
    pub disk_full_failover_ms: u64,
    /// A leader whose sessions have been stuck in their commit this long while its binary
    /// log did not move (a disk that stopped answering: every write waits, reads still work)
    /// is failed over, in ms; 0: never. Longer than `disk_full_failover_ms`: a very large
    /// transaction also spends seconds writing its commit.
    #[serde(default = "default_commit_stall_failover_ms")]
    pub commit_stall_failover_ms: u64,
    /// How long a rebuild may take to empty a node and copy another into it (s); the dump and
    /// the load are killed then, and the node stays kept out.
    #[serde(default = "default_rebuild_timeout_s")]
    pub rebuild_timeout_s: u64,
    /// How a rebuild copies, unless the request says: `logical` (default) or `physical`.
    #[serde(default)]
    pub rebuild_method: RebuildMethod,
    /// For a physical rebuild: a program that writes a `mariadb-backup --backup
    /// --stream=xbstream` backup of the source to its standard output, with `mariadb-backup`'s
    /// log on standard error (its "GTID of the last change" line is where the node resumes).
    /// Arguments `<cluster> <source>`; environment `SWITCHYARD_CLUSTER`, `SWITCHYARD_SOURCE`
    /// (`host:port`), `SWITCHYARD_SOURCE_HOST`, `SWITCHYARD_SOURCE_PORT`, `SWITCHYARD_USER` and
    /// `MYSQL_PWD` (the orchestrator's login). Unset: `mariadb-backup` runs here, which reads
    /// the source's files, so only for a source on a loopback address.
    #[serde(default)]
    pub rebuild_backup_command: Option<PathBuf>,
    /// For a physical rebuild: a program that reads that stream on its standard input and
    /// puts it in place of the node's data: stop the node's server, empty its data directory,
    /// `mbstream -x` into it, `mariadb-backup --prepare`, start the server (read-only); exit 0.
    /// Arguments `<cluster> <node> <source>`; environment as the backup's, with
    /// `SWITCHYARD_NODE`, `SWITCHYARD_NODE_HOST` and `SWITCHYARD_NODE_PORT`. A physical rebuild
    /// is refused without it.
    #[serde(default)]
    pub rebuild_restore_command: Option<PathBuf>,
    /// A node that comes back with transactions the leader lacks (an old leader whose last
    /// commits went through when it returned) is rewound by binlog flashback over exactly
    /// those transactions and rejoins, where that is safe (its own row changes of
    /// transactional tables, `binlog_row_image=FULL`, one replication domain, at most 1000);
    /// otherwise, and when off, it is kept out (`switchyard rebuild` puts it back).
    #[serde(default)]
    pub rejoin_rewind: bool,
    /// Where rewound transactions are saved, decoded (a file per rewind, named in the
    /// `rejoin.rewound` event); by default `switchyard-rewind` in the temporary directory.
    #[serde(default)]
    pub rewind_dir: Option<PathBuf>,
}

fn default_failover() -> FailoverMode {
    FailoverMode::Automatic
}
fn default_failover_limit() -> u32 {
    3
}
fn default_failover_limit_window_s() -> u64 {
    3600
}
fn default_failover_min_interval_s() -> u64 {
    60
}
fn default_max_lag_s() -> u64 {
    30
}
fn default_switchover_wait_trx_ms() -> u64 {
    5000
}
fn default_hold_max_ms() -> u64 {
    5000
}
fn default_hook_timeout_ms() -> u64 {
    10_000
}
fn default_apply_timeout_ms() -> u64 {
    30_000
}
fn default_master_connect_retry_s() -> u32 {
    1
}
fn default_commit_stall_failover_ms() -> u64 {
    10_000
}
fn default_disk_full_failover_ms() -> u64 {
    1000
}
fn default_master_heartbeat_ms() -> u64 {
    500
}
fn default_rebuild_timeout_s() -> u64 {
    3600
}
fn yes() -> bool {
    true
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        OrchestratorSettings {
            failover: default_failover(),
            failover_limit: default_failover_limit(),
            failover_limit_window_s: default_failover_limit_window_s(),
            failover_min_interval_s: default_failover_min_interval_s(),
            max_lag_s: default_max_lag_s(),
            failover_even_if_lagging: false,
            switchover_wait_trx_ms: default_switchover_wait_trx_ms(),
            switchover_check_replicas: true,
            hold_max_ms: default_hold_max_ms(),
            hook_timeout_ms: default_hook_timeout_ms(),
            hooks: Hooks::default(),
            rejoin: true,
            apply_timeout_ms: default_apply_timeout_ms(),
            master_connect_retry_s: default_master_connect_retry_s(),
            master_heartbeat_ms: default_master_heartbeat_ms(),
            disk_full_failover_ms: default_disk_full_failover_ms(),
            commit_stall_failover_ms: default_commit_stall_failover_ms(),
            rebuild_timeout_s: default_rebuild_timeout_s(),
            rebuild_method: RebuildMethod::default(),
            rebuild_backup_command: None,
            rebuild_restore_command: None,
            rejoin_rewind: false,
            rewind_dir: None,
        }
    }
}

impl OrchestratorSettings {
    /// Every problem with the settings (empty when they are usable).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.failover_limit == 0 {
            problems.push(
                "failover_limit must be at least 1 (use failover = \"manual\" to never fail over \
                 automatically)"
                    .to_owned(),
            );
        }
        if self.failover_limit_window_s == 0 {
            problems.push("failover_limit_window_s must be at least 1".to_owned());
        }
        if self.hold_max_ms < 100 {
            problems.push(format!(
                "hold_max_ms must be at least 100 (got {})",
                self.hold_max_ms
            ));
        }
        if self.hook_timeout_ms == 0 {
            problems.push("hook_timeout_ms must be at least 1".to_owned());
        }
        if self.apply_timeout_ms == 0 {
            problems.push("apply_timeout_ms must be at least 1".to_owned());
        }
        if self.master_connect_retry_s == 0 {
            problems.push("master_connect_retry_s must be at least 1".to_owned());
        }
        if self.rebuild_timeout_s == 0 {
            problems.push("rebuild_timeout_s must be at least 1".to_owned());
        }
        for (name, path) in self.hooks.all() {
            if !path.is_file() {
                problems.push(format!("hooks.{name}: {} is not a file", path.display()));
            }
        }
        for (name, path) in [
            ("rebuild_backup_command", &self.rebuild_backup_command),
            ("rebuild_restore_command", &self.rebuild_restore_command),
        ] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                problems.push(format!("{name}: {} is not a file", path.display()));
            }
        }
        if self.rebuild_method == RebuildMethod::Physical && self.rebuild_restore_command.is_none()
        {
            problems.push(
                "rebuild_method = \"physical\" needs rebuild_restore_command (the program that \
                 puts a backup in place of a node's data and restarts it)"
                    .to_owned(),
            );
        }
        problems
    }

    pub(crate) fn limits(&self) -> FailoverLimits {
        FailoverLimits {
            limit: self.failover_limit,
            window: Duration::from_secs(self.failover_limit_window_s),
            min_interval: Duration::from_secs(self.failover_min_interval_s),
        }
    }

    pub(crate) fn hold_max(&self) -> Duration {
        Duration::from_millis(self.hold_max_ms)
    }

    pub(crate) fn apply_timeout(&self) -> Duration {
        Duration::from_millis(self.apply_timeout_ms)
    }

    pub(crate) fn rebuild_timeout(&self) -> Duration {
        Duration::from_secs(self.rebuild_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_the_defaults() {
        let s: OrchestratorSettings = serde_json::from_str("{}").expect("parses");
        assert_eq!(s, OrchestratorSettings::default());
        assert_eq!(s.failover, FailoverMode::Automatic);
        assert_eq!(
            (
                s.failover_limit,
                s.failover_limit_window_s,
                s.failover_min_interval_s
            ),
            (3, 3600, 60)
        );
        assert_eq!(
            (s.max_lag_s, s.switchover_wait_trx_ms, s.hold_max_ms),
            (30, 5000, 5000)
        );
        assert!(s.rejoin && s.switchover_check_replicas && !s.failover_even_if_lagging);
        assert!(s.validate().is_empty());
    }

    #[test]
    fn parses_every_field_and_rejects_unknown_ones() {
        let s: OrchestratorSettings = serde_json::from_str(
            r#"{
                "failover": "manual",
                "failover_limit": 1,
                "failover_min_interval_s": 0,
                "failover_even_if_lagging": true,
                "hooks": { "vip_add": "/bin/true" }
            }"#,
        )
        .expect("parses");
        assert_eq!(s.failover, FailoverMode::Manual);
        assert_eq!(s.failover_limit, 1);
        assert_eq!(s.hooks.vip_add, Some(PathBuf::from("/bin/true")));
        assert!(s.validate().is_empty(), "{:?}", s.validate());

        let parse = serde_json::from_str::<OrchestratorSettings>;
        assert!(parse(r#"{"failover_limt": 1}"#).is_err(), "misspelt field");
        assert!(
            parse(r#"{"hooks": {"vip_move": "/x"}}"#).is_err(),
            "unknown hook"
        );
        assert!(
            parse(r#"{"failover": "sometimes"}"#).is_err(),
            "unknown mode"
        );
    }

    #[test]
    fn validate_collects_every_problem() {
        let s = OrchestratorSettings {
            failover_limit: 0,
            hold_max_ms: 10,
            rebuild_timeout_s: 0,
            hooks: Hooks {
                before_failover: Some("/nonexistent/hook".into()),
                ..Hooks::default()
            },
            ..OrchestratorSettings::default()
        };
        let problems = s.validate().join("\n");
        assert!(problems.contains("failover_limit"), "{problems}");
        assert!(problems.contains("hold_max_ms"), "{problems}");
        assert!(problems.contains("hooks.before_failover"), "{problems}");
        assert!(problems.contains("rebuild_timeout_s"), "{problems}");
    }
}
