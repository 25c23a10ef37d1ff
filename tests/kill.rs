//! KILL and cancellation through the router, with real clients (mysql_async, PyMySQL's
//! COM_PROCESS_KILL, the `mariadb` CLI's Ctrl-C): a client sees one connection id, the
//! handshake's, which `CONNECTION_ID()` returns and `KILL` takes; killing it stops that
//! session's statement or connection and never a backend connection another session uses.

mod common;

use std::time::Duration;

use common::{eventually, query_one, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Conn;

/// The server error code of a failed statement.
fn code_of(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Backend thread id (on the leader) of the statement whose text starts with `info`, once
/// one runs (within 10 s).
async fn backend_thread_running(admin: &mut Conn, info: &str) -> u64 {
    let sql = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '{info}%' \
         AND ID <> CONNECTION_ID()"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = admin.query_first::<u64, _>(&sql).await.unwrap() {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for `{info}` to run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) until no backend thread `id` matching `filter` is on the leader.
async fn thread_gone(admin: &mut Conn, id: u64, filter: &str, what: &str) {
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id} {filter}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while query_one::<u64>(admin, &sql).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with_users(cfg: &mut switchyard::Config) {
    for name in ["other", "boss"] {
        cfg.router.users.push(router::config::UserConfig {
            name: name.into(),
            password: router::config::Secret::new(name),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_takes_the_handshake_id_and_touches_only_that_session() {
    let env = TestEnv::start_with(1, 0, with_users).await;
    let leader = env.leader_port("c1");
    let mut admin = env.admin_conn(leader).await;
    for sql in [
        "CREATE USER other IDENTIFIED BY 'other'",
        "GRANT SELECT ON *.* TO other",
        "CREATE USER boss IDENTIFIED BY 'boss'",
        "GRANT SELECT, CONNECTION ADMIN ON *.* TO boss",
        "CREATE DATABASE k",
        "CREATE TABLE k.t (id INT PRIMARY KEY)",
    ] {
        admin.query_drop(sql).await.unwrap();
    }
    let mut a = env.router_conn(Some("k")).await;
    let mut b = env.router_conn(Some("k")).await;
    let a_id = a.id();
    assert!(
        a_id >= router::sessions::SESSION_ID_BASE,
        "a router session id: {a_id}"
    );

    // CONNECTION_ID() is the handshake's id, in text and prepared statements alike, and the
    // column keeps its name.
    let got: u32 = query_one(&mut a, "SELECT CONNECTION_ID()").await;
    assert_eq!(got, a_id);
    let r = a.query_iter("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(r.columns_ref()[0].name_str(), "CONNECTION_ID()");
    drop(r);
    let got: Option<u32> = a
        .exec_first("SELECT CONNECTION_ID() + ?", (0,))
        .await
        .unwrap();
    assert_eq!(got, Some(a_id));
    // In a definition it stays a call: a column's default is evaluated by each insert.
    a.query_drop("CREATE TABLE d (x INT DEFAULT CONNECTION_ID())")
        .await
        .unwrap();
    let (_, ddl): (String, String) = a.query_first("SHOW CREATE TABLE d").await.unwrap().unwrap();
    assert!(ddl.contains("DEFAULT connection_id()"), "{ddl}");

    // KILL QUERY by that id stops a's statement and nothing else: c's statement, running at
    // the same time on another pooled connection, ends normally.
    let mut c = env.router_conn(Some("k")).await;
    let c_stmt = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = c.query_first("SELECT SLEEP(3) AS c_sleep").await;
        (c, r)
    });
    let c_thread = backend_thread_running(&mut admin, "SELECT SLEEP(3) AS c_sleep").await;
    let a_stmt = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(30) AS a_sleep").await;
        (a, r)
    });
    let a_thread = backend_thread_running(&mut admin, "SELECT SLEEP(30) AS a_sleep").await;
    // b's statement (a and c hold the other connections) leaves a pooled one idle.
    let one: i64 = query_one(&mut b, "SELECT 1").await;
    assert_eq!(one, 1);
    // The id of an idle pooled backend connection names no session: refused, and the
    // connection lives on (the next session to take it is not hit).
    let idle: u64 = query_one(
        &mut admin,
        &format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app' AND \
             COMMAND = 'Sleep' AND ID NOT IN ({a_thread}, {c_thread}) LIMIT 1"
        ),
    )
    .await;
    let e = b.query_drop(format!("KILL {idle}")).await.unwrap_err();
    assert_eq!(code_of(&e), 1094, "{e:?}");
    let e = b.query_drop("KILL 4242").await.unwrap_err();
    assert_eq!(code_of(&e), 1094, "{e:?}");
    let n: u64 = query_one(
        &mut admin,
        &format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {idle}"),
    )
    .await;
    assert_eq!(n, 1, "the idle pooled connection was not killed");
    b.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), a_stmt)
        .await
        .expect("a's statement ends within 10 s of the KILL")
        .unwrap();
    assert_eq!(
        code_of(&r.unwrap_err()),
        1317,
        "Query execution was interrupted"
    );
    let (c, r) = tokio::time::timeout(Duration::from_secs(20), c_stmt)
        .await
        .expect("c's statement ends")
        .unwrap();
    assert_eq!(
        r.unwrap(),
        Some(0),
        "c's SLEEP ran to its end, not interrupted"
    );
    // a's session goes on (on the same connection first: after an error it stays for
    // SHOW WARNINGS), and the connection the KILL was sent to serves nobody else: once a
    // lets it go, it is closed.
    let one: i64 = query_one(&mut a, "SELECT 1").await;
    assert_eq!(one, 1);
    thread_gone(
        &mut admin,
        a_thread,
        "",
        "the killed statement's connection closed",
    )
    .await;

    // An id read from the server's process list, of a statement a session runs, names that
    // session (the operator's "find the long query, kill it").
    let d_stmt = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(30) AS d_sleep").await;
        (a, r)
    });
    let d_thread = backend_thread_running(&mut admin, "SELECT SLEEP(30) AS d_sleep").await;
    b.query_drop(format!("KILL QUERY {d_thread}"))
        .await
        .unwrap();
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), d_stmt)
        .await
        .expect("the statement ends within 10 s of the KILL")
        .unwrap();
    assert_eq!(code_of(&r.unwrap_err()), 1317);

    // Another user may not kill a's statement; a user with CONNECTION ADMIN may.
    let mut other = Conn::new(common::opts_for(env.router_port(), "other", "other", None))
        .await
        .unwrap();
    let e = other
        .query_drop(format!("KILL QUERY {a_id}"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 1095, "{e:?}");
    let mut boss = Conn::new(common::opts_for(env.router_port(), "boss", "boss", None))
        .await
        .unwrap();
    boss.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();

    // KILL CONNECTION of a session inside a transaction: its connection ends, the
    // transaction is rolled back, the killer's goes on.
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    b.query_drop(format!("KILL CONNECTION {a_id}"))
        .await
        .unwrap();
    let e = a.query_drop("SELECT 1").await;
    assert!(e.is_err(), "a's connection was killed");
    eventually(Duration::from_secs(10), "a's session gone", || async {
        (!env
            .app()
            .router
            .sessions
            .list()
            .iter()
            .any(|s| s.id == a_id))
        .then_some(())
    })
    .await;
    let n: i64 = query_one(&mut b, "SELECT COUNT(*) FROM t").await;
    assert_eq!(n, 0, "the killed transaction's row was rolled back");

    // KILL of one's own connection: ER_CONNECTION_KILLED, and the connection ends.
    let b_id = b.id();
    let e = b.query_drop(format!("KILL {b_id}")).await.unwrap_err();
    assert_eq!(code_of(&e), 1927, "{e:?}");
    assert!(b.query_drop("SELECT 1").await.is_err());

    // KILL QUERY ID names a backend statement: refused with multiplexing.
    let mut d = env.router_conn(Some("k")).await;
    let e = d.query_drop("KILL QUERY ID 1").await.unwrap_err();
    assert_eq!(code_of(&e), 1235, "{e:?}");

    // COM_PROCESS_KILL (PyMySQL's kill()) by the handshake id ends that connection.
    let d_id = d.id();
    let script = format!(
        "import pymysql\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='app', password='app')\n\
         c.kill({d_id})\n\
         print('killed')\n",
        port = env.router_port()
    );
    let (code, out, err) = common::run_program("python3", &["-c", &script], None);
    assert_eq!((code, out.trim()), (0, "killed"), "{err}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.query_drop("SELECT 1").await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "d's connection still works 10 s after COM_PROCESS_KILL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop((other, boss, admin, c));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_mariadb_cli_cancels_the_running_query() {
    for multiplexing in [true, false] {
        let env = TestEnv::start_with(1, 0, |cfg| cfg.router.multiplexing = multiplexing).await;
        let mut admin = env.admin_conn(env.leader_port("c1")).await;
        let cli = tokio::process::Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                "-P",
                &env.router_port().to_string(),
                "-uapp",
                "-papp",
                "--skip-ssl",
                "-e",
                "SELECT SLEEP(60) AS cli_sleep",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the mariadb client runs (apt-get install -y mariadb-client)");
        let thread = backend_thread_running(&mut admin, "SELECT SLEEP(60) AS cli_sleep").await;
        let pid = cli.id().expect("pid") as i32;
        // SAFETY: sends a signal to the child this test started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let out = tokio::time::timeout(Duration::from_secs(15), cli.wait_with_output())
            .await
            .expect("the client ends within 15 s of Ctrl-C")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Query execution was interrupted"),
            "multiplexing {multiplexing}: {stderr}"
        );
        thread_gone(
            &mut admin,
            thread,
            "AND INFO LIKE 'SELECT SLEEP(60)%'",
            "the backend statement stopped",
        )
        .await;
        drop(admin);
        env.stop().await;
    }
}
