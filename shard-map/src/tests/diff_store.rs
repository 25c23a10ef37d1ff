use super::contract;
use crate::*;

#[test]
fn diff_names_every_change() {
    let before = contract();
    let after = ShardMap::from_json(
        r#"{"keyspaces": [{
          "name": "app", "default_cluster": "c1",
          "shards": [{"name": "-40", "cluster": "c1"}, {"name": "40-80", "cluster": "c1"},
                     {"name": "80-", "cluster": "c3"}],
          "tables": [
            {"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"},
            {"name": "countries", "kind": "sharded", "column": "id", "vindex": "numeric"},
            {"name": "regions", "kind": "sharded", "column": "code", "vindex": "list",
             "values": {"eu": "-40"}}
          ]},
          {"name": "logs", "default_cluster": "c2"}]}"#,
    )
    .unwrap();
    assert_eq!(
        diff(&before, &after),
        [
            "keyspace `app`: shard -80 removed (was on c1, database app)",
            "keyspace `app`: shard 80- moved from c2 (database app) to c3 (database app)",
            "keyspace `app`: shard -40 added on c1 (database app_00_40)",
            "keyspace `app`: shard 40-80 added on c1 (database app_40_80)",
            "keyspace `app`: table `countries` changed from reference to sharded by id (numeric)",
            "keyspace `app`: table `orders` removed (was sharded by customer_id (hash); now \
             unsharded)",
            "keyspace `app`: table `regions` added: sharded by code (list)",
            "keyspace `logs` added on c2 (unsharded, 0 tables)",
        ]
    );
    assert!(diff(&before, &before).is_empty());
    let back = diff(&after, &before);
    assert!(
        back.contains(&"keyspace `logs` removed".to_string()),
        "{back:?}"
    );
}

#[test]
fn diff_reports_renamed_databases_and_moved_list_values() {
    let a = ShardMap::from_json(
        r#"{"keyspaces": [{"name": "app", "default_cluster": "c1",
          "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
          "tables": [{"name": "u", "kind": "sharded", "column": "r", "vindex": "list",
                      "values": {"eu": "-80", "us": "80-"}}]}]}"#,
    )
    .unwrap();
    let b = ShardMap::from_json(
        r#"{"default_cluster": "c2", "keyspaces": [{"name": "app", "default_cluster": "c2",
          "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c1"}],
          "tables": [{"name": "u", "kind": "sharded", "column": "r", "vindex": "list",
                      "values": {"eu": "80-", "apac": "80-"}}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        diff(&a, &b),
        [
            "default cluster moved from c1 to c2",
            "keyspace `app`: default cluster moved from c1 to c2",
            "keyspace `app`: shard -80 on c1 renamed from database app to app_00_80",
            "keyspace `app`: shard 80- moved from c2 (database app) to c1 (database app_80_ff)",
            "keyspace `app`: table `u` list value `apac` added on shard 80-",
            "keyspace `app`: table `u` list value `eu` moved from shard -80 to 80-",
            "keyspace `app`: table `u` list value `us` removed (was on shard 80-)",
        ]
    );
}

fn versioned(version: u64, map: &ShardMap) -> VersionedShardMap {
    VersionedShardMap {
        version,
        map: map.clone(),
    }
}

#[test]
fn file_store_round_trips_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("maps"));
    assert_eq!(store.load().unwrap(), None);
    assert_eq!(store.versions().unwrap(), Vec::<u64>::new());

    let v1 = versioned(1, &contract());
    store.save(&v1).unwrap();
    assert_eq!(store.load().unwrap(), Some(v1.clone()));

    let moved = ShardMap::from_json(&contract().to_json().replace("\"c2\"", "\"c3\"")).unwrap();
    let v2 = versioned(2, &moved);
    store.save(&v2).unwrap();
    assert_eq!(store.load().unwrap(), Some(v2.clone()));
    assert_eq!(store.versions().unwrap(), [1, 2]);
    assert_eq!(store.load_version(1).unwrap(), Some(v1.clone()));
    assert_eq!(store.load_version(7).unwrap(), None);
    assert_eq!(
        diff(&v1.map, &v2.map),
        ["keyspace `app`: shard 80- moved from c2 (database app) to c3 (database app)"]
    );

    let err = store.save(&v1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot save shard map version 1: the store already holds version 2; versions must \
         increase"
    );
    assert_eq!(store.load().unwrap(), Some(v2));

    // What is on disk: the current file, the history, no temporary files left behind.
    let mut files: Vec<String> = walk(dir.path());
    files.sort();
    assert_eq!(
        files,
        [
            "maps/history/v1.json",
            "maps/history/v2.json",
            "maps/shard_map.json"
        ]
    );
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.current_path()).unwrap()).unwrap();
    assert_eq!(on_disk["version"], 2);
    assert_eq!(on_disk["map"]["keyspaces"][0]["shards"][1]["cluster"], "c3");

    std::fs::write(store.current_path(), "{not json").unwrap();
    let err = store.load().unwrap_err();
    assert!(
        err.to_string().contains("not a valid shard map file"),
        "{err}"
    );
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn memory_store_refuses_old_versions() {
    let store = MemoryStore::default();
    assert_eq!(store.load().unwrap(), None);
    store.save(&versioned(3, &contract())).unwrap();
    assert!(matches!(
        store.save(&versioned(3, &contract())),
        Err(StoreError::StaleVersion {
            current: 3,
            attempted: 3
        })
    ));
    store.save(&versioned(4, &contract())).unwrap();
    assert_eq!(store.versions().unwrap(), [3, 4]);
    assert_eq!(store.load().unwrap().unwrap().version, 4);
    // Usable as a trait object.
    let _: &dyn ShardMapStore = &store;
}
