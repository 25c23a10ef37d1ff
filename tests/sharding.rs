//! Sharded keyspaces through the router: DDL reaches every shard, rows land on the shard
//! their key hashes to, statements pinned by their key go to one shard, and what the router
//! cannot yet prove correct is refused with error 1235. The shard map is read and replaced
//! through the admin API.

mod common;

use std::time::Duration;

use common::{query_one, shard_of, TestEnv, SHARDS};
use mysql_async::prelude::*;
use serde_json::{json, Value};
use shard_map::{vindex::hash_keyspace_id, KeyValue};

fn expect_1235(r: Result<(), mysql_async::Error>, what: &str) -> String {
    match r {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1235, "{what}: {e:?}");
            e.message
        }
        other => panic!("{what}: expected error 1235, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_their_shard_and_key_lookups_route_to_it() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE countries (code CHAR(2) PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE settings (k INT PRIMARY KEY, v INT)")
        .await
        .unwrap();

    // Text inserts and prepared inserts.
    for id in 1..=60i64 {
        c.query_drop(format!(
            "INSERT INTO customers (id, name) VALUES ({id}, 'n{id}')"
        ))
        .await
        .unwrap();
    }
    for id in 61..=120i64 {
        c.exec_drop(
            "INSERT INTO customers (name, id) VALUES (?, ?)",
            (format!("n{id}"), id),
        )
        .await
        .unwrap();
    }

    // Without a column list the key's position comes from the table itself.
    c.query_drop("INSERT INTO customers VALUES (121, 'n121')")
        .await
        .unwrap();
    c.query_drop("DELETE FROM customers WHERE id = 121")
        .await
        .unwrap();
    assert_eq!(
        c.affected_rows(),
        1,
        "the row went where a lookup by key finds it"
    );

    // Every row is on the shard its id hashes to, and only there.
    let ports = [env.leader_port("c1"), env.leader_port("c2")];
    let mut total = 0;
    for (i, (_, _, cluster, db)) in SHARDS.iter().enumerate() {
        let port = ports[if *cluster == "c1" { 0 } else { 1 }];
        let mut d = env.direct_conn(port, Some(db)).await;
        let ids: Vec<i64> = d.query("SELECT id FROM customers").await.unwrap();
        for id in &ids {
            assert_eq!(shard_of(*id), i, "row {id} in {db}");
        }
        total += ids.len();
    }
    assert_eq!(total, 120, "every row stored exactly once");

    // Lookups by key, text and prepared, return the right rows.
    for id in [1i64, 7, 33, 64, 99, 120] {
        let name: String = query_one(
            &mut c,
            &format!("SELECT name FROM customers WHERE id = {id}"),
        )
        .await;
        assert_eq!(name, format!("n{id}"));
        let name: Option<String> = c
            .exec_first("SELECT name FROM customers WHERE id = ?", (id,))
            .await
            .unwrap();
        assert_eq!(name, Some(format!("n{id}")));
    }
    let none: Option<String> = c
        .query_first("SELECT name FROM customers WHERE id = 100000")
        .await
        .unwrap();
    assert_eq!(none, None);
    c.query_drop("UPDATE customers SET name = 'changed' WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    let name: String = query_one(&mut c, "SELECT name FROM customers WHERE id = 5").await;
    assert_eq!(name, "changed");
    c.query_drop("DELETE FROM customers WHERE id = 6")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);

    // A transaction on one shard works as usual.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE customers SET name = 'tx' WHERE id = 8")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let name: String = query_one(&mut c, "SELECT name FROM customers WHERE id = 8").await;
    assert_eq!(name, "tx");

    // Unsharded tables of the keyspace live on its default cluster.
    c.query_drop("INSERT INTO settings VALUES (1, 10)")
        .await
        .unwrap();
    let mut d = env.direct_conn(ports[0], Some("app")).await;
    let v: i64 = query_one(&mut d, "SELECT v FROM settings WHERE k = 1").await;
    assert_eq!(v, 10);

    // Reference tables are read from a shard and written to every shard (atomically: see
    // tests/sharding_xa.rs).
    let n: i64 = query_one(&mut c, "SELECT COUNT(*) FROM countries").await;
    assert_eq!(n, 0);
    c.query_drop("INSERT INTO countries VALUES ('fr')")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    c.query_drop("DELETE FROM countries").await.unwrap();

    // Plain reads over every shard: the rows of all shards, each once, text and prepared.
    let mut all: Vec<i64> = c.query("SELECT id FROM customers").await.unwrap();
    all.sort();
    let want: Vec<i64> = (1..=120).filter(|id| *id != 6).collect();
    assert_eq!(all, want);
    let mut big: Vec<(i64, String)> = c
        .exec("SELECT id, name FROM customers WHERE id > ?", (100,))
        .await
        .unwrap();
    big.sort();
    assert_eq!(big.len(), 20);
    assert_eq!(big[0], (101, "n101".to_string()));
    // LIMIT without ORDER BY: any n existing rows, each once.
    let some: Vec<i64> = c.query("SELECT id FROM customers LIMIT 7").await.unwrap();
    assert_eq!(some.len(), 7);
    let distinct: std::collections::BTreeSet<_> = some.iter().collect();
    assert_eq!(distinct.len(), 7);
    assert!(some.iter().all(|id| want.contains(id)), "{some:?}");
    let none: Vec<i64> = c
        .query("SELECT id FROM customers WHERE id > 5000")
        .await
        .unwrap();
    assert!(none.is_empty());

    // COUNT over several shards: the shards' counts summed, text and prepared.
    let n: i64 = query_one(&mut c, "SELECT COUNT(*) FROM customers").await;
    assert_eq!(n, 119);
    let counts: Option<(i64, i64)> = c
        .exec_first(
            "SELECT COUNT(*), COUNT(name) FROM customers WHERE id > ?",
            (100,),
        )
        .await
        .unwrap();
    assert_eq!(counts, Some((20, 20)));
    let n: i64 = query_one(
        &mut c,
        "SELECT COUNT(*) AS n FROM customers WHERE id > 5000",
    )
    .await;
    assert_eq!(n, 0);

    // What would need merging or a cross-shard write is refused, naming why.
    // Other aggregates are merged by the router (see tests/sharding_merge.rs).
    let sum: i64 = query_one(&mut c, "SELECT SUM(id) FROM customers").await;
    assert_eq!(sum, want.iter().sum::<i64>());
    // ORDER BY over several shards: the shards' sorted results merged, text and prepared.
    let sorted: Vec<i64> = c
        .query("SELECT id FROM customers ORDER BY id")
        .await
        .unwrap();
    assert_eq!(sorted, want);
    let top: Vec<(i64, String)> = c
        .query("SELECT id, name FROM customers ORDER BY id DESC LIMIT 5")
        .await
        .unwrap();
    let top_ids: Vec<i64> = top.iter().map(|r| r.0).collect();
    assert_eq!(top_ids, vec![120, 119, 118, 117, 116]);
    let next: Vec<i64> = c
        .exec(
            "SELECT id FROM customers WHERE id > ? ORDER BY id LIMIT 3",
            (100,),
        )
        .await
        .unwrap();
    assert_eq!(next, vec![101, 102, 103]);
    // Strings in a case-insensitive collation, and sort columns outside the result, are
    // merged by their weight strings.
    let by_name: Vec<(i64, String)> = c
        .query("SELECT id, name FROM customers ORDER BY name")
        .await
        .unwrap();
    let names: Vec<&str> = by_name.iter().map(|r| r.1.as_str()).collect();
    assert!(names.is_sorted(), "{names:?}");
    let mut got: Vec<i64> = by_name.iter().map(|r| r.0).collect();
    got.sort();
    assert_eq!(got, want);
    let ids: Vec<i64> = c
        .query("SELECT id FROM customers ORDER BY name")
        .await
        .unwrap();
    assert_eq!(ids, by_name.iter().map(|r| r.0).collect::<Vec<_>>());
    expect_1235(
        c.query_drop("UPDATE customers SET id = 1000 WHERE id = 1")
            .await,
        "key update",
    );
    expect_1235(
        c.query_drop("DELETE FROM customers WHERE id > 10 ORDER BY id LIMIT 1")
            .await,
        "multi-shard delete with a limit",
    );
    expect_1235(
        c.query_drop("INSERT INTO customers (id) VALUES (1 + 1), (7)")
            .await,
        "insert with an expression as the key",
    );
    // The session is fine after refusals.
    let one: i64 = query_one(&mut c, "SELECT 1").await;
    assert_eq!(one, 1);
    drop((c, d));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_map_is_read_and_replaced_through_the_api() {
    let env = TestEnv::start_sharded(2, 2).await;
    let http = common::http();
    let url = env.admin_url("/api/v1/shard-map");
    let body: Value = http
        .get(&url)
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["version"], 1);
    let ks = &body["keyspaces"][0];
    assert_eq!(ks["name"], "app");
    assert_eq!(
        ks["shards"],
        json!([{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}])
    );

    // An invalid map is refused whole, naming the problem.
    let bad = json!({"keyspaces": [{"name": "app", "default_cluster": "c1",
        "shards": [{"name": "-80", "cluster": "c1"}, {"name": "40-", "cluster": "c2"}],
        "tables": []}]});
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("overlap"), "{e}");
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http.put(&url).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A valid one becomes version 2 and applies to sessions at once.
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE items (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("SELECT * FROM items").await.unwrap();
    let good = json!({"keyspaces": [{"name": "app", "default_cluster": "c1",
        "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
        "tables": [{"name": "items", "kind": "sharded", "column": "id", "vindex": "hash"}]}]});
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["version"], 2);
    // A change based on version 1 (what GET returned before) is refused now: 409.
    let mut stale = good.clone();
    stale["version"] = json!(1);
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["version"], 2, "{e}");
    expect_1235(
        c.query_drop("SELECT GROUP_CONCAT(id) FROM items").await,
        "items is sharded now",
    );
    // Persisted: the store has version 2.
    let stored = std::fs::read_to_string(env.opts.dir.join("shard-map/shard_map.json")).unwrap();
    assert!(stored.contains("items"), "{stored}");

    // The history: both versions kept, each readable, and what changed between them.
    let get = |path: &str| {
        let r = http
            .get(env.admin_url(path))
            .bearer_auth("test-token")
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, versions) = get("/api/v1/shard-map/versions").await;
    assert_eq!(status, 200);
    assert_eq!(versions, json!({"current": 2, "versions": [1, 2]}));
    let (status, v1) = get("/api/v1/shard-map/versions/1").await;
    assert_eq!(status, 200);
    assert_eq!(v1["version"], 1);
    assert!(
        v1["keyspaces"][0]["tables"].as_array().unwrap().len() == 3,
        "{v1}"
    );
    assert!(!v1.to_string().contains("items"), "{v1}");
    let (status, _) = get("/api/v1/shard-map/versions/7").await;
    assert_eq!(status, 404);
    let (status, d) = get("/api/v1/shard-map/diff").await;
    assert_eq!(status, 200);
    assert_eq!((d["from"].clone(), d["to"].clone()), (json!(1), json!(2)));
    let changes = d["changes"].to_string();
    assert!(changes.contains("items"), "{d}");
    let (status, same) = get("/api/v1/shard-map/diff?from=2&to=2").await;
    assert_eq!(status, 200);
    assert_eq!(same["changes"], json!([]));
    let (status, _) = get("/api/v1/shard-map/diff?from=1&to=9").await;
    assert_eq!(status, 404);
    // A proposed map: what it would change, nothing applied.
    let mut moved = good.clone();
    moved["keyspaces"][0]["shards"][1]["cluster"] = json!("c1");
    let r = http
        .post(env.admin_url("/api/v1/shard-map/diff"))
        .bearer_auth("test-token")
        .json(&moved)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert!(d["changes"].to_string().contains("80-"), "{d}");
    let (_, versions) = get("/api/v1/shard-map/versions").await;
    assert_eq!(versions["current"], 2, "a diff applies nothing");
    let r = http
        .post(env.admin_url("/api/v1/shard-map/diff"))
        .bearer_auth("test-token")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The topology's version and epochs, as in the full listing.
    let (status, tv) = get("/api/v1/topology/version").await;
    assert_eq!(status, 200);
    let (_, all) = get("/api/v1/clusters").await;
    assert_eq!(tv["version"], all["version"]);
    assert_eq!(tv["epochs"].as_object().unwrap().len(), 2, "{tv}");
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_clusters_and_use_each_shards_database() {
    // Four shards on two clusters: -40 and 80-c0 share c1, in databases of their own.
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    let on = |shard: usize| {
        (1..1000i64)
            .filter(move |id| shard_of(*id) == shard)
            .take(2)
            .collect::<Vec<_>>()
    };
    let (s0, s2, s1) = (on(0), on(2), on(1));
    // A transaction over two shards of the same cluster commits both, each row in its own
    // shard's database.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({}, 'a')",
        s0[0]
    ))
    .await
    .unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({}, 'b')",
        s2[0]
    ))
    .await
    .unwrap();
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {}", s0[0]),
    )
    .await;
    assert_eq!(n, 1);
    // A shard on the other cluster joins the transaction (a distributed one).
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({}, 'c')",
        s1[0]
    ))
    .await
    .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let mut d1 = env
        .direct_conn(env.leader_port("c2"), Some("app_40_80"))
        .await;
    let ids1: Vec<i64> = d1.query("SELECT id FROM customers").await.unwrap();
    assert_eq!(ids1, vec![s1[0]]);
    let port = env.leader_port("c1");
    let mut d0 = env.direct_conn(port, Some("app_00_40")).await;
    let mut d2 = env.direct_conn(port, Some("app_80_c0")).await;
    let ids0: Vec<i64> = d0.query("SELECT id FROM customers").await.unwrap();
    let ids2: Vec<i64> = d2.query("SELECT id FROM customers").await.unwrap();
    assert_eq!((ids0, ids2), (vec![s0[0]], vec![s2[0]]));
    // A rolled-back transaction leaves nothing.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({}, 'x')",
        s0[1]
    ))
    .await
    .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {}", s0[1]),
    )
    .await;
    assert_eq!(n, 0);
    drop((c, d0, d2));
    env.stop().await;
}

