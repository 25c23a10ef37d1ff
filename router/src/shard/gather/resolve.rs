//! Resolving the names in a grouped SELECT (aliases, positions, GROUP BY expressions,
//! aggregates in HAVING and ORDER BY) to columns of the shards' results, adding the hidden
//! helper columns they need.

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, UnaryOperator,
    Value,
};

use super::{
    aggregate_call, contains_aggregate, refuse, Agg, Call, CmpOp, Col, Cond, GatherError, Grouping,
    Keyed, Operand, Ref,
};

pub(super) fn weight_of(e: &Expr) -> Expr {
    let call = |name: &str, arg: Expr| {
        Expr::Function(sqlparser::ast::Function {
            name: sqlparser::ast::ObjectName::from(vec![Ident::new(name)]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
                clauses: Vec::new(),
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: Vec::new(),
        })
    };
    call("WEIGHT_STRING", call("RTRIM", e.clone()))
}

pub(super) fn is_constant(e: &Expr) -> bool {
    use std::ops::ControlFlow;
    sqlparser::ast::visit_expressions(e, |x| match x {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_continue()
}

/// Whether `e` is one of the grouping expressions (a column matches its qualified form).
pub(super) fn is_grouped(e: &Expr, groups: &[Expr]) -> bool {
    groups.iter().any(|g| same_expr(e, g))
}

fn same_expr(a: &Expr, b: &Expr) -> bool {
    let col = |e: &Expr| match e {
        Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.to_ascii_lowercase()),
        _ => None,
    };
    match (col(a), col(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub(super) struct Builder {
    /// The client's select items and their aliases.
    pub(super) items: Vec<(Expr, Option<String>)>,
    pub(super) hidden: Vec<Expr>,
    /// Expressions the shards group by besides the client's (COUNT(DISTINCT x)'s `x`).
    pub(super) extra_groups: Vec<Expr>,
    /// The GROUP BY expressions as written.
    pub(super) raw_groups: Vec<Expr>,
}

impl Builder {
    pub(super) fn hide(&mut self, e: Expr) -> Col {
        if let Some(i) = self.hidden.iter().position(|h| *h == e) {
            return Col::Hidden(i);
        }
        self.hidden.push(e);
        Col::Hidden(self.hidden.len() - 1)
    }

    /// A compared value: the expression and its weight string, as hidden columns.
    pub(super) fn keyed(&mut self, e: Expr) -> Keyed {
        let w = weight_of(&e);
        Keyed {
            value: self.hide(e),
            weight: self.hide(w),
        }
    }

    fn alias(&self, name: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|(_, a)| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(name)))
    }

    fn position(&self, e: &Expr) -> Result<Option<usize>, GatherError> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                return match n.parse::<usize>() {
                    Ok(p) if p >= 1 && p <= self.items.len() => Ok(Some(p - 1)),
                    _ => refuse(format!("ORDER BY or GROUP BY position {n}")),
                };
            }
        }
        Ok(None)
    }

    /// ORDER BY without grouping: an alias or position names a select item's expression.
    pub(super) fn resolve_order_plain(&self, e: &Expr, star: bool) -> Result<Expr, GatherError> {
        if let Some(p) = self.position(e)? {
            if star {
                return refuse("ORDER BY a position with `*`");
            }
            return Ok(self.items[p].0.clone());
        }
        if let Expr::Identifier(i) = e {
            if let Some(p) = self.alias(&i.value) {
                return Ok(self.items[p].0.clone());
            }
        }
        Ok(e.clone())
    }

    /// A GROUP BY expression (and whether a select alias was used to name it).
    pub(super) fn resolve_group(&self, e: &Expr) -> Result<(Expr, bool), GatherError> {
        if let Some(p) = self.position(e)? {
            return Ok((self.items[p].0.clone(), false));
        }
        if let Expr::Identifier(i) = e {
            if let Some(p) = self.alias(&i.value) {
                let item = &self.items[p].0;
                let plain =
                    matches!(item, Expr::Identifier(c) if c.value.eq_ignore_ascii_case(&i.value));
                return Ok((item.clone(), !plain));
            }
        }
        Ok((e.clone(), false))
    }

    /// An aggregate of the group (for select item `item` when it is one).
    pub(super) fn agg(&mut self, g: &mut Grouping, call: &Call, item: Option<usize>) -> usize {
        let whole = match item {
            Some(i) => Col::Item(i),
            None => {
                let text = match &call.arg {
                    Some(a) => format!("{}({a})", call.name),
                    None => "COUNT(*)".into(),
                };
                self.hide(parse_expr(&text))
            }
        };
        let arg = call.arg.clone();
        let whole_expr = match whole {
            Col::Item(i) => self.items[i].0.clone(),
            Col::Hidden(h) => self.hidden[h].clone(),
        };
        let a = match call.name {
            "COUNT" => Agg::Count(whole),
            "COUNT DISTINCT" => {
                let x = arg.clone().unwrap_or_else(|| whole_expr.clone());
                if !self.extra_groups.contains(&x) {
                    self.extra_groups.push(x.clone());
                }
                Agg::CountDistinct(self.keyed(x))
            }
            "SUM" => Agg::Sum(whole),
            "MIN" | "MAX" => {
                let weight = self.hide(weight_of(&whole_expr));
                let k = Keyed {
                    value: whole,
                    weight,
                };
                if call.name == "MIN" {
                    Agg::Min(k)
                } else {
                    Agg::Max(k)
                }
            }
            _ => {
                let arg = arg.map(|a| a.to_string()).unwrap_or_else(|| "*".into());
                Agg::Avg {
                    avg: whole,
                    sum: self.hide(parse_expr(&format!("SUM({arg})"))),
                    count: self.hide(parse_expr(&format!("COUNT({arg})"))),
                }
            }
        };
        if let Some(i) = g.aggs.iter().position(|x| *x == a) {
            return i;
        }
        g.aggs.push(a);
        g.aggs.len() - 1
    }

    /// A value of the merged group named in HAVING or ORDER BY.
    pub(super) fn grouped_ref(
        &mut self,
        g: &mut Grouping,
        e: &Expr,
        groups: &[Expr],
        positions: bool,
    ) -> Result<Ref, GatherError> {
        if positions {
            if let Some(p) = self.position(e)? {
                return Ok(g.items[p]);
            }
        }
        if let Expr::Identifier(i) = e {
            if let Some(p) = self.alias(&i.value) {
                // In HAVING a GROUP BY column wins over a select alias of the same name.
                let grouped_column = self.raw_groups.iter().any(
                    |g| matches!(g, Expr::Identifier(c) if c.value.eq_ignore_ascii_case(&i.value)),
                );
                let same = matches!(&self.items[p].0,
                    Expr::Identifier(c) if c.value.eq_ignore_ascii_case(&i.value));
                if !positions && grouped_column && !same {
                    return refuse(format!(
                        "`{i}` in HAVING, both a select alias and a GROUP BY column"
                    ));
                }
                return Ok(g.items[p]);
            }
        }
        if let Some(p) = self.items.iter().position(|(x, _)| x == e) {
            return Ok(g.items[p]);
        }
        if let Some(call) = aggregate_call(e)? {
            // Same aggregate as a select item: reuse it.
            return Ok(Ref::Agg(self.agg(g, &call, None)));
        }
        if contains_aggregate(e)? {
            return refuse("expressions over aggregates in HAVING or ORDER BY");
        }
        if is_grouped(e, groups) {
            return Ok(Ref::Col(self.keyed(e.clone())));
        }
        refuse(format!(
            "`{e}` in HAVING or ORDER BY, neither an aggregate nor a GROUP BY expression"
        ))
    }

    pub(super) fn cond(
        &mut self,
        g: &mut Grouping,
        e: &Expr,
        groups: &[Expr],
    ) -> Result<Cond, GatherError> {
        let op = |o: &BinaryOperator| match o {
            BinaryOperator::Eq => Some(CmpOp::Eq),
            BinaryOperator::NotEq => Some(CmpOp::Ne),
            BinaryOperator::Lt => Some(CmpOp::Lt),
            BinaryOperator::LtEq => Some(CmpOp::Le),
            BinaryOperator::Gt => Some(CmpOp::Gt),
            BinaryOperator::GtEq => Some(CmpOp::Ge),
            _ => None,
        };
        Ok(match e {
            Expr::Nested(x) => self.cond(g, x, groups)?,
            Expr::BinaryOp { left, op: o, right } => match o {
                BinaryOperator::And => Cond::And(
                    Box::new(self.cond(g, left, groups)?),
                    Box::new(self.cond(g, right, groups)?),
                ),
                BinaryOperator::Or => Cond::Or(
                    Box::new(self.cond(g, left, groups)?),
                    Box::new(self.cond(g, right, groups)?),
                ),
                other => match op(other) {
                    Some(c) => Cond::Cmp(
                        self.operand(g, left, groups)?,
                        c,
                        self.operand(g, right, groups)?,
                    ),
                    None => return refuse(format!("HAVING with operator {other}")),
                },
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Cond::Not(Box::new(self.cond(g, expr, groups)?)),
            Expr::IsNull(x) => Cond::IsNull(self.operand(g, x, groups)?, false),
            Expr::IsNotNull(x) => Cond::IsNull(self.operand(g, x, groups)?, true),
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let v = self.operand(g, expr, groups)?;
                let c = Cond::And(
                    Box::new(Cond::Cmp(
                        v.clone(),
                        CmpOp::Ge,
                        self.operand(g, low, groups)?,
                    )),
                    Box::new(Cond::Cmp(v, CmpOp::Le, self.operand(g, high, groups)?)),
                );
                if *negated {
                    Cond::Not(Box::new(c))
                } else {
                    c
                }
            }
            Expr::In {
                expr,
                target: sqlparser::ast::InTarget::List(list),
                negated,
                ..
            } => {
                let v = self.operand(g, expr, groups)?;
                let mut c: Option<Cond> = None;
                for x in list {
                    let o = self.operand(g, x, groups)?;
                    if matches!(o, Operand::Ref(_)) {
                        return refuse("HAVING ... IN with a non-literal in the list");
                    }
                    let eq = Cond::Cmp(v.clone(), CmpOp::Eq, o);
                    c = Some(match c {
                        None => eq,
                        Some(prev) => Cond::Or(Box::new(prev), Box::new(eq)),
                    });
                }
                let c = c.ok_or_else(|| GatherError::Refuse("HAVING ... IN ()".into()))?;
                if *negated {
                    Cond::Not(Box::new(c))
                } else {
                    c
                }
            }
            other => return refuse(format!("HAVING condition `{other}`")),
        })
    }

    fn operand(
        &mut self,
        g: &mut Grouping,
        e: &Expr,
        groups: &[Expr],
    ) -> Result<Operand, GatherError> {
        match e {
            Expr::Nested(x) => self.operand(g, x, groups),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Ok(Operand::Num(n.clone())),
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    Ok(Operand::Str(s.as_bytes().to_vec()))
                }
                Value::Null => Ok(Operand::Null),
                Value::Placeholder(_) => Err(GatherError::NeedsParams),
                _ => refuse(format!("HAVING with literal {e}")),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => Ok(Operand::Num(format!("-{n}"))),
                    _ => refuse(format!("HAVING with `{e}`")),
                },
                _ => refuse(format!("HAVING with `{e}`")),
            },
            _ => Ok(Operand::Ref(self.grouped_ref(g, e, groups, false)?)),
        }
    }
}

fn parse_expr(text: &str) -> Expr {
    sqlparser::parser::Parser::new(&sqlparser::dialect::MySqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|_| Expr::Identifier(Ident::new(text)))
}
