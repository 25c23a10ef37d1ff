//! The planner: from a statement (text, classification, session database, parameter values)
//! and the shard map to a [`Plan`].
//!
//! What is routed today: single-table SELECT/UPDATE/DELETE whose WHERE pins the shard key with
//! `=` or `IN` (literals or prepared-statement parameters) to shards that turn out to be one;
//! INSERT whose rows all land on one shard; reads of a reference table (any shard); DDL on
//! sharded and reference tables (every shard); `CREATE/DROP DATABASE` of a sharded keyspace
//! (every shard database). Reads over several shards are relayed raw when their answer is a
//! concatenation or a sorted merge, and otherwise merged by the router ([`super::gather`]) or
//! refused. Joins on the shard key and with reference tables run per shard (`join.rs`).
//! Writes over several shards (split INSERTs, reference-table writes, UPDATE/DELETE over
//! several shards) become [`Plan::MultiWrite`], run as one distributed transaction (see
//! `split.rs` and the session's `xa.rs`).

use std::collections::BTreeMap;

use shard_map::{
    KeyValue, KeyspaceMap, ShardLookup, ShardMap, ShardTarget, ShardedTable, TableKind,
};
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, InTarget, SetExpr, Statement, TableObject,
    UnaryOperator, Value,
};

use super::join::KeyColumns;
use crate::classify::{Classification, StatementKind, TableRef};

/// Exactly one statement parsed (MySQL dialect): what the planner reads the syntax of.
pub use crate::classify::parse_one;

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No sharded or reference table: the ordinary route.
    Unsharded,
    /// One shard: the client's text runs on that shard's leader, in its database.
    Single(ShardTarget),
    /// Every listed shard, each in its own database (DDL).
    Every(Vec<ShardTarget>),
    /// A read whose result is exactly the concatenation of each listed shard's result (no
    /// ordering, offset, grouping, aggregate or subquery to merge): run on each, rows relayed
    /// one shard after the other. With `limit`, only that many rows in all: any rows are a
    /// right answer without ORDER BY, and each shard's own LIMIT bounds what it sends.
    Scatter {
        targets: Vec<ShardTarget>,
        limit: Option<u64>,
        /// `ORDER BY` columns (result column names, descending?): the shards' sorted results
        /// are merged; empty for no ordering.
        order: Vec<(String, bool)>,
    },
    /// A read whose select list is only `COUNT(...)` (no DISTINCT, grouping, ordering or
    /// limit): run on each shard, each count column summed into one row.
    ScatterCount { targets: Vec<ShardTarget> },
    /// A read whose shards' results the router merges (grouping, aggregates, HAVING,
    /// DISTINCT, ORDER BY, OFFSET): each shard runs `spec.sql`, see [`super::gather`].
    Gather {
        targets: Vec<ShardTarget>,
        spec: Box<super::gather::GatherSpec>,
    },
    /// `CREATE DATABASE` / `DROP DATABASE` of a sharded keyspace: the same statement for each
    /// `(cluster, database)` of the keyspace, with the database name replaced.
    KeyspaceDatabases(Vec<(String, String)>),
    /// The statement needs a prepared-statement parameter that is not known yet.
    NeedsParams,
    /// An INSERT without a column list: plan again with the shard key column's position
    /// (0-based) in the table, from the server's catalog.
    NeedsColumnPosition {
        keyspace: String,
        table: String,
        column: String,
    },
    /// A write over several shards, run as one distributed transaction: each part's text on
    /// its shard (a multi-row INSERT cut by shard, or the client's text for a reference
    /// table's copies and for UPDATE/DELETE over several shards). With `copies` (a reference
    /// table) the affected rows are one copy's, else the parts' sum.
    MultiWrite {
        parts: Vec<(ShardTarget, String)>,
        copies: bool,
    },
    /// Not supported (error 1235 with this text).
    Refuse(String),
}

/// What the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub sql: &'a str,
    pub class: &'a Classification,
    /// The session's current database.
    pub db: Option<&'a str>,
    /// Prepared-statement parameters in order (`None` for one the router can't use as a key,
    /// e.g. a NULL or a float); `None` altogether at prepare time.
    pub params: Option<&'a [Option<KeyValue>]>,
    /// For an INSERT without a column list: the shard key column's position in the table.
    pub key_position: Option<usize>,
    /// `sql` already parsed (a prepared statement's, parsed once when it was prepared);
    /// `None`: the planner parses it when it needs the syntax tree.
    pub parsed: Option<&'a Statement>,
}

/// A sharded or reference table a statement uses.
struct Involved<'m> {
    keyspace: &'m KeyspaceMap,
    table: String,
    kind: &'m TableKind,
    qualified: bool,
}

/// Plans a statement against the shard map.
pub fn plan(map: &ShardMap, input: PlanInput<'_>) -> Plan {
    if let Some(p) = keyspace_database_ddl(map, input) {
        return p;
    }
    let session_ks = input
        .db
        .and_then(|d| map.keyspace(d))
        .filter(|k| k.is_sharded());
    if !input.class.parsed {
        // Without a parse the table list is unknown: refuse if a sharded or reference table's
        // name appears anywhere in the text, else the ordinary route is right.
        if let Some(ks) = session_ks {
            if let Some(t) = mentioned_sharded_table(ks, input.sql) {
                return Plan::Refuse(format!(
                    "statements on sharded table `{t}` that the SQL parser cannot read"
                ));
            }
        }
        return Plan::Unsharded;
    }
    let involved = involved_tables(map, input.db, &input.class.tables);
    if involved.is_empty() {
        return Plan::Unsharded;
    }
    let ks = involved[0].keyspace;
    if involved.iter().any(|i| i.keyspace.name() != ks.name()) {
        return Plan::Refuse("statements across several sharded keyspaces".into());
    }
    if input.class.multi {
        return Plan::Refuse("multi-statements on sharded tables".into());
    }
    if involved
        .iter()
        .any(|i| i.qualified && i.keyspace.name() != input.db.unwrap_or(""))
    {
        return Plan::Refuse(format!(
            "table names qualified with keyspace `{}` from another database; `USE {}` first",
            ks.name(),
            ks.name()
        ));
    }
    if involved.iter().any(|i| i.qualified)
        && ks.all_shards().iter().any(|s| s.database != ks.name())
    {
        return Plan::Refuse(format!(
            "table names qualified with `{}.` when shards use their own databases; drop the qualifier",
            ks.name()
        ));
    }
    match input.class.kind {
        StatementKind::Ddl => {
            if input.class.tables.len() != involved.len() {
                return Plan::Refuse(
                    "DDL mixing sharded or reference tables with unsharded ones".into(),
                );
            }
            Plan::Every(ks.all_shards().to_vec())
        }
        StatementKind::Select { .. } | StatementKind::Write => {
            let is_select = matches!(input.class.kind, StatementKind::Select { .. });
            if let Some(other) = input.class.tables.iter().find(|t| {
                !involved
                    .iter()
                    .any(|i| i.table == t.name && i.qualified == t.schema.is_some())
            }) {
                return Plan::Refuse(format!(
                    "statements combining sharded or reference tables with unsharded table `{}`",
                    other.name
                ));
            }
            if involved.len() > 1 && !is_select {
                return Plan::Refuse("writes naming several sharded or reference tables".into());
            }
            match involved.iter().find_map(|i| match i.kind {
                TableKind::Sharded(t) => Some((i, t)),
                _ => None,
            }) {
                Some((i, t)) => plan_single_table(ks, &i.table, t, input),
                // Reference tables only: every shard holds them all.
                None if is_select => match ks.all_shards().first() {
                    Some(s) => Plan::Single(s.clone()),
                    None => Plan::Refuse("a keyspace without shards".into()),
                },
                None => super::split::reference_write(ks, &involved[0].table, input.sql),
            }
        }
        _ => Plan::Refuse(format!(
            "this kind of statement on sharded table `{}`",
            involved[0].table
        )),
    }
}

