//! The orchestrator: runs the monitor, and after each of its rounds decides, for every
//! cluster, whether the leader is dead ([`crate::detect`]), fails over when it is (automatic
//! mode), and brings back nodes that are out of place (a recovered old leader, a replica still
//! pointing at a dead one). It also runs the operator's switchovers, failovers and rebuilds
//! (a node kept out, re-seeded from a copy of another).
//!
//! Only one operation (failover, switchover, rejoin, rebuild) runs per cluster at a time, under the
//! cluster's async mutex; detection skips a cluster whose mutex is taken. Every step is an
//! [`Event`] in the cluster's bounded ring and in the operation's [`OperationReport`].
//!
//! - `failover`, `switchover`, `rejoin`, `rebuild`: the workflows;
//! - `node`: the orchestrator's own connections and shared statements;
//! - `hooks`: operator scripts; `settings`: the policy.

mod failover;
mod hold;
mod hooks;
mod node;
mod rebuild;
mod rejoin;
mod resume;
mod rewind;
mod settings;
mod switchover;
mod xa;

pub use hold::WriteHold;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shard_map::{ClusterPhase, ClusterStatus, NodeFlags, NodeState, Role, TopologyHandle};
use tokio::sync::{mpsc, oneshot, watch, OwnedMutexGuard};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::coord::Coordinator;
use crate::detect::{detect, FailoverHistory, LeaderView, ReplicaView, Verdict, WriteLimits};
use crate::elect::{Candidate, LeaderFacts};
use crate::gtid::GtidPos;
use crate::monitor::{self, ClusterSpec, MonitorConfig, MonitorLink, MonitorState};
use hooks::{run_hook, HookCall};
use node::{Access, NodeConn, NodeSnapshot, ReplicationLogin};
pub use rebuild::RebuildReport;
pub use resume::Resumed;
pub use settings::{FailoverMode, Hooks, OrchestratorSettings, RebuildMethod};

/// How many events each cluster keeps.
const EVENTS_KEPT: usize = 500;
/// How long shutdown waits for a running operation to finish before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// After a failed (not refused) rejoin attempt, the node is left alone this long.
const REJOIN_RETRY: Duration = Duration::from_secs(10);

/// Something the orchestrator did or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub cluster: String,
    /// `failover.start`, `failover.done`, `failover.refused`, `failover.failed`,
    /// `switchover.step`, `switchover.done`, `switchover.refused`, `switchover.undo`,
    /// `leader.suspect`, `leader.dead`, `rejoin.done`, `rejoin.refused`, `hook.failed`,
    /// `rebuild.start`, `rebuild.step`, `rebuild.done`, `rebuild.refused`, `rebuild.failed`,
    /// `orchestrator.leading`, `orchestrator.deposed` (several processes over etcd), ...
    pub kind: String,
    pub message: String,
}

/// The outcome of a failover or switchover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationReport {
    pub cluster: String,
    pub old_leader: String,
    pub new_leader: String,
    /// The new leadership epoch.
    pub epoch: u64,
    /// Every event of the operation, in order.
    pub steps: Vec<Event>,
    pub duration_ms: u64,
}

/// Why an orchestrator call failed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("no cluster named {0:?}")]
    UnknownCluster(String),
    #[error("no node {addr} in cluster {cluster}")]
    UnknownNode { cluster: String, addr: String },
    #[error("another operation is running on cluster {0}")]
    Busy(String),
    /// Several processes share the work and this one does not lead (why, and who does).
    #[error("not the leading orchestrator: {0}")]
    NotLeader(String),
    /// An operation on a node that may not be the leader (a rebuild) was asked of the leader.
    #[error(
        "{addr} is the leader of {cluster}: a leader is not rebuilt (switch over to another \
         node first)"
    )]
    IsLeader { cluster: String, addr: String },
    /// A check failed; nothing was changed (or every change was undone).
    #[error("refused: {0}")]
    Refused(String),
    #[error("{addr}: {what} failed: {source}")]
    Sql {
        addr: String,
        /// The step, not the statement (statements may carry passwords).
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{addr}: {what} timed out after {} ms", after.as_millis())]
    Timeout {
        addr: String,
        what: String,
        after: Duration,
    },
    #[error("invalid node address {0:?} (expected host:port)")]
    BadAddress(String),
    #[error("unexpected server answer: {0}")]
    Unexpected(String),
    /// Copying one node's data into another failed (the dump or the load).
    #[error("copying {from} into {to} failed: {why}")]
    Copy {
        from: String,
        to: String,
        why: String,
    },
}

