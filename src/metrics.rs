//! Prometheus text exposition (format 0.0.4) of the orchestrator's view of every cluster and
//! node and of the router's counters. Rendered on each scrape from the topology snapshot and
//! the router's atomics: nothing is kept here, so a scrape costs one pass over them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use orchestrator::Orchestrator;
use router::context::{StatementClass, LATENCY_BUCKETS_US};
use router::RouterContext;
use shard_map::{NodeState, Role, TopologyHandle};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families: `# HELP`/`# TYPE` once per family, then its samples.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// This process's part in a deployment over etcd: whether it leads (orchestrator roles) and
/// whether its router fences writes (routing roles).
pub fn render_membership(m: &crate::distributed::Membership, router: &RouterContext) -> String {
    let mut e = Exposition { out: String::new() };
    let role = m.role.name();
    if let Some(c) = &m.coordinator {
        e.family(
            "switchyard_etcd_leading",
            "gauge",
            "1 while this process is the leading orchestrator (its lease in etcd surely held)",
        );
        e.sample(
            "switchyard_etcd_leading",
            &[("name", &m.name), ("role", role)],
            u8::from(c.is_leading()),
        );
    }
    if m.role.routes() {
        e.family(
            "switchyard_etcd_writes_fenced",
            "gauge",
            "1 while this router refuses writes: its lease in etcd is not surely held",
        );
        e.sample(
            "switchyard_etcd_writes_fenced",
            &[("name", &m.name), ("role", role)],
            u8::from(router.writes_fenced.load(Ordering::Relaxed)),
        );
    }
    e.out
}

/// The moves' streams and cutovers.
pub fn render_moves(moves: &crate::moves::Moves) -> String {
    let mut e = Exposition { out: String::new() };
    let (streams, pauses) = moves.progress();
    if !streams.is_empty() {
        for (name, help) in [
            ("switchyard_move_rows_copied", "Rows a move's stream copied so far."),
            ("switchyard_move_transactions_applied", "Source transactions a move's stream applied to its target."),
            ("switchyard_move_behind_transactions", "Source transactions a move's stream has yet to read (from the monitor's last look at the source)."),
            ("switchyard_move_stream_failed", "1 while a move's stream is stopped by a change it cannot follow."),
            ("switchyard_move_stream_retries", "Restarts of a move's stream after transient failures."),
        ] {
            e.family(name, if name.ends_with("failed") || name.ends_with("behind_transactions") { "gauge" } else { "counter" }, help);
            for (m, stream, st, behind) in &streams {
                let labels = [("move", m.as_str()), ("stream", stream.as_str())];
                match name {
                    "switchyard_move_rows_copied" => e.sample(name, &labels, st.rows_copied),
                    "switchyard_move_transactions_applied" => e.sample(name, &labels, st.txns_applied),
                    "switchyard_move_behind_transactions" => {
                        if let Some(b) = behind {
                            e.sample(name, &labels, *b)
                        }
                    }
                    "switchyard_move_stream_failed" => e.sample(
                        name,
                        &labels,
                        u8::from(matches!(st.phase, mover::stream::Phase::Failed { .. })),
                    ),
                    _ => e.sample(name, &labels, st.retries),
                }
            }
        }
    }
    if !pauses.is_empty() {
        e.family(
            "switchyard_move_last_cutover_pause_ms",
            "gauge",
            "How long writes were held at a move's last cutover.",
        );
        for (m, p) in &pauses {
            e.sample("switchyard_move_last_cutover_pause_ms", &[("move", m)], *p);
        }
    }
    e.out
}

/// The whole exposition.
pub fn render(
    topology: &TopologyHandle,
    orchestrator: &Orchestrator,
    router: &RouterContext,
) -> String {
    let mut e = Exposition { out: String::new() };
    clusters(&mut e, topology, orchestrator);
    router_metrics(&mut e, router);
    e.out
}

