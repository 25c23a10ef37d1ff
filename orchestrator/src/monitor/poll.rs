//! The polling loop: one task and one persistent connection per node, rounds started by a
//! tick, extra polls on request, and faster polling of a cluster whose leader is failing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, OptsBuilder, Row};
use shard_map::{Topology, TopologyHandle};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{interval, sleep_until, timeout, Instant, MissedTickBehavior};

use super::{
    ClusterSpec, MonitorConfig, MonitorState, Observation, PollError, Replication, StreamProgress,
    StuckWrites,
};
use crate::tls::{self, ConnectError};

/// What an observer (the orchestrator) gets from the monitor besides the published topology.
#[derive(Debug)]
pub struct MonitorLink {
    /// Receives the monitor's state after every round and every extra poll.
    pub updates: watch::Sender<Arc<MonitorState>>,
    /// Addresses to poll now, out of turn (a router saw a connection fail, say).
    pub poll_now: mpsc::UnboundedReceiver<String>,
}

/// Watches `clusters` until `shutdown` completes, publishing to `topology`.
///
/// Each node has its own task and connection, so a hung node delays nobody else. Every tick
/// starts a polling round; the round's snapshot is published as soon as every node has
/// answered, or at the next tick with what has arrived (a node still in its poll counts as
/// failed only when its timeout fires). Nothing is published when nothing changed.
///
/// While a cluster's leader is failing its polls, the whole cluster is polled every
/// [`MonitorConfig::suspect_tick`] instead, so that the leader reaches `Down` (or recovers)
/// quickly and the replicas' view of it is fresh when the failure detector looks.
pub async fn run(
    cfg: MonitorConfig,
    clusters: Vec<ClusterSpec>,
    topology: TopologyHandle,
    shutdown: impl Future<Output = ()>,
) {
    run_with(cfg, clusters, topology, shutdown, None).await;
}

/// [`run`], also reporting every state change to `link` and taking poll requests from it.
pub async fn run_with(
    cfg: MonitorConfig,
    clusters: Vec<ClusterSpec>,
    topology: TopologyHandle,
    shutdown: impl Future<Output = ()>,
    link: Option<MonitorLink>,
) {
    let cfg = Arc::new(cfg);
    let mut state = MonitorState::new(&clusters, cfg.down_after);
    let addrs: Vec<String> = state.nodes().keys().cloned().collect();
    let (results_tx, mut results) = mpsc::channel(addrs.len().max(1) * 4);
    let (round_tx, round_rx) = watch::channel(0u64);
    let mut pokes: BTreeMap<String, Arc<Notify>> = BTreeMap::new();
    let mut pollers = JoinSet::new();
    for addr in &addrs {
        let poke = Arc::new(Notify::new());
        pokes.insert(addr.clone(), poke.clone());
        pollers.spawn(poll_loop(
            cfg.clone(),
            addr.clone(),
            round_rx.clone(),
            poke,
            results_tx.clone(),
        ));
    }
    drop(results_tx);
    let (updates, mut poll_now) = match link {
        Some(l) => (Some(l.updates), Some(l.poll_now)),
        None => (None, None),
    };
    let report = |state: &MonitorState| {
        if let Some(u) = &updates {
            u.send_replace(Arc::new(state.clone()));
        }
    };

    let mut tick = interval(cfg.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut round = 0u64;
    let mut awaiting = 0usize;
    let mut published = true;
    let mut next_fast: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                if !published {
                    publish_if_changed(&mut state, &topology);
                    report(&state);
                }
                round += 1;
                awaiting = addrs.len();
                published = false;
                round_tx.send_replace(round);
            }
            Some(addr) = recv_opt(&mut poll_now) => {
                if let Some(p) = pokes.get(&addr) {
                    p.notify_one();
                }
            }
            _ = sleep_until_opt(next_fast) => {
                next_fast = None;
                for addr in failing_leaders_nodes(&state, &clusters, &topology.load()) {
                    if let Some(p) = pokes.get(&addr) {
                        p.notify_one();
                    }
                }
            }
            Some((addr, of_round, result)) = results.recv() => {
                state.record(&addr, result);
                match of_round {
                    Some(r) if r == round && !published => {
                        awaiting = awaiting.saturating_sub(1);
                        if awaiting == 0 {
                            publish_if_changed(&mut state, &topology);
                            published = true;
                            report(&state);
                        }
                    }
                    // A late answer to an old round.
                    Some(_) => {}
                    // An extra poll: worth telling at once.
                    None => {
                        publish_if_changed(&mut state, &topology);
                        report(&state);
                    }
                }
                if next_fast.is_none()
                    && !failing_leaders_nodes(&state, &clusters, &topology.load()).is_empty()
                {
                    next_fast = Some(Instant::now() + cfg.suspect_tick);
                }
            }
        }
    }
    // Aborting drops the pollers' connections.
    pollers.shutdown().await;
}