fn involved_tables<'m>(
    map: &'m ShardMap,
    db: Option<&str>,
    tables: &[TableRef],
) -> Vec<Involved<'m>> {
    let mut out = Vec::new();
    for t in tables {
        let Some(ks_name) = t.schema.as_deref().or(db) else {
            continue;
        };
        let Some(ks) = map.keyspace(ks_name).filter(|k| k.is_sharded()) else {
            continue;
        };
        let kind = ks.table(&t.name);
        if matches!(kind, TableKind::Sharded(_) | TableKind::Reference) {
            out.push(Involved {
                keyspace: ks,
                table: t.name.clone(),
                kind,
                qualified: t.schema.is_some(),
            });
        }
    }
    out
}

/// A sharded or reference table of `ks` named anywhere in `sql` (identifier tokens).
fn mentioned_sharded_table(ks: &KeyspaceMap, sql: &str) -> Option<String> {
    crate::classify::identifiers(sql)
        .into_iter()
        .find(|name| matches!(ks.table(name), TableKind::Sharded(_) | TableKind::Reference))
}

/// `CREATE DATABASE ks` / `DROP DATABASE ks` for a sharded keyspace.
fn keyspace_database_ddl(map: &ShardMap, input: PlanInput<'_>) -> Option<Plan> {
    if input.class.kind != StatementKind::Ddl {
        return None;
    }
    let name = crate::classify::database_ddl_target(input.sql)?;
    let ks = map.keyspace(&name).filter(|k| k.is_sharded())?;
    let mut dbs: Vec<(String, String)> = ks
        .all_shards()
        .iter()
        .map(|s| (s.cluster.clone(), s.database.clone()))
        .collect();
    dbs.push((
        ks.default_cluster().to_string(),
        ks.unsharded_database().to_string(),
    ));
    dbs.sort();
    dbs.dedup();
    Some(Plan::KeyspaceDatabases(dbs))
}

/// The shard of a text statement found without parsing it: its cache key (the normalised
/// text, each literal a `?`) is parsed once per key ([`Classification::key_statement`]) and
/// planned as a prepared statement whose parameters are the text's literals. Returns the
/// target only when that plan is [`Plan::Single`] (the client's own text then runs on that
/// shard, so nothing written from the key's text is sent); `None` means "plan the text
/// itself", which is always right.
///
/// The planner reads a bound parameter exactly as the literal it stands for (integers and
/// plain strings, [`Values::key`]); a literal it could not use as a key is an unusable
/// parameter here too. The key's syntax tree is the text's only when sqlparser and the
/// normaliser's lexer cut the text into the same tokens, so only texts of printable ASCII
/// (and spaces, tabs, line ends) are placed so, without comments (executable ones are code
/// to the lexer but may not be to the server), backslashes, double quotes or `?`; any other
/// is left to the full path.
pub fn plan_by_key(
    map: &ShardMap,
    sql: &str,
    class: &Classification,
    db: Option<&str>,
) -> Option<ShardTarget> {
    if !class.parsed || class.multi {
        return None;
    }
    if !matches!(
        class.kind,
        StatementKind::Select { .. } | StatementKind::Write
    ) {
        return None;
    }
    let plain = sql.bytes().all(|b| {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x21..=0x7e)
            && !matches!(b, b'\\' | b'"' | b'#' | b'?')
    });
    if !plain || sql.contains("/*") || sql.contains("--") {
        return None;
    }
    let key = class.key_statement(sql)?;
    if !matches!(
        key.stmt,
        Statement::Query(_) | Statement::Update(_) | Statement::Delete(_)
    ) {
        return None;
    }
    let literals = crate::classify::key_literals(sql)?;
    if literals.len() != key.placeholders {
        return None;
    }
    let params: Vec<Option<KeyValue>> = literals
        .into_iter()
        .map(literal_param)
        .collect::<Option<_>>()?;
    let input = PlanInput {
        sql: &key.key,
        class,
        db,
        params: Some(&params),
        key_position: None,
        parsed: Some(&key.stmt),
    };
    let Plan::Single(target) = plan(map, input) else {
        return None;
    };
    // Tests run debug builds: there every shortcut is checked against the text's own plan.
    debug_assert_eq!(
        plan(
            map,
            PlanInput {
                sql,
                class,
                db,
                params: None,
                key_position: None,
                parsed: None,
            }
        ),
        Plan::Single(target.clone()),
        "plan by key of {sql:?}"
    );
    Some(target)
}

/// A text's literal as the parameter that stands for it. Only a literal that sqlparser reads
/// as one token, as the normaliser's lexer does, gets one: a decimal number (`42`, `1.5`) or
/// a closed single-quoted string without a prefix; for anything else (`1e3`, `0x1F`, `.5`,
/// `_utf8mb4'x'`, a string left open) `None`, and the text is left to the full path. The
/// parameter's value is the key the planner reads in the text's own syntax tree: a plain
/// integer, or a string without escapes (`''` or a backslash); `Some(None)` for a literal it
/// cannot place either (`1.5`, `'it''s'`).
fn literal_param(l: crate::classify::KeyLiteral<'_>) -> Option<Option<KeyValue>> {
    match l {
        crate::classify::KeyLiteral::Number(n) => {
            let (int, frac) = n.split_once('.').unwrap_or((n, "0"));
            let decimal = [int, frac]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            decimal.then(|| match number(n, false) {
                Key::Known(v) => Some(v),
                _ => None,
            })
        }
        crate::classify::KeyLiteral::Str(s) => {
            let body = s.strip_prefix('\'')?;
            // `''` inside is a quote; the first lone `'` must end the token.
            let mut rest = body;
            loop {
                let at = rest.find('\'')?;
                if rest[at + 1..].starts_with('\'') {
                    rest = &rest[at + 2..];
                } else if at + 1 == rest.len() {
                    break;
                } else {
                    return None;
                }
            }
            let inner = &body[..body.len() - 1];
            Some((!inner.contains(['\'', '\\'])).then(|| KeyValue::Str(inner.as_bytes().to_vec())))
        }
    }
}

