//! Online moves through the admin API with applications writing through the router the whole
//! time: a shard split into two on other clusters, switched, switched back, switched again and
//! completed, checked against an oracle of acknowledged writes (nothing lost, duplicated or
//! resurrected), a transfer invariant, and where every row lives.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, http, switchyard_cli, TestEnv};
use mysql_async::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shard_map::{vindex::hash_keyspace_id, KeyValue};

/// id → the row's `name` as last acknowledged (`None`: deleted).
type Oracle = Arc<Mutex<BTreeMap<i64, Option<String>>>>;

/// Errors clients saw, by code, for autocommit statements and for transactions.
#[derive(Default, Debug)]
struct Seen {
    autocommit_errors: Vec<String>,
    txn_errors: Vec<String>,
    writes: u64,
    transfers: u64,
}

async fn api(env: &TestEnv, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = env.admin_url(path);
    let c = http();
    let req = match method {
        "GET" => c.get(url),
        _ => c.post(url),
    }
    .bearer_auth("test-token");
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.expect("admin API answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Single-row writes on ids `base..base+300` of `table`, each acknowledged one recorded.
async fn writer(
    env_port: u16,
    table: &'static str,
    base: i64,
    oracle: Oracle,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let opts = common::opts_for(env_port, "app", "app", Some("app"));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(base as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = base + rng.random_range(0..300);
        let name = format!("w{base}-{n}");
        let exists = oracle.lock().unwrap().get(&id).cloned().flatten().is_some();
        let (sql, after) = match (exists, rng.random_range(0..3)) {
            (false, _) => (
                format!("INSERT INTO {table} (id, name) VALUES ({id}, '{name}')"),
                Some(name),
            ),
            (true, 0) => (format!("DELETE FROM {table} WHERE id = {id}"), None),
            (true, _) => (
                format!("UPDATE {table} SET name = '{name}' WHERE id = {id}"),
                Some(name),
            ),
        };
        match c.query_drop(&sql).await {
            Ok(()) => {
                assert_eq!(c.affected_rows(), 1, "{sql}");
                oracle.lock().unwrap().insert(id, after);
                seen.lock().unwrap().writes += 1;
            }
            Err(e) => {
                seen.lock()
                    .unwrap()
                    .autocommit_errors
                    .push(format!("{sql}: {e}"));
                // The outcome is not known: read it back (through the router) before going on.
                let now: Option<String> = c
                    .query_first(format!("SELECT name FROM {table} WHERE id = {id}"))
                    .await
                    .unwrap();
                oracle.lock().unwrap().insert(id, now);
            }
        }
    }
}

/// Transfers between accounts 1..=20 in transactions: their balances always sum to zero.
async fn transfers(env_port: u16, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let opts = common::opts_for(env_port, "app", "app", Some("app"));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    while !stop.load(Ordering::Relaxed) {
        let a: i64 = rng.random_range(1..=20);
        let b: i64 = rng.random_range(1..=20);
        let amount: i64 = rng.random_range(1..100);
        let r = async {
            c.query_drop("BEGIN").await?;
            c.query_drop(format!(
                "UPDATE customers SET balance = balance - {amount} WHERE id = {a}"
            ))
            .await?;
            c.query_drop(format!(
                "UPDATE customers SET balance = balance + {amount} WHERE id = {b}"
            ))
            .await?;
            c.query_drop("COMMIT").await
        }
        .await;
        match r {
            Ok(()) => seen.lock().unwrap().transfers += 1,
            Err(e) => {
                seen.lock().unwrap().txn_errors.push(e.to_string());
                eprintln!("transfer failed: {e}");
                let _ = c.query_drop("ROLLBACK").await;
            }
        }
    }
}

/// The rows the oracle holds.
fn expected(oracle: &Oracle) -> BTreeMap<i64, String> {
    oracle
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(id, v)| v.clone().map(|v| (*id, v)))
        .collect()
}

/// Through the router, `table` holds exactly the acknowledged rows; directly, each shard
/// only the keys of its range; the old place (`c1`) none.
async fn check_moved(env: &TestEnv, c: &mut mysql_async::Conn, table: &str, oracle: &Oracle) {
    let got: Vec<(i64, String)> = c
        .query(format!("SELECT id, name FROM {table} ORDER BY id"))
        .await
        .unwrap();
    let got: BTreeMap<i64, String> = got.into_iter().collect();
    let want = expected(oracle);
    assert_eq!(got.len(), want.len(), "row count through the router");
    assert_eq!(got, want, "rows through the router");
    for (cluster, low) in [("c2", true), ("c3", false)] {
        let mut d = env.direct_conn(env.leader_port(cluster), Some("app")).await;
        let ids: Vec<i64> = d.query(format!("SELECT id FROM {table}")).await.unwrap();
        assert!(!ids.is_empty());
        assert!(
            ids.iter().all(|id| shard_is_low(*id) == low),
            "{cluster} holds only its range"
        );
    }
    let mut old = env.direct_conn(env.leader_port("c1"), Some("app")).await;
    let left: u64 = old
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        left, 0,
        "complete deleted the moved rows from the old place"
    );
}