async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Every node of the clusters whose current leader failed its last poll.
fn failing_leaders_nodes(
    state: &MonitorState,
    clusters: &[ClusterSpec],
    topology: &Topology,
) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for spec in clusters {
        let Some(leader) = topology.cluster(&spec.name).and_then(|c| c.leader.as_ref()) else {
            continue;
        };
        if state
            .node(leader)
            .is_some_and(|h| h.consecutive_failures > 0 || h.writes_stuck_since.is_some())
        {
            nodes.extend(spec.all_nodes());
        }
    }
    nodes
}

fn publish_if_changed(state: &mut MonitorState, topology: &TopologyHandle) {
    let mut next = Topology::clone(&topology.load());
    if state.apply(&mut next) {
        // Applied again to the snapshot current at publish time, in case another publisher
        // (failover) got in between.
        let published = topology.publish(|t| {
            state.apply(t);
        });
        tracing::debug!(version = published.version, "monitor published a topology");
    }
}

/// A node's poll result, with the round it answers (`None` for an extra poll).
type PollReport = (String, Option<u64>, Result<Observation, PollError>);

/// One node's poller: waits for a round or a poke, polls, reports. Requests that arrive while
/// it is busy are merged into one next poll rather than queued.
async fn poll_loop(
    cfg: Arc<MonitorConfig>,
    addr: String,
    mut rounds: watch::Receiver<u64>,
    poke: Arc<Notify>,
    results: mpsc::Sender<PollReport>,
) {
    let opts = node_opts(&cfg, &addr);
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    // The `gtid_binlog_pos` of the last successful poll (see `observe`).
    let mut last_binlog: Option<String> = None;
    let mut seen_round = *rounds.borrow();
    loop {
        tokio::select! {
            changed = rounds.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = poke.notified() => {}
        }
        let current = *rounds.borrow_and_update();
        let of_round = (current != seen_round).then_some(current);
        seen_round = current;
        let result = match &opts {
            Ok(opts) => poll_once(&cfg, opts, &mut conn, failing, last_binlog.as_deref()).await,
            Err(e) => Err(e.clone()),
        };
        failing = result.is_err();
        if let Ok(obs) = &result {
            last_binlog = Some(obs.gtid_binlog_pos.clone());
        }
        if let Err(e) = &result {
            tracing::debug!(%addr, error = %e, "poll failed");
        }
        if results
            .send((addr.clone(), of_round, result))
            .await
            .is_err()
        {
            break;
        }
    }
}

fn node_opts(cfg: &MonitorConfig, addr: &str) -> Result<OptsBuilder, PollError> {
    let (host, port) = split_host_port(addr).ok_or_else(|| PollError::BadAddress(addr.into()))?;
    Ok(OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false))
}

