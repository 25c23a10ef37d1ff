//! What the mover needs to know of a moving table, read from the source's
//! `information_schema`, and the preconditions a move checks before it starts: row-based
//! binary logs with full images and column metadata, a primary key of a type whose order the
//! mover reproduces exactly, empty target tables created like the source's.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::error::MoverError;
use crate::sql::{ident, qualified};

/// One column, in the table's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE` (`bigint`, `varchar`, ...).
    pub data_type: String,
    pub collation: Option<String>,
    /// A generated column: never written, its value follows from the others.
    pub generated: bool,
}

/// A moving table's columns and primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    /// The primary key's columns (positions in `columns`), in key order.
    pub pk: Vec<usize>,
}

impl TableSchema {
    /// Reads `db.table` from `conn`'s server, refusing tables the mover cannot move exactly.
    pub async fn load(conn: &mut Conn, db: &str, table: &str) -> Result<TableSchema, MoverError> {
        let what = format!("reading the columns of {db}.{table}");
        let rows: Vec<(String, String, Option<String>, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLLATION_NAME, EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await
            .map_err(|e| MoverError::sql(&what, e))?;
        if rows.is_empty() {
            return Err(MoverError::Refused(format!(
                "table {db}.{table} does not exist"
            )));
        }
        let columns: Vec<ColumnInfo> = rows
            .into_iter()
            .map(|(name, data_type, collation, extra)| ColumnInfo {
                name,
                data_type: data_type.to_ascii_lowercase(),
                collation,
                generated: extra.to_ascii_uppercase().contains("GENERATED"),
            })
            .collect();
        let keys: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
                 AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (db, table),
            )
            .await
            .map_err(|e| MoverError::sql(&what, e))?;
        if keys.is_empty() {
            return Err(MoverError::Refused(format!(
                "table {db}.{table} has no primary key: a move needs one to copy in key order \
                 and to find each changed row"
            )));
        }
        let mut pk = Vec::new();
        for k in &keys {
            let i = columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(k))
                .ok_or_else(|| {
                    MoverError::State(format!("key column {k} not among the columns"))
                })?;
            let c = &columns[i];
            if !orderable(c) {
                return Err(MoverError::Refused(format!(
                    "table {db}.{table}: primary key column {} is {}{}; a move compares keys \
                     itself and does so exactly only for integer, BINARY/VARBINARY and \
                     no-pad binary-collated keys",
                    c.name,
                    c.data_type,
                    c.collation
                        .as_deref()
                        .map(|x| format!(" with collation {x}"))
                        .unwrap_or_default()
                )));
            }
            pk.push(i);
        }
        Ok(TableSchema {
            name: table.to_owned(),
            columns,
            pk,
        })
    }

    /// The position of column `name` (case-insensitive).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// `a, b, c`: every column, for reads.
    pub fn select_list(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        cols.join(", ")
    }

    /// The positions of the columns that are written (not generated).
    pub fn written(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| !self.columns[i].generated)
            .collect()
    }

    /// `ORDER BY` list of the primary key.
    pub fn key_order(&self) -> String {
        let cols: Vec<String> = self
            .pk
            .iter()
            .map(|&i| ident(&self.columns[i].name))
            .collect();
        cols.join(", ")
    }

    /// `(k1 > ?) OR (k1 = ? AND k2 > ?) ...`: rows after a key; and how many times each key
    /// part is bound, in order (part `j` appears in the `j`-th and later disjuncts).
    pub fn after_key(&self) -> (String, Vec<usize>) {
        let mut disjuncts = Vec::new();
        let mut binds = Vec::new();
        for j in 0..self.pk.len() {
            let mut conj = Vec::new();
            for (m, &i) in self.pk[..j].iter().enumerate() {
                conj.push(format!("{} = ?", ident(&self.columns[i].name)));
                binds.push(m);
            }
            conj.push(format!("{} > ?", ident(&self.columns[self.pk[j]].name)));
            binds.push(j);
            disjuncts.push(format!("({})", conj.join(" AND ")));
        }
        (disjuncts.join(" OR "), binds)
    }
}

