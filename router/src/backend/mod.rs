//! Backend side: connections to MariaDB/MySQL servers in the router's own protocol code,
//! pooled per server, and the raw relay of their responses to clients.

pub mod aggregate;
pub mod conn;
pub mod merge;
pub mod pool;
pub mod relay;
pub mod scatter;
pub mod values;

pub use conn::{BackendConn, BackendStmt, ConnState, ConnectOptions, StmtKey, TcpOptions};
pub use pool::{PoolKey, PoolOptions, PooledConn, Pools};
pub use relay::{relay, RelayError, RelayMode, RelayOutcome};

use crate::protocol::ServerError;

/// What went wrong talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("can't connect to backend {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("timed out connecting to backend {0}")]
    ConnectTimeout(String),
    #[error("backend {0} closed the connection")]
    Closed(String),
    #[error("i/o error with backend {0}: {1}")]
    Io(String, String),
    #[error("TLS with backend {0}: {1}")]
    Tls(String, String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Server(ServerError),
    #[error("all {max} connections to backend {addr} are busy (waited {waited_ms} ms)")]
    PoolExhausted {
        addr: String,
        max: usize,
        waited_ms: u64,
    },
}

impl BackendError {
    /// True when the connection itself failed (as opposed to the server refusing a statement).
    pub fn is_connection_failure(&self) -> bool {
        !matches!(
            self,
            BackendError::Server(_) | BackendError::PoolExhausted { .. }
        )
    }
}
