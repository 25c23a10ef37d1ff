//! sysbench through the router: OLTP read/write with prepared statements (libmariadb sends
//! parameter types only with a statement's first execution, and runs BEGIN and COMMIT as
//! prepared statements too), and point selects in the text protocol. No errors, and the data
//! the router wrote is what the leader and its replica hold.

mod common;

use std::time::Duration;

use common::{eventually, run_program, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Runs sysbench against `port` with the connection options and `args`; returns its output
/// after checking that it exited 0 and printed nothing fatal.
async fn sysbench(port: u16, args: &[&str]) -> String {
    let mut all: Vec<String> = vec![
        "--db-driver=mysql".into(),
        "--mysql-host=127.0.0.1".into(),
        format!("--mysql-port={port}"),
        "--mysql-user=app".into(),
        "--mysql-password=app".into(),
        "--mysql-db=sbtest".into(),
        "--tables=2".into(),
        "--table-size=2000".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let shown = all.join(" ");
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_program("sysbench", &refs, None)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "sysbench {shown}\n{out}\n{err}");
    assert!(
        !out.contains("FATAL") && !err.contains("FATAL"),
        "sysbench {shown}\n{out}\n{err}"
    );
    out
}

/// The number after `label` in sysbench's report (`ignored errors:  0  (0.00 per sec.)`).
fn stat(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in sysbench's output:\n{out}"))
}

/// Asserts a run did work and had no errors.
fn assert_clean_run(what: &str, out: &str) {
    assert_eq!(stat(out, "ignored errors:"), 0, "{what}:\n{out}");
    assert_eq!(stat(out, "reconnects:"), 0, "{what}:\n{out}");
    assert!(stat(out, "transactions:") > 0, "{what}:\n{out}");
    assert!(stat(out, "read:") > 0, "{what}:\n{out}");
}

/// (table, checksum) of the sysbench tables, and their row counts.
type TableState = (Vec<(String, Option<u64>)>, Vec<u64>);

async fn try_table_state(conn: &mut Conn) -> Option<TableState> {
    let sums: Vec<(String, Option<u64>)> = conn
        .query("CHECKSUM TABLE sbtest.sbtest1, sbtest.sbtest2")
        .await
        .ok()?;
    let mut counts = Vec::new();
    for t in ["sbtest1", "sbtest2"] {
        let n: u64 = conn
            .query_first(format!("SELECT COUNT(*) FROM sbtest.{t}"))
            .await
            .ok()??;
        counts.push(n);
    }
    Some((sums, counts))
}

async fn table_state(conn: &mut Conn) -> TableState {
    try_table_state(conn)
        .await
        .expect("checksums and row counts of the sysbench tables")
}

/// COM_STMT_EXECUTE commands a server has run.
async fn stmt_executions(admin: &mut Conn) -> u64 {
    let (_, n): (String, u64) = admin
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'")
        .await
        .unwrap()
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_read_write_and_point_selects_run_cleanly_through_the_router() {
    let env = TestEnv::start(1, 1).await;
    let port = env.router_port();
    let mut router = env.router_conn(None).await;
    router.query_drop("CREATE DATABASE sbtest").await.unwrap();

    sysbench(port, &["oltp_read_write", "prepare"]).await;
    let mut admin = env.admin_conn(env.leader_port("c1")).await;
    let executions_before = stmt_executions(&mut admin).await;
    // Prepared statements (sysbench's default), four threads on 2 x 2000 rows; uniform keys
    // so that the threads rarely touch the same rows (sysbench's default concentrates on a
    // few, and the server's deadlocks would count as errors).
    let out = sysbench(
        port,
        &[
            "oltp_read_write",
            "--threads=4",
            "--time=5",
            "--rand-type=uniform",
            "--report-interval=0",
            "run",
        ],
    )
    .await;
    assert_clean_run("oltp_read_write", &out);
    assert!(stat(&out, "write:") > 0, "{out}");
    // The statements really ran as prepared statements on the leader.
    let executions = stmt_executions(&mut admin).await - executions_before;
    assert!(
        executions >= stat(&out, "queries:"),
        "{executions} COM_STMT_EXECUTE on the leader for:\n{out}"
    );

    // Every transaction deleted and re-inserted a row: the row counts stay, and the leader
    // holds exactly what the router shows.
    let mut direct = env.direct_conn(env.leader_port("c1"), None).await;
    let on_leader = table_state(&mut direct).await;
    let via_router = table_state(&mut router).await;
    assert_eq!(via_router, on_leader, "through the router vs on the leader");
    assert_eq!(on_leader.1, vec![2000, 2000]);
    assert!(
        on_leader.0.iter().all(|(_, sum)| sum.is_some()),
        "{on_leader:?}"
    );
    let replica = env.replica_ports("c1")[0];
    eventually(
        Duration::from_secs(30),
        "the replica has the leader's checksums",
        || async {
            let mut c = Conn::new(env.direct_opts(replica, None)).await.ok()?;
            let state = try_table_state(&mut c).await;
            let _ = c.disconnect().await;
            (state.as_ref() == Some(&on_leader)).then_some(())
        },
    )
    .await;

    // Point selects in the text protocol.
    let out = sysbench(
        port,
        &[
            "oltp_point_select",
            "--db-ps-mode=disable",
            "--threads=2",
            "--time=3",
            "--report-interval=0",
            "run",
        ],
    )
    .await;
    assert_clean_run("oltp_point_select", &out);
    drop((router, direct, admin));
    env.stop().await;
}
