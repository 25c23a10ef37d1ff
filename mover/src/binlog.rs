//! A MariaDB binary log client: connects to a server as a replica would (GTID dump protocol,
//! `@slave_connect_state`), and turns its events into whole source transactions with their
//! GTIDs and decoded row images.
//!
//! `mysql_async` frames the events and decodes MySQL's event types (table maps, row events,
//! queries, XIDs); MariaDB's own GTID event (`0xA2`) it does not know, so it is decoded here:
//! sequence number (8 bytes), domain (4), flags (1), the server id from the event header.
//!
//! A transaction ends at its XID event (InnoDB), its `COMMIT` query (non-transactional
//! engines), its XA PREPARE event (the first phase of an XA transaction), or at once when its
//! GTID event is flagged standalone (DDL and other statements logged alone). Every read is
//! bounded: the server is asked for heartbeats, and a stream silent for three heartbeat
//! periods ends with [`MoverError::SourceSilent`].

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Value};
use shard_map::gtid::{Gtid, GtidPos};

use crate::error::MoverError;
use crate::Endpoint;

/// MariaDB's GTID event.
const GTID_EVENT: u8 = 0xa2;
/// MariaDB's event that ends the first phase of an XA transaction (`XA PREPARE`).
const XA_PREPARE_EVENT: u8 = 0x26;
/// GTID event flag: the event group is one statement with no BEGIN/COMMIT (DDL).
const FL_STANDALONE: u8 = 1;
/// GTID event flag: a commit id follows the flags.
const FL_GROUP_COMMIT_ID: u8 = 2;
/// GTID event flags: the group is an XA transaction's first phase, or its XA COMMIT/ROLLBACK;
/// the XID follows.
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;
/// `@mariadb_slave_capability` for a replica that understands GTID events.
const CAPABILITY_GTID: u8 = 4;

/// One changed row of a source transaction: full images (`binlog_row_image=FULL`), in the
/// table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub db: String,
    pub table: String,
    /// The row before the change: `None` for an insert.
    pub before: Option<Vec<Value>>,
    /// The row after the change: `None` for a delete.
    pub after: Option<Vec<Value>>,
}

/// What a source transaction did.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A committed transaction's row changes (only those of the databases asked for).
    Rows(Vec<RowChange>),
    /// The first phase of an XA transaction: its row changes count once `XA COMMIT xid` comes.
    XaPrepare { xid: String, rows: Vec<RowChange> },
    /// `XA COMMIT xid` of a transaction prepared earlier.
    XaCommit { xid: String },
    /// `XA ROLLBACK xid` of a transaction prepared earlier.
    XaRollback { xid: String },
}

/// A statement logged as text (DDL, or a statement-based change) and its default schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub schema: String,
    pub query: String,
}

/// One source transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub gtid: Gtid,
    pub body: Body,
    /// Statements it logged as text, in order (a DDL is a transaction of its own).
    pub statements: Vec<Statement>,
}

/// What the stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Txn(Txn),
    /// The source has nothing new (a heartbeat arrived): the position is current.
    Idle,
}

/// A source transaction being read.
struct Pending {
    gtid: Gtid,
    standalone: bool,
    rows: Vec<RowChange>,
    xa: Option<String>,
    statements: Vec<Statement>,
}

/// A binlog stream from one server, starting after a GTID position.
pub struct BinlogReader {
    stream: BinlogStream,
    /// Databases whose row changes are decoded; others are skipped.
    databases: HashSet<String>,
    pending: Option<Pending>,
    silence: Duration,
}

impl std::fmt::Debug for BinlogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogReader")
            .field("databases", &self.databases)
            .finish_non_exhaustive()
    }
}

impl BinlogReader {
    /// Connects to `source` and asks for every transaction after `from` (the empty position:
    /// from the oldest binary log). `server_id` must differ from every real server and replica
    /// of the source's cluster (the source drops an older replica with the same id).
    pub async fn open(
        source: &Endpoint,
        server_id: u32,
        from: &GtidPos,
        databases: HashSet<String>,
        heartbeat: Duration,
    ) -> Result<BinlogReader, MoverError> {
        let what = format!("opening the binary log of {}", source.addr);
        let connect = async {
            let mut conn = source.connect().await?;
            let statements = [
                format!("SET @mariadb_slave_capability = {CAPABILITY_GTID}"),
                format!("SET @slave_connect_state = '{from}'"),
                "SET @slave_gtid_strict_mode = 1".to_owned(),
                "SET @slave_gtid_ignore_duplicates = 0".to_owned(),
                format!("SET @master_heartbeat_period = {}", heartbeat.as_nanos()),
            ];
            for s in statements {
                conn.query_drop(s).await?;
            }
            let request = BinlogStreamRequest::new(server_id);
            conn.get_binlog_stream(request).await
        };
        let stream = tokio::time::timeout(source.timeout, connect)
            .await
            .map_err(|_| MoverError::Timeout(what.clone()))?
            .map_err(|e| MoverError::sql(&what, e))?;
        Ok(BinlogReader {
            stream,
            databases,
            pending: None,
            silence: heartbeat * 3,
        })
    }

