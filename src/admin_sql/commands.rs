//! What each admin statement does and answers, independent of the wire protocol: result sets
//! from the topology, the shard map, the router and the orchestrator; the operations through
//! the same `Orchestrator` calls the HTTP API makes; the same roles and cluster scopes; every
//! mutating statement in the audit log.

use opensrv_mysql::ErrorKind;
use orchestrator::{OperationReport, OrchestratorError, RebuildReport};
use shard_map::NodeFlags;

use crate::control::{Command, Done, Failure, FailureKind};
use shard_map::{ClusterStatus, NodeState, Role as NodeRole};

use super::parse::{Flag, SelectExpr, SelectItem, Statement, SUPPORTED};
use crate::acl::{AuditEntry, Principal, Role};
use crate::admin::AdminState;

/// A column's type on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    Int,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

impl From<u64> for Cell {
    fn from(n: u64) -> Self {
        Cell::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Cell {
    fn from(n: usize) -> Self {
        Cell::from(n as u64)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// `Yes`/`No`, as `SHOW SLAVE STATUS` writes flags.
fn yes(b: bool) -> Cell {
    Cell::from(if b { "Yes" } else { "No" })
}

/// What the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Rows {
        columns: Vec<(String, ColType)>,
        rows: Vec<Vec<Cell>>,
    },
    Ok {
        affected: u64,
        info: String,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Reply {
    fn rows(columns: &[(&str, ColType)], rows: Vec<Vec<Cell>>) -> Reply {
        Reply::Rows {
            columns: columns.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            rows,
        }
    }

    fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply::Error {
            kind,
            message: message.into(),
        }
    }

    /// The HTTP status the same API call would have got, for the audit log.
    fn status(&self) -> u16 {
        match self {
            Reply::Rows { .. } | Reply::Ok { .. } => 200,
            Reply::Error { kind, .. } => match kind {
                ErrorKind::ER_SPECIFIC_ACCESS_DENIED_ERROR => 403,
                ErrorKind::ER_BAD_DB_ERROR => 404,
                _ => 500,
            },
        }
    }
}

use ColType::{Int, Text};

/// The error for a statement that was not understood.
pub fn syntax_error(why: &str) -> Reply {
    Reply::error(
        ErrorKind::ER_PARSE_ERROR,
        format!("{why}; the admin port knows: {SUPPORTED}"),
    )
}

/// Runs one statement for `who`; `text` is the statement as sent (for the audit log).
pub async fn execute(
    state: &AdminState,
    who: &Principal,
    conn_id: u32,
    stmt: Statement,
    text: &str,
) -> Reply {
    if stmt.mutates() {
        let (reply, cluster, status) = mutate(state, who, &stmt).await;
        state.acl.audit(AuditEntry {
            at_ms: now_ms(),
            user: who.name.clone(),
            method: "SQL".into(),
            path: text.trim().trim_end_matches(';').trim_end().to_owned(),
            cluster,
            status: status.unwrap_or_else(|| reply.status()),
        });
        return reply;
    }
    match stmt {
        Statement::ShowClusters => show_clusters(state, who),
        Statement::ShowNodes { cluster } => show_nodes(state, who, cluster.as_deref()),
        Statement::ShowShards => show_shards(state, who),
        Statement::ShowSessions => show_sessions(state),
        Statement::ShowEvents { cluster, limit } => {
            show_events(state, who, cluster.as_deref(), limit.unwrap_or(50))
        }
        Statement::ShowStatus => show_status(state),
        Statement::ShowAudit { limit } => show_audit(state, who, limit.unwrap_or(100)),
        Statement::Help => help(),
        Statement::Select { items } => select(state, who, conn_id, &items),
        Statement::Ignored => Reply::Ok {
            affected: 0,
            info: String::new(),
        },
        Statement::Switchover { .. }
        | Statement::Failover { .. }
        | Statement::Rebuild { .. }
        | Statement::SetFlag { .. } => {
            unreachable!("mutating statements are handled above")
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A mutating statement: the reply, the cluster it was about, and the HTTP status when it
/// is not the reply's default (orchestrator errors).
async fn mutate(
    state: &AdminState,
    who: &Principal,
    stmt: &Statement,
) -> (Reply, Option<String>, Option<u16>) {
    let what = match stmt {
        Statement::Switchover { .. } => "SWITCHOVER",
        Statement::Failover { .. } => "FAILOVER",
        Statement::Rebuild { .. } => "REBUILD",
        _ => "SET",
    };
    if who.role < Role::Operator {
        let reply = Reply::error(
            ErrorKind::ER_SPECIFIC_ACCESS_DENIED_ERROR,
            format!(
                "Access denied; you need the operator role for {what} ({} is a {})",
                who.name,
                who.role.label()
            ),
        );
        return (reply, cluster_named(stmt), None);
    }
    // The cluster: named, or for a node flag the one the node belongs to.
    let cluster = match stmt {
        Statement::SetFlag {
            cluster: None,
            node,
            ..
        } => {
            let t = state.topology.load();
            match t.clusters.values().find(|c| c.node(node).is_some()) {
                Some(c) => c.name.clone(),
                None => {
                    let reply = Reply::error(
                        ErrorKind::ER_UNKNOWN_ERROR,
                        format!("no node {node} in any cluster"),
                    );
                    return (reply, None, Some(404));
                }
            }
        }
        other => cluster_named(other).unwrap_or_default(),
    };
    if let Err(reply) = check_cluster(state, who, &cluster) {
        return (reply, Some(cluster), None);
    }
    let command = match stmt {
        Statement::Switchover { to, .. } => Command::Switchover {
            cluster: cluster.clone(),
            to: to.clone(),
        },
        Statement::Failover { .. } => Command::Failover {
            cluster: cluster.clone(),
        },
        Statement::Rebuild {
            node,
            source,
            method,
            ..
        } => Command::Rebuild {
            cluster: cluster.clone(),
            node: node.clone(),
            source: source.clone(),
            method: *method,
        },
        Statement::SetFlag { flag, node, on, .. } => {
            match flags_with(state, &cluster, node, *flag, *on) {
                Ok(flags) => Command::SetFlags {
                    cluster: cluster.clone(),
                    node: node.clone(),
                    flags,
                },
                Err(f) => return failed(f, cluster),
            }
        }
        _ => unreachable!("only mutating statements come here"),
    };
    match state.control.run(command).await {
        Ok(Done::Changed(report)) => (report_rows(report), Some(cluster), None),
        Ok(Done::Rebuilt(report)) => (rebuild_rows(report), Some(cluster), None),
        Ok(Done::LimitsReset { .. } | Done::Flags { .. }) => {
            let info = match stmt {
                Statement::SetFlag { flag, node, on, .. } => format!(
                    "{node} in {cluster}: {} {}",
                    flag.label(),
                    if *on { "on" } else { "off" }
                ),
                _ => String::new(),
            };
            let reply = Reply::Ok { affected: 1, info };
            (reply, Some(cluster), None)
        }
        Err(f) => failed(f, cluster),
    }
}

/// A command's failure: the client's error and the HTTP status the API answers for it.
fn failed(f: Failure, cluster: String) -> (Reply, Option<String>, Option<u16>) {
    let kind = match f.kind {
        FailureKind::UnknownCluster => ErrorKind::ER_BAD_DB_ERROR,
        _ => ErrorKind::ER_UNKNOWN_ERROR,
    };
    let status = f.kind.http_status();
    (Reply::error(kind, f.message), Some(cluster), Some(status))
}

fn cluster_named(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Switchover { cluster, .. }
        | Statement::Failover { cluster }
        | Statement::Rebuild { cluster, .. } => Some(cluster.clone()),
        Statement::SetFlag { cluster, .. } => cluster.clone(),
        _ => None,
    }
}

/// The cluster exists and is in `who`'s scope.
fn check_cluster(state: &AdminState, who: &Principal, cluster: &str) -> Result<(), Reply> {
    if !who.sees(cluster) {
        return Err(Reply::error(
            ErrorKind::ER_SPECIFIC_ACCESS_DENIED_ERROR,
            format!(
                "Access denied; {} may not act on cluster `{cluster}`",
                who.name
            ),
        ));
    }
    let t = state.topology.load();
    if t.cluster(cluster).is_none() {
        let known: Vec<&str> = t
            .clusters
            .keys()
            .map(String::as_str)
            .filter(|c| who.sees(c))
            .collect();
        return Err(Reply::error(
            ErrorKind::ER_BAD_DB_ERROR,
            format!(
                "Unknown cluster '{cluster}'; clusters: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A switchover's or failover's steps, one row each, then its result.
fn report_rows(r: OperationReport) -> Reply {
    let result = format!(
        "{}: leader {} -> {}, epoch {}, {} ms",
        r.cluster, r.old_leader, r.new_leader, r.epoch, r.duration_ms
    );
    step_rows(&r.steps, result)
}

/// A rebuild's steps, one row each, then its result.
fn rebuild_rows(r: RebuildReport) -> Reply {
    let result = format!(
        "{}: {} rebuilt from {} ({} bytes), replicating from {} at {}{}, {} ms",
        r.cluster,
        r.node,
        r.source,
        r.bytes_copied,
        r.leader,
        r.gtid_slave_pos,
        if r.caught_up {
            ""
        } else {
            " (still catching up)"
        },
        r.duration_ms
    );
    step_rows(&r.steps, result)
}

/// Events as rows (`step`, `at`, `kind`, `message`), then a `result` row.
fn step_rows(steps: &[orchestrator::Event], result: String) -> Reply {
    let mut rows: Vec<Vec<Cell>> = steps
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                Cell::from(i + 1),
                Cell::from(datetime(e.at_ms)),
                Cell::from(e.kind.as_str()),
                Cell::from(e.message.as_str()),
            ]
        })
        .collect();
    rows.push(vec![
        Cell::from(rows.len() + 1),
        Cell::from(datetime(now_ms())),
        Cell::from("result"),
        Cell::from(result),
    ]);
    Reply::rows(
        &[
            ("step", Int),
            ("at", Text),
            ("kind", Text),
            ("message", Text),
        ],
        rows,
    )
}

/// A node's flags with one changed (the command sets all three).
fn flags_with(
    state: &AdminState,
    cluster: &str,
    node: &str,
    flag: Flag,
    on: bool,
) -> Result<NodeFlags, Failure> {
    let mut flags = state
        .topology
        .load()
        .cluster(cluster)
        .and_then(|c| c.node(node))
        .map(|n| n.flags)
        .ok_or_else(|| {
            Failure::from(OrchestratorError::UnknownNode {
                cluster: cluster.into(),
                addr: node.into(),
            })
        })?;
    match flag {
        Flag::Maintenance => flags.maintenance = on,
        Flag::Preferred => flags.preferred = on,
        Flag::Ignored => flags.ignored = on,
    }
    Ok(flags)
}

fn visible<'a>(
    t: &'a shard_map::Topology,
    who: &'a Principal,
) -> impl Iterator<Item = &'a ClusterStatus> {
    t.clusters.values().filter(|c| who.sees(&c.name))
}

fn show_clusters(state: &AdminState, who: &Principal) -> Reply {
    let t = state.topology.load();
    let rows = visible(&t, who)
        .map(|c| {
            let up = c.nodes.iter().filter(|n| n.state == NodeState::Up);
            let replicas_up = up
                .clone()
                .filter(|n| n.role == NodeRole::Replica && Some(&n.addr) != c.leader.as_ref())
                .count();
            vec![
                Cell::from(c.name.as_str()),
                Cell::from(c.leader.clone()),
                Cell::from(c.epoch),
                Cell::from(label(&c.phase)),
                Cell::from(c.nodes.len()),
                Cell::from(up.count()),
                Cell::from(replicas_up),
                Cell::from(c.nodes.iter().filter(|n| n.flags.maintenance).count()),
            ]
        })
        .collect();
    Reply::rows(
        &[
            ("cluster", Text),
            ("leader", Text),
            ("epoch", Int),
            ("phase", Text),
            ("nodes", Int),
            ("nodes_up", Int),
            ("replicas_up", Int),
            ("in_maintenance", Int),
        ],
        rows,
    )
}

/// A serde enum's name (`serving`, `leader`, `up`, ...).
fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn show_nodes(state: &AdminState, who: &Principal, cluster: Option<&str>) -> Reply {
    if let Some(c) = cluster {
        if let Err(reply) = check_cluster(state, who, c) {
            return reply;
        }
    }
    let t = state.topology.load();
    let mut rows = Vec::new();
    for c in visible(&t, who).filter(|c| cluster.is_none_or(|n| n == c.name)) {
        for n in &c.nodes {
            rows.push(vec![
                Cell::from(c.name.as_str()),
                Cell::from(n.addr.as_str()),
                Cell::from(label(&n.role)),
                Cell::from(label(&n.state)),
                n.read_only.map_or(Cell::Null, yes),
                Cell::from(n.lag_seconds),
                n.io_running.map_or(Cell::Null, yes),
                n.sql_running.map_or(Cell::Null, yes),
                Cell::from(n.gtid_current_pos.as_str()),
                yes(n.flags.maintenance),
                yes(n.flags.preferred),
                yes(n.flags.ignored),
                Cell::from(n.last_error.clone()),
            ]);
        }
    }
    Reply::rows(
        &[
            ("cluster", Text),
            ("node", Text),
            ("role", Text),
            ("state", Text),
            ("read_only", Text),
            ("lag_seconds", Int),
            ("io_running", Text),
            ("sql_running", Text),
            ("gtid_current_pos", Text),
            ("maintenance", Text),
            ("preferred", Text),
            ("ignored", Text),
            ("last_error", Text),
        ],
        rows,
    )
}

fn show_shards(state: &AdminState, who: &Principal) -> Reply {
    let map = state.router.shard_map.load();
    let mut rows = Vec::new();
    for ks in map.keyspace_specs() {
        let tables = |kind: &str| -> Cell {
            let names: Vec<String> = ks
                .tables
                .iter()
                .filter(|t| label(&t.kind) == kind)
                .map(|t| match &t.column {
                    Some(col) if kind == "sharded" => format!("{}({col})", t.name),
                    _ => t.name.clone(),
                })
                .collect();
            if names.is_empty() {
                Cell::Null
            } else {
                Cell::from(names.join(","))
            }
        };
        let targets = map.shard_targets(&ks.name);
        if targets.is_empty() {
            if who.sees(&ks.default_cluster) {
                rows.push(vec![
                    Cell::from(ks.name.as_str()),
                    Cell::from("-"),
                    Cell::from(ks.default_cluster.as_str()),
                    Cell::from(ks.name.as_str()),
                    Cell::Null,
                    Cell::Null,
                ]);
            }
            continue;
        }
        for t in targets.iter().filter(|t| who.sees(&t.cluster)) {
            rows.push(vec![
                Cell::from(ks.name.as_str()),
                Cell::from(t.shard.as_str()),
                Cell::from(t.cluster.as_str()),
                Cell::from(t.database.as_str()),
                tables("sharded"),
                tables("reference"),
            ]);
        }
    }
    Reply::rows(
        &[
            ("keyspace", Text),
            ("shard", Text),
            ("cluster", Text),
            ("database", Text),
            ("sharded_tables", Text),
            ("reference_tables", Text),
        ],
        rows,
    )
}

fn show_sessions(state: &AdminState) -> Reply {
    let rows = state
        .router
        .sessions
        .list()
        .into_iter()
        .map(|s| {
            vec![
                Cell::from(u64::from(s.id)),
                Cell::from(s.user),
                Cell::from(s.peer),
                Cell::from(s.db),
                Cell::from(s.command),
                Cell::from(s.seconds),
                yes(s.in_transaction),
                Cell::from(s.backend),
                Cell::from(datetime(s.connected_at_ms)),
            ]
        })
        .collect();
    Reply::rows(
        &[
            ("id", Int),
            ("user", Text),
            ("host", Text),
            ("db", Text),
            ("command", Text),
            ("time", Int),
            ("in_transaction", Text),
            ("backend", Text),
            ("connected_at", Text),
        ],
        rows,
    )
}

fn show_events(state: &AdminState, who: &Principal, cluster: Option<&str>, limit: usize) -> Reply {
    if let Some(c) = cluster {
        if let Err(reply) = check_cluster(state, who, c) {
            return reply;
        }
    }
    let t = state.topology.load();
    let mut events: Vec<orchestrator::Event> = visible(&t, who)
        .filter(|c| cluster.is_none_or(|n| n == c.name))
        .flat_map(|c| state.orchestrator.events(&c.name).unwrap_or_default())
        .collect();
    events.sort_by_key(|e| e.at_ms);
    let skip = events.len().saturating_sub(limit);
    let rows = events
        .into_iter()
        .skip(skip)
        .map(|e| {
            vec![
                Cell::from(datetime(e.at_ms)),
                Cell::from(e.cluster),
                Cell::from(e.kind),
                Cell::from(e.message),
            ]
        })
        .collect();
    Reply::rows(
        &[
            ("at", Text),
            ("cluster", Text),
            ("kind", Text),
            ("message", Text),
        ],
        rows,
    )
}

fn show_status(state: &AdminState) -> Reply {
    let mut rows = Vec::new();
    flatten("", &crate::admin::router_counters(&state.router), &mut rows);
    Reply::rows(&[("variable_name", Text), ("value", Text)], rows)
}

/// `{"a": {"b": 1}}` as rows `a.b | 1`.
fn flatten(prefix: &str, v: &serde_json::Value, rows: &mut Vec<Vec<Cell>>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, rows)),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&key(&i.to_string()), v, rows)),
        serde_json::Value::String(s) => rows.push(vec![Cell::from(prefix), Cell::from(s.as_str())]),
        serde_json::Value::Null => rows.push(vec![Cell::from(prefix), Cell::Null]),
        other => rows.push(vec![Cell::from(prefix), Cell::from(other.to_string())]),
    }
}

