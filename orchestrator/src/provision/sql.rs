//! The SQL side of provisioning: users, `CHANGE MASTER`, and turning on semi-sync on a leader
//! once its replicas are connected. Everything runs as root over the node's unix socket.

use shard_map::sql::quote;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::time::Instant;

use super::process::socket_opts;
use super::{LocalNode, ProvisionError, ProvisionSpec};

/// The application user's privileges: everything an application needs, but not `ALL`, which
/// in 10.11 includes READ_ONLY ADMIN and would let it write on a read-only replica.
pub(crate) const APP_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, \
    ALTER, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, \
    ALTER ROUTINE, EVENT, TRIGGER, REFERENCES, PROCESS";

/// How long a leader may wait for its replicas to connect.
pub(crate) const REPLICAS_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A root connection to `node` over its unix socket.
pub(crate) async fn connect(node: &LocalNode) -> Result<Conn, ProvisionError> {
    Conn::new(socket_opts(&node.socket))
        .await
        .map_err(|e| ProvisionError::sql(&node.addr, "connecting over the unix socket", e))
}

/// Runs statements that must not leak into error messages verbatim (they hold passwords), so
/// failures name `what` instead.
async fn exec(
    conn: &mut Conn,
    node: &LocalNode,
    what: &str,
    statements: &[String],
) -> Result<(), ProvisionError> {
    for s in statements {
        conn.query_drop(s)
            .await
            .map_err(|e| ProvisionError::sql(&node.addr, what, e))?;
    }
    Ok(())
}

/// Creates the replication, application and admin users, outside the binlog so that every
/// node's GTID position starts empty and identical.
pub(crate) async fn create_users(
    node: &LocalNode,
    spec: &ProvisionSpec,
) -> Result<(), ProvisionError> {
    let mut conn = connect(node).await?;
    let user = |name: &str| format!("{}@'%'", quote(name));
    let statements = vec![
        "SET SESSION sql_log_bin = 0".to_owned(),
        format!(
            "CREATE USER {} IDENTIFIED BY {}",
            user(&spec.repl_user),
            quote(&spec.repl_password)
        ),
        format!(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {}",
            user(&spec.repl_user)
        ),
        format!(
            "CREATE USER {} IDENTIFIED BY {}",
            user(&spec.app_user),
            quote(&spec.app_password)
        ),
        format!("GRANT {APP_PRIVILEGES} ON *.* TO {}", user(&spec.app_user)),
        format!(
            "CREATE USER {} IDENTIFIED BY {}",
            user(&spec.admin_user),
            quote(&spec.admin_password)
        ),
        format!(
            "GRANT ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION",
            user(&spec.admin_user)
        ),
    ];
    exec(&mut conn, node, "creating users", &statements).await?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Points `replica` at `leader` with GTID replication and starts it.
pub(crate) async fn start_replication(
    replica: &LocalNode,
    leader: &LocalNode,
    spec: &ProvisionSpec,
) -> Result<(), ProvisionError> {
    let mut conn = connect(replica).await?;
    let statements = vec![
        format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER={}, \
             MASTER_PASSWORD={}, MASTER_USE_GTID=slave_pos, MASTER_HEARTBEAT_PERIOD=0.5, \
             MASTER_CONNECT_RETRY=1",
            leader.port,
            quote(&spec.repl_user),
            quote(&spec.repl_password)
        ),
        "START SLAVE".to_owned(),
    ];
    exec(&mut conn, replica, "configuring replication", &statements).await?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Where `node` replicates from (`host:port`), or `None` if it has no replication configured.
pub(crate) async fn replication_source(node: &LocalNode) -> Result<Option<String>, ProvisionError> {
    let mut conn = connect(node).await?;
    let row: Option<Row> = conn
        .query_first("SHOW SLAVE STATUS")
        .await
        .map_err(|e| ProvisionError::sql(&node.addr, "SHOW SLAVE STATUS", e))?;
    let _ = conn.disconnect().await;
    Ok(row.and_then(|row| {
        let host: String = row.get_opt("Master_Host")?.ok()?;
        let port: u16 = row.get_opt("Master_Port")?.ok()?;
        (!host.is_empty()).then(|| format!("{host}:{port}"))
    }))
}

/// Starts the replication threads of a replica that was booted with `--skip-slave-start`.
pub(crate) async fn start_slave(node: &LocalNode) -> Result<(), ProvisionError> {
    let mut conn = connect(node).await?;
    conn.query_drop("START SLAVE")
        .await
        .map_err(|e| ProvisionError::sql(&node.addr, "START SLAVE", e))?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Waits until `expected` replicas are connected to `leader` (and, with semi-sync, all of them
/// as semi-sync clients), then turns on the semi-sync master side.
///
/// Enabling it earlier would make the leader's first write wait the full
/// `rpl_semi_sync_master_timeout` (10 s) for an acknowledgement nobody can send yet.
pub(crate) async fn activate_leader(
    leader: &LocalNode,
    expected: usize,
    semi_sync: bool,
) -> Result<(), ProvisionError> {
    if expected == 0 && !semi_sync {
        // Nothing to wait for: no connection (which an orchestrator fencing a restarted
        // former leader might kill under it).
        return Ok(());
    }
    let mut conn = connect(leader).await?;
    let deadline = Instant::now() + REPLICAS_TIMEOUT;
    loop {
        let hosts: Vec<Row> = conn
            .query("SHOW SLAVE HOSTS")
            .await
            .map_err(|e| ProvisionError::sql(&leader.addr, "SHOW SLAVE HOSTS", e))?;
        let semi_clients = if semi_sync {
            let row: Option<(String, u64)> = conn
                .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
                .await
                .map_err(|e| ProvisionError::sql(&leader.addr, "SHOW GLOBAL STATUS", e))?;
            row.map_or(0, |(_, n)| n as usize)
        } else {
            expected
        };
        if hosts.len() >= expected && semi_clients >= expected {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ProvisionError::Timeout {
                what: format!(
                    "{expected} replicas to connect to {} ({} registered, {semi_clients} \
                     semi-sync clients)",
                    leader.addr,
                    hosts.len()
                ),
                after: REPLICAS_TIMEOUT,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    if semi_sync {
        conn.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = 1")
            .await
            .map_err(|e| ProvisionError::sql(&leader.addr, "enabling semi-sync", e))?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_quotes_and_backslashes() {
        assert_eq!(quote("app"), "'app'");
        assert_eq!(quote("o'neil\\x"), "'o''neil\\\\x'");
    }

    #[test]
    fn app_privileges_never_include_all_or_read_only_admin() {
        let privs: Vec<&str> = APP_PRIVILEGES.split(',').map(str::trim).collect();
        assert!(!privs.contains(&"ALL"));
        assert!(!privs
            .iter()
            .any(|p| p.contains("READ_ONLY") || p.contains("SUPER")));
        assert!(privs.contains(&"INSERT") && privs.contains(&"PROCESS"));
    }
}