/// Whether the mover orders this key column exactly as the index does.
fn orderable(c: &ColumnInfo) -> bool {
    const INTEGERS: [&str; 6] = ["tinyint", "smallint", "mediumint", "int", "bigint", "year"];
    if INTEGERS.contains(&c.data_type.as_str()) {
        return true;
    }
    match c.data_type.as_str() {
        "binary" | "varbinary" => true,
        "char" | "varchar" => c
            .collation
            .as_deref()
            .is_some_and(|x| x.ends_with("_nopad_bin")),
        _ => false,
    }
}

/// Checks the source server's binary log settings a change stream depends on.
pub async fn check_source(conn: &mut Conn, addr: &str) -> Result<(), MoverError> {
    let what = format!("reading the binary log settings of {addr}");
    let row: Option<(u8, String, String, String)> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    let (log_bin, format, image, metadata) =
        row.ok_or_else(|| MoverError::State(format!("{what}: no row")))?;
    let mut problems = Vec::new();
    if log_bin != 1 {
        problems.push("the binary log is off (start it with --log-bin)".to_owned());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        problems.push(format!("binlog_format is {format}, ROW is needed"));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        problems.push(format!("binlog_row_image is {image}, FULL is needed"));
    }
    if !metadata.eq_ignore_ascii_case("FULL") {
        problems.push(format!(
            "binlog_row_metadata is {metadata}, FULL is needed (SET GLOBAL binlog_row_metadata = FULL)"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MoverError::Refused(format!(
            "source {addr} cannot be streamed: {}",
            problems.join("; ")
        )))
    }
}

/// Creates `target_db.table` on the target like `source_db.table` on the source (unless it
/// exists), and refuses a target table that already holds rows.
pub async fn create_target_table(
    source: &mut Conn,
    target: &mut Conn,
    source_db: &str,
    target_db: &str,
    table: &str,
) -> Result<(), MoverError> {
    let what = format!("reading the definition of {source_db}.{table}");
    let row: Option<(String, String)> = source
        .query_first(format!("SHOW CREATE TABLE {}", qualified(source_db, table)))
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    let (_, ddl) = row.ok_or_else(|| MoverError::State(format!("{what}: no row")))?;
    let head = format!("CREATE TABLE {}", ident(table));
    let Some(rest) = ddl.strip_prefix(&head) else {
        return Err(MoverError::State(format!(
            "{what}: unexpected SHOW CREATE TABLE text"
        )));
    };
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {}{rest}",
        qualified(target_db, table)
    );
    let what = format!("creating {target_db}.{table} on the target");
    target
        .query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            ident(target_db)
        ))
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    target
        .query_drop(create)
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    let any: Option<u8> = target
        .query_first(format!(
            "SELECT 1 FROM {} LIMIT 1",
            qualified(target_db, table)
        ))
        .await
        .map_err(|e| MoverError::sql(&what, e))?;
    if any.is_some() {
        return Err(MoverError::Refused(format!(
            "target table {target_db}.{table} already holds rows: a move starts on empty tables"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str, coll: Option<&str>) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: t.into(),
            collation: coll.map(Into::into),
            generated: false,
        }
    }

    #[test]
    fn only_exactly_ordered_keys_are_accepted() {
        assert!(orderable(&col("a", "bigint", None)));
        assert!(orderable(&col("a", "varbinary", None)));
        assert!(orderable(&col("a", "varchar", Some("utf8mb4_nopad_bin"))));
        assert!(!orderable(&col("a", "varchar", Some("utf8mb4_bin"))));
        assert!(!orderable(&col("a", "varchar", Some("utf8mb4_general_ci"))));
        assert!(!orderable(&col("a", "double", None)));
        assert!(!orderable(&col("a", "datetime", None)));
    }

    #[test]
    fn after_key_expands_composite_keys() {
        let t = TableSchema {
            name: "t".into(),
            columns: vec![
                col("x", "int", None),
                col("a", "int", None),
                col("b", "int", None),
            ],
            pk: vec![1, 2],
        };
        let (sql, binds) = t.after_key();
        assert_eq!(sql, "(`a` > ?) OR (`a` = ? AND `b` > ?)");
        assert_eq!(binds, vec![0, 0, 1]);
        assert_eq!(t.key_order(), "`a`, `b`");
        assert_eq!(t.select_list(), "`x`, `a`, `b`");
    }
}