fn shard_is_low(id: i64) -> bool {
    hash_keyspace_id(&KeyValue::Int(id)).unwrap() < 0x8000_0000_0000_0000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_split_under_writes_switches_both_ways_and_completes_with_nothing_lost() {
    let env = TestEnv::start_sharded(3, 1).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(40), \
         balance DECIMAL(12,2) NOT NULL DEFAULT 0, updated DATETIME(6) DEFAULT NOW(6), note BLOB)",
    )
    .await
    .unwrap();
    c.query_drop("CREATE TABLE countries (id INT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    for i in 1..=5 {
        c.query_drop(format!("INSERT INTO countries VALUES ({i}, 'country {i}')"))
            .await
            .unwrap();
    }
    let oracle: Oracle = Arc::new(Mutex::new(BTreeMap::new()));
    for chunk in 0..10 {
        let ids: Vec<i64> = (1..=100).map(|i| chunk * 100 + i).collect();
        let values: Vec<String> = ids
            .iter()
            .map(|id| format!("({id}, 'seed {id}', 0, x'{id:04x}')"))
            .collect();
        c.query_drop(format!(
            "INSERT INTO customers (id, name, balance, note) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
        let mut o = oracle.lock().unwrap();
        for id in ids {
            o.insert(id, Some(format!("seed {id}")));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = env.router_port();
    let mut tasks: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(writer(
                port,
                "customers",
                100_000 * (w + 1),
                oracle.clone(),
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tasks.push(tokio::spawn(transfers(port, seen.clone(), stop.clone())));

    // Refused plans change nothing.
    let (status, body) = api(
        &env,
        "POST",
        "/api/v1/moves",
        Some(
            json!({"name": "bad", "kind": "reshard", "keyspace": "app", "from": ["-"],
                    "to": [{"name": "-80", "cluster": "c2"}]}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cover exactly"),
        "{body}"
    );

    let (status, body) = api(
        &env,
        "POST",
        "/api/v1/moves",
        Some(
            json!({"name": "split", "kind": "reshard", "keyspace": "app", "from": ["-"],
                    "to": [{"name": "-80", "cluster": "c2"}, {"name": "80-", "cluster": "c3"}]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(&env, "POST", "/api/v1/moves/split/switch-writes", None).await;
    assert_eq!(
        status, 422,
        "a switch before the copy and a diff is refused: {body}"
    );

    eventually(Duration::from_secs(120), "the copy to finish", || async {
        let (_, s) = api(&env, "GET", "/api/v1/moves/split", None).await;
        (s["copied"] == json!(true)).then_some(())
    })
    .await;

    let mut pauses = Vec::new();
    for (step, path) in [
        ("forward", "/api/v1/moves/split/switch-writes"),
        ("back", "/api/v1/moves/split/reverse"),
        ("forward again", "/api/v1/moves/split/switch-writes"),
    ] {
        if step != "back" {
            let (status, d) = api(&env, "POST", "/api/v1/moves/split/diff", None).await;
            assert_eq!(status, 200, "{d}");
            assert_eq!(d["clean"], json!(true), "diff before {step}: {d}");
        }
        // Let the writers run a little on the current layout.
        let before = seen.lock().unwrap().writes;
        eventually(Duration::from_secs(30), "writes to go on", || async {
            (seen.lock().unwrap().writes > before + 50).then_some(())
        })
        .await;
        let (status, body) = api(&env, "POST", path, None).await;
        assert_eq!(status, 200, "{step}: {body}");
        let cut = body["cutovers"].as_array().unwrap().last().unwrap().clone();
        pauses.push((step, cut["pause_ms"].as_u64().unwrap()));
        eprintln!("{step}: {cut}");
    }
    let metrics = env.metrics().await;
    for m in [
        "switchyard_move_last_cutover_pause_ms{move=\"split\"}",
        "switchyard_move_transactions_applied{move=\"split\"",
    ] {
        assert!(metrics.contains(m), "{m} in /metrics");
    }
    let before = seen.lock().unwrap().writes;
    eventually(
        Duration::from_secs(30),
        "writes on the new shards",
        || async { (seen.lock().unwrap().writes > before + 50).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (status, body) = api(&env, "POST", "/api/v1/moves/split/complete", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("completed"));

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "writes {}, transfers {}, pauses {pauses:?}, autocommit errors {:?}, transaction errors {}",
        seen.writes,
        seen.transfers,
        seen.autocommit_errors,
        seen.txn_errors.len()
    );
    assert!(
        seen.autocommit_errors.is_empty(),
        "autocommit statements saw errors at the cutovers: {:?}",
        seen.autocommit_errors
    );
    assert!(seen.transfers > 10, "the transactions ran");

    check_moved(&env, &mut c, "customers", &oracle).await;
    let sum: String = c
        .query_first("SELECT SUM(balance) FROM customers WHERE id BETWEEN 1 AND 20")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sum, "0.00", "transfers neither lost nor doubled");

    for cluster in ["c2", "c3"] {
        let mut d = env.direct_conn(env.leader_port(cluster), Some("app")).await;
        let countries: u64 = d
            .query_first("SELECT COUNT(*) FROM countries")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(countries, 5, "{cluster} has the reference table");
    }
    let (_, map) = api(&env, "GET", "/api/v1/shard-map", None).await;
    let shards: Vec<&str> = map["keyspaces"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(shards, ["-80", "80-"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_tables_shards_an_unsharded_table_under_writes() {
    let env = TestEnv::start_sharded(3, 1).await;
    // Shards on c2 and c3, the unsharded tables on c1 (set before any data).
    let (status, body) = api(&env, "GET", "/api/v1/shard-map", None).await;
    assert_eq!(status, 200);
    let mut map = body.clone();
    map["keyspaces"][0]["shards"] = json!([
        {"name": "-80", "cluster": "c2"},
        {"name": "80-", "cluster": "c3"}
    ]);
    let r = http()
        .put(env.admin_url("/api/v1/shard-map"))
        .bearer_auth("test-token")
        .json(&map)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(40))")
        .await
        .unwrap();
    let oracle: Oracle = Arc::new(Mutex::new(BTreeMap::new()));
    let values: Vec<String> = (1..=500).map(|id| format!("({id}, 'seed {id}')")).collect();
    c.query_drop(format!("INSERT INTO users VALUES {}", values.join(", ")))
        .await
        .unwrap();
    for id in 1..=500 {
        oracle
            .lock()
            .unwrap()
            .insert(id, Some(format!("seed {id}")));
    }
    let mut d1 = env.direct_conn(env.leader_port("c1"), Some("app")).await;
    let on_c1: u64 = d1
        .query_first("SELECT COUNT(*) FROM users")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        on_c1, 500,
        "an unsharded table lives on the default cluster"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = env.router_port();
    let tasks: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(writer(
                port,
                "users",
                100_000 * (w + 1),
                oracle.clone(),
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Through the command line this time.
    let (code, out, err) = switchyard_cli(
        &env,
        &[
            "movetables",
            "create",
            "users",
            "--keyspace",
            "app",
            "--table",
            "users:id:hash",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("move users: streaming"), "{out}");
    eventually(Duration::from_secs(120), "the copy to finish", || async {
        let (_, s) = api(&env, "GET", "/api/v1/moves/users", None).await;
        (s["copied"] == json!(true)).then_some(())
    })
    .await;
    let (code, out, err) = switchyard_cli(&env, &["movetables", "diff", "users"]).await;
    assert_eq!(code, 0, "a clean diff: {out}{err}");
    let (code, out, err) = switchyard_cli(&env, &["movetables", "switch-writes", "users"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("move users: switched") && out.contains("writes paused"),
        "{out}"
    );
    let (code, out, _) = switchyard_cli(&env, &["movetables", "cancel", "users"]).await;
    assert_ne!(code, 0, "a switched move is not cancelled: {out}");
    let before = seen.lock().unwrap().writes;
    eventually(Duration::from_secs(30), "writes on the shards", || async {
        (seen.lock().unwrap().writes > before + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (status, body) = api(&env, "POST", "/api/v1/moves/users/complete", None).await;
    assert_eq!(status, 200, "{body}");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.autocommit_errors.is_empty(),
        "{:?}",
        seen.autocommit_errors
    );

    check_moved(&env, &mut c, "users", &oracle).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_resumes_after_a_restart_with_what_was_written_meanwhile() {
    let mut env = TestEnv::start_sharded(3, 1).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(40))")
        .await
        .unwrap();
    let oracle: Oracle = Arc::new(Mutex::new(BTreeMap::new()));
    let values: Vec<String> = (1..=300).map(|id| format!("({id}, 'seed {id}')")).collect();
    c.query_drop(format!(
        "INSERT INTO customers VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    for id in 1..=300 {
        oracle
            .lock()
            .unwrap()
            .insert(id, Some(format!("seed {id}")));
    }
    let (code, out, err) = switchyard_cli(
        &env,
        &[
            "reshard",
            "create",
            "split",
            "--keyspace",
            "app",
            "--from",
            "-",
            "--to",
            "-80=c2",
            "--to",
            "80-=c3",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(120), "the copy to finish", || async {
        let (_, s) = api(&env, "GET", "/api/v1/moves/split", None).await;
        (s["copied"] == json!(true)).then_some(())
    })
    .await;
    drop(c);
    env.app.take().expect("app").shutdown().await;

    // While switchyard is down, the old shard changes directly.
    let mut d1 = env.direct_conn(env.leader_port("c1"), Some("app")).await;
    d1.query_drop("UPDATE customers SET name = 'changed' WHERE id <= 50")
        .await
        .unwrap();
    d1.query_drop("DELETE FROM customers WHERE id > 280")
        .await
        .unwrap();
    d1.query_drop("INSERT INTO customers VALUES (1000, 'while down')")
        .await
        .unwrap();
    {
        let mut o = oracle.lock().unwrap();
        for id in 1..=50 {
            o.insert(id, Some("changed".into()));
        }
        for id in 281..=300 {
            o.insert(id, None);
        }
        o.insert(1000, Some("while down".into()));
    }

    let config = switchyard::sandbox::config_for(env.local(), &env.opts);
    env.app = Some(switchyard::App::start(config).await.expect("restarts"));
    assert!(env.app().wait_ready(Duration::from_secs(30)).await);
    let (code, out, err) = switchyard_cli(&env, &["reshard", "status", "split"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("move split: streaming"),
        "the move is back: {out}"
    );
    eventually(
        Duration::from_secs(60),
        "a clean diff after the restart",
        || async {
            let (status, d) = api(&env, "POST", "/api/v1/moves/split/diff", None).await;
            (status == 200 && d["clean"] == json!(true)).then_some(())
        },
    )
    .await;
    let (status, body) = api(&env, "POST", "/api/v1/moves/split/switch-writes", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(&env, "POST", "/api/v1/moves/split/complete", None).await;
    assert_eq!(status, 200, "{body}");
    let mut c = env.router_conn(Some("app")).await;
    check_moved(&env, &mut c, "customers", &oracle).await;
    env.stop().await;
}
