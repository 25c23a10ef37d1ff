//! The monitor: every tick it polls every node of every cluster over a persistent connection
//! (read-only flag, GTID positions, replica threads and lag) and publishes one new topology
//! snapshot when something changed. It reports what it sees; moving leadership is failover's job.
//!
//! [`MonitorState`] holds the rules (what a failed poll means, which role a node has) and is
//! handed to the orchestrator after every round; `poll` runs the pollers.

mod poll;

use crate::tls::NodeTls;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use shard_map::{ClusterStatus, NodeState, NodeStatus, Role, Topology};
use tokio::time::Instant;

pub(crate) use poll::{replication_from_row, split_host_port};
pub use poll::{run, run_with, MonitorLink};

/// How the monitor polls.
#[derive(Clone)]
pub struct MonitorConfig {
    /// Time between polling rounds.
    pub tick: Duration,
    /// Limit on opening a connection to a node.
    pub connect_timeout: Duration,
    /// Limit on one statement of an operation (failover, switchover, rejoin).
    pub query_timeout: Duration,
    /// Limit on one poll's queries on an open connection.
    pub poll_timeout: Duration,
    /// Limit on connecting and on the queries for a node whose last poll failed: a server
    /// that hangs (frozen, or cut off without a reset) accepts connections in the kernel and
    /// then never answers, so each failed poll costs this long.
    pub suspect_timeout: Duration,
    /// The monitoring user (needs to run `SHOW SLAVE STATUS`).
    pub user: String,
    pub password: String,
    /// Consecutive failed polls after which a node is `Down` (one failed poll makes it
    /// `Suspect`).
    pub down_after: u32,
    /// Time between the extra polls of a cluster whose leader failed its last poll.
    pub suspect_tick: Duration,
    /// TLS on the monitor's and the operations' connections (and replication's, see
    /// [`NodeTls::replication_ssl`]).
    pub tls: NodeTls,
}

impl MonitorConfig {
    /// Defaults: a 500 ms tick, 1 s to connect, 1 s for a poll's queries (2 s for an
    /// operation's statements), 500 ms for both while a node is failing, `Down` after 3
    /// failed polls, polled every 100 ms while a leader is failing.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        MonitorConfig {
            tick: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(2),
            poll_timeout: Duration::from_secs(1),
            suspect_timeout: Duration::from_millis(500),
            user: user.into(),
            password: password.into(),
            down_after: 3,
            suspect_tick: Duration::from_millis(100),
            tls: NodeTls::Disabled,
        }
    }
}

/// The password is left out.
impl fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("tick", &self.tick)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("poll_timeout", &self.poll_timeout)
            .field("suspect_timeout", &self.suspect_timeout)
            .field("user", &self.user)
            .field("down_after", &self.down_after)
            .field("suspect_tick", &self.suspect_tick)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A cluster to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    /// `host:port` of every node.
    pub nodes: Vec<String>,
    /// The leader, if known; otherwise the monitor names one when it is unambiguous.
    pub leader: Option<String>,
}

impl ClusterSpec {
    /// The nodes, with the leader included even if `nodes` forgot it.
    pub fn all_nodes(&self) -> Vec<String> {
        let mut nodes = self.nodes.clone();
        if let Some(leader) = &self.leader {
            if !nodes.contains(leader) {
                nodes.push(leader.clone());
            }
        }
        nodes
    }
}

/// The topology before any poll: every node `Unknown`; the leader (if given) `Leader` and the
/// other nodes `Replica` (or `Unknown` when there is no leader).
pub fn initial_topology(clusters: &[ClusterSpec]) -> Topology {
    let mut topology = Topology::default();
    for spec in clusters {
        topology
            .clusters
            .insert(spec.name.clone(), initial_cluster(spec));
    }
    topology
}

fn initial_cluster(spec: &ClusterSpec) -> ClusterStatus {
    let nodes = spec
        .all_nodes()
        .into_iter()
        .map(|addr| {
            let role = match &spec.leader {
                Some(l) if *l == addr => Role::Leader,
                Some(_) => Role::Replica,
                None => Role::Unknown,
            };
            NodeStatus::new(addr, role)
        })
        .collect();
    ClusterStatus::new(spec.name.clone(), spec.leader.clone(), nodes)
}

