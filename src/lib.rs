//! switchyard: a MySQL/MariaDB router and replication orchestrator in one process.
//! This crate wires the `router`, `orchestrator` and `shard-map` crates together: the
//! configuration file, the admin API and its MySQL-protocol admin port, the sandbox, and the
//! process that runs them all.

pub mod acl;
pub mod admin;
pub mod admin_sql;
pub mod admin_tls;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod control;
pub mod distributed;
pub mod integrations;
pub mod metrics;
pub mod moves;
pub mod reload;
pub mod sandbox;
pub mod scenario;
pub mod state;

pub use app::App;
pub use config::Config;
