//! XA transactions on a node that comes back after a crash.
//!
//! A node's prepared XA transactions must be exactly those its binlog leaves prepared: the
//! replication stream from the leader continues from the node's binlog position, so it will
//! resolve (`XA COMMIT` / `XA ROLLBACK`) or prepare again what the binlog says, and nothing else.
//! Crash recovery does not always keep the two in step. A leader killed in the middle of an
//! `XA PREPARE` that no replica acknowledged may come back with the transaction prepared in the
//! engine while its binlog was cut before it (an orphan: it holds row locks the replication
//! stream then waits on until `lock_wait_timeout`, or it collides with the same transaction
//! arriving from the leader); or it may come back without a transaction its binlog holds as
//! prepared (lost), and the leader's later `XA ROLLBACK` of it stops replication with
//! `XAER_NOTA`.
//!
//! Before a rejoining node replicates, [`reconcile`] resolves each prepared transaction the way
//! its binlog says (orphans are rolled back), with `sql_log_bin = 0` so that its binlog stays as
//! it is. A replica stopped by `XAER_NOTA` on an `XA ROLLBACK` is moved past that one event
//! group ([`lost_xa`]): the transaction is absent, as the rollback would have left it. One stopped
//! on an `XA COMMIT` lacks the transaction's changes and is kept out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::time::timeout;

use super::node::NodeConn;
use super::OrchestratorError;

/// How long reading one binlog file may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node's binlog says last about an XA transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    Prepared,
    Committed,
    RolledBack,
}

/// A prepared transaction resolved by [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// As the binlog writes it: `X'<gtrid>',X'<bqual>',<formatID>`.
    pub xid: String,
    /// The binlog's word (`None`: not in the binlog at all).
    pub logged: Option<Logged>,
    pub committed: bool,
}

/// How a replica stopped on a transaction it no longer holds should be repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LostXa {
    /// `XA ROLLBACK` of it: skip the event group, the end state is the same.
    Rollback,
    /// `XA COMMIT` of it: the node lacks its changes.
    Commit,
}

/// Classifies a replica's `Last_SQL_Error`.
pub(crate) fn lost_xa(last_sql_error: &str) -> Option<LostXa> {
    if !last_sql_error.contains("XAER_NOTA") && !last_sql_error.contains("1397") {
        return None;
    }
    if last_sql_error.contains("XA ROLLBACK") {
        Some(LostXa::Rollback)
    } else if last_sql_error.contains("XA COMMIT") {
        Some(LostXa::Commit)
    } else {
        None
    }
}

/// An xid as the binlog writes it.
pub(crate) fn xid_text(format_id: i64, gtrid: &[u8], bqual: &[u8]) -> String {
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual))
}

/// The xid an event of the binlog (`SHOW BINLOG EVENTS`: type and info) is about, and what
/// it says.
pub(crate) fn logged_event<'a>(event_type: &str, info: &'a str) -> Option<(&'a str, Logged)> {
    let (rest, what) = match event_type {
        "XA_prepare" => (info.strip_prefix("XA PREPARE ")?, Logged::Prepared),
        "Query" => {
            if let Some(r) = info.strip_prefix("XA COMMIT ") {
                (r, Logged::Committed)
            } else {
                (info.strip_prefix("XA ROLLBACK ")?, Logged::RolledBack)
            }
        }
        _ => return None,
    };
    let xid = rest.strip_suffix(" ONE PHASE").unwrap_or(rest).trim();
    Some((xid, what))
}

