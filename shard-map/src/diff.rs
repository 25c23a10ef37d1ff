//! Human-readable differences between two shard maps, for operators reviewing a change or the
//! history of the store.

use std::collections::{BTreeMap, BTreeSet};

use crate::keyrange::KeyRange;
use crate::keyspace::{Keyspace, TableKindName, TableSpec};
use crate::shardmap::{ShardMap, ShardTarget};

/// The changes from `a` to `b`, one line each: keyspaces, shards and tables added, removed, or
/// moved to another cluster or database, and tables whose placement changed. Empty when the
/// maps place everything the same way.
pub fn diff(a: &ShardMap, b: &ShardMap) -> Vec<String> {
    let mut out = Vec::new();
    if a.default_cluster() != b.default_cluster() {
        out.push(format!(
            "default cluster moved from {} to {}",
            a.default_cluster(),
            b.default_cluster()
        ));
    }
    let before = first_definitions(a);
    let after = first_definitions(b);
    for (name, ka) in &before {
        match after.get(name) {
            None => out.push(format!("keyspace `{name}` removed")),
            Some(kb) => diff_keyspace(a, b, ka, kb, &mut out),
        }
    }
    for (name, kb) in &after {
        if !before.contains_key(name) {
            let shape = if kb.shards.is_empty() {
                "unsharded".to_string()
            } else {
                format!("{} shards", kb.shards.len())
            };
            out.push(format!(
                "keyspace `{name}` added on {} ({shape}, {} tables)",
                kb.default_cluster,
                kb.tables.len()
            ));
            for t in b.all_shards(name) {
                out.push(format!("keyspace `{name}`: {}", describe_shard(t)));
            }
        }
    }
    out
}

fn first_definitions(m: &ShardMap) -> BTreeMap<&str, &Keyspace> {
    let mut out = BTreeMap::new();
    for ks in m.keyspace_specs() {
        out.entry(ks.name.as_str()).or_insert(ks);
    }
    out
}

fn describe_shard(t: &ShardTarget) -> String {
    format!(
        "shard {} added on {} (database {})",
        t.shard, t.cluster, t.database
    )
}

fn diff_keyspace(a: &ShardMap, b: &ShardMap, ka: &Keyspace, kb: &Keyspace, out: &mut Vec<String>) {
    let name = &ka.name;
    if ka.default_cluster != kb.default_cluster {
        out.push(format!(
            "keyspace `{name}`: default cluster moved from {} to {}",
            ka.default_cluster, kb.default_cluster
        ));
    }
    let shards_a: BTreeMap<KeyRange, &ShardTarget> =
        a.all_shards(name).iter().map(|t| (t.range, t)).collect();
    let shards_b: BTreeMap<KeyRange, &ShardTarget> =
        b.all_shards(name).iter().map(|t| (t.range, t)).collect();
    for (range, ta) in &shards_a {
        match shards_b.get(range) {
            None => out.push(format!(
                "keyspace `{name}`: shard {} removed (was on {}, database {})",
                ta.shard, ta.cluster, ta.database
            )),
            Some(tb) if ta.cluster != tb.cluster => out.push(format!(
                "keyspace `{name}`: shard {} moved from {} (database {}) to {} (database {})",
                ta.shard, ta.cluster, ta.database, tb.cluster, tb.database
            )),
            Some(tb) if ta.database != tb.database => out.push(format!(
                "keyspace `{name}`: shard {} on {} renamed from database {} to {}",
                ta.shard, ta.cluster, ta.database, tb.database
            )),
            Some(_) => {}
        }
    }
    for (range, tb) in &shards_b {
        if !shards_a.contains_key(range) {
            out.push(format!("keyspace `{name}`: {}", describe_shard(tb)));
        }
    }
    let tables_a = tables_by_name(ka);
    let tables_b = tables_by_name(kb);
    for (table, ta) in &tables_a {
        match tables_b.get(table) {
            None => out.push(format!(
                "keyspace `{name}`: table `{table}` removed (was {}; now unsharded)",
                describe_table(ta)
            )),
            Some(tb) => diff_table(name, ta, tb, out),
        }
    }
    for (table, tb) in &tables_b {
        if !tables_a.contains_key(table) {
            out.push(format!(
                "keyspace `{name}`: table `{table}` added: {}",
                describe_table(tb)
            ));
        }
    }
}

fn tables_by_name(ks: &Keyspace) -> BTreeMap<&str, &TableSpec> {
    let mut out = BTreeMap::new();
    for t in &ks.tables {
        out.entry(t.name.as_str()).or_insert(t);
    }
    out
}

fn describe_table(t: &TableSpec) -> String {
    match t.kind {
        TableKindName::Sharded => format!(
            "sharded by {} ({})",
            t.column.as_deref().unwrap_or("?"),
            t.vindex.map_or("?", |v| v.as_str())
        ),
        kind => kind.as_str().to_string(),
    }
}

fn diff_table(keyspace: &str, ta: &TableSpec, tb: &TableSpec, out: &mut Vec<String>) {
    let (da, db) = (describe_table(ta), describe_table(tb));
    if da != db {
        out.push(format!(
            "keyspace `{keyspace}`: table `{}` changed from {da} to {db}",
            ta.name
        ));
    }
    let empty = BTreeMap::new();
    let va = ta.values.as_ref().unwrap_or(&empty);
    let vb = tb.values.as_ref().unwrap_or(&empty);
    let keys: BTreeSet<&String> = va.keys().chain(vb.keys()).collect();
    for value in keys {
        let change = match (va.get(value), vb.get(value)) {
            (Some(x), Some(y)) if x != y => format!("moved from shard {x} to {y}"),
            (Some(x), None) => format!("removed (was on shard {x})"),
            (None, Some(y)) => format!("added on shard {y}"),
            _ => continue,
        };
        out.push(format!(
            "keyspace `{keyspace}`: table `{}` list value `{value}` {change}",
            ta.name
        ));
    }
}