impl OrchestratorError {
    /// The connection to the node broke (closed by the server, reset): the statement may not
    /// have run, and a new connection may succeed.
    pub(crate) fn is_lost_connection(&self) -> bool {
        matches!(
            self,
            OrchestratorError::Sql {
                source: mysql_async::Error::Io(_)
                    | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed),
                ..
            }
        )
    }

    pub(crate) fn sql(addr: &str, what: &str, source: mysql_async::Error) -> Self {
        OrchestratorError::Sql {
            addr: addr.to_owned(),
            what: what.to_owned(),
            source,
        }
    }
}

/// Per-cluster control: the operation mutex, the event ring, detection memory.
struct ClusterCtl {
    spec: ClusterSpec,
    op: Arc<tokio::sync::Mutex<()>>,
    events: Mutex<VecDeque<Event>>,
    memory: Mutex<Memory>,
    stats: Mutex<OperationStats>,
}

/// Completed operations of one cluster, for metrics (kept apart from the bounded event ring,
/// so that the counts only ever grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OperationStats {
    /// Failovers that promoted a new leader (automatic and manual).
    pub failovers: u64,
    /// Switchovers that promoted a new leader.
    pub switchovers: u64,
    /// Duration of the last completed switchover, in milliseconds.
    pub last_switchover_ms: Option<u64>,
    /// Duration of the last completed failover, in milliseconds.
    pub last_failover_ms: Option<u64>,
}