/// A single sharded table: find the shard from the key's values.
fn plan_single_table(
    ks: &KeyspaceMap,
    table: &str,
    t: &ShardedTable,
    input: PlanInput<'_>,
) -> Plan {
    let owned;
    let stmt = match input.parsed {
        Some(s) => s,
        None => match parse_one(input.sql) {
            Some(s) => {
                owned = s;
                &owned
            }
            None => return Plan::Refuse(format!("this statement on sharded table `{table}`")),
        },
    };
    if let Some(name) = sharded_table_in_subquery(ks, stmt) {
        return Plan::Refuse(format!(
            "subqueries or derived tables reading sharded table `{name}`"
        ));
    }
    let placeholders = placeholder_positions(input.sql);
    let ctx = Values {
        sql: input.sql,
        params: input.params,
        placeholders: &placeholders,
    };
    // With a `numeric` vindex, the key's bounds in WHERE (`BETWEEN`, `<`, `>=`...): only the
    // shards whose ranges meet them are read.
    let mut range: Option<(u64, u64)> = None;
    let values = match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) => {
                let keys = if super::join::is_join(&s.from)
                    || !matches!(
                        s.from[0].relation,
                        sqlparser::ast::TableFactor::Table { .. }
                    ) {
                    match super::join::analyze(ks, s) {
                        Ok(k) => k,
                        Err(why) => return Plan::Refuse(why),
                    }
                } else {
                    KeyColumns::Single(t)
                };
                if t.vindex == shard_map::Vindex::Numeric {
                    range = numeric_range(s.selection.as_ref(), &keys, &ctx);
                }
                if s.selection.is_none() {
                    None
                } else {
                    key_values(s.selection.as_ref(), &keys, &ctx)
                }
            }
            SetExpr::SetOperation { .. } => {
                if !union_of_sharded_tables(ks, &q.body) {
                    return Plan::Refuse(format!(
                        "UNION of sharded table `{table}` with reference or unsharded tables, \
                         joins or subqueries"
                    ));
                }
                return match super::gather::union_all(stmt, input.class) {
                    Ok(limit) => Plan::Scatter {
                        targets: ks.all_shards().to_vec(),
                        limit,
                        order: Vec::new(),
                    },
                    Err(super::gather::GatherError::NeedsParams) => Plan::NeedsParams,
                    Err(super::gather::GatherError::Refuse(what)) => Plan::Refuse(format!(
                        "{what} on sharded table `{table}` over several shards"
                    )),
                };
            }
            _ => return Plan::Refuse(format!("VALUES queries on sharded table `{table}`")),
        },
        Statement::Update(u) => {
            let sets_key = u.assignments.iter().any(|a| match &a.target {
                AssignmentTarget::ColumnName(n) => last_ident(n).is_some_and(|c| t.is_column(&c)),
                AssignmentTarget::Tuple(ns) => ns
                    .iter()
                    .any(|n| last_ident(n).is_some_and(|c| t.is_column(&c))),
            });
            if sets_key {
                return super::split::key_update(ks, table, t, u, &ctx);
            }
            key_values(u.selection.as_ref(), &KeyColumns::Single(t), &ctx)
        }
        Statement::Delete(d) => key_values(d.selection.as_ref(), &KeyColumns::Single(t), &ctx),
        Statement::Insert(i) => return plan_insert(ks, table, t, i, &ctx, input.key_position),
        _ => return Plan::Refuse(format!("this statement on sharded table `{table}`")),
    };
    if matches!(stmt, Statement::Update(_) | Statement::Delete(_)) {
        return super::split::plan_write(ks, table, t, stmt, values, input.sql);
    }
    let concat = concat_safe(stmt, input.class);
    let counts = counts_only(stmt, input.class);
    let Some(values) = values else {
        let targets = match range {
            Some((lo, hi)) if lo <= hi => ks.shards_for_range(lo, hi).to_vec(),
            // No value can satisfy the bounds: any shard answers with the right result.
            Some(_) => ks.all_shards().iter().take(1).cloned().collect(),
            None => ks.all_shards().to_vec(),
        };
        if let [one] = targets.as_slice() {
            return Plan::Single(one.clone());
        }
        if counts {
            return Plan::ScatterCount { targets };
        }
        if concat.is_err() {
            return gathered(stmt, input, table, targets);
        }
        let (limit, order) = concat.unwrap_or_default();
        return Plan::Scatter {
            targets,
            limit,
            order,
        };
    };
    let mut targets: BTreeMap<String, ShardTarget> = BTreeMap::new();
    for v in values {
        let v = match v {
            Key::Known(v) => v,
            Key::Param => return Plan::NeedsParams,
            Key::Unusable => return scatter_all(ks, concat, stmt, input, table),
        };
        match ks.shard_for_read(t, &v) {
            ShardLookup::One(s) => {
                targets.insert(s.shard.clone(), s.clone());
            }
            ShardLookup::Nowhere => {}
            ShardLookup::All(_) => return scatter_all(ks, concat, stmt, input, table),
        }
    }
    match targets.len() {
        // No row can match: any shard answers with the right (empty) result.
        0 => ks.all_shards().first().cloned().map_or_else(
            || Plan::Refuse("a keyspace without shards".into()),
            Plan::Single,
        ),
        1 => Plan::Single(targets.into_values().next().expect("one target")),
        _ if counts => Plan::ScatterCount {
            targets: targets.into_values().collect(),
        },
        _ => match concat {
            Ok((limit, order)) => Plan::Scatter {
                targets: targets.into_values().collect(),
                limit,
                order,
            },
            Err(_) => gathered(stmt, input, table, targets.into_values().collect()),
        },
    }
}

/// Whether every branch of a set operation reads one sharded table of `ks` and nothing else:
/// then each shard's result of the whole statement holds exactly its own rows of every branch
/// (a reference table's rows would come once per shard).
fn union_of_sharded_tables(ks: &KeyspaceMap, e: &SetExpr) -> bool {
    match e {
        SetExpr::SetOperation { left, right, .. } => {
            union_of_sharded_tables(ks, left) && union_of_sharded_tables(ks, right)
        }
        SetExpr::Select(s) => {
            s.from.len() == 1
                && s.from[0].joins.is_empty()
                && matches!(&s.from[0].relation, sqlparser::ast::TableFactor::Table { name, args: None, .. }
                    if last_ident(name).is_some_and(|t| matches!(ks.table(&t), TableKind::Sharded(_))))
        }
        _ => false,
    }
}

/// The bounds `lo..=hi` that a WHERE clause's top-level AND terms put on the shard key, from
/// integer literals or bound integer parameters compared with `BETWEEN`, `<`, `<=`, `>`, `>=`
/// (either side). `None` when there is no such bound. Only for the `numeric` vindex, whose
/// keyspace id is the value itself (and which holds no negative values).
fn numeric_range(
    selection: Option<&Expr>,
    keys: &KeyColumns<'_>,
    ctx: &Values<'_>,
) -> Option<(u64, u64)> {
    let mut terms = Vec::new();
    conjuncts(selection?, &mut terms);
    let int = |e: &Expr| match e {
        Expr::Value(v) if matches!(v.value, Value::Number(..) | Value::Placeholder(_)) => {
            match ctx.key(e) {
                Key::Known(KeyValue::Int(i)) => Some(i128::from(i)),
                Key::Known(KeyValue::UInt(u)) => Some(i128::from(u)),
                _ => None,
            }
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            ..
        } => match ctx.key(e) {
            Key::Known(KeyValue::Int(i)) => Some(i128::from(i)),
            _ => None,
        },
        _ => None,
    };
    let (mut lo, mut hi) = (i128::MIN, i128::MAX);
    let mut found = false;
    for term in terms {
        match term {
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } if keys.is_key(expr) => {
                if let (Some(a), Some(b)) = (int(low), int(high)) {
                    lo = lo.max(a);
                    hi = hi.min(b);
                    found = true;
                }
            }
            Expr::BinaryOp { left, op, right } => {
                // Normalised to `key op value`.
                let (op, v) = if keys.is_key(left) {
                    (op.clone(), int(right))
                } else if keys.is_key(right) {
                    let flipped = match op {
                        BinaryOperator::Lt => BinaryOperator::Gt,
                        BinaryOperator::LtEq => BinaryOperator::GtEq,
                        BinaryOperator::Gt => BinaryOperator::Lt,
                        BinaryOperator::GtEq => BinaryOperator::LtEq,
                        other => other.clone(),
                    };
                    (flipped, int(left))
                } else {
                    continue;
                };
                let Some(v) = v else { continue };
                match op {
                    BinaryOperator::Lt => hi = hi.min(v - 1),
                    BinaryOperator::LtEq => hi = hi.min(v),
                    BinaryOperator::Gt => lo = lo.max(v + 1),
                    BinaryOperator::GtEq => lo = lo.max(v),
                    _ => continue,
                }
                found = true;
            }
            _ => {}
        }
    }
    if !found {
        return None;
    }
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    if hi < 0 || lo > i128::from(u64::MAX) {
        // Empty: no stored value is negative or above u64.
        return Some((1, 0));
    }
    Some((clamp(lo), clamp(hi)))
}

