use super::{contract, str_, CONTRACT};
use crate::*;

#[test]
fn contract_json_round_trips_in_the_same_shape() {
    let map = contract();
    let again = ShardMap::from_json(&map.to_json()).unwrap();
    assert_eq!(again, map);
    let original: serde_json::Value = serde_json::from_str(CONTRACT).unwrap();
    let written: serde_json::Value = serde_json::from_str(&map.to_json()).unwrap();
    assert_eq!(written, original);
    // As part of another document (the store's versioned form) too.
    let v = serde_json::to_value(&map).unwrap();
    assert_eq!(v, original);
}

#[test]
fn contract_tables_and_shards() {
    let map = contract();
    assert_eq!(map.default_cluster(), "c1", "taken from the first keyspace");
    assert_eq!(map.cluster_for_db(Some("app")), "c1");
    let TableKind::Sharded(customers) = map.table("app", "customers") else {
        panic!("customers is sharded")
    };
    assert_eq!(customers.vindex, Vindex::Hash);
    assert!(customers.is_column("id") && customers.is_column("ID"));
    assert!(!customers.is_column("customer_id"));
    let TableKind::Sharded(orders) = map.table("app", "orders") else {
        panic!("orders is sharded")
    };
    assert!(orders.is_column("Customer_ID"));
    assert_eq!(map.table("app", "countries"), &TableKind::Reference);
    assert_eq!(map.table("app", "settings"), &TableKind::Unsharded);
    assert_eq!(
        map.table("app", "Customers"),
        &TableKind::Unsharded,
        "table names are case-sensitive"
    );
    assert_eq!(map.table("nope", "customers"), &TableKind::Unsharded);

    let names: Vec<(&str, &str, &str)> = map
        .all_shards("app")
        .iter()
        .map(|t| (t.shard.as_str(), t.cluster.as_str(), t.database.as_str()))
        .collect();
    assert_eq!(names, [("-80", "c1", "app"), ("80-", "c2", "app")]);
    assert_eq!(map.shard_targets("app").len(), 2);
    assert!(map.all_shards("nope").is_empty());

    let ks = map.keyspace("app").unwrap();
    assert!(ks.is_sharded());
    assert_eq!(ks.unsharded_database(), "app");
    let shard_of = |v: KeyValue| match ks.shard_for_read(customers, &v) {
        ShardLookup::One(t) => t.shard.clone(),
        other => format!("{other:?}"),
    };
    // hash(42) = 0xa1d0..., hash(1) = 0xc4ca..., hash(-5) = 0x47c1..., hash(0) = 0xcfcd...
    assert_eq!(shard_of(KeyValue::Int(42)), "80-");
    assert_eq!(shard_of(str_("42")), "80-");
    assert_eq!(shard_of(KeyValue::Int(-5)), "-80");
    assert_eq!(shard_of(KeyValue::UInt(1)), "80-");
    assert!(matches!(
        ks.shard_for_read(customers, &str_("042")),
        ShardLookup::All(Unplaceable::NotCanonicalInteger(_))
    ));
    assert_eq!(
        ks.shard_for_insert(customers, &KeyValue::Int(-5))
            .unwrap()
            .shard,
        "-80"
    );
    let err = ks.shard_for_insert(customers, &str_("4.2e1")).unwrap_err();
    assert!(err.to_string().contains("'4.2e1'"), "{err}");
}

