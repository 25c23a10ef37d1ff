//! The pure model shared by switchyard's orchestrator and router: clusters, nodes, roles,
//! leadership epochs, the shard map, and the versioned topology snapshot through which the
//! orchestrator tells every router session where each cluster's leader is.
//!
//! - [`topology`]: clusters, nodes and leaders, published as atomically swapped snapshots.
//! - [`keyspace`]: keyspaces, shards and tables as written in the config or shard map JSON.
//! - [`keyrange`]: Vitess-style key ranges (`-80`, `80-`) and their coverage check.
//! - [`vindex`]: how a column value becomes a keyspace id (`hash`, `numeric`, `list`).
//! - [`shardmap`]: the indexed, immutable [`ShardMap`] the router looks up per statement, and
//!   the naming of shard databases.
//! - [`diff`]: what changed between two shard maps.
//! - [`gtid`]: MariaDB GTID positions, as elections, rejoins and the data mover compare them.
//! - [`store`]: versioned shard map snapshots and [`FileStore`].
//! - [`etcd`]: the topology store of the multi-process mode (etcd); with [`store`], the
//!   crate's only I/O.

pub mod diff;
pub mod error;
pub mod etcd;
pub mod failpoint;
pub mod gtid;
pub mod keyrange;
pub mod keyspace;
pub mod shardmap;
pub mod sql;
pub mod store;
pub mod topology;
mod validate;
pub mod vindex;

pub use diff::diff;
pub use error::{KeyspaceError, ShardMapError};
pub use keyrange::{KeyRange, KeyRangeError};
pub use keyspace::{Keyspace, ShardSpec, TableKindName, TableSpec};
pub use shardmap::{
    shard_database_name, KeyspaceMap, ShardLookup, ShardMap, ShardTarget, ShardedTable, TableKind,
};
pub use store::{FileStore, MemoryStore, ShardMapStore, StoreError, VersionedShardMap};
pub use topology::{
    ClusterPhase, ClusterStatus, NodeFlags, NodeState, NodeStatus, Role, Topology, TopologyHandle,
};
pub use vindex::{KeyValue, Placement, Unplaceable, Vindex, VindexKind};

#[cfg(test)]
mod tests;
