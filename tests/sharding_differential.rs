//! Differential test of the sharded router: thousands of seeded statements run through the
//! router over keyspace `app` (4 hash shards on two clusters) and directly on one unsharded
//! reference database holding the same schema and rows; results must be equal.
//!
//! Categories in `SUPPORTED` must never be refused (1235) nor differ. Categories in `PENDING`
//! run only with `SY_DIFF_ALL=1`: they may be refused, never wrong. Move a category from
//! `PENDING` to `SUPPORTED` when the router learns it.
//!
//! Knobs: `SY_DIFF_SEED` (a number, `0x...`, or `random`), `SY_DIFF_COUNT` (statements,
//! default 2000), `SY_DIFF_ALL=1` (pending categories too), `SY_DIFF_TRACE=1` (print every
//! statement and the router's answer).

mod common;
#[path = "differential/generator.rs"]
mod generator;
#[path = "differential/outcome.rs"]
mod outcome;

use std::collections::BTreeMap;
use std::time::Instant;

use common::TestEnv;
use generator::{quote, Generator, Sql, Stmt, SCHEMA};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use outcome::{normalize, run, Outcome};
use shard_map::{vindex::hash_keyspace_id, KeyValue};

/// These must all be equal, none refused.
const SUPPORTED: &[&str] = &[
    "point_eq",         // key = v, text and prepared
    "point_in",         // key IN (...), within a shard or across shards
    "range_plain",      // plain reads with conditions on non-key columns (scatter)
    "order_int_limit",  // ORDER BY integer columns ... LIMIT n (no offset)
    "order_typed",      // ORDER BY decimal or datetime columns, with or without LIMIT
    "order_variants",   // ORDER BY an alias or a qualified column; SELECT * ... ORDER BY
    "count",            // COUNT(*), COUNT(col)
    "dml_key",          // single-row INSERT, UPDATE/DELETE by key
    "limit_no_order",   // LIMIT n without ORDER BY: any n matching rows
    "order_offset",     // ORDER BY ... LIMIT n OFFSET m
    "order_ci_string",  // ORDER BY strings in a _ci collation
    "aggregate",        // SUM/MIN/MAX/AVG without GROUP BY
    "group_by",         // GROUP BY with HAVING, ORDER BY aggregates
    "distinct",         // DISTINCT, COUNT(DISTINCT)
    "union_all",        // UNION ALL of two scatter reads
    "join_cosharded",   // orders JOIN customers ON customer_id = id
    "join_reference",   // joins with the reference table countries
    "dml_multi_insert", // multi-row INSERT over several shards
    "dml_range",        // UPDATE/DELETE by range or by IN over several shards
    "dml_reference",    // writes to the reference table
    // Any statement after one that failed with a server error (a duplicate key) or left
    // warnings.
    "after_error",
    "order_position", // ORDER BY result column positions (ORDER BY 2, 1)
];

/// Run only with `SY_DIFF_ALL=1`; may be refused, must never be wrong. Empty now: every
/// category the generator knows is supported.
const PENDING: &[&str] = &[];

/// Shards of `TestEnv::start_sharded(2, 4)`: (range start, end, cluster index, database).
const SHARDS: [(u64, u64, usize, &str); 4] = [
    (0, 0x4000_0000_0000_0000, 0, "app_00_40"),
    (0x4000_0000_0000_0000, 0x8000_0000_0000_0000, 1, "app_40_80"),
    (0x8000_0000_0000_0000, 0xc000_0000_0000_0000, 0, "app_80_c0"),
    (0xc000_0000_0000_0000, u64::MAX, 1, "app_c0_ff"),
];

/// Tables and their shard key's column index (`None`: reference table).
const TABLES: [(&str, Option<usize>); 3] = [
    ("customers", Some(0)),
    ("orders", Some(1)),
    ("countries", None),
];

fn shard_of(key: i64) -> usize {
    let k = hash_keyspace_id(&KeyValue::Int(key)).expect("hash");
    SHARDS
        .iter()
        .position(|(lo, hi, _, _)| k >= *lo && (k < *hi || *hi == u64::MAX))
        .expect("a shard covers every keyspace id")
}

#[derive(Default)]
struct Counts {
    run: u64,
    equal: u64,
    mismatch: u64,
    refused: u64,
    prepared: u64,
}

