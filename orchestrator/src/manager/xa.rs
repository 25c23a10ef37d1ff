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
use crate::gtid::{Gtid, GtidPos};

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
            if let Some(r) = info.strip_prefix("XA PREPARE ") {
                (r, Logged::Prepared)
            } else if let Some(r) = info.strip_prefix("XA COMMIT ") {
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
}

/// One event group of a binlog: its GTID, and the XA transaction it prepares or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub gtid: Gtid,
    pub xa: Option<(String, Logged)>,
}

impl Group {
    /// The xid when the group is an `XA PREPARE`.
    pub fn prepare_of(&self) -> Option<&str> {
        match &self.xa {
            Some((xid, Logged::Prepared)) => Some(xid),
            _ => None,
        }
    }
}

/// The GTID a `Gtid` event's info names (`BEGIN GTID 0-1-5`, `XA START ... GTID 0-1-5`,
/// `GTID 0-1-5`).
pub(crate) fn group_gtid(info: &str) -> Option<Gtid> {
    let (_, g) = info.rsplit_once("GTID ")?;
    g.trim().parse().ok()
}

/// The position a `Gtid_list` event's info names (`[0-1-5,1-2-7]`, `[]`).
pub(crate) fn list_position(info: &str) -> GtidPos {
    GtidPos::parse_lossy(info.trim().trim_start_matches('[').trim_end_matches(']'))
}

/// The node's own `XA PREPARE`s at the end of its binlog that are still prepared on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsent {
    pub groups: Vec<Group>,
    /// The binlog position just before them.
    pub before: GtidPos,
}

/// Of a binlog file read in order (`before`: its `Gtid_list`), the `XA PREPARE` groups at its
/// end whose xid is in `prepared`, and the position before them.
pub(crate) fn prepared_tail(
    before: &GtidPos,
    groups: &[Group],
    prepared: &BTreeSet<String>,
) -> (usize, GtidPos) {
    let mut start = groups.len();
    while start > 0
        && groups[start - 1]
            .prepare_of()
            .is_some_and(|x| prepared.contains(x))
    {
        start -= 1;
    }
    let mut pos = before.clone();
    for g in &groups[..start] {
        pos.advance(g.gtid);
    }
    (start, pos)
}

impl NodeConn {
    /// A binlog file's position before it and its event groups, in order.
    async fn binlog_groups(
        &mut self,
        file: &str,
    ) -> Result<(GtidPos, Vec<Group>), OrchestratorError> {
        let what = format!("reading binlog {file}");
        let sql = format!("SHOW BINLOG EVENTS IN {}", shard_map::sql::quote(file));
        let mut before = GtidPos::default();
        let mut groups: Vec<Group> = Vec::new();
        let scan = async {
            let mut result = self.conn.query_iter(sql).await?;
            result
                .for_each(|row| {
                    let event_type: Option<String> = row.get(2);
                    let info: Option<String> = row.get(5);
                    let (Some(t), Some(i)) = (event_type, info) else {
                        return;
                    };
                    match t.as_str() {
                        "Gtid_list" => before = list_position(&i),
                        "Gtid" => {
                            if let Some(gtid) = group_gtid(&i) {
                                groups.push(Group { gtid, xa: None });
                            }
                        }
                        _ => {
                            if let Some((xid, what)) = logged_event(&t, &i) {
                                if let Some(g) = groups.last_mut() {
                                    g.xa = Some((xid.to_owned(), what));
                                }
                            }
                        }
                    }
                })
                .await
        };
        match timeout(SCAN_TIMEOUT, scan).await {
            Err(_) => Err(OrchestratorError::Timeout {
                addr: self.addr.clone(),
                what,
                after: SCAN_TIMEOUT,
            }),
            Ok(r) => r.map_err(|e| OrchestratorError::sql(&self.addr, &what, e)),
        }?;
        Ok((before, groups))
    }
}

