//! The statement classifier and the shard planner on arbitrary SQL, with arbitrary
//! prepared-statement parameter values: every text gets a classification and a plan (or a
//! refusal), nothing panics; and a text placed on one shard from its parsed cache key
//! ([`plan_by_key`]) is placed on the same shard by its own plan.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use router::classify::Classifier;
use router::shard::plan::{parse_one, plan, plan_by_key, Plan, PlanInput};
use shard_map::{KeyValue, ShardMap};

fn map() -> &'static ShardMap {
    static MAP: OnceLock<ShardMap> = OnceLock::new();
    MAP.get_or_init(|| {
        ShardMap::from_json(
            r#"{"keyspaces": [{
              "name": "app", "default_cluster": "c1",
              "shards": [{"name": "-40", "cluster": "c1"}, {"name": "40-80", "cluster": "c2"},
                         {"name": "80-c0", "cluster": "c1"}, {"name": "c0-", "cluster": "c2"}],
              "tables": [
                {"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"},
                {"name": "orders", "kind": "sharded", "column": "customer_id", "vindex": "hash"},
                {"name": "ranges", "kind": "sharded", "column": "id", "vindex": "numeric"},
                {"name": "tags", "kind": "sharded", "column": "tag", "vindex": "list",
                 "values": {"a": "-40", "b": "c0-"}},
                {"name": "countries", "kind": "reference"}
              ]}]}"#,
        )
        .expect("map parses")
        .validated(&["c1", "c2"])
        .expect("map is valid")
    })
}

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| Classifier::new(64))
}

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let class = classifier().classify(&sql);
    let params: Vec<Option<KeyValue>> = data
        .iter()
        .take(4)
        .map(|b| match b % 4 {
            0 => None,
            1 => Some(KeyValue::Int(i64::from(*b) - 100)),
            2 => Some(KeyValue::UInt(u64::MAX - u64::from(*b))),
            _ => Some(KeyValue::Str(vec![*b; 3])),
        })
        .collect();
    // With parameters, as a prepared statement: the syntax tree parsed once beforehand.
    let parsed = parse_one(&sql);
    for db in [Some("app"), None, Some("other")] {
        for p in [None, Some(params.as_slice())] {
            for key_position in [None, Some(0), Some(3)] {
                let _ = plan(
                    map(),
                    PlanInput {
                        sql: &sql,
                        class: &class,
                        db,
                        params: p,
                        key_position,
                        parsed: p.and(parsed.as_ref()),
                    },
                );
            }
        }
        if let Some(target) = plan_by_key(map(), &sql, &class, db) {
            let own = plan(
                map(),
                PlanInput {
                    sql: &sql,
                    class: &class,
                    db,
                    params: None,
                    key_position: None,
                    parsed: None,
                },
            );
            assert_eq!(own, Plan::Single(target), "{sql:?}");
        }
    }
});
