//! A statement's outcome on either side, in a form that compares as a client would see it.

use std::fmt;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::*;
use mysql_async::{Conn, Params, QueryResult, Row, Value};

use crate::generator::{quote, Sql, Stmt};

/// A statement's outcome on one side, in a comparable form.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Rows {
        columns: Vec<(String, ColumnType)>,
        rows: Vec<Vec<String>>,
    },
    Done {
        affected: u64,
    },
    Error {
        code: u16,
        message: String,
    },
    /// Not a server error: the connection broke, a protocol error...
    Broken(String),
}

impl Outcome {
    pub fn refused(&self) -> bool {
        matches!(self, Outcome::Error { code: 1235, .. })
    }

    /// Equal as far as a client can tell: errors by code (messages name databases).
    pub fn same_as(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Error { code: a, .. }, Outcome::Error { code: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Rows { columns, rows } => {
                let cols: Vec<String> = columns.iter().map(|(n, t)| format!("{n}:{t:?}")).collect();
                writeln!(f, "{} rows [{}]", rows.len(), cols.join(", "))?;
                for r in rows.iter().take(12) {
                    writeln!(f, "      ({})", r.join(", "))?;
                }
                if rows.len() > 12 {
                    writeln!(f, "      ...")?;
                }
                Ok(())
            }
            Outcome::Done { affected } => writeln!(f, "OK, {affected} affected"),
            Outcome::Error { code, message } => writeln!(f, "error {code}: {message}"),
            Outcome::Broken(e) => writeln!(f, "broken: {e}"),
        }
    }
}

/// One value as compared: text-protocol values are strings, binary-protocol ones keep their
/// type (a decimal sent as an integer is a difference a client sees).
fn cell(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => quote(&String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    }
}

async fn collect<P: mysql_async::prelude::Protocol>(
    mut r: QueryResult<'_, 'static, P>,
) -> Result<(Outcome, u16), mysql_async::Error> {
    let columns = r.columns().filter(|c| !c.is_empty());
    let rows: Vec<Row> = r.collect().await?;
    let affected = r.affected_rows();
    let warnings = r.warnings();
    r.drop_result().await?;
    let outcome = match columns {
        Some(cols) => Outcome::Rows {
            columns: cols
                .iter()
                .map(|c| (c.name_str().into_owned(), c.column_type()))
                .collect(),
            rows: rows
                .into_iter()
                .map(|r| r.unwrap().iter().map(cell).collect())
                .collect(),
        },
        None => Outcome::Done { affected },
    };
    Ok((outcome, warnings))
}

/// Runs a statement; the outcome and the number of warnings it left.
pub async fn run(conn: &mut Conn, sql: &Sql, prepared: bool) -> (Outcome, u16) {
    let r = if prepared {
        match conn
            .exec_iter(sql.prep.as_str(), Params::Positional(sql.params.clone()))
            .await
        {
            Ok(r) => collect(r).await,
            Err(e) => Err(e),
        }
    } else {
        match conn.query_iter(sql.text.as_str()).await {
            Ok(r) => collect(r).await,
            Err(e) => Err(e),
        }
    };
    match r {
        Ok(o) => o,
        Err(mysql_async::Error::Server(e)) => (
            Outcome::Error {
                code: e.code,
                message: e.message,
            },
            0,
        ),
        Err(e) => (Outcome::Broken(e.to_string()), 0),
    }
}

/// Sorted unless the statement's ORDER BY fixes the order; case-folded where the server may
/// return any case variant.
pub fn normalize(mut o: Outcome, s: &Stmt) -> Outcome {
    if let Outcome::Rows { rows, .. } = &mut o {
        if s.fold_case {
            for r in rows.iter_mut() {
                for c in r.iter_mut() {
                    *c = c.to_lowercase();
                }
            }
        }
        if !s.ordered {
            rows.sort();
        }
    }
    o
}