fn show_audit(state: &AdminState, who: &Principal, limit: usize) -> Reply {
    if who.role < Role::Admin {
        return Reply::error(
            ErrorKind::ER_SPECIFIC_ACCESS_DENIED_ERROR,
            format!(
                "Access denied; you need the admin role for SHOW AUDIT ({} is a {})",
                who.name,
                who.role.label()
            ),
        );
    }
    let entries = state.acl.recent_audit();
    let skip = entries.len().saturating_sub(limit);
    let rows = entries
        .into_iter()
        .skip(skip)
        .map(|e| {
            vec![
                Cell::from(datetime(e.at_ms)),
                Cell::from(e.user),
                Cell::from(e.method),
                Cell::from(e.path),
                Cell::from(e.cluster),
                Cell::from(u64::from(e.status)),
            ]
        })
        .collect();
    Reply::rows(
        &[
            ("at", Text),
            ("user", Text),
            ("method", Text),
            ("statement", Text),
            ("cluster", Text),
            ("status", Int),
        ],
        rows,
    )
}

fn help() -> Reply {
    const HELP: &[(&str, &str, &str)] = &[
        (
            "SHOW CLUSTERS",
            "viewer",
            "each cluster: leader, epoch, phase, nodes up",
        ),
        (
            "SHOW NODES [FROM cluster]",
            "viewer",
            "each node: role, state, lag, GTID, flags",
        ),
        (
            "SHOW SHARDS",
            "viewer",
            "each keyspace's shards and their clusters",
        ),
        (
            "SHOW SESSIONS",
            "viewer",
            "the router's client sessions: user, host, db, command, time",
        ),
        (
            "SHOW EVENTS [FROM cluster] [LIMIT n]",
            "viewer",
            "the orchestrator's recent events",
        ),
        ("SHOW STATUS", "viewer", "the router's counters"),
        (
            "SHOW AUDIT [LIMIT n]",
            "admin",
            "the last mutating calls (API and this port)",
        ),
        (
            "SWITCHOVER cluster [TO 'host:port']",
            "operator",
            "planned switchover; answers its steps",
        ),
        (
            "FAILOVER cluster",
            "operator",
            "manual failover of a dead leader",
        ),
        (
            "REBUILD cluster 'host:port' [FROM 'host:port'] [LOGICAL|PHYSICAL]",
            "operator",
            "empty a node, copy a replica (or the leader) into it, make it a replica; its steps",
        ),
        (
            "SET MAINTENANCE|PREFERRED|IGNORED [cluster] 'host:port' ON|OFF",
            "operator",
            "a node's flag",
        ),
        ("HELP", "viewer", "this list"),
    ];
    let rows = HELP
        .iter()
        .map(|(c, r, d)| vec![Cell::from(*c), Cell::from(*r), Cell::from(*d)])
        .collect();
    Reply::rows(
        &[("statement", Text), ("role", Text), ("description", Text)],
        rows,
    )
}

