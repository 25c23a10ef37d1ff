//! Reads over several shards that need merging in the router: the analysis of a SELECT into
//! the statement each shard runs and a [`GatherSpec`] saying how the router combines the
//! shards' rows (grouping, partial aggregates, HAVING, DISTINCT, ORDER BY, LIMIT/OFFSET).
//!
//! The shards run the client's select list as written (so their column definitions are the
//! ones one server would send for it), followed by hidden helper columns: `SUM`/`COUNT`
//! partials for `AVG`, grouping and sort expressions, and `WEIGHT_STRING(RTRIM(..))` of
//! values the router compares, so strings are compared and grouped by their collation's
//! weights rather than by a reimplementation of collations. Anything the analysis can't
//! prove it merges exactly is refused with a message naming the construct.

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    LimitClause, OrderByKind, OrderBySort, Query, Select, SelectItem, SetExpr, Spanned, Statement,
    Value,
};

use crate::classify::Classification;

mod resolve;
mod union;
use resolve::{is_constant, is_grouped, weight_of, Builder};
pub use union::{is_union_of, union_all};

/// A column of the shards' result: one of the client's select items, or the n-th hidden
/// helper after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Item(usize),
    Hidden(usize),
}

/// A value the router compares: its column and, for strings in a collation, the column of
/// `WEIGHT_STRING(RTRIM(value))` (trailing spaces never count in PAD SPACE collations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    pub value: Col,
    pub weight: Col,
}

/// A value of a merged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// A column of the (first shard row of the) group, or of the row without grouping.
    Col(Keyed),
    /// An aggregate of the group.
    Agg(usize),
}

/// An aggregate merged from the shards' partial results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// COUNT: the partial counts summed.
    Count(Col),
    /// SUM: the partial sums summed (NULL when every partial is NULL).
    Sum(Col),
    Min(Keyed),
    Max(Keyed),
    /// COUNT(DISTINCT x): the shards group by `x` too and send its values; the router counts
    /// the distinct ones (by weight for strings).
    CountDistinct(Keyed),
    /// AVG: `sum`/`count` partials; `avg` is the shards' own AVG column, whose definition
    /// gives the result's type and scale.
    Avg {
        avg: Col,
        sum: Col,
        count: Col,
    },
}

/// A comparison operator of HAVING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// An operand of a HAVING condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Ref(Ref),
    /// A numeric literal as written (`-` included).
    Num(String),
    Str(Vec<u8>),
    Null,
}

/// A HAVING condition, evaluated by the router with SQL's three-valued logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Operand, CmpOp, Operand),
    IsNull(Operand, bool),
}

/// Grouping in the router: rows with equal `keys` form one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub keys: Vec<Keyed>,
    pub aggs: Vec<Agg>,
    /// What each visible column of a merged row is.
    pub items: Vec<Ref>,
    pub having: Option<Cond>,
    /// A GROUP BY name resolved to a select alias: if the shards warn (1052, the name is
    /// also a column, which the server would group by), the merge is refused.
    pub alias_group: bool,
    /// The shards also group by COUNT(DISTINCT ...) arguments: without GROUP BY, no rows
    /// still make one result row.
    pub count_distinct: bool,
}

/// How the router merges the shards' results of [`GatherSpec::sql`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherSpec {
    /// What every shard runs (text protocol).
    pub sql: String,
    /// Helper columns at the end of each shard row, never sent to the client.
    pub hidden: usize,
    /// `None`: rows are kept as they are (no aggregate, GROUP BY or DISTINCT).
    pub grouping: Option<Grouping>,
    /// Sort keys (descending?) applied after grouping and HAVING.
    pub order: Vec<(Ref, bool)>,
    pub offset: u64,
    pub limit: Option<u64>,
}

/// Why a statement can't be gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatherError {
    /// Refused: what is not supported (the caller adds the table).
    Refuse(String),
    /// `LIMIT ?`: plan again with the parameters written in.
    NeedsParams,
}

fn refuse<T>(what: impl Into<String>) -> Result<T, GatherError> {
    Err(GatherError::Refuse(what.into()))
}

/// Aggregate functions MariaDB knows; those not merged are refused by name.
const OTHER_AGGREGATES: &[&str] = &[
    "GROUP_CONCAT",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
];

/// Whether `name` (upper case) is an aggregate function, merged or not.
pub(super) fn is_aggregate(name: &str) -> bool {
    matches!(name, "COUNT" | "SUM" | "MIN" | "MAX" | "AVG") || OTHER_AGGREGATES.contains(&name)
}

/// A function call's name, upper case.
pub(super) fn function_name(f: &sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_uppercase())
        .unwrap_or_default()
}

/// A merged aggregate call: its name and argument (`None` for `*`).
struct Call {
    name: &'static str,
    arg: Option<Expr>,
}

