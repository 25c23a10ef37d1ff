//! The router against real MariaDB clusters with real clients: the `mariadb` CLI and
//! mysql_async. Statements, errors, session state on shared pooled connections, pinning.

mod common;

use std::time::Duration;

use common::{eventually, mariadb_cli, query_one, TestEnv};
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_works_through_the_router() {
    let env = TestEnv::start(1, 1).await;
    let port = env.router_port();

    let (code, out, err) = mariadb_cli(port, "app", "app", "SELECT 1 AS one");
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "one\n1\n");

    let (code, out, err) = mariadb_cli(
        port,
        "app",
        "app",
        "CREATE DATABASE clitest; USE clitest; \
         CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20)); \
         INSERT INTO t (name) VALUES ('a'), ('b'); \
         UPDATE t SET name = 'c' WHERE id = 2; \
         SELECT id, name FROM t ORDER BY id; SELECT DATABASE();",
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "id\tname\n1\ta\n2\tc\nDATABASE()\nclitest\n");

    let (code, out, _) = mariadb_cli(port, "app", "app", "SHOW DATABASES");
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "clitest"), "{out}");

    // The write went to the leader and replicated: a direct read of the replica shows it.
    let replica = env.replica_ports("c1")[0];
    eventually(
        Duration::from_secs(10),
        "the replica has the rows",
        || async {
            let (_, out, _) = mariadb_cli(replica, "app", "app", "SELECT COUNT(*) FROM clitest.t");
            (out == "COUNT(*)\n2\n").then_some(())
        },
    )
    .await;

    // Errors come back with the server's code and message, and the CLI exits non-zero.
    let (code, _, err) = mariadb_cli(port, "app", "app", "SELEC 1");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1064 (42000)"), "{err}");
    let (code, _, err) = mariadb_cli(port, "app", "app", "SELECT * FROM clitest.nope");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1146 (42S02)"), "{err}");
    let (code, _, err) = mariadb_cli(port, "app", "app", "USE no_such_db");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1049 (42000)"), "{err}");

    // A wrong password is refused as a server would.
    let (code, _, err) = mariadb_cli(port, "app", "wrong", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    let (code, _, err) = mariadb_cli(port, "nobody", "app", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");

    // Start-up queries of the client work (the CLI runs @@version_comment itself).
    let (code, out, _) = mariadb_cli(port, "app", "app", "SELECT @@version_comment LIMIT 1");
    assert_eq!(code, 0);
    assert!(out.starts_with("@@version_comment\n"), "{out}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_see_each_others_state() {
    // One backend connection per server: every session runs on the same one in turn.
    let env = TestEnv::start_with(1, 0, |c| c.router.pool_size = 1).await;
    let mut admin = env.direct_conn(env.leader_port("c1"), None).await;
    admin
        .query_drop("CREATE DATABASE s1; CREATE DATABASE s2")
        .await
        .unwrap();
    let mut a = env.router_conn(Some("s1")).await;
    let mut b = env.router_conn(Some("s2")).await;
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    a.query_drop("SET @who = 'a'").await.unwrap();
    b.query_drop("SET @who = 'b'").await.unwrap();
    b.query_drop("SET NAMES latin1").await.unwrap();
    for _ in 0..20 {
        let (db, who, mode): (String, String, String) = a
            .query_first("SELECT DATABASE(), @who, @@sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((db.as_str(), who.as_str()), ("s1", "a"));
        assert!(mode.contains("ANSI_QUOTES"), "{mode}");
        let (db, who, mode, cs): (String, String, String, String) = b
            .query_first("SELECT DATABASE(), @who, @@sql_mode, @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (db.as_str(), who.as_str(), cs.as_str()),
            ("s2", "b", "latin1")
        );
        assert!(!mode.contains("ANSI_QUOTES"), "{mode}");
    }
    // A session that never set a variable sees none.
    let mut c = env.router_conn(None).await;
    let (db, who): (Option<String>, Option<String>) = c
        .query_first("SELECT DATABASE(), @who")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((db, who), (None, None));
    // All three sessions ran on the one pooled connection.
    let stats: serde_json::Value = env.router_stats().await;
    let statements = stats["statements"].as_u64().unwrap();
    assert!(statements >= 40, "{stats}");
    drop((a, b, c));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_locks_and_temporary_tables_pin_the_session() {
    let env = TestEnv::start(1, 0).await;
    let mut setup = env.router_conn(None).await;
    setup
        .query_drop("CREATE DATABASE tx; CREATE TABLE tx.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut a = env.router_conn(Some("tx")).await;
    let mut other = env.router_conn(Some("tx")).await;

    // An open transaction stays on one connection: its uncommitted row is visible to it
    // and invisible to another session until COMMIT; ROLLBACK undoes.
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (1, 10)").await.unwrap();
    for _ in 0..5 {
        let n: i64 = query_one(&mut a, "SELECT COUNT(*) FROM t").await;
        assert_eq!(n, 1);
        let n: i64 = query_one(&mut other, "SELECT COUNT(*) FROM t").await;
        assert_eq!(n, 0);
    }
    a.query_drop("ROLLBACK").await.unwrap();
    let n: i64 = query_one(&mut a, "SELECT COUNT(*) FROM t").await;
    assert_eq!(n, 0);

    // autocommit=0 opens a transaction implicitly.
    a.query_drop("SET autocommit = 0").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (2, 20)").await.unwrap();
    let n: i64 = query_one(&mut other, "SELECT COUNT(*) FROM t").await;
    assert_eq!(n, 0);
    a.query_drop("COMMIT").await.unwrap();
    let n: i64 = query_one(&mut other, "SELECT COUNT(*) FROM t").await;
    assert_eq!(n, 1);
    a.query_drop("SET autocommit = 1").await.unwrap();

    // A temporary table lives on one connection: the session keeps seeing it.
    a.query_drop("CREATE TEMPORARY TABLE tmp (x INT)")
        .await
        .unwrap();
    a.query_drop("INSERT INTO tmp VALUES (1), (2)")
        .await
        .unwrap();
    for _ in 0..5 {
        let n: i64 = query_one(&mut a, "SELECT COUNT(*) FROM tmp").await;
        assert_eq!(n, 2);
        other.query_drop("SELECT 1").await.unwrap();
    }
    assert!(other.query_drop("SELECT * FROM tmp").await.is_err());

    // GET_LOCK holds a server-side lock for the session.
    let got: i64 = query_one(&mut a, "SELECT GET_LOCK('sy_lock', 0)").await;
    assert_eq!(got, 1);
    // (`@@pseudo_thread_id` is the backend connection's own id: `CONNECTION_ID()` through
    // the router is the session's.)
    let free: i64 = query_one(
        &mut a,
        "SELECT IS_USED_LOCK('sy_lock') = @@pseudo_thread_id",
    )
    .await;
    assert_eq!(free, 1);
    let got: i64 = query_one(&mut other, "SELECT GET_LOCK('sy_lock', 0)").await;
    assert_eq!(got, 0, "another session can't take the lock");

    // LAST_INSERT_ID follows the session across pooled connections.
    let mut c = env.router_conn(Some("tx")).await;
    c.query_drop("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO ai (v) VALUES (1)").await.unwrap();
    c.query_drop("INSERT INTO ai (v) VALUES (2)").await.unwrap();
    other
        .query_drop("INSERT INTO ai (v) VALUES (3)")
        .await
        .unwrap();
    let id: u64 = query_one(&mut c, "SELECT LAST_INSERT_ID()").await;
    assert_eq!(id, 2);
    assert_eq!(c.last_insert_id(), None);
    drop((a, other, c, setup));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_connection_gives_an_error_and_the_session_goes_on() {
    let env = TestEnv::start(1, 0).await;
    let mut s = env.router_conn(None).await;
    let mut admin = env.admin_conn(env.leader_port("c1")).await;

    // Kill the backend connection of a session that is inside a transaction: the
    // transaction is lost, the client is told, and the session keeps working.
    s.query_drop("BEGIN").await.unwrap();
    let backend_id: u64 = query_one(&mut s, "SELECT @@pseudo_thread_id").await;
    admin
        .query_drop(format!("KILL CONNECTION {backend_id}"))
        .await
        .unwrap();
    let err = s.query_drop("SELECT 1").await.unwrap_err();
    match err {
        // ER_CONNECTION_KILLED, as a server says it (a server-side code: libmariadb reads a
        // client-side 2013 in an error packet as a malformed packet).
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1927, "{e:?}"),
        other => panic!("expected a server error packet, got {other:?}"),
    }
    let one: i64 = query_one(&mut s, "SELECT 1").await;
    assert_eq!(one, 1);

    // Kill idle pooled connections: the next statements get fresh ones without an error.
    let ids: Vec<u64> = admin
        .query("SELECT id FROM information_schema.processlist WHERE user = 'app'")
        .await
        .unwrap();
    for id in ids {
        let _ = admin.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    for _ in 0..5 {
        let one: i64 = query_one(&mut s, "SELECT 1").await;
        assert_eq!(one, 1);
    }
    drop((s, admin));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_reports_clusters_and_requires_the_token() {
    let env = TestEnv::start(2, 1).await;
    let http = common::http();
    let health = http
        .get(env.admin_url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let denied = http
        .get(env.admin_url("/api/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let denied = http
        .get(env.admin_url("/api/v1/clusters"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert!(body["error"].as_str().is_some(), "{body}");

    let leader1 = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replica1 = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);
    let body = eventually(
        Duration::from_secs(10),
        "replica lag is reported",
        || async {
            let body: serde_json::Value = http
                .get(env.admin_url("/api/v1/clusters"))
                .bearer_auth("test-token")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let c1 = body["clusters"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "c1")?
                .clone();
            let replica = c1["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["addr"] == replica1.as_str())?;
            (replica["lag_seconds"] == 0 && replica["state"] == "up").then_some(body)
        },
    )
    .await;
    let clusters = body["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    let c1 = clusters.iter().find(|c| c["name"] == "c1").unwrap();
    assert_eq!(c1["leader"], leader1.as_str());
    assert_eq!(c1["epoch"], 1);
    let leader = c1["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == leader1.as_str())
        .unwrap();
    assert_eq!(leader["role"], "leader");
    assert!(leader["gtid_binlog_pos"].is_string());
    let missing = http
        .get(env.admin_url("/api/v1/nope"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    env.stop().await;
}

/// `mariadb -S`: the `mariadb` CLI through a Unix-domain socket, batch mode.
fn mariadb_socket(path: &std::path::Path, password: &str, sql: &str) -> (i32, String, String) {
    let out = std::process::Command::new("mariadb")
        .arg("-S")
        .arg(path)
        .args(["-uapp", &format!("-p{password}"), "--batch", "-e", sql])
        .output()
        .expect("the mariadb client runs (apt-get install -y mariadb-client)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_backends_on_unix_sockets() {
    let mut env = TestEnv::start(1, 1).await;
    // The sandbox's router listens on a socket beside its TCP port.
    let socket = env
        .app()
        .router_socket
        .clone()
        .expect("the sandbox's router socket");
    assert!(socket.starts_with(&env.opts.dir), "{}", socket.display());
    let (code, out, err) = mariadb_socket(&socket, "app", "SELECT USER() AS u");
    assert_eq!(code, 0, "stderr: {err}");
    // Over TCP to the leader: the backend sees the router's loopback address.
    assert_eq!(out, "u\napp@127.0.0.1\n");
    let (code, _, err) = mariadb_socket(&socket, "wrong", "SELECT 1");
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");

    // Again with the backends reached through their own sockets.
    let cluster = env.local().cluster("c1").expect("c1").clone();
    let leader = cluster.leader_node().expect("leader").clone();
    let replica = cluster.replicas().next().expect("replica").clone();
    env.app.take().expect("app").shutdown().await;
    assert!(!socket.exists(), "the socket file goes with the router");
    let mut config = switchyard::sandbox::config_for(env.local(), &env.opts);
    config
        .router
        .backend_sockets
        .insert(leader.addr.clone(), leader.socket.clone());
    env.app = Some(
        switchyard::App::start(config.clone())
            .await
            .expect("starts"),
    );
    let (code, out, err) = mariadb_socket(
        &socket,
        "app",
        "CREATE DATABASE sock; CREATE TABLE sock.t (id INT PRIMARY KEY); \
         INSERT INTO sock.t VALUES (1), (2); SELECT USER() AS u, COUNT(*) AS n FROM sock.t",
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "u\tn\napp@localhost\t2\n");
    // The rows went to the leader and on to the replica.
    eventually(
        Duration::from_secs(10),
        "the replica has the rows",
        || async {
            let (_, out, _) =
                common::mariadb_cli(replica.port, "app", "app", "SELECT COUNT(*) FROM sock.t");
            (out == "COUNT(*)\n2\n").then_some(())
        },
    )
    .await;

    // A socket that is not the server's: refused, nothing sent to the wrong server.
    env.app.take().expect("app").shutdown().await;
    config
        .router
        .backend_sockets
        .insert(leader.addr.clone(), replica.socket.clone());
    env.app = Some(switchyard::App::start(config).await.expect("starts"));
    let (code, _, err) = mariadb_socket(&socket, "app", "INSERT INTO sock.t VALUES (3)");
    assert_ne!(code, 0, "a write through the wrong socket");
    assert!(err.contains("router.backend_sockets"), "{err}");
    let mut replica_conn = env.direct_conn(replica.port, None).await;
    let n: u64 = query_one(&mut replica_conn, "SELECT COUNT(*) FROM sock.t").await;
    assert_eq!(n, 2, "the replica took a write");
    drop(replica_conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_the_compressed_protocol_get_it_end_to_end() {
    let env = TestEnv::start(1, 0).await;
    // The mariadb CLI: `status` says whether its connection is compressed; the results of a
    // large value and several statements arrive whole.
    let (code, out, err) = common::mariadb_cli_with(
        env.router_port(),
        "app",
        "app",
        &["--compress"],
        "status; SELECT LENGTH(REPEAT('ab', 300000)) AS n, MD5(REPEAT('ab', 300000)) AS m; \
         SELECT MD5(x) FROM (SELECT REPEAT('xyz', 200000) AS x) AS t; SELECT 1 + 1",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Protocol:") && l.contains("Compressed")),
        "the CLI's connection is not compressed:\n{out}"
    );
    let md5_ab: String = {
        let mut c = env.router_conn(None).await;
        query_one(&mut c, "SELECT MD5(REPEAT('ab', 300000))").await
    };
    assert!(out.contains(&format!("600000\t{md5_ab}")), "{out}");
    assert!(out.lines().any(|l| l == "2"), "{out}");

    // mysql_async with compression: large results both ways, prepared statements, an error
    // and a multi-statement, on one connection.
    let opts = mysql_async::OptsBuilder::from_opts(env.router_opts(None))
        .compression(Some(mysql_async::Compression::default()));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    c.query_drop(
        "CREATE DATABASE IF NOT EXISTS cz; CREATE TABLE cz.t (id INT PRIMARY KEY, b LONGBLOB)",
    )
    .await
    .unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.exec_drop("INSERT INTO cz.t VALUES (?, ?)", (1, big.clone()))
        .await
        .unwrap();
    let back: Vec<u8> = c
        .exec_first("SELECT b FROM cz.t WHERE id = ?", (1,))
        .await
        .unwrap()
        .unwrap();
    assert!(back == big, "the 3 MB value came back changed");
    let rows: Vec<(u32, String)> = c
        .query("SELECT seq, REPEAT('r', 100) FROM cz.seq_1_to_20000")
        .await
        .unwrap();
    assert_eq!(rows.len(), 20_000);
    assert_eq!(rows[19_999].0, 20_000);
    let e = c.query_drop("SELECT * FROM cz.nope").await.unwrap_err();
    assert!(e.to_string().contains("1146"), "{e}");
    let n: u32 = c.query_first("SELECT 41 + 1").await.unwrap().unwrap();
    assert_eq!(n, 42);
    drop(c);

    let (status, stats) = {
        let r = common::http()
            .get(env.admin_url("/api/v1/router"))
            .bearer_auth("test-token")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(stats["compressed_connections"], 2, "{stats}");
    env.stop().await;
}
