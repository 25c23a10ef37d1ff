//! What a move needs, computed from the shard map: which streams (source shard or default
//! cluster → target shard) with which tables and filters, and the shard map after the move.
//! Pure: checked here, run by the workflow.
//!
//! - **Reshard**: shards `from` (adjacent, together one range) are replaced by shards `to`
//!   covering exactly the same range. Each target shard gets one stream from every source
//!   shard its range meets, with every sharded table filtered to its range; reference tables
//!   come from one source shard only (they are identical on every shard).
//! - **MoveTables**: unsharded tables of a sharded keyspace (on its default cluster) become
//!   sharded: each shard gets one stream from the default cluster with the table filtered to
//!   its range.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shard_map::keyspace::{ShardSpec, TableKindName, TableSpec};
use shard_map::shardmap::{ShardMap, ShardTarget, TableKind};
use shard_map::vindex::VindexKind;
use shard_map::KeyRange;

use crate::error::MoverError;
use crate::stream::{FilterSpec, TableMove};

/// A move as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MoveRequest {
    Reshard {
        keyspace: String,
        /// Shard names being replaced.
        from: Vec<String>,
        /// The new shards and their clusters.
        to: Vec<ShardSpec>,
    },
    MoveTables {
        keyspace: String,
        /// The tables' new placement (sharded, with column and vindex).
        tables: Vec<TableSpec>,
    },
}

/// One stream of a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStream {
    pub source_cluster: String,
    pub source_db: String,
    pub target_cluster: String,
    pub target_db: String,
    /// The target shard's name.
    pub target_shard: String,
    pub tables: Vec<TableMove>,
}

/// A checked move.
#[derive(Debug, Clone)]
pub struct MovePlan {
    pub streams: Vec<PlannedStream>,
    /// The shard map once writes are switched.
    pub after: ShardMap,
    /// Clusters whose writes are held at the write cutover (the sources).
    pub sources: BTreeSet<String>,
}