/// What detection remembers between rounds.
#[derive(Debug, Default)]
struct Memory {
    history: FailoverHistory,
    /// Events already logged for the current leader trouble (one of each per episode).
    suspect_logged: bool,
    refusal_logged: bool,
    dead_logged: bool,
    /// Nodes whose rejoin was refused, or whose rebuild failed: left alone until they go
    /// down and come back, or are rebuilt.
    kept_out: BTreeSet<String>,
    /// Nodes whose rejoin failed, and when to try again.
    retry_after: BTreeMap<String, Instant>,
    /// An automatic failover that failed before it changed anything is tried again from
    /// this time on.
    failover_retry_at: Option<Instant>,
    /// When the last operation ended: observations older than that are not acted on.
    settled_at: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Watches clusters and moves their leadership. See the module docs.
pub struct Orchestrator {
    monitor: MonitorConfig,
    /// The policy; replaced whole by a configuration reload, read per decision.
    settings: arc_swap::ArcSwap<OrchestratorSettings>,
    access: Access,
    login: ReplicationLogin,
    topology: TopologyHandle,
    specs: Vec<ClusterSpec>,
    clusters: BTreeMap<String, ClusterCtl>,
    /// Out-of-turn polls for the running monitor (a new channel for each run).
    poll_tx: Mutex<mpsc::UnboundedSender<String>>,
    /// Set while [`Orchestrator::run`] runs.
    running: std::sync::atomic::AtomicBool,
    /// The monitor's latest state (last known lag, the leader's last position).
    latest: Mutex<Option<Arc<MonitorState>>>,
    /// Leadership and the routers' holds; [`crate::Solo`] unless set.
    coordinator: arc_swap::ArcSwap<Arc<dyn Coordinator>>,
}

/// Passwords are left out.
impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("monitor", &self.monitor)
            .field("settings", &self.settings)
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator for `clusters`, publishing to `topology`; replicas it repoints log in
    /// to their leader as `repl_user`. Nothing runs until [`Orchestrator::run`].
    pub fn new(
        monitor: MonitorConfig,
        settings: OrchestratorSettings,
        clusters: Vec<ClusterSpec>,
        topology: TopologyHandle,
        repl_user: String,
        repl_password: String,
    ) -> Arc<Self> {
        let (poll_tx, _) = mpsc::unbounded_channel();
        let ctls = clusters
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    ClusterCtl {
                        spec: spec.clone(),
                        op: Arc::new(tokio::sync::Mutex::new(())),
                        events: Mutex::new(VecDeque::new()),
                        stats: Mutex::new(OperationStats::default()),
                        memory: Mutex::new(Memory::default()),
                    },
                )
            })
            .collect();
        let login = ReplicationLogin {
            user: repl_user,
            password: repl_password,
            connect_retry_s: settings.master_connect_retry_s,
            heartbeat_ms: settings.master_heartbeat_ms,
            ssl: monitor.tls.replication_ssl(),
        };
        Arc::new(Orchestrator {
            access: Access::from_monitor(&monitor),
            monitor,
            settings: arc_swap::ArcSwap::from_pointee(settings),
            login,
            topology,
            specs: clusters,
            clusters: ctls,
            poll_tx: Mutex::new(poll_tx),
            running: std::sync::atomic::AtomicBool::new(false),
            latest: Mutex::new(None),
            coordinator: arc_swap::ArcSwap::from_pointee(Arc::new(crate::Solo) as _),
        })
    }

    /// Takes part in a deployment of several processes through `coordinator` (see
    /// [`crate::coord`]).
    pub fn set_coordinator(&self, coordinator: Arc<dyn Coordinator>) {
        self.coordinator.store(Arc::new(coordinator));
    }

    /// Fails unless this orchestrator leads (asking the store).
    async fn ensure_leader(&self) -> Result<(), OrchestratorError> {
        let c = self.coordinator.load_full();
        c.ensure_leader()
            .await
            .map_err(OrchestratorError::NotLeader)
    }

    /// Records the change of leader about to be made (see [`Coordinator::begin`]); fails
    /// unless this orchestrator leads.
    async fn begin_change(
        &self,
        cluster: &str,
        op: &str,
        old: &str,
        new: &str,
        epoch: u64,
    ) -> Result<(), OrchestratorError> {
        let intent = crate::coord::Intent {
            cluster: cluster.to_owned(),
            op: op.to_owned(),
            old_leader: old.to_owned(),
            new_leader: new.to_owned(),
            epoch,
            by: String::new(),
            started_ms: now_ms(),
        };
        let c = self.coordinator.load_full();
        c.begin(&intent).await.map_err(OrchestratorError::NotLeader)
    }

    /// Fails unless this orchestrator leads, as far as it knows without asking (for changes
    /// that only touch the published topology).
    pub fn leads(&self) -> Result<(), OrchestratorError> {
        self.coordinator
            .load_full()
            .leads()
            .map_err(OrchestratorError::NotLeader)
    }

    /// After `Held` is published: waits until every router holds (see
    /// [`Coordinator::hold`]).
    async fn await_hold(&self, log: &mut OpLog<'_>, epoch: u64) -> Result<(), OrchestratorError> {
        let c = self.coordinator.load_full();
        match c.hold(log.cluster, epoch).await {
            Ok(()) => Ok(()),
            Err(why) => Err(OrchestratorError::Refused(format!(
                "the routers' hold is not confirmed: {why}"
            ))),
        }
    }

    /// After a new leader is published: tells every router (a failure is a warning: the
    /// routers keep holding until an orchestrator publishes).
    async fn announce(&self, log: &mut OpLog<'_>, kind: &str) {
        let c = self.coordinator.load_full();
        if let Err(why) = c.publish(log.cluster).await {
            log.step(kind, format!("the routers could not be told yet: {why}"));
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<OrchestratorSettings> {
        self.settings.load_full()
    }

    /// Puts new settings in force for the next decisions (an operation under way finishes
    /// with the ones it started with where it already read them). The replicas' connection
    /// settings (`master_connect_retry_s`, `master_heartbeat_ms`) are kept from the start.
    pub fn set_settings(&self, settings: OrchestratorSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Runs the monitor and, after each of its rounds, detection and rejoin for every
    /// cluster, until `shutdown` completes. An operation still running then is given
    /// 30 s to finish (it ends with its cluster `Serving`). It may run again after it
    /// returned (an orchestrator that leads again), never twice at once.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        use std::sync::atomic::Ordering;
        if self.running.swap(true, Ordering::AcqRel) {
            tracing::error!("Orchestrator::run called while it runs; the second call does nothing");
            return;
        }
        let (poll_tx, poll_now) = mpsc::unbounded_channel();
        *lock(&self.poll_tx) = poll_tx;
        let first = Arc::new(MonitorState::new(&self.specs, self.monitor.down_after));
        let (updates, mut rounds) = watch::channel(first);
        let (stop_monitor, monitor_stopped) = oneshot::channel::<()>();
        let monitor = tokio::spawn(monitor::run_with(
            self.monitor.clone(),
            self.specs.clone(),
            self.topology.clone(),
            async {
                let _ = monitor_stopped.await;
            },
            Some(MonitorLink { updates, poll_now }),
        ));
        let mut ops = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                changed = rounds.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = rounds.borrow_and_update().clone();
                    *lock(&self.latest) = Some(state.clone());
                    self.evaluate(&state, &mut ops);
                }
                Some(_) = ops.join_next(), if !ops.is_empty() => {}
            }
        }
        let _ = stop_monitor.send(());
        let _ = monitor.await;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while ops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("an operation did not finish in time and was aborted");
            ops.shutdown().await;
        }
        self.running.store(false, Ordering::Release);
    }

    /// A planned switchover to `to` (or to the best replica). See the `switchover` module.
    pub async fn switchover(
        &self,
        cluster: &str,
        to: Option<&str>,
    ) -> Result<OperationReport, OrchestratorError> {
        let ctl = self.ctl(cluster)?;
        if let Some(to) = to {
            if !ctl.spec.all_nodes().iter().any(|a| a == to) {
                return Err(OrchestratorError::UnknownNode {
                    cluster: cluster.into(),
                    addr: to.into(),
                });
            }
        }
        let guard = self.try_op(cluster)?;
        self.run_switchover(cluster, to, guard).await
    }

    /// A failover an operator asked for: refused while the leader is reachable or a replica
    /// still replicates from it. Not subject to the failover limits (they guard automatic
    /// failovers), but counted by them.
    pub async fn failover(&self, cluster: &str) -> Result<OperationReport, OrchestratorError> {
        let guard = self.try_op(cluster)?;
        self.run_failover(cluster, guard, None, false).await
    }

    /// Sets a node's operator flags, reflected in the published topology at once.
    pub fn set_node_flags(
        &self,
        cluster: &str,
        addr: &str,
        flags: NodeFlags,
    ) -> Result<(), OrchestratorError> {
        let ctl = self.ctl(cluster)?;
        self.leads()?;
        if !ctl.spec.all_nodes().iter().any(|a| a == addr) {
            return Err(OrchestratorError::UnknownNode {
                cluster: cluster.into(),
                addr: addr.into(),
            });
        }
        self.topology.publish(|t| {
            if let Some(n) = t.clusters.get_mut(cluster).and_then(|c| c.node_mut(addr)) {
                n.flags = flags;
            }
        });
        self.event(
            cluster,
            "flags.set",
            format!(
                "{addr}: maintenance={} preferred={} ignored={}",
                flags.maintenance, flags.preferred, flags.ignored
            ),
        );
        Ok(())
    }

    /// When the cluster's recent failovers (those the anti-flapping limits count) started,
    /// in milliseconds since the Unix epoch.
    pub fn failover_history_ms(&self, cluster: &str) -> Vec<u64> {
        self.memory(cluster)
            .map(|m| m.history.to_unix_ms(Instant::now(), now_ms()))
            .unwrap_or_default()
    }

    /// Puts back the recent failovers a previous run kept (see
    /// [`Orchestrator::failover_history_ms`]).
    pub fn restore_failover_history(&self, cluster: &str, started_ms: &[u64]) {
        if let Some(mut m) = self.memory(cluster) {
            m.history = FailoverHistory::from_unix_ms(started_ms, Instant::now(), now_ms());
        }
    }

    /// Forgets a cluster's recent failovers, so that the limits allow the next one.
    pub fn reset_failover_limits(&self, cluster: &str) -> Result<(), OrchestratorError> {
        let ctl = self.ctl(cluster)?;
        self.leads()?;
        {
            let mut m = lock(&ctl.memory);
            m.history.reset();
            m.refusal_logged = false;
        }
        // Kept state follows topology changes: one, unchanged, so that the reset is kept.
        self.topology.publish(|_| {});
        self.event(
            cluster,
            "limits.reset",
            "failover limits reset by the operator",
        );
        Ok(())
    }

    /// The cluster's recent events, oldest first.
    pub fn events(&self, cluster: &str) -> Result<Vec<Event>, OrchestratorError> {
        Ok(lock(&self.ctl(cluster)?.events).iter().cloned().collect())
    }

    /// The nodes of a cluster kept out: read-only, not replicating, not rejoined automatically
    /// (they hold transactions the leader lacks, or their rebuild failed). A rebuild brings
    /// them back; so does a restart, when they no longer diverge.
    pub fn kept_out(&self, cluster: &str) -> Result<Vec<String>, OrchestratorError> {
        Ok(lock(&self.ctl(cluster)?.memory)
            .kept_out
            .iter()
            .cloned()
            .collect())
    }

    /// Completed failovers and switchovers of a cluster and their last durations.
    pub fn operation_stats(&self, cluster: &str) -> Result<OperationStats, OrchestratorError> {
        Ok(*lock(&self.ctl(cluster)?.stats))
    }

    /// Records an event about `cluster` from outside the orchestrator (the binary's
    /// integrations with routing layers), next to the orchestrator's own.
    pub fn record_event(&self, cluster: &str, kind: &str, message: impl Into<String>) {
        self.event(cluster, kind, message);
    }

    /// A router saw a connection to `addr` fail: poll it now. Only a signal: the verdict is
    /// still the detector's.
    pub fn report_failure(&self, addr: &str) {
        self.poll_now(addr);
    }

    /// Asks the monitor to poll `addr` out of turn (nothing happens before `run`).
    fn poll_now(&self, addr: &str) {
        let _ = lock(&self.poll_tx).send(addr.to_owned());
    }

    fn ctl(&self, cluster: &str) -> Result<&ClusterCtl, OrchestratorError> {
        self.clusters
            .get(cluster)
            .ok_or_else(|| OrchestratorError::UnknownCluster(cluster.into()))
    }

    fn try_op(&self, cluster: &str) -> Result<OwnedMutexGuard<()>, OrchestratorError> {
        self.ctl(cluster)?
            .op
            .clone()
            .try_lock_owned()
            .map_err(|_| OrchestratorError::Busy(cluster.into()))
    }

    /// Records an event about this orchestrator itself (it took or lost the lead, say) on
    /// every cluster it watches: what an operator reading any cluster's events must know.
    pub fn note_everywhere(&self, kind: &str, message: &str) {
        for spec in &self.specs {
            self.event(&spec.name, kind, message);
        }
    }

    /// Records an event in the cluster's ring (and the log) and returns it.
    fn event(&self, cluster: &str, kind: &str, message: impl Into<String>) -> Event {
        let event = Event {
            at_ms: now_ms(),
            cluster: cluster.to_owned(),
            kind: kind.to_owned(),
            message: message.into(),
        };
        tracing::info!(cluster, kind, message = %event.message, "orchestrator event");
        if let Some(ctl) = self.clusters.get(cluster) {
            let mut ring = lock(&ctl.events);
            if ring.len() >= EVENTS_KEPT {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        event
    }

    fn memory(&self, cluster: &str) -> Option<MutexGuard<'_, Memory>> {
        self.clusters.get(cluster).map(|c| lock(&c.memory))
    }

    /// The cluster as currently published.
    fn cluster_status(&self, cluster: &str) -> Result<ClusterStatus, OrchestratorError> {
        self.topology
            .load()
            .cluster(cluster)
            .cloned()
            .ok_or_else(|| OrchestratorError::UnknownCluster(cluster.into()))
    }

    /// Publishes `phase` for the cluster, provided `leader` still leads it.
    fn publish_phase(&self, cluster: &str, leader: &str, phase: ClusterPhase) {
        self.topology.publish(|t| {
            if let Some(c) = t.clusters.get_mut(cluster) {
                if c.leader.as_deref() == Some(leader) {
                    c.phase = phase;
                }
            }
        });
    }

    /// Publishes `new` as the leader with the next epoch, `Serving`; the old leader gets
    /// `old_role`, other nodes that claimed leadership become replicas. Returns the epoch.
    fn publish_leader(&self, cluster: &str, new: &str, old: &str, old_role: Role) -> u64 {
        let published = self.topology.publish(|t| {
            if let Some(c) = t.clusters.get_mut(cluster) {
                c.epoch += 1;
                c.leader = Some(new.to_owned());
                c.phase = ClusterPhase::Serving;
                for n in &mut c.nodes {
                    n.role = if n.addr == new {
                        Role::Leader
                    } else if n.addr == old {
                        old_role
                    } else if n.role == Role::Leader {
                        Role::Replica
                    } else {
                        n.role
                    };
                }
            }
        });
        published.cluster(cluster).map_or(0, |c| c.epoch)
    }

    /// Publishes one node's role (the monitor keeps it right from then on).
    fn publish_role(&self, cluster: &str, addr: &str, role: Role) {
        self.topology.publish(|t| {
            if let Some(n) = t.clusters.get_mut(cluster).and_then(|c| c.node_mut(addr)) {
                n.role = role;
            }
        });
    }

    /// What is known of the leader's history: from the monitor's last look at it, else the
    /// domain the replicas' positions share (or 0).
    fn leader_facts(&self, leader: &str, replicas: &[&NodeSnapshot]) -> LeaderFacts {
        let seen = lock(&self.latest)
            .as_ref()
            .and_then(|s| s.node(leader))
            .and_then(|h| h.last_observation.clone());
        match seen {
            Some(obs) => LeaderFacts {
                domain: obs.gtid_domain_id,
                server_id: Some(obs.server_id),
                binlog: GtidPos::parse_lossy(&obs.gtid_binlog_pos),
            },
            None => {
                let domains: BTreeSet<u32> = replicas
                    .iter()
                    .flat_map(|s| s.received().domains().collect::<Vec<_>>())
                    .collect();
                LeaderFacts {
                    domain: if domains.len() == 1 {
                        domains.into_iter().next().unwrap_or(0)
                    } else {
                        0
                    },
                    server_id: None,
                    binlog: GtidPos::default(),
                }
            }
        }
    }

    /// Whether the monitor last saw `addr`'s replication stream receive nothing for too long
    /// (see [`crate::monitor::NodeHealth::stream_stalled`]).
    fn stream_stalled(&self, addr: &str) -> bool {
        lock(&self.latest)
            .as_ref()
            .and_then(|s| s.node(addr))
            .is_some_and(|h| h.stream_stalled(Instant::now()).is_some())
    }

    /// The election's view of a replica.
    fn candidate(&self, cs: &ClusterStatus, addr: &str, snap: &NodeSnapshot) -> Candidate {
        let last_known_lag = lock(&self.latest)
            .as_ref()
            .and_then(|s| s.node(addr))
            .and_then(|h| h.last_known_lag);
        let rep = snap.replication.as_ref();
        Candidate {
            addr: addr.to_owned(),
            flags: cs.node(addr).map(|n| n.flags).unwrap_or_default(),
            replicating: rep.is_some(),
            io_running: rep.is_some_and(|r| r.io_running),
            sql_running: rep.is_some_and(|r| r.sql_running),
            sql_error: rep
                .filter(|r| !r.sql_running)
                .and_then(|r| r.last_sql_error.clone()),
            lag_seconds: rep.and_then(|r| r.lag_seconds).or(last_known_lag),
            received: snap.received(),
            binlog: GtidPos::parse_lossy(&snap.gtid_binlog_pos),
            setting_problems: snap.leader_setting_problems(),
        }
    }

    /// Connects to every node of the cluster but `leader` at once and reads its snapshot.
    async fn others(&self, ctl: &ClusterCtl, leader: &str) -> Others {
        let addrs: Vec<String> = ctl
            .spec
            .all_nodes()
            .into_iter()
            .filter(|a| a != leader)
            .collect();
        let reads = addrs.iter().map(|addr| async move {
            let result = async {
                let mut conn = NodeConn::connect(addr, &self.access).await?;
                let snap = conn.snapshot().await?;
                Ok::<_, OrchestratorError>((conn, snap))
            }
            .await;
            (addr.clone(), result)
        });
        let mut others = Others::default();
        for (addr, read) in futures::future::join_all(reads).await {
            match read {
                Ok((conn, snap)) => {
                    others.conns.insert(addr.clone(), conn);
                    others.snaps.insert(addr, snap);
                }
                Err(e) => others.unreachable.push((addr, e.to_string())),
            }
        }
        others
    }

    /// After a monitor round: detection and rejoin for every cluster not busy.
    fn evaluate(self: &Arc<Self>, state: &MonitorState, ops: &mut JoinSet<()>) {
        let topology = self.topology.load();
        for (name, ctl) in &self.clusters {
            let Some(cs) = topology.cluster(name) else {
                continue;
            };
            {
                let mut m = lock(&ctl.memory);
                m.kept_out.retain(|addr| {
                    state
                        .node(addr)
                        .is_none_or(|h| h.status.state != NodeState::Down)
                });
            }
            let Ok(guard) = ctl.op.clone().try_lock_owned() else {
                continue;
            };
            let Some(leader) = cs.leader.clone() else {
                continue;
            };
            if cs.phase.holds() {
                // Nobody holds the cluster: an operation ended without releasing the routers.
                self.publish_phase(name, &leader, ClusterPhase::Serving);
                self.event(
                    name,
                    "hold.released",
                    format!("{name} was held with no operation running: serving again on {leader}"),
                );
                continue;
            }
            let (leader_view, replicas) = views(&ctl.spec, &leader, state);
            let settings = self.settings.load_full();
            let ms = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
            let limits = WriteLimits {
                disk_full: ms(settings.disk_full_failover_ms),
                commit_stall: ms(settings.commit_stall_failover_ms),
            };
            let verdict = detect(&leader_view, &replicas, self.monitor.down_after, limits);
            let (why, alive) = match verdict {
                Verdict::Unknown | Verdict::Failing => continue,
                Verdict::Healthy => {
                    {
                        let mut m = lock(&ctl.memory);
                        m.suspect_logged = false;
                        m.refusal_logged = false;
                        m.dead_logged = false;
                    }
                    if let Some(target) = self.rejoin_target(ctl, cs, &leader, state) {
                        let this = self.clone();
                        let cluster = name.clone();
                        ops.spawn(async move {
                            this.run_rejoin(&cluster, &target, guard).await;
                        });
                    }
                    continue;
                }
                Verdict::Suspect(why) => {
                    self.event_once(
                        name,
                        |m| &mut m.suspect_logged,
                        "leader.suspect",
                        &format!("{why}: not failing over"),
                    );
                    continue;
                }
                Verdict::Dead(why) => (why, false),
                Verdict::CannotWrite(why) => (why, true),
            };
            match self.settings.load_full().failover {
                FailoverMode::Manual => self.event_once(
                    name,
                    |m| &mut m.dead_logged,
                    "leader.dead",
                    &format!("{why}; failover mode is manual: waiting for an operator"),
                ),
                FailoverMode::Automatic => {
                    let retry_at = lock(&ctl.memory).failover_retry_at;
                    if retry_at.is_some_and(|t| Instant::now() < t) {
                        continue;
                    }
                    let allowed = {
                        let m = lock(&ctl.memory);
                        m.history
                            .check(Instant::now(), &self.settings.load_full().limits())
                    };
                    match allowed {
                        Ok(()) => {
                            let this = self.clone();
                            let cluster = name.clone();
                            ops.spawn(async move {
                                let _ = this.run_failover(&cluster, guard, Some(why), alive).await;
                            });
                        }
                        Err(refusal) => self.refuse_once(name, &format!("{why}; {refusal}")),
                    }
                }
            }
        }
    }

    /// Logs `failover.refused` unless it was already logged for this leader's trouble.
    fn refuse_once(&self, cluster: &str, why: &str) {
        self.event_once(cluster, |m| &mut m.refusal_logged, "failover.refused", why);
    }

    /// Logs an event unless the `logged` flag says it already was for this leader's trouble
    /// (the flags are cleared when the leader is healthy again).
    fn event_once(
        &self,
        cluster: &str,
        logged: fn(&mut Memory) -> &mut bool,
        kind: &str,
        message: &str,
    ) {
        let Some(mut m) = self.memory(cluster) else {
            return;
        };
        let flag = logged(&mut m);
        if !*flag {
            *flag = true;
            drop(m);
            self.event(cluster, kind, message);
        }
    }

    /// Notes that an operation ended: rounds polled before now are not acted on, and every
    /// node of the cluster is polled again at once.
    fn settle(&self, cluster: &str) {
        if let Some(mut m) = self.memory(cluster) {
            m.settled_at = Some(Instant::now());
        }
        if let Some(ctl) = self.clusters.get(cluster) {
            for addr in ctl.spec.all_nodes() {
                self.poll_now(&addr);
            }
        }
    }

    /// Runs a hook if configured; a failure becomes a `hook.failed` event.
    async fn hook(&self, log: &mut OpLog<'_>, event: &str, old_leader: &str, new_leader: &str) {
        let settings = self.settings.load_full();
        let Some(path) = settings
            .hooks
            .all()
            .find(|(n, _)| *n == event)
            .map(|(_, p)| p)
        else {
            return;
        };
        let call = HookCall {
            event,
            cluster: log.cluster,
            old_leader,
            new_leader,
        };
        let limit = Duration::from_millis(self.settings.load_full().hook_timeout_ms);
        match run_hook(path, call, limit).await {
            Ok(()) => log.step(
                "hook.done",
                format!("{event}: {} succeeded", path.display()),
            ),
            Err(why) => log.step("hook.failed", format!("{event}: {why}")),
        }
    }
}

