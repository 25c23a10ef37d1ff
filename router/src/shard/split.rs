//! Writes over several shards: a multi-row INSERT's rows grouped by shard (the client's text
//! cut into one INSERT per shard, each with only its rows), UPDATE/DELETE over several shards
//! (the client's text on each), and the literal values that stand in for a prepared
//! statement's parameters when its text must be cut.
//!
//! The text is cut, never re-serialised: the column list, `IGNORE`, `ON DUPLICATE KEY
//! UPDATE`, comments and spelling stay exactly as the client wrote them.

use std::collections::BTreeMap;

use shard_map::{KeyspaceMap, ShardLookup, ShardTarget, ShardedTable};
use sqlparser::ast::{Expr, InTarget, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

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
    let Some(values) = key_values(u.selection.as_ref(), t, ctx) else {
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
fn row_spans(sql: &str) -> Option<Vec<(usize, usize)>> {
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
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { sql, starts }
    }

    fn at(&self, loc: Location) -> Option<usize> {
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

/// Which rows of an INSERT need a generated AUTO_INCREMENT value for `column` (whose position
/// in the table is `table_pos`, 0-based): the rows of a VALUES list that omit the column, or
/// give it NULL or 0. `None` when the statement is not such an INSERT or no row needs one.
/// Also returns the column's position in the rows (`None` when the column list omits it).
pub fn auto_increment_rows(
    sql: &str,
    column: &str,
    table_pos: usize,
) -> Option<(Option<usize>, Vec<bool>)> {
    use sqlparser::ast::{SetExpr, Value};
    let stmt = match sqlparser::parser::Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        _ => return None,
    };
    let Statement::Insert(i) = stmt else {
        return None;
    };
    if !i.assignments.is_empty() {
        return None;
    }
    let SetExpr::Values(values) = i.source.as_ref()?.body.as_ref() else {
        return None;
    };
    let at = if i.columns.is_empty() {
        Some(table_pos)
    } else {
        i.columns.iter().position(|c| {
            c.0.last()
                .and_then(|p| p.as_ident())
                .is_some_and(|id| id.value.eq_ignore_ascii_case(column))
        })
    };
    let needs: Vec<bool> = values
        .rows
        .iter()
        .map(|row| match at {
            None => true,
            Some(p) => match row.get(p) {
                Some(Expr::Value(v)) => match &v.value {
                    Value::Null => true,
                    Value::Number(n, _) => n == "0",
                    _ => false,
                },
                _ => false,
            },
        })
        .collect();
    needs.iter().any(|n| *n).then_some((at, needs))
}

/// The INSERT with `ids` (one per row that `needs` one, in order) written in: appended to the
/// column list and each row when the list omits the column (`at` is `None`; every row needs
/// one then), else in place of the row's NULL or 0.
pub fn fill_auto_increment(
    sql: &str,
    column: &str,
    at: Option<usize>,
    needs: &[bool],
    ids: &[u64],
) -> Option<String> {
    let spans = row_spans(sql)?;
    if spans.len() != needs.len() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 24 * ids.len());
    let mut last = 0;
    if at.is_none() {
        // The column list's closing parenthesis: the last `)` before the first row.
        let close = sql[..spans[0].0].rfind(')')?;
        out.push_str(&sql[..close]);
        out.push_str(", ");
        out.push_str(&crate::session::state::quote_ident(column));
        last = close;
    }
    let mut next = ids.iter();
    for ((a, b), need) in spans.iter().zip(needs) {
        out.push_str(&sql[last..*a]);
        let row = &sql[*a..*b];
        if *need {
            let id = next.next()?;
            match at {
                None => {
                    out.push_str(&row[..row.len() - 1]);
                    out.push_str(&format!(", {id})"));
                }
                Some(p) => {
                    let (x, y) = element_span(row, p)?;
                    out.push_str(&row[..x]);
                    out.push_str(&id.to_string());
                    out.push_str(&row[y..]);
                }
            }
        } else {
            out.push_str(row);
        }
        last = *b;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// The byte range (trimmed) of the `p`-th element of a `( ... )` row.
fn element_span(row: &str, p: usize) -> Option<(usize, usize)> {
    let tokens = Tokenizer::new(&MySqlDialect {}, row)
        .tokenize_with_location()
        .ok()?;
    let offsets = LineOffsets::new(row);
    let mut depth = 0;
    let mut index = 0;
    let mut start: Option<usize> = None;
    let mut end = 0;
    for t in &tokens {
        match &t.token {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return (index == p).then_some((start?, end));
                }
            }
            Token::Comma if depth == 1 => {
                if index == p {
                    return Some((start?, end));
                }
                index += 1;
                start = None;
                continue;
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        if index == p {
            if start.is_none() {
                start = Some(offsets.at(t.span.start)?);
            }
            end = offsets.at(t.span.end)?;
        }
    }
    None
}

/// Replaces each `?` placeholder of `sql` with the literal at its position.
pub fn substitute(sql: &str, literals: &[String]) -> Option<String> {
    let at = crate::classify::placeholder_offsets(sql);
    if at.len() != literals.len() {
        return None;
    }
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut last = 0;
    for (pos, lit) in at.iter().zip(literals) {
        out.push_str(&sql[last..*pos]);
        out.push_str(lit);
        last = pos + 1;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// The parameters of a COM_STMT_EXECUTE packet that carries its types (as the router always
/// sends it) as SQL literals; `None` for a malformed packet or a type without a literal form.
pub fn literals(packet: &[u8], n: usize) -> Option<Vec<String>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let bitmap = packet.get(10..10 + n.div_ceil(8))?;
    let mut pos = 10 + bitmap.len();
    if *packet.get(pos)? != 1 {
        return None;
    }
    pos += 1;
    let types = packet.get(pos..pos + 2 * n)?;
    pos += 2 * n;
    let mut out = Vec::with_capacity(n);
    let take = |pos: &mut usize, len: usize| -> Option<&[u8]> {
        let b = packet.get(*pos..*pos + len)?;
        *pos += len;
        Some(b)
    };
    for i in 0..n {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".into());
            continue;
        }
        let (ty, unsigned) = (types[2 * i], types[2 * i + 1] & 0x80 != 0);
        let int = |b: &[u8]| -> String {
            let mut buf = [0u8; 8];
            buf[..b.len()].copy_from_slice(b);
            let raw = u64::from_le_bytes(buf);
            if unsigned {
                raw.to_string()
            } else {
                let shift = 64 - 8 * b.len() as u32;
                (((raw << shift) as i64) >> shift).to_string()
            }
        };
        let lit = match ty {
            0x01 => int(take(&mut pos, 1)?),
            0x02 | 0x0d => int(take(&mut pos, 2)?),
            0x03 | 0x09 => int(take(&mut pos, 4)?),
            0x08 => int(take(&mut pos, 8)?),
            0x04 => {
                let b = take(&mut pos, 4)?;
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                float(f64::from(v))?
            }
            0x05 => {
                let b = take(&mut pos, 8)?;
                float(f64::from_le_bytes(b.try_into().ok()?))?
            }
            0x06 => "NULL".into(),
            0x07 | 0x0a | 0x0b | 0x0c => {
                let len = usize::from(*packet.get(pos)?);
                pos += 1;
                temporal(ty, take(&mut pos, len)?)?
            }
            0x0f | 0x10 | 0xf5..=0xff => {
                let b = crate::protocol::read_lenenc_bytes(packet, &mut pos)?;
                string(b)
            }
            _ => return None,
        };
        out.push(lit);
    }
    Some(out)
}

fn float(v: f64) -> Option<String> {
    // `{:e}` keeps every digit and always reads back as a DOUBLE.
    v.is_finite().then(|| format!("{v:e}"))
}

/// A string literal of the given bytes (the connection's character set, as the client sent
/// them).
fn string(b: &[u8]) -> String {
    let mut s = Vec::with_capacity(b.len() + 2);
    s.push(b'\'');
    for &c in b {
        match c {
            b'\'' => s.extend_from_slice(b"''"),
            b'\\' => s.extend_from_slice(b"\\\\"),
            0 => s.extend_from_slice(b"\\0"),
            c => s.push(c),
        }
    }
    s.push(b'\'');
    // Valid UTF-8 in, valid UTF-8 out; other bytes would not survive the text protocol's
    // String here, so they are written as a hex literal instead.
    String::from_utf8(s).unwrap_or_else(|_| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("X'{hex}'")
    })
}

/// DATE/DATETIME/TIMESTAMP and TIME values of the binary protocol as quoted literals.
fn temporal(ty: u8, b: &[u8]) -> Option<String> {
    if ty == 0x0b {
        // TIME: negative, days, hours, minutes, seconds, microseconds
        if b.is_empty() {
            return Some("'00:00:00'".into());
        }
        let neg = b[0] == 1;
        let days = u32::from_le_bytes(b.get(1..5)?.try_into().ok()?);
        let (h, m, s) = (*b.get(5)?, *b.get(6)?, *b.get(7)?);
        let us = match b.get(8..12) {
            Some(x) => u32::from_le_bytes(x.try_into().ok()?),
            None => 0,
        };
        let hours = days * 24 + u32::from(h);
        return Some(format!(
            "'{}{hours:02}:{m:02}:{s:02}.{us:06}'",
            if neg { "-" } else { "" }
        ));
    }
    let mut v = [0u32; 7];
    if b.len() >= 4 {
        v[0] = u32::from(u16::from_le_bytes([b[0], b[1]]));
        v[1] = u32::from(b[2]);
        v[2] = u32::from(b[3]);
    }
    if b.len() >= 7 {
        v[3] = u32::from(b[4]);
        v[4] = u32::from(b[5]);
        v[5] = u32::from(b[6]);
    }
    if b.len() >= 11 {
        v[6] = u32::from_le_bytes(b[7..11].try_into().ok()?);
    }
    Some(format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6]
    ))
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

    #[test]
    fn generated_ids_fill_omitted_null_and_zero_values() {
        let sql = "INSERT INTO t (name) VALUES ('a'), ('b') ON DUPLICATE KEY UPDATE name = 'c'";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!((at, needs.clone()), (None, vec![true, true]));
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[7, 8]).unwrap(),
            "INSERT INTO t (name, `id`) VALUES ('a', 7), ('b', 8) ON DUPLICATE KEY UPDATE name = 'c'"
        );
        let sql = "INSERT INTO t VALUES (NULL, 'a'), (5, 'b'), ( 0 , f(1, 2))";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!((at, needs.clone()), (Some(0), vec![true, false, true]));
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[10, 11]).unwrap(),
            "INSERT INTO t VALUES (10, 'a'), (5, 'b'), ( 11 , f(1, 2))"
        );
        let sql = "INSERT INTO t (name, id) VALUES ('x', 0)";
        let (at, needs) = auto_increment_rows(sql, "id", 0).unwrap();
        assert_eq!(
            fill_auto_increment(sql, "id", at, &needs, &[3]).unwrap(),
            "INSERT INTO t (name, id) VALUES ('x', 3)"
        );
        assert!(auto_increment_rows("INSERT INTO t (id) VALUES (4)", "id", 0).is_none());
        assert!(auto_increment_rows("INSERT INTO t SET name = 'a'", "id", 0).is_none());
    }

    #[test]
    fn parameters_become_literals() {
        // LONGLONG -5, VAR_STRING "a'b", NULL (bitmap), DOUBLE 1.5, DATETIME
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0b100, 1];
        p.extend_from_slice(&[0x08, 0, 0xfd, 0, 0x03, 0, 0x05, 0, 0x0c, 0]);
        p.extend_from_slice(&(-5i64).to_le_bytes());
        p.extend_from_slice(&[3, b'a', b'\'', b'b']);
        p.extend_from_slice(&1.5f64.to_le_bytes());
        p.extend_from_slice(&[7, 0xe8, 0x07, 2, 29, 13, 14, 15]);
        let lits = literals(&p, 5).unwrap();
        assert_eq!(
            lits,
            vec![
                "-5",
                "'a''b'",
                "NULL",
                "1.5e0",
                "'2024-02-29 13:14:15.000000'"
            ]
        );
        assert_eq!(
            substitute(
                "INSERT INTO t VALUES (?, '?', ?)",
                &["1".into(), "'x'".into()]
            )
            .unwrap(),
            "INSERT INTO t VALUES (1, '?', 'x')"
        );
    }
}
