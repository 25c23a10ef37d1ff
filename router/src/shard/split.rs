//! Writes over several shards: a multi-row INSERT's rows grouped by shard (the client's text
//! cut into one INSERT per shard, each with only its rows), UPDATE/DELETE over several shards
//! (the client's text on each), reference-table writes (every copy), and UPDATEs of the key
//! that provably keep rows on their shard.
//!
//! The text is cut, never re-serialised: the column list, `IGNORE`, `ON DUPLICATE KEY
//! UPDATE`, comments and spelling stay exactly as the client wrote them.

use std::collections::BTreeMap;

use shard_map::{KeyspaceMap, ShardLookup, ShardTarget, ShardedTable};
use sqlparser::ast::{Expr, InTarget, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::join::KeyColumns;
use super::plan::{key_values, last_ident, Key, Plan, Values};

/// An UPDATE that sets the shard key: routed only when every row it can touch provably stays
/// on its shard (WHERE pins the key to values of one shard, and each new key value is a
/// literal of that same shard), else refused: moving a row between shards is not done.
pub(super) fn key_update(
    ks: &KeyspaceMap,
    table: &str,
    t: &ShardedTable,
    u: &sqlparser::ast::Update,
    ctx: &Values<'_>,
) -> Plan {
    use sqlparser::ast::AssignmentTarget;
    let refuse = || {
        Plan::Refuse(format!(
            "UPDATE of shard key column `{}` of `{table}` that can move rows to another shard",
            t.column
        ))
    };
    let same = |a: &ShardTarget, b: &ShardTarget| a.shard == b.shard && a.cluster == b.cluster;
    let mut target: Option<ShardTarget> = None;
    for a in &u.assignments {
        let value = match &a.target {
            AssignmentTarget::ColumnName(n) if last_ident(n).is_some_and(|c| t.is_column(&c)) => {
                &a.value
            }
            AssignmentTarget::Tuple(ns)
                if ns
                    .iter()
                    .any(|n| last_ident(n).is_some_and(|c| t.is_column(&c))) =>
            {
                return refuse()
            }
            _ => continue,
        };
        let s = match ctx.key(value) {
            Key::Known(v) => match ks.shard_for_insert(t, &v) {
                Ok(s) => s.clone(),
                Err(_) => return refuse(),
            },
            Key::Param => return Plan::NeedsParams,
            Key::Unusable => return refuse(),
        };
        match &target {
            Some(prev) if !same(prev, &s) => return refuse(),
            _ => target = Some(s),
        }
    }
    let Some(target) = target else {
        return refuse();
    };
    let Some(values) = key_values(u.selection.as_ref(), &KeyColumns::Single(t), ctx) else {
        return refuse();
    };
    for v in values {
        match v {
            Key::Known(v) => match ks.shard_for_read(t, &v) {
                ShardLookup::One(s) if same(s, &target) => {}
                ShardLookup::Nowhere => {}
                _ => return refuse(),
            },
            Key::Param => return Plan::NeedsParams,
            Key::Unusable => return refuse(),
        }
    }
    Plan::Single(target)
}

/// A write to a reference table: the same text on every shard's copy.
pub(super) fn reference_write(ks: &KeyspaceMap, table: &str, sql: &str) -> Plan {
    // Every copy must end up the same: nothing whose value differs from server to server,
    // and no LIMIT that could pick different rows on each.
    for w in crate::classify::words(sql) {
        let upper = w.to_ascii_uppercase();
        if upper == "LIMIT" {
            return Plan::Refuse(format!(
                "LIMIT in a write to reference table `{table}` (each copy could pick other rows)"
            ));
        }
        if NONDETERMINISTIC.contains(&upper.as_str()) {
            return Plan::Refuse(format!(
                "{upper} in a write to reference table `{table}` (each copy would get its own \
                 value; compute it first, or quote a column of that name with backticks)"
            ));
        }
    }
    match ks.all_shards() {
        [] => Plan::Refuse("a keyspace without shards".into()),
        [one] => Plan::Single(one.clone()),
        all => {
            let _ = table;
            Plan::MultiWrite {
                parts: all.iter().map(|t| (t.clone(), sql.to_string())).collect(),
                copies: true,
            }
        }
    }
}

/// Functions (and their keyword forms) whose value depends on the server, the connection or
/// the moment: in a reference-table write each copy would store another value.
const NONDETERMINISTIC: &[&str] = &[
    "NOW",
    "SYSDATE",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURDATE",
    "CURTIME",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UNIX_TIMESTAMP",
    "RAND",
    "RANDOM_BYTES",
    "UUID",
    "UUID_SHORT",
    "SYS_GUID",
    "CONNECTION_ID",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "LAST_INSERT_ID",
    "ROW_COUNT",
    "FOUND_ROWS",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "VERSION",
    "DATABASE",
    "SCHEMA",
    "BENCHMARK",
    "SLEEP",
    "GET_LOCK",
];

/// UPDATE/DELETE on a sharded table: the shards its key values (if any) name, else every
/// shard; the client's text runs on each.
pub(super) fn plan_write(
    ks: &KeyspaceMap,
    table: &str,
    t: &ShardedTable,
    stmt: &Statement,
    values: Option<Vec<Key>>,
    sql: &str,
) -> Plan {
    let all = || ks.all_shards().to_vec();
    let targets: Vec<ShardTarget> = match values {
        None => all(),
        Some(values) => {
            let mut found: BTreeMap<String, ShardTarget> = BTreeMap::new();
            let mut everywhere = false;
            for v in values {
                match v {
                    Key::Param => return Plan::NeedsParams,
                    Key::Unusable => everywhere = true,
                    Key::Known(v) => match ks.shard_for_read(t, &v) {
                        ShardLookup::One(s) => {
                            found.insert(s.shard.clone(), s.clone());
                        }
                        ShardLookup::Nowhere => {}
                        ShardLookup::All(_) => everywhere = true,
                    },
                }
            }
            if everywhere {
                all()
            } else {
                found.into_values().collect()
            }
        }
    };
    match targets.len() {
        // No row can match: any shard gives the right (zero rows) answer.
        0 => ks.all_shards().first().cloned().map_or_else(
            || Plan::Refuse("a keyspace without shards".into()),
            Plan::Single,
        ),
        1 => Plan::Single(targets.into_iter().next().expect("one target")),
        n => {
            let (verb, limited) = match stmt {
                Statement::Update(u) => ("UPDATE", u.limit.is_some() || !u.order_by.is_empty()),
                Statement::Delete(d) => ("DELETE", d.limit.is_some() || !d.order_by.is_empty()),
                _ => return Plan::Refuse(format!("this statement on sharded table `{table}`")),
            };
            if limited {
                return Plan::Refuse(format!(
                    "{verb} with ORDER BY or LIMIT on sharded table `{table}` over {n} shards"
                ));
            }
            let subquery = sqlparser::ast::visit_expressions(stmt, |e| match e {
                Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::In {
                    target: InTarget::Subquery(_),
                    ..
                } => std::ops::ControlFlow::Break(()),
                _ => std::ops::ControlFlow::Continue(()),
            })
            .is_break();
            if subquery {
                return Plan::Refuse(format!(
                    "{verb} with a subquery on sharded table `{table}` over {n} shards"
                ));
            }
            Plan::MultiWrite {
                parts: targets.into_iter().map(|t| (t, sql.to_string())).collect(),
                copies: false,
            }
        }
    }
}

/// A multi-row INSERT whose rows (`row_shards[i]` is row `i`'s shard) span shards: one INSERT
/// per shard with only its rows, shards on the same cluster next to each other.
pub(super) fn split_insert(table: &str, sql: &str, row_shards: &[&ShardTarget]) -> Plan {
    let mut groups: BTreeMap<(String, String), (ShardTarget, Vec<usize>)> = BTreeMap::new();
    for (i, s) in row_shards.iter().enumerate() {
        groups
            .entry((s.cluster.clone(), s.shard.clone()))
            .or_insert_with(|| ((*s).clone(), Vec::new()))
            .1
            .push(i);
    }
    let (targets, rows): (Vec<ShardTarget>, Vec<Vec<usize>>) = groups.into_values().unzip();
    match rewrite_insert(sql, &rows, row_shards.len()) {
        Some(texts) => Plan::MultiWrite {
            parts: targets.into_iter().zip(texts).collect(),
            copies: false,
        },
        None => Plan::Refuse(format!(
            "multi-row INSERT into `{table}` whose VALUES list can't be cut by shard"
        )),
    }
}

/// The client's INSERT text once per group of rows: `groups[i]` lists the (0-based) rows of
/// the `i`-th text. `None` when the VALUES list can't be found exactly (`rows` tuples after
/// the first top-level `VALUES`/`VALUE`).
pub fn rewrite_insert(sql: &str, groups: &[Vec<usize>], rows: usize) -> Option<Vec<String>> {
    let spans = row_spans(sql)?;
    if spans.len() != rows {
        return None;
    }
    let prefix = &sql[..spans[0].0];
    let suffix = &sql[spans[rows - 1].1..];
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut text = String::with_capacity(sql.len());
        text.push_str(prefix);
        for (i, r) in g.iter().enumerate() {
            let (a, b) = *spans.get(*r)?;
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(&sql[a..b]);
        }
        text.push_str(suffix);
        out.push(text);
    }
    Some(out)
}

