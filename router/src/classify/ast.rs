//! What the sqlparser AST adds: the kind of the statements it understands, locking
//! and `INTO` clauses, and the tables a statement references (for shard routing).
//! A hand-written walk, since sqlparser's `visitor` feature is not enabled.

use sqlparser::ast::{
    CreateTableLikeKind, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, InTarget, Join, JoinConstraint, JoinOperator, ObjectName, ObjectNamePart,
    ObjectType, OnInsert, Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins, UpdateTableFromKind,
};

use super::{StatementKind, TableRef};

/// The kind of `stmt`, or `None` for statements this mapping does not cover (the
/// token scan decides those). `Use` names come from the token scan, which unquotes
/// exactly as the server does, so `Use` maps to `None` too.
pub(crate) fn kind(stmt: &Statement) -> Option<StatementKind> {
    use StatementKind as K;
    Some(match stmt {
        Statement::Query(q) => query_kind(q),
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Call(_)
        | Statement::Truncate(_)
        | Statement::LoadData { .. }
        | Statement::Load { .. } => K::Write,
        Statement::Drop {
            object_type: ObjectType::User | ObjectType::Role,
            ..
        }
        | Statement::CreateUser(_)
        | Statement::AlterUser(_)
        | Statement::CreateRole(_)
        | Statement::AlterRole { .. } => K::Other,
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::CreateDatabase { .. }
        | Statement::CreateSchema { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateTrigger(_)
        | Statement::CreateSequence { .. }
        | Statement::AlterTable(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView(_)
        | Statement::AlterSchema(_)
        | Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropProcedure { .. }
        | Statement::DropTrigger(_)
        | Statement::RenameTable(_) => K::Ddl,
        Statement::Set(_) => K::Set,
        Statement::StartTransaction { .. } => K::Begin,
        Statement::Commit { .. } => K::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => K::Rollback,
        Statement::LockTables { .. } => K::LockTables,
        Statement::UnlockTables => K::UnlockTables,
        Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::ExplainTable { .. } => K::Show,
        // EXPLAIN ANALYZE executes the statement.
        Statement::Explain { analyze, .. } => {
            if *analyze {
                K::Other
            } else {
                K::Show
            }
        }
        Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Kill { .. }
        | Statement::Flush { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::Prepare { .. }
        | Statement::Execute { .. }
        | Statement::Deallocate { .. }
        | Statement::Analyze(_) => K::Other,
        _ => return None,
    })
}

fn query_kind(q: &Query) -> StatementKind {
    match &*q.body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            StatementKind::Write
        }
        _ => StatementKind::Select {
            locking: !q.locks.is_empty() || body_has_into(&q.body),
        },
    }
}

fn body_has_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => !q.locks.is_empty() || body_has_into(&q.body),
        SetExpr::SetOperation { left, right, .. } => body_has_into(left) || body_has_into(right),
        _ => false,
    }
}

/// Collects the tables `stmt` references, in order of appearance, without duplicates
/// and without the names of its own common table expressions.
pub(crate) fn collect_tables(stmt: &Statement, out: &mut Vec<TableRef>) {
    let mut w = Walker {
        tables: Vec::new(),
        ctes: Vec::new(),
    };
    w.statement(stmt);
    for t in w.tables {
        let is_cte = t.schema.is_none() && w.ctes.iter().any(|c| c.eq_ignore_ascii_case(&t.name));
        if !is_cte && !out.contains(&t) {
            out.push(t);
        }
    }
}

struct Walker {
    tables: Vec<TableRef>,
    ctes: Vec<String>,
}

