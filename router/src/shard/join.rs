//! Which column references of a SELECT are the shard key, and whether a join of sharded and
//! reference tables can run on each shard on its own.
//!
//! A join is pushed down to the shards when its result is the union of the shards' own
//! results:
//! - every sharded table uses the same vindex, and the sharded tables are connected by
//!   equalities of their shard key columns (`a.k = b.k` in an inner join's `ON` or the
//!   `WHERE`, or in the `ON` / `USING` of the outer join that adds the table): joined rows then
//!   share a keyspace id and so a shard;
//! - reference tables (a full copy on every shard) join freely, except on the preserved side
//!   of an outer join whose other side holds sharded rows (each shard would add its own
//!   unmatched copy of every reference row).
//!
//! Tables joined on their shard keys must declare those columns with the same type: the
//! vindex places a value by its type (the string `'7'` and the number `7` hash differently),
//! while SQL compares them as equal.

use shard_map::{KeyspaceMap, ShardedTable, TableKind};
use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, Select, TableFactor, TableWithJoins,
};

/// A table of the FROM clause, by the name the statement refers to it with.
#[derive(Debug)]
pub(crate) struct Binding<'m> {
    /// The alias, or the table name.
    name: String,
    table: String,
    sharded: Option<&'m ShardedTable>,
}

/// Recognises the shard key among a statement's column references.
#[derive(Debug)]
pub(crate) enum KeyColumns<'m> {
    /// A statement on one sharded table: any reference to its key column, qualified or not.
    Single(&'m ShardedTable),
    /// A join: qualified references by binding name, unqualified ones when exactly one
    /// sharded table has a key column of that name.
    Join(Vec<Binding<'m>>),
}

impl<'m> KeyColumns<'m> {
    /// The sharded binding whose key column `e` is (its index), if any.
    fn binding_of(&self, e: &Expr) -> Option<usize> {
        let bindings = match self {
            KeyColumns::Single(t) => {
                return is_column_ref(e, t).then_some(0);
            }
            KeyColumns::Join(b) => b,
        };
        match e {
            Expr::Nested(inner) => self.binding_of(inner),
            Expr::Identifier(i) => {
                let mut found = bindings
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.sharded.is_some_and(|t| t.is_column(&i.value)));
                match (found.next(), found.next()) {
                    (Some((n, _)), None) => Some(n),
                    _ => None,
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = &parts[parts.len() - 1].value;
                let qualifier = &parts[parts.len() - 2].value;
                // `db.table.col` names the table itself, which then has no alias.
                let mut found = bindings.iter().enumerate().filter(|(_, b)| {
                    (b.name == *qualifier && (parts.len() == 2 || b.name == b.table))
                        && b.sharded.is_some_and(|t| t.is_column(column))
                });
                match (found.next(), found.next()) {
                    (Some((n, _)), None) => Some(n),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether `e` is a reference to a shard key column.
    pub(crate) fn is_key(&self, e: &Expr) -> bool {
        self.binding_of(e).is_some()
    }
}

fn is_column_ref(e: &Expr, t: &ShardedTable) -> bool {
    match e {
        Expr::Identifier(i) => t.is_column(&i.value),
        // `t.col` or `alias.col`: the statement has one table, so any qualifier names it.
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| t.is_column(&i.value)),
        Expr::Nested(inner) => is_column_ref(inner, t),
        _ => false,
    }
}

/// How a joined table comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Inner,
    /// `LEFT JOIN`: the new table is the nullable side.
    Left,
    /// `RIGHT JOIN`: the new table is the preserved side.
    Right,
}

/// One `JOIN` of a FROM item.
struct Step<'e> {
    /// The joined table's binding.
    index: usize,
    /// The first binding of its FROM item: `first..index` are joined before it.
    first: usize,
    side: Side,
    on: Option<&'e Expr>,
    using: Vec<String>,
}

/// The shard key references of a SELECT's FROM clause, or what makes its join unable to run
/// shard by shard.
pub(crate) fn analyze<'m>(ks: &'m KeyspaceMap, s: &Select) -> Result<KeyColumns<'m>, String> {
    let mut bindings: Vec<Binding<'m>> = Vec::new();
    let mut steps: Vec<Step<'_>> = Vec::new();
    for twj in &s.from {
        let first = bindings.len();
        add_binding(ks, &twj.relation, &mut bindings)?;
        for join in &twj.joins {
            let index = bindings.len();
            add_binding(ks, &join.relation, &mut bindings)?;
            let (constraint, side) = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::StraightJoin(c) => (c, Side::Inner),
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, Side::Left),
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (c, Side::Right),
                other => return Err(format!("{} over shards", join_name(other))),
            };
            let (on, using) = match constraint {
                JoinConstraint::On(e) => (Some(e), Vec::new()),
                JoinConstraint::Using(cols) => (
                    None,
                    cols.iter()
                        .filter_map(|c| c.0.last().and_then(|p| p.as_ident()))
                        .map(|i| i.value.clone())
                        .collect(),
                ),
                JoinConstraint::None => (None, Vec::new()),
                JoinConstraint::Natural | JoinConstraint::UsingAlias(..) => {
                    return Err("NATURAL joins over shards".into())
                }
            };
            steps.push(Step {
                index,
                first,
                side,
                on,
                using,
            });
        }
    }
    if bindings.iter().all(|b| b.sharded.is_none()) {
        return Err("a statement without a sharded table".into());
    }
    let keys = KeyColumns::Join(bindings);
    let KeyColumns::Join(bindings) = &keys else {
        unreachable!("built as a join")
    };
    // Equalities between key columns: (binding, binding).
    let mut edges: Vec<(usize, usize)> = Vec::new();
    if let Some(w) = &s.selection {
        key_edges(&keys, w, &mut edges);
    }
    for step in &steps {
        let mut local = Vec::new();
        if let Some(e) = step.on {
            key_edges(&keys, e, &mut local);
        }
        if let Some(t) = bindings[step.index].sharded {
            for col in step.using.iter().filter(|c| t.is_column(c)) {
                for (n, b) in bindings
                    .iter()
                    .enumerate()
                    .take(step.index)
                    .skip(step.first)
                {
                    if b.sharded.is_some_and(|t| t.is_column(col)) {
                        local.push((n, step.index));
                    }
                }
            }
        }
        if step.side != Side::Inner {
            // The new table against everything joined before it in this FROM item.
            let earlier = step.first..step.index;
            let earlier_sharded = earlier.clone().any(|n| bindings[n].sharded.is_some());
            let new_sharded = bindings[step.index].sharded.is_some();
            let (nullable_sharded, preserved_sharded) = match step.side {
                Side::Right => (earlier_sharded, new_sharded),
                _ => (new_sharded, earlier_sharded),
            };
            let linked = local.iter().any(|&(a, b)| {
                (a == step.index && earlier.contains(&b))
                    || (b == step.index && earlier.contains(&a))
            });
            if nullable_sharded && !(preserved_sharded && linked) {
                return Err(format!(
                    "an outer join over shards that keeps every row of a reference table, or \
                     whose ON does not equate the shard keys of `{}` and the table it joins",
                    bindings[step.index].table
                ));
            }
        }
        edges.extend(local);
    }
    // Every sharded table in one group, all with the same vindex.
    let sharded: Vec<usize> = (0..bindings.len())
        .filter(|&n| bindings[n].sharded.is_some())
        .collect();
    let vindex_of = |n: usize| bindings[n].sharded.map(|t| &t.vindex);
    if let Some(&n) = sharded
        .iter()
        .find(|&&n| vindex_of(n) != vindex_of(sharded[0]))
    {
        return Err(format!(
            "a join of sharded tables with different vindexes (`{}` and `{}`)",
            bindings[sharded[0]].table, bindings[n].table
        ));
    }
    let mut group: Vec<usize> = (0..bindings.len()).collect();
    fn root(group: &mut [usize], mut n: usize) -> usize {
        while group[n] != n {
            group[n] = group[group[n]];
            n = group[n];
        }
        n
    }
    for (a, b) in edges {
        let (ra, rb) = (root(&mut group, a), root(&mut group, b));
        group[ra] = rb;
    }
    let r0 = root(&mut group, sharded[0]);
    if let Some(&n) = sharded.iter().find(|&&n| root(&mut group, n) != r0) {
        return Err(format!(
            "a join of sharded tables `{}` and `{}` without an equality of their shard keys",
            bindings[sharded[0]].table, bindings[n].table
        ));
    }
    Ok(keys)
}

