//! Talking to the servers outside the timed rows: plain connections as the application user,
//! and waiting until the replica has applied everything the leader wrote, so that no row pays
//! for the replication work of the one before it (on 2 cores the replica's SQL thread applying
//! `prepare`'s inserts or a read/write row's changes takes a CPU from whatever runs next).

use std::time::Duration;

use anyhow::Context;
use router::backend::{BackendConn, ConnectOptions};
use tokio::time::Instant;

use super::sysbench;

/// Connects as the application user.
pub async fn connect(addr: &str) -> anyhow::Result<BackendConn> {
    let opts = ConnectOptions {
        user: sysbench::USER.into(),
        password: sysbench::PASSWORD.into(),
        deprecate_eof: false,
        found_rows: false,
        connect_timeout: Duration::from_secs(5),
        tls: None,
        tcp: Default::default(),
    };
    BackendConn::connect(addr, &opts)
        .await
        .with_context(|| format!("connecting to {addr} as {}", sysbench::USER))
}

/// The first column of the first row.
pub async fn first_value(conn: &mut BackendConn, sql: &str) -> anyhow::Result<String> {
    let out = conn
        .query(sql)
        .await
        .with_context(|| format!("running {sql}"))?;
    out.rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .with_context(|| format!("{sql} returned no value"))
}

/// Waits until every replica's applied GTID position is the leader's binlog position, or
/// `timeout` passes (then it says so on stderr and carries on: the figures stay usable, a
/// little less fair). Returns how long it waited.
pub async fn replicas_caught_up(
    leader: &str,
    replicas: &[String],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut on_leader = connect(leader).await?;
    let target = gtid_set(&first_value(&mut on_leader, "SELECT @@gtid_binlog_pos").await?);
    for addr in replicas {
        let mut conn = connect(addr).await?;
        loop {
            let applied = first_value(&mut conn, "SELECT @@gtid_slave_pos").await?;
            if gtid_set(&applied) == target {
                break;
            }
            if began.elapsed() > timeout {
                eprintln!(
                    "replica {addr} is still behind after {timeout:?} \
                     (applied {applied}, leader at {target:?}); carrying on"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(began.elapsed())
}

/// A GTID position (`0-1-42,1-2-7`) as a sorted list, so that order does not matter.
fn gtid_set(pos: &str) -> Vec<String> {
    let mut parts: Vec<String> = pos
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    parts.sort();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_positions_compare_as_sets() {
        assert_eq!(gtid_set("1-2-7, 0-1-42"), gtid_set("0-1-42,1-2-7"));
        assert_ne!(gtid_set("0-1-41"), gtid_set("0-1-42"));
        assert_eq!(gtid_set(""), Vec::<String>::new());
    }
}