    /// The next whole transaction, or [`Item::Idle`] on a heartbeat.
    pub async fn next(&mut self) -> Result<Item, MoverError> {
        loop {
            let event = match tokio::time::timeout(self.silence, self.stream.next()).await {
                Err(_) => return Err(MoverError::SourceSilent(self.silence)),
                Ok(None) => return Err(MoverError::StreamEnded),
                // The source cannot serve the position asked (ER_MASTER_FATAL_ERROR_READING_BINLOG):
                // purged binary logs, or a failover that lost transactions the stream had
                // already read. Retrying would not help.
                Ok(Some(Err(mysql_async::Error::Server(e)))) if e.code == 1236 => {
                    return Err(MoverError::Stopped {
                        gtid: String::new(),
                        reason: format!(
                            "the source cannot stream from the saved position: {} (purged \
                             binary logs, or a failover that lost transactions this stream \
                             already applied)",
                            e.message
                        ),
                    })
                }
                Ok(Some(Err(e))) => return Err(MoverError::sql("reading the binary log", e)),
                Ok(Some(Ok(event))) => event,
            };
            if let Some(item) = self.event(event)? {
                return Ok(item);
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<Option<Item>, MoverError> {
        let kind = event.header().event_type_raw();
        if kind == GTID_EVENT {
            let (gtid, flags, xa) = gtid_event(event.header().server_id(), event.data())?;
            self.pending = Some(Pending {
                gtid,
                standalone: flags & FL_STANDALONE != 0,
                rows: Vec::new(),
                xa,
                statements: Vec::new(),
            });
            return Ok(None);
        }
        if kind == XA_PREPARE_EVENT {
            let Some(p) = self.pending.take() else {
                return Ok(None);
            };
            let xid = p.xa.ok_or_else(|| {
                MoverError::Binlog(format!("XA PREPARE of {} without XA START", p.gtid))
            })?;
            return Ok(Some(Item::Txn(Txn {
                gtid: p.gtid,
                body: Body::XaPrepare { xid, rows: p.rows },
                statements: p.statements,
            })));
        }
        let data = event
            .read_data()
            .map_err(|e| MoverError::Binlog(format!("undecodable event of type {kind}: {e}")))?;
        match data {
            Some(EventData::HeartbeatEvent) => Ok(Some(Item::Idle)),
            Some(EventData::XidEvent(_)) => Ok(self.finish()),
            Some(EventData::QueryEvent(q)) => {
                let query = q.query().trim().to_owned();
                let schema = q.schema().into_owned();
                self.query(schema, query)
            }
            Some(EventData::RowsEvent(rows)) => {
                self.rows(&rows)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn query(&mut self, schema: String, query: String) -> Result<Option<Item>, MoverError> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(None);
        };
        let upper = query.to_ascii_uppercase();
        if upper == "BEGIN" || upper.starts_with("XA START") || upper.starts_with("XA END") {
            return Ok(None);
        }
        if upper == "COMMIT" {
            return Ok(self.finish());
        }
        let second_phase = strip_prefix_ci(&query, "XA COMMIT")
            .map(|_| true)
            .or_else(|| strip_prefix_ci(&query, "XA ROLLBACK").map(|_| false));
        let xa = match (second_phase, &p.xa) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(MoverError::Binlog(format!(
                    "{}: {query} in an event group without an XID",
                    p.gtid
                )))
            }
            (Some(true), Some(xid)) => Some(Body::XaCommit { xid: xid.clone() }),
            (Some(false), Some(xid)) => Some(Body::XaRollback { xid: xid.clone() }),
        };
        if let Some(body) = xa {
            let p = self.pending.take().expect("checked above");
            return Ok(Some(Item::Txn(Txn {
                gtid: p.gtid,
                body,
                statements: p.statements,
            })));
        }
        // A DDL (standalone: the whole transaction), or a statement logged as text inside a
        // transaction (binlog_format MIXED or STATEMENT), which then ends with its XID.
        p.statements.push(Statement { schema, query });
        if p.standalone {
            return Ok(self.finish());
        }
        Ok(None)
    }

    fn rows(&mut self, rows: &RowsEventData<'_>) -> Result<(), MoverError> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(());
        };
        let tme = self.stream.get_tme(rows.table_id()).ok_or_else(|| {
            MoverError::Binlog(format!(
                "{}: row event for table id {} without its table map",
                p.gtid,
                rows.table_id()
            ))
        })?;
        let db = tme.database_name().into_owned();
        if !self.databases.contains(&db) {
            return Ok(());
        }
        let table = tme.table_name().into_owned();
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(|e| {
                MoverError::Binlog(format!("{}: undecodable row of {db}.{table}: {e}", p.gtid))
            })?;
            let image = |r: Option<mysql_async::binlog::row::BinlogRow>| {
                r.map(|r| {
                    r.unwrap()
                        .into_iter()
                        .map(|v| Value::try_from(v).unwrap_or(Value::NULL))
                        .collect::<Vec<_>>()
                })
            };
            p.rows.push(RowChange {
                db: db.clone(),
                table: table.clone(),
                before: image(before),
                after: image(after),
            });
        }
        Ok(())
    }

