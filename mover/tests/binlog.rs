//! The binary log client against a real MariaDB server: transactions, XA, DDL and positions.

use std::collections::HashSet;
use std::time::Duration;

use mover::binlog::{BinlogReader, Body, Item, Txn};
use mover::Endpoint;
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use orchestrator::provision::{LocalClusters, ProvisionSpec};
use shard_map::gtid::GtidPos;

async fn one_server(dir: &std::path::Path) -> (LocalClusters, Endpoint) {
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = 1;
    spec.replicas = 0;
    spec.semi_sync = false;
    let local = LocalClusters::start(spec).await.unwrap_or_else(|e| {
        panic!("MariaDB must be installed (apt-get install mariadb-server; see scripts/install-deps): {e}")
    });
    let addr = local.clusters()[0].leader.clone();
    let ep = Endpoint {
        addr,
        user: "switchyard".into(),
        password: "switchyard".into(),
        timeout: Duration::from_secs(10),
    };
    (local, ep)
}

async fn next_txn(r: &mut BinlogReader) -> Txn {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), r.next())
            .await
            .expect("a transaction within 20 s")
            .expect("stream reads")
        {
            Item::Txn(t) => return t,
            Item::Idle => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_xa_and_ddl_come_whole_with_their_gtids() {
    let dir = tempfile::tempdir().unwrap();
    let (local, ep) = one_server(dir.path()).await;
    let mut c = ep.connect().await.unwrap();
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop(
        "CREATE TABLE app.t (id BIGINT UNSIGNED PRIMARY KEY, n INT, d DECIMAL(10,2), \
         ts DATETIME(6), b BLOB, s VARCHAR(20)) ENGINE=InnoDB",
    )
    .await
    .unwrap();
    let start: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let start = GtidPos::parse(&start).unwrap();

    let mut r = BinlogReader::open(
        &ep,
        4_000_001,
        &start,
        HashSet::from(["app".to_owned()]),
        Duration::from_millis(500),
    )
    .await
    .unwrap();

    c.query_drop(
        "INSERT INTO app.t VALUES (18446744073709551615, -5, 12.34, '2024-01-02 03:04:05.123456', \
         x'00ff', NULL), (2, 7, NULL, NULL, NULL, 'x')",
    )
    .await
    .unwrap();
    let t = next_txn(&mut r).await;
    assert_eq!(t.gtid.seq, start.seq(0) + 1);
    let Body::Rows(rows) = &t.body else {
        panic!("rows expected: {t:?}")
    };
    assert_eq!(rows.len(), 2);
    let after = rows[0].after.as_ref().unwrap();
    assert_eq!(
        after[0],
        Value::UInt(u64::MAX),
        "unsigned decoded: {after:?}"
    );
    assert_eq!(after[1], Value::Int(-5));
    assert_eq!(after[4], Value::Bytes(vec![0, 0xff]));
    assert_eq!(
        rows[1].after.as_ref().unwrap()[5],
        Value::Bytes(b"x".to_vec())
    );

    c.query_drop("UPDATE app.t SET n = n + 1 WHERE id = 2")
        .await
        .unwrap();
    let t = next_txn(&mut r).await;
    let Body::Rows(rows) = &t.body else {
        panic!("rows expected: {t:?}")
    };
    assert_eq!(rows[0].before.as_ref().unwrap()[1], Value::Int(7));
    assert_eq!(rows[0].after.as_ref().unwrap()[1], Value::Int(8));

    for s in [
        "XA START 'x1'",
        "INSERT INTO app.t (id, n) VALUES (3, 3)",
        "XA END 'x1'",
        "XA PREPARE 'x1'",
        "XA COMMIT 'x1'",
    ] {
        c.query_drop(s).await.unwrap();
    }
    let t = next_txn(&mut r).await;
    eprintln!("{t:?}");
    let Body::XaPrepare { xid, rows } = &t.body else {
        panic!("XA PREPARE expected: {t:?}")
    };
    assert_eq!(rows.len(), 1);
    let prepared = xid.clone();
    let t = next_txn(&mut r).await;
    eprintln!("{t:?}");
    let Body::XaCommit { xid } = &t.body else {
        panic!("XA COMMIT expected: {t:?}")
    };
    assert_eq!(*xid, prepared);

    for s in [
        "XA START 'x2'",
        "DELETE FROM app.t WHERE id = 3",
        "XA END 'x2'",
        "XA COMMIT 'x2' ONE PHASE",
    ] {
        c.query_drop(s).await.unwrap();
    }
    let t = next_txn(&mut r).await;
    eprintln!("one phase: {t:?}");

    c.query_drop("ALTER TABLE app.t ADD COLUMN z INT")
        .await
        .unwrap();
    let t = next_txn(&mut r).await;
    eprintln!("{t:?}");
    assert_eq!(t.statements.len(), 1, "{t:?}");
    assert!(t.statements[0].query.contains("ADD COLUMN z"));

    // Rows of other databases are not decoded; their transactions still come (positions).
    c.query_drop("CREATE DATABASE other").await.unwrap();
    let _ = next_txn(&mut r).await;
    c.query_drop("CREATE TABLE other.o (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let _ = next_txn(&mut r).await;
    c.query_drop("INSERT INTO other.o VALUES (1)")
        .await
        .unwrap();
    let t = next_txn(&mut r).await;
    assert_eq!(t.body, Body::Rows(vec![]));

    // Idle: heartbeats keep the stream alive.
    let idle = tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .expect("a heartbeat within 5 s")
        .unwrap();
    assert_eq!(idle, Item::Idle);

    // Resuming from a position gives the transactions after it, no others.
    let mut again = BinlogReader::open(
        &ep,
        4_000_002,
        &{
            let mut p = start.clone();
            p.advance(shard_map::gtid::Gtid {
                domain: 0,
                server_id: t.gtid.server_id,
                seq: start.seq(0) + 1,
            });
            p
        },
        HashSet::from(["app".to_owned()]),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    let t = next_txn(&mut again).await;
    assert_eq!(t.gtid.seq, start.seq(0) + 2);
    drop(local);
}
