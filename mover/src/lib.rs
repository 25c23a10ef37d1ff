//! switchyard's data mover: what resharding and MoveTables are made of.
//!
//! - [`binlog`]: a MariaDB binary log client (GTID dump protocol) yielding whole source
//!   transactions with decoded row images.
//! - [`stream`]: one stream (source database → one target), copied from consistent
//!   snapshots and followed through the binary log, each source transaction applied once with
//!   its position ([`state`]); [`apply`] is how one row change reaches the target.
//! - [`diff`]: source and target compared at one consistent position.
//! - [`plan`]: a reshard or MoveTables request checked against the shard map, as streams.
//! - [`schema`], [`value`]: what a moving table must be, and its keys and filters.
//!
//! It depends on `shard-map` (key ranges, vindexes, GTID positions) and talks to servers
//! with `mysql_async`; the workflow that moves traffic lives in the binary.

use std::time::Duration;

use mysql_async::{Conn, OptsBuilder};

pub mod apply;
pub mod binlog;
pub mod diff;
pub mod error;
pub mod plan;
pub mod schema;
mod sql;
pub mod state;
pub mod stream;
pub mod value;

pub use error::MoverError;

/// A server the mover reads from or writes to.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    pub user: String,
    pub password: String,
    /// The bound on connecting and on each statement's answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new connection (bounded by `timeout`).
    pub async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        let (host, port) = match self.addr.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(3306)),
            None => (self.addr.clone(), 3306),
        };
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            // Affected rows count matched rows: an UPDATE that changes nothing still says 1,
            // which the stream checks.
            .client_found_rows(true)
            .wait_timeout(Some(28_800));
        match tokio::time::timeout(self.timeout, Conn::new(opts)).await {
            Ok(r) => r,
            Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {} timed out", self.addr),
                ),
            ))),
        }
    }
}
