//! What distributed transactions cost: one client, one transaction at a time, each updating
//! one row per shard it touches, on two clusters of a leader and one semi-sync replica with
//! keyspace `app` in 4 shards. Compared: plain BEGIN/COMMIT and XA (one phase, two phases)
//! straight on the servers, and the same transactions through the router (which makes every
//! transaction in a sharded keyspace XA: one phase for one cluster, two phases and a logged
//! decision for two).
//!
//! `cargo bench --bench xa`; `SWITCHYARD_BENCH_TXNS` (default 300) transactions per case.
//! Results go to stdout as a Markdown table.

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use shard_map::{vindex::hash_keyspace_id, KeyValue};
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::App;

fn opts(port: u16, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// An id whose hash falls in [lo, hi) of the keyspace.
fn id_in(lo: u64, hi: u64) -> i64 {
    (1..)
        .find(|i| {
            let k = hash_keyspace_id(&KeyValue::Int(*i)).unwrap();
            k >= lo && k < hi
        })
        .unwrap()
}

struct Case {
    name: &'static str,
    micros: Vec<u128>,
}

impl Case {
    fn row(&mut self) -> String {
        self.micros.sort_unstable();
        let n = self.micros.len();
        let median = self.micros[n / 2];
        let p99 = self.micros[(n * 99 / 100).min(n - 1)];
        let mean = self.micros.iter().sum::<u128>() / n as u128;
        format!("| {} | {median} | {p99} | {mean} |", self.name)
    }
}

/// Runs `$body` (with `$i` the iteration) `n / 10` times to warm up, then `n` times timed.
macro_rules! timed {
    ($name:expr, $n:expr, $i:ident, $body:block) => {{
        let warm = $n / 10;
        let mut micros = Vec::with_capacity($n);
        for $i in 0..warm + $n {
            let t = Instant::now();
            $body
            if $i >= warm {
                micros.push(t.elapsed().as_micros());
            }
        }
        Case { name: $name, micros }
    }};
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("SWITCHYARD_BENCH_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let sopts = SandboxOptions {
        shards: 4,
        ..SandboxOptions::on_free_ports(dir.path(), 2, 1)
    };
    let local = sandbox::provision(&sopts)
        .await
        .expect("MariaDB must be installed: apt-get install -y mariadb-server");
    let app = App::start(sandbox::config_for(&local, &sopts))
        .await
        .unwrap();
    assert!(app.wait_ready(Duration::from_secs(30)).await);
    let port = app.router_port();
    let c1 = local.cluster("c1").unwrap().leader_node().unwrap().port;
    let c2 = local.cluster("c2").unwrap().leader_node().unwrap().port;
    let mut r = Conn::new(opts(port, None)).await.unwrap();
    r.query_drop("CREATE DATABASE app").await.unwrap();
    r.query_drop("USE app").await.unwrap();
    r.query_drop("CREATE TABLE customers (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
        .await
        .unwrap();
    // Shard -40 is app_00_40 on c1, 40-80 is app_40_80 on c2.
    let a = id_in(0, 0x4000_0000_0000_0000);
    let b = id_in(0x4000_0000_0000_0000, 0x8000_0000_0000_0000);
    r.query_drop(format!("INSERT INTO customers VALUES ({a}, 0), ({b}, 0)"))
        .await
        .unwrap();
    let mut d1 = Conn::new(opts(c1, Some("app_00_40"))).await.unwrap();
    let mut d2 = Conn::new(opts(c2, Some("app_40_80"))).await.unwrap();
    let upd = |id: i64| format!("UPDATE customers SET balance = balance + 1 WHERE id = {id}");

    let mut cases = Vec::new();
    cases.push(timed!("direct, autocommit UPDATE", n, _i, {
        d1.query_drop(upd(a)).await.unwrap();
    }));
    cases.push(timed!("direct, BEGIN + UPDATE + COMMIT", n, _i, {
        d1.query_drop("BEGIN").await.unwrap();
        d1.query_drop(upd(a)).await.unwrap();
        d1.query_drop("COMMIT").await.unwrap();
    }));
    cases.push(timed!(
        "direct, XA one phase (START, UPDATE, END + COMMIT ONE PHASE)",
        n,
        i,
        {
            d1.query_drop(format!("XA START 'b1-{i}'")).await.unwrap();
            d1.query_drop(upd(a)).await.unwrap();
            d1.query_drop(format!("XA END 'b1-{i}'; XA COMMIT 'b1-{i}' ONE PHASE"))
                .await
                .unwrap();
        }
    ));
    cases.push(timed!(
        "direct, XA two phases on c1 and c2 (no decision log)",
        n,
        i,
        {
            d1.query_drop(format!("XA START 'b2-{i}'")).await.unwrap();
            d1.query_drop(upd(a)).await.unwrap();
            d2.query_drop(format!("XA START 'b2-{i}'")).await.unwrap();
            d2.query_drop(upd(b)).await.unwrap();
            let prepare = format!("XA END 'b2-{i}'; XA PREPARE 'b2-{i}'");
            let (x, y) = tokio::join!(d1.query_drop(&prepare), d2.query_drop(&prepare));
            x.unwrap();
            y.unwrap();
            let commit = format!("XA COMMIT 'b2-{i}'");
            let (x, y) = tokio::join!(d1.query_drop(&commit), d2.query_drop(&commit));
            x.unwrap();
            y.unwrap();
        }
    ));
    cases.push(timed!("router, autocommit UPDATE on one shard", n, _i, {
        r.query_drop(upd(a)).await.unwrap();
    }));
    cases.push(timed!(
        "router, BEGIN + UPDATE + COMMIT on one cluster (XA one phase)",
        n,
        _i,
        {
            r.query_drop("BEGIN").await.unwrap();
            r.query_drop(upd(a)).await.unwrap();
            r.query_drop("COMMIT").await.unwrap();
        }
    ));
    cases.push(timed!(
        "router, START TRANSACTION WITH CONSISTENT SNAPSHOT + UPDATE + COMMIT (plain, not XA)",
        n,
        _i,
        {
            r.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .unwrap();
            r.query_drop(upd(a)).await.unwrap();
            r.query_drop("COMMIT").await.unwrap();
        }
    ));
    cases.push(timed!(
        "router, BEGIN + UPDATE c1 + UPDATE c2 + COMMIT (two phases, logged decision)",
        n,
        _i,
        {
            r.query_drop("BEGIN").await.unwrap();
            r.query_drop(upd(a)).await.unwrap();
            r.query_drop(upd(b)).await.unwrap();
            r.query_drop("COMMIT").await.unwrap();
        }
    ));
    let both = format!("UPDATE customers SET balance = balance + 1 WHERE id IN ({a}, {b})");
    cases.push(timed!(
        "router, one UPDATE over both clusters (autocommit, two phases)",
        n,
        _i,
        {
            r.query_drop(&both).await.unwrap();
        }
    ));
    println!("\n{n} transactions per case, one client; latency per transaction in µs\n");
    println!("| case | median | p99 | mean |\n|---|---|---|---|");
    for c in cases.iter_mut() {
        println!("{}", c.row());
    }
    drop((r, d1, d2));
    app.shutdown().await;
    local.stop().await.unwrap();
}