/// The `XA PREPARE`s the node wrote last and still holds prepared, with the position before
/// them: a former leader killed before any replica received them comes back so (MariaDB's
/// semi-sync crash recovery does not cut prepared XA transactions off the binlog), and the
/// new leader then refuses its position. `None` when its binlog does not end so.
pub(crate) async fn unsent_prepares(
    node: &mut NodeConn,
) -> Result<Option<Unsent>, OrchestratorError> {
    let prepared = node.prepared_xa().await?;
    if prepared.is_empty() {
        return Ok(None);
    }
    let files: Vec<(String, u64)> = node
        .rows("listing binlog files", "SHOW BINARY LOGS")
        .await?;
    let mut tail: Vec<Group> = Vec::new();
    let mut before = GtidPos::default();
    for (file, _) in files.iter().rev() {
        let (start_pos, groups) = node.binlog_groups(file).await?;
        let (start, pos) = prepared_tail(&start_pos, &groups, &prepared);
        tail.splice(0..0, groups[start..].iter().cloned());
        before = pos;
        if start > 0 {
            break;
        }
    }
    Ok((!tail.is_empty()).then_some(Unsent {
        groups: tail,
        before,
    }))
}

/// Where a binlog prepared and ended an XA transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct History {
    pub prepared: Option<Gtid>,
    /// The group that ended it, and whether it committed.
    pub ended: Option<(Gtid, bool)>,
}

impl History {
    /// What the binlog says last about the transaction.
    fn last_word(&self) -> Logged {
        match self.ended {
            Some((_, true)) => Logged::Committed,
            Some((_, false)) => Logged::RolledBack,
            None => Logged::Prepared,
        }
    }
}

impl NodeConn {
    /// Where this node's binlog prepared and ended each of `xids`, newest file first, reading
    /// back until every one's prepare is found (or the oldest file).
    pub async fn xa_history(
        &mut self,
        xids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, History>, OrchestratorError> {
        let mut found: BTreeMap<String, History> = BTreeMap::new();
        let files: Vec<(String, u64)> = self
            .rows("listing binlog files", "SHOW BINARY LOGS")
            .await?;
        for (file, _) in files.iter().rev() {
            let (_, groups) = self.binlog_groups(file).await?;
            for g in groups.iter().rev() {
                let Some((xid, what)) = &g.xa else { continue };
                if !xids.contains(xid) {
                    continue;
                }
                let h = found.entry(xid.clone()).or_default();
                match what {
                    Logged::Prepared => {
                        h.prepared.get_or_insert(g.gtid);
                    }
                    Logged::Committed => {
                        h.ended.get_or_insert((g.gtid, true));
                    }
                    Logged::RolledBack => {
                        h.ended.get_or_insert((g.gtid, false));
                    }
                }
            }
            if xids
                .iter()
                .all(|x| found.get(x).is_some_and(|h| h.prepared.is_some()))
            {
                break;
            }
        }
        Ok(found)
    }
}

/// What a transaction must be on a node that resumes the leader's history at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Required {
    Prepared,
    Committed,
    /// Rolled back, or not begun yet (replication brings its prepare again).
    Absent,
}

/// From the leader's binlog history of a transaction, what it must be at `start`.
pub(crate) fn required(history: Option<&History>, start: &GtidPos) -> Required {
    let within = |g: &Gtid| g.seq <= start.seq(g.domain);
    let Some(h) = history else {
        return Required::Absent;
    };
    match h.ended.filter(|(g, _)| within(g)) {
        Some((_, true)) => Required::Committed,
        Some((_, false)) => Required::Absent,
        // Ended after `start`: prepared then, unless prepared after it too. A prepare not
        // found is older than every binlog file, so before `start`.
        None if h.prepared.as_ref().is_none_or(within) => Required::Prepared,
        None => Required::Absent,
    }
}