/// What one successful poll of a node saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub read_only: bool,
    pub gtid_current_pos: String,
    pub gtid_slave_pos: String,
    pub gtid_binlog_pos: String,
    pub server_id: u32,
    pub gtid_domain_id: u32,
    /// `@@rpl_semi_sync_master_enabled` / `@@rpl_semi_sync_slave_enabled`.
    pub semi_sync_master_enabled: bool,
    pub semi_sync_slave_enabled: bool,
    /// `SHOW SLAVE STATUS`, if the node has replication configured.
    pub replication: Option<Replication>,
    /// Sessions waiting for disk space to commit (looked for on writable nodes only).
    pub stuck_writes: Option<StuckWrites>,
}

/// Sessions of a writable node that cannot write their commit: its disk is full (the server
/// waits for space, retrying once a minute, instead of failing them), or stalled (a commit
/// blocked in its write). Reads still work and replicas still get heartbeats, so only the
/// sessions themselves show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckWrites {
    /// How many sessions wait.
    pub sessions: usize,
    /// The longest wait so far, in whole seconds (`SHOW PROCESSLIST`'s `Time`).
    pub longest_s: u64,
    /// Waiting for disk space ([`StuckWrites::STATE`]); otherwise in [`StuckWrites::COMMIT`]
    /// for a second or more.
    pub disk_full: bool,
}

impl StuckWrites {
    /// The `SHOW PROCESSLIST` state of a session waiting for disk space (MariaDB's `my_write`
    /// with `MY_WAIT_IF_FULL`: the binary log, Aria and MyISAM files).
    pub const STATE: &'static str = "Waiting for someone to free space";
    /// The state of a session writing its commit (a stalled disk keeps it there).
    pub const COMMIT: &'static str = "Commit";

    /// From `SHOW PROCESSLIST`'s (`State`, `Time`) of every session: those waiting for disk
    /// space, else those in their commit for a second or more.
    pub fn from_sessions(
        sessions: impl IntoIterator<Item = (Option<String>, u64)>,
    ) -> Option<StuckWrites> {
        let (mut full, mut commit) = (Vec::new(), Vec::new());
        for (state, time) in sessions {
            match state.as_deref() {
                Some(Self::STATE) => full.push(time),
                Some(Self::COMMIT) if time >= 1 => commit.push(time),
                _ => {}
            }
        }
        let disk_full = !full.is_empty();
        let waits = if disk_full { full } else { commit };
        Some(StuckWrites {
            sessions: waits.len(),
            longest_s: *waits.iter().max()?,
            disk_full,
        })
    }

    pub fn describe(&self) -> String {
        if self.disk_full {
            format!(
                "disk full: {} session(s) waiting to commit ('{}')",
                self.sessions,
                Self::STATE
            )
        } else {
            format!(
                "commits stalled: {} session(s) in '{}' for up to {} s, the binary log not \
                 moving (a stalled disk?)",
                self.sessions,
                Self::COMMIT,
                self.longest_s
            )
        }
    }
}

