//! A stream's progress, kept on its target in `_switchyard.streams` and changed in the same
//! transaction as the rows it accounts for: that is what makes every source transaction and
//! every copied chunk count exactly once, whatever stops the mover and wherever it resumes.
//!
//! - `pos`: the source position applied through.
//! - `resume`: where reading starts again: `pos`, or earlier while an XA transaction's first
//!   phase was read but its outcome not (its rows are applied at its `XA COMMIT`, so reading
//!   must see the prepare again).
//! - `copy`: per table, the last primary key copied (or that the table is done); a table
//!   absent has not started.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};
use shard_map::gtid::GtidPos;

use crate::error::MoverError;
use crate::value::Key;

/// The database holding the mover's own tables on every target.
pub const STATE_DB: &str = "_switchyard";

/// One table's copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableCopy {
    /// Rows up to `last` (in key order) are copied.
    Started { last: Key, rows: u64 },
    /// Every row is copied.
    Done { rows: u64 },
}

/// A stream's saved state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub pos: GtidPos,
    pub resume: GtidPos,
    pub copy: BTreeMap<String, TableCopy>,
}

impl Saved {
    /// Whether every table in `tables` is copied.
    pub fn copied(&self, tables: &[String]) -> bool {
        tables
            .iter()
            .all(|t| matches!(self.copy.get(t), Some(TableCopy::Done { .. })))
    }

    /// Rows copied so far, over all tables.
    pub fn rows_copied(&self) -> u64 {
        self.copy
            .values()
            .map(|c| match c {
                TableCopy::Started { rows, .. } | TableCopy::Done { rows } => *rows,
            })
            .sum()
    }
}

/// Creates the state table on a target (idempotent).
pub async fn ensure_table(conn: &mut Conn) -> Result<(), MoverError> {
    let what = "creating the stream state table";
    for s in [
        format!("CREATE DATABASE IF NOT EXISTS `{STATE_DB}`"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{STATE_DB}`.streams (\
             name VARCHAR(190) NOT NULL PRIMARY KEY, \
             pos TEXT NOT NULL, resume TEXT NOT NULL, copy MEDIUMTEXT NOT NULL, \
             updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) \
             ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
        ),
    ] {
        conn.query_drop(s)
            .await
            .map_err(|e| MoverError::sql(what, e))?;
    }
    Ok(())
}

/// Registers a new stream (fails if one of that name exists: names are unique per target).
pub async fn create(conn: &mut Conn, name: &str) -> Result<(), MoverError> {
    conn.exec_drop(
        format!(
            "INSERT INTO `{STATE_DB}`.streams (name, pos, resume, copy) VALUES (?, '', '', '{{}}')"
        ),
        (name,),
    )
    .await
    .map_err(|e| MoverError::sql(&format!("registering stream {name}"), e))
}

/// The saved state of stream `name`, if it exists.
pub async fn load(conn: &mut Conn, name: &str) -> Result<Option<Saved>, MoverError> {
    let what = format!("reading the state of stream {name}");
    let row: Option<(String, String, String)> = conn
        .exec_first(
            format!("SELECT pos, resume, copy FROM `{STATE_DB}`.streams WHERE name = ?"),
            (name,),
        )
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    let Some((pos, resume, copy)) = row else {
        return Ok(None);
    };
    let bad = |e: String| MoverError::State(format!("{what}: {e}"));
    Ok(Some(Saved {
        pos: GtidPos::parse(&pos).map_err(|e| bad(e.to_string()))?,
        resume: GtidPos::parse(&resume).map_err(|e| bad(e.to_string()))?,
        copy: serde_json::from_str(&copy).map_err(|e| bad(e.to_string()))?,
    }))
}

/// Saves `state` (inside the caller's transaction); fails unless exactly one row matched.
pub async fn save(conn: &mut Conn, name: &str, state: &Saved) -> Result<(), MoverError> {
    let copy = serde_json::to_string(&state.copy).expect("copy state serialises");
    conn.exec_drop(
        format!("UPDATE `{STATE_DB}`.streams SET pos = ?, resume = ?, copy = ? WHERE name = ?"),
        (state.pos.to_string(), state.resume.to_string(), copy, name),
    )
    .await
    .map_err(|e| MoverError::sql(&format!("saving the state of stream {name}"), e))?;
    if conn.affected_rows() != 1 {
        return Err(MoverError::State(format!(
            "stream {name} has no state row on its target (deleted?)"
        )));
    }
    Ok(())
}

/// Forgets stream `name` (after `complete` or `cancel`).
pub async fn delete(conn: &mut Conn, name: &str) -> Result<(), MoverError> {
    conn.exec_drop(
        format!("DELETE FROM `{STATE_DB}`.streams WHERE name = ?"),
        (name,),
    )
    .await
    .map_err(|e| MoverError::sql(&format!("deleting stream {name}"), e))
}
