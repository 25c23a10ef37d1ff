//! Router errors and the one place that decides what a client sees for each: backend server
//! errors pass through with their own code, SQLSTATE and message; the router's own errors get
//! a specific code and a message that says what happened and what to do.

use crate::backend::BackendError;
use crate::protocol::ServerError;

/// Something that failed a client's command.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("backend connection lost during the statement")]
    LostDuringQuery { addr: String },
    #[error("the transaction's backend connection was lost; the transaction was rolled back")]
    TransactionLost { addr: String },
    /// The connection a session was pinned to died while a statement ran on it.
    #[error("the session's backend connection was lost during a statement")]
    PinnedLostDuringQuery { addr: String },
    #[error("the transaction's leader changed; it must be restarted")]
    LeaderChanged { cluster: String },
    /// The shard map changed while a statement waited, before any of it ran: the session
    /// plans it again (and answers this only when the map keeps changing).
    #[error("the shard map changed while the statement waited")]
    ShardMapChanged,
    /// The shard map changed while a statement waited, after part of it was sent on: it
    /// fails (its parts are undone as any failed statement's) rather than run on a stale plan.
    #[error("the shard map changed while the statement waited, after part of it ran")]
    ShardMapChangedMidway,
    /// A distributed transaction was rolled back under the client (why).
    #[error("the distributed transaction was rolled back: {0}")]
    XaRolledBack(String),
    /// A distributed COMMIT whose decision could not be confirmed; recovery settles it.
    #[error("distributed COMMIT outcome unknown: {0}")]
    XaOutcomeUnknown(String),
    #[error("statement held too long while cluster `{cluster}` changed leader")]
    HoldTimeout { cluster: String, waited_ms: u64 },
    #[error("too many statements held")]
    HoldFull { cluster: String },
    /// This router cannot renew its lease in the topology store: it may have missed a change
    /// of leader, so it sends no write until the store answers again.
    #[error("writes to cluster `{cluster}` fenced: the topology store is unreachable")]
    Fenced { cluster: String, waited_ms: u64 },
    #[error("cluster `{cluster}` has no leader")]
    NoLeader { cluster: String },
    #[error("unknown cluster `{cluster}`")]
    UnknownCluster { cluster: String },
    #[error("unknown prepared statement {id} for {command}")]
    UnknownStatement { id: u32, command: &'static str },
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("packet too large")]
    PacketTooLarge,
    #[error("access denied for {user}")]
    AccessDenied {
        user: String,
        host: String,
        using_password: bool,
    },
    #[error("too many connections")]
    TooManyConnections,
    #[error("multi-statements are switched off for this connection")]
    MultiStatementsOff,
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("plain-text login refused: require_secure_transport is on")]
    SecureTransportRequired,
    /// `KILL n` of no session of this router.
    #[error("unknown thread id {0}")]
    UnknownThread(u64),
    /// `KILL n` of another user's session without the privilege to.
    #[error("not owner of thread {0}")]
    KillDenied(u64),
    /// The session killed its own connection.
    #[error("connection killed")]
    ConnectionKilled,
    /// The session killed its own statement (`KILL QUERY CONNECTION_ID()`).
    #[error("query interrupted")]
    QueryInterrupted,
}

/// The code of every "can't reach the server" error (see [`RouterError::to_client`]).
pub const ER_CONNECT_TO_FOREIGN_DATA_SOURCE: u16 = 1429;

