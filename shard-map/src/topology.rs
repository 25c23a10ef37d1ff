//! The topology snapshot: every cluster's nodes, their roles and health, the current leader and
//! its epoch. The orchestrator publishes a new snapshot; routers and the admin API read the
//! latest one without locks and can wait for the next one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What a node does in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Replica,
    /// Not yet known, or a node that is neither (a fenced old leader, say).
    Unknown,
}

/// A node's health as the monitor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Reachable and answering.
    Up,
    /// Missed one or more polls but not yet declared down.
    Suspect,
    /// Declared unreachable.
    Down,
    /// Not polled yet.
    Unknown,
}

/// One server of a cluster as the monitor last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `host:port`, the node's identity.
    pub addr: String,
    pub role: Role,
    pub state: NodeState,
    /// `@@global.read_only`, when known.
    pub read_only: Option<bool>,
    /// Replication lag in seconds (`Seconds_Behind_Master`); `None` for a leader or when unknown.
    pub lag_seconds: Option<u64>,
    pub gtid_current_pos: String,
    pub gtid_slave_pos: String,
    pub gtid_binlog_pos: String,
    /// Replica IO / SQL threads running (`None` for a node that is not replicating).
    pub io_running: Option<bool>,
    pub sql_running: Option<bool>,
    /// The last replication error, if any.
    pub last_error: Option<String>,
    /// Operator flags that steer elections.
    #[serde(default)]
    pub flags: NodeFlags,
}

/// Operator flags on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFlags {
    /// Under maintenance: never elected, not failed over when it goes away.
    pub maintenance: bool,
    /// Wins an election among equally up-to-date candidates.
    pub preferred: bool,
    /// Ignored by elections entirely.
    pub ignored: bool,
}

impl NodeStatus {
    /// A node nobody has polled yet.
    pub fn new(addr: impl Into<String>, role: Role) -> Self {
        NodeStatus {
            addr: addr.into(),
            role,
            state: NodeState::Unknown,
            read_only: None,
            lag_seconds: None,
            gtid_current_pos: String::new(),
            gtid_slave_pos: String::new(),
            gtid_binlog_pos: String::new(),
            io_running: None,
            sql_running: None,
            last_error: None,
            flags: NodeFlags::default(),
        }
    }
}

/// Whether a cluster's leader takes statements now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterPhase {
    /// Statements go to the leader.
    Serving,
    /// A switchover or failover is under way: routers hold new statements for this cluster
    /// until a snapshot with a higher epoch (or `Serving` again) arrives.
    Held,
    /// Rows are changing place (a move's write cutover) on the same leader: routers hold new
    /// statements for this cluster, while transactions already open there go on until they
    /// end (or the orchestrator ends them).
    Draining,
}

impl ClusterPhase {
    /// Whether routers hold new statements for the cluster.
    pub fn holds(self) -> bool {
        self != ClusterPhase::Serving
    }
}

/// One replicated cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    /// `host:port` of the current leader, if there is one.
    pub leader: Option<String>,
    /// Leadership epoch: bumped by every switchover and failover.
    pub epoch: u64,
    pub phase: ClusterPhase,
    pub nodes: Vec<NodeStatus>,
}

impl ClusterStatus {
    /// A cluster whose nodes are known but not yet polled.
    pub fn new(name: impl Into<String>, leader: Option<String>, nodes: Vec<NodeStatus>) -> Self {
        ClusterStatus {
            name: name.into(),
            leader,
            epoch: 1,
            phase: ClusterPhase::Serving,
            nodes,
        }
    }

    /// The node with this address.
    pub fn node(&self, addr: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.addr == addr)
    }

    /// Mutable access to the node with this address.
    pub fn node_mut(&mut self, addr: &str) -> Option<&mut NodeStatus> {
        self.nodes.iter_mut().find(|n| n.addr == addr)
    }

    /// Replicas that are up, replicating, and at most `max_lag` seconds behind.
    pub fn fresh_replicas(&self, max_lag: u64) -> impl Iterator<Item = &NodeStatus> {
        self.nodes.iter().filter(move |n| {
            n.role == Role::Replica
                && n.state == NodeState::Up
                && n.sql_running == Some(true)
                && n.io_running == Some(true)
                && n.lag_seconds.is_some_and(|l| l <= max_lag)
        })
    }
}

/// A versioned, immutable view of every cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Bumped by every publish.
    pub version: u64,
    pub clusters: BTreeMap<String, ClusterStatus>,
}

impl Topology {
    pub fn cluster(&self, name: &str) -> Option<&ClusterStatus> {
        self.clusters.get(name)
    }
}

/// The shared, atomically swapped current topology and a change signal.
///
/// Readers call [`TopologyHandle::load`] on the hot path (no lock); waiters use
/// [`TopologyHandle::subscribe`] to be woken by each publish.
#[derive(Debug, Clone)]
pub struct TopologyHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: ArcSwap<Topology>,
    changed: watch::Sender<u64>,
    /// Serialises publishers so that versions increase without gaps or lost updates.
    publish: std::sync::Mutex<()>,
}

impl TopologyHandle {
    pub fn new(initial: Topology) -> Self {
        let (changed, _) = watch::channel(initial.version);
        TopologyHandle {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(initial),
                changed,
                publish: std::sync::Mutex::new(()),
            }),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Topology> {
        self.inner.current.load_full()
    }

    /// Applies `change` to a copy of the current snapshot and publishes it with the next version.
    /// Returns the published snapshot.
    pub fn publish(&self, change: impl FnOnce(&mut Topology)) -> Arc<Topology> {
        let _guard = self
            .inner
            .publish
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Topology::clone(&self.inner.current.load());
        change(&mut next);
        next.version += 1;
        let next = Arc::new(next);
        self.inner.current.store(next.clone());
        self.inner.changed.send_replace(next.version);
        next
    }

    /// A receiver that is marked changed by every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_cluster() -> Topology {
        let mut t = Topology::default();
        t.clusters.insert(
            "c1".into(),
            ClusterStatus::new(
                "c1",
                Some("127.0.0.1:1".into()),
                vec![
                    NodeStatus::new("127.0.0.1:1", Role::Leader),
                    NodeStatus::new("127.0.0.1:2", Role::Replica),
                ],
            ),
        );
        t
    }

    #[tokio::test]
    async fn publish_bumps_version_and_wakes_subscribers() {
        let handle = TopologyHandle::new(one_cluster());
        let mut rx = handle.subscribe();
        let published = handle.publish(|t| {
            let c = t.clusters.get_mut("c1").unwrap();
            c.epoch += 1;
            c.leader = Some("127.0.0.1:2".into());
        });
        assert_eq!(published.version, 1);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 1);
        let now = handle.load();
        assert_eq!(now.cluster("c1").unwrap().epoch, 2);
        assert_eq!(
            now.cluster("c1").unwrap().leader.as_deref(),
            Some("127.0.0.1:2")
        );
    }

    #[test]
    fn fresh_replicas_filters_on_state_threads_and_lag() {
        let mut t = one_cluster();
        let c = t.clusters.get_mut("c1").unwrap();
        assert_eq!(
            c.fresh_replicas(5).count(),
            0,
            "unpolled replica is not fresh"
        );
        let r = c.node_mut("127.0.0.1:2").unwrap();
        r.state = NodeState::Up;
        r.io_running = Some(true);
        r.sql_running = Some(true);
        r.lag_seconds = Some(3);
        assert_eq!(c.fresh_replicas(5).count(), 1);
        assert_eq!(c.fresh_replicas(2).count(), 0);
    }
}
