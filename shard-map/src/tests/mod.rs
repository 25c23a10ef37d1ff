//! Tests of the shard map as a whole: the JSON contract, validation, lookups, database naming,
//! diff and the stores. Key ranges and vindexes are tested next to their code.

mod diff_store;
mod lookups;
mod validation;

use crate::ShardMap;

/// The shard map shape that other components and the acceptance checks rely on.
pub(crate) const CONTRACT: &str = r#"{"keyspaces": [{
  "name": "app", "default_cluster": "c1",
  "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
  "tables": [
    {"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"},
    {"name": "orders", "kind": "sharded", "column": "customer_id", "vindex": "hash"},
    {"name": "countries", "kind": "reference"}
  ]}]}"#;

pub(crate) fn contract() -> ShardMap {
    let map = ShardMap::from_json(CONTRACT).expect("the contract parses");
    assert_eq!(map.validate(&["c1", "c2"]), vec![]);
    map
}

pub(crate) fn str_(s: &str) -> crate::KeyValue {
    crate::KeyValue::Str(s.as_bytes().to_vec())
}