/// The interesting part of `SHOW SLAVE STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `Master_Host:Master_Port`.
    pub source: String,
    /// `Slave_IO_Running` as the server says it: `Yes`, `No` or `Connecting`.
    pub io_state: String,
    pub io_running: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master` (`NULL` while the SQL thread or the IO thread is not running).
    pub lag_seconds: Option<u64>,
    pub last_io_error: Option<String>,
    pub last_sql_error: Option<String>,
    /// `Gtid_IO_Pos`: the last GTID received into the relay log, per domain.
    pub gtid_io_pos: String,
    /// What the IO thread has received, when the server says (`SHOW ALL SLAVES STATUS`).
    pub progress: Option<StreamProgress>,
}

/// Counters of a replica's stream that move with every event and every heartbeat its source
/// sends: while they stand still for several heartbeat periods, the source has stopped
/// sending although the IO thread still says `Yes` (a source that hangs resets nothing, and
/// the IO thread only gives up after `slave_net_timeout`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamProgress {
    /// `Master_Log_File:Read_Master_Log_Pos`.
    pub read: String,
    /// `Slave_received_heartbeats`.
    pub heartbeats: u64,
    /// `Slave_heartbeat_period`, in ms (0: the source sends no heartbeats).
    pub heartbeat_period_ms: u64,
}

impl StreamProgress {
    /// Whether `next` shows anything received since `self` (the period aside).
    pub fn moved(&self, next: &StreamProgress) -> bool {
        self.read != next.read || self.heartbeats != next.heartbeats
    }
}

impl Replication {
    /// Both errors in one line, SQL first (it stops replication for good).
    fn last_error(&self) -> Option<String> {
        match (&self.last_sql_error, &self.last_io_error) {
            (Some(sql), Some(io)) => Some(format!("SQL: {sql}; IO: {io}")),
            (Some(sql), None) => Some(format!("SQL: {sql}")),
            (None, Some(io)) => Some(format!("IO: {io}")),
            (None, None) => None,
        }
    }
}

/// Why a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("invalid node address {0:?} (expected host:port)")]
    BadAddress(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("query failed: {0}")]
    Query(String),
    #[error("queries timed out after {0:?}")]
    QueryTimeout(Duration),
}

/// Everything the monitor knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub cluster: String,
    /// The status as last published.
    pub status: NodeStatus,
    /// Failed polls in a row (0 after a successful one).
    pub consecutive_failures: u32,
    pub last_poll_error: Option<PollError>,
    /// The last successful poll's result (kept while the node is failing).
    pub last_observation: Option<Observation>,
    /// When the last successful poll was recorded.
    pub last_ok_at: Option<Instant>,
    /// When the current run of failed polls began.
    pub failing_since: Option<Instant>,
    /// The last `Seconds_Behind_Master` that was not `NULL`: once the leader is gone the
    /// server reports `NULL`, but how far behind a replica was still matters for elections.
    pub last_known_lag: Option<u64>,
    /// When a poll last saw the replica's stream move (see [`StreamProgress`]).
    pub stream_moved_at: Option<Instant>,
    /// Since when sessions have been waiting for disk space to commit, as far as the polls
    /// since the first that saw one can tell (see [`StuckWrites`]).
    pub writes_stuck_since: Option<Instant>,
    /// When a poll last saw its `gtid_binlog_pos` move.
    pub binlog_moved_at: Option<Instant>,
}

impl NodeHealth {
    /// How long the replica's stream has received nothing, no event and no heartbeat, if
    /// that is longer than [`crate::detect::stall_limit`] of its heartbeat period while its IO
    /// thread still says `Yes`.
    pub fn stream_stalled(&self, now: Instant) -> Option<Duration> {
        let rep = self.last_observation.as_ref()?.replication.as_ref()?;
        let period = rep.progress.as_ref()?.heartbeat_period_ms;
        if !rep.io_running || self.status.state != NodeState::Up || period == 0 {
            return None;
        }
        let quiet = now.saturating_duration_since(self.stream_moved_at?);
        (quiet > crate::detect::stall_limit(period)).then_some(quiet)
    }

    /// How long its sessions have been unable to commit, and what the last poll saw, while
    /// the node is up: waiting for disk space since the first poll that saw it, or stuck in
    /// their commit while the binary log did not move.
    pub fn writes_stuck(&self, now: Instant) -> Option<(Duration, &StuckWrites)> {
        if self.status.state != NodeState::Up {
            return None;
        }
        let stuck = self.last_observation.as_ref()?.stuck_writes.as_ref()?;
        let mut since = self.writes_stuck_since?;
        if !stuck.disk_full {
            since = since.max(self.binlog_moved_at.unwrap_or(since));
        }
        Some((now.saturating_duration_since(since), stuck))
    }
}

/// The monitor's memory: poll results per node, turned into topology snapshots by
/// [`MonitorState::apply`]. Kept apart from the polling so that its rules can be tested without
/// servers and read by the failure detector.
#[derive(Debug, Clone)]
pub struct MonitorState {
    clusters: Vec<ClusterSpec>,
    nodes: BTreeMap<String, NodeHealth>,
    down_after: u32,
    /// Each cluster's epoch when this process first saw it (1, or the one kept in the state
    /// directory): leadership has not moved here while the epoch is still that one.
    first_epochs: BTreeMap<String, u64>,
}

impl MonitorState {
    /// Nothing polled yet. A node listed in several clusters is tracked for the first one.
    pub fn new(clusters: &[ClusterSpec], down_after: u32) -> Self {
        let mut nodes = BTreeMap::new();
        for spec in clusters {
            let initial = initial_cluster(spec);
            for status in initial.nodes {
                nodes
                    .entry(status.addr.clone())
                    .or_insert_with(|| NodeHealth {
                        cluster: spec.name.clone(),
                        status,
                        consecutive_failures: 0,
                        last_poll_error: None,
                        last_observation: None,
                        last_ok_at: None,
                        failing_since: None,
                        last_known_lag: None,
                        stream_moved_at: None,
                        writes_stuck_since: None,
                        binlog_moved_at: None,
                    });
            }
        }
        MonitorState {
            clusters: clusters.to_vec(),
            nodes,
            down_after: down_after.max(1),
            first_epochs: BTreeMap::new(),
        }
    }

    /// Every node watched, by address.
    pub fn nodes(&self) -> &BTreeMap<String, NodeHealth> {
        &self.nodes
    }

    /// What the monitor knows about `addr`.
    pub fn node(&self, addr: &str) -> Option<&NodeHealth> {
        self.nodes.get(addr)
    }

    /// Takes in one poll's result.
    pub fn record(&mut self, addr: &str, result: Result<Observation, PollError>) {
        let Some(h) = self.nodes.get_mut(addr) else {
            return;
        };
        match result {
            Ok(obs) => {
                let progress =
                    |o: &Observation| o.replication.as_ref().and_then(|r| r.progress.clone());
                let moved = match (
                    h.last_observation.as_ref().and_then(progress),
                    progress(&obs),
                ) {
                    (Some(before), Some(now)) => before.moved(&now),
                    _ => true,
                };
                if moved {
                    h.stream_moved_at = Some(Instant::now());
                }
                let binlog_moved = h
                    .last_observation
                    .as_ref()
                    .is_none_or(|o| o.gtid_binlog_pos != obs.gtid_binlog_pos);
                if binlog_moved {
                    h.binlog_moved_at = Some(Instant::now());
                }
                h.writes_stuck_since = obs.stuck_writes.as_ref().map(|w| {
                    let began = Instant::now()
                        .checked_sub(Duration::from_secs(w.longest_s))
                        .unwrap_or_else(Instant::now);
                    h.writes_stuck_since.map_or(began, |s| s.min(began))
                });
                h.consecutive_failures = 0;
                h.last_poll_error = None;
                h.last_ok_at = Some(Instant::now());
                h.failing_since = None;
                if let Some(lag) = obs.replication.as_ref().and_then(|r| r.lag_seconds) {
                    h.last_known_lag = Some(lag);
                }
                let s = &mut h.status;
                s.state = NodeState::Up;
                s.read_only = Some(obs.read_only);
                s.gtid_current_pos.clone_from(&obs.gtid_current_pos);
                s.gtid_slave_pos.clone_from(&obs.gtid_slave_pos);
                s.gtid_binlog_pos.clone_from(&obs.gtid_binlog_pos);
                match &obs.replication {
                    Some(r) => {
                        s.io_running = Some(r.io_running);
                        s.sql_running = Some(r.sql_running);
                        s.lag_seconds = r.lag_seconds;
                        s.last_error = r.last_error();
                    }
                    None => {
                        s.io_running = None;
                        s.sql_running = None;
                        s.lag_seconds = None;
                        s.last_error = None;
                    }
                }
                if let Some(w) = &obs.stuck_writes {
                    s.last_error = Some(w.describe());
                }
                h.last_observation = Some(obs);
            }
            Err(e) => {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.failing_since.get_or_insert_with(Instant::now);
                h.status.state = if h.consecutive_failures >= self.down_after {
                    NodeState::Down
                } else {
                    NodeState::Suspect
                };
                // The other fields keep the last values seen: the failure detector wants to
                // know what a node looked like before it went quiet.
                h.last_poll_error = Some(e);
            }
        }
    }

    /// Writes the monitored clusters' node statuses into `topology` and says whether anything
    /// changed. Roles follow the topology's current leader (which failover may have moved):
    /// the leader is `Leader`, a node with replication configured `Replica`, anything else
    /// `Unknown`. Leadership is not touched, except that a cluster without a leader gets one
    /// (and a new epoch) when every node has been polled and exactly one is up, writable and
    /// not replicating, and that the same node replaces the configured leader when that one
    /// turns out to be a read-only replica of another node of the cluster before this process
    /// moved leadership (it moved while the process was not running: a restart with a config
    /// written before a switchover or failover). Operator flags are the topology's: the monitor
    /// keeps them as they are.
    pub fn apply(&mut self, topology: &mut Topology) -> bool {
        let mut changed = false;
        for spec in &self.clusters {
            let cluster = topology
                .clusters
                .entry(spec.name.clone())
                .or_insert_with(|| {
                    changed = true;
                    initial_cluster(spec)
                });
            let addrs = spec.all_nodes();
            let first_epoch = *self
                .first_epochs
                .entry(spec.name.clone())
                .or_insert(cluster.epoch);
            if let Some(leader) = self.moved_before_start(spec, cluster, &addrs, first_epoch) {
                tracing::warn!(
                    cluster = %spec.name,
                    configured = ?spec.leader,
                    leader = %leader,
                    "the configured leader replicates from another node: {leader} leads"
                );
                cluster.leader = Some(leader);
                cluster.epoch += 1;
                changed = true;
            }
            if cluster.leader.is_none() {
                if let Some(leader) = obvious_leader(&self.nodes, &addrs) {
                    cluster.leader = Some(leader);
                    cluster.epoch += 1;
                    changed = true;
                }
            }
            for addr in &addrs {
                let Some(h) = self.nodes.get_mut(addr) else {
                    continue;
                };
                let current_role = cluster.node(addr).map(|n| n.role);
                if let Some(flags) = cluster.node(addr).map(|n| n.flags) {
                    h.status.flags = flags;
                }
                h.status.role = if cluster.leader.as_deref() == Some(addr.as_str()) {
                    Role::Leader
                } else {
                    match &h.last_observation {
                        Some(obs) if obs.replication.is_some() => Role::Replica,
                        Some(_) => Role::Unknown,
                        // Never reached: keep what the topology was told.
                        None => current_role.unwrap_or(Role::Unknown),
                    }
                };
                match cluster.node_mut(addr) {
                    Some(n) if *n == h.status => {}
                    Some(n) => {
                        *n = h.status.clone();
                        changed = true;
                    }
                    None => {
                        cluster.nodes.push(h.status.clone());
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

impl MonitorState {
    /// The node that really leads a cluster whose configured leader is, at start, seen as a
    /// read-only replica of another of its nodes: the obvious leader (see [`obvious_leader`]).
    /// Only while the configured leader still holds the first epoch, so that nothing this
    /// process published is ever overridden.
    fn moved_before_start(
        &self,
        spec: &ClusterSpec,
        cluster: &ClusterStatus,
        addrs: &[String],
        first_epoch: u64,
    ) -> Option<String> {
        let configured = spec.leader.as_deref()?;
        if cluster.epoch != first_epoch || cluster.leader.as_deref() != Some(configured) {
            return None;
        }
        let h = self.nodes.get(configured)?;
        let obs = h.last_observation.as_ref()?;
        let source = &obs.replication.as_ref()?.source;
        if h.status.state != NodeState::Up || !obs.read_only || !addrs.contains(source) {
            return None;
        }
        obvious_leader(&self.nodes, addrs).filter(|l| l != configured)
    }
}

/// The single node that is up, writable and not replicating, provided every node has been
/// polled (a node never heard from might be another writable one).
fn obvious_leader(nodes: &BTreeMap<String, NodeHealth>, addrs: &[String]) -> Option<String> {
    let healths: Vec<&NodeHealth> = addrs.iter().filter_map(|a| nodes.get(a)).collect();
    if healths.iter().any(|h| h.status.state == NodeState::Unknown) {
        return None;
    }
    let mut candidates = healths.iter().filter(|h| {
        h.status.state == NodeState::Up
            && h.last_observation
                .as_ref()
                .is_some_and(|o| !o.read_only && o.replication.is_none())
    });
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => Some(only.status.addr.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "127.0.0.1:1";
    const R: &str = "127.0.0.1:2";

    fn spec(leader: Option<&str>) -> Vec<ClusterSpec> {
        vec![ClusterSpec {
            name: "c1".into(),
            nodes: vec![L.into(), R.into()],
            leader: leader.map(Into::into),
        }]
    }

    fn leader_obs() -> Observation {
        Observation {
            read_only: false,
            gtid_current_pos: "0-1-5".into(),
            gtid_slave_pos: String::new(),
            gtid_binlog_pos: "0-1-5".into(),
            server_id: 1,
            gtid_domain_id: 0,
            semi_sync_master_enabled: true,
            semi_sync_slave_enabled: true,
            replication: None,
            stuck_writes: None,
        }
    }

    fn replica_obs(lag: Option<u64>) -> Observation {
        Observation {
            read_only: true,
            gtid_current_pos: "0-1-5".into(),
            gtid_slave_pos: "0-1-5".into(),
            gtid_binlog_pos: "0-1-5".into(),
            server_id: 2,
            gtid_domain_id: 0,
            semi_sync_master_enabled: false,
            semi_sync_slave_enabled: true,
            replication: Some(Replication {
                source: L.into(),
                io_state: "Yes".into(),
                io_running: true,
                sql_running: true,
                lag_seconds: lag,
                last_io_error: None,
                last_sql_error: None,
                gtid_io_pos: "0-1-5".into(),
                progress: None,
            }),
            stuck_writes: None,
        }
    }

    #[test]
    fn stuck_writes_are_sessions_waiting_for_disk_space_or_long_in_their_commit() {
        let none = [
            (Some("Sending data".to_owned()), 9),
            (None, 30),
            (Some(StuckWrites::COMMIT.to_owned()), 0),
        ];
        assert_eq!(StuckWrites::from_sessions(none), None);
        let waiting = Some(StuckWrites::STATE.to_owned());
        let commit = Some(StuckWrites::COMMIT.to_owned());
        let sessions = [
            (waiting.clone(), 2),
            (Some("Sending data".into()), 40),
            (commit.clone(), 9),
            (waiting, 5),
        ];
        assert_eq!(
            StuckWrites::from_sessions(sessions),
            Some(StuckWrites {
                sessions: 2,
                longest_s: 5,
                disk_full: true
            })
        );
        // No one waiting for space: commits of a second or more.
        let sessions = [(commit.clone(), 0), (commit.clone(), 3), (commit, 1)];
        let stalled = StuckWrites::from_sessions(sessions).expect("stalled commits");
        assert_eq!((stalled.sessions, stalled.longest_s), (2, 3));
        assert!(!stalled.disk_full);
        assert!(stalled.describe().contains("commits stalled"));
    }

    #[test]
    fn a_stalled_commit_counts_only_while_the_binlog_stands_still() {
        let mut state = MonitorState::new(&spec(Some(L)), 3);
        let stalled = |pos: &str| Observation {
            gtid_binlog_pos: pos.into(),
            stuck_writes: Some(StuckWrites {
                sessions: 1,
                longest_s: 30,
                disk_full: false,
            }),
            ..leader_obs()
        };
        state.record(L, Ok(leader_obs()));
        // The binlog moved with this poll: the stall counts from now, not from 30 s ago.
        state.record(L, Ok(stalled("0-1-6")));
        let (since, _) = state
            .node(L)
            .and_then(|h| h.writes_stuck(Instant::now()))
            .expect("stuck");
        assert!(since < Duration::from_secs(5), "{since:?}");
        // A full disk counts from the longest wait, whatever the binlog did.
        let mut full = stalled("0-1-7");
        if let Some(w) = full.stuck_writes.as_mut() {
            w.disk_full = true;
        }
        state.record(L, Ok(full));
        let (since, _) = state
            .node(L)
            .and_then(|h| h.writes_stuck(Instant::now()))
            .expect("stuck");
        assert!(since >= Duration::from_secs(30), "{since:?}");
    }

    #[test]
    fn writes_stuck_counts_from_the_first_poll_that_saw_them() {
        let mut state = MonitorState::new(&spec(Some(L)), 3);
        let stuck = |longest_s| Observation {
            stuck_writes: Some(StuckWrites {
                sessions: 1,
                longest_s,
                disk_full: true,
            }),
            ..leader_obs()
        };
        state.record(L, Ok(stuck(3)));
        let h = state.node(L).expect("tracked");
        let (since, w) = h.writes_stuck(Instant::now()).expect("stuck");
        assert!(since >= Duration::from_secs(3), "{since:?}");
        assert_eq!(w.longest_s, 3);
        assert!(h
            .status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("disk full")));
        // A later poll with a shorter wait (another session) keeps the earlier start.
        state.record(L, Ok(stuck(0)));
        let (since, _) = state
            .node(L)
            .and_then(|h| h.writes_stuck(Instant::now()))
            .expect("stuck");
        assert!(since >= Duration::from_secs(3), "{since:?}");
        state.record(L, Ok(leader_obs()));
        assert!(state
            .node(L)
            .and_then(|h| h.writes_stuck(Instant::now()))
            .is_none());
        assert_eq!(state.node(L).and_then(|h| h.writes_stuck_since), None);
    }

    fn fail() -> Result<Observation, PollError> {
        Err(PollError::Connect("refused".into()))
    }

    #[test]
    fn initial_topology_marks_leader_and_includes_it() {
        let specs = vec![ClusterSpec {
            name: "c1".into(),
            nodes: vec![R.into()],
            leader: Some(L.into()),
        }];
        let t = initial_topology(&specs);
        let c = t.cluster("c1").expect("c1");
        assert_eq!(c.leader.as_deref(), Some(L));
        assert_eq!(c.node(L).map(|n| n.role), Some(Role::Leader));
        assert_eq!(c.node(R).map(|n| n.role), Some(Role::Replica));
        assert!(c.nodes.iter().all(|n| n.state == NodeState::Unknown));
    }

    #[test]
    fn failed_polls_go_suspect_then_down_and_recover() {
        // (polls so far, expected state)
        let table = [
            (vec![true], NodeState::Up),
            (vec![true, false], NodeState::Suspect),
            (vec![true, false, false], NodeState::Suspect),
            (vec![true, false, false, false], NodeState::Down),
            (vec![false, false, false, false, true], NodeState::Up),
            (vec![false, false, false, true, false], NodeState::Suspect),
        ];
        for (polls, expected) in table {
            let mut state = MonitorState::new(&spec(Some(L)), 3);
            for ok in &polls {
                state.record(L, if *ok { Ok(leader_obs()) } else { fail() });
            }
            let got = state.node(L).expect("node").status.state;
            assert_eq!(got, expected, "after polls {polls:?}");
        }
    }

    #[test]
    fn apply_sets_roles_and_replica_fields_and_reports_changes() {
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 3);
        let mut t = initial_topology(&specs);
        assert!(!state.apply(&mut t), "nothing polled, nothing changed");
        state.record(L, Ok(leader_obs()));
        state.record(R, Ok(replica_obs(Some(0))));
        assert!(state.apply(&mut t));
        let c = t.cluster("c1").expect("c1");
        let r = c.node(R).expect("replica");
        assert_eq!(
            (r.role, r.state, r.lag_seconds, r.io_running, r.sql_running),
            (
                Role::Replica,
                NodeState::Up,
                Some(0),
                Some(true),
                Some(true)
            )
        );
        assert_eq!(
            c.node(L).map(|n| (n.role, n.read_only)),
            Some((Role::Leader, Some(false)))
        );
        assert_eq!(c.epoch, 1);
        assert!(!state.apply(&mut t), "same observations: no change");
        state.record(R, fail());
        assert!(state.apply(&mut t));
        let r = t.cluster("c1").and_then(|c| c.node(R)).expect("replica");
        assert_eq!(
            (r.state, r.role, r.lag_seconds),
            (NodeState::Suspect, Role::Replica, Some(0))
        );
    }

    #[test]
    fn replication_errors_are_reported() {
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 3);
        let mut obs = replica_obs(None);
        if let Some(r) = obs.replication.as_mut() {
            r.sql_running = false;
            r.last_sql_error = Some("Duplicate entry".into());
        }
        state.record(R, Ok(obs));
        let s = &state.node(R).expect("replica").status;
        assert_eq!(s.sql_running, Some(false));
        assert_eq!(s.last_error.as_deref(), Some("SQL: Duplicate entry"));
    }

    #[test]
    fn leaderless_cluster_gets_the_only_writable_non_replicating_node() {
        struct Case {
            l: Option<Result<Observation, PollError>>,
            r: Option<Result<Observation, PollError>>,
            leader: Option<&'static str>,
        }
        let writable_replicating = {
            let mut o = replica_obs(Some(0));
            o.read_only = false;
            o
        };
        let cases = [
            // The obvious case.
            Case {
                l: Some(Ok(leader_obs())),
                r: Some(Ok(replica_obs(Some(0)))),
                leader: Some(L),
            },
            // The replica has not been heard from yet: it might be writable too.
            Case {
                l: Some(Ok(leader_obs())),
                r: None,
                leader: None,
            },
            // Unreachable but polled: fine.
            Case {
                l: Some(Ok(leader_obs())),
                r: Some(fail()),
                leader: Some(L),
            },
            // Two writable, non-replicating nodes: ambiguous.
            Case {
                l: Some(Ok(leader_obs())),
                r: Some(Ok(leader_obs())),
                leader: None,
            },
            // Writable but replicating does not count.
            Case {
                l: Some(Ok(writable_replicating.clone())),
                r: Some(Ok(replica_obs(None))),
                leader: None,
            },
            // Nobody writable.
            Case {
                l: Some(Ok(replica_obs(None))),
                r: Some(Ok(replica_obs(None))),
                leader: None,
            },
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let specs = spec(None);
            let mut state = MonitorState::new(&specs, 3);
            if let Some(res) = case.l {
                state.record(L, res);
            }
            if let Some(res) = case.r {
                state.record(R, res);
            }
            let mut t = initial_topology(&specs);
            state.apply(&mut t);
            let c = t.cluster("c1").expect("c1");
            assert_eq!(c.leader.as_deref(), case.leader, "case {i}");
            let expected_epoch = if case.leader.is_some() { 2 } else { 1 };
            assert_eq!(c.epoch, expected_epoch, "case {i}");
        }
    }

    #[test]
    fn leader_is_never_moved_by_the_monitor() {
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 1);
        state.record(L, fail());
        state.record(R, Ok(leader_obs()));
        let mut t = initial_topology(&specs);
        state.apply(&mut t);
        let c = t.cluster("c1").expect("c1");
        assert_eq!((c.leader.as_deref(), c.epoch), (Some(L), 1));
        assert_eq!(
            c.node(L).map(|n| (n.role, n.state)),
            Some((Role::Leader, NodeState::Down))
        );
        assert_eq!(c.node(R).map(|n| n.role), Some(Role::Unknown));
    }

    #[test]
    fn a_configured_leader_that_replicates_from_another_node_is_replaced_at_start() {
        // (L's observation, R's observation, leader and epoch after apply)
        let l_replica_of_r = {
            let mut o = replica_obs(Some(0));
            o.server_id = 1;
            if let Some(r) = o.replication.as_mut() {
                r.source = R.into();
            }
            o
        };
        let l_replica_of_elsewhere = {
            let mut o = l_replica_of_r.clone();
            if let Some(r) = o.replication.as_mut() {
                r.source = "10.0.0.9:3306".into();
            }
            o
        };
        let r_leader = {
            let mut o = leader_obs();
            o.server_id = 2;
            o
        };
        let cases = [
            // Leadership moved while the process was down: R leads.
            (Ok(l_replica_of_r.clone()), Ok(r_leader.clone()), R, 2),
            // L replicates from outside the cluster: left alone.
            (Ok(l_replica_of_elsewhere), Ok(r_leader.clone()), L, 1),
            // Nobody else is an obvious leader: left alone.
            (Ok(l_replica_of_r.clone()), Ok(replica_obs(None)), L, 1),
            // The other node was not reached: it might not be the leader.
            (Ok(l_replica_of_r.clone()), fail(), L, 1),
            // The normal case.
            (Ok(leader_obs()), Ok(replica_obs(Some(0))), L, 1),
        ];
        for (i, (l, r, leader, epoch)) in cases.into_iter().enumerate() {
            let specs = spec(Some(L));
            let mut state = MonitorState::new(&specs, 3);
            state.record(L, l);
            state.record(R, r);
            let mut t = initial_topology(&specs);
            state.apply(&mut t);
            let c = t.cluster("c1").expect("c1");
            assert_eq!(
                (c.leader.as_deref(), c.epoch),
                (Some(leader), epoch),
                "case {i}"
            );
        }
        // Once this process has published a new epoch, it is never second-guessed.
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 3);
        let mut t = initial_topology(&specs);
        state.apply(&mut t);
        t.clusters.get_mut("c1").expect("c1").epoch = 2;
        state.record(L, Ok(l_replica_of_r.clone()));
        state.record(R, Ok(r_leader.clone()));
        state.apply(&mut t);
        let c = t.cluster("c1").expect("c1");
        assert_eq!((c.leader.as_deref(), c.epoch), (Some(L), 2));
        // An epoch kept from an earlier run is where this process starts: the configured
        // (kept) leader found replicating from another node is still replaced.
        let mut state = MonitorState::new(&specs, 3);
        let mut t = initial_topology(&specs);
        t.clusters.get_mut("c1").expect("c1").epoch = 5;
        state.record(L, Ok(l_replica_of_r));
        state.record(R, Ok(r_leader));
        state.apply(&mut t);
        let c = t.cluster("c1").expect("c1");
        assert_eq!((c.leader.as_deref(), c.epoch), (Some(R), 6));
    }

    #[test]
    fn apply_keeps_the_topologys_flags() {
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 3);
        let mut t = initial_topology(&specs);
        let flags = shard_map::NodeFlags {
            preferred: true,
            ..Default::default()
        };
        if let Some(n) = t.clusters.get_mut("c1").and_then(|c| c.node_mut(R)) {
            n.flags = flags;
        }
        state.record(R, Ok(replica_obs(Some(0))));
        assert!(state.apply(&mut t));
        let r = t.cluster("c1").and_then(|c| c.node(R)).expect("replica");
        assert_eq!(r.flags, flags);
        assert_eq!(r.state, NodeState::Up);
    }

    #[test]
    fn last_known_lag_survives_null_and_failures_are_timed() {
        let specs = spec(Some(L));
        let mut state = MonitorState::new(&specs, 3);
        state.record(R, Ok(replica_obs(Some(7))));
        state.record(R, Ok(replica_obs(None)));
        let h = state.node(R).expect("replica");
        assert_eq!((h.status.lag_seconds, h.last_known_lag), (None, Some(7)));
        assert!(h.last_ok_at.is_some() && h.failing_since.is_none());
        state.record(R, fail());
        let since = state
            .node(R)
            .and_then(|h| h.failing_since)
            .expect("failing");
        state.record(R, fail());
        assert_eq!(state.node(R).and_then(|h| h.failing_since), Some(since));
        state.record(R, Ok(replica_obs(Some(1))));
        assert!(state.node(R).is_some_and(|h| h.failing_since.is_none()));
    }
}