fn clusters(e: &mut Exposition, topology: &TopologyHandle, orchestrator: &Orchestrator) {
    let t = topology.load();
    e.family(
        "switchyard_topology_version",
        "gauge",
        "Version of the published topology snapshot.",
    );
    e.sample("switchyard_topology_version", &[], t.version);

    e.family(
        "switchyard_cluster_epoch",
        "gauge",
        "Leadership epoch of the cluster (bumped by every switchover and failover).",
    );
    for c in t.clusters.values() {
        e.sample("switchyard_cluster_epoch", &[("cluster", &c.name)], c.epoch);
    }
    e.family(
        "switchyard_cluster_held",
        "gauge",
        "1 while the cluster changes leader and routers hold its statements.",
    );
    for c in t.clusters.values() {
        let held = u8::from(c.phase.holds());
        e.sample("switchyard_cluster_held", &[("cluster", &c.name)], held);
    }
    e.family(
        "switchyard_cluster_has_leader",
        "gauge",
        "1 when the cluster has a leader that is up.",
    );
    for c in t.clusters.values() {
        let ok = c
            .leader
            .as_deref()
            .and_then(|l| c.node(l))
            .is_some_and(|n| n.state == NodeState::Up);
        e.sample(
            "switchyard_cluster_has_leader",
            &[("cluster", &c.name)],
            u8::from(ok),
        );
    }

    let stats: Vec<_> = t
        .clusters
        .values()
        .map(|c| {
            (
                c.name.as_str(),
                orchestrator.operation_stats(&c.name).unwrap_or_default(),
            )
        })
        .collect();
    e.family(
        "switchyard_failovers_total",
        "counter",
        "Failovers that promoted a new leader (automatic and manual).",
    );
    for (name, s) in &stats {
        e.sample(
            "switchyard_failovers_total",
            &[("cluster", name)],
            s.failovers,
        );
    }
    e.family(
        "switchyard_switchovers_total",
        "counter",
        "Switchovers that promoted a new leader.",
    );
    for (name, s) in &stats {
        e.sample(
            "switchyard_switchovers_total",
            &[("cluster", name)],
            s.switchovers,
        );
    }
    e.family(
        "switchyard_switchover_duration_seconds",
        "gauge",
        "Duration of the last completed switchover (absent before the first).",
    );
    for (name, s) in &stats {
        if let Some(ms) = s.last_switchover_ms {
            e.sample(
                "switchyard_switchover_duration_seconds",
                &[("cluster", name)],
                ms as f64 / 1000.0,
            );
        }
    }
    e.family(
        "switchyard_failover_duration_seconds",
        "gauge",
        "Duration of the last completed failover (absent before the first).",
    );
    for (name, s) in &stats {
        if let Some(ms) = s.last_failover_ms {
            e.sample(
                "switchyard_failover_duration_seconds",
                &[("cluster", name)],
                ms as f64 / 1000.0,
            );
        }
    }

    e.family(
        "switchyard_node_up",
        "gauge",
        "1 when the monitor's last poll of the node succeeded.",
    );
    for c in t.clusters.values() {
        for n in &c.nodes {
            let up = u8::from(n.state == NodeState::Up);
            e.sample(
                "switchyard_node_up",
                &[("cluster", &c.name), ("node", &n.addr)],
                up,
            );
        }
    }
    e.family(
        "switchyard_node_leader",
        "gauge",
        "1 for the cluster's leader, 0 for every other node.",
    );
    for c in t.clusters.values() {
        for n in &c.nodes {
            let leader = c.leader.as_deref() == Some(n.addr.as_str()) && n.role == Role::Leader;
            e.sample(
                "switchyard_node_leader",
                &[("cluster", &c.name), ("node", &n.addr)],
                u8::from(leader),
            );
        }
    }
    e.family(
        "switchyard_node_replication_lag_seconds",
        "gauge",
        "Seconds_Behind_Master of a replica (absent for a leader or when unknown).",
    );
    for c in t.clusters.values() {
        for n in &c.nodes {
            if let Some(lag) = n.lag_seconds {
                e.sample(
                    "switchyard_node_replication_lag_seconds",
                    &[("cluster", &c.name), ("node", &n.addr)],
                    lag,
                );
            }
        }
    }
    e.family(
        "switchyard_node_gtid_lag_transactions",
        "gauge",
        "Transactions a replica is behind its leader, from their GTID positions (summed over \
         the leader's replication domains; absent for a leader or when either position is \
         unknown).",
    );
    for c in t.clusters.values() {
        let Some(leader) = c.leader.as_deref().and_then(|l| c.node(l)) else {
            continue;
        };
        let head = orchestrator::gtid::GtidPos::parse_lossy(&leader.gtid_binlog_pos);
        if head.is_empty() {
            continue;
        }
        for n in c.nodes.iter().filter(|n| n.addr != leader.addr) {
            if let Some(behind) = gtid_lag(&head, &n.gtid_current_pos) {
                e.sample(
                    "switchyard_node_gtid_lag_transactions",
                    &[("cluster", &c.name), ("node", &n.addr)],
                    behind,
                );
            }
        }
    }
    e.family(
        "switchyard_node_maintenance",
        "gauge",
        "1 when the node is flagged for maintenance.",
    );
    for c in t.clusters.values() {
        for n in &c.nodes {
            e.sample(
                "switchyard_node_maintenance",
                &[("cluster", &c.name), ("node", &n.addr)],
                u8::from(n.flags.maintenance),
            );
        }
    }
}

