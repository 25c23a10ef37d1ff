//! Global AUTO_INCREMENT for sharded tables: ids come from `switchyard.sequences` on the
//! keyspace's default cluster, reserved in blocks (one atomic UPDATE per block), so that ids
//! are unique across every shard and every router.

use std::sync::Arc;

use crate::context::RouterContext;
use crate::xa::{internal_conn, XaError};
use shard_map::sql::quote;

/// Ids reserved per round trip to the sequence table.
pub const BLOCK: u64 = 100;

const CREATE: &str = "CREATE DATABASE IF NOT EXISTS switchyard; \
    CREATE TABLE IF NOT EXISTS switchyard.sequences (\
    name VARBINARY(200) NOT NULL PRIMARY KEY, \
    next_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB";

/// The ids a router holds for one sequence: `[next, end)`.
#[derive(Debug, Default)]
pub struct Block {
    next: u64,
    end: u64,
}

/// `n` consecutive-or-not ids for `keyspace.table`, unique across shards and routers, in
/// increasing order.
pub async fn reserve(
    ctx: &RouterContext,
    cluster: &str,
    keyspace: &str,
    table: &str,
    n: u64,
    fallback: (&Arc<str>, &Arc<str>),
) -> Result<Vec<u64>, XaError> {
    let name = format!("{keyspace}.{table}");
    let block = ctx
        .sequences
        .entry(name.clone())
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Block::default())))
        .clone();
    let mut b = block.lock().await;
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        if b.next >= b.end {
            let want = BLOCK.max(n - out.len() as u64);
            let mut conn = internal_conn(ctx, cluster, Some(fallback)).await?;
            let sql = format!(
                "{CREATE}; INSERT IGNORE INTO switchyard.sequences VALUES ({q}, 1); \
                 UPDATE switchyard.sequences SET next_id = LAST_INSERT_ID(next_id + {want}) \
                 WHERE name = {q}; SELECT LAST_INSERT_ID()",
                q = quote(&name)
            );
            let r = conn.query(&sql).await;
            let rows = match r {
                Ok(o) => o.rows,
                Err(e) => {
                    conn.discard();
                    return Err(e.into());
                }
            };
            let end = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(XaError::NoLeader(cluster.to_string()))?;
            b.next = end - want;
            b.end = end;
        }
        out.push(b.next);
        b.next += 1;
    }
    Ok(out)
}
