//! Bad input and odd clients affect only their own session; odd but valid MariaDB syntax
//! that sqlparser cannot parse still works; replica reads follow the configured lag bound.

mod common;

use std::time::Duration;

use common::{eventually, query_one, RawClient, TestEnv};
use mysql_async::prelude::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_get_clear_errors_and_hurt_nobody_else() {
    let env = TestEnv::start_with(1, 0, |c| c.router.max_allowed_packet = 1 << 20).await;
    let port = env.router_port();
    let mut bystander = env.router_conn(None).await;

    // Unknown command byte: error 1047, the session goes on.
    let mut c = RawClient::login(port).await;
    c.send(0, &[0x42]).await;
    c.expect_error(1047).await;
    // An empty packet.
    c.send(0, &[]).await;
    c.expect_error(1835).await;
    // A statement id that does not exist.
    c.send(0, &[0x17, 9, 9, 9, 9, 0, 1, 0, 0, 0]).await;
    c.expect_error(1243).await;
    // A truncated execute packet.
    c.send(0, &[0x17, 1]).await;
    c.expect_error(1835).await;
    // Still usable.
    c.send(0, b"\x03SELECT 1").await;
    let first = c.next().await.unwrap();
    assert_eq!(first, vec![1], "one column");

    // A packet over max_allowed_packet: error 1153 and the connection is closed.
    let mut big = RawClient::login(port).await;
    let mut q = b"\x03SELECT '".to_vec();
    q.extend(std::iter::repeat_n(b'x', 2 << 20));
    q.push(b'\'');
    big.send(0, &q).await;
    big.expect_error(1153).await;
    assert!(big.next().await.is_none(), "connection closed after 1153");

    // A megabyte of garbage instead of a handshake: the connection is dropped.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let noise: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = garbage.write_all(&noise).await;
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(15), garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the router closes a garbage connection");

    // A client that disconnects in the middle of a large result.
    let mut quitter = RawClient::login(port).await;
    quitter
        .send(
            0,
            b"\x03SELECT REPEAT('y', 1000) FROM information_schema.columns a, information_schema.columns b LIMIT 200000",
        )
        .await;
    let _ = quitter.next().await;
    drop(quitter);

    let one: i64 = query_one(&mut bystander, "SELECT 1").await;
    assert_eq!(one, 1, "other sessions are unaffected");
    let stats: serde_json::Value = env.router_stats().await;
    assert_eq!(stats["session_panics"], 0, "{stats}");
    drop(bystander);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_syntax_sqlparser_cannot_parse_still_works() {
    let env = TestEnv::start(1, 0).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE odd; CREATE TABLE odd.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("USE odd").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 1), (2, 2)")
        .await
        .unwrap();
    c.query_drop("DO 1").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let n: i64 = query_one(&mut c, "SELECT COUNT(*) FROM t LOCK IN SHARE MODE").await;
    assert_eq!(n, 2);
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("XA START 'x1'").await.unwrap();
    c.query_drop("UPDATE t SET v = 10 WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("XA END 'x1'").await.unwrap();
    c.query_drop("XA PREPARE 'x1'").await.unwrap();
    c.query_drop("XA COMMIT 'x1'").await.unwrap();
    let v: i64 = query_one(&mut c, "SELECT v FROM t WHERE id = 1").await;
    assert_eq!(v, 10);
    let stats: serde_json::Value = env.router_stats().await;
    assert!(
        stats["unparsed_statements"].as_u64().unwrap() >= 6,
        "unparsed statements are counted: {stats}"
    );
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_fresh_replicas_only_when_configured() {
    let env = TestEnv::start_with(1, 1, |c| c.router.replica_read_max_lag = Some(5)).await;
    let replica = env.replica_ports("c1")[0];
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE rr; CREATE TABLE rr.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // Wait until the monitor has seen the replica up and caught up.
    let mut direct_replica = env.direct_conn(replica, None).await;
    let replica_id: i64 = query_one(&mut direct_replica, "SELECT @@server_id").await;
    let leader_id: i64 = query_one(
        &mut env.direct_conn(env.leader_port("c1"), None).await,
        "SELECT @@server_id",
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "a read is served by the replica",
        || async {
            let mut probe = env.router_conn(None).await;
            let id: i64 = probe.query_first("SELECT @@server_id").await.ok()??;
            (id == replica_id).then_some(())
        },
    )
    .await;
    // Locking reads, writes and everything in a transaction go to the leader.
    c.query_drop("INSERT INTO rr.t VALUES (1)").await.unwrap();
    let id: i64 = query_one(&mut c, "SELECT @@server_id FROM rr.t FOR UPDATE").await;
    assert_eq!(id, leader_id, "a locking read goes to the leader");
    c.query_drop("BEGIN").await.unwrap();
    for _ in 0..5 {
        let id: i64 = query_one(&mut c, "SELECT @@server_id").await;
        assert_eq!(id, leader_id, "reads in a transaction stay on the leader");
    }
    c.query_drop("COMMIT").await.unwrap();
    drop((c, direct_replica));
    env.stop().await;

    // Off by default: everything goes to the leader.
    let env = TestEnv::start(1, 1).await;
    let mut c = env.router_conn(None).await;
    let leader_id: i64 = query_one(
        &mut env.direct_conn(env.leader_port("c1"), None).await,
        "SELECT @@server_id",
    )
    .await;
    for _ in 0..10 {
        let id: i64 = query_one(&mut c, "SELECT @@server_id").await;
        assert_eq!(id, leader_id);
    }
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_1040_and_others_keep_working() {
    let env = TestEnv::start_with(1, 0, |c| c.router.max_connections = 2).await;
    let mut a = env.router_conn(None).await;
    let b = env.router_conn(None).await;
    match mysql_async::Conn::new(env.router_opts(None)).await {
        // Sent before the handshake, so without a SQLSTATE, as MariaDB does.
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1040);
            assert!(e.message.contains("Too many connections"), "{e:?}");
        }
        Err(other) => panic!("expected error 1040, got {other:?}"),
        Ok(_) => panic!("a third connection was accepted past max_connections = 2"),
    }
    let one: i64 = query_one(&mut a, "SELECT 1").await;
    assert_eq!(one, 1);
    // A slot freed is a slot available again.
    drop(b.disconnect().await);
    let mut c = common::eventually(Duration::from_secs(10), "a freed slot", || async {
        mysql_async::Conn::new(env.router_opts(None)).await.ok()
    })
    .await;
    let one: i64 = query_one(&mut c, "SELECT 1").await;
    assert_eq!(one, 1);
    let stats = env.router_stats().await;
    assert!(
        stats["connections_refused"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    drop((a, c));
    env.stop().await;
}