/// Rows as sorted text, for order-insensitive comparison.
async fn rows_of(c: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<Vec<Option<String>>> = rows
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_the_shard_key_and_with_reference_tables_match_one_server() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    let mut r = env.direct_conn(env.leader_port("c1"), None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    r.query_drop("CREATE DATABASE refdb").await.unwrap();
    r.query_drop("USE refdb").await.unwrap();
    let schema = [
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20), country CHAR(2))",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT, total INT)",
        "CREATE TABLE countries (code CHAR(2) PRIMARY KEY, label VARCHAR(20))",
    ];
    for ddl in schema {
        c.query_drop(ddl).await.unwrap();
        r.query_drop(ddl).await.unwrap();
    }
    // The reference table's rows, written to every shard database directly.
    let countries =
        "INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany'), ('it', 'Italy')";
    for (_, _, cluster, db) in SHARDS {
        let mut d = env.direct_conn(env.leader_port(cluster), Some(db)).await;
        d.query_drop(countries).await.unwrap();
    }
    r.query_drop(countries).await.unwrap();
    let codes = ["fr", "de", "it", "es"];
    for id in 1..=40i64 {
        let ins = format!(
            "INSERT INTO customers VALUES ({id}, 'c{id}', '{}')",
            codes[id as usize % 4]
        );
        c.query_drop(&ins).await.unwrap();
        r.query_drop(&ins).await.unwrap();
        // Customers divisible by 5 have no orders.
        for k in 0..(if id % 5 == 0 { 0 } else { id % 3 + 1 }) {
            let ins = format!(
                "INSERT INTO orders VALUES ({}, {id}, {})",
                id * 10 + k,
                (id * 7 + k) % 50
            );
            c.query_drop(&ins).await.unwrap();
            r.query_drop(&ins).await.unwrap();
        }
    }
    for sql in [
        "SELECT c.id, c.name, o.id, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT c.id, o.id FROM customers c LEFT JOIN orders o ON o.customer_id = c.id",
        "SELECT c.id, o.id FROM orders o RIGHT JOIN customers c ON c.id = o.customer_id",
        "SELECT c.id, o.total FROM customers c, orders o WHERE c.id = o.customer_id AND o.total > 20",
        "SELECT c.id, k.label FROM customers c JOIN countries k ON k.code = c.country",
        "SELECT c.id, k.label FROM customers c LEFT JOIN countries k ON k.code = c.country",
        "SELECT c.name, o.total, k.label FROM customers c JOIN orders o ON o.customer_id = c.id \
         LEFT JOIN countries k ON k.code = c.country WHERE o.total < 30",
        "SELECT c.id, o.id FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 7",
        "SELECT c.id, o.id FROM customers c JOIN orders o ON o.customer_id = c.id \
         WHERE o.customer_id IN (3, 8, 13, 21)",
        "SELECT k.code, k.label FROM countries k",
    ] {
        assert_eq!(rows_of(&mut c, sql).await, rows_of(&mut r, sql).await, "{sql}");
    }
    // Ordered and limited over shards: the merge keeps the order.
    let sql = "SELECT o.id, c.name FROM customers c JOIN orders o ON o.customer_id = c.id \
               ORDER BY o.id DESC LIMIT 7";
    let a: Vec<(i64, String)> = c.query(sql).await.unwrap();
    let b: Vec<(i64, String)> = r.query(sql).await.unwrap();
    assert_eq!(a, b);
    // Joins the router can't prove are refused.
    for (sql, why) in [
        (
            "SELECT * FROM customers c JOIN orders o ON o.id = c.id",
            "a join of sharded tables `customers` and `orders` without an equality of their shard keys",
        ),
        (
            "SELECT * FROM countries k LEFT JOIN customers c ON c.country = k.code",
            "an outer join over shards that keeps every row of a reference table, or whose ON \
             does not equate the shard keys of `customers` and the table it joins",
        ),
    ] {
        let msg = expect_1235(c.query_drop(sql).await, sql);
        assert!(msg.contains(why), "{sql}: {msg}");
    }
    drop((c, r));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_follow_a_failover_of_their_cluster() {
    // Two shards, one per cluster, each cluster with a replica.
    let mut env = TestEnv::start_sharded_replicated(2, 1, 2).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    let on_c2: Vec<i64> = (1..1000i64)
        .filter(|id| hash_keyspace_id(&KeyValue::Int(*id)).unwrap() >= 0x8000_0000_0000_0000)
        .take(3)
        .collect();
    c.query_drop(format!(
        "INSERT INTO customers VALUES ({}, 'before')",
        on_c2[0]
    ))
    .await
    .unwrap();
    let (old_leader, old_epoch) = {
        let t = env.app().topology.load();
        let c2 = t.cluster("c2").unwrap();
        (c2.leader.clone().unwrap(), c2.epoch)
    };
    env.local_mut().kill_node("c2", &old_leader).unwrap();
    let new_leader = common::eventually(Duration::from_secs(30), "a new leader of c2", || async {
        let t = env.app().topology.load();
        let c2 = t.cluster("c2").unwrap();
        (c2.epoch > old_epoch)
            .then(|| c2.leader.clone())
            .flatten()
            .filter(|l| *l != old_leader)
    })
    .await;
    // The shard's writes and reads now reach the new leader.
    let id = on_c2[1];
    common::eventually(
        Duration::from_secs(20),
        "a write to the shard on c2",
        || {
            let opts = env.router_opts(Some("app"));
            async move {
                let mut c = mysql_async::Conn::new(opts).await.ok()?;
                c.query_drop(format!(
                    "INSERT IGNORE INTO customers VALUES ({id}, 'after')"
                ))
                .await
                .ok()
            }
        },
    )
    .await;
    let port: u16 = new_leader.rsplit(':').next().unwrap().parse().unwrap();
    let mut d = env.direct_conn(port, Some("app")).await;
    let mut names: Vec<String> = d
        .query(format!(
            "SELECT name FROM customers WHERE id IN ({}, {id})",
            on_c2[0]
        ))
        .await
        .unwrap();
    names.sort();
    assert_eq!(names, vec!["after".to_string(), "before".into()]);
    let mut c = env.router_conn(Some("app")).await;
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {id}"),
    )
    .await;
    assert_eq!(n, 1);
    drop((c, d));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_names_that_an_alias_or_a_joined_table_shadows_is_exact() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    let mut r = env.direct_conn(env.leader_port("c1"), None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    r.query_drop("CREATE DATABASE refdb").await.unwrap();
    r.query_drop("USE refdb").await.unwrap();
    for ddl in [
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20), country CHAR(2))",
        "CREATE TABLE countries (code CHAR(2) PRIMARY KEY, name VARCHAR(20))",
    ] {
        c.query_drop(ddl).await.unwrap();
        r.query_drop(ddl).await.unwrap();
    }
    let countries = "INSERT INTO countries VALUES ('fr', 'zz-France'), ('de', 'aa-Germany')";
    for (_, _, cluster, db) in SHARDS {
        let mut d = env.direct_conn(env.leader_port(cluster), Some(db)).await;
        d.query_drop(countries).await.unwrap();
    }
    r.query_drop(countries).await.unwrap();
    for id in 1..=30i64 {
        let ins = format!(
            "INSERT INTO customers VALUES ({id}, 'n{:02}', '{}')",
            (id * 7) % 31,
            if id % 2 == 0 { "fr" } else { "de" }
        );
        c.query_drop(&ins).await.unwrap();
        r.query_drop(&ins).await.unwrap();
    }
    for sql in [
        // The alias `name` is the id; `customers.name` is the table's column.
        "SELECT id AS name, name AS n2 FROM customers ORDER BY customers.name LIMIT 9",
        "SELECT id AS name, name AS n2 FROM customers ORDER BY name DESC LIMIT 9",
        // Two result columns called `name`: ordered by the customer's.
        "SELECT c.id, c.name, k.name FROM customers c JOIN countries k ON k.code = c.country \
         ORDER BY c.name LIMIT 12",
        "SELECT c.id, k.name FROM customers c JOIN countries k ON k.code = c.country \
         ORDER BY k.name, c.id LIMIT 12",
    ] {
        let a: Vec<mysql_async::Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let b: Vec<mysql_async::Row> = r.query(sql).await.unwrap();
        let text = |rows: Vec<mysql_async::Row>| {
            rows.into_iter()
                .map(|r| {
                    r.unwrap()
                        .into_iter()
                        .map(|v| v.as_sql(true))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(text(a), text(b), "{sql}");
    }
    drop((c, r));
    env.stop().await;
}