/// `host:port` or `[v6]:port`.
pub(crate) fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// One poll on the node's persistent connection, opening it first if needed. Any failure
/// drops the connection: after a timeout its state is unknown. A node whose last poll
/// `failing` gets the shorter [`MonitorConfig::suspect_timeout`] for both.
async fn poll_once(
    cfg: &MonitorConfig,
    opts: &OptsBuilder,
    conn: &mut Option<Conn>,
    failing: bool,
    last_binlog: Option<&str>,
) -> Result<Observation, PollError> {
    let (connect_limit, query_limit) = if failing {
        (
            cfg.connect_timeout.min(cfg.suspect_timeout),
            cfg.poll_timeout.min(cfg.suspect_timeout),
        )
    } else {
        (cfg.connect_timeout, cfg.poll_timeout)
    };
    if conn.is_none() {
        let fresh = tls::connect(opts.clone(), &cfg.tls, connect_limit)
            .await
            .map_err(|e| match e {
                ConnectError::Timeout => PollError::ConnectTimeout(connect_limit),
                ConnectError::Failed(e) => PollError::Connect(e.to_string()),
            })?;
        *conn = Some(fresh);
    }
    let Some(c) = conn.as_mut() else {
        return Err(PollError::Connect("no connection".into()));
    };
    let result = match timeout(query_limit, observe(c, last_binlog)).await {
        Ok(result) => result,
        Err(_) => Err(PollError::QueryTimeout(query_limit)),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// One poll's queries. `last_binlog`: the node's `gtid_binlog_pos` at the previous poll.
async fn observe(conn: &mut Conn, last_binlog: Option<&str>) -> Result<Observation, PollError> {
    let query_err = |e: mysql_async::Error| PollError::Query(e.to_string());
    let row: Row = conn
        .query_first(
            "SELECT @@global.read_only, @@global.gtid_current_pos, @@global.gtid_slave_pos, \
             @@global.gtid_binlog_pos, @@global.server_id, @@global.gtid_domain_id, \
             @@global.rpl_semi_sync_master_enabled, @@global.rpl_semi_sync_slave_enabled",
        )
        .await
        .map_err(query_err)?
        .ok_or_else(|| PollError::Query("the variables query returned no row".into()))?;
    let flag = |i: usize, name: &str| column::<i64>(&row, i, name).map(|v| v != 0);
    let mut obs = Observation {
        read_only: flag(0, "read_only")?,
        gtid_current_pos: column(&row, 1, "gtid_current_pos")?,
        gtid_slave_pos: column(&row, 2, "gtid_slave_pos")?,
        gtid_binlog_pos: column(&row, 3, "gtid_binlog_pos")?,
        server_id: column(&row, 4, "server_id")?,
        gtid_domain_id: column(&row, 5, "gtid_domain_id")?,
        semi_sync_master_enabled: flag(6, "rpl_semi_sync_master_enabled")?,
        semi_sync_slave_enabled: flag(7, "rpl_semi_sync_slave_enabled")?,
        replication: None,
        stuck_writes: None,
    };
    // `SHOW ALL SLAVES STATUS` has the heartbeat counters `SHOW SLAVE STATUS` lacks; its
    // row of the default connection is the one `SHOW SLAVE STATUS` shows.
    let rows: Vec<Row> = conn
        .query("SHOW ALL SLAVES STATUS")
        .await
        .map_err(query_err)?;
    let default = rows.into_iter().find(|row| {
        row.get_opt::<String, _>("Connection_name")
            .and_then(Result::ok)
            .is_none_or(|name| name.is_empty())
    });
    if let Some(row) = default {
        obs.replication = Some(replication_from_row(&row)?);
    }
    if !obs.read_only && commits_may_be_stuck(conn, &obs, last_binlog).await? {
        // A full disk stops commits and nothing else: only the waiting sessions show it.
        let sessions: Vec<Row> = conn.query("SHOW PROCESSLIST").await.map_err(query_err)?;
        obs.stuck_writes = StuckWrites::from_sessions(sessions.iter().map(|row| {
            let state = row
                .get_opt::<Option<String>, _>("State")
                .and_then(Result::ok);
            let time = row.get_opt::<Option<u64>, _>("Time").and_then(Result::ok);
            (state.flatten(), time.flatten().unwrap_or(0))
        }));
    }
    Ok(obs)
}

/// Whether a writable node's sessions are worth looking at for commits that cannot finish
/// ([`StuckWrites`]): its binlog has not moved since the last poll while a session other than
/// this one is running. The process list is read only then: a busy leader moves its binlog at
/// every poll, an idle one runs nothing, and the list costs the server an internal temporary
/// table per read. (The crashes once blamed on these reads were test servers sharing /tmp as
/// tmpdir: see `LocalNode::tmp_dir`.)
async fn commits_may_be_stuck(
    conn: &mut Conn,
    obs: &Observation,
    last_binlog: Option<&str>,
) -> Result<bool, PollError> {
    if last_binlog != Some(obs.gtid_binlog_pos.as_str()) {
        return Ok(false);
    }
    let running: Option<(String, u64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Threads_running'")
        .await
        .map_err(|e| PollError::Query(e.to_string()))?;
    Ok(running.is_some_and(|(_, n)| n > 1))
}

/// The interesting columns of a `SHOW SLAVE STATUS` row.
pub(crate) fn replication_from_row(row: &Row) -> Result<Replication, PollError> {
    let io_state: String = column(row, "Slave_IO_Running", "Slave_IO_Running")?;
    let sql_state: String = column(row, "Slave_SQL_Running", "Slave_SQL_Running")?;
    let host: String = column(row, "Master_Host", "Master_Host")?;
    let port: u16 = column(row, "Master_Port", "Master_Port")?;
    let error = |name: &str| -> Result<Option<String>, PollError> {
        let text: String = column(row, name, name)?;
        Ok((!text.is_empty()).then_some(text))
    };
    Ok(Replication {
        source: format!("{host}:{port}"),
        io_running: io_state == "Yes",
        io_state,
        sql_running: sql_state == "Yes",
        lag_seconds: column(row, "Seconds_Behind_Master", "Seconds_Behind_Master")?,
        last_io_error: error("Last_IO_Error")?,
        last_sql_error: error("Last_SQL_Error")?,
        gtid_io_pos: column(row, "Gtid_IO_Pos", "Gtid_IO_Pos")?,
        progress: progress_from_row(row),
    })
}

/// The stream counters of a `SHOW ALL SLAVES STATUS` row (`None` for `SHOW SLAVE STATUS`).
fn progress_from_row(row: &Row) -> Option<StreamProgress> {
    let text = |name: &str| row.get_opt::<String, _>(name).and_then(Result::ok);
    let period_s: f64 = text("Slave_heartbeat_period")?.trim().parse().ok()?;
    Some(StreamProgress {
        read: format!(
            "{}:{}",
            text("Master_Log_File").unwrap_or_default(),
            text("Read_Master_Log_Pos").unwrap_or_default()
        ),
        heartbeats: text("Slave_received_heartbeats")?.trim().parse().ok()?,
        heartbeat_period_ms: (period_s * 1000.0).round() as u64,
    })
}

/// A column converted to `T`, as an error (not a panic) when it is missing or does not convert.
fn column<T: FromValue>(
    row: &Row,
    index: impl mysql_async::prelude::ColumnIndex,
    name: &str,
) -> Result<T, PollError> {
    match row.get_opt::<T, _>(index) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(PollError::Query(format!("column {name}: {e}"))),
        None => Err(PollError::Query(format!("column {name} is missing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("127.0.0.1:3306"),
            Some(("127.0.0.1".into(), 3306))
        );
        assert_eq!(split_host_port("[::1]:3306"), Some(("::1".into(), 3306)));
        assert_eq!(split_host_port("db:x"), None);
        assert_eq!(split_host_port(":1"), None);
        assert_eq!(split_host_port("nohost"), None);
    }
}