    fn finish(&mut self) -> Option<Item> {
        let p = self.pending.take()?;
        Some(Item::Txn(Txn {
            gtid: p.gtid,
            body: Body::Rows(p.rows),
            statements: p.statements,
        }))
    }
}

/// The GTID, flags and (for either phase of an XA transaction) XID of a MariaDB GTID event's
/// body: sequence number (8 bytes), domain (4), flags (1), commit id (8, if flagged), then the
/// XID's format id (4), gtrid and bqual lengths (1 each) and bytes. The XID is written
/// `format_id:gtrid_hex:bqual_hex`.
fn gtid_event(server_id: u32, data: &[u8]) -> Result<(Gtid, u8, Option<String>), MoverError> {
    let short = || MoverError::Binlog(format!("GTID event of {} bytes is cut short", data.len()));
    if data.len() < 13 {
        return Err(short());
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let flags = data[12];
    let mut at = 13;
    if flags & FL_GROUP_COMMIT_ID != 0 {
        at += 8;
    }
    let mut xid = None;
    if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let head = data.get(at..at + 6).ok_or_else(short)?;
        let format_id = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let (gl, bl) = (usize::from(head[4]), usize::from(head[5]));
        let bytes = data.get(at + 6..at + 6 + gl + bl).ok_or_else(short)?;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        xid = Some(format!(
            "{format_id}:{}:{}",
            hex(&bytes[..gl]),
            hex(&bytes[gl..])
        ));
    }
    let gtid = Gtid {
        domain,
        server_id,
        seq,
    };
    Ok((gtid, flags, xid))
}

/// `rest` when `s` starts with `prefix` (ASCII case-insensitive) followed by a space.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    let rest = &s[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix) && rest.starts_with(' ')).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_events_decode() {
        let mut data = Vec::new();
        data.extend_from_slice(&42u64.to_le_bytes());
        data.extend_from_slice(&3u32.to_le_bytes());
        data.push(FL_STANDALONE);
        let (g, flags, xid) = gtid_event(7, &data).unwrap();
        assert_eq!(g.to_string(), "3-7-42");
        assert_eq!(flags, FL_STANDALONE);
        assert_eq!(xid, None);
        assert!(gtid_event(7, &data[..12]).is_err());
        // As MariaDB 10.11 writes the first phase of `XA START 'x1'`.
        let xa = [
            5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 1, 0, 0, 0, 2, 0, 0x78, 0x31, 1, 0xff,
        ];
        let (g, _, xid) = gtid_event(101, &xa).unwrap();
        assert_eq!(g.to_string(), "0-101-5");
        assert_eq!(xid.as_deref(), Some("1:7831:"));
        assert!(gtid_event(101, &xa[..18]).is_err());
    }

    #[test]
    fn prefixes_need_a_word_boundary() {
        assert_eq!(strip_prefix_ci("xa commit 'a'", "XA COMMIT"), Some("'a'"));
        assert_eq!(strip_prefix_ci("XA COMMITTED", "XA COMMIT"), None);
        assert_eq!(strip_prefix_ci("XA", "XA COMMIT"), None);
    }
}
