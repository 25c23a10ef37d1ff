//! Rebuilding a node: a replica that diverged (a transaction the leader lacks) is kept out by
//! the orchestrator, then rebuilt through the admin API while clients write through the
//! router, and comes back as a replica with the leader's data and history only; a healthy
//! replica rebuilt from the leader through the `switchyard rebuild` command; what is refused;
//! a rebuild that fails halfway, leaving the node kept out (also across a restart), then done
//! again through the admin SQL port; and a rebuild holding off a switchover and a second
//! rebuild.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::writes::{
    ids_on, leader_of, more_writes, port_of, setup, stop_writers, writers_flowing, Writers,
};
use common::{eventually, query_one, TestEnv};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Row};
use orchestrator::gtid::GtidPos;
use serde_json::{json, Value};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// The row only the diverged replica holds.
const ERRANT_ID: u64 = 999_999_999;

async fn get(env: &TestEnv, path: &str) -> (u16, Value) {
    let r = common::http()
        .get(env.admin_url(path))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post(env: &TestEnv, path: &str, body: Value) -> (u16, Value) {
    let r = common::http()
        .post(env.admin_url(path))
        .bearer_auth("test-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `POST .../rebuild`, again while the answer is that another operation runs (the rejoin that
/// kept the node out may hold the cluster for a moment after its event).
async fn rebuild_when_free(env: &TestEnv, node: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/clusters/c1/nodes/{node}/rebuild");
    eventually(
        Duration::from_secs(10),
        "the cluster free for a rebuild",
        || async {
            let (status, answer) = post(env, &path, body.clone()).await;
            let busy = status == 409
                && answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("another operation"));
            (!busy).then_some((status, answer))
        },
    )
    .await
}

/// The cluster's `kept_out` list and the node's role, as the status API shows them.
async fn kept_out_and_role(env: &TestEnv, node: &str) -> (Vec<String>, String) {
    let (status, c) = get(env, "/api/v1/clusters/c1").await;
    assert_eq!(status, 200, "{c}");
    let kept: Vec<String> = c["kept_out"]
        .as_array()
        .unwrap_or_else(|| panic!("no kept_out list: {c}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let role = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == node)
        .map(|n| n["role"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    (kept, role)
}

async fn admin(port: u16) -> Conn {
    Conn::new(common::opts_for(port, "switchyard", "switchyard", None))
        .await
        .expect("admin connection")
}

/// `(Master_Port, Slave_IO_Running, Slave_SQL_Running)` of a node, if it replicates.
async fn replicating_from(port: u16) -> Option<(u16, String, String)> {
    let mut c = admin(port).await;
    let row: Row = c.query_first("SHOW SLAVE STATUS").await.unwrap()?;
    Some((
        row.get::<u16, _>("Master_Port")?,
        row.get::<String, _>("Slave_IO_Running")?,
        row.get::<String, _>("Slave_SQL_Running")?,
    ))
}

/// `CHECKSUM TABLE` of both test tables.
async fn checksums(conn: &mut Conn) -> Vec<i64> {
    let mut sums = Vec::new();
    for t in ["fo.t", "fo.filler"] {
        let row: (String, i64) = conn
            .query_first(format!("CHECKSUM TABLE {t}"))
            .await
            .unwrap()
            .unwrap();
        sums.push(row.1);
    }
    sums
}

/// Waits until the node at `port` has applied all the leader has and holds the same data, and
/// nothing of its own: its `gtid_current_pos` is contained in the leader's.
async fn converged_without_errant(leader: &str, port: u16) {
    let mut l = admin(port_of(leader)).await;
    let lpos: String = query_one(&mut l, "SELECT @@global.gtid_binlog_pos").await;
    let want = checksums(&mut l).await;
    let mut n = admin(port).await;
    eventually(
        Duration::from_secs(30),
        &format!("{port} applies the leader's {lpos}"),
        || async {
            let pos: String = admin(port)
                .await
                .query_first("SELECT @@global.gtid_slave_pos")
                .await
                .ok()??;
            GtidPos::parse(&lpos)
                .unwrap()
                .not_in(&GtidPos::parse(&pos).unwrap())
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(checksums(&mut n).await, want, "CHECKSUM TABLE on {port}");
    let current: String = query_one(&mut n, "SELECT @@global.gtid_current_pos").await;
    let lcurrent: String = query_one(&mut l, "SELECT @@global.gtid_current_pos").await;
    let extra = GtidPos::parse(&current)
        .unwrap()
        .not_in(&GtidPos::parse(&lcurrent).unwrap());
    assert!(
        extra.is_empty(),
        "{port} has GTIDs the leader lacks: {extra:?} (its {current}, the leader's {lcurrent})"
    );
}

/// A rebuilt node back in place: replicating from the leader, no longer kept out, converged
/// with nothing of its own, the diverging row gone, every write `ledger` saw acknowledged
/// present. Returns a connection to it and its ids.
async fn back_in_place(
    env: &TestEnv,
    leader: &str,
    port: u16,
    ledger: &common::writes::Ledger,
) -> (Conn, BTreeSet<u64>) {
    let node = format!("127.0.0.1:{port}");
    let (master_port, io, sql) = replicating_from(port).await.expect("replicating");
    assert_eq!(
        (master_port, io.as_str(), sql.as_str()),
        (port_of(leader), "Yes", "Yes")
    );
    let (kept, role) = kept_out_and_role(env, &node).await;
    assert!(kept.is_empty(), "still kept out: {kept:?}");
    assert_eq!(role, "replica");
    converged_without_errant(leader, port).await;
    let mut n = admin(port).await;
    let ids = ids_on(&mut n).await;
    assert!(!ids.contains(&ERRANT_ID), "the diverging row survived");
    let missing: Vec<_> = ledger.acked_ids().difference(&ids).copied().collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
    (n, ids)
}

/// `fo.t` through the router and 20,000 filler rows on the leader (enough for a copy to take
/// a moment); the leader, its epoch, the two replicas' ports, a connection to the leader.
async fn with_filler(env: &TestEnv) -> (String, u64, [u16; 2], Conn) {
    setup(env).await;
    let (leader, epoch) = leader_of(env, "c1");
    let replicas: Vec<u16> = env.replica_ports("c1");
    let mut l = admin(port_of(&leader)).await;
    l.query_drop(
        "CREATE TABLE fo.filler (id INT PRIMARY KEY, pad VARCHAR(500)); \
         INSERT INTO fo.filler SELECT seq, REPEAT(CHAR(65 + seq % 26), 400) \
         FROM fo.seq_1_to_20000",
    )
    .await
    .unwrap();
    (leader, epoch, [replicas[0], replicas[1]], l)
}

/// A login to the admin SQL port.
async fn admin_sql(env: &TestEnv) -> Conn {
    let sql_port = env.app().admin_sql_addr.expect("admin SQL port").port();
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(sql_port)
            .user(Some("admin"))
            .pass(Some("test-token"))
            .prefer_socket(false)
            .enable_cleartext_plugin(true),
    )
    .await
    .expect("admin SQL login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_out_replica_is_rebuilt_under_writes() {
    let env = TestEnv::start(1, 2).await;
    let (leader, epoch, [bad_port, other_port], mut l) = with_filler(&env).await;
    let lport = port_of(&leader);
    let bad = format!("127.0.0.1:{bad_port}");
    let other = format!("127.0.0.1:{other_port}");
    let writers = writers_flowing(&env, 3, 100).await;
    stop_writers(writers, Duration::from_secs(10)).await;
    let lpos: String = query_one(&mut l, "SELECT @@global.gtid_binlog_pos").await;
    let mut b = admin(bad_port).await;
    assert!(
        b.query_first::<i64, _>(format!("SELECT MASTER_GTID_WAIT('{lpos}', 20)"))
            .await
            .unwrap()
            == Some(0),
        "{bad} applies the leader's {lpos}"
    );

    // The replica diverges: a transaction of its own (binlogged, the admin user may write
    // although it is read-only), then it stops replicating, as a returning old leader would.
    b.query_drop(format!(
        "INSERT INTO fo.t (id, v) VALUES ({ERRANT_ID}, 0); STOP SLAVE; RESET SLAVE ALL"
    ))
    .await
    .unwrap();
    // And an XA transaction left prepared on it (it outlives the session): its locks would
    // hold the rebuild's DROP DATABASE back until it gave up.
    for sql in [
        "XA START 'left'",
        "INSERT INTO fo.filler (id, pad) VALUES (0, 'prepared')",
        "XA END 'left'",
        "XA PREPARE 'left'",
    ] {
        b.query_drop(sql).await.unwrap();
    }
    let errant_pos: String = query_one(&mut b, "SELECT @@global.gtid_binlog_pos").await;
    assert!(
        !GtidPos::parse(&errant_pos)
            .unwrap()
            .not_in(&GtidPos::parse(&lpos).unwrap())
            .is_empty(),
        "{bad}'s {errant_pos} should hold a GTID the leader's {lpos} lacks"
    );
    drop(b);
    eventually(
        Duration::from_secs(30),
        "the diverged replica kept out",
        || async {
            let (kept, role) = kept_out_and_role(&env, &bad).await;
            (kept == vec![bad.clone()] && role == "unknown").then_some(())
        },
    )
    .await;
    let refused = env.app().orchestrator.events("c1").unwrap();
    assert!(
        refused
            .iter()
            .any(|e| e.kind == "rejoin.refused" && e.message.contains(&bad)),
        "{refused:?}"
    );

    // Rebuilt through the API while clients write through the router.
    let writers = Writers::start_at(&env.router_opts(None), 3, 10_000_000);
    more_writes(
        &writers.ledger,
        50,
        Duration::from_secs(10),
        "writes flowing again",
    )
    .await;
    let before = writers.ledger.acked_ids();
    let asked = Instant::now();
    let (status, report) = rebuild_when_free(&env, &bad, json!({})).await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{report}");
    let during: BTreeSet<u64> = writers
        .ledger
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, (_, at))| *at > asked && *at < answered)
        .map(|(id, _)| *id)
        .collect();
    more_writes(
        &writers.ledger,
        50,
        Duration::from_secs(10),
        "writes after the rebuild",
    )
    .await;
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    let errors = ledger.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(
        !during.is_empty(),
        "no write was acknowledged during the rebuild ({} ms)",
        (answered - asked).as_millis()
    );
    assert_eq!(report["node"], bad.as_str(), "{report}");
    assert_eq!(report["leader"], leader.as_str(), "{report}");
    // The other replica, sparing the leader.
    assert_eq!(report["source"], other.as_str(), "{report}");
    assert!(
        report["bytes_copied"].as_u64().unwrap() > 7_000_000,
        "{report}"
    );
    let kinds: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"rebuild.start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"rebuild.done"), "{kinds:?}");
    assert!(!kinds.contains(&"rebuild.failed"), "{kinds:?}");

    // It replicates from the leader, no longer kept out, with the leader's data and history
    // only: the diverging row is gone, the writes made during the rebuild are there.
    let (mut n, ids) = back_in_place(&env, &leader, bad_port, &ledger).await;
    assert!(during.is_subset(&ids) && !before.is_empty() && before.is_subset(&ids));
    let read_only: i64 = query_one(&mut n, "SELECT @@global.read_only").await;
    assert_eq!(read_only, 1);
    let prepared: Vec<mysql_async::Row> = n.query("XA RECOVER").await.unwrap();
    assert!(
        prepared.is_empty(),
        "XA transactions still prepared on {bad}"
    );
    // Nothing of the load went to its binlog: only what it replicated since.
    let binlog: String = query_one(&mut n, "SELECT @@global.gtid_binlog_state").await;
    let own_id: u32 = query_one(&mut n, "SELECT @@global.server_id").await;
    assert!(
        !binlog
            .split(',')
            .any(|g| g.trim().split('-').nth(1) == Some(own_id.to_string().as_str())),
        "{bad}'s binlog has transactions of its own: {binlog}"
    );
    assert_eq!(leader_of(&env, "c1"), (leader.clone(), epoch));

    // The other replica through the command, from the leader, under writes again.
    let writers = Writers::start_at(&env.router_opts(None), 2, 20_000_000);
    more_writes(
        &writers.ledger,
        50,
        Duration::from_secs(10),
        "writes flowing for the command",
    )
    .await;
    let admin_url = format!("http://{}", env.app().admin_addr);
    let run = tokio::process::Command::new(BIN)
        .args(["rebuild", "c1", &other, "--source", &leader])
        .env("SWITCHYARD_ADMIN", &admin_url)
        .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("switchyard rebuild ends within 120 s")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    for want in [
        "rebuild.start".to_owned(),
        "rebuild.step".to_owned(),
        "rebuild.done".to_owned(),
        format!("c1: {other} rebuilt from {leader} ("),
    ] {
        assert!(stdout.contains(&want), "{want:?} missing from:\n{stdout}");
    }
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    assert_eq!(replicating_from(other_port).await.map(|r| r.0), Some(lport));
    converged_without_errant(&leader, other_port).await;
    let ids = ids_on(&mut admin(other_port).await).await;
    let missing: Vec<_> = ledger.acked_ids().difference(&ids).copied().collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
    drop((l, n));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failed_rebuilds_leave_the_node_out_until_one_succeeds() {
    let mut env = TestEnv::start_with(1, 1, |cfg| {
        cfg.admin.sql_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let (leader, epoch) = leader_of(&env, "c1");
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);

    let (status, body) = post(
        &env,
        &format!("/api/v1/clusters/c1/nodes/{leader}/rebuild"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{leader} is the leader of c1")),
        "{msg}"
    );

    let (status, body) = post(
        &env,
        "/api/v1/clusters/c1/nodes/127.0.0.1:1/rebuild",
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no node 127.0.0.1:1"),
        "{body}"
    );
    let (status, body) = post(
        &env,
        &format!("/api/v1/clusters/nope/nodes/{replica}/rebuild"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // An unknown source, a source that is the node itself, an unknown field.
    let path = format!("/api/v1/clusters/c1/nodes/{replica}/rebuild");
    let (status, body) = post(&env, &path, json!({"source": "127.0.0.1:1"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&env, &path, json!({"source": replica})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("from itself"),
        "{body}"
    );
    let (status, body) = post(&env, &path, json!({"from": leader})).await;
    assert_eq!(status, 422, "{body}");

    // Nothing changed: the same leader and epoch, the replica still replicating, not kept out.
    assert_eq!(leader_of(&env, "c1"), (leader.clone(), epoch));
    let (kept, _) = kept_out_and_role(&env, &replica).await;
    assert!(kept.is_empty(), "{kept:?}");
    let (port, io, sql) = replicating_from(port_of(&replica))
        .await
        .expect("still replicating");
    assert_eq!(
        (port, io.as_str(), sql.as_str()),
        (port_of(&leader), "Yes", "Yes")
    );
    let events = env.app().orchestrator.events("c1").unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "rebuild.refused" && e.message.contains("is the leader")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.kind == "rebuild.start"),
        "{events:?}"
    );

    // A rebuild that fails once the node was emptied: the load's statements are larger than
    // the node accepts (its max_allowed_packet lowered). The node stays kept out, read-only,
    // not replicating.
    setup(&env).await;
    let rport = port_of(&replica);
    let mut l = admin(port_of(&leader)).await;
    l.query_drop(
        "CREATE TABLE fo.filler (id INT PRIMARY KEY, pad VARCHAR(500)); \
         INSERT INTO fo.filler SELECT seq, REPEAT('x', 400) FROM fo.seq_1_to_2000; \
         CREATE PROCEDURE fo.p() SELECT 1; \
         CREATE TRIGGER fo.t_bi BEFORE INSERT ON fo.t FOR EACH ROW SET NEW.v = NEW.v + 1; \
         CREATE EVENT fo.ev ON SCHEDULE EVERY 1 HOUR DO DELETE FROM fo.filler",
    )
    .await
    .unwrap();
    let lpos: String = query_one(&mut l, "SELECT @@global.gtid_binlog_pos").await;
    let mut r = admin(rport).await;
    let applied: Option<i64> = r
        .query_first(format!("SELECT MASTER_GTID_WAIT('{lpos}', 20)"))
        .await
        .unwrap();
    assert_eq!(applied, Some(0), "{replica} applies {lpos}");
    r.query_drop("SET GLOBAL max_allowed_packet = 65536")
        .await
        .unwrap();
    let (status, body) = post(&env, &path, json!({})).await;
    assert_eq!(status, 500, "{body}");
    let msg = body["error"].as_str().unwrap();
    println!("the failed rebuild: {msg}");
    assert!(
        msg.contains(&format!("into {replica} failed: mariadb exit status")),
        "{msg}"
    );
    // The client's error, not the rows of the statement it echoes. The server answers an
    // oversized packet with 1153 or just closes the connection first (2006), run to run.
    assert!(
        (msg.contains("ERROR 1153") || msg.contains("ERROR 2006")) && !msg.contains("xxxx"),
        "{msg}"
    );
    let (kept, role) = kept_out_and_role(&env, &replica).await;
    assert_eq!((kept, role.as_str()), (vec![replica.clone()], "unknown"));
    assert_eq!(replicating_from(rport).await, None);
    let read_only: i64 = query_one(&mut r, "SELECT @@global.read_only").await;
    assert_eq!(read_only, 1);
    // Marked, so that a restart does not let it rejoin from an empty binlog.
    let id: u32 = query_one(&mut r, "SELECT @@global.server_id").await;
    let binlog: String = query_one(&mut r, "SELECT @@global.gtid_binlog_pos").await;
    assert_eq!(binlog, format!("{}-{id}-1", u32::MAX));
    let events = env.app().orchestrator.events("c1").unwrap();
    let failed = events
        .iter()
        .rfind(|e| e.kind == "rebuild.failed")
        .unwrap_or_else(|| panic!("no rebuild.failed: {events:?}"));
    assert!(
        failed
            .message
            .contains("stays kept out (read-only, not replicating)"),
        "{failed:?}"
    );

    // Killed and started again (which ends its being kept out), the half-loaded node is kept
    // out again by the rejoin, for the mark, instead of replicating from an empty position.
    drop(r);
    env.local_mut().kill_node("c1", &replica).unwrap();
    eventually(
        Duration::from_secs(30),
        "the killed node seen down (no longer kept out)",
        || async {
            kept_out_and_role(&env, &replica)
                .await
                .0
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let refusals = |env: &TestEnv| {
        env.app()
            .orchestrator
            .events("c1")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "rejoin.refused" && e.message.contains(&replica))
            .count()
    };
    let before = refusals(&env);
    env.local_mut().start_node("c1", &replica).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the restarted half-loaded node kept out again",
        || async {
            let (kept, _) = kept_out_and_role(&env, &replica).await;
            (kept == vec![replica.clone()] && refusals(&env) > before).then_some(())
        },
    )
    .await;
    let events = env.app().orchestrator.events("c1").unwrap();
    let refusal = events.iter().rfind(|e| e.kind == "rejoin.refused").unwrap();
    assert!(
        refusal.message.contains(&format!("{}-{id}-1", u32::MAX)),
        "{refusal:?}"
    );
    let mut r = admin(rport).await;
    assert_eq!(replicating_from(rport).await, None);

    // Done again through the admin SQL port once the cause is gone: its steps as rows.
    r.query_drop("SET GLOBAL max_allowed_packet = 16777216")
        .await
        .unwrap();
    drop(r);
    let mut a = admin_sql(&env).await;
    let refused = a
        .query_drop(format!("REBUILD c1 '{leader}'"))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is the leader of c1"), "{refused}");
    // The rejoin that kept it out may still hold the cluster for a moment: busy is retried.
    let a = tokio::sync::Mutex::new(a);
    let rows: Vec<(u64, String, String, String)> =
        eventually(Duration::from_secs(10), "REBUILD not busy", || async {
            match a
                .lock()
                .await
                .query(format!("REBUILD c1 '{replica}' FROM '{leader}'"))
                .await
            {
                Err(mysql_async::Error::Server(e)) if e.message.contains("another operation") => {
                    None
                }
                r => Some(r.unwrap()),
            }
        })
        .await;
    let a = a.into_inner();
    let kinds: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"rebuild.start"), "{rows:?}");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["rebuild.done", "result"],
        "{rows:?}"
    );
    assert!(
        rows.last()
            .unwrap()
            .3
            .contains(&format!("{replica} rebuilt from {leader}")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.2 == "rebuild.step" && r.3.contains("events disabled on the replica")),
        "{rows:?}"
    );
    let (kept, role) = kept_out_and_role(&env, &replica).await;
    assert!(kept.is_empty(), "{kept:?}");
    assert_eq!(role, "replica");
    converged_without_errant(&leader, rport).await;
    // Stored code came with the data; the leader's event is disabled on the replica, as
    // replication leaves the events it creates.
    let mut r = admin(rport).await;
    let code: (i64, i64, String) = r
        .query_first(
            "SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES \
                     WHERE ROUTINE_SCHEMA = 'fo' AND ROUTINE_NAME = 'p'), \
                    (SELECT COUNT(*) FROM information_schema.TRIGGERS \
                     WHERE TRIGGER_SCHEMA = 'fo' AND TRIGGER_NAME = 't_bi'), \
                    (SELECT STATUS FROM information_schema.EVENTS \
                     WHERE EVENT_SCHEMA = 'fo' AND EVENT_NAME = 'ev')",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, (1, 1, "SLAVESIDE_DISABLED".to_owned()));
    let lstatus: String = query_one(
        &mut l,
        "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'fo'",
    )
    .await;
    assert_eq!(lstatus, "ENABLED");
    let binlog: String = query_one(&mut r, "SELECT @@global.gtid_binlog_pos").await;
    assert!(!binlog.contains(&u32::MAX.to_string()), "{binlog}");

    // A rebuild holds the cluster: while its drop waits for a metadata lock a session of the
    // orchestrator's user holds (such sessions are not killed), a switchover and a second
    // rebuild are refused as busy; once the lock is released it completes.
    r.query_drop("START TRANSACTION; SELECT COUNT(*) FROM fo.t")
        .await
        .unwrap();
    let first = {
        let url = env.admin_url(&path);
        tokio::spawn(async move {
            let r = common::http()
                .post(url)
                .bearer_auth("test-token")
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    eventually(
        Duration::from_secs(20),
        "the rebuild's DROP DATABASE waiting for the metadata lock",
        || async {
            let waiting: Option<i64> = admin(rport)
                .await
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE STATE = 'Waiting for schema metadata lock' \
                        OR STATE = 'Waiting for table metadata lock'",
                )
                .await
                .ok()?;
            (waiting? > 0).then_some(())
        },
    )
    .await;
    let (status, body) = post(&env, "/api/v1/clusters/c1/switchover", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("another operation"),
        "{body}"
    );
    let (status, body) = post(&env, &path, json!({})).await;
    assert_eq!(status, 409, "{body}");
    r.query_drop("COMMIT").await.unwrap();
    let (status, report) = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the held rebuild ends")
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["caught_up"], true, "{report}");
    assert_eq!(leader_of(&env, "c1"), (leader.clone(), epoch));
    drop((a, l, r));
    env.stop().await;
}

/// The pid in the pid file of the server on `port`: it changes when the server is restarted.
async fn server_pid(port: u16) -> String {
    let mut c = admin(port).await;
    let file: String = query_one(&mut c, "SELECT @@global.pid_file").await;
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_physical_rebuild_replaces_the_node_files_with_a_backup_under_writes() {
    let restore = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/physical-restore-local"
    );
    let env = TestEnv::start_with(1, 2, |cfg| {
        // Logical by default: the request asks for physical.
        cfg.failover.rebuild_restore_command = Some(restore.into());
        cfg.admin.sql_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let (leader, epoch, [bad_port, other_port], mut l) = with_filler(&env).await;
    let bad = format!("127.0.0.1:{bad_port}");
    let other = format!("127.0.0.1:{other_port}");
    let lpos: String = query_one(&mut l, "SELECT @@global.gtid_binlog_pos").await;
    let mut b = admin(bad_port).await;
    assert_eq!(
        b.query_first::<i64, _>(format!("SELECT MASTER_GTID_WAIT('{lpos}', 20)"))
            .await
            .unwrap(),
        Some(0),
        "{bad} applies the leader's {lpos}"
    );
    // It diverges and stops replicating, as a returning old leader would.
    b.query_drop(format!(
        "INSERT INTO fo.t (id, v) VALUES ({ERRANT_ID}, 0); STOP SLAVE; RESET SLAVE ALL"
    ))
    .await
    .unwrap();
    drop(b);
    eventually(
        Duration::from_secs(30),
        "the diverged replica kept out",
        || async {
            let (kept, role) = kept_out_and_role(&env, &bad).await;
            (kept == vec![bad.clone()] && role == "unknown").then_some(())
        },
    )
    .await;
    let pid_before = server_pid(bad_port).await;

    // Rebuilt physically through the API while clients write through the router.
    let writers = Writers::start_at(&env.router_opts(None), 3, 10_000_000);
    more_writes(
        &writers.ledger,
        50,
        Duration::from_secs(10),
        "writes flowing",
    )
    .await;
    let (status, report) = rebuild_when_free(&env, &bad, json!({"method": "physical"})).await;
    assert_eq!(status, 200, "{report}");
    more_writes(
        &writers.ledger,
        50,
        Duration::from_secs(10),
        "writes after the rebuild",
    )
    .await;
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    let errors = ledger.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert_eq!(report["method"], "physical", "{report}");
    assert_eq!(report["source"], other.as_str(), "{report}");
    // The files, not the rows: InnoDB's system tablespace and redo log alone are larger than
    // the dump of this data.
    assert!(
        report["bytes_copied"].as_u64().unwrap() > 12_000_000,
        "{report}"
    );
    let messages: Vec<String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["kind"], s["message"]))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("answers again after the restore")),
        "{messages:#?}"
    );
    assert!(
        messages.last().unwrap().contains("rebuild.done"),
        "{messages:#?}"
    );
    assert_ne!(
        server_pid(bad_port).await,
        pid_before,
        "the server was not restarted"
    );
    let (mut n, _) = back_in_place(&env, &leader, bad_port, &ledger).await;
    let read_only: i64 = query_one(&mut n, "SELECT @@global.read_only").await;
    assert_eq!(read_only, 1);
    drop(n);

    // The other replica from the leader (under writes), through the admin SQL port.
    let writers = Writers::start_at(&env.router_opts(None), 2, 20_000_000);
    more_writes(&writers.ledger, 50, Duration::from_secs(10), "writes again").await;
    let mut a = admin_sql(&env).await;
    let rows: Vec<(u64, String, String, String)> = a
        .query(format!("REBUILD c1 '{other}' FROM '{leader}' PHYSICAL"))
        .await
        .unwrap();
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    let last = rows.last().unwrap();
    assert_eq!(last.2, "result", "{rows:?}");
    assert!(
        last.3.contains(&format!("{other} rebuilt from {leader}")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.2 == "rebuild.step" && r.3.contains("(physical)")),
        "{rows:?}"
    );
    converged_without_errant(&leader, other_port).await;
    let ids = ids_on(&mut admin(other_port).await).await;
    let missing: Vec<_> = ledger.acked_ids().difference(&ids).copied().collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
    assert_eq!(leader_of(&env, "c1"), (leader.clone(), epoch));
    drop((a, l));
    env.stop().await;
}
