use super::*;
use crate::classify::Classifier;

fn spec(sql: &str) -> Result<GatherSpec, GatherError> {
    let class = Classifier::new(0).classify(sql);
    analyze_sql(sql, &class)
}

fn refusal(sql: &str) -> String {
    match spec(sql) {
        Err(GatherError::Refuse(w)) => w,
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

fn k(value: Col, weight: Col) -> Keyed {
    Keyed { value, weight }
}

#[test]
fn offsets_are_pushed_as_one_limit_and_skipped_in_the_router() {
    for sql in [
        "SELECT id, name FROM t ORDER BY id LIMIT 2, 3",
        "SELECT id, name FROM t ORDER BY id LIMIT 3 OFFSET 2",
    ] {
        let s = spec(sql).unwrap();
        assert_eq!(
            s.sql,
            "SELECT id, name, id, WEIGHT_STRING(RTRIM(id)) FROM t ORDER BY id LIMIT 5"
        );
        assert_eq!((s.offset, s.limit, s.hidden), (2, Some(3), 2));
        assert_eq!(
            s.order,
            vec![(Ref::Col(k(Col::Hidden(0), Col::Hidden(1))), false)]
        );
        assert!(s.grouping.is_none());
    }
    // A `_ci` ORDER BY by alias or position: the item's expression is compared by weight.
    let s = spec("SELECT id, UPPER(name) AS u FROM t ORDER BY u DESC, 1").unwrap();
    assert_eq!(
        s.sql,
        "SELECT id, UPPER(name) AS u, UPPER(name), WEIGHT_STRING(RTRIM(UPPER(name))), id, \
         WEIGHT_STRING(RTRIM(id)) FROM t ORDER BY u DESC, 1"
    );
    assert_eq!(s.limit, None);
    assert_eq!(
        spec("SELECT * FROM t LIMIT ?"),
        Err(GatherError::NeedsParams)
    );
}

#[test]
fn aggregates_group_by_having_and_order_by_an_aggregate() {
    let sql = "SELECT name, count(*) AS n, SUM(x), AVG(x), MIN(name) FROM t WHERE id > 3 \
               GROUP BY name HAVING n > 1 AND MAX(x) BETWEEN 2 AND 10 ORDER BY SUM(x) DESC, name \
               LIMIT 1, 2";
    let s = spec(sql).unwrap();
    assert_eq!(
        s.sql,
        "SELECT name, count(*) AS n, SUM(x), AVG(x), MIN(name), name, \
         WEIGHT_STRING(RTRIM(name)), SUM(x), COUNT(x), WEIGHT_STRING(RTRIM(MIN(name))), \
         MAX(x), WEIGHT_STRING(RTRIM(MAX(x))) FROM t WHERE id > 3 GROUP BY name"
    );
    assert_eq!((s.offset, s.limit, s.hidden), (1, Some(2), 7));
    let g = s.grouping.unwrap();
    assert_eq!(g.keys, vec![k(Col::Hidden(0), Col::Hidden(1))]);
    assert_eq!(
        g.aggs,
        vec![
            Agg::Count(Col::Item(1)),
            Agg::Sum(Col::Item(2)),
            Agg::Avg {
                avg: Col::Item(3),
                sum: Col::Hidden(2),
                count: Col::Hidden(3)
            },
            Agg::Min(k(Col::Item(4), Col::Hidden(4))),
            Agg::Max(k(Col::Hidden(5), Col::Hidden(6))),
        ]
    );
    assert_eq!(
        g.items,
        vec![
            Ref::Col(k(Col::Item(0), Col::Hidden(1))),
            Ref::Agg(0),
            Ref::Agg(1),
            Ref::Agg(2),
            Ref::Agg(3)
        ]
    );
    let max = Operand::Ref(Ref::Agg(4));
    assert_eq!(
        g.having,
        Some(Cond::And(
            Box::new(Cond::Cmp(
                Operand::Ref(Ref::Agg(0)),
                CmpOp::Gt,
                Operand::Num("1".into())
            )),
            Box::new(Cond::And(
                Box::new(Cond::Cmp(max.clone(), CmpOp::Ge, Operand::Num("2".into()))),
                Box::new(Cond::Cmp(max, CmpOp::Le, Operand::Num("10".into()))),
            )),
        ))
    );
    assert_eq!(
        s.order,
        vec![
            (Ref::Agg(1), true),
            (Ref::Col(k(Col::Item(0), Col::Hidden(1))), false)
        ]
    );
}

#[test]
fn distinct_groups_by_the_select_list_and_names_keep_the_clients_text() {
    let s = spec("SELECT DISTINCT name, x FROM t ORDER BY x").unwrap();
    assert_eq!(
        s.sql,
        "SELECT DISTINCT name, x, WEIGHT_STRING(RTRIM(name)), WEIGHT_STRING(RTRIM(x)) FROM t"
    );
    let g = s.grouping.unwrap();
    assert_eq!(
        g.keys,
        vec![
            k(Col::Item(0), Col::Hidden(0)),
            k(Col::Item(1), Col::Hidden(1))
        ]
    );
    // The shards' column names are the client's text.
    let s = spec("SELECT sum( x ), COUNT(*)\nFROM t").unwrap();
    assert_eq!(s.sql, "SELECT sum(x) AS `sum( x )`, COUNT(*) FROM t");
    // Group by a position and by an alias.
    let s = spec("SELECT x AS a, COUNT(*) FROM t GROUP BY 1").unwrap();
    assert!(!s.grouping.unwrap().alias_group);
    // Without ORDER BY, groups come sorted by the GROUP BY expressions, as MariaDB sends them.
    assert_eq!(
        s.order,
        vec![(Ref::Col(k(Col::Hidden(0), Col::Hidden(1))), false)]
    );
    let s = spec("SELECT x + 1 AS a, COUNT(*) FROM t GROUP BY a").unwrap();
    assert_eq!(
        s.sql,
        "SELECT x + 1 AS a, COUNT(*), x + 1, WEIGHT_STRING(RTRIM(x + 1)) FROM t GROUP BY a"
    );
    assert!(s.grouping.unwrap().alias_group);
}

#[test]
fn having_forms() {
    let s = spec(
        "SELECT x, COUNT(*) c FROM t GROUP BY x HAVING NOT (c IN (1, 2) OR x IS NULL) \
         AND c <> -3 AND SUM(y) IS NOT NULL",
    )
    .unwrap();
    let g = s.grouping.unwrap();
    assert!(g.having.is_some());
    assert_eq!(g.aggs.len(), 2);
    assert_eq!(
        refusal("SELECT x, COUNT(*) c FROM t GROUP BY x HAVING COUNT(*) + 1 > 2"),
        "expressions over aggregates in HAVING or ORDER BY"
    );
    assert_eq!(
        refusal("SELECT x, COUNT(*) c FROM t GROUP BY x HAVING c > x + 1"),
        "`x + 1` in HAVING or ORDER BY, neither an aggregate nor a GROUP BY expression"
    );
    assert_eq!(
        refusal("SELECT x + 1 AS y, COUNT(*) FROM t GROUP BY x, y HAVING y > 1"),
        "`y` in HAVING, both a select alias and a GROUP BY column"
    );
    assert_eq!(
        refusal("SELECT x, COUNT(*) c FROM t GROUP BY x HAVING c LIKE 'a%'"),
        "HAVING condition `c LIKE 'a%'`"
    );
}

#[test]
fn what_no_merge_makes_right_is_refused_by_name() {
    for (sql, want) in [
        (
            "SELECT COUNT(DISTINCT x, y) FROM t",
            "COUNT(DISTINCT ...) of several expressions",
        ),
        (
            "SELECT 1, COUNT(DISTINCT x) FROM t",
            "COUNT(DISTINCT ...) with constants in the select list",
        ),
        ("SELECT SUM(DISTINCT x) FROM t", "SUM(DISTINCT ...)"),
        ("SELECT AVG(DISTINCT x) FROM t", "AVG(DISTINCT ...)"),
        ("SELECT GROUP_CONCAT(x) FROM t", "GROUP_CONCAT"),
        ("SELECT STD(x) FROM t", "STD"),
        ("SELECT VARIANCE(x) FROM t", "VARIANCE"),
        ("SELECT BIT_OR(x) FROM t", "BIT_OR"),
        ("SELECT JSON_ARRAYAGG(x) FROM t", "JSON_ARRAYAGG"),
        ("SELECT x, ROW_NUMBER() OVER () FROM t", "window functions"),
        (
            "SELECT x, COUNT(*) FROM t GROUP BY x WITH ROLLUP",
            "WITH ROLLUP",
        ),
        ("SELECT * FROM t WHERE x IN (SELECT y FROM u)", "subqueries"),
        ("SELECT (SELECT 1), x FROM t", "subqueries"),
        ("SELECT x INTO @a FROM t", "SELECT ... INTO"),
        (
            "SELECT * FROM t ORDER BY x FOR UPDATE",
            "locking reads (FOR UPDATE, LOCK IN SHARE MODE)",
        ),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1, 2",
            "SQL_CALC_FOUND_ROWS",
        ),
        (
            "SELECT x FROM t UNION ALL SELECT x FROM t",
            "UNION, INTERSECT, EXCEPT or VALUES",
        ),
        (
            "WITH c AS (SELECT 1) SELECT * FROM t LIMIT 1, 1",
            "WITH (common table expressions)",
        ),
        (
            "SELECT SUM(x) + 1 FROM t",
            "expressions over aggregates in the select list",
        ),
        (
            "SELECT x, y, COUNT(*) FROM t GROUP BY x",
            "select item `y`, neither an aggregate nor a GROUP BY expression",
        ),
        (
            "SELECT *, x FROM t ORDER BY x LIMIT 1, 1",
            "`*` together with other select items",
        ),
        (
            "SELECT * FROM t GROUP BY x",
            "`*` with aggregates, GROUP BY or DISTINCT",
        ),
        (
            "SELECT DISTINCT COUNT(*) FROM t",
            "DISTINCT with aggregates",
        ),
        (
            "SELECT x FROM t ORDER BY 3 LIMIT 1, 1",
            "ORDER BY or GROUP BY position 3",
        ),
        ("SELECT MAX(MIN(x)) FROM t", "nested aggregates"),
        ("SELECT x FROM t LIMIT 1, 1 + 1", "LIMIT with an expression"),
        (
            "SELECT COUNT(*) FROM t GROUP BY COUNT(*)",
            "aggregates in GROUP BY",
        ),
    ] {
        assert_eq!(refusal(sql), want, "{sql}");
    }
}

#[test]
fn count_distinct_groups_the_shards_by_its_argument_too() {
    let s = spec(
        "SELECT g, COUNT(DISTINCT name), SUM(x) FROM t GROUP BY g HAVING COUNT(DISTINCT name) > 1",
    )
    .unwrap();
    assert_eq!(
        s.sql,
        "SELECT g, COUNT(DISTINCT name), SUM(x), g, WEIGHT_STRING(RTRIM(g)), name, \
         WEIGHT_STRING(RTRIM(name)) FROM t GROUP BY g, name"
    );
    let g = s.grouping.unwrap();
    assert!(g.count_distinct);
    assert_eq!(
        g.aggs,
        vec![
            Agg::CountDistinct(k(Col::Hidden(2), Col::Hidden(3))),
            Agg::Sum(Col::Item(2))
        ]
    );
    assert_eq!(
        g.having,
        Some(Cond::Cmp(
            Operand::Ref(Ref::Agg(0)),
            CmpOp::Gt,
            Operand::Num("1".into())
        ))
    );
    let s = spec("SELECT COUNT(DISTINCT name) FROM t").unwrap();
    assert_eq!(
        s.sql,
        "SELECT COUNT(DISTINCT name), name, WEIGHT_STRING(RTRIM(name)) FROM t GROUP BY name"
    );
}

#[test]
fn union_all_of_plain_branches_is_a_concatenation() {
    let run = |sql: &str| {
        let class = Classifier::new(0).classify(sql);
        let stmt = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql)
            .unwrap()
            .remove(0);
        (is_union_of(sql, "t", &class), union_all(&stmt, &class))
    };
    assert_eq!(
        run("SELECT a FROM t WHERE a > 1 UNION ALL SELECT b FROM t LIMIT 3"),
        (true, Ok(Some(3)))
    );
    assert_eq!(
        run("SELECT a FROM t UNION ALL SELECT a FROM t UNION ALL SELECT 1 FROM t"),
        (true, Ok(None))
    );
    assert!(!run("SELECT a FROM t UNION ALL SELECT a FROM u").0);
    assert!(!run("SELECT a FROM t JOIN t AS t2 UNION ALL SELECT a FROM t").0);
    assert!(!run("SELECT a FROM t JOIN t AS t2").0);
    for (sql, want) in [
        (
            "SELECT a FROM t UNION SELECT a FROM t",
            "UNION without ALL (DISTINCT)",
        ),
        (
            "SELECT a FROM t UNION ALL SELECT a FROM t ORDER BY a",
            "ORDER BY over UNION ALL",
        ),
        (
            "SELECT a FROM t UNION ALL SELECT a FROM t LIMIT 1, 2",
            "OFFSET over UNION ALL",
        ),
        (
            "SELECT COUNT(*) FROM t UNION ALL SELECT a FROM t",
            "aggregates in a UNION ALL branch",
        ),
        (
            "SELECT DISTINCT a FROM t UNION ALL SELECT a FROM t",
            "DISTINCT, GROUP BY, HAVING or INTO in a UNION ALL branch",
        ),
        (
            "(SELECT a FROM t LIMIT 1) UNION ALL SELECT a FROM t",
            "ORDER BY or LIMIT inside a UNION ALL branch",
        ),
    ] {
        assert_eq!(run(sql).1, Err(GatherError::Refuse(want.into())), "{sql}");
    }
}