/// Byte ranges of each `( ... )` row of the first top-level VALUES list.
pub(super) fn row_spans(sql: &str) -> Option<Vec<(usize, usize)>> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let offsets = LineOffsets::new(sql);
    let mut depth = 0i32;
    let mut i = 0;
    // The VALUES keyword at depth 0.
    loop {
        let t = tokens.get(i)?;
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if depth == 0 && matches!(w.keyword, Keyword::VALUES | Keyword::VALUE) =>
            {
                i += 1;
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let skip_ws = |i: &mut usize| {
        while tokens
            .get(*i)
            .is_some_and(|t| matches!(t.token, Token::Whitespace(_)))
        {
            *i += 1;
        }
    };
    let mut spans = Vec::new();
    loop {
        skip_ws(&mut i);
        let open = tokens.get(i)?;
        if open.token != Token::LParen {
            return None;
        }
        let start = offsets.at(open.span.start)?;
        let mut d = 0;
        let end;
        loop {
            let t = tokens.get(i)?;
            match t.token {
                Token::LParen => d += 1,
                Token::RParen => {
                    d -= 1;
                    if d == 0 {
                        end = offsets.at(t.span.end)?;
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        spans.push((start, end));
        skip_ws(&mut i);
        match tokens.get(i).map(|t| &t.token) {
            Some(Token::Comma) => i += 1,
            _ => return Some(spans),
        }
    }
}

/// Line/column (1-based, in characters, as the tokenizer counts) to byte offsets.
pub(super) struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    pub(super) fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { sql, starts }
    }

    pub(super) fn at(&self, loc: Location) -> Option<usize> {
        let line_start = *self.starts.get((loc.line as usize).checked_sub(1)?)?;
        let col = (loc.column as usize).checked_sub(1)?;
        let rest = &self.sql[line_start..];
        match rest.char_indices().nth(col) {
            Some((b, _)) => Some(line_start + b),
            None if rest.chars().count() == col => Some(line_start + rest.len()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cut_by_group_keeping_everything_else() {
        let sql = "INSERT IGNORE INTO t (a, b) VALUES (1, 'x,(y)'),\n (2, f(3)) , (3, '''') \
                   ON DUPLICATE KEY UPDATE b = VALUES(b)";
        let out = rewrite_insert(sql, &[vec![0, 2], vec![1]], 3).unwrap();
        assert_eq!(
            out[0],
            "INSERT IGNORE INTO t (a, b) VALUES (1, 'x,(y)'), (3, '''') \
             ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
        assert_eq!(
            out[1],
            "INSERT IGNORE INTO t (a, b) VALUES (2, f(3)) ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
        let sql = "insert into t value (1),(2)";
        assert_eq!(
            rewrite_insert(sql, &[vec![1], vec![0]], 2).unwrap(),
            vec!["insert into t value (2)", "insert into t value (1)"]
        );
        assert!(rewrite_insert("INSERT INTO t VALUES (1)", &[vec![0]], 2).is_none());
        let sql = "INSERT INTO t (a) VALUES ('é'), ('ü')";
        assert_eq!(
            rewrite_insert(sql, &[vec![1]], 2).unwrap(),
            vec!["INSERT INTO t (a) VALUES ('ü')"]
        );
    }
}
