//! The orchestrator's own connections to nodes for its operations: every statement bounded in
//! time, errors naming the node and the step (never the statement: some carry passwords),
//! and the statements the workflows share (snapshot, GTID wait, promote, repoint, kill).

use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::time::{sleep, timeout, Instant};

use super::OrchestratorError;
use crate::gtid::GtidPos;
use crate::monitor::{replication_from_row, split_host_port, MonitorConfig, Replication};
use crate::tls::{self, ConnectError, NodeTls};
use shard_map::sql::quote;

/// How the orchestrator logs in and how long it waits.
#[derive(Clone)]
pub(crate) struct Access {
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    pub tls: NodeTls,
}

impl Access {
    pub fn from_monitor(cfg: &MonitorConfig) -> Access {
        Access {
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            connect_timeout: cfg.connect_timeout,
            query_timeout: cfg.query_timeout,
            tls: cfg.tls.clone(),
        }
    }
}

/// What `CHANGE MASTER` needs besides the leader's address.
#[derive(Clone)]
pub(crate) struct ReplicationLogin {
    pub user: String,
    pub password: String,
    pub connect_retry_s: u32,
    pub heartbeat_ms: u64,
    /// `MASTER_SSL=1`: replication over TLS.
    pub ssl: bool,
}

/// A node's state as one operation reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSnapshot {
    pub read_only: bool,
    pub server_id: u32,
    pub domain_id: u32,
    pub gtid_binlog_pos: String,
    pub gtid_slave_pos: String,
    pub log_bin: bool,
    pub gtid_strict_mode: bool,
    pub log_slave_updates: bool,
    pub semi_sync_master: bool,
    pub semi_sync_slave: bool,
    pub max_connections: u64,
    pub replication: Option<Replication>,
}

impl NodeSnapshot {
    /// Settings missing for this node to lead a cluster.
    pub fn leader_setting_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.log_bin {
            problems.push("log_bin is OFF".to_owned());
        }
        if !self.gtid_strict_mode {
            problems.push("gtid_strict_mode is OFF".to_owned());
        }
        if !self.log_slave_updates {
            problems.push("log_slave_updates is OFF".to_owned());
        }
        problems
    }

    /// How far it has received: `Gtid_IO_Pos`, or `gtid_slave_pos` in domains where that is
    /// further (a replica whose IO thread never ran has an empty `Gtid_IO_Pos`).
    pub fn received(&self) -> GtidPos {
        let io = self
            .replication
            .as_ref()
            .map(|r| GtidPos::parse_lossy(&r.gtid_io_pos))
            .unwrap_or_default();
        io.max_with(&GtidPos::parse_lossy(&self.gtid_slave_pos))
    }
}

/// One admin connection to one node.
pub(crate) struct NodeConn {
    pub addr: String,
    pub(super) conn: Conn,
    access: Access,
}

