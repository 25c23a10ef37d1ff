//! The pure model shared by switchyard's orchestrator and router: clusters, nodes, roles,
//! leadership epochs, keyspaces, and the versioned topology snapshot through which the
//! orchestrator tells every router session where each cluster's leader is.
//!
//! Nothing here does I/O; snapshots are immutable and swapped atomically.

pub mod keyspace;
pub mod topology;

pub use keyspace::{Keyspace, KeyspaceError, ShardMap};
pub use topology::{
    ClusterPhase, ClusterStatus, NodeFlags, NodeState, NodeStatus, Role, Topology, TopologyHandle,
};
