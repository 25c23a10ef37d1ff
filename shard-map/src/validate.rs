//! Shard map validation: every problem at once, in the order the map is written.

use std::collections::{HashMap, HashSet};

use crate::error::ShardMapError;
use crate::keyrange::{check_coverage, CoverageProblem, KeyRange};
use crate::keyspace::{Keyspace, TableKindName, TableSpec};
use crate::shardmap::KeyspaceMap;
use crate::vindex::VindexKind;

/// MariaDB's limit on a database name, in characters.
const MAX_DATABASE_NAME: usize = 64;

pub(crate) fn validate(
    default_cluster: Option<&str>,
    specs: &[Keyspace],
    built: &HashMap<String, KeyspaceMap>,
    clusters: &[&str],
) -> Vec<ShardMapError> {
    let mut problems = Vec::new();
    match default_cluster {
        Some(c) if !clusters.contains(&c) => problems.push(ShardMapError::UnknownCluster {
            keyspace: "(default)".into(),
            cluster: c.to_string(),
        }),
        None if specs.is_empty() => problems.push(ShardMapError::NoDefaultCluster),
        _ => {}
    }
    let mut seen = HashSet::new();
    for ks in specs {
        if ks.name.is_empty() {
            problems.push(ShardMapError::EmptyName);
            continue;
        }
        if !clusters.contains(&ks.default_cluster.as_str()) {
            problems.push(ShardMapError::UnknownCluster {
                keyspace: ks.name.clone(),
                cluster: ks.default_cluster.clone(),
            });
        }
        let first = seen.insert(ks.name.as_str());
        if !first {
            problems.push(ShardMapError::DuplicateKeyspace(ks.name.clone()));
        }
        let shard_ranges = validate_shards(ks, clusters, &mut problems);
        // Only the first definition of a name is built (and named).
        if let Some(b) = built.get(&ks.name).filter(|_| first) {
            for t in b.all_shards() {
                if t.database.chars().count() > MAX_DATABASE_NAME {
                    problems.push(ShardMapError::DatabaseNameTooLong {
                        keyspace: ks.name.clone(),
                        shard: t.shard.clone(),
                        database: t.database.clone(),
                    });
                }
            }
        }
        let mut tables = HashSet::new();
        for t in &ks.tables {
            if t.name.is_empty() {
                problems.push(ShardMapError::EmptyTableName {
                    keyspace: ks.name.clone(),
                });
            } else if !tables.insert(t.name.as_str()) {
                problems.push(ShardMapError::DuplicateTable {
                    keyspace: ks.name.clone(),
                    table: t.name.clone(),
                });
            }
            validate_table(ks, t, &shard_ranges, &mut problems);
        }
    }
    problems
}

/// Checks names, clusters, duplicates and coverage; returns the valid ranges.
fn validate_shards(
    ks: &Keyspace,
    clusters: &[&str],
    problems: &mut Vec<ShardMapError>,
) -> HashSet<KeyRange> {
    let mut ranges = HashSet::new();
    for s in &ks.shards {
        if !clusters.contains(&s.cluster.as_str()) {
            problems.push(ShardMapError::UnknownShardCluster {
                keyspace: ks.name.clone(),
                shard: s.name.clone(),
                cluster: s.cluster.clone(),
            });
        }
        match KeyRange::parse(&s.name) {
            Err(error) => problems.push(ShardMapError::BadShardName {
                keyspace: ks.name.clone(),
                error,
            }),
            Ok(r) => {
                if !ranges.insert(r) {
                    problems.push(ShardMapError::DuplicateShard {
                        keyspace: ks.name.clone(),
                        shard: r.name(),
                    });
                }
            }
        }
    }
    if !ks.shards.is_empty() {
        let unique: Vec<KeyRange> = ranges.iter().copied().collect();
        for p in check_coverage(&unique) {
            problems.push(match p {
                CoverageProblem::Gap(range) => ShardMapError::ShardGap {
                    keyspace: ks.name.clone(),
                    range: range.name(),
                },
                CoverageProblem::Overlap(a, b) => ShardMapError::ShardOverlap {
                    keyspace: ks.name.clone(),
                    a,
                    b,
                },
            });
        }
    }
    ranges
}