impl NodeConn {
    pub async fn connect(addr: &str, access: &Access) -> Result<NodeConn, OrchestratorError> {
        let (host, port) =
            split_host_port(addr).ok_or_else(|| OrchestratorError::BadAddress(addr.into()))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(access.user.clone()))
            .pass(Some(access.password.clone()))
            .prefer_socket(false);
        let conn = tls::connect(opts, &access.tls, access.connect_timeout)
            .await
            .map_err(|e| match e {
                ConnectError::Timeout => OrchestratorError::Timeout {
                    addr: addr.into(),
                    what: "connecting".into(),
                    after: access.connect_timeout,
                },
                ConnectError::Failed(e) => OrchestratorError::sql(addr, "connecting", e),
            })?;
        Ok(NodeConn {
            addr: addr.to_owned(),
            conn,
            access: access.clone(),
        })
    }

    /// Replaces the connection by a new one (session state, locks and all, are gone).
    pub async fn reconnect(&mut self) -> Result<(), OrchestratorError> {
        let fresh = NodeConn::connect(&self.addr, &self.access).await?;
        let stale = std::mem::replace(self, fresh);
        stale.disconnect().await;
        Ok(())
    }

    fn timed_out(&self, what: &str, after: Duration) -> OrchestratorError {
        OrchestratorError::Timeout {
            addr: self.addr.clone(),
            what: what.to_owned(),
            after,
        }
    }

    /// Runs statements (no result) within `limit`; `what` names the step in errors.
    pub async fn exec_within(
        &mut self,
        what: &str,
        sql: &str,
        limit: Duration,
    ) -> Result<(), OrchestratorError> {
        match timeout(limit, self.conn.query_drop(sql)).await {
            Err(_) => Err(self.timed_out(what, limit)),
            Ok(r) => r.map_err(|e| OrchestratorError::sql(&self.addr, what, e)),
        }
    }

    pub async fn exec(&mut self, what: &str, sql: &str) -> Result<(), OrchestratorError> {
        self.exec_within(what, sql, self.access.query_timeout).await
    }

    pub async fn rows<T: FromRow + Send + 'static>(
        &mut self,
        what: &str,
        sql: &str,
    ) -> Result<Vec<T>, OrchestratorError> {
        let limit = self.access.query_timeout;
        match timeout(limit, self.conn.query(sql)).await {
            Err(_) => Err(self.timed_out(what, limit)),
            Ok(r) => r.map_err(|e| OrchestratorError::sql(&self.addr, what, e)),
        }
    }

    pub async fn first<T: FromRow + Send + 'static>(
        &mut self,
        what: &str,
        sql: &str,
    ) -> Result<Option<T>, OrchestratorError> {
        Ok(self.rows(what, sql).await?.into_iter().next())
    }

    /// Everything an operation needs to know about the node, read now.
    pub async fn snapshot(&mut self) -> Result<NodeSnapshot, OrchestratorError> {
        type Vars = (u8, u32, u32, String, String, u8, u8, u8, u8, u8, u64);
        let vars: Vars = self
            .first(
                "reading variables",
                "SELECT @@global.read_only, @@global.server_id, @@global.gtid_domain_id, \
                 @@global.gtid_binlog_pos, @@global.gtid_slave_pos, @@global.log_bin, \
                 @@global.gtid_strict_mode, @@global.log_slave_updates, \
                 @@global.rpl_semi_sync_master_enabled, @@global.rpl_semi_sync_slave_enabled, \
                 @@global.max_connections",
            )
            .await?
            .ok_or_else(|| self.no_row("reading variables"))?;
        let status: Option<Row> = self.first("SHOW SLAVE STATUS", "SHOW SLAVE STATUS").await?;
        let replication = match status {
            Some(row) => Some(
                replication_from_row(&row)
                    .map_err(|e| OrchestratorError::Unexpected(format!("{}: {e}", self.addr)))?,
            ),
            None => None,
        };
        Ok(NodeSnapshot {
            read_only: vars.0 != 0,
            server_id: vars.1,
            domain_id: vars.2,
            gtid_binlog_pos: vars.3,
            gtid_slave_pos: vars.4,
            log_bin: vars.5 != 0,
            gtid_strict_mode: vars.6 != 0,
            log_slave_updates: vars.7 != 0,
            semi_sync_master: vars.8 != 0,
            semi_sync_slave: vars.9 != 0,
            max_connections: vars.10,
            replication,
        })
    }

    fn no_row(&self, what: &str) -> OrchestratorError {
        OrchestratorError::Unexpected(format!("{}: {what} returned no row", self.addr))
    }

    /// `@@global.gtid_binlog_pos`.
    pub async fn binlog_pos(&mut self) -> Result<String, OrchestratorError> {
        self.first("reading gtid_binlog_pos", "SELECT @@global.gtid_binlog_pos")
            .await?
            .ok_or_else(|| self.no_row("reading gtid_binlog_pos"))
    }

    /// Waits until the node has applied `pos` (`MASTER_GTID_WAIT`); `false` on timeout.
    pub async fn gtid_wait(
        &mut self,
        pos: &str,
        limit: Duration,
    ) -> Result<bool, OrchestratorError> {
        if GtidPos::parse_lossy(pos).is_empty() {
            return Ok(true);
        }
        let what = format!("waiting to apply {pos}");
        let sql = format!(
            "SELECT MASTER_GTID_WAIT({}, {:.3})",
            quote(pos),
            limit.as_secs_f64()
        );
        // The server enforces `limit`; ours is a backstop.
        let backstop = limit + self.access.query_timeout;
        let result: Option<Option<i64>> = match timeout(backstop, self.conn.query_first(sql)).await
        {
            Err(_) => return Err(self.timed_out(&what, backstop)),
            Ok(r) => r.map_err(|e| OrchestratorError::sql(&self.addr, &what, e))?,
        };
        Ok(result.flatten() == Some(0))
    }

    /// Makes a replica the leader: replication off for good, writable. Each step is tried
    /// once more on a new connection when the connection broke or timed out under it (the
    /// steps can be repeated), so that a promotion is not left half done by one lost packet.
    pub async fn promote(&mut self) -> Result<(), OrchestratorError> {
        self.stop_replication().await?;
        self.exec_again("removing the replication configuration", "RESET SLAVE ALL")
            .await?;
        self.exec_again("setting read_only = 0", "SET GLOBAL read_only = 0")
            .await
    }

    /// [`NodeConn::exec`], once more on a new connection if the first try timed out or lost
    /// its connection. Only for statements that may run twice.
    async fn exec_again(&mut self, what: &str, sql: &str) -> Result<(), OrchestratorError> {
        match self.exec(what, sql).await {
            Err(e) if e.is_lost_connection() || matches!(e, OrchestratorError::Timeout { .. }) => {
                tracing::warn!(node = %self.addr, error = %e, "trying once more");
                self.reconnect().await?;
                self.exec(what, sql).await
            }
            r => r,
        }
    }

    /// Kills the replication IO thread's connection, if one runs, and waits (up to
    /// [`IO_EXIT_WAIT`]) for the thread to end, before the `STOP SLAVE IO_THREAD` that ends
    /// it. Measured on MariaDB 10.11 against a source that hangs (frozen, or cut off without a
    /// reset): the killed thread stays blocked in its read (`Slave_IO_Running: Yes`) until
    /// `slave_net_timeout`, and a `STOP SLAVE IO_THREAD` then ends it in milliseconds; but
    /// sent within a few ms of the `KILL` it missed the thread's end about one time in three
    /// and waited out the server's 2 s re-signal loop (never once 100 ms after, in 15
    /// scenario runs). Returns how many were killed.
    pub async fn kill_io_thread(&mut self) -> Result<usize, OrchestratorError> {
        let ids: Vec<u64> = self
            .rows(
                "listing replication IO threads",
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'",
            )
            .await?;
        let mut killed = 0;
        for id in ids {
            if self.kill(id, "killing the replication IO thread").await? {
                killed += 1;
            }
        }
        if killed == 0 {
            return Ok(0);
        }
        // Watched through SHOW SLAVE STATUS, which needs no temporary table as the process
        // list does.
        let deadline = Instant::now() + IO_EXIT_WAIT;
        while Instant::now() < deadline && self.io_thread_running().await? {
            sleep(Duration::from_millis(10)).await;
        }
        Ok(killed)
    }

    /// Stops both replication threads without waiting on the source: the IO thread is killed
    /// first (see [`NodeConn::kill_io_thread`]). Should `STOP SLAVE` still not return in time,
    /// the threads are waited for on a new connection, up to [`STOP_WAIT`].
    pub async fn stop_replication(&mut self) -> Result<(), OrchestratorError> {
        self.kill_io_thread().await?;
        match self.exec("stopping replication", "STOP SLAVE").await {
            Err(OrchestratorError::Timeout { .. }) => {}
            Err(e) if e.is_lost_connection() => {}
            r => return r,
        }
        // The statement goes on in the server; this connection's state is unknown.
        self.reconnect().await?;
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if !self.replication_threads_running().await? {
                return self.exec("stopping replication", "STOP SLAVE").await;
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out("stopping replication", STOP_WAIT));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the IO thread only (the SQL thread goes on applying what was received), without
    /// waiting on the source. Returns how many IO threads had to be killed.
    pub async fn stop_io_thread(&mut self) -> Result<usize, OrchestratorError> {
        let killed = self.kill_io_thread().await?;
        self.exec_again("stopping the IO thread", "STOP SLAVE IO_THREAD")
            .await?;
        Ok(killed)
    }

    /// Whether either replication thread still runs (or is connecting).
    async fn replication_threads_running(&mut self) -> Result<bool, OrchestratorError> {
        self.threads_running(&["Slave_IO_Running", "Slave_SQL_Running"])
            .await
    }

    /// Whether the IO thread still runs (or is connecting).
    async fn io_thread_running(&mut self) -> Result<bool, OrchestratorError> {
        self.threads_running(&["Slave_IO_Running"]).await
    }

    /// Whether any of these `SHOW SLAVE STATUS` columns is not `No`.
    async fn threads_running(&mut self, columns: &[&str]) -> Result<bool, OrchestratorError> {
        let status: Option<Row> = self.first("SHOW SLAVE STATUS", "SHOW SLAVE STATUS").await?;
        Ok(status.is_some_and(|row| {
            columns
                .iter()
                .any(|c| row.get::<Option<String>, _>(*c).flatten().as_deref() != Some("No"))
        }))
    }

    /// `KILL CONNECTION id`; `false` when it had already ended.
    async fn kill(&mut self, id: u64, what: &str) -> Result<bool, OrchestratorError> {
        match self.exec(what, &format!("KILL CONNECTION {id}")).await {
            Ok(()) => Ok(true),
            Err(OrchestratorError::Sql {
                source: mysql_async::Error::Server(e),
                ..
            }) if e.code == ER_NO_SUCH_THREAD => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Points the node at `leader` and starts replicating from its own `gtid_slave_pos`
    /// (`from_binlog`: from its `gtid_binlog_pos` instead, for a node that was a leader).
    pub async fn replicate_from(
        &mut self,
        leader: &str,
        login: &ReplicationLogin,
        from_binlog: bool,
    ) -> Result<(), OrchestratorError> {
        let (host, port) =
            split_host_port(leader).ok_or_else(|| OrchestratorError::BadAddress(leader.into()))?;
        self.stop_replication().await?;
        if from_binlog {
            self.exec(
                "setting gtid_slave_pos to gtid_binlog_pos",
                "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos",
            )
            .await?;
        }
        self.exec(
            &format!("CHANGE MASTER to {leader}"),
            &change_master_sql(&host, port, login),
        )
        .await?;
        self.exec("starting replication", "START SLAVE").await
    }

    /// Throws its binlog away (`RESET MASTER`: its own transactions and their sequence
    /// numbers, which the leader's reuse) and replicates from `leader` from `from`.
    pub async fn replicate_afresh(
        &mut self,
        leader: &str,
        login: &ReplicationLogin,
        from: &crate::gtid::GtidPos,
    ) -> Result<(), OrchestratorError> {
        self.exec("resetting its binlog", "RESET MASTER").await?;
        self.exec(
            "setting gtid_slave_pos",
            &format!("SET GLOBAL gtid_slave_pos = {}", quote(&from.to_string())),
        )
        .await?;
        self.replicate_from(leader, login, false).await
    }

    /// Whether the replication IO thread runs and its source has begun sending (its first
    /// rotate event names the source's binlog file): a source that refuses the position asked
    /// for does so before sending anything.
    pub async fn receiving(&mut self) -> Result<bool, OrchestratorError> {
        let status: Option<Row> = self.first("SHOW SLAVE STATUS", "SHOW SLAVE STATUS").await?;
        Ok(status.is_some_and(|row| {
            let get = |name: &str| row.get::<Option<String>, _>(name).flatten();
            get("Slave_IO_Running").as_deref() == Some("Yes")
                && get("Master_Log_File").is_some_and(|f| !f.is_empty())
        }))
    }

    /// `SET GLOBAL read_only = 1`, killing on a second connection, as they appear, the
    /// sessions waiting for disk space to commit (see [`crate::monitor::StuckWrites`]): on a
    /// node whose disk is full, `read_only = 1` waits for every commit in progress, and each
    /// session queued behind one that waits for space takes its place when it is killed.
    /// Their commits were never acknowledged. Bounded by the statement limit. Returns how
    /// many sessions were killed.
    pub async fn fence(&mut self, access: &Access) -> Result<usize, OrchestratorError> {
        let addr = self.addr.clone();
        let set = self.exec("fencing (read_only = 1)", "SET GLOBAL read_only = 1");
        tokio::pin!(set);
        let mut killer: Option<NodeConn> = None;
        let mut killed = 0;
        loop {
            tokio::select! {
                done = &mut set => return done.map(|()| killed),
                () = sleep(Duration::from_millis(50)) => {
                    let conn = match &mut killer {
                        Some(c) => c,
                        None => killer.insert(NodeConn::connect(&addr, access).await?),
                    };
                    killed += conn.kill_disk_waiters().await?;
                }
            }
        }
    }

    /// Kills the sessions waiting for disk space to commit. Returns how many were killed.
    async fn kill_disk_waiters(&mut self) -> Result<usize, OrchestratorError> {
        let sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE STATE = {}",
            quote(crate::monitor::StuckWrites::STATE)
        );
        let ids: Vec<u64> = self
            .rows("listing sessions waiting for disk space", &sql)
            .await?;
        let mut killed = 0;
        for id in ids {
            if self
                .kill(id, "killing a session waiting for disk space")
                .await?
            {
                killed += 1;
            }
        }
        Ok(killed)
    }

    /// Kills every client connection except this one, replication threads, system threads and
    /// those of `spare_users`. Returns how many were killed.
    pub async fn kill_clients(&mut self, spare_users: &[&str]) -> Result<usize, OrchestratorError> {
        let mut sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND COMMAND NOT IN ({SERVER_COMMANDS}) AND USER NOT IN ({SYSTEM_USERS}"
        );
        for u in spare_users {
            sql.push_str(", ");
            sql.push_str(&quote(u));
        }
        sql.push(')');
        let ids: Vec<u64> = self.rows("listing client connections", &sql).await?;
        let mut killed = 0;
        for id in ids {
            if self.kill(id, "killing a client connection").await? {
                killed += 1;
            }
        }
        Ok(killed)
    }

    /// Turns on the semi-sync master side once at least one semi-sync replica is connected
    /// (turning it on earlier makes the first write wait `rpl_semi_sync_master_timeout`).
    /// `false` if none connected within `limit`: it stays off.
    pub async fn enable_semi_sync_master(
        &mut self,
        limit: Duration,
    ) -> Result<bool, OrchestratorError> {
        let deadline = Instant::now() + limit;
        loop {
            let clients: Option<(String, u64)> = self
                .first(
                    "counting semi-sync replicas",
                    "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'",
                )
                .await?;
            if clients.is_some_and(|(_, n)| n > 0) {
                self.exec(
                    "enabling semi-sync",
                    "SET GLOBAL rpl_semi_sync_master_enabled = 1",
                )
                .await?;
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// How long replication threads may take to stop once their `STOP SLAVE` timed out: the
/// server's own loop re-signals a thread every 2 s, and a semi-sync IO thread's exit may wait
/// out `rpl_semi_sync_slave_kill_conn_timeout` (5 s by default) connecting to its source.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How long a killed replication IO thread may take to end before `STOP SLAVE` is sent anyway
/// (see [`NodeConn::kill_io_thread`]).
const IO_EXIT_WAIT: Duration = Duration::from_millis(100);

/// `ER_NO_SUCH_THREAD`: `KILL` of a connection that has just ended.
const ER_NO_SUCH_THREAD: u16 = 1094;

/// `PROCESSLIST` commands of server threads, not clients.
pub(crate) const SERVER_COMMANDS: &str = "'Binlog Dump', 'Binlog Dump GTID', 'Daemon', \
    'Slave_IO', 'Slave_SQL', 'Slave_worker', 'Killed'";
/// `PROCESSLIST` users of server threads.
pub(crate) const SYSTEM_USERS: &str = "'system user', 'event_scheduler', 'unauthenticated user'";

/// The `CHANGE MASTER` statement pointing at `host:port` with GTID replication.
pub(crate) fn change_master_sql(host: &str, port: u16, login: &ReplicationLogin) -> String {
    format!(
        "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={port}, MASTER_USER={}, \
         MASTER_PASSWORD={}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY={}, \
         MASTER_HEARTBEAT_PERIOD={:.3}{}",
        quote(host),
        quote(&login.user),
        quote(&login.password),
        login.connect_retry_s,
        login.heartbeat_ms as f64 / 1000.0,
        if login.ssl { ", MASTER_SSL=1" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_master_quotes_and_uses_gtid() {
        let login = ReplicationLogin {
            user: "repl".into(),
            password: "p'w".into(),
            connect_retry_s: 1,
            heartbeat_ms: 500,
            ssl: false,
        };
        let sql = change_master_sql("127.0.0.1", 3307, &login);
        assert_eq!(
            sql,
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=3307, MASTER_USER='repl', \
             MASTER_PASSWORD='p''w', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
             MASTER_HEARTBEAT_PERIOD=0.500"
        );
        let tls = ReplicationLogin { ssl: true, ..login };
        assert!(change_master_sql("h", 1, &tls)
            .ends_with("MASTER_HEARTBEAT_PERIOD=0.500, MASTER_SSL=1"));
    }

    #[test]
    fn received_takes_the_further_of_io_and_slave_positions() {
        let mut s = NodeSnapshot {
            gtid_slave_pos: "0-1-5,1-1-3".into(),
            ..NodeSnapshot::default()
        };
        assert_eq!(s.received().to_string(), "0-1-5,1-1-3");
        s.replication = Some(Replication {
            source: "x:1".into(),
            io_state: "Connecting".into(),
            io_running: false,
            sql_running: true,
            lag_seconds: None,
            last_io_error: None,
            last_sql_error: None,
            gtid_io_pos: "0-1-9".into(),
            progress: None,
        });
        assert_eq!(s.received().to_string(), "0-1-9,1-1-3");
    }

    #[test]
    fn setting_problems_name_each_variable() {
        let s = NodeSnapshot {
            log_bin: true,
            ..NodeSnapshot::default()
        };
        assert_eq!(
            s.leader_setting_problems(),
            vec!["gtid_strict_mode is OFF", "log_slave_updates is OFF"]
        );
    }
}
