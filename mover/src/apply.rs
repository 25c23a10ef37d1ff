//! Writing rows to a target: one moving table's statements, and the rule that turns a source
//! row change into what the target must see.
//!
//! A change applies to the target only for row images the target owns: the image's sharding
//! key maps into the target's range *and* the copy has reached its primary key. So an update
//! is an update when both images are owned, a delete when only the old one is (the row moved
//! out of the range, or past the copy), an insert when only the new one is. Each statement
//! must touch exactly one row; anything else means the target and the stream disagree, and the
//! stream stops rather than go on with wrong data.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};

use crate::binlog::RowChange;
use crate::error::MoverError;
use crate::schema::TableSchema;
use crate::sql::{ident, qualified};
use crate::state::TableCopy;
use crate::value::{key_of, Key, RowFilter};

/// A moving table on one target: its schema, which rows the target owns, its statements.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: TableSchema,
    pub filter: RowFilter,
    /// Positions of the columns written (not generated).
    pub written: Vec<usize>,
    insert_head: String,
    delete: String,
    update: String,
}

impl Table {
    pub fn new(schema: TableSchema, filter: RowFilter, target_db: &str) -> Table {
        let written = schema.written();
        let name = qualified(target_db, &schema.name);
        let cols: Vec<String> = written
            .iter()
            .map(|&i| ident(&schema.columns[i].name))
            .collect();
        let key_match: Vec<String> = schema
            .pk
            .iter()
            .map(|&i| format!("{} = ?", ident(&schema.columns[i].name)))
            .collect();
        let key_match = key_match.join(" AND ");
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = ?")).collect();
        Table {
            insert_head: format!("INSERT INTO {name} ({}) VALUES ", cols.join(", ")),
            delete: format!("DELETE FROM {name} WHERE {key_match}"),
            update: format!("UPDATE {name} SET {} WHERE {key_match}", sets.join(", ")),
            schema,
            filter,
            written,
        }
    }

    /// The primary key of a full row.
    pub fn key(&self, row: &[Value]) -> Result<Key, MoverError> {
        key_of(row, &self.schema.pk)
    }

    /// Whether the target owns this row image, given how far the copy has come.
    pub fn owns(&self, row: &[Value], copy: Option<&TableCopy>) -> Result<bool, MoverError> {
        if row.len() != self.schema.columns.len() {
            return Err(MoverError::Stopped {
                gtid: String::new(),
                reason: format!(
                    "a row of {} has {} columns, the table had {} when the move started \
                     (changed by a DDL the stream did not see?)",
                    self.schema.name,
                    row.len(),
                    self.schema.columns.len()
                ),
            });
        }
        let copied = match copy {
            None => false,
            Some(TableCopy::Done { .. }) => true,
            Some(TableCopy::Started { last, .. }) => self.key(row)? <= *last,
        };
        Ok(copied && self.filter.keeps(row)?)
    }

    /// Applies one source row change; returns whether it wrote anything.
    pub async fn apply(
        &self,
        conn: &mut Conn,
        change: &RowChange,
        copy: Option<&TableCopy>,
    ) -> Result<bool, MoverError> {
        let before = match &change.before {
            Some(r) if self.owns(r, copy)? => Some(r),
            _ => None,
        };
        let after = match &change.after {
            Some(r) if self.owns(r, copy)? => Some(r),
            _ => None,
        };
        let (sql, params, what) = match (before, after) {
            (None, None) => return Ok(false),
            (Some(b), Some(a)) => {
                let mut p = self.values(a);
                p.extend(self.key_values(b));
                (self.update.clone(), p, "update")
            }
            (Some(b), None) => (self.delete.clone(), self.key_values(b), "delete"),
            (None, Some(a)) => (
                format!("{}({})", self.insert_head, marks(self.written.len())),
                self.values(a),
                "insert",
            ),
        };
        let key = self.key(before.or(after).expect("one image"))?;
        conn.exec_drop(sql, Params::Positional(params))
            .await
            .map_err(|e| {
                MoverError::apply(&format!("{what} of {} key {key:?}", self.schema.name), e)
            })?;
        if conn.affected_rows() != 1 {
            return Err(MoverError::Data(format!(
                "{what} of {} key {key:?} touched {} rows on the target, 1 expected: the \
                 target and the stream disagree",
                self.schema.name,
                conn.affected_rows()
            )));
        }
        Ok(true)
    }

    /// Inserts copied rows (full rows, in key order), in statements of at most ~60k values.
    pub async fn insert_rows(
        &self,
        conn: &mut Conn,
        rows: &[Vec<Value>],
    ) -> Result<(), MoverError> {
        let per = (60_000 / self.written.len().max(1)).max(1);
        for batch in rows.chunks(per) {
            let tuple = format!("({})", marks(self.written.len()));
            let sql = format!(
                "{}{}",
                self.insert_head,
                vec![tuple; batch.len()].join(", ")
            );
            let params: Vec<Value> = batch.iter().flat_map(|r| self.values(r)).collect();
            conn.exec_drop(sql, Params::Positional(params))
                .await
                .map_err(|e| {
                    MoverError::apply(&format!("copying rows of {}", self.schema.name), e)
                })?;
            if conn.affected_rows() != batch.len() as u64 {
                return Err(MoverError::Data(format!(
                    "copying {} rows of {} inserted {}",
                    batch.len(),
                    self.schema.name,
                    conn.affected_rows()
                )));
            }
        }
        Ok(())
    }

    fn values(&self, row: &[Value]) -> Vec<Value> {
        self.written.iter().map(|&i| row[i].clone()).collect()
    }

    fn key_values(&self, row: &[Value]) -> Vec<Value> {
        self.schema.pk.iter().map(|&i| row[i].clone()).collect()
    }
}

fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}