fn router_metrics(e: &mut Exposition, r: &RouterContext) {
    let m = &r.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.family(
        "switchyard_router_connections_active",
        "gauge",
        "Client connections open now.",
    );
    e.sample(
        "switchyard_router_connections_active",
        &[],
        load(&m.connections_active),
    );
    for (name, help, v) in [
        (
            "switchyard_router_connections_total",
            "Client connections accepted.",
            load(&m.connections_total),
        ),
        (
            "switchyard_router_connections_refused_total",
            "Client connections refused (max_connections).",
            load(&m.connections_refused),
        ),
        (
            "switchyard_router_auth_failures_total",
            "Client logins refused (unknown user or wrong password).",
            load(&m.auth_failures),
        ),
        (
            "switchyard_router_tls_connections_total",
            "Client connections switched to TLS.",
            load(&m.tls_connections),
        ),
        (
            "switchyard_router_compressed_connections_total",
            "Client connections in the compressed protocol.",
            load(&m.compressed_connections),
        ),
        (
            "switchyard_router_insecure_refused_total",
            "Plain-text logins refused (require_secure_transport).",
            load(&m.insecure_refused),
        ),
        (
            "switchyard_router_held_statements_total",
            "Statements held while their cluster changed leader.",
            load(&m.held_statements),
        ),
        (
            "switchyard_router_hold_timeouts_total",
            "Held statements that waited longer than hold_timeout_ms.",
            load(&m.hold_timeouts),
        ),
        (
            "switchyard_router_replanned_total",
            "Statements planned again on a shard map published while they were held.",
            load(&m.replanned),
        ),
        (
            "switchyard_router_leader_change_retries_total",
            "Statements run again on a new leader after the old one refused or lost them.",
            load(&m.leader_change_retries),
        ),
        (
            "switchyard_router_deposed_leader_cuts_total",
            "Backend connections cut because their server was replaced as leader.",
            load(&m.deposed_cuts),
        ),
        (
            "switchyard_router_backend_retries_total",
            "Reads retried after a lost backend connection.",
            load(&m.backend_retries),
        ),
    ] {
        e.family(name, "counter", help);
        e.sample(name, &[], v);
    }
    e.family(
        "switchyard_router_held_now",
        "gauge",
        "Statements waiting out a leader change right now.",
    );
    e.sample("switchyard_router_held_now", &[], load(&r.held));

    e.family(
        "switchyard_router_statements_total",
        "counter",
        "Client commands by kind: read (SELECT, SHOW), write (DML, DDL, locking reads), \
         other (SET, USE, transaction control, ping, prepare, ...).",
    );
    for c in StatementClass::ALL {
        e.sample(
            "switchyard_router_statements_total",
            &[("kind", c.label())],
            load(&m.by_class[c as usize]),
        );
    }
    e.family(
        "switchyard_router_routed_total",
        "counter",
        "Routing decisions per target cluster and role (leader or replica).",
    );
    let routed: BTreeMap<String, [u64; 2]> = m
        .routed
        .iter()
        .map(|kv| {
            (
                kv.key().to_string(),
                [load(&kv.value()[0]), load(&kv.value()[1])],
            )
        })
        .collect();
    for (cluster, [leader, replica]) in &routed {
        e.sample(
            "switchyard_router_routed_total",
            &[("cluster", cluster), ("target", "leader")],
            leader,
        );
        e.sample(
            "switchyard_router_routed_total",
            &[("cluster", cluster), ("target", "replica")],
            replica,
        );
    }
    e.family(
        "switchyard_router_cluster_errors_total",
        "counter",
        "Statements a cluster's servers answered with an error, per cluster.",
    );
    let errors: BTreeMap<String, u64> = m
        .cluster_errors
        .iter()
        .map(|kv| (kv.key().to_string(), load(kv.value())))
        .collect();
    for (cluster, n) in &errors {
        e.sample(
            "switchyard_router_cluster_errors_total",
            &[("cluster", cluster)],
            *n,
        );
    }
    e.family(
        "switchyard_router_errors_total",
        "counter",
        "Error packets sent to clients, by MySQL error code (the router's own and relayed).",
    );
    let errors: BTreeMap<u16, u64> = m
        .errors_by_code
        .iter()
        .map(|kv| (*kv.key(), load(kv.value())))
        .collect();
    for (code, n) in errors {
        e.sample(
            "switchyard_router_errors_total",
            &[("code", &code.to_string())],
            n,
        );
    }

    e.family(
        "switchyard_router_statement_duration_seconds",
        "histogram",
        "Time from a client command's arrival to the end of its reply, by kind.",
    );
    for c in StatementClass::ALL {
        let h = &m.latency[c as usize];
        // Cumulative counts from one read of each bucket, so that +Inf equals _count.
        let mut cumulative = 0;
        for (i, bucket) in h.buckets.iter().enumerate() {
            cumulative += load(bucket);
            let le = match LATENCY_BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".into(),
            };
            e.sample(
                "switchyard_router_statement_duration_seconds_bucket",
                &[("kind", c.label()), ("le", &le)],
                cumulative,
            );
        }
        e.sample(
            "switchyard_router_statement_duration_seconds_sum",
            &[("kind", c.label())],
            load(&h.sum_us) as f64 / 1e6,
        );
        e.sample(
            "switchyard_router_statement_duration_seconds_count",
            &[("kind", c.label())],
            cumulative,
        );
    }

    let mut pools: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in r.pools.stats() {
        let entry = pools.entry(p.addr).or_default();
        entry.0 += p.idle;
        entry.1 += p.busy;
    }
    e.family(
        "switchyard_pool_connections",
        "gauge",
        "Backend connections per server: idle in the pool, or busy (checked out).",
    );
    for (addr, (idle, busy)) in &pools {
        e.sample(
            "switchyard_pool_connections",
            &[("server", addr), ("state", "idle")],
            idle,
        );
        e.sample(
            "switchyard_pool_connections",
            &[("server", addr), ("state", "busy")],
            busy,
        );
    }
}