#[test]
fn shard_for_id_and_ranges_find_the_covering_shards() {
    let map = ShardMap::from_keyspaces(
        None,
        vec![keyspace(
            "app",
            &[
                ("-40", "c1"),
                ("40-80", "c1"),
                ("80-c0", "c2"),
                ("c0-", "c3"),
            ],
        )],
    );
    assert_eq!(map.validate(&["c1", "c2", "c3"]), vec![]);
    let at = |id: u64| map.shard_for_id("app", id).unwrap().shard.clone();
    let cases: &[(u64, &str)] = &[
        (0, "-40"),
        ((0x40 << 56) - 1, "-40"),
        (0x40 << 56, "40-80"),
        (0x80 << 56, "80-c0"),
        (0xbfff_ffff_ffff_ffff, "80-c0"),
        (0xc0 << 56, "c0-"),
        (u64::MAX, "c0-"),
    ];
    for &(id, want) in cases {
        assert_eq!(at(id), want, "{id:#x}");
    }
    let span = |lo: u64, hi: u64| -> Vec<String> {
        map.shards_for_range("app", lo, hi)
            .iter()
            .map(|t| t.shard.clone())
            .collect()
    };
    assert_eq!(span(0, 0), ["-40"]);
    assert_eq!(span(5, 1000), ["-40"]);
    assert_eq!(span(0x3f << 56, 0x80 << 56), ["-40", "40-80", "80-c0"]);
    assert_eq!(span(0, u64::MAX).len(), 4);
    assert_eq!(span(u64::MAX, u64::MAX), ["c0-"]);
    assert!(span(10, 9).is_empty());
    assert!(map.shard_for_id("nope", 0).is_none());
}

pub(crate) fn keyspace(name: &str, shards: &[(&str, &str)]) -> Keyspace {
    Keyspace {
        name: name.into(),
        default_cluster: "c1".into(),
        shards: shards
            .iter()
            .map(|(n, c)| ShardSpec {
                name: n.to_string(),
                cluster: c.to_string(),
            })
            .collect(),
        tables: vec![],
    }
}

#[test]
fn shard_databases_are_named_after_the_keyspace_and_split_when_sharing_a_cluster() {
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: &[(Pairs, Pairs)] = &[
        (
            &[("-80", "c1"), ("80-", "c2")],
            &[("-80", "app"), ("80-", "app")],
        ),
        (&[("-", "c2")], &[("-", "app")]),
        (
            &[
                ("-40", "c1"),
                ("40-80", "c1"),
                ("80-c0", "c2"),
                ("c0-", "c3"),
            ],
            &[
                ("-40", "app_00_40"),
                ("40-80", "app_40_80"),
                ("80-c0", "app"),
                ("c0-", "app"),
            ],
        ),
        (
            &[("-80", "c1"), ("80-c0", "c2"), ("C0-", "c2")],
            &[("-80", "app"), ("80-c0", "app_80_c0"), ("c0-", "app_c0_ff")],
        ),
        (
            &[("-4080", "c1"), ("4080-", "c1")],
            &[("-4080", "app_00_4080"), ("4080-", "app_4080_ff")],
        ),
    ];
    for &(shards, want) in cases {
        let map = ShardMap::from_keyspaces(None, vec![keyspace("app", shards)]);
        for &(shard, db) in want {
            assert_eq!(
                map.shard_database("app", shard).as_deref(),
                Some(db),
                "{shards:?} {shard}"
            );
        }
    }
    let map =
        ShardMap::from_keyspaces(None, vec![keyspace("app", &[("-40", "c1"), ("40-", "c1")])]);
    assert_eq!(
        map.shard_database("app", "00-40").as_deref(),
        Some("app_00_40")
    );
    assert_eq!(map.shard_database("app", "40-80"), None);
    assert_eq!(map.shard_database("other", "-40"), None);
    assert_eq!(
        shard_database_name("app", &KeyRange::parse("c0-").unwrap(), true),
        "app_c0_ff"
    );
}