/// Brings the node's prepared XA transactions in step with the history it resumes at
/// `start`, without binlogging. One its own binlog holds as prepared stays. For the others
/// (crash recovery kept them prepared although the binlog lost or ended them) the leader's
/// binlog decides: prepared there at or before `start` and not ended by then, it stays;
/// committed by then, it is committed; otherwise it is rolled back (if the leader prepared it
/// after `start`, replication prepares it again). When a transaction is in neither binlog,
/// nothing is changed and it is returned as [`Unresolvable`].
pub(crate) async fn reconcile(
    node: &mut NodeConn,
    leader: &mut NodeConn,
    start: &GtidPos,
) -> Result<Result<Vec<Resolved>, Unresolvable>, OrchestratorError> {
    let prepared = node.prepared_xa().await?;
    if prepared.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let own: BTreeMap<String, Logged> = node
        .xa_history(&prepared)
        .await?
        .into_iter()
        .map(|(x, h)| (x, h.last_word()))
        .collect();
    let unsure: BTreeSet<String> = prepared
        .iter()
        .filter(|x| own.get(*x) != Some(&Logged::Prepared))
        .cloned()
        .collect();
    if unsure.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let history = leader.xa_history(&unsure).await?;
    // Neither binlog names it: an orphan the leader never had, or a one-phase commit (`XA
    // COMMIT ... ONE PHASE` is binlogged as a plain transaction, without its xid) that the
    // crash left prepared. Only the data could tell; nothing is guessed.
    let unknown: Vec<String> = unsure
        .iter()
        .filter(|x| !history.contains_key(*x))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Ok(Err(Unresolvable(unknown)));
    }
    let mut done = Vec::new();
    for xid in unsure {
        let committed = match required(history.get(&xid), start) {
            Required::Prepared => continue,
            Required::Committed => true,
            Required::Absent => false,
        };
        let sql = format!(
            "SET SESSION sql_log_bin = 0; XA {} {xid}; SET SESSION sql_log_bin = 1",
            if committed { "COMMIT" } else { "ROLLBACK" }
        );
        node.exec("resolving a prepared XA transaction", &sql)
            .await?;
        done.push(Resolved {
            logged: own.get(&xid).copied(),
            xid,
            committed,
        });
    }
    Ok(Ok(done))
}

/// Prepared transactions named by neither the node's binlog nor the leader's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unresolvable(pub Vec<String>);

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
    fn the_prepared_tail_of_a_binlog_and_the_position_before_it() {
        let g = |s: &str, x: Option<&str>| Group {
            gtid: s.parse().unwrap(),
            xa: x.map(|x| (x.to_owned(), Logged::Prepared)),
        };
        assert_eq!(
            group_gtid("BEGIN GTID 0-203-51958"),
            Some("0-203-51958".parse().unwrap())
        );
        assert_eq!(
            group_gtid("XA START X'7832',X'',1 GTID 0-5-5"),
            Some("0-5-5".parse().unwrap())
        );
        assert_eq!(list_position("[0-1-5,1-2-7]").to_string(), "0-1-5,1-2-7");
        assert!(list_position("[]").is_empty());
        let prepared: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let groups = [
            g("0-1-10", None),
            g("0-1-11", Some("a")),
            g("1-1-3", None),
            g("0-1-12", Some("a")),
            g("0-1-13", Some("b")),
        ];
        let before = GtidPos::parse("0-1-9,1-1-2").unwrap();
        let (start, pos) = prepared_tail(&before, &groups, &prepared);
        assert_eq!(start, 3);
        assert_eq!(pos.to_string(), "0-1-11,1-1-3");
        // A prepare of a transaction no longer prepared ends the tail.
        let (start, _) = prepared_tail(&before, &groups, &["b".to_owned()].into());
        assert_eq!(start, 4);
        // Nothing to cut: the whole position.
        let (start, pos) = prepared_tail(&before, &groups[..3], &prepared);
        assert_eq!(start, 3);
        assert_eq!(pos.to_string(), "0-1-11,1-1-3");
    }

    #[test]
    fn what_a_transaction_must_be_where_a_node_resumes() {
        let g = |s: &str| s.parse::<Gtid>().unwrap();
        let start = GtidPos::parse("0-1-10").unwrap();
        let h = |p: Option<&str>, e: Option<(&str, bool)>| History {
            prepared: p.map(g),
            ended: e.map(|(s, c)| (g(s), c)),
        };
        // Unknown to the leader: an orphan.
        assert_eq!(required(None, &start), Required::Absent);
        // Prepared before, ended after: still prepared at `start`.
        let x = h(Some("0-1-9"), Some(("0-2-12", true)));
        assert_eq!(required(Some(&x), &start), Required::Prepared);
        // Prepared after: replication prepares it again.
        let x = h(Some("0-2-11"), None);
        assert_eq!(required(Some(&x), &start), Required::Absent);
        // Ended by `start`.
        let x = h(Some("0-1-8"), Some(("0-1-10", true)));
        assert_eq!(required(Some(&x), &start), Required::Committed);
        let x = h(Some("0-1-8"), Some(("0-1-9", false)));
        assert_eq!(required(Some(&x), &start), Required::Absent);
        // A prepare in a purged file, ended after `start`: it was prepared then.
        let x = h(None, Some(("0-2-12", true)));
        assert_eq!(required(Some(&x), &start), Required::Prepared);
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