/// Connect-time `SELECT`s of variables and functions.
fn select(state: &AdminState, who: &Principal, conn_id: u32, items: &[SelectItem]) -> Reply {
    let mut columns = Vec::new();
    let mut row = Vec::new();
    for item in items {
        let (cell, ty) = match &item.expr {
            SelectExpr::Number(n) => (Cell::Int(*n), Int),
            SelectExpr::Text(t) => (Cell::from(t.as_str()), Text),
            SelectExpr::Function(f) => match f.as_str() {
                "DATABASE" | "SCHEMA" => (Cell::Null, Text),
                "USER" | "CURRENT_USER" | "SESSION_USER" | "SYSTEM_USER" => {
                    (Cell::from(who.name.as_str()), Text)
                }
                "VERSION" => (Cell::from(super::version(state)), Text),
                "CONNECTION_ID" => (Cell::from(u64::from(conn_id)), Int),
                _ => {
                    return Reply::error(
                        ErrorKind::ER_PARSE_ERROR,
                        format!("unknown function {f}() on the admin port"),
                    )
                }
            },
            SelectExpr::Variable(v) => match variable(state, v) {
                Some(c) => c,
                None => {
                    return Reply::error(
                        ErrorKind::ER_UNKNOWN_SYSTEM_VARIABLE,
                        format!("Unknown system variable '{v}'"),
                    )
                }
            },
        };
        columns.push((item.name.clone(), ty));
        row.push(cell);
    }
    Reply::Rows {
        columns,
        rows: vec![row],
    }
}