impl RouterError {
    /// The error packet fields a client sees.
    pub fn to_client(&self) -> ServerError {
        let (code, state, message) = match self {
            RouterError::Backend(BackendError::Server(e)) => return e.clone(),
            RouterError::Backend(BackendError::PoolExhausted {
                addr,
                max,
                waited_ms,
            }) => (
                1040,
                "08004",
                format!(
                    "Too many connections: all {max} router connections to backend {addr} are \
                     busy after waiting {waited_ms} ms; raise router.pool_size or retry"
                ),
            ),
            // ER_CONNECT_TO_FOREIGN_DATA_SOURCE, as Spider and FederatedX report a remote
            // server they can't reach: a server-side code. libmariadb clients (the `mariadb`
            // CLI among them) show a client-side code such as 2003 in an error packet as
            // "2027 Received malformed packet", losing the message.
            RouterError::Backend(
                e @ (BackendError::Connect(..) | BackendError::ConnectTimeout(_)),
            ) => (
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                "HY000",
                format!("Can't connect to backend: {e}"),
            ),
            RouterError::Backend(BackendError::Tls(addr, why)) => (
                2026,
                "HY000",
                format!("SSL connection error: backend {addr}: {why}"),
            ),
            RouterError::Backend(e) => (2013, "HY000", format!("Lost connection to backend: {e}")),
            RouterError::LostDuringQuery { addr } => (
                2013,
                "HY000",
                format!("Lost connection to backend {addr} during query"),
            ),
            // ER_CONNECTION_KILLED, as the server tells a client whose connection it killed:
            // a server-side code, which every client library accepts in an error packet
            // (libmariadb turns the client-side 2013 into "malformed packet"), and the
            // session goes on, its transaction rolled back.
            RouterError::TransactionLost { addr } => (
                1927,
                "70100",
                format!(
                    "Connection was killed: the backend connection{} was lost during the \
                     transaction, which was rolled back; retry it",
                    if addr.is_empty() {
                        String::new()
                    } else {
                        format!(" to {addr}")
                    }
                ),
            ),
            // The server's own code for a connection killed under a running statement (its
            // outcome unknown), which libmariadb accepts where it refuses a client-side 2013.
            RouterError::PinnedLostDuringQuery { addr } => (
                1927,
                "70100",
                format!(
                    "Connection was killed: the backend connection to {addr} was lost while \
                     the statement ran; its outcome is unknown and the session's transaction, \
                     locks and temporary tables are gone"
                ),
            ),
            RouterError::XaRolledBack(why) => (
                1213,
                "40001",
                format!(
                    "Deadlock found when trying to get lock; try restarting transaction (the \
                     distributed transaction was rolled back: {why}; ROLLBACK and retry it)"
                ),
            ),
            RouterError::XaOutcomeUnknown(why) => (
                1180,
                "HY000",
                format!(
                    "Got error during COMMIT: the commit decision of a distributed transaction \
                     could not be confirmed ({why}); the router's recovery commits it if it \
                     was logged, else rolls it back"
                ),
            ),
            RouterError::LeaderChanged { cluster } => (
                1213,
                "40001",
                format!(
                    "Deadlock found when trying to get lock; try restarting transaction \
                     (cluster '{cluster}' changed leader during the transaction, which was \
                     rolled back)"
                ),
            ),
            RouterError::ShardMapChangedMidway => (
                1205,
                "HY000",
                "Lock wait timeout exceeded; try restarting transaction (the shard map changed \
                 while the statement waited for a hold, after part of it had been sent; the \
                 statement failed and what it did is undone)"
                    .to_owned(),
            ),
            RouterError::ShardMapChanged => (
                1213,
                "40001",
                "Deadlock found when trying to get lock; try restarting transaction (the shard \
                 map changed several times while the statement waited for a hold; nothing of \
                 it was run)"
                    .to_owned(),
            ),
            RouterError::HoldTimeout { cluster, waited_ms } => (
                1205,
                "HY000",
                format!(
                    "Lock wait timeout exceeded; try restarting transaction (the statement \
                     waited {waited_ms} ms for cluster '{cluster}' to finish changing leader)"
                ),
            ),
            RouterError::Fenced { cluster, waited_ms } => (
                1205,
                "HY000",
                format!(
                    "Lock wait timeout exceeded; try restarting transaction (this router lost \
                     contact with the topology store (etcd) for longer than its lease: it may \
                     not know cluster '{cluster}''s current leader, so it sends no write there \
                     until the store answers again; waited {waited_ms} ms; reads still run)"
                ),
            ),
            RouterError::HoldFull { cluster } => (
                1040,
                "08004",
                format!(
                    "Too many connections: too many statements already wait for cluster \
                     '{cluster}' to finish changing leader; raise router.hold_max_statements \
                     or retry"
                ),
            ),
            RouterError::NoLeader { cluster } => (
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                "HY000",
                format!("Can't connect to backend: cluster '{cluster}' has no leader right now"),
            ),
            RouterError::UnknownCluster { cluster } => (
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE,
                "HY000",
                format!("Can't connect to backend: cluster '{cluster}' is not configured"),
            ),
            RouterError::UnknownStatement { id, command } => (
                1243,
                "HY000",
                format!("Unknown prepared statement handler ({id}) given to {command}"),
            ),
            RouterError::UnknownCommand(c) => (1047, "08S01", format!("Unknown command {c:#04x}")),
            RouterError::Malformed(what) => (
                1835,
                "08S01",
                format!("Malformed communication packet: {what}"),
            ),
            RouterError::PacketTooLarge => (
                1153,
                "08S01",
                "Got a packet bigger than 'max_allowed_packet' bytes".into(),
            ),
            RouterError::AccessDenied {
                user,
                host,
                using_password,
            } => (
                1045,
                "28000",
                format!(
                    "Access denied for user '{user}'@'{host}' (using password: {})",
                    if *using_password { "YES" } else { "NO" }
                ),
            ),
            RouterError::TooManyConnections => (1040, "08004", "Too many connections".into()),
            RouterError::MultiStatementsOff => (
                1064,
                "42000",
                "You have an error in your SQL syntax: multi-statements are off for this \
                 connection (COM_SET_OPTION)"
                    .into(),
            ),
            RouterError::UnknownThread(id) => (1094, "HY000", format!("Unknown thread id: {id}")),
            RouterError::KillDenied(id) => {
                (1095, "HY000", format!("You are not owner of thread {id}"))
            }
            RouterError::ConnectionKilled => (1927, "70100", "Connection was killed".into()),
            RouterError::QueryInterrupted => {
                (1317, "70100", "Query execution was interrupted".into())
            }
            RouterError::NotSupported(what) => (
                1235,
                "42000",
                format!("This version of switchyard doesn't yet support '{what}'"),
            ),
            // ER_SECURE_TRANSPORT_REQUIRED, as MariaDB 11 sends it (MDEV-30178); 10.11 still
            // answers such logins with a bare 1045 "Access denied", which hides the reason.
            RouterError::SecureTransportRequired => (
                3159,
                "08004",
                "Connections using insecure transport are prohibited while \
                 --require_secure_transport=ON."
                    .into(),
            ),
        };
        ServerError {
            code,
            sqlstate: state.into(),
            message,
            raw: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_pass_through_untouched() {
        let e = ServerError {
            code: 1146,
            sqlstate: "42S02".into(),
            message: "Table 'db.t' doesn't exist".into(),
            raw: None,
        };
        assert_eq!(
            RouterError::Backend(BackendError::Server(e.clone())).to_client(),
            e
        );
    }

    #[test]
    fn router_errors_get_specific_codes() {
        let cases: Vec<(RouterError, u16, &str)> = vec![
            (
                RouterError::AccessDenied {
                    user: "u".into(),
                    host: "h".into(),
                    using_password: true,
                },
                1045,
                "28000",
            ),
            (RouterError::PacketTooLarge, 1153, "08S01"),
            (RouterError::UnknownCommand(0x20), 1047, "08S01"),
            (
                RouterError::UnknownStatement {
                    id: 9,
                    command: "mysqld_stmt_execute",
                },
                1243,
                "HY000",
            ),
            (RouterError::TooManyConnections, 1040, "08004"),
            (
                RouterError::LostDuringQuery { addr: "a".into() },
                2013,
                "HY000",
            ),
            (
                RouterError::TransactionLost { addr: "a".into() },
                1927,
                "70100",
            ),
            (
                RouterError::PinnedLostDuringQuery { addr: "a".into() },
                1927,
                "70100",
            ),
            (RouterError::NotSupported("x".into()), 1235, "42000"),
            (RouterError::SecureTransportRequired, 3159, "08004"),
            (RouterError::UnknownThread(5), 1094, "HY000"),
            (RouterError::KillDenied(5), 1095, "HY000"),
            (RouterError::ConnectionKilled, 1927, "70100"),
            (RouterError::QueryInterrupted, 1317, "70100"),
            (
                RouterError::Backend(BackendError::Tls("a:1".into(), "b".into())),
                2026,
                "HY000",
            ),
            (
                RouterError::Backend(BackendError::ConnectTimeout("a:1".into())),
                1429,
                "HY000",
            ),
            (
                RouterError::NoLeader {
                    cluster: "c1".into(),
                },
                1429,
                "HY000",
            ),
        ];
        for (err, code, state) in cases {
            let c = err.to_client();
            assert_eq!((c.code, c.sqlstate.as_str()), (code, state), "{err:?}");
            assert!(!c.message.is_empty());
        }
    }
}