/// `Ok(Some)` for COUNT/SUM/MIN/MAX/AVG the router merges, `Ok(None)` for anything that is
/// not an aggregate, `Err` for an aggregate it does not merge.
fn aggregate_call(e: &Expr) -> Result<Option<Call>, GatherError> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = function_name(f);
    if f.over.is_some() {
        return refuse("window functions");
    }
    if OTHER_AGGREGATES.contains(&name.as_str()) {
        return refuse(name);
    }
    let name: &'static str = match name.as_str() {
        "COUNT" => "COUNT",
        "SUM" => "SUM",
        "MIN" => "MIN",
        "MAX" => "MAX",
        "AVG" => "AVG",
        _ => return Ok(None),
    };
    let FunctionArguments::List(l) = &f.args else {
        return refuse(format!("this {name}(...) call"));
    };
    if f.filter.is_some() || !f.within_group.is_empty() || !l.clauses.is_empty() {
        return refuse(format!("this {name}(...) call"));
    }
    let distinct = matches!(
        l.duplicate_treatment,
        Some(sqlparser::ast::DuplicateTreatment::Distinct)
    );
    if distinct && name == "COUNT" {
        // Exact when the shards also group by the argument: the router counts the union
        // of the distinct values each shard sends.
        return match l.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] if !contains_aggregate(a)? => {
                Ok(Some(Call {
                    name: "COUNT DISTINCT",
                    arg: Some(a.clone()),
                }))
            }
            [_] => refuse("this COUNT(DISTINCT ...)"),
            _ => refuse("COUNT(DISTINCT ...) of several expressions"),
        };
    }
    if distinct && matches!(name, "SUM" | "AVG") {
        return refuse(format!("{name}(DISTINCT ...)"));
    }
    if l.args.len() != 1 {
        return refuse(format!("{name} with several arguments"));
    }
    let arg = match &l.args[0] {
        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "COUNT" => None,
        FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) => {
            if contains_aggregate(a)? {
                return refuse("nested aggregates");
            }
            Some(a.clone())
        }
        _ => return refuse(format!("this {name}(...) call")),
    };
    Ok(Some(Call { name, arg }))
}