fn validate_table(
    ks: &Keyspace,
    t: &TableSpec,
    shard_ranges: &HashSet<KeyRange>,
    problems: &mut Vec<ShardMapError>,
) {
    let keyspace = || ks.name.clone();
    let table = || t.name.clone();
    if t.kind != TableKindName::Sharded {
        let present = [
            ("column", t.column.is_some()),
            ("vindex", t.vindex.is_some()),
            ("values", t.values.is_some()),
        ];
        for (field, _) in present.iter().filter(|(_, p)| *p) {
            problems.push(ShardMapError::FieldNotAllowed {
                keyspace: keyspace(),
                table: table(),
                kind: t.kind.as_str(),
                field,
            });
        }
        return;
    }
    if ks.shards.is_empty() {
        problems.push(ShardMapError::ShardedTableWithoutShards {
            keyspace: keyspace(),
            table: table(),
        });
    }
    if t.column.as_deref().is_none_or(str::is_empty) {
        problems.push(ShardMapError::MissingColumn {
            keyspace: keyspace(),
            table: table(),
        });
    }
    match (t.vindex, &t.values) {
        (None, _) => problems.push(ShardMapError::MissingVindex {
            keyspace: keyspace(),
            table: table(),
        }),
        (Some(VindexKind::List), None) => problems.push(ShardMapError::ListWithoutValues {
            keyspace: keyspace(),
            table: table(),
        }),
        (Some(VindexKind::List), Some(values)) => {
            if values.is_empty() {
                problems.push(ShardMapError::ListWithoutValues {
                    keyspace: keyspace(),
                    table: table(),
                });
            }
            validate_list(ks, t, values, shard_ranges, problems);
        }
        (Some(v), Some(_)) => problems.push(ShardMapError::ValuesWithoutList {
            keyspace: keyspace(),
            table: table(),
            vindex: v.as_str(),
        }),
        (Some(_), None) => {}
    }
}

fn validate_list(
    ks: &Keyspace,
    t: &TableSpec,
    values: &std::collections::BTreeMap<String, String>,
    shard_ranges: &HashSet<KeyRange>,
    problems: &mut Vec<ShardMapError>,
) {
    // Values that MariaDB could call equal: same text ignoring case and trailing spaces, or the
    // same integer (`1` and `01` in an integer column).
    let mut by_text: HashMap<String, &str> = HashMap::new();
    let mut by_int: HashMap<i128, &str> = HashMap::new();
    for (value, shard) in values {
        if value.is_empty() {
            problems.push(ShardMapError::EmptyListValue {
                keyspace: ks.name.clone(),
                table: t.name.clone(),
            });
            continue;
        }
        let known = KeyRange::parse(shard).is_ok_and(|r| shard_ranges.contains(&r));
        if !known {
            problems.push(ShardMapError::ListValueUnknownShard {
                keyspace: ks.name.clone(),
                table: t.name.clone(),
                value: value.clone(),
                shard: shard.clone(),
            });
        }
        let collide = |a: &str| ShardMapError::ListValuesCollide {
            keyspace: ks.name.clone(),
            table: t.name.clone(),
            a: a.to_string(),
            b: value.clone(),
        };
        let text = value.trim_end_matches(' ').to_ascii_lowercase();
        if let Some(a) = by_text.insert(text, value) {
            problems.push(collide(a));
        } else if let Some(n) = as_integer(value) {
            if let Some(a) = by_int.insert(n, value) {
                problems.push(collide(a));
            }
        }
    }
}

/// The integer MariaDB would read from an integer-looking list value (`01`, ` 1`, `+1`).
fn as_integer(s: &str) -> Option<i128> {
    s.trim().parse().ok()
}