/// Transactions of `head` (the leader's binlog position) that `replica` (its current
/// position) has not applied: per domain of the leader, the difference of sequence numbers.
fn gtid_lag(head: &orchestrator::gtid::GtidPos, replica: &str) -> Option<u64> {
    let replica = orchestrator::gtid::GtidPos::parse(replica).ok()?;
    if replica.is_empty() {
        return None;
    }
    Some(
        head.domains()
            .map(|d| head.seq(d).saturating_sub(replica.seq(d)))
            .sum(),
    )
}

/// The routing-layer integrations' push counters (appended to the exposition).
pub fn render_integrations(m: &crate::integrations::IntegrationMetrics) -> String {
    let mut e = Exposition { out: String::new() };
    e.family(
        "switchyard_integration_pushes_total",
        "counter",
        "Pushes of a cluster's state to a routing layer or directory, by integration and \
         result (ok; retried: an attempt failed and another followed; failed: every attempt \
         failed).",
    );
    for (integration, result, n) in m.snapshot() {
        e.sample(
            "switchyard_integration_pushes_total",
            &[("integration", integration), ("result", result)],
            n,
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    #[test]
    fn gtid_lag_counts_missing_transactions_per_domain() {
        let head = orchestrator::gtid::GtidPos::parse_lossy("0-1-120,1-2-50");
        assert_eq!(super::gtid_lag(&head, "0-1-100,1-2-50"), Some(20));
        assert_eq!(
            super::gtid_lag(&head, "0-1-100"),
            Some(70),
            "domain 1 not started"
        );
        assert_eq!(
            super::gtid_lag(&head, "0-1-130,1-2-50"),
            Some(0),
            "ahead counts as 0"
        );
        assert_eq!(super::gtid_lag(&head, ""), None);
        assert_eq!(super::gtid_lag(&head, "garbage"), None);
    }

    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }
}