#[test]
fn list_vindex_routes_through_the_map() {
    let json = r#"{"default_cluster": "c1", "keyspaces": [{
      "name": "geo", "default_cluster": "c1",
      "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
      "tables": [{"name": "users", "kind": "sharded", "column": "region", "vindex": "list",
                  "values": {"eu": "-80", "us": "80-", "apac": "80-"}}]}]}"#;
    let map = ShardMap::from_json(json).unwrap();
    assert_eq!(map.validate(&["c1", "c2"]), vec![]);
    let ks = map.keyspace("geo").unwrap();
    let TableKind::Sharded(users) = ks.table("users") else {
        panic!("users is sharded")
    };
    let read = |s: &str| match ks.shard_for_read(users, &str_(s)) {
        ShardLookup::One(t) => t.shard.clone(),
        ShardLookup::Nowhere => "nowhere".into(),
        ShardLookup::All(_) => "all".into(),
    };
    assert_eq!(read("eu"), "-80");
    assert_eq!(read("US"), "80-");
    assert_eq!(read("apac"), "80-");
    assert_eq!(read("mars"), "nowhere");
    assert_eq!(read("eu "), "all");
    let err = ks.shard_for_insert(users, &str_("mars")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sharding value 'mars' is not in the list vindex, so no shard holds it"
    );
    assert_eq!(
        ks.shard_for_insert(users, &str_("us")).unwrap().cluster,
        "c2"
    );
}

#[test]
fn unsharded_keyspaces_keep_todays_behaviour() {
    let map = ShardMap::new(
        "c1".into(),
        vec![Keyspace::unsharded("orders", "c2")],
        &["c1", "c2"],
    )
    .unwrap();
    assert_eq!(map.cluster_for_db(Some("orders")), "c2");
    assert_eq!(map.cluster_for_db(Some("other")), "c1");
    assert_eq!(map.cluster_for_db(None), "c1");
    let ks = map.keyspace("orders").unwrap();
    assert!(!ks.is_sharded());
    assert!(ks.all_shards().is_empty());
    assert_eq!(ks.table("anything"), &TableKind::Unsharded);
    assert_eq!(
        map.to_json(),
        "{\n  \"default_cluster\": \"c1\",\n  \"keyspaces\": [\n    {\n      \"name\": \
         \"orders\",\n      \"default_cluster\": \"c2\"\n    }\n  ]\n}"
    );
}

#[test]
fn toml_config_form_parses() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        keyspaces: Vec<Keyspace>,
    }
    let text = r#"
        [[keyspaces]]
        name = "app"
        default_cluster = "c1"
        shards = [{ name = "-80", cluster = "c1" }, { name = "80-", cluster = "c2" }]

        [[keyspaces.tables]]
        name = "customers"
        kind = "sharded"
        column = "id"
        vindex = "hash"

        [[keyspaces.tables]]
        name = "regions"
        kind = "sharded"
        column = "code"
        vindex = "list"
        values = { eu = "-80", "1" = "80-" }

        [[keyspaces.tables]]
        name = "countries"
        kind = "reference"

        [[keyspaces]]
        name = "legacy"
        default_cluster = "c2"
    "#;
    let cfg: Config = toml::from_str(text).unwrap();
    let map = ShardMap::new("c1".into(), cfg.keyspaces, &["c1", "c2"]).unwrap();
    assert_eq!(map.all_shards("app").len(), 2);
    assert_eq!(map.cluster_for_db(Some("legacy")), "c2");
    assert_eq!(map.table("app", "countries"), &TableKind::Reference);
    assert_eq!(map, ShardMap::from_json(&map.to_json()).unwrap());

    let bad = "[[keyspaces]]\nname = \"a\"\ndefault_cluster = \"c1\"\nshard = []\n";
    let err = toml::from_str::<Config>(bad).err().unwrap().to_string();
    assert!(err.contains("unknown field `shard`"), "{err}");
    let bad = "[[keyspaces]]\nname = \"a\"\ndefault_cluster = \"c1\"\n\
               tables = [{ name = \"t\", kind = \"sharded\", vindex = \"md5\" }]\n";
    let err = toml::from_str::<Config>(bad).err().unwrap().to_string();
    assert!(err.contains("unknown variant `md5`"), "{err}");
}
