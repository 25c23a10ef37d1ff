//! Hostile and careless clients: handshakes that never finish, storms of failed logins,
//! wrong sequence ids and parameter blocks, clients that stop reading or vanish in the middle
//! of a transaction, an exhausted backend pool, 10,000 idle connections and bursts of new
//! ones. Each gets a clear error or a clean close; other sessions keep working; nothing is
//! committed by a half-finished transaction and memory stays bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, query_one, RawClient, TestEnv};
use mysql_async::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// This process's resident memory in bytes (the router runs in it).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_time_out_and_failed_login_storms_are_throttled() {
    let env = TestEnv::start_with(1, 0, |c| {
        c.router.handshake_timeout_ms = 300;
        c.router.login_failure_limit = 5;
        c.router.login_failure_delay_ms = 200;
    })
    .await;
    let port = env.router_port();

    // A client that reads the greeting and then says nothing is closed.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "an unfinished handshake is dropped");
    assert!(!sink.is_empty(), "the greeting came first");

    // Two thousand failed logins, 50 at a time: each is refused with 1045.
    let failures = 2000;
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let refused = refused.clone();
            tokio::spawn(async move {
                for _ in 0..failures / 50 {
                    let err = RawClient::login_as(port, "app", b"wrong")
                        .await
                        .err()
                        .expect("a wrong password is refused");
                    let e = router::protocol::parse_err(&err).expect("an error packet");
                    assert_eq!((e.code, e.sqlstate.as_str()), (1045, "28000"), "{e}");
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Meanwhile the right password still gets in at once and works.
    let mut ok = env.router_conn(None).await;
    let one: i64 = query_one(&mut ok, "SELECT 1").await;
    assert_eq!(one, 1);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::Relaxed),
        failures as u64
    );
    let stats = env.router_stats().await;
    assert!(
        stats["auth_failures"].as_u64().unwrap() >= failures as u64,
        "{stats}"
    );
    assert!(
        stats["auth_throttled"].as_u64().unwrap() >= failures as u64 - 100,
        "failures past the limit are answered late: {stats}"
    );
    let one: i64 = query_one(&mut ok, "SELECT 1").await;
    assert_eq!(one, 1);
    drop(ok);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sequence_ids_and_bad_parameter_blocks_get_errors() {
    let env = TestEnv::start(1, 0).await;
    let port = env.router_port();
    let mut c = RawClient::login(port).await;
    // A command whose sequence id is not 0: answered like any other.
    c.send(7, b"\x03SELECT 1").await;
    let first = c.next().await.unwrap();
    assert_eq!(first, vec![1], "a one-column result");
    while let Some(p) = c.next().await {
        if p[0] == 0xfe && p.len() < 9 {
            break;
        }
    }
    // Prepare a statement with two parameters.
    c.send(0, b"\x16SELECT ? + ?").await;
    let ok = c.next().await.unwrap();
    assert_eq!(ok[0], 0, "prepare OK: {ok:?}");
    let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
    let params = u16::from_le_bytes(ok[7..9].try_into().unwrap());
    assert_eq!(params, 2);
    // Drain the parameter and column definitions.
    let cols = u16::from_le_bytes(ok[5..7].try_into().unwrap());
    for _ in 0..(params + cols) {
        c.next().await.unwrap();
    }
    let mut head = vec![0x17];
    head.extend_from_slice(&id.to_le_bytes());
    head.extend_from_slice(&[0, 1, 0, 0, 0]);
    let bad_blocks: Vec<Vec<u8>> = vec![
        // No null bitmap or types at all.
        vec![],
        // Bitmap, new-params flag, one type of two.
        vec![0, 1, 8, 0],
        // Two types, values missing.
        vec![0, 1, 8, 0, 8, 0],
        // Unknown type codes.
        vec![0, 1, 0xf0, 0, 0xf1, 0, 1, 2, 3],
        // A length-encoded string longer than the packet.
        vec![0, 1, 0xfd, 0, 0xfd, 0, 0xfc, 0xff, 0xff, b'a'],
    ];
    for block in bad_blocks {
        let mut p = head.clone();
        p.extend_from_slice(&block);
        c.send(0, &p).await;
        let reply = c.next().await.expect("an answer, not a close");
        let e = router::protocol::parse_err(&reply)
            .unwrap_or_else(|| panic!("block {block:?}: expected an error, got {reply:?}"));
        assert!(
            [1835, 1210, 2027, 1064].contains(&e.code),
            "block {block:?}: {e}"
        );
    }
    // The session still works, and so does the statement with good parameters.
    let mut p = head.clone();
    p.extend_from_slice(&[0, 1, 8, 0, 8, 0]);
    p.extend_from_slice(&2i64.to_le_bytes());
    p.extend_from_slice(&3i64.to_le_bytes());
    c.send(0, &p).await;
    let first = c.next().await.unwrap();
    assert_eq!(first, vec![1], "a one-column result");
    let stats = env.router_stats().await;
    assert_eq!(stats["session_panics"], 0, "{stats}");
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_bounded_memory_and_hurts_nobody() {
    let env = TestEnv::start(1, 0).await;
    let port = env.router_port();
    let mut bystander = env.router_conn(None).await;
    let one: i64 = query_one(&mut bystander, "SELECT 1").await;
    assert_eq!(one, 1);
    let before = rss_bytes();
    // About 400 MB of result that the client never reads.
    let mut slow = RawClient::login(port).await;
    slow.send(
        0,
        b"\x03SELECT REPEAT('z', 2000) FROM information_schema.columns a, \
          information_schema.columns b, information_schema.columns c LIMIT 200000",
    )
    .await;
    // The router relays until the socket buffers fill, then waits: others go on meanwhile.
    for _ in 0..20 {
        let n: i64 = query_one(
            &mut bystander,
            "SELECT COUNT(*) FROM information_schema.schemata",
        )
        .await;
        assert!(n > 0);
    }
    let during = rss_bytes();
    assert!(
        during < before + (64 << 20),
        "a stalled reader made the process grow by {} MiB",
        (during.saturating_sub(before)) >> 20
    );
    drop(slow);
    // Its backend connection is not handed to anyone mid-result: every pooled connection
    // answers a fresh statement correctly.
    for _ in 0..20 {
        let mut c = env.router_conn(None).await;
        let v: i64 = query_one(&mut c, "SELECT 42").await;
        assert_eq!(v, 42);
    }
    let stats = env.router_stats().await;
    assert_eq!(stats["session_panics"], 0, "{stats}");
    drop(bystander);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_transaction_commits_nothing_and_leaves_no_dirty_connection() {
    // One backend connection, so the next session must get the same one back.
    let env = TestEnv::start_with(1, 0, |c| c.router.pool_size = 1).await;
    let port = env.router_port();
    let mut setup = env.router_conn(None).await;
    setup
        .query_drop("CREATE DATABASE h; CREATE TABLE h.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    drop(setup);
    // BEGIN and an INSERT, then the client vanishes without COMMIT.
    let mut c = RawClient::login(port).await;
    c.send(0, b"\x03BEGIN").await;
    assert_eq!(c.next().await.unwrap()[0], 0);
    c.send(0, b"\x03INSERT INTO h.t VALUES (1, 1)").await;
    assert_eq!(c.next().await.unwrap()[0], 0);
    drop(c);
    // A second one sends half of its COMMIT packet and vanishes.
    let mut c = RawClient::login(port).await;
    c.send(0, b"\x03BEGIN").await;
    assert_eq!(c.next().await.unwrap()[0], 0);
    c.send(0, b"\x03INSERT INTO h.t VALUES (2, 2)").await;
    assert_eq!(c.next().await.unwrap()[0], 0);
    // Header announcing 7 bytes, then only `\x03COM`.
    c.output.push_raw(&[7, 0, 0, 0, 0x03, b'C', b'O', b'M']);
    c.output.flush().await.unwrap();
    drop(c);
    // No transaction stays open on the server and neither row exists.
    let mut direct = env.direct_conn(env.leader_port("c1"), None).await;
    let open: i64 = eventually(Duration::from_secs(10), "no open transaction", || async {
        let n: i64 = query_one(
            &mut env.direct_conn(env.leader_port("c1"), None).await,
            "SELECT COUNT(*) FROM information_schema.innodb_trx",
        )
        .await;
        (n == 0).then_some(n)
    })
    .await;
    assert_eq!(open, 0);
    let rows: i64 = query_one(&mut direct, "SELECT COUNT(*) FROM h.t").await;
    assert_eq!(
        rows, 0,
        "nothing committed by a transaction its client abandoned"
    );
    // The one pooled connection is clean: not in a transaction, and it sees the table empty.
    let mut next = env.router_conn(None).await;
    let in_trx: i64 = query_one(&mut next, "SELECT @@in_transaction").await;
    assert_eq!(in_trx, 0);
    next.query_drop("INSERT INTO h.t VALUES (1, 10)")
        .await
        .unwrap();
    let v: i64 = query_one(&mut direct, "SELECT v FROM h.t WHERE id = 1").await;
    assert_eq!(v, 10, "autocommit works on the reused connection");
    drop((next, direct));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_backend_pool_queues_then_answers_1040() {
    let env = TestEnv::start_with(1, 0, |c| {
        c.router.pool_size = 2;
        c.router.pool_wait_ms = 300;
    })
    .await;
    // Logged in before the pool is taken (logging in needs no backend connection, but the
    // client library's first statements do).
    let mut third = env.router_conn(None).await;
    // Two sessions hold both backend connections in open transactions.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut h = env.router_conn(None).await;
        h.query_drop("BEGIN").await.unwrap();
        let _: i64 = query_one(&mut h, "SELECT 1").await;
        holders.push(h);
    }
    // A third waits for the pool, then gets a clear error instead of hanging.
    match third.query_drop("SELECT 1").await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (1040, "08004"), "{e:?}");
            assert!(e.message.contains("pool_size"), "{}", e.message);
        }
        other => panic!("expected 1040 from an exhausted pool, got {other:?}"),
    }
    // A statement that waits while a holder finishes gets the freed connection.
    let waiting = tokio::spawn(async move {
        let v: i64 = query_one(&mut third, "SELECT 7").await;
        v
    });
    let mut h = holders.pop().unwrap();
    h.query_drop("COMMIT").await.unwrap();
    assert_eq!(waiting.await.unwrap(), 7);
    drop((h, holders));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_new_connections_is_served() {
    let env = TestEnv::start(1, 0).await;
    let port = env.router_port();
    // One new connection per millisecond for a second, each logging in and querying while
    // the earlier ones are still open.
    let mut logins = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..1000i64 {
        tick.tick().await;
        logins.spawn(async move {
            let mut c = RawClient::login(port).await;
            c.send(0, format!("\x03SELECT {i}").as_bytes()).await;
            assert_eq!(c.next().await.unwrap(), vec![1], "a one-column result");
        });
    }
    while let Some(done) = logins.join_next().await {
        done.unwrap();
    }
    let stats = env.router_stats().await;
    assert!(
        stats["connections_total"].as_u64().unwrap() >= 1000,
        "{stats}"
    );
    assert_eq!(stats["session_panics"], 0, "{stats}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_in_little_memory() {
    let env = TestEnv::start_with(1, 0, |c| c.router.max_connections = 12_000).await;
    let port = env.router_port();
    let before = rss_bytes();
    // The clients live in another process: this one holds only the router's ends.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/idle_connections.py");
    let n = 10_000u64;
    let mut child = tokio::process::Command::new("python3")
        .args([script, &port.to_string(), &n.to_string(), "app", "app"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (scripts/install-deps)");
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(300), out.read_line(&mut line))
        .await
        .expect("10,000 connections open within 5 minutes")
        .unwrap();
    assert_eq!(line.trim(), format!("ready {n}"));
    let stats = env.router_stats().await;
    assert!(
        stats["connections_active"].as_u64().unwrap() >= n,
        "{stats}"
    );
    let grown = rss_bytes().saturating_sub(before);
    let per_conn = grown / n;
    // What an idle connection holds: its task (this future plus tokio's header), the session
    // registry's entry, the socket's registration with the reactor, allocator overhead. No
    // read or write buffer: those exist only while a command runs.
    println!(
        "{n} idle client connections: the router's process grew {} KiB, {per_conn} bytes each \
         (the session task's future: {} bytes)",
        grown >> 10,
        router::server::connection_task_size(),
    );
    assert!(
        per_conn < 6 * 1024,
        "an idle client connection costs {per_conn} bytes (about 3 KiB expected)"
    );
    // Idle clients hold no backend connections.
    let backend: u64 = stats["pools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["idle"].as_u64().unwrap_or(0) + p["busy"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    assert!(
        backend < 10,
        "idle clients hold {backend} backend connections"
    );
    // Others are served meanwhile.
    let mut c = env.router_conn(None).await;
    let v: i64 = query_one(&mut c, "SELECT 5").await;
    assert_eq!(v, 5);
    drop(c);
    drop(child.stdin.take());
    line.clear();
    out.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), "closed");
    eventually(
        Duration::from_secs(60),
        "the idle connections closed",
        || async {
            let s = env.router_stats().await;
            (s["connections_active"].as_u64().unwrap() < 5).then_some(())
        },
    )
    .await;
    let _ = child.wait().await;
    env.stop().await;
}