/// The variables clients and connectors read when they connect.
fn variable(state: &AdminState, name: &str) -> Option<(Cell, ColType)> {
    let int = |n: i64| Some((Cell::Int(n), Int));
    let text = |s: &str| Some((Cell::from(s), Text));
    match name {
        "version_comment" => text("switchyard admin"),
        "version" => Some((Cell::from(super::version(state)), Text)),
        "max_allowed_packet" => int(16 << 20),
        "wait_timeout" | "interactive_timeout" => int(28800),
        "net_write_timeout" => int(60),
        "autocommit" | "auto_increment_increment" => int(1),
        "lower_case_table_names" | "in_transaction" | "warning_count" => int(0),
        "sql_mode" => text(""),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server"
        | "character_set_database" => text("utf8mb4"),
        "collation_connection" | "collation_server" | "collation_database" => {
            text("utf8mb4_general_ci")
        }
        "tx_isolation" | "transaction_isolation" => text("REPEATABLE-READ"),
        "tx_read_only" | "transaction_read_only" => int(0),
        "time_zone" => text("SYSTEM"),
        "system_time_zone" => text("UTC"),
        "license" => text("Apache-2.0"),
        _ => None,
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn datetime(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00.000");
        assert_eq!(datetime(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(datetime(1_795_712_462_005), "2026-11-26 17:01:02.005");
    }

    #[test]
    fn flattened_counters() {
        let mut rows = Vec::new();
        flatten(
            "",
            &serde_json::json!({"a": 1, "b": {"c": "x"}, "d": [true]}),
            &mut rows,
        );
        assert_eq!(
            rows,
            vec![
                vec![Cell::from("a"), Cell::from("1")],
                vec![Cell::from("b.c"), Cell::from("x")],
                vec![Cell::from("d.0"), Cell::from("true")],
            ]
        );
    }
}