/// The detector's view of a cluster, from the monitor's state.
fn views(spec: &ClusterSpec, leader: &str, state: &MonitorState) -> (LeaderView, Vec<ReplicaView>) {
    let leader_view = match state.node(leader) {
        Some(h) => LeaderView {
            addr: leader.to_owned(),
            state: h.status.state,
            failures: h.consecutive_failures,
            failing_since: h.failing_since,
            writes_stuck: h
                .writes_stuck(Instant::now())
                .map(|(waited, w)| (waited, w.describe(), w.disk_full)),
        },
        None => LeaderView {
            addr: leader.to_owned(),
            state: NodeState::Unknown,
            failures: 0,
            failing_since: None,
            writes_stuck: None,
        },
    };
    let now = Instant::now();
    let replicas = spec
        .all_nodes()
        .into_iter()
        .filter(|a| a != leader)
        .filter_map(|a| state.node(&a).map(|h| (a, h)))
        .map(|(addr, h)| ReplicaView {
            addr,
            up: h.status.state == NodeState::Up,
            last_ok_at: h.last_ok_at,
            replication: h
                .last_observation
                .as_ref()
                .and_then(|o| o.replication.clone()),
            stalled: h.stream_stalled(now),
        })
        .collect();
    (leader_view, replicas)
}

