//! `UNION ALL` of plain SELECTs over one sharded table: every shard runs the whole statement
//! on its own rows, and the concatenation of the shards' results is the answer (a multiset
//! union of row filters). Anything more (UNION DISTINCT, per-branch or outer ORDER BY, OFFSET,
//! grouping or aggregates in a branch) is refused.

use sqlparser::ast::{
    Expr, GroupByExpr, LimitClause, SetExpr, SetOperator, SetQuantifier, Statement, TableFactor,
    Value,
};

use super::{check_expressions, contains_aggregate, refuse, GatherError};
use crate::classify::Classification;

/// Whether `sql` is a set operation whose every branch reads only `table` (no joins), so
/// that it may be planned as a statement on that one table.
pub fn is_union_of(sql: &str, table: &str, class: &Classification) -> bool {
    if class
        .tables
        .iter()
        .any(|t| !t.name.eq_ignore_ascii_case(table))
    {
        return false;
    }
    let Some(Statement::Query(q)) = crate::shard::plan::parse_one(sql) else {
        return false;
    };
    fn leaves_read(e: &SetExpr, table: &str) -> bool {
        match e {
            SetExpr::SetOperation { left, right, .. } => {
                leaves_read(left, table) && leaves_read(right, table)
            }
            SetExpr::Select(s) => {
                s.from.len() == 1
                    && s.from[0].joins.is_empty()
                    && matches!(&s.from[0].relation, TableFactor::Table { name, .. }
                        if name.0.last().and_then(|p| p.as_ident())
                            .is_some_and(|i| i.value.eq_ignore_ascii_case(table)))
            }
            _ => false,
        }
    }
    matches!(q.body.as_ref(), SetExpr::SetOperation { .. }) && leaves_read(&q.body, table)
}

/// For a `UNION ALL` of plain SELECTs: its outer `LIMIT n`, if any.
pub fn union_all(stmt: &Statement, class: &Classification) -> Result<Option<u64>, GatherError> {
    let Statement::Query(q) = stmt else {
        return refuse("this statement");
    };
    if class.calc_found_rows {
        return refuse("SQL_CALC_FOUND_ROWS");
    }
    if class.pin.is_some() || class.uses_session_functions {
        return refuse("session-dependent functions");
    }
    if q.with.is_some() {
        return refuse("WITH (common table expressions)");
    }
    if !q.locks.is_empty() || q.for_clause.is_some() || q.fetch.is_some() {
        return refuse("locking reads (FOR UPDATE, LOCK IN SHARE MODE)");
    }
    if q.order_by.is_some() {
        return refuse("ORDER BY over UNION ALL");
    }
    check_expressions(stmt)?;
    fn branches(e: &SetExpr) -> Result<(), GatherError> {
        match e {
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                if *op != SetOperator::Union {
                    return refuse("INTERSECT or EXCEPT");
                }
                if !matches!(set_quantifier, SetQuantifier::All) {
                    return refuse("UNION without ALL (DISTINCT)");
                }
                branches(left)?;
                branches(right)
            }
            SetExpr::Select(s) => {
                let plain_group = matches!(&s.group_by,
                    GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
                if s.distinct.is_some()
                    || !plain_group
                    || s.having.is_some()
                    || s.into.is_some()
                    || s.top.is_some()
                {
                    return refuse("DISTINCT, GROUP BY, HAVING or INTO in a UNION ALL branch");
                }
                for item in &s.projection {
                    if let sqlparser::ast::SelectItem::UnnamedExpr(e)
                    | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = item
                    {
                        if contains_aggregate(e)? {
                            return refuse("aggregates in a UNION ALL branch");
                        }
                    }
                }
                Ok(())
            }
            _ => refuse("ORDER BY or LIMIT inside a UNION ALL branch"),
        }
    }
    branches(&q.body)?;
    match &q.limit_clause {
        None => Ok(None),
        Some(LimitClause::LimitOffset {
            limit: Some(Expr::Value(v)),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => match &v.value {
            Value::Number(n, _) => n
                .parse()
                .map(Some)
                .map_err(|_| GatherError::Refuse("this LIMIT".into())),
            Value::Placeholder(_) => Err(GatherError::NeedsParams),
            _ => refuse("this LIMIT"),
        },
        Some(_) => refuse("OFFSET over UNION ALL"),
    }
}
