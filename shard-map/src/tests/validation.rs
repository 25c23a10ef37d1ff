use crate::*;

fn messages(json: &str, clusters: &[&str]) -> Vec<String> {
    let map = ShardMap::from_json(json).unwrap();
    map.validate(clusters)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn validation_lists_every_problem_at_once() {
    let json = r#"{"default_cluster": "c9", "keyspaces": [
      {"name": "app", "default_cluster": "c1",
       "shards": [{"name": "-40", "cluster": "c1"}, {"name": "30-80", "cluster": "c2"},
                  {"name": "c0-", "cluster": "c7"}, {"name": "8o-", "cluster": "c2"},
                  {"name": "-40", "cluster": "c1"}],
       "tables": [
         {"name": "t1", "kind": "sharded", "vindex": "hash"},
         {"name": "t2", "kind": "sharded", "column": "id"},
         {"name": "t3", "kind": "sharded", "column": "r", "vindex": "list"},
         {"name": "t4", "kind": "sharded", "column": "r", "vindex": "list",
          "values": {"eu": "-80", "EU": "c0-", "1": "C0-", "01": "c0-", "": "c0-"}},
         {"name": "t5", "kind": "sharded", "column": "id", "vindex": "hash", "values": {"a": "-40"}},
         {"name": "countries", "kind": "reference", "column": "id"},
         {"name": "t1", "kind": "unsharded"},
         {"name": "", "kind": "unsharded"}
       ]},
      {"name": "app", "default_cluster": "c1"},
      {"name": "", "default_cluster": "c1"},
      {"name": "flat", "default_cluster": "c8",
       "tables": [{"name": "s", "kind": "sharded", "column": "id", "vindex": "numeric"}]},
      {"name": "keyspace_with_a_name_so_long_that_its_shard_databases_overflow", "default_cluster": "c1",
       "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c1"}]}
    ]}"#;
    let want = [
        "keyspace `(default)` names unknown cluster `c9`",
        "keyspace `app`: shard `c0-` is on unknown cluster `c7`",
        "keyspace `app`: bad shard name: `8o-`: bound `8o` is not hex digits",
        "keyspace `app`: shard -40 is defined twice",
        "keyspace `app`: shards -40 and 30-80 overlap",
        "keyspace `app`: no shard covers 80-c0",
        "keyspace `app`: sharded table `t1` needs a `column`",
        "keyspace `app`: sharded table `t2` needs a `vindex` (hash, numeric or list)",
        "keyspace `app`: table `t3` has a list vindex but no `values`",
        "keyspace `app`: table `t4` has an empty list value",
        "keyspace `app`: table `t4` lists values `01` and `1`, which MariaDB may compare as equal \
         (case, trailing spaces or numeric value)",
        "keyspace `app`: table `t4` maps value `eu` to unknown shard `-80`",
        "keyspace `app`: table `t4` lists values `EU` and `eu`, which MariaDB may compare as equal \
         (case, trailing spaces or numeric value)",
        "keyspace `app`: table `t5` has `values` but its vindex is `hash`, not list",
        "keyspace `app`: reference table `countries` must not have `column`",
        "keyspace `app`: table `t1` is defined twice",
        "keyspace `app`: a table has an empty name",
        "keyspace `app` is defined twice",
        "keyspace name must not be empty",
        "keyspace `flat` names unknown cluster `c8`",
        "keyspace `flat`: table `s` is sharded but the keyspace has no shards; add `shards` or \
         make the table unsharded",
        "keyspace `keyspace_with_a_name_so_long_that_its_shard_databases_overflow`: shard -80's \
         database name `keyspace_with_a_name_so_long_that_its_shard_databases_overflow_00_80` is \
         longer than MariaDB's 64 characters; use a shorter keyspace name",
        "keyspace `keyspace_with_a_name_so_long_that_its_shard_databases_overflow`: shard 80-'s \
         database name `keyspace_with_a_name_so_long_that_its_shard_databases_overflow_80_ff` is \
         longer than MariaDB's 64 characters; use a shorter keyspace name",
    ];
    assert_eq!(messages(json, &["c1", "c2"]), want);
}

#[test]
fn coverage_problems_name_the_shards() {
    let cases: &[(&str, &[&str])] = &[
        (r#"[{"name": "-", "cluster": "c1"}]"#, &[]),
        (
            r#"[{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c1"}]"#,
            &[],
        ),
        (
            r#"[{"name": "-40", "cluster": "c1"}, {"name": "30-80", "cluster": "c1"},
                {"name": "80-", "cluster": "c1"}]"#,
            &["keyspace `app`: shards -40 and 30-80 overlap"],
        ),
        (
            r#"[{"name": "-80", "cluster": "c1"}, {"name": "c0-", "cluster": "c1"}]"#,
            &["keyspace `app`: no shard covers 80-c0"],
        ),
        (
            r#"[{"name": "-80", "cluster": "c1"}]"#,
            &["keyspace `app`: no shard covers 80-"],
        ),
        (
            r#"[{"name": "80-40", "cluster": "c1"}, {"name": "-", "cluster": "c1"}]"#,
            &["keyspace `app`: bad shard name: `80-40` is empty: its end is not after its start"],
        ),
    ];
    for &(shards, want) in cases {
        let json = format!(
            r#"{{"keyspaces": [{{"name": "app", "default_cluster": "c1", "shards": {shards}}}]}}"#
        );
        assert_eq!(messages(&json, &["c1"]), want, "{shards}");
    }
}

#[test]
fn new_lists_every_problem_of_the_old_api() {
    let err = ShardMap::new(
        "c9".into(),
        vec![
            Keyspace::unsharded("a", "c1"),
            Keyspace::unsharded("a", "c3"),
        ],
        &["c1"],
    )
    .unwrap_err();
    assert_eq!(
        err,
        [
            ShardMapError::UnknownCluster {
                keyspace: "(default)".into(),
                cluster: "c9".into()
            },
            ShardMapError::UnknownCluster {
                keyspace: "a".into(),
                cluster: "c3".into()
            },
            ShardMapError::DuplicateKeyspace("a".into()),
        ]
    );
}

#[test]
fn an_empty_map_needs_a_default_cluster() {
    assert_eq!(
        messages(r#"{"keyspaces": []}"#, &["c1"]),
        ["the shard map names no default cluster and has no keyspace to take one from"]
    );
    assert!(messages(r#"{"default_cluster": "c1", "keyspaces": []}"#, &["c1"]).is_empty());
    let err = ShardMap::from_json(r#"{"keyspaces": [], "extra": 1}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `extra`"), "{err}");
}