impl NodeConn {
    /// The node's prepared XA transactions (`XA RECOVER`), named as the binlog names them.
    pub async fn prepared_xa(&mut self) -> Result<BTreeSet<String>, OrchestratorError> {
        let rows: Vec<(i64, usize, usize, Vec<u8>)> = self
            .rows("listing prepared XA transactions", "XA RECOVER")
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(_, g, b, data)| g + b <= data.len())
            .map(|(f, g, b, data)| xid_text(f, &data[..g], &data[g..g + b]))
            .collect())
    }

    /// What the node's binlogs say last about each of `xids`, newest file first, reading no
    /// further back than needed. An xid missing from the map is in no binlog file.
    pub async fn logged_xa(
        &mut self,
        xids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, Logged>, OrchestratorError> {
        let mut found = BTreeMap::new();
        if xids.is_empty() {
            return Ok(found);
        }
        let files: Vec<(String, u64)> = self
            .rows("listing binlog files", "SHOW BINARY LOGS")
            .await?;
        for (file, _) in files.iter().rev() {
            let what = format!("reading binlog {file}");
            let sql = format!(
                "SHOW BINLOG EVENTS IN {}",
                crate::provision::sql::quote(file)
            );
            let mut in_file: BTreeMap<String, Logged> = BTreeMap::new();
            let scan = async {
                let mut result = self.conn.query_iter(sql).await?;
                result
                    .for_each(|row| {
                        let event_type: Option<String> = row.get(2);
                        let info: Option<String> = row.get(5);
                        if let (Some(t), Some(i)) = (event_type, info) {
                            if let Some((xid, what)) = logged_event(&t, &i) {
                                if xids.contains(xid) && !found.contains_key(xid) {
                                    in_file.insert(xid.to_owned(), what);
                                }
                            }
                        }
                    })
                    .await
            };
            match timeout(SCAN_TIMEOUT, scan).await {
                Err(_) => {
                    return Err(OrchestratorError::Timeout {
                        addr: self.addr.clone(),
                        what,
                        after: SCAN_TIMEOUT,
                    })
                }
                Ok(r) => r.map_err(|e| OrchestratorError::sql(&self.addr, &what, e))?,
            }
            found.extend(in_file);
            if found.len() == xids.len() {
                break;
            }
        }
        Ok(found)
    }
}

/// Resolves the node's prepared XA transactions that its binlog does not leave prepared:
/// committed where the binlog committed them, rolled back otherwise. Not binlogged.
pub(crate) async fn reconcile(node: &mut NodeConn) -> Result<Vec<Resolved>, OrchestratorError> {
    let prepared = node.prepared_xa().await?;
    if prepared.is_empty() {
        return Ok(Vec::new());
    }
    let logged = node.logged_xa(&prepared).await?;
    let mut done = Vec::new();
    for xid in prepared {
        let said = logged.get(&xid).copied();
        if said == Some(Logged::Prepared) {
            continue;
        }
        let committed = said == Some(Logged::Committed);
        let sql = format!(
            "SET SESSION sql_log_bin = 0; XA {} {xid}; SET SESSION sql_log_bin = 1",
            if committed { "COMMIT" } else { "ROLLBACK" }
        );
        node.exec("resolving a prepared XA transaction", &sql)
            .await?;
        done.push(Resolved {
            xid,
            logged: said,
            committed,
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_are_written_as_the_binlog_writes_them() {
        assert_eq!(
            xid_text(1, b"sy:r1:abc:1", b"b1"),
            "X'73793a72313a6162633a31',X'6231',1"
        );
        assert_eq!(xid_text(7, b"x2", b""), "X'7832',X'',7");
    }

    #[test]
    fn binlog_events_name_the_xid_and_what_happened() {
        let x = "X'7832',X'',1";
        assert_eq!(
            logged_event("XA_prepare", "XA PREPARE X'7832',X'',1"),
            Some((x, Logged::Prepared))
        );
        assert_eq!(
            logged_event("Query", "XA COMMIT X'7832',X'',1"),
            Some((x, Logged::Committed))
        );
        assert_eq!(
            logged_event("Query", "XA COMMIT X'7832',X'',1 ONE PHASE"),
            Some((x, Logged::Committed))
        );
        assert_eq!(
            logged_event("Query", "XA ROLLBACK X'7832',X'',1"),
            Some((x, Logged::RolledBack))
        );
        assert_eq!(logged_event("Query", "XA END X'7832',X'',1"), None);
        assert_eq!(
            logged_event("Gtid", "XA START X'7832',X'',1 GTID 0-5-5"),
            None
        );
        assert_eq!(logged_event("Query", "create table t(a int)"), None);
    }

    #[test]
    fn replication_errors_of_lost_xa_transactions_are_recognised() {
        let rollback = "Error 'XAER_NOTA: Unknown XID' on query. Default database: ''. \
                        Query: 'XA ROLLBACK X'7832',X'',1'";
        assert_eq!(lost_xa(rollback), Some(LostXa::Rollback));
        let commit = rollback.replace("ROLLBACK", "COMMIT");
        assert_eq!(lost_xa(&commit), Some(LostXa::Commit));
        assert_eq!(
            lost_xa("Error 'Duplicate entry '1' for key 'PRIMARY''"),
            None
        );
    }
}
