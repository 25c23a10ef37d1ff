//! switchyard's router: applications connect to it exactly as to MySQL/MariaDB, and it sends
//! each statement to the current leader (or a fresh replica) of the right cluster.
//!
//! Modules, in the order a statement meets them:
//! - [`server`]: accept loop, connection limit, one task per client, panic isolation.
//! - [`session`]: the connection phase and command loop of one client; session state kept on
//!   pooled backend connections, pinning where a session must stay on one; prepared statements.
//! - [`classify`]: what a statement is (sqlparser, with a lexer fallback), cached by
//!   normalised text.
//! - [`shard`]: which shard(s) a statement on a sharded table goes to, or why it is refused;
//!   [`shard::gather`] rewrites reads whose shards' results must be merged.
//! - [`context`]: what sessions share; [`context::RouterContext::route`] picks the backend.
//! - [`deposed`]: cuts every connection to a leader the moment it is replaced.
//! - [`backend`]: our own backend connections, their pools, and the raw relay of responses;
//!   [`backend::aggregate`] merges gathered results (groups, aggregates, HAVING, ORDER BY).
//! - [`protocol`]: packet framing and the few packets the router writes itself.
//! - [`tls`]: TLS to clients and backends (rustls), and the plain-or-TLS stream halves.
//! - [`error`]: router errors and what the client sees for each.
//! - [`sequence`]: global AUTO_INCREMENT ids for sharded tables.
//! - [`sessions`]: the registry of live client sessions (`SHOW SESSIONS` on the admin port).
//! - [`xa`]: distributed transactions: xids, the commit decision log, recovery, failpoints.
//! - [`config`]: the `[router]` settings.
//! - [`rates`]: per-cluster statement and error rates from sampled counters.

pub mod backend;
pub mod classify;
pub mod config;
pub mod context;
pub mod deposed;
pub mod error;
pub mod protocol;
pub mod rates;
pub mod sequence;
pub mod server;
pub mod session;
pub mod sessions;
pub mod shard;
pub mod tls;
pub mod xa;

pub use config::{RouterConfig, Secret, UserConfig};
pub use context::RouterContext;
pub use server::run;

/// The hash of the maps every statement looks up (pools, prepared statements, counters).
pub type FastHash = foldhash::fast::RandomState;
