//! Comparing a moving table's rows on the source (those the target owns) with the target's,
//! both read from snapshots at the same source position, merged in primary-key order.

use std::cmp::Ordering;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};
use serde::Serialize;

use crate::apply::Table;
use crate::error::MoverError;
use crate::sql::qualified;
use crate::value::Key;

/// How many differing keys a report lists per kind.
const SAMPLE: usize = 20;

/// A diff of every moving table at one source position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    /// The source position both sides were read at.
    pub pos: String,
    pub tables: Vec<TableDiff>,
}

impl DiffReport {
    /// Whether both sides hold the same rows.
    pub fn is_clean(&self) -> bool {
        self.tables.iter().all(TableDiff::is_clean)
    }
}

/// One table's comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    pub table: String,
    /// Rows the target owns on the source.
    pub source_rows: u64,
    pub target_rows: u64,
    /// Keys on the source, not on the target (at most 20 listed, all counted).
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Keys on the target, not on the source.
    pub extra: Vec<String>,
    pub extra_count: u64,
    /// Keys on both sides with different values.
    pub different: Vec<String>,
    pub different_count: u64,
}

impl TableDiff {
    pub fn is_clean(&self) -> bool {
        self.missing_count == 0 && self.extra_count == 0 && self.different_count == 0
    }
}

/// Reads one side in key order, a chunk at a time.
struct Side<'a> {
    conn: &'a mut Conn,
    from: String,
    table: &'a Table,
    chunk: usize,
    last: Option<Key>,
    buf: std::collections::VecDeque<(Key, Vec<Value>)>,
    done: bool,
    /// Keep only the rows the target owns (the source side).
    filter: bool,
}

impl Side<'_> {
    async fn next(&mut self) -> Result<Option<(Key, Vec<Value>)>, MoverError> {
        while self.buf.is_empty() && !self.done {
            let s = &self.table.schema;
            let (sql, params) = match &self.last {
                None => (
                    format!(
                        "SELECT {} FROM {} ORDER BY {} LIMIT {}",
                        s.select_list(),
                        self.from,
                        s.key_order(),
                        self.chunk
                    ),
                    Vec::new(),
                ),
                Some(last) => {
                    let (cond, binds) = s.after_key();
                    (
                        format!(
                            "SELECT {} FROM {} WHERE {cond} ORDER BY {} LIMIT {}",
                            s.select_list(),
                            self.from,
                            s.key_order(),
                            self.chunk
                        ),
                        binds.iter().map(|&j| last[j].to_value()).collect(),
                    )
                }
            };
            let rows: Vec<Row> = self
                .conn
                .exec(sql, Params::from(params))
                .await
                .map_err(|e| MoverError::sql(&format!("diff: reading {}", self.from), e))?;
            self.done = rows.len() < self.chunk;
            for r in rows {
                let r = r.unwrap();
                let k = self.table.key(&r)?;
                self.last = Some(k.clone());
                if !self.filter || self.table.filter.keeps(&r)? {
                    self.buf.push_back((k, r));
                }
            }
        }
        Ok(self.buf.pop_front())
    }
}

/// Compares `table` on both snapshots.
pub async fn compare(
    table: &Table,
    source: &mut Conn,
    source_db: &str,
    target: &mut Conn,
    target_db: &str,
    chunk: usize,
) -> Result<TableDiff, MoverError> {
    let name = &table.schema.name;
    let side = |conn, db: &str, filter| Side {
        conn,
        from: qualified(db, name),
        table,
        chunk: chunk.max(1),
        last: None,
        buf: Default::default(),
        done: false,
        filter,
    };
    let mut src = side(source, source_db, true);
    let mut tgt = side(target, target_db, false);
    let mut d = TableDiff {
        table: name.clone(),
        ..TableDiff::default()
    };
    let note = |list: &mut Vec<String>, count: &mut u64, k: &Key| {
        *count += 1;
        if list.len() < SAMPLE {
            list.push(format!("{k:?}"));
        }
    };
    let mut a = src.next().await?;
    let mut b = tgt.next().await?;
    loop {
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => {
                d.source_rows += 1;
                note(
                    &mut d.missing,
                    &mut d.missing_count,
                    &a.as_ref().expect("some").0,
                );
                a = src.next().await?;
            }
            Ordering::Greater => {
                d.target_rows += 1;
                note(
                    &mut d.extra,
                    &mut d.extra_count,
                    &b.as_ref().expect("some").0,
                );
                b = tgt.next().await?;
            }
            Ordering::Equal => {
                d.source_rows += 1;
                d.target_rows += 1;
                let (ka, ra) = a.as_ref().expect("some");
                let (_, rb) = b.as_ref().expect("some");
                if ra != rb {
                    note(&mut d.different, &mut d.different_count, ka);
                }
                a = src.next().await?;
                b = tgt.next().await?;
            }
        }
    }
    Ok(d)
}
