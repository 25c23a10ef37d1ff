//! switchyard's orchestrator: watches replicated MariaDB clusters and publishes what it sees
//! as topology snapshots for the routers, detects a dead leader, fails over, runs planned
//! switchovers, fences and rejoins old leaders; also provisions local clusters for the
//! sandbox and the tests.
//!
//! - [`coord`]: leadership and the routers' holds when several processes share the work.
//! - [`manager`]: the [`Orchestrator`]: detection loop, failover, switchover, rejoin, rebuild,
//!   hooks.
//! - [`monitor`]: polls every node and publishes node health, roles and replication state.
//! - [`gtid`]: MariaDB GTID positions and how they compare.
//! - [`detect`]: is the leader dead? (pure, over the monitor's view) and anti-flapping.
//! - [`elect`]: which replica to promote (pure, over fresh facts about each replica).
//! - [`provision`]: starts clusters of local `mariadbd` processes wired with GTID replication.

pub mod coord;
pub mod detect;
pub mod elect;
/// GTID positions (their home is `shard-map`, which the data mover shares).
pub use shard_map::gtid;
pub mod manager;
pub mod monitor;
pub mod provision;
pub mod spawn;
pub mod tls;

pub use coord::{Coordinator, Solo};
pub use manager::{
    Event, FailoverMode, Hooks, OperationReport, OperationStats, Orchestrator, OrchestratorError,
    OrchestratorSettings, RebuildMethod, RebuildReport, WriteHold,
};
pub use monitor::{ClusterSpec, MonitorConfig};
pub use provision::{
    LocalCluster, LocalClusters, LocalNode, ProvisionError, ProvisionSpec, ServerSsl,
};