struct Failure {
    category: &'static str,
    statement: String,
    what: String,
}

struct Diff {
    env: TestEnv,
    router: Conn,
    reference: Conn,
    /// Direct connections to the leaders of c1 and c2 (the shards' databases).
    leaders: [Conn; 2],
    counts: BTreeMap<&'static str, Counts>,
    failures: Vec<Failure>,
    /// `SY_DIFF_TRACE=1`: print every statement and the router's answer.
    trace: bool,
    /// The router's previous statement ended in a server error or left warnings.
    after_error: bool,
}

type Rows = Vec<Vec<Option<String>>>;

fn text_rows(rows: Vec<Row>) -> Rows {
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect()
}

fn literal_row(r: &[Option<String>]) -> String {
    let vals: Vec<String> = r
        .iter()
        .map(|v| v.as_deref().map(quote).unwrap_or_else(|| "NULL".into()))
        .collect();
    format!("({})", vals.join(", "))
}

impl Diff {
    async fn reference_rows(&mut self, table: &str) -> Rows {
        let mut rows = text_rows(
            self.reference
                .query(format!("SELECT * FROM {table}"))
                .await
                .expect("reference read"),
        );
        rows.sort();
        rows
    }

    /// Differences between the shards' copies of `table` and the reference, including rows
    /// stored on a shard their key does not belong to.
    async fn table_problems(&mut self, table: &str) -> Vec<String> {
        let key = TABLES.iter().find(|t| t.0 == table).expect("table").1;
        let want = self.reference_rows(table).await;
        let mut problems = Vec::new();
        let mut union = Vec::new();
        for (i, (_, _, leader, db)) in SHARDS.iter().enumerate() {
            let mut rows = text_rows(
                self.leaders[*leader]
                    .query(format!("SELECT * FROM {db}.{table}"))
                    .await
                    .expect("shard read"),
            );
            rows.sort();
            match key {
                Some(k) => {
                    for r in &rows {
                        let v: i64 = r[k].as_deref().unwrap_or("0").parse().expect("int key");
                        if shard_of(v) != i {
                            problems.push(format!("{db}.{table} holds key {v} of another shard"));
                        }
                    }
                    union.extend(rows);
                }
                None if rows != want => problems.push(format!(
                    "{db}.{table}: {} rows, the reference {}; first differing: {:?}",
                    rows.len(),
                    want.len(),
                    rows.iter()
                        .zip(&want)
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| (literal_row(a), literal_row(b)))
                )),
                None => {}
            }
        }
        if key.is_some() {
            union.sort();
            if union != want {
                let missing: Vec<String> = want
                    .iter()
                    .filter(|r| union.binary_search(r).is_err())
                    .take(3)
                    .map(|r| literal_row(r))
                    .collect();
                let extra: Vec<String> = union
                    .iter()
                    .filter(|r| want.binary_search(r).is_err())
                    .take(3)
                    .map(|r| literal_row(r))
                    .collect();
                problems.push(format!(
                    "{table}: {} rows over the shards, {} in the reference; \
                     only in the reference: {missing:?}; only on the shards: {extra:?}",
                    union.len(),
                    want.len()
                ));
            }
        }
        problems
    }

    /// Makes every shard's copy of `table` what the reference says (rows placed by key).
    async fn copy_to_shards(&mut self, table: &str) {
        let key = TABLES.iter().find(|t| t.0 == table).expect("table").1;
        let want = self.reference_rows(table).await;
        for (i, (_, _, leader, db)) in SHARDS.iter().enumerate() {
            let conn = &mut self.leaders[*leader];
            conn.query_drop(format!("DELETE FROM {db}.{table}"))
                .await
                .expect("clear shard");
            let mine: Vec<String> = want
                .iter()
                .filter(|r| match key {
                    Some(k) => shard_of(r[k].as_deref().unwrap_or("0").parse().expect("key")) == i,
                    None => true,
                })
                .map(|r| literal_row(r))
                .collect();
            for chunk in mine.chunks(200) {
                conn.query_drop(format!(
                    "INSERT INTO {db}.{table} VALUES {}",
                    chunk.join(", ")
                ))
                .await
                .expect("fill shard");
            }
        }
    }

    fn fail(&mut self, category: &'static str, s: &Stmt, what: String) {
        self.failures.push(Failure {
            category,
            statement: format!(
                "{}{}",
                s.sql.text,
                if s.prepared {
                    format!("   [prepared: {} with {:?}]", s.sql.prep, s.sql.params)
                } else {
                    String::new()
                }
            ),
            what,
        });
    }

    async fn check(&mut self, s: &Stmt) {
        let category = s.category;
        let (got, warnings) = run(&mut self.router, &s.sql, s.prepared).await;
        // The router's refusals leave the session as it was: still after the error.
        let after_error = self.after_error;
        self.after_error = warnings > 0
            || matches!(got, Outcome::Error { code, .. } if code != 1235)
            || (after_error && got.refused());
        if self.trace {
            println!(
                "[{}]{} {}\n    -> {}",
                s.category,
                if s.prepared { " (prepared)" } else { "" },
                s.sql.text,
                got.to_string().trim_end()
            );
        }
        // A statement after an error or warnings (with only refused statements in between)
        // belongs to `after_error`: the router keeps the session on that connection for
        // SHOW WARNINGS.
        let category = if after_error { "after_error" } else { category };
        let supported = SUPPORTED.contains(&category);
        let c = self.counts.entry(category).or_default();
        c.run += 1;
        c.prepared += u64::from(s.prepared);
        if let Outcome::Broken(e) = &got {
            self.counts.get_mut(category).unwrap().mismatch += 1;
            self.fail(category, s, format!("the router connection broke: {e}"));
            self.router = self.env.router_conn(Some("app")).await;
            return;
        }
        if got.refused() {
            self.counts.get_mut(category).unwrap().refused += 1;
            if supported {
                self.fail(
                    category,
                    s,
                    format!("refused in a supported category: {got}"),
                );
            }
            // Whatever is refused must have changed nothing.
            if let Some(table) = s.writes {
                let problems = self.table_problems(table).await;
                if !problems.is_empty() {
                    self.fail(
                        category,
                        s,
                        format!("refused, yet changed rows: {problems:?}"),
                    );
                    self.copy_to_shards(table).await;
                }
            }
            return;
        }
        let mut equal = match &s.unordered_limit {
            Some((all, limit)) => self.check_unordered_limit(s, &got, all, *limit).await,
            None => {
                let (want, _) = run(&mut self.reference, &s.sql, s.prepared).await;
                let (got, want) = (normalize(got, s), normalize(want, s));
                if got.same_as(&want) {
                    true
                } else {
                    self.fail(category, s, format!("router: {got}    reference: {want}"));
                    false
                }
            }
        };
        if let Some(table) = s.writes {
            let problems = self.table_problems(table).await;
            if !problems.is_empty() {
                equal = false;
                self.fail(
                    category,
                    s,
                    format!("table contents differ afterwards: {problems:?}"),
                );
                self.copy_to_shards(table).await;
            }
        }
        let c = self.counts.get_mut(category).unwrap();
        if equal {
            c.equal += 1;
        } else {
            c.mismatch += 1;
        }
    }

    /// LIMIT n without ORDER BY: the router's rows must be min(n, all) rows of the full
    /// result, each at most as often as there.
    async fn check_unordered_limit(
        &mut self,
        s: &Stmt,
        got: &Outcome,
        all: &str,
        limit: usize,
    ) -> bool {
        let full = Sql {
            text: all.to_string(),
            ..Sql::default()
        };
        let (want, _) = run(&mut self.reference, &full, false).await;
        let ok = match (got, &want) {
            (
                Outcome::Rows { columns, rows },
                Outcome::Rows {
                    columns: want_cols,
                    rows: want_rows,
                },
            ) => {
                let mut pool = want_rows.clone();
                let subset = rows.iter().all(|r| match pool.iter().position(|w| w == r) {
                    Some(i) => {
                        pool.swap_remove(i);
                        true
                    }
                    None => false,
                });
                columns == want_cols && subset && rows.len() == limit.min(want_rows.len())
            }
            (a, b) => a.same_as(b),
        };
        if !ok {
            self.fail(
                s.category,
                s,
                format!("router: {got}    reference without the LIMIT: {want}"),
            );
        }
        ok
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if v == "random" {
        return Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64,
        );
    }
    Some(
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={v}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_results_equal_an_unsharded_reference() {
    let seed = env_u64("SY_DIFF_SEED").unwrap_or(0x5eed_2026);
    let count = env_u64("SY_DIFF_COUNT").unwrap_or(2000);
    let all = std::env::var("SY_DIFF_ALL").is_ok_and(|v| v == "1");
    let categories: Vec<&'static str> = if all {
        SUPPORTED.iter().chain(PENDING).copied().collect()
    } else {
        SUPPORTED.to_vec()
    };
    println!(
        "differential: seed {seed} (SY_DIFF_SEED={seed:#x}), {count} statements, \
         categories: {categories:?}"
    );
    let started = Instant::now();

    let env = TestEnv::start_sharded(2, 4).await;
    let mut router = env.router_conn(None).await;
    router.query_drop("CREATE DATABASE app").await.unwrap();
    router.query_drop("USE app").await.unwrap();
    for ddl in SCHEMA {
        router.query_drop(ddl).await.unwrap();
    }
    let c1 = env.leader_port("c1");
    let mut leader1 = env.direct_conn(c1, None).await;
    leader1.query_drop("CREATE DATABASE refdb").await.unwrap();
    let mut reference = env.direct_conn(c1, Some("refdb")).await;
    for ddl in SCHEMA {
        reference.query_drop(ddl).await.unwrap();
    }
    let leader2 = env.direct_conn(env.leader_port("c2"), None).await;

    // The same rows on both sides: into the reference, then copied to the shards by key
    // (reference tables to every shard).
    let mut generator = Generator::new(seed);
    for (table, rows) in generator.initial_data() {
        for chunk in rows.chunks(200) {
            reference
                .query_drop(format!("INSERT INTO {table} VALUES {}", chunk.join(", ")))
                .await
                .unwrap();
        }
    }
    let mut d = Diff {
        env,
        router,
        reference,
        leaders: [leader1, leader2],
        counts: BTreeMap::new(),
        failures: Vec::new(),
        trace: std::env::var("SY_DIFF_TRACE").is_ok_and(|v| v == "1"),
        after_error: false,
    };
    for (table, _) in TABLES {
        d.copy_to_shards(table).await;
        let problems = d.table_problems(table).await;
        assert!(problems.is_empty(), "loading {table}: {problems:?}");
    }
    println!("loaded in {:.1?}", started.elapsed());

    for _ in 0..count {
        let s = generator.statement(&categories);
        d.check(&s).await;
    }

    println!(
        "\n{:<18} {:>6} {:>6} {:>9} {:>8} {:>9}  list",
        "category", "run", "equal", "mismatch", "refused", "prepared"
    );
    for (cat, c) in &d.counts {
        println!(
            "{:<18} {:>6} {:>6} {:>9} {:>8} {:>9}  {}",
            cat,
            c.run,
            c.equal,
            c.mismatch,
            c.refused,
            c.prepared,
            if SUPPORTED.contains(cat) {
                "SUPPORTED"
            } else {
                "PENDING"
            }
        );
    }
    println!(
        "seed {seed:#x}, {count} statements in {:.1?}",
        started.elapsed()
    );
    // Text statements on one shard are placed from their cache key's syntax tree (checked
    // against their own plan in this debug build); the run must have taken that path.
    let by_key = d.env.router_stats().await["sharded_by_key"]
        .as_u64()
        .expect("sharded_by_key in the router's counters");
    println!("text statements placed from their parsed key: {by_key}");
    if count >= 200 {
        assert!(
            by_key > 0,
            "no text statement was placed from its parsed key"
        );
    }
    let failures = std::mem::take(&mut d.failures);
    for f in failures.iter().take(25) {
        println!(
            "\nFAIL [{}] {}\n    {}",
            f.category,
            f.statement,
            f.what.replace('\n', "\n    ")
        );
    }
    let Diff {
        env,
        router,
        reference,
        leaders,
        ..
    } = d;
    drop((router, reference, leaders));
    env.stop().await;
    assert!(
        failures.is_empty(),
        "{} failures (seed {seed:#x}, SY_DIFF_COUNT={count}{}); see above",
        failures.len(),
        if all { ", SY_DIFF_ALL=1" } else { "" }
    );
}