/// Plans `req` against `map` (whose clusters are `clusters`).
pub fn plan(map: &ShardMap, clusters: &[&str], req: &MoveRequest) -> Result<MovePlan, MoverError> {
    let refuse = |m: String| Err(MoverError::Refused(m));
    let (ks_name, mut spec) = {
        let name = match req {
            MoveRequest::Reshard { keyspace, .. } | MoveRequest::MoveTables { keyspace, .. } => {
                keyspace
            }
        };
        let Some(spec) = map.keyspace_specs().iter().find(|k| &k.name == name) else {
            return refuse(format!("keyspace `{name}` is not in the shard map"));
        };
        (name.clone(), spec.clone())
    };
    let ks = map.keyspace(&ks_name).expect("listed keyspace is indexed");
    if !ks.is_sharded() {
        return refuse(format!(
            "keyspace `{ks_name}` has no shards: give it shards first (a shard map change \
             on empty shards), then move tables into them"
        ));
    }
    let mut streams = Vec::new();
    let mut sources = BTreeSet::new();
    match req {
        MoveRequest::Reshard { from, to, .. } => {
            let old: Vec<ShardTarget> = from
                .iter()
                .map(|n| {
                    ks.shard(n).cloned().ok_or_else(|| {
                        MoverError::Refused(format!("keyspace `{ks_name}` has no shard `{n}`"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let new: Vec<(KeyRange, &ShardSpec)> = to
                .iter()
                .map(|s| {
                    KeyRange::parse(&s.name)
                        .map(|r| (r, s))
                        .map_err(|e| MoverError::Refused(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
            if old.is_empty() || new.is_empty() {
                return refuse(
                    "a reshard needs shards to replace and shards to replace them with".into(),
                );
            }
            let span =
                |mut rs: Vec<KeyRange>, what: &str| -> Result<(u64, Option<u64>), MoverError> {
                    rs.sort_by_key(|r| r.start);
                    for w in rs.windows(2) {
                        if w[0].end != Some(w[1].start) {
                            return Err(MoverError::Refused(format!(
                                "the {what} shards are not adjacent: {} then {}",
                                w[0].name(),
                                w[1].name()
                            )));
                        }
                    }
                    Ok((rs[0].start, rs[rs.len() - 1].end))
                };
            let a = span(old.iter().map(|t| t.range).collect(), "replaced")?;
            let b = span(new.iter().map(|(r, _)| *r).collect(), "new")?;
            if a != b {
                return refuse(format!(
                    "the new shards must cover exactly the replaced range: {} vs {}",
                    fmt_span(a),
                    fmt_span(b)
                ));
            }
            for (_, s) in &new {
                if !clusters.contains(&s.cluster.as_str()) {
                    return refuse(format!("cluster `{}` is not known", s.cluster));
                }
            }
            let sharded: Vec<(TableSpec, VindexKind)> = spec
                .tables
                .iter()
                .filter(|t| t.kind == TableKindName::Sharded)
                .map(|t| match ks.table(&t.name) {
                    TableKind::Sharded(s) if s.vindex.kind() != VindexKind::List => {
                        Ok((t.clone(), s.vindex.kind()))
                    }
                    _ => Err(MoverError::Refused(format!(
                        "table `{}` uses the list vindex, whose values name shards: change \
                         its entries with the shard map instead of resharding",
                        t.name
                    ))),
                })
                .collect::<Result<_, _>>()?;
            let reference: Vec<TableSpec> = spec
                .tables
                .iter()
                .filter(|t| t.kind == TableKindName::Reference)
                .cloned()
                .collect();
            spec.shards.retain(|s| {
                !old.iter()
                    .any(|o| KeyRange::parse(&s.name).ok() == Some(o.range))
            });
            spec.shards.extend(to.iter().cloned());
            let after = rebuild(map, &ks_name, spec)?
                .validated(clusters)
                .map_err(problems)?;
            check_untouched(map, &after, &ks_name, &old)?;
            for (range, s) in &new {
                let target_db = after
                    .shard_database(&ks_name, &s.name)
                    .expect("new shard in the new map");
                let mut first = true;
                for o in old.iter().filter(|o| o.range.intersects(range)) {
                    let mut tables: Vec<TableMove> = sharded
                        .iter()
                        .map(|(t, v)| TableMove {
                            table: t.name.clone(),
                            filter: FilterSpec::Range {
                                column: t.column.clone().expect("sharded has a column"),
                                vindex: *v,
                                range: *range,
                            },
                        })
                        .collect();
                    if first {
                        tables.extend(reference.iter().map(|t| TableMove {
                            table: t.name.clone(),
                            filter: FilterSpec::All,
                        }));
                    }
                    first = false;
                    sources.insert(o.cluster.clone());
                    streams.push(PlannedStream {
                        source_cluster: o.cluster.clone(),
                        source_db: o.database.clone(),
                        target_cluster: s.cluster.clone(),
                        target_db: target_db.clone(),
                        target_shard: s.name.clone(),
                        tables,
                    });
                }
            }
            into_itself(&streams, &ks_name)?;
            Ok(MovePlan {
                streams,
                after,
                sources,
            })
        }
        MoveRequest::MoveTables { tables, .. } => {
            if tables.is_empty() {
                return refuse("name at least one table to move".into());
            }
            for t in tables {
                if !matches!(ks.table(&t.name), TableKind::Unsharded) {
                    return refuse(format!(
                        "table `{}` is not unsharded in keyspace `{ks_name}`",
                        t.name
                    ));
                }
                if t.kind != TableKindName::Sharded
                    || t.column.is_none()
                    || !matches!(t.vindex, Some(VindexKind::Hash | VindexKind::Numeric))
                {
                    return refuse(format!(
                        "table `{}`: MoveTables places a table as sharded, with a column and \
                         the hash or numeric vindex",
                        t.name
                    ));
                }
                spec.tables.retain(|x| x.name != t.name);
                spec.tables.push(t.clone());
            }
            let after = rebuild(map, &ks_name, spec)?
                .validated(clusters)
                .map_err(problems)?;
            sources.insert(ks.default_cluster().to_owned());
            for shard in after.all_shards(&ks_name) {
                streams.push(PlannedStream {
                    source_cluster: ks.default_cluster().to_owned(),
                    source_db: ks.unsharded_database().to_owned(),
                    target_cluster: shard.cluster.clone(),
                    target_db: shard.database.clone(),
                    target_shard: shard.shard.clone(),
                    tables: tables
                        .iter()
                        .map(|t| TableMove {
                            table: t.name.clone(),
                            filter: FilterSpec::Range {
                                column: t.column.clone().expect("checked"),
                                vindex: t.vindex.expect("checked"),
                                range: shard.range,
                            },
                        })
                        .collect(),
                });
            }
            into_itself(&streams, &ks_name)?;
            Ok(MovePlan {
                streams,
                after,
                sources,
            })
        }
    }
}

/// The streams that carry writes back the other way once `streams` have been switched:
/// each `A → B` becomes `B → A` for the same tables, owning on `A` the rows `A` owns in `map`
/// (the map in which the `A`s are the places in force): a shard's range, through the
/// table's column and vindex there, or every row on the keyspace's unsharded database.
/// Reference tables come into each `A` from one stream only. Stream names are left to the
/// caller.
pub fn mirror(streams: &[PlannedStream], map: &ShardMap, keyspace: &str) -> Vec<PlannedStream> {
    let reference = |table: &str| matches!(map.table(keyspace, table), TableKind::Reference);
    // The reference tables moving, whichever stream carried them.
    let mut references: Vec<String> = Vec::new();
    for t in streams.iter().flat_map(|s| &s.tables) {
        if reference(&t.table) && !references.contains(&t.table) {
            references.push(t.table.clone());
        }
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    streams
        .iter()
        .map(|s| {
            let owner = map
                .all_shards(keyspace)
                .iter()
                .find(|t| t.cluster == s.source_cluster && t.database == s.source_db);
            let first = seen.insert((s.source_cluster.clone(), s.source_db.clone()));
            let mut tables: Vec<TableMove> = s
                .tables
                .iter()
                .filter(|t| !reference(&t.table))
                .map(|t| TableMove {
                    table: t.table.clone(),
                    filter: match (owner, map.table(keyspace, &t.table)) {
                        (Some(o), TableKind::Sharded(st)) => FilterSpec::Range {
                            column: st.column.clone(),
                            vindex: st.vindex.kind(),
                            range: o.range,
                        },
                        _ => FilterSpec::All,
                    },
                })
                .collect();
            if first {
                tables.extend(references.iter().map(|t| TableMove {
                    table: t.clone(),
                    filter: FilterSpec::All,
                }));
            }
            PlannedStream {
                source_cluster: s.target_cluster.clone(),
                source_db: s.target_db.clone(),
                target_cluster: s.source_cluster.clone(),
                target_db: s.source_db.clone(),
                target_shard: owner.map_or_else(|| "unsharded".to_owned(), |o| o.shard.clone()),
                tables,
            }
        })
        .collect()
}

/// Refuses a stream whose target database is its source database (a new shard on the
/// source's cluster named like it, a shard sharing the unsharded tables' database).
fn into_itself(streams: &[PlannedStream], ks: &str) -> Result<(), MoverError> {
    match streams
        .iter()
        .find(|s| s.target_cluster == s.source_cluster && s.target_db == s.source_db)
    {
        Some(s) => Err(MoverError::Refused(format!(
            "shard {} of `{ks}` would be written into database {} on cluster {}, which it is \
             copied from: rows cannot move into themselves; choose another cluster",
            s.target_shard, s.target_db, s.target_cluster
        ))),
        None => Ok(()),
    }
}

fn fmt_span((start, end): (u64, Option<u64>)) -> String {
    KeyRange { start, end }.name()
}

fn problems(v: Vec<shard_map::ShardMapError>) -> MoverError {
    let v: Vec<String> = v.iter().map(ToString::to_string).collect();
    MoverError::Refused(format!(
        "the shard map after the move is not valid: {}",
        v.join("; ")
    ))
}

/// `map` with keyspace `name` replaced by `spec`.
fn rebuild(map: &ShardMap, name: &str, spec: shard_map::Keyspace) -> Result<ShardMap, MoverError> {
    let mut keyspaces = map.keyspace_specs().to_vec();
    for k in keyspaces.iter_mut().filter(|k| k.name == name) {
        *k = spec.clone();
    }
    Ok(ShardMap::from_keyspaces(
        Some(map.default_cluster().to_owned()),
        keyspaces,
    ))
}

/// Refuses a reshard that would rename a shard it does not move (a new shard on a cluster
/// that already holds another shard of the keyspace changes that shard's database name).
fn check_untouched(
    before: &ShardMap,
    after: &ShardMap,
    ks: &str,
    moved: &[ShardTarget],
) -> Result<(), MoverError> {
    for s in before.all_shards(ks) {
        if moved.iter().any(|m| m.range == s.range) {
            continue;
        }
        let now = after.shard_database(ks, &s.shard);
        if now.as_deref() != Some(s.database.as_str()) {
            return Err(MoverError::Refused(format!(
                "shard {} would move from database {} to {:?} on cluster {}: put the new \
                 shards on clusters that hold no other shard of `{ks}`",
                s.shard, s.database, now, s.cluster
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        ShardMap::from_json(
            r#"{"keyspaces":[{"name":"app","default_cluster":"c1",
              "shards":[{"name":"-80","cluster":"c1"},{"name":"80-","cluster":"c2"}],
              "tables":[{"name":"orders","kind":"sharded","column":"customer","vindex":"hash"},
                        {"name":"countries","kind":"reference"}]}]}"#,
        )
        .unwrap()
    }

    const CLUSTERS: [&str; 4] = ["c1", "c2", "c3", "c4"];

    fn shard(name: &str, cluster: &str) -> ShardSpec {
        ShardSpec {
            name: name.into(),
            cluster: cluster.into(),
        }
    }

    #[test]
    fn a_split_gets_one_stream_per_new_shard_with_reference_tables_once() {
        let req = MoveRequest::Reshard {
            keyspace: "app".into(),
            from: vec!["80-".into()],
            to: vec![shard("80-c0", "c3"), shard("c0-", "c4")],
        };
        let p = plan(&map(), &CLUSTERS, &req).unwrap();
        assert_eq!(p.streams.len(), 2);
        assert_eq!(p.sources, BTreeSet::from(["c2".to_owned()]));
        let s = &p.streams[0];
        assert_eq!(
            (s.source_cluster.as_str(), s.target_cluster.as_str()),
            ("c2", "c3")
        );
        assert_eq!(s.tables.len(), 2);
        match &s.tables[0].filter {
            FilterSpec::Range { range, .. } => assert_eq!(range.name(), "80-c0"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.tables[1].filter, FilterSpec::All));
        let names: Vec<String> = p
            .after
            .all_shards("app")
            .iter()
            .map(|t| t.shard.clone())
            .collect();
        assert_eq!(names, ["-80", "80-c0", "c0-"]);
    }

    #[test]
    fn a_merge_streams_from_both_sources_but_reference_tables_from_one() {
        let req = MoveRequest::Reshard {
            keyspace: "app".into(),
            from: vec!["-80".into(), "80-".into()],
            to: vec![shard("-", "c3")],
        };
        let p = plan(&map(), &CLUSTERS, &req).unwrap();
        assert_eq!(p.streams.len(), 2);
        assert_eq!(p.streams[0].tables.len(), 2);
        assert_eq!(p.streams[1].tables.len(), 1);
        assert_eq!(p.sources.len(), 2);
    }

    #[test]
    fn mirrored_streams_own_the_old_ranges_and_take_reference_tables_once() {
        let req = MoveRequest::Reshard {
            keyspace: "app".into(),
            from: vec!["80-".into()],
            to: vec![shard("80-c0", "c3"), shard("c0-", "c4")],
        };
        let m = map();
        let p = plan(&m, &CLUSTERS, &req).unwrap();
        let back = mirror(&p.streams, &m, "app");
        assert_eq!(back.len(), 2);
        assert!(back
            .iter()
            .all(|s| s.target_cluster == "c2" && s.target_shard == "80-"));
        assert_eq!(
            back[0].tables.len(),
            2,
            "the first carries the reference table"
        );
        assert_eq!(back[1].tables.len(), 1);
        match &back[1].tables[0].filter {
            FilterSpec::Range { range, .. } => assert_eq!(range.name(), "80-"),
            other => panic!("{other:?}"),
        }
        // And back again: the new shards' ranges, from the map after the move.
        let again = mirror(&back, &p.after, "app");
        assert_eq!(again[0].target_cluster, "c3");
        assert_eq!(again[0].tables.len(), 2);
        assert_eq!(
            again[1].tables.len(),
            2,
            "each new shard gets the reference table"
        );
        match &again[0].tables[0].filter {
            FilterSpec::Range { range, .. } => assert_eq!(range.name(), "80-c0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_reshards_are_refused_with_the_reason() {
        let cases = [
            (vec!["80-"], vec![shard("80-c0", "c3")], "cover exactly"),
            (vec!["40-"], vec![shard("40-", "c3")], "no shard `40-`"),
            (
                vec!["80-"],
                vec![shard("80-c0", "c3"), shard("c0-", "c9")],
                "not known",
            ),
            (
                vec!["80-"],
                vec![shard("80-a0", "c3"), shard("c0-", "c4")],
                "not adjacent",
            ),
            // c1 holds -80: a second shard there renames its database.
            (vec!["80-"], vec![shard("80-", "c1")], "would move"),
            // The new 80-c0 on c2 would be database `app` on c2, the source itself.
            (
                vec!["80-"],
                vec![shard("80-c0", "c2"), shard("c0-", "c4")],
                "into themselves",
            ),
        ];
        for (from, to, why) in cases {
            let req = MoveRequest::Reshard {
                keyspace: "app".into(),
                from: from.into_iter().map(Into::into).collect(),
                to,
            };
            let e = plan(&map(), &CLUSTERS, &req).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn move_tables_streams_from_the_default_cluster_to_every_shard() {
        let m = ShardMap::from_json(
            r#"{"keyspaces":[{"name":"app","default_cluster":"c1",
              "shards":[{"name":"-80","cluster":"c2"},{"name":"80-","cluster":"c3"}]}]}"#,
        )
        .unwrap();
        let req = MoveRequest::MoveTables {
            keyspace: "app".into(),
            tables: vec![TableSpec::sharded("users", "id", VindexKind::Hash)],
        };
        let p = plan(&m, &CLUSTERS, &req).unwrap();
        assert_eq!(p.streams.len(), 2);
        assert!(p
            .streams
            .iter()
            .all(|s| s.source_cluster == "c1" && s.source_db == "app"));
        assert!(matches!(
            p.after.table("app", "users"),
            TableKind::Sharded(_)
        ));
        // Into itself (the -80 shard shares database `app` on c1): refused.
        let e = plan(&map(), &CLUSTERS, &req).unwrap_err().to_string();
        assert!(e.contains("into themselves"), "{e}");
        let req = MoveRequest::MoveTables {
            keyspace: "app".into(),
            tables: vec![TableSpec::sharded("orders", "customer", VindexKind::Hash)],
        };
        let e = plan(&map(), &CLUSTERS, &req).unwrap_err().to_string();
        assert!(e.contains("not unsharded"), "{e}");
    }
}