/// Key equalities `a.k = b.k` among the top-level AND terms of `e`.
fn key_edges(keys: &KeyColumns<'_>, e: &Expr, out: &mut Vec<(usize, usize)>) {
    let mut terms = Vec::new();
    super::plan::conjuncts(e, &mut terms);
    for term in terms {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = term
        {
            if let (Some(a), Some(b)) = (keys.binding_of(left), keys.binding_of(right)) {
                out.push((a, b));
            }
        }
    }
}

fn add_binding<'m>(
    ks: &'m KeyspaceMap,
    factor: &TableFactor,
    out: &mut Vec<Binding<'m>>,
) -> Result<(), String> {
    let TableFactor::Table {
        name, alias, args, ..
    } = factor
    else {
        return Err("derived tables, nested joins or table functions over shards".into());
    };
    if args.is_some() {
        return Err("table functions over shards".into());
    }
    let table = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_default();
    let sharded = match ks.table(&table) {
        TableKind::Sharded(t) => Some(t),
        TableKind::Reference => None,
        TableKind::Unsharded => {
            return Err(format!(
                "a join of sharded or reference tables with unsharded table `{table}`"
            ))
        }
    };
    out.push(Binding {
        name: alias
            .as_ref()
            .map_or_else(|| table.clone(), |a| a.name.value.clone()),
        table,
        sharded,
    });
    Ok(())
}

fn join_name(op: &JoinOperator) -> &'static str {
    match op {
        JoinOperator::FullOuter(_) => "FULL OUTER JOIN",
        JoinOperator::Semi(_) | JoinOperator::LeftSemi(_) | JoinOperator::RightSemi(_) => {
            "SEMI JOIN"
        }
        JoinOperator::Anti(_) | JoinOperator::LeftAnti(_) | JoinOperator::RightAnti(_) => {
            "ANTI JOIN"
        }
        JoinOperator::CrossApply | JoinOperator::OuterApply => "APPLY",
        JoinOperator::AsOf { .. } => "ASOF JOIN",
        _ => "this join",
    }
}

/// Whether a FROM clause is more than one plain table.
pub(crate) fn is_join(from: &[TableWithJoins]) -> bool {
    from.len() != 1 || !from[0].joins.is_empty()
}