/// A sharded table read by a subquery of `stmt`: each shard would see only
/// its own part of it.
fn sharded_table_in_subquery(ks: &KeyspaceMap, stmt: &Statement) -> Option<String> {
    use std::ops::ControlFlow;
    let sharded_in = |q: &sqlparser::ast::Query| {
        let mut found = None;
        let _ = sqlparser::ast::visit_relations(q, |name| {
            let table = last_ident(name).unwrap_or_default();
            if matches!(ks.table(&table), TableKind::Sharded(_)) {
                found = Some(table);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        found
    };
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        let q = match e {
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => q,
            Expr::In {
                target: InTarget::Subquery(q),
                ..
            } => q,
            _ => return ControlFlow::Continue(()),
        };
        found = sharded_in(q);
        if found.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Whether a statement is a plain SELECT whose select list is only `COUNT(*)` / `COUNT(expr)`
/// (no DISTINCT inside or outside, no GROUP BY, HAVING, ORDER BY, LIMIT, window, subquery or
/// locking): its answer over several shards is the sum of each shard's counts.
fn counts_only(stmt: &Statement, class: &Classification) -> bool {
    use sqlparser::ast::{FunctionArguments, SelectItem};
    let Statement::Query(q) = stmt else {
        return false;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    if class.pin.is_some() || class.uses_session_functions || class.calc_found_rows {
        return false;
    }
    let plain_query = q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && q.for_clause.is_none()
        && q.pipe_operators.is_empty();
    let plain_select = s.distinct.is_none()
        && s.top.is_none()
        && s.into.is_none()
        && matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.having.is_none()
        && s.qualify.is_none()
        && s.named_window.is_empty();
    if !plain_query || !plain_select || s.projection.is_empty() {
        return false;
    }
    let is_count = |e: &Expr| match e {
        Expr::Function(f) => {
            super::gather::function_name(f) == "COUNT"
                && f.over.is_none()
                && f.filter.is_none()
                && f.within_group.is_empty()
                && matches!(&f.args, FunctionArguments::List(l)
                    if l.duplicate_treatment.is_none() && l.clauses.is_empty() && l.args.len() == 1)
        }
        _ => false,
    };
    let all_counts = s.projection.iter().all(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => is_count(e),
        _ => false,
    });
    // Subqueries anywhere (even in WHERE) would read across shards.
    let no_subquery = sqlparser::ast::visit_expressions(stmt, |e| match e {
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::In {
            target: InTarget::Subquery(_),
            ..
        } => std::ops::ControlFlow::Break(()),
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_continue();
    all_counts && no_subquery
}

/// How a plain multi-shard read combines: its `LIMIT n` and its `ORDER BY` columns.
type Gathering = (Option<u64>, Vec<(String, bool)>);

/// `Ok` when a statement's result over several shards is the concatenation (or, with
/// `ORDER BY` on plain columns, the merge) of each shard's result: a plain SELECT with no
/// offset, DISTINCT, grouping, aggregate, window function, subquery or locking (with the
/// `LIMIT n` it may have); otherwise what stands in the way.
fn concat_safe(stmt: &Statement, class: &Classification) -> Result<Gathering, &'static str> {
    use std::ops::ControlFlow;
    let Statement::Query(q) = stmt else {
        return Err("writes");
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Err("UNION");
    };
    if class.pin.is_some() || class.uses_session_functions || class.calc_found_rows {
        return Err("session-dependent functions");
    }
    if q.with.is_some() {
        return Err("WITH");
    }
    let mut order = Vec::new();
    if let Some(o) = &q.order_by {
        let sqlparser::ast::OrderByKind::Expressions(items) = &o.kind else {
            return Err("ORDER BY ALL");
        };
        if o.interpolate.is_some() {
            return Err("ORDER BY");
        }
        for item in items {
            let name = match &item.expr {
                Expr::Identifier(i) => i.value.clone(),
                // `t.col` need not be the result column called `col` (an alias may take the
                // name, or a joined table have a column of that name): merged by expression.
                Expr::CompoundIdentifier(_) => return Err("ORDER BY a qualified column"),
                _ => return Err("ORDER BY an expression"),
            };
            if item.options.nulls_first.is_some() || item.with_fill.is_some() {
                return Err("ORDER BY with NULLS FIRST/LAST");
            }
            let desc = match item.options.sort {
                None | Some(sqlparser::ast::OrderBySort::Asc) => false,
                Some(sqlparser::ast::OrderBySort::Desc) => true,
                Some(_) => return Err("ORDER BY"),
            };
            order.push((name, desc));
        }
    }
    if q.fetch.is_some() {
        return Err("FETCH");
    }
    let limit = match &q.limit_clause {
        None => None,
        Some(sqlparser::ast::LimitClause::LimitOffset {
            limit: Some(Expr::Value(v)),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => match &v.value {
            Value::Number(n, _) => Some(n.parse::<u64>().map_err(|_| "LIMIT")?),
            _ => return Err("LIMIT with a parameter"),
        },
        Some(_) => return Err("LIMIT with OFFSET"),
    };
    if !q.locks.is_empty() || q.for_clause.is_some() || !q.pipe_operators.is_empty() {
        return Err("locking reads");
    }
    if s.distinct.is_some() || s.top.is_some() {
        return Err("DISTINCT");
    }
    if s.into.is_some() {
        return Err("SELECT INTO");
    }
    if !matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
    {
        return Err("GROUP BY");
    }
    if s.having.is_some() || s.qualify.is_some() || !s.named_window.is_empty() {
        return Err("HAVING");
    }
    let found = sqlparser::ast::visit_expressions(stmt, |e| match e {
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::In {
            target: InTarget::Subquery(_),
            ..
        } => ControlFlow::Break("subqueries"),
        Expr::Function(f) => {
            if f.over.is_some() {
                ControlFlow::Break("window functions")
            } else if super::gather::is_aggregate(&super::gather::function_name(f)) {
                ControlFlow::Break("aggregates")
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(what) => Err(what),
        ControlFlow::Continue(()) => Ok((limit, order)),
    }
}

/// A value whose shard can't be named: the read goes to every shard, its results relayed
/// when they are a concatenation, else merged by the router (or refused).
fn scatter_all(
    ks: &KeyspaceMap,
    concat: Result<Gathering, &'static str>,
    stmt: &Statement,
    input: PlanInput<'_>,
    table: &str,
) -> Plan {
    match concat {
        Ok((limit, order)) => Plan::Scatter {
            targets: ks.all_shards().to_vec(),
            limit,
            order,
        },
        Err(_) => gathered(stmt, input, table, ks.all_shards().to_vec()),
    }
}

/// A read over `targets` that needs merging: a [`Plan::Gather`], or refused naming what the
/// merge does not support.
fn gathered(
    stmt: &Statement,
    input: PlanInput<'_>,
    table: &str,
    targets: Vec<ShardTarget>,
) -> Plan {
    match super::gather::analyze(stmt, input.sql, input.class) {
        Ok(spec) => Plan::Gather {
            targets,
            spec: Box::new(spec),
        },
        Err(super::gather::GatherError::NeedsParams) => Plan::NeedsParams,
        Err(super::gather::GatherError::Refuse(what)) => Plan::Refuse(format!(
            "{what} on sharded table `{table}` over several shards"
        )),
    }
}

fn plan_insert(
    ks: &KeyspaceMap,
    table: &str,
    t: &ShardedTable,
    i: &sqlparser::ast::Insert,
    ctx: &Values<'_>,
    key_position: Option<usize>,
) -> Plan {
    if !matches!(i.table, TableObject::TableName(_)) {
        return Plan::Refuse(format!("this INSERT into sharded table `{table}`"));
    }
    if let Some(sqlparser::ast::OnInsert::DuplicateKeyUpdate(assignments)) = &i.on {
        if assignments.iter().any(|a| match &a.target {
            AssignmentTarget::ColumnName(n) => last_ident(n).is_some_and(|c| t.is_column(&c)),
            AssignmentTarget::Tuple(_) => true,
        }) {
            return Plan::Refuse(format!(
                "ON DUPLICATE KEY UPDATE of shard key column `{}`",
                t.column
            ));
        }
    }
    let mut exprs: Vec<&Expr> = Vec::new();
    if !i.assignments.is_empty() {
        // INSERT ... SET col = value
        match i.assignments.iter().find(|a| {
            matches!(&a.target, AssignmentTarget::ColumnName(n) if last_ident(n).is_some_and(|c| t.is_column(&c)))
        }) {
            Some(a) => exprs.push(&a.value),
            None => return missing_key(table, t),
        }
    } else {
        let pos = if i.columns.is_empty() {
            match key_position {
                Some(p) => p,
                None => {
                    return Plan::NeedsColumnPosition {
                        keyspace: ks.name().to_string(),
                        table: table.to_string(),
                        column: t.column.clone(),
                    }
                }
            }
        } else {
            match i
                .columns
                .iter()
                .position(|c| last_ident(c).is_some_and(|c| t.is_column(&c)))
            {
                Some(p) => p,
                None => return missing_key(table, t),
            }
        };
        let Some(source) = &i.source else {
            return missing_key(table, t);
        };
        let SetExpr::Values(values) = source.body.as_ref() else {
            return Plan::Refuse(format!("INSERT ... SELECT into sharded table `{table}`"));
        };
        for row in &values.rows {
            match row.get(pos) {
                Some(e) => exprs.push(e),
                None => return missing_key(table, t),
            }
        }
    }
    let mut target: Option<&ShardTarget> = None;
    let mut row_shards: Vec<&ShardTarget> = Vec::with_capacity(exprs.len());
    let mut spans_shards = false;
    for e in exprs {
        let v = match ctx.key(e) {
            Key::Known(v) => v,
            Key::Param => return Plan::NeedsParams,
            Key::Unusable => {
                return Plan::Refuse(format!(
                    "INSERT into `{table}` whose shard key `{}` is not a literal integer or string",
                    t.column
                ))
            }
        };
        let s = match ks.shard_for_insert(t, &v) {
            Ok(s) => s,
            Err(why) => return Plan::Refuse(format!("INSERT into `{table}`: {why}")),
        };
        match target {
            None => target = Some(s),
            Some(prev) if prev.shard == s.shard => {}
            Some(_) => spans_shards = true,
        }
        row_shards.push(s);
    }
    if spans_shards {
        return super::split::split_insert(table, ctx.sql, &row_shards);
    }
    target.map_or_else(|| missing_key(table, t), |s| Plan::Single(s.clone()))
}

fn missing_key(table: &str, t: &ShardedTable) -> Plan {
    Plan::Refuse(format!(
        "INSERT into sharded table `{table}` without a value for its shard key `{}`",
        t.column
    ))
}

pub(super) fn last_ident(n: &sqlparser::ast::ObjectName) -> Option<String> {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
}

/// A shard key value found in the statement.
pub(super) enum Key {
    Known(KeyValue),
    /// A prepared-statement parameter not bound yet.
    Param,
    /// An expression, NULL, a float...: no single shard can be named for it.
    Unusable,
}

pub(super) struct Values<'a> {
    /// The statement's text.
    sql: &'a str,
    params: Option<&'a [Option<KeyValue>]>,
    /// (line, column) of each `?` in the text, in order.
    placeholders: &'a [(u64, u64)],
}

impl Values<'_> {
    pub(super) fn key(&self, e: &Expr) -> Key {
        match e {
            Expr::Nested(inner) => self.key(inner),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => number(n, false),
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    Key::Known(KeyValue::Str(s.as_bytes().to_vec()))
                }
                Value::Placeholder(_) => {
                    let at = (v.span.start.line, v.span.start.column);
                    let Some(idx) = self.placeholders.iter().position(|p| *p == at) else {
                        return Key::Unusable;
                    };
                    match self.params {
                        None => Key::Param,
                        Some(ps) => match ps.get(idx) {
                            Some(Some(v)) => Key::Known(v.clone()),
                            _ => Key::Unusable,
                        },
                    }
                }
                _ => Key::Unusable,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => number(n, true),
                    _ => Key::Unusable,
                },
                _ => Key::Unusable,
            },
            _ => Key::Unusable,
        }
    }
}

fn number(text: &str, negative: bool) -> Key {
    let digits = text.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        // 1.0, 1e3, 0x10: MariaDB compares them numerically; not a key we can place.
        return Key::Unusable;
    }
    if negative {
        match format!("-{text}").parse::<i64>() {
            Ok(v) => Key::Known(KeyValue::Int(v)),
            Err(_) => Key::Unusable,
        }
    } else if let Ok(v) = text.parse::<i64>() {
        Key::Known(KeyValue::Int(v))
    } else if let Ok(v) = text.parse::<u64>() {
        Key::Known(KeyValue::UInt(v))
    } else {
        Key::Unusable
    }
}

/// The key values a WHERE clause pins, from its top-level AND terms: the first `col = v` or
/// `col IN (...)` on the shard key. `None` when there is none.
pub(super) fn key_values(
    selection: Option<&Expr>,
    keys: &KeyColumns<'_>,
    ctx: &Values<'_>,
) -> Option<Vec<Key>> {
    let mut terms = Vec::new();
    if let Some(e) = selection {
        conjuncts(e, &mut terms);
    }
    for term in terms {
        match term {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                if keys.is_key(left) && keys.is_key(right) {
                    // A join condition, not a value.
                    continue;
                }
                if keys.is_key(left) {
                    return Some(vec![ctx.key(right)]);
                }
                if keys.is_key(right) {
                    return Some(vec![ctx.key(left)]);
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } if keys.is_key(expr) => {
                return Some(list.iter().map(|e| ctx.key(e)).collect());
            }
            _ => {}
        }
    }
    None
}

pub(super) fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// Where each `?` placeholder of `sql` starts, as sqlparser counts (1-based line and column,
/// in characters).
fn placeholder_positions(sql: &str) -> Vec<(u64, u64)> {
    let offsets = crate::classify::placeholder_offsets(sql);
    let mut out = Vec::with_capacity(offsets.len());
    let (mut line, mut col) = (1u64, 1u64);
    let mut next = offsets.iter().peekable();
    for (i, ch) in sql.char_indices() {
        while next.peek().is_some_and(|&&o| o == i) {
            out.push((line, col));
            next.next();
        }
        if ch == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;
    use shard_map::vindex::hash_keyspace_id;

    fn map() -> ShardMap {
        ShardMap::from_json(
            r#"{"keyspaces": [{
              "name": "app", "default_cluster": "c1",
              "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
              "tables": [
                {"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"},
                {"name": "orders", "kind": "sharded", "column": "customer_id", "vindex": "hash"},
                {"name": "ranges", "kind": "sharded", "column": "id", "vindex": "numeric"},
                {"name": "countries", "kind": "reference"},
                {"name": "regions", "kind": "reference"}
              ]}]}"#,
        )
        .unwrap()
        .validated(&["c1", "c2"])
        .unwrap()
    }

    fn shard_of(id: i64) -> &'static str {
        if hash_keyspace_id(&KeyValue::Int(id)).unwrap() < 0x8000_0000_0000_0000 {
            "-80"
        } else {
            "80-"
        }
    }

    fn run(sql: &str, params: Option<&[Option<KeyValue>]>) -> Plan {
        let c = Classifier::new(0);
        let class = c.classify(sql);
        plan(
            &map(),
            PlanInput {
                sql,
                class: &class,
                db: Some("app"),
                params,
                key_position: None,
                parsed: None,
            },
        )
    }

    fn single(p: &Plan) -> &str {
        match p {
            Plan::Single(t) => &t.shard,
            other => panic!("expected one shard, got {other:?}"),
        }
    }

    #[test]
    fn key_equality_and_inserts_go_to_one_shard() {
        for id in [1i64, 2, 3, 42, -7] {
            let want = shard_of(id);
            for sql in [
                format!("SELECT * FROM customers WHERE id = {id}"),
                format!("SELECT name FROM customers WHERE name = 'x' AND (id = {id})"),
                format!("SELECT * FROM customers c WHERE c.id = '{id}'"),
                format!("UPDATE customers SET name = 'n' WHERE id = {id}"),
                format!("DELETE FROM customers WHERE {id} = id"),
                format!("INSERT INTO customers (name, id) VALUES ('a', {id})"),
                format!("INSERT INTO customers SET id = {id}, name = 'a'"),
            ] {
                assert_eq!(single(&run(&sql, None)), want, "{sql}");
            }
        }
        // Several values on the same shard are one shard.
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) == shard_of(*b))
            .unwrap();
        let sql = format!("SELECT * FROM customers WHERE id IN ({a}, {b})");
        assert_eq!(single(&run(&sql, None)), shard_of(a));
    }

    #[test]
    fn prepared_parameters_route_once_bound() {
        let sql = "SELECT * FROM customers WHERE id = ? AND name = ?";
        assert_eq!(run(sql, None), Plan::NeedsParams);
        let params = [Some(KeyValue::Int(42)), Some(KeyValue::Str(b"x".to_vec()))];
        assert_eq!(single(&run(sql, Some(&params))), shard_of(42));
        let sql = "INSERT INTO customers (name, id) VALUES (?, ?)";
        let params = [Some(KeyValue::Str(b"x".to_vec())), Some(KeyValue::Int(7))];
        assert_eq!(single(&run(sql, Some(&params))), shard_of(7));
        let null = [None, None];
        assert!(matches!(run(sql, Some(&null)), Plan::Refuse(_)));
    }

    #[test]
    fn what_cannot_be_proven_is_refused() {
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) != shard_of(*b))
            .unwrap();
        for sql in [
            "SELECT COUNT(*), name FROM customers".to_string(),
            "SELECT COUNT(DISTINCT id, name) FROM customers".into(),
            format!("SELECT SUM(id) + 1 FROM customers WHERE id IN ({a}, {b})"),
            "SELECT * FROM customers WHERE id = (SELECT MAX(id) FROM customers)".into(),
            "SELECT *, ROW_NUMBER() OVER () FROM customers".into(),
            "SELECT * FROM customers WHERE id > 5 FOR UPDATE".into(),
            format!("UPDATE customers SET id = {b} WHERE id = {a}"),
            "UPDATE customers SET id = id + 1 WHERE id = 1".into(),
            "UPDATE customers SET id = 1".into(),
            "UPDATE customers SET name = 'x' LIMIT 3".into(),
            "DELETE FROM customers WHERE id > 5 ORDER BY id LIMIT 1".into(),
            "INSERT INTO customers (name) VALUES ('a')".into(),
            "INSERT INTO customers (id) SELECT id FROM other".into(),
            "SELECT * FROM customers WHERE id = 1 LOCK IN SHARE MODE".into(),
        ] {
            match run(&sql, None) {
                Plan::Refuse(why) => assert!(!why.is_empty()),
                other => panic!("{sql}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn joins_on_the_shard_key_and_with_reference_tables_run_per_shard() {
        let scatter = |sql: &str| match run(sql, None) {
            Plan::Scatter { targets, .. } => assert_eq!(targets.len(), 2, "{sql}"),
            other => panic!("{sql}: expected a scatter, got {other:?}"),
        };
        scatter("SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id");
        scatter("SELECT * FROM customers c, orders o WHERE c.id = o.customer_id AND o.total > 3");
        scatter("SELECT * FROM customers c LEFT JOIN orders o ON c.id = o.customer_id");
        scatter("SELECT * FROM orders o RIGHT JOIN customers c ON c.id = o.customer_id");
        scatter("SELECT * FROM customers JOIN countries ON customers.country = countries.code");
        scatter(
            "SELECT * FROM customers LEFT JOIN countries ON customers.country = countries.code",
        );
        scatter(
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id \
             JOIN countries k ON k.code = c.country LEFT JOIN regions r ON r.id = k.region",
        );
        scatter("SELECT * FROM customers a JOIN customers b ON a.id = b.id");
        // A key value on any co-located table pins the shard.
        for sql in [
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 7",
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.customer_id = 7",
            "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id WHERE customer_id = 7",
            "SELECT * FROM customers JOIN countries ON countries.code = customers.country \
             WHERE customers.id = 7",
        ] {
            assert_eq!(single(&run(sql, None)), shard_of(7), "{sql}");
        }
        // Reference tables only: any one shard.
        assert!(matches!(
            run(
                "SELECT * FROM countries JOIN regions ON regions.id = countries.region",
                None
            ),
            Plan::Single(_)
        ));
        for (sql, why) in [
            (
                "SELECT * FROM customers c JOIN orders o ON o.id = c.id",
                "a join of sharded tables `customers` and `orders` without an equality of their shard keys",
            ),
            (
                "SELECT * FROM customers c, orders o",
                "a join of sharded tables `customers` and `orders` without an equality of their shard keys",
            ),
            (
                "SELECT * FROM customers c JOIN ranges r ON r.id = c.id",
                "a join of sharded tables with different vindexes (`customers` and `ranges`)",
            ),
            (
                "SELECT * FROM customers c LEFT JOIN orders o ON o.total = 1 WHERE o.customer_id = c.id",
                "an outer join over shards that keeps every row of a reference table, or whose ON \
                 does not equate the shard keys of `orders` and the table it joins",
            ),
            (
                "SELECT * FROM countries k LEFT JOIN customers c ON c.country = k.code",
                "an outer join over shards that keeps every row of a reference table, or whose ON \
                 does not equate the shard keys of `customers` and the table it joins",
            ),
            (
                "SELECT * FROM customers c RIGHT JOIN countries k ON c.country = k.code",
                "an outer join over shards that keeps every row of a reference table, or whose ON \
                 does not equate the shard keys of `countries` and the table it joins",
            ),
            (
                "SELECT * FROM customers c JOIN plain p ON p.id = c.id",
                "statements combining sharded or reference tables with unsharded table `plain`",
            ),
            (
                "SELECT * FROM customers c NATURAL JOIN orders o",
                "NATURAL joins over shards",
            ),
            (
                "SELECT * FROM (SELECT * FROM customers) t",
                "derived tables, nested joins or table functions over shards",
            ),
            (
                "SELECT * FROM customers WHERE id = 1 AND name IN (SELECT name FROM customers)",
                "subqueries or derived tables reading sharded table `customers`",
            ),
            (
                "UPDATE customers SET name = 'x' WHERE id = 1 AND \
                 EXISTS (SELECT 1 FROM orders WHERE orders.customer_id = 2)",
                "writes naming several sharded or reference tables",
            ),
            (
                "UPDATE customers SET name = 'x' WHERE id = 1 AND \
                 name IN (SELECT name FROM customers)",
                "subqueries or derived tables reading sharded table `customers`",
            ),
        ] {
            assert_eq!(run(sql, None), Plan::Refuse(why.into()), "{sql}");
        }
        // A subquery on a reference table is complete on every shard.
        assert_eq!(
            single(&run(
                "SELECT * FROM customers WHERE id = 7 AND country IN (SELECT code FROM countries)",
                None
            )),
            shard_of(7)
        );
    }

    #[test]
    fn numeric_key_ranges_read_only_the_shards_they_meet() {
        // `ranges` is sharded by `id` with the numeric vindex: -80 holds 0..2^63, 80- the rest.
        let half = 0x8000_0000_0000_0000u64;
        let shards = |p: Plan| match p {
            Plan::Single(t) => vec![t.shard],
            Plan::Scatter { targets, .. } | Plan::ScatterCount { targets } => {
                targets.into_iter().map(|t| t.shard).collect()
            }
            Plan::Gather { targets, .. } => targets.into_iter().map(|t| t.shard).collect(),
            other => panic!("unexpected {other:?}"),
        };
        for (sql, want) in [
            (
                "SELECT * FROM ranges WHERE id BETWEEN 10 AND 99".to_string(),
                vec!["-80"],
            ),
            (
                "SELECT COUNT(*) FROM ranges WHERE id < 1000".into(),
                vec!["-80"],
            ),
            (
                format!("SELECT * FROM ranges WHERE id >= {half}"),
                vec!["80-"],
            ),
            (
                format!("SELECT * FROM ranges WHERE {half} < id"),
                vec!["80-"],
            ),
            (
                format!("SELECT * FROM ranges WHERE id > 5 AND id <= {half} ORDER BY id"),
                vec!["-80", "80-"],
            ),
            (
                "SELECT SUM(id) FROM ranges WHERE id > -5 AND id < 3".into(),
                vec!["-80"],
            ),
            // Nothing can match: one shard answers the empty result.
            ("SELECT * FROM ranges WHERE id < 0".into(), vec!["-80"]),
            // Bounds that are not integers prune nothing.
            (
                "SELECT * FROM ranges WHERE id < 4.5".into(),
                vec!["-80", "80-"],
            ),
            (
                "SELECT * FROM ranges WHERE id < '7'".into(),
                vec!["-80", "80-"],
            ),
            (
                "SELECT * FROM ranges WHERE id < 7 OR id > 9".into(),
                vec!["-80", "80-"],
            ),
        ] {
            assert_eq!(shards(run(&sql, None)), want, "{sql}");
        }
        // Bound parameters prune once known.
        let p = [Some(KeyValue::Int(3)), Some(KeyValue::Int(40))];
        assert_eq!(
            shards(run(
                "SELECT * FROM ranges WHERE id BETWEEN ? AND ?",
                Some(&p)
            )),
            vec!["-80"]
        );
        // The hash vindex is not ordered: ranges go everywhere.
        assert_eq!(
            shards(run(
                "SELECT * FROM customers WHERE id BETWEEN 1 AND 2",
                None
            )),
            vec!["-80", "80-"]
        );
    }

    #[test]
    fn reference_writes_that_could_make_copies_differ_are_refused() {
        for (sql, why) in [
            (
                "INSERT INTO countries (code, added) VALUES ('fr', NOW())",
                "NOW in a write to reference table `countries` (each copy would get its own \
                 value; compute it first, or quote a column of that name with backticks)",
            ),
            (
                "UPDATE countries SET token = uuid() WHERE code = 'fr'",
                "UUID in a write to reference table `countries` (each copy would get its own \
                 value; compute it first, or quote a column of that name with backticks)",
            ),
            (
                "DELETE FROM countries LIMIT 1",
                "LIMIT in a write to reference table `countries` (each copy could pick other rows)",
            ),
        ] {
            assert_eq!(run(sql, None), Plan::Refuse(why.into()), "{sql}");
        }
        // A quoted column of such a name, and the same words inside strings, are fine.
        for sql in [
            "INSERT INTO countries (code, `user`) VALUES ('fr', 'now()')",
            "UPDATE countries SET label = 'LIMIT' WHERE code = 'fr'",
        ] {
            assert!(
                matches!(run(sql, None), Plan::MultiWrite { copies: true, .. }),
                "{sql}"
            );
        }
    }

    #[test]
    fn writes_over_several_shards_are_one_distributed_write() {
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) != shard_of(*b))
            .unwrap();
        let sql = format!(
            "INSERT INTO customers (id, name) VALUES ({a}, 'a'), ({b}, 'b') \
             ON DUPLICATE KEY UPDATE name = VALUES(name)"
        );
        match run(&sql, None) {
            Plan::MultiWrite { parts, copies } => {
                assert!(!copies);
                assert_eq!(parts.len(), 2);
                for (t, text) in parts {
                    let id = if t.shard == shard_of(a) { a } else { b };
                    let other = if id == a { b } else { a };
                    assert!(text.contains(&format!("({id}, ")), "{text}");
                    assert!(!text.contains(&format!("({other}, ")), "{text}");
                    assert!(text.ends_with("ON DUPLICATE KEY UPDATE name = VALUES(name)"));
                }
            }
            other => panic!("expected a split insert, got {other:?}"),
        }
        // Setting the key to a value of the row's own shard keeps the row there.
        let same = (1..100)
            .find(|x| *x != a && shard_of(*x) == shard_of(a))
            .unwrap();
        for sql in [
            format!("UPDATE customers SET id = {same}, name = 'n' WHERE id = {a}"),
            format!("UPDATE customers SET id = {a} WHERE id = {a}"),
        ] {
            assert_eq!(single(&run(&sql, None)), shard_of(a), "{sql}");
        }
        assert!(matches!(
            run(
                &format!("UPDATE customers SET id = {b} WHERE id = {a}"),
                None
            ),
            Plan::Refuse(_)
        ));
        // A prepared split insert waits for its parameters.
        assert_eq!(
            run("INSERT INTO customers (id) VALUES (?), (?)", None),
            Plan::NeedsParams
        );
        for (sql, copies) in [
            ("INSERT INTO countries VALUES ('fr')".to_string(), true),
            ("UPDATE countries SET code = 'x'".into(), true),
            ("UPDATE customers SET name = 'x'".into(), false),
            ("DELETE FROM customers WHERE id > 5".into(), false),
            (
                format!("DELETE FROM customers WHERE id IN ({a}, {b})"),
                false,
            ),
        ] {
            match run(&sql, None) {
                Plan::MultiWrite { parts, copies: c } => {
                    assert_eq!(parts.len(), 2, "{sql}");
                    assert_eq!(c, copies, "{sql}");
                    assert!(parts.iter().all(|(_, t)| *t == sql));
                }
                other => panic!("{sql}: expected a multi-shard write, got {other:?}"),
            }
        }
    }

    #[test]
    fn plain_reads_over_several_shards_scatter() {
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) != shard_of(*b))
            .unwrap();
        for (sql, shards) in [
            ("SELECT * FROM customers".to_string(), 2),
            (
                "SELECT id, UPPER(name) FROM customers WHERE id > 5".into(),
                2,
            ),
            ("SELECT * FROM customers WHERE id = 1 OR id = 2".into(), 2),
            ("SELECT * FROM customers WHERE id = 1.0".into(), 2),
            ("SELECT * FROM customers WHERE id = '042'".into(), 2),
            (format!("SELECT * FROM customers WHERE id IN ({a}, {b})"), 2),
        ] {
            match run(&sql, None) {
                Plan::Scatter { targets, limit, .. } => {
                    assert_eq!((targets.len(), limit), (shards, None), "{sql}")
                }
                other => panic!("{sql}: expected a scatter, got {other:?}"),
            }
        }
        for sql in [
            "SELECT COUNT(*) FROM customers",
            "SELECT COUNT(*) AS n, COUNT(name) FROM customers WHERE id > 3",
        ] {
            match run(sql, None) {
                Plan::ScatterCount { targets } => assert_eq!(targets.len(), 2, "{sql}"),
                other => panic!("{sql}: expected a scatter count, got {other:?}"),
            }
        }
        match run(
            "SELECT id, name FROM customers ORDER BY name DESC, id LIMIT 5",
            None,
        ) {
            Plan::Scatter { limit, order, .. } => {
                assert_eq!(limit, Some(5));
                assert_eq!(
                    order,
                    vec![("name".to_string(), true), ("id".to_string(), false)]
                );
            }
            other => panic!("expected a merged scatter, got {other:?}"),
        }
        match run("SELECT id FROM customers WHERE id > 3 LIMIT 5", None) {
            Plan::Scatter { targets, limit, .. } => {
                assert_eq!((targets.len(), limit), (2, Some(5)))
            }
            other => panic!("expected a scatter, got {other:?}"),
        }
    }

    #[test]
    fn reads_needing_a_merge_are_gathered_or_refused_by_name() {
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) != shard_of(*b))
            .unwrap();
        for (sql, shards) in [
            ("SELECT SUM(id) FROM customers".to_string(), 2),
            (
                "SELECT name, COUNT(*) FROM customers GROUP BY name".into(),
                2,
            ),
            ("SELECT * FROM customers ORDER BY id LIMIT 2, 3".into(), 2),
            ("SELECT DISTINCT name FROM customers WHERE id > 3".into(), 2),
            (
                format!("SELECT AVG(id) FROM customers WHERE id IN ({a}, {b})"),
                2,
            ),
            ("SELECT MAX(name) FROM customers WHERE id = 1.0".into(), 2),
        ] {
            match run(&sql, None) {
                Plan::Gather { targets, spec } => {
                    assert_eq!(targets.len(), shards, "{sql}");
                    assert!(spec.sql.starts_with("SELECT "), "{sql}");
                }
                other => panic!("{sql}: expected a gather, got {other:?}"),
            }
        }
        assert_eq!(
            run("SELECT GROUP_CONCAT(name) FROM customers", None),
            Plan::Refuse("GROUP_CONCAT on sharded table `customers` over several shards".into())
        );
        assert_eq!(
            run("SELECT * FROM customers LIMIT ?, 2", None),
            Plan::NeedsParams
        );
        // UNION ALL of plain reads of one table: a raw scatter of the whole statement.
        match run(
            "SELECT id FROM customers WHERE id = 1 UNION ALL SELECT id FROM customers LIMIT 4",
            None,
        ) {
            Plan::Scatter {
                targets,
                limit,
                order,
            } => assert_eq!((targets.len(), limit, order.len()), (2, Some(4), 0)),
            other => panic!("expected a scatter, got {other:?}"),
        }
        assert_eq!(
            run(
                "SELECT id FROM customers UNION SELECT id FROM customers",
                None
            ),
            Plan::Refuse(
                "UNION without ALL (DISTINCT) on sharded table `customers` over several shards"
                    .into()
            )
        );
    }

    #[test]
    fn ddl_reference_reads_and_unsharded_statements() {
        match run("CREATE TABLE customers (id BIGINT PRIMARY KEY)", None) {
            Plan::Every(t) => assert_eq!(t.len(), 2),
            other => panic!("{other:?}"),
        }
        match run("CREATE DATABASE app", None) {
            Plan::KeyspaceDatabases(dbs) => {
                assert_eq!(
                    dbs,
                    vec![("c1".into(), "app".into()), ("c2".into(), "app".into())]
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(single(&run("SELECT * FROM countries", None)), "-80");
        assert_eq!(run("SELECT 1", None), Plan::Unsharded);
        assert_eq!(
            run("SELECT * FROM settings WHERE k = 1", None),
            Plan::Unsharded
        );
        assert_eq!(run("CREATE DATABASE other", None), Plan::Unsharded);
    }

    /// The key's syntax tree with the text's literals finds the shard the text's own plan
    /// finds, for every text that shares the key; what it can't place is left to that plan.
    #[test]
    fn text_statements_are_placed_from_their_parsed_key() {
        let map = map();
        let c = Classifier::new(64);
        let by_key = |sql: &str| {
            let class = c.classify(sql);
            plan_by_key(&map, sql, &class, Some("app")).map(|t| t.shard)
        };
        for id in [1i64, 2, 3, 42, 7_000_000_000] {
            for sql in [
                format!("SELECT * FROM customers WHERE id = {id}"),
                format!("select *  from customers where id={id}"),
                format!("SELECT name FROM customers WHERE name = 'x' AND (id = {id})"),
                format!("SELECT * FROM customers c WHERE c.id = '{id}'"),
                format!("SELECT * FROM customers WHERE id IN ({id}) LIMIT 5"),
                format!("UPDATE customers SET name = 'n' WHERE id = {id}"),
                format!("DELETE FROM customers WHERE {id} = id"),
                format!("SELECT o.* FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.id = {id}"),
            ] {
                let full = run(&sql, None);
                assert_eq!(by_key(&sql).as_deref(), Some(single(&full)), "{sql}");
            }
        }
        // The same key with another literal: the tree is shared, the shard is the literal's.
        let (a, b) = (1..100)
            .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
            .find(|(a, b)| shard_of(*a) != shard_of(*b))
            .unwrap();
        for id in [a, b, a] {
            let sql = format!("SELECT * FROM customers WHERE id = {id}");
            assert_eq!(by_key(&sql).as_deref(), Some(shard_of(id)));
        }
        let class = c.classify("SELECT * FROM customers WHERE id = 1");
        assert!(format!("{:?}", class.key_statement).contains("id = ?"));

        // A reference table's read: any shard, as planned from the text.
        let sql = "SELECT * FROM countries WHERE code = 'FR'";
        assert_eq!(by_key(sql).as_deref(), Some(single(&run(sql, None))));

        // Left to the text's own plan: several shards, negative numbers (`-?` is no key),
        // escapes, comments, double quotes, placeholders, INSERTs, unsharded tables, statements sqlparser can't read with `?` in place of a literal.
        for sql in [
            format!("SELECT * FROM customers WHERE id IN ({a}, {b})"),
            "SELECT * FROM customers".to_string(),
            "SELECT * FROM customers WHERE id = -7".to_string(),
            "SELECT * FROM customers WHERE id = 1.0".to_string(),
            "SELECT * FROM customers WHERE id = 0x10".to_string(),
            r"SELECT * FROM customers WHERE id = 'a\'b'".to_string(),
            "SELECT * FROM customers WHERE id = 'it''s'".to_string(),
            "SELECT * FROM customers WHERE id = _utf8mb4'1'".to_string(),
            "SELECT * FROM customers WHERE id = 1 /*!99999 OR id = 2 */".to_string(),
            "SELECT * FROM customers WHERE /*M!999999 id = 2 AND */ id = 1".to_string(),
            "SELECT * FROM customers WHERE id = 1 -- x".to_string(),
            "SELECT * FROM customers WHERE id = 1 # x".to_string(),
            "SELECT * FROM customers WHERE id = \"1\"".to_string(),
            "SELECT * FROM customers WHERE id = ?".to_string(),
            "UPDATE customers SET name = 'x' WHERE id = 7 AND tag = 'b0".to_string(),
            "UPDATE customers SET name = 'x' WHERE id = 7 AND tag = 'b''".to_string(),
            "SELECT * FROM customers WHERE id = 7 AND x = 1e".to_string(),
            "SELECT * FROM customers WHERE id = 7 AND x = .5".to_string(),
            "SELECT * FROM customers WHERE \0id = 1".to_string(),
            "SELECT * FROM customers WHERE id = 1 AND name = 'Zoë'".to_string(),
            "INSERT INTO customers (id, name) VALUES (1, 'a')".to_string(),
            "SELECT * FROM other WHERE id = 1".to_string(),
            "SELECT * FROM customers WHERE id = 1; SELECT 2".to_string(),
        ] {
            assert_eq!(by_key(&sql), None, "{sql}");
        }
        // A classifier without a cache parses no key.
        let uncached = Classifier::new(0).classify("SELECT * FROM customers WHERE id = 1");
        assert_eq!(
            plan_by_key(
                &map,
                "SELECT * FROM customers WHERE id = 1",
                &uncached,
                Some("app")
            ),
            None
        );
    }
}