impl Walker {
    fn name(&mut self, name: &ObjectName) {
        let parts: Vec<&str> = name
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(id) => Some(id.value.as_str()),
                ObjectNamePart::Function(_) => None,
            })
            .collect();
        let (schema, table) = match parts.as_slice() {
            // `FROM DUAL` names no table.
            [] => return,
            [t] if t.eq_ignore_ascii_case("dual") => return,
            [t] => (None, *t),
            [.., s, t] => (Some((*s).to_string()), *t),
        };
        self.tables.push(TableRef {
            schema,
            name: table.to_string(),
        });
    }

    fn statement(&mut self, stmt: &Statement) {
        match stmt {
            Statement::Query(q) => self.query(q),
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    self.name(n);
                }
                if let Some(src) = &i.source {
                    self.query(src);
                }
                for a in &i.assignments {
                    self.expr(&a.value);
                }
                if let Some(OnInsert::DuplicateKeyUpdate(assignments)) = &i.on {
                    for a in assignments {
                        self.expr(&a.value);
                    }
                }
            }
            Statement::Update(u) => {
                self.table_with_joins(&u.table);
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &u.from
                {
                    f.iter().for_each(|t| self.table_with_joins(t));
                }
                for a in &u.assignments {
                    self.expr(&a.value);
                }
                self.opt_expr(u.selection.as_ref());
            }
            Statement::Delete(d) => {
                d.tables.iter().for_each(|n| self.name(n));
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                f.iter().for_each(|t| self.table_with_joins(t));
                if let Some(using) = &d.using {
                    using.iter().for_each(|t| self.table_with_joins(t));
                }
                self.opt_expr(d.selection.as_ref());
            }
            Statement::CreateTable(c) => {
                self.name(&c.name);
                if let Some(CreateTableLikeKind::Plain(l) | CreateTableLikeKind::Parenthesized(l)) =
                    &c.like
                {
                    self.name(&l.name);
                }
                if let Some(q) = &c.query {
                    self.query(q);
                }
            }
            Statement::CreateView(v) => {
                self.name(&v.name);
                self.query(&v.query);
            }
            Statement::CreateIndex(i) => self.name(&i.table_name),
            Statement::AlterTable(a) => self.name(&a.name),
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View,
                names,
                ..
            } => names.iter().for_each(|n| self.name(n)),
            Statement::Drop {
                object_type: ObjectType::Index,
                table: Some(t),
                ..
            } => self.name(t),
            Statement::Truncate(t) => t.table_names.iter().for_each(|n| self.name(&n.name)),
            Statement::RenameTable(r) => {
                for rt in r {
                    self.name(&rt.old_name);
                    self.name(&rt.new_name);
                }
            }
            Statement::LockTables { tables } => {
                for t in tables {
                    self.tables.push(TableRef {
                        schema: None,
                        name: t.table.value.clone(),
                    });
                }
            }
            Statement::ExplainTable { table_name, .. } => self.name(table_name),
            Statement::Explain { statement, .. } => self.statement(statement),
            _ => {}
        }
    }

    fn query(&mut self, q: &Query) {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.push(cte.alias.name.value.clone());
                self.query(&cte.query);
            }
        }
        self.set_expr(&q.body);
    }

    fn set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(s) => self.select(s),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            SetExpr::Values(v) => v
                .rows
                .iter()
                .flat_map(|r| &r.content)
                .for_each(|e| self.expr(e)),
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
                self.statement(s)
            }
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    self.tables.push(TableRef {
                        schema: t.schema_name.as_ref().map(|s| s.value.clone()),
                        name: name.value.clone(),
                    });
                }
            }
        }
    }

    fn select(&mut self, s: &Select) {
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    self.expr(e)
                }
                _ => {}
            }
        }
        s.from.iter().for_each(|t| self.table_with_joins(t));
        self.opt_expr(s.selection.as_ref());
        if let GroupByExpr::Expressions(exprs, _) = &s.group_by {
            exprs.iter().for_each(|e| self.expr(e));
        }
        self.opt_expr(s.having.as_ref());
    }

    fn table_with_joins(&mut self, t: &TableWithJoins) {
        self.table_factor(&t.relation);
        for Join {
            relation,
            join_operator,
            ..
        } in &t.joins
        {
            self.table_factor(relation);
            if let Some(JoinConstraint::On(e)) = join_constraint(join_operator) {
                self.expr(e);
            }
        }
    }

    fn table_factor(&mut self, f: &TableFactor) {
        match f {
            // `name(args)` is a table function, not a table.
            TableFactor::Table {
                name, args: None, ..
            } => self.name(name),
            TableFactor::Derived { subquery, .. } => self.query(subquery),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.table_with_joins(table_with_joins),
            TableFactor::JsonTable { json_expr, .. } => self.expr(json_expr),
            _ => {}
        }
    }

    fn opt_expr(&mut self, e: Option<&Expr>) {
        if let Some(e) = e {
            self.expr(e);
        }
    }

    /// Walks into the expressions that can hold subqueries; leaves cannot.
    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => self.query(q),
            Expr::In { expr, target, .. } => {
                self.expr(expr);
                match target {
                    InTarget::List(list) => list.iter().for_each(|e| self.expr(e)),
                    InTarget::Subquery(q) => self.query(q),
                    InTarget::Unnest(e) => self.expr(e),
                    InTarget::Table { name, .. } => self.name(name),
                }
            }
            Expr::BinaryOp { left, right, .. }
            | Expr::AnyOp { left, right, .. }
            | Expr::AllOp { left, right, .. }
            | Expr::IsDistinctFrom(left, right)
            | Expr::IsNotDistinctFrom(left, right) => {
                self.expr(left);
                self.expr(right);
            }
            Expr::Like { expr, pattern, .. }
            | Expr::ILike { expr, pattern, .. }
            | Expr::SimilarTo { expr, pattern, .. }
            | Expr::RLike { expr, pattern, .. } => {
                self.expr(expr);
                self.expr(pattern);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                self.expr(expr);
                self.expr(low);
                self.expr(high);
            }
            Expr::UnaryOp { expr, .. }
            | Expr::Nested(expr)
            | Expr::Cast { expr, .. }
            | Expr::Convert { expr, .. }
            | Expr::Collate { expr, .. }
            | Expr::Extract { expr, .. }
            | Expr::IsNull(expr)
            | Expr::IsNotNull(expr)
            | Expr::IsTrue(expr)
            | Expr::IsNotTrue(expr)
            | Expr::IsFalse(expr)
            | Expr::IsNotFalse(expr)
            | Expr::IsUnknown(expr)
            | Expr::IsNotUnknown(expr) => self.expr(expr),
            Expr::Tuple(list) => list.iter().for_each(|e| self.expr(e)),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                self.opt_expr(operand.as_deref());
                for c in conditions {
                    self.expr(&c.condition);
                    self.expr(&c.result);
                }
                self.opt_expr(else_result.as_deref());
            }
            Expr::Function(f) => match &f.args {
                FunctionArguments::Subquery(q) => self.query(q),
                FunctionArguments::List(list) => {
                    for a in &list.args {
                        let (FunctionArg::Named { arg, .. }
                        | FunctionArg::ExprNamed { arg, .. }
                        | FunctionArg::Unnamed(arg)) = a;
                        if let FunctionArgExpr::Expr(e) = arg {
                            self.expr(e);
                        }
                    }
                }
                FunctionArguments::None => {}
            },
            _ => {}
        }
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator as J;
    match op {
        J::Join(c)
        | J::Inner(c)
        | J::Left(c)
        | J::LeftOuter(c)
        | J::Right(c)
        | J::RightOuter(c)
        | J::FullOuter(c)
        | J::CrossJoin(c)
        | J::Semi(c)
        | J::LeftSemi(c)
        | J::RightSemi(c)
        | J::Anti(c)
        | J::LeftAnti(c)
        | J::RightAnti(c)
        | J::StraightJoin(c)
        | J::AsOf { constraint: c, .. } => Some(c),
        _ => None,
    }
}