/// Whether an expression contains an aggregate call (refusing those not merged).
fn contains_aggregate(e: &Expr) -> Result<bool, GatherError> {
    use std::ops::ControlFlow;
    let mut err = None;
    let found = sqlparser::ast::visit_expressions(e, |x| match aggregate_call(x) {
        Ok(Some(_)) => ControlFlow::Break(()),
        Ok(None) => ControlFlow::Continue(()),
        Err(e) => {
            err = Some(e);
            ControlFlow::Break(())
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found.is_break()),
    }
}

/// Refuses what no merge can make right: subqueries, window functions, unmerged aggregates.
fn check_expressions(stmt: &Statement) -> Result<(), GatherError> {
    use std::ops::ControlFlow;
    let found = sqlparser::ast::visit_expressions(stmt, |e| match e {
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::In {
            target: sqlparser::ast::InTarget::Subquery(_),
            ..
        } => ControlFlow::Break(GatherError::Refuse("subqueries".into())),
        Expr::Function(_) => match aggregate_call(e) {
            Err(e) => ControlFlow::Break(e),
            Ok(_) => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The select items' text as the client wrote it, so that the shards' column names are the
/// server's for the client's query; `None` where it can't be recovered exactly.
fn item_texts(sql: &str, s: &Select) -> Vec<Option<String>> {
    let offsets = line_offsets(sql);
    let at = |loc: sqlparser::tokenizer::Location| -> Option<usize> {
        let line_start = *offsets.get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        sql[line_start..]
            .char_indices()
            .nth(col)
            .map(|(i, _)| line_start + i)
    };
    let starts: Vec<Option<usize>> = s.projection.iter().map(|i| at(i.span().start)).collect();
    let end_of_list = s.from.first().and_then(|f| at(f.relation.span().start));
    let mut out = Vec::new();
    for (i, item) in s.projection.iter().enumerate() {
        let SelectItem::UnnamedExpr(e) = item else {
            out.push(None);
            continue;
        };
        let text = (|| {
            let start = starts[i]?;
            let end = match starts.get(i + 1) {
                Some(next) => {
                    let next = (*next)?;
                    start + sql.get(start..next)?.rfind(',')?
                }
                None => {
                    let end = end_of_list?;
                    let t = sql.get(start..end)?.trim_end();
                    let upper = t.to_ascii_uppercase();
                    if !upper.ends_with("FROM") {
                        return None;
                    }
                    start + t.len() - 4
                }
            };
            let text = sql.get(start..end)?.trim();
            let parsed = sqlparser::parser::Parser::new(&sqlparser::dialect::MySqlDialect {})
                .try_with_sql(text)
                .ok()?
                .parse_expr()
                .ok()?;
            (parsed == *e).then(|| text.to_string())
        })();
        out.push(text);
    }
    out
}

fn line_offsets(sql: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    v
}

/// [`analyze`] from the statement's text.
pub fn analyze_sql(sql: &str, class: &Classification) -> Result<GatherSpec, GatherError> {
    match super::plan::parse_one(sql) {
        Some(stmt) => analyze(&stmt, sql, class),
        None => refuse("this statement"),
    }
}

/// Builds what the shards run and how their results merge, for a SELECT on one sharded
/// table whose rows live on several shards.
pub fn analyze(
    stmt: &Statement,
    sql: &str,
    class: &Classification,
) -> Result<GatherSpec, GatherError> {
    let Statement::Query(q) = stmt else {
        return refuse("writes");
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return refuse("UNION, INTERSECT, EXCEPT or VALUES");
    };
    if s.into.is_some() {
        return refuse("SELECT ... INTO");
    }
    if class.calc_found_rows {
        return refuse("SQL_CALC_FOUND_ROWS");
    }
    if class.pin.is_some() || class.uses_session_functions {
        return refuse("session-dependent functions");
    }
    if q.with.is_some() {
        return refuse("WITH (common table expressions)");
    }
    if !q.locks.is_empty() || q.for_clause.is_some() {
        return refuse("locking reads (FOR UPDATE, LOCK IN SHARE MODE)");
    }
    if q.fetch.is_some() || s.top.is_some() || !q.pipe_operators.is_empty() {
        return refuse("FETCH/TOP");
    }
    if s.into.is_some() {
        return refuse("SELECT ... INTO");
    }
    if s.qualify.is_some() || !s.named_window.is_empty() {
        return refuse("window functions");
    }
    if matches!(s.distinct, Some(Distinct::On(_))) {
        return refuse("DISTINCT ON");
    }
    check_expressions(stmt)?;
    let (offset, limit) = limits(q)?;
    let group_exprs: Vec<Expr> = match &s.group_by {
        GroupByExpr::Expressions(e, m) => {
            if !m.is_empty() {
                return refuse("WITH ROLLUP");
            }
            e.clone()
        }
        GroupByExpr::All(_) => return refuse("GROUP BY ALL"),
    };
    let mut b = Builder {
        items: Vec::new(),
        hidden: Vec::new(),
        extra_groups: Vec::new(),
        raw_groups: Vec::new(),
    };
    for item in &s.projection {
        match item {
            SelectItem::UnnamedExpr(e) => b.items.push((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => {
                b.items.push((expr.clone(), Some(alias.value.clone())))
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                if s.projection.len() > 1 {
                    // Item positions can't be known before the result.
                    return refuse("`*` together with other select items");
                }
                b.items.push((Expr::Identifier(Ident::new("*")), None));
            }
            _ => return refuse("this select item"),
        }
    }
    let star = s.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let mut has_agg = false;
    for (e, _) in &b.items {
        if contains_aggregate(e)? {
            has_agg = true;
        }
    }
    let distinct = s.distinct.is_some();
    let grouped = has_agg || !group_exprs.is_empty() || distinct || s.having.is_some();
    let order_items = match &q.order_by {
        None => Vec::new(),
        Some(o) => {
            let OrderByKind::Expressions(items) = &o.kind else {
                return refuse("ORDER BY ALL");
            };
            if o.interpolate.is_some() {
                return refuse("ORDER BY ... INTERPOLATE");
            }
            let mut v = Vec::new();
            for it in items {
                if it.options.nulls_first.is_some() || it.with_fill.is_some() {
                    return refuse("ORDER BY with NULLS FIRST/LAST");
                }
                let desc = match it.options.sort {
                    None | Some(OrderBySort::Asc) => false,
                    Some(OrderBySort::Desc) => true,
                    Some(_) => return refuse("this ORDER BY"),
                };
                v.push((it.expr.clone(), desc));
            }
            v
        }
    };
    let mut spec = GatherSpec {
        sql: String::new(),
        hidden: 0,
        grouping: None,
        order: Vec::new(),
        offset,
        limit,
    };
    let mut shard_query = q.as_ref().clone();
    let SetExpr::Select(shard_select) = shard_query.body.as_mut() else {
        return refuse("this query");
    };
    if !grouped {
        // Rows as they are: each shard sorts and stops at offset + limit; the router sorts
        // the union and skips the offset.
        for (e, desc) in &order_items {
            let e = b.resolve_order_plain(e, star)?;
            let k = b.keyed(e);
            spec.order.push((Ref::Col(k), *desc));
        }
        shard_query.limit_clause = limit.map(|n| LimitClause::LimitOffset {
            limit: Some(number(n.saturating_add(offset))),
            offset: None,
            limit_by: Vec::new(),
        });
    } else {
        if star {
            return refuse("`*` with aggregates, GROUP BY or DISTINCT");
        }
        if distinct && has_agg {
            return refuse("DISTINCT with aggregates");
        }
        let mut g = Grouping {
            keys: Vec::new(),
            aggs: Vec::new(),
            items: Vec::new(),
            having: None,
            alias_group: false,
            count_distinct: false,
        };
        b.raw_groups = group_exprs.clone();
        // Group keys.
        let mut group_sources: Vec<Expr> = Vec::new();
        if distinct {
            for i in 0..b.items.len() {
                let w = b.hide(weight_of(&b.items[i].0));
                g.keys.push(Keyed {
                    value: Col::Item(i),
                    weight: w,
                });
                group_sources.push(b.items[i].0.clone());
            }
        }
        for ge in &group_exprs {
            if contains_aggregate(ge)? {
                return refuse("aggregates in GROUP BY");
            }
            let (e, by_alias) = b.resolve_group(ge)?;
            if contains_aggregate(&e)? {
                return refuse("aggregates in GROUP BY");
            }
            g.alias_group |= by_alias;
            let k = b.keyed(e.clone());
            g.keys.push(k);
            if order_items.is_empty() {
                // MariaDB sorts a GROUP BY result by its groups unless told otherwise.
                spec.order.push((Ref::Col(k), false));
            }
            group_sources.push(e);
        }
        // Items: aggregates or grouped expressions.
        for i in 0..b.items.len() {
            let e = b.items[i].0.clone();
            if let Some(call) = aggregate_call(&e)? {
                let a = b.agg(&mut g, &call, Some(i));
                g.items.push(Ref::Agg(a));
            } else if contains_aggregate(&e)? {
                return refuse("expressions over aggregates in the select list");
            } else if is_constant(&e) || is_grouped(&e, &group_sources) {
                let weight = b.hide(weight_of(&e));
                g.items.push(Ref::Col(Keyed {
                    value: Col::Item(i),
                    weight,
                }));
            } else {
                return refuse(format!(
                    "select item `{e}`, neither an aggregate nor a GROUP BY expression"
                ));
            }
        }
        if let Some(h) = &s.having {
            g.having = Some(b.cond(&mut g, h, &group_sources)?);
        }
        for (e, desc) in &order_items {
            let r = b.grouped_ref(&mut g, e, &group_sources, true)?;
            spec.order.push((r, *desc));
        }
        if !b.extra_groups.is_empty() {
            if group_exprs.is_empty() && g.items.iter().any(|r| matches!(r, Ref::Col(_))) {
                return refuse("COUNT(DISTINCT ...) with constants in the select list");
            }
            g.count_distinct = true;
            let mut all = group_exprs.clone();
            all.extend(b.extra_groups.iter().cloned());
            shard_select.group_by = GroupByExpr::Expressions(all, Vec::new());
        }
        shard_select.having = None;
        shard_query.order_by = None;
        shard_query.limit_clause = None;
        spec.grouping = Some(g);
    }
    // The shards' select list: the client's items (named as the client wrote them), then
    // the hidden helpers.
    let texts = item_texts(sql, s);
    let mut projection = Vec::new();
    for (i, item) in s.projection.iter().enumerate() {
        match (item, texts.get(i).cloned().flatten()) {
            (SelectItem::UnnamedExpr(e), Some(text))
                if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                    && e.to_string() != text
                    && !text.contains('`')
                    && text.chars().count() <= 256 =>
            {
                projection.push(SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('`', text),
                })
            }
            _ => projection.push(item.clone()),
        }
    }
    for h in &b.hidden {
        projection.push(SelectItem::UnnamedExpr(h.clone()));
    }
    shard_select.projection = projection;
    spec.hidden = b.hidden.len();
    spec.sql = shard_query.to_string();
    Ok(spec)
}

fn number(n: u64) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

/// `LIMIT [offset,] count` / `LIMIT count OFFSET offset` as numbers.
fn limits(q: &Query) -> Result<(u64, Option<u64>), GatherError> {
    let num = |e: &Expr| -> Result<u64, GatherError> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<u64>()
                    .map_err(|_| GatherError::Refuse("this LIMIT".into())),
                Value::Placeholder(_) => Err(GatherError::NeedsParams),
                _ => refuse("this LIMIT"),
            },
            _ => refuse("LIMIT with an expression"),
        }
    };
    match &q.limit_clause {
        None => Ok((0, None)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return refuse("LIMIT BY");
            }
            let l = match limit {
                Some(e) => Some(num(e)?),
                None => None,
            };
            let o = match offset {
                Some(o) => num(&o.value)?,
                None => 0,
            };
            Ok((o, l))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((num(offset)?, Some(num(limit)?)))
        }
    }
}

#[cfg(test)]
mod tests;
