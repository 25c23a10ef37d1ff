//! What can stop a data move, each with a message an operator can act on.

use std::time::Duration;

/// A data move's failure.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// A server answered an error, or the connection to it failed.
    #[error("{what}: {error}")]
    Sql { what: String, error: String },
    /// A step did not finish within its bound.
    #[error("{0}: no answer within the time allowed")]
    Timeout(String),
    /// The source sent no event, not even a heartbeat, for this long.
    #[error("the source sent nothing, not even a heartbeat, for {0:?}")]
    SourceSilent(Duration),
    /// The source closed the binary log stream.
    #[error("the source closed the binary log stream")]
    StreamEnded,
    /// An event that cannot be read as documented.
    #[error("binary log: {0}")]
    Binlog(String),
    /// A precondition of the move does not hold (server settings, table definitions).
    #[error("{0}")]
    Refused(String),
    /// The source did something the move cannot follow (a DDL on a moving table): the stream
    /// stopped before it, and the operator decides.
    #[error("stopped at {gtid}: {reason}")]
    Stopped { gtid: String, reason: String },
    /// The stream's state on the target is not what this stream expects.
    #[error("stream state: {0}")]
    State(String),
    /// A copied or streamed row broke the rules of the move.
    #[error("{0}")]
    Data(String),
}

impl MoverError {
    pub(crate) fn sql(what: &str, error: impl std::fmt::Display) -> MoverError {
        MoverError::Sql {
            what: what.to_owned(),
            error: error.to_string(),
        }
    }

    /// A failed write to a target: a server error that a new attempt (a new connection, a
    /// new leader) may not meet is [`MoverError::Data`] (a duplicate key, a missing column);
    /// lost connections, deadlocks, lock waits and a read-only former leader stay transient.
    pub(crate) fn apply(what: &str, error: mysql_async::Error) -> MoverError {
        /// Lock wait timeout, deadlock, read-only, interrupted, shutdown, connection killed.
        const TRANSIENT: [u16; 6] = [1205, 1213, 1290, 1317, 1053, 1927];
        match &error {
            mysql_async::Error::Server(e) if !TRANSIENT.contains(&e.code) => {
                MoverError::Data(format!("{what}: {error}"))
            }
            _ => MoverError::sql(what, error),
        }
    }

    /// Whether trying again later (a new connection, a new leader) may succeed: lost
    /// connections and silence do, refusals and stops do not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MoverError::Sql { .. }
                | MoverError::Timeout(_)
                | MoverError::SourceSilent(_)
                | MoverError::StreamEnded
        )
    }
}