/// The nodes other than the leader, as an operation found them.
#[derive(Default)]
struct Others {
    conns: BTreeMap<String, NodeConn>,
    snaps: BTreeMap<String, NodeSnapshot>,
    /// Address and why it could not be read.
    unreachable: Vec<(String, String)>,
}

impl Others {
    fn unreachable_list(&self) -> String {
        self.unreachable
            .iter()
            .map(|(a, e)| format!("{a} ({e})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The events of one operation, recorded in the cluster's ring as they happen.
struct OpLog<'a> {
    orch: &'a Orchestrator,
    cluster: &'a str,
    steps: Vec<Event>,
    started: Instant,
}

impl<'a> OpLog<'a> {
    fn new(orch: &'a Orchestrator, cluster: &'a str) -> Self {
        OpLog {
            orch,
            cluster,
            steps: Vec::new(),
            started: Instant::now(),
        }
    }

    fn step(&mut self, kind: &str, message: impl Into<String>) {
        let e = self.orch.event(self.cluster, kind, message);
        self.steps.push(e);
    }

    /// The events and the duration, for an operation that is not a change of leader (not
    /// counted in the failover and switchover statistics).
    fn finish(self) -> (Vec<Event>, u64) {
        (self.steps, self.started.elapsed().as_millis() as u64)
    }

    fn report(self, old_leader: &str, new_leader: &str, epoch: u64) -> OperationReport {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        if let Some(ctl) = self.orch.clusters.get(self.cluster) {
            let mut stats = lock(&ctl.stats);
            let switchover = self
                .steps
                .first()
                .is_some_and(|e| e.kind.starts_with("switchover."));
            if switchover {
                stats.switchovers += 1;
                stats.last_switchover_ms = Some(duration_ms);
            } else {
                stats.failovers += 1;
                stats.last_failover_ms = Some(duration_ms);
            }
        }
        OperationReport {
            cluster: self.cluster.to_owned(),
            old_leader: old_leader.to_owned(),
            new_leader: new_leader.to_owned(),
            epoch,
            steps: self.steps,
            duration_ms,
        }
    }
}
