//! The admin SQL port through real clients (the `mariadb` CLI and mysql_async): every
//! statement's answer checked against the live topology, router sessions and shard map;
//! switchover and maintenance really applied; roles, scopes, wrong passwords, unknown
//! statements; the audit log of mutating statements; `GET /api/v1/sessions`.

mod common;

use std::time::Duration;

use common::{eventually, mariadb_cli, run_program, TestEnv};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Row};
use router::Secret;
use serde_json::Value;
use switchyard::acl::{hash_password, AdminUser, Role};

const VIEWER_PW: &str = "viewer-pass-1";
const OPS_PW: &str = "ops-pass-1";
const OPS_C2_PW: &str = "ops-c2-pass-1";
const TOKEN: &str = "viewer-token-0123456789";

fn password_user(name: &str, role: Role, password: &str, clusters: Option<&[&str]>) -> AdminUser {
    AdminUser {
        name: name.into(),
        role,
        clusters: clusters.map(|cs| cs.iter().map(|c| c.to_string()).collect()),
        token: None,
        password_hash: Some(Secret::new(hash_password(password).unwrap().as_str())),
    }
}

/// Two clusters of a leader and one replica, keyspace `app` split over both, the admin SQL
/// port on, and users of every kind; the audit log goes to `audit`.
async fn start(audit: &std::path::Path) -> TestEnv {
    let audit = audit.to_path_buf();
    TestEnv::start_with(2, 1, move |cfg| {
        cfg.admin.sql_listen = Some("127.0.0.1:0".into());
        cfg.admin.audit_log = Some(audit);
        cfg.admin.users = vec![
            password_user("viewer", Role::Viewer, VIEWER_PW, None),
            password_user("ops", Role::Operator, OPS_PW, None),
            password_user("ops2", Role::Operator, OPS_C2_PW, Some(&["c2"])),
            AdminUser {
                name: "tok".into(),
                role: Role::Viewer,
                clusters: None,
                token: Some(Secret::new(TOKEN)),
                password_hash: None,
            },
        ];
        cfg.keyspaces = vec![serde_json::from_value(serde_json::json!({
            "name": "app", "default_cluster": "c1",
            "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
            "tables": [{"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"},
                       {"name": "countries", "kind": "reference"}]
        }))
        .unwrap()];
    })
    .await
}

fn sql_port(env: &TestEnv) -> u16 {
    env.app().admin_sql_addr.expect("admin SQL port on").port()
}

async fn connect(env: &TestEnv, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(sql_port(env))
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .enable_cleartext_plugin(true);
    Conn::new(opts).await
}

/// The statement's rows as maps of column name to text (NULL as `None`).
async fn rows(
    conn: &mut Conn,
    sql: &str,
) -> Vec<std::collections::BTreeMap<String, Option<String>>> {
    let result: Vec<Row> = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    result
        .into_iter()
        .map(|r| {
            let names: Vec<String> = r
                .columns_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let v: Option<String> = r.get::<Option<String>, _>(i).flatten();
                    (n, v)
                })
                .collect()
        })
        .collect()
}

/// The server error code of a failed statement.
async fn error_of(conn: &mut Conn, sql: &str) -> (u16, String) {
    match conn.query_drop(sql).await {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("{sql}: expected a server error, got {other:?}"),
    }
}

/// `--batch` output: a header line and tab-separated rows.
fn batch_table(out: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split('\t').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn cli(env: &TestEnv, user: &str, password: &str, sql: &str) -> (i32, String, String) {
    mariadb_cli(sql_port(env), user, password, sql)
}

async fn http_get(env: &TestEnv, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = common::http().get(env.admin_url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("admin API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_roles_errors_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(&dir.path().join("audit.jsonl")).await;
    let topo = env.app().topology.load();

    // The stock CLI, batch output: one row per cluster, leader and epoch as the topology says.
    let (code, out, err) = cli(&env, "viewer", VIEWER_PW, "SHOW CLUSTERS");
    assert_eq!(code, 0, "{err}");
    let table = batch_table(&out);
    assert_eq!(table.len(), 2, "{out}");
    for row in &table {
        let c = topo.cluster(&row["cluster"]).expect("a real cluster");
        assert_eq!(Some(&row["leader"]), c.leader.as_ref(), "{out}");
        assert_eq!(row["epoch"], c.epoch.to_string());
        assert_eq!(row["nodes"], "2");
        assert_eq!(row["phase"], "serving");
    }

    // --table output, case-insensitive with a trailing semicolon.
    let port = sql_port(&env).to_string();
    let pw = format!("-p{VIEWER_PW}");
    let (code, out, err) = run_program(
        "mariadb",
        &[
            "-h127.0.0.1",
            "-P",
            &port,
            "-uviewer",
            &pw,
            "--skip-ssl",
            "--table",
            "-e",
            "show nodes from c1;",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let leader = topo.cluster("c1").unwrap().leader.clone().unwrap();
    let leader_line = out
        .lines()
        .find(|l| l.contains(&format!("| {leader} ")))
        .unwrap_or_else(|| panic!("no line for the leader {leader}:\n{out}"));
    assert!(leader_line.contains("| leader "), "{leader_line}");
    assert!(out.lines().next().unwrap().starts_with("+--"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| c1 ")).count(),
        2,
        "{out}"
    );

    // PyMySQL, without options.
    let script = format!(
        "import pymysql\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='viewer', password='{VIEWER_PW}')\n\
         cur = c.cursor()\n\
         cur.execute('SHOW CLUSTERS')\n\
         print(sorted((r[0], r[1]) for r in cur.fetchall()))\n"
    );
    let (code, out, err) = run_program("python3", &["-c", &script], None);
    assert_eq!(code, 0, "PyMySQL (scripts/install-deps installs it): {err}");
    let want: Vec<String> = topo
        .clusters
        .values()
        .map(|c| format!("('{}', '{}')", c.name, c.leader.as_deref().unwrap()))
        .collect();
    assert_eq!(out.trim(), format!("[{}]", want.join(", ")));

    // mysql_async: every node of every cluster, role and flags as in the topology.
    let mut viewer = connect(&env, "viewer", VIEWER_PW)
        .await
        .expect("viewer logs in");
    let nodes = rows(&mut viewer, "SHOW NODES").await;
    let all: usize = topo.clusters.values().map(|c| c.nodes.len()).sum();
    assert_eq!(nodes.len(), all);
    for n in &nodes {
        let c = topo.cluster(n["cluster"].as_deref().unwrap()).unwrap();
        let addr = n["node"].clone().unwrap();
        let want = if c.leader.as_deref() == Some(addr.as_str()) {
            "leader"
        } else {
            "replica"
        };
        assert_eq!(n["role"].as_deref(), Some(want), "{n:?}");
        assert_eq!(n["maintenance"].as_deref(), Some("No"));
    }

    // The shard map: one row per shard, on the configured clusters.
    let shards = rows(&mut viewer, "SHOW SHARDS").await;
    let got: Vec<(String, String)> = shards
        .iter()
        .map(|s| (s["shard"].clone().unwrap(), s["cluster"].clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![("-80".into(), "c1".into()), ("80-".into(), "c2".into())]
    );
    assert_eq!(
        shards[0]["sharded_tables"].as_deref(),
        Some("customers(id)")
    );
    assert_eq!(shards[0]["reference_tables"].as_deref(), Some("countries"));

    // Router counters, events, help, connect-time variables.
    let status = rows(&mut viewer, "SHOW STATUS").await;
    let var = |name: &str| {
        status
            .iter()
            .find(|r| r["variable_name"].as_deref() == Some(name))
            .and_then(|r| r["value"].clone())
    };
    assert!(
        var("statements").is_some() && var("sessions").is_some(),
        "{status:?}"
    );
    let events = rows(&mut viewer, "SHOW EVENTS LIMIT 3").await;
    assert!(events.len() <= 3);
    assert!(rows(&mut viewer, "HELP").await.len() >= 10);
    let comment: String = viewer
        .query_first("select @@version_comment limit 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(comment, "switchyard admin");

    // A live router connection is listed with its user and database, and goes away with it.
    let mut app = env.router_conn(Some("mysql")).await;
    app.query_drop("SELECT 1").await.unwrap();
    let sessions = rows(&mut viewer, "SHOW SESSIONS").await;
    let mine: Vec<_> = sessions
        .iter()
        .filter(|s| s["user"].as_deref() == Some("app") && s["db"].as_deref() == Some("mysql"))
        .collect();
    assert_eq!(mine.len(), 1, "{sessions:?}");
    let id = mine[0]["id"].clone().unwrap();
    assert_eq!(mine[0]["command"].as_deref(), Some("Sleep"));
    assert!(mine[0]["host"]
        .as_deref()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // ... and in the API, for a viewer; not without credentials.
    let (code, body) = http_get(&env, "/api/v1/sessions", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert!(
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"].as_u64() == id.parse().ok()
                && s["user"] == "app"
                && s["db"] == "mysql"),
        "{body}"
    );
    assert_eq!(http_get(&env, "/api/v1/sessions", None).await.0, 401);
    app.disconnect().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = rows(&mut viewer, "SHOW SESSIONS").await;
        if !s.iter().any(|r| r["id"].as_deref() == Some(id.as_str())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {id} still listed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unknown statements get 1064 and the connection goes on.
    let (code, msg) = error_of(&mut viewer, "DROP TABLE users").await;
    assert_eq!(code, 1064);
    assert!(
        msg.contains("SHOW CLUSTERS") && msg.contains("SWITCHOVER"),
        "{msg}"
    );
    assert_eq!(error_of(&mut viewer, "\u{1}garbage '").await.0, 1064);
    assert_eq!(rows(&mut viewer, "SHOW CLUSTERS").await.len(), 2);
    // An unknown cluster is named.
    let (code, msg) = error_of(&mut viewer, "SHOW NODES FROM nope").await;
    assert_eq!(code, 1049);
    assert!(msg.contains("nope"), "{msg}");
    // A viewer may not switch over, nor read the audit log.
    let (code, msg) = error_of(&mut viewer, "SWITCHOVER c1").await;
    assert_eq!(code, 1227, "{msg}");
    assert!(msg.contains("operator"), "{msg}");
    assert_eq!(error_of(&mut viewer, "SHOW AUDIT").await.0, 1227);
    let (code, _, err) = cli(
        &env,
        "viewer",
        VIEWER_PW,
        "SET MAINTENANCE c1 '127.0.0.1:1' ON",
    );
    assert_ne!(code, 0);
    assert!(err.contains("ERROR 1227 (42000)"), "{err}");

    // A scoped operator sees only its cluster.
    let mut ops2 = connect(&env, "ops2", OPS_C2_PW)
        .await
        .expect("ops2 logs in");
    let clusters = rows(&mut ops2, "SHOW CLUSTERS").await;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["cluster"].as_deref(), Some("c2"));
    assert!(rows(&mut ops2, "SHOW NODES")
        .await
        .iter()
        .all(|n| n["cluster"].as_deref() == Some("c2")));
    assert!(rows(&mut ops2, "SHOW SHARDS")
        .await
        .iter()
        .all(|n| n["cluster"].as_deref() == Some("c2")));
    assert_eq!(error_of(&mut ops2, "SHOW NODES FROM c1").await.0, 1227);

    // Wrong passwords: 1045 (28000) from the CLI and from mysql_async.
    let (code, _, err) = cli(&env, "viewer", "wrong", "SHOW CLUSTERS");
    assert_ne!(code, 0);
    assert!(
        err.contains("ERROR 1045 (28000)") && err.contains("Access denied for user 'viewer'"),
        "{err}"
    );
    match connect(&env, "nobody", "x").await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (1045, "28000"))
        }
        other => panic!("expected 1045, got {other:?}"),
    }
    // A token is a password for its own user; the admin token for `admin`.
    let (code, _, err) = cli(&env, "tok", TOKEN, "SHOW CLUSTERS");
    assert_eq!(code, 0, "{err}");
    assert_ne!(cli(&env, "viewer", TOKEN, "SHOW CLUSTERS").0, 0);
    let mut admin = connect(&env, "admin", "test-token")
        .await
        .expect("admin logs in");
    rows(&mut admin, "SHOW AUDIT").await;

    viewer.disconnect().await.ok();
    ops2.disconnect().await.ok();
    // An idle admin client does not hold the shutdown up: its connection is closed.
    env.stop().await;
    assert!(
        admin.ping().await.is_err(),
        "the admin connection outlived the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_maintenance_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let env = start(&audit_path).await;
    let topo = env.app().topology.load();
    let c1 = topo.cluster("c1").unwrap().clone();
    let old_leader = c1.leader.clone().unwrap();
    let replica = c1
        .nodes
        .iter()
        .find(|n| n.addr != old_leader)
        .unwrap()
        .addr
        .clone();

    // Maintenance on through the CLI: in SHOW NODES and in the API.
    let (code, _, err) = cli(
        &env,
        "ops",
        OPS_PW,
        &format!("SET MAINTENANCE '{replica}' ON"),
    );
    assert_eq!(code, 0, "{err}");
    let mut ops = connect(&env, "ops", OPS_PW).await.expect("ops logs in");
    let nodes = rows(&mut ops, "SHOW NODES FROM c1").await;
    let n = nodes
        .iter()
        .find(|n| n["node"].as_deref() == Some(&replica))
        .unwrap();
    assert_eq!(n["maintenance"].as_deref(), Some("Yes"));
    let (_, body) = http_get(&env, "/api/v1/clusters/c1", Some(TOKEN)).await;
    let flags = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == replica.as_str())
        .map(|n| n["flags"].clone())
        .unwrap();
    assert_eq!(flags["maintenance"], true, "{body}");
    // The OK packet's affected rows and message, as the CLI shows them.
    let port = sql_port(&env).to_string();
    let pw = format!("-p{OPS_PW}");
    let off = format!("set maintenance c1 {replica} off;");
    let (code, out, err) = run_program(
        "mariadb",
        &[
            "-h127.0.0.1",
            "-P",
            &port,
            "-uops",
            &pw,
            "--skip-ssl",
            "-vvv",
            "-e",
            &off,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Query OK, 1 row affected"), "{out}");
    assert!(
        out.contains(&format!("{replica} in c1: maintenance off")),
        "{out}"
    );
    // ... and as mysql_async reads them.
    ops.query_drop(format!("SET MAINTENANCE c1 {replica} ON"))
        .await
        .unwrap();
    assert_eq!(ops.affected_rows(), 1);
    assert_eq!(ops.info(), format!("{replica} in c1: maintenance on"));
    ops.query_drop(format!("SET MAINTENANCE {replica} OFF"))
        .await
        .unwrap();
    let n = rows(&mut ops, "SHOW NODES FROM c1").await;
    assert!(n.iter().all(|n| n["maintenance"].as_deref() == Some("No")));

    // Refused: a viewer, and an operator of another cluster.
    let mut viewer = connect(&env, "viewer", VIEWER_PW).await.unwrap();
    assert_eq!(error_of(&mut viewer, "SWITCHOVER c1").await.0, 1227);
    let mut ops2 = connect(&env, "ops2", OPS_C2_PW).await.unwrap();
    let (code, msg) = error_of(&mut ops2, "SWITCHOVER c1").await;
    assert_eq!(code, 1227);
    assert!(msg.contains("c1"), "{msg}");
    assert_eq!(error_of(&mut ops, "SWITCHOVER nope").await.0, 1049);
    assert_eq!(
        env.app().topology.load().cluster("c1").unwrap().leader,
        Some(old_leader.clone())
    );

    // The switchover runs and answers its steps; the leader moves.
    let steps = rows(&mut ops, &format!("SWITCHOVER c1 TO '{replica}'")).await;
    let last = steps.last().expect("steps");
    assert_eq!(last["kind"].as_deref(), Some("result"));
    assert!(
        last["message"].as_deref().unwrap().contains(&replica),
        "{last:?}"
    );
    eventually(
        Duration::from_secs(10),
        "the new leader is published",
        || async {
            let t = env.app().topology.load();
            (t.cluster("c1").unwrap().leader.as_deref() == Some(replica.as_str())).then_some(())
        },
    )
    .await;
    let clusters = rows(&mut ops, "SHOW CLUSTERS").await;
    let c1_row = clusters
        .iter()
        .find(|r| r["cluster"].as_deref() == Some("c1"))
        .unwrap();
    assert_eq!(c1_row["leader"].as_deref(), Some(replica.as_str()));
    let events = rows(&mut ops, "SHOW EVENTS FROM c1").await;
    assert!(events.iter().any(|e| e["kind"]
        .as_deref()
        .is_some_and(|k| k.starts_with("switchover"))));

    // Every mutating statement, allowed or not, is in the audit log like an API call.
    let lines: Vec<Value> = std::fs::read_to_string(&audit_path)
        .expect("audit log written")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |user: &str, path: &str| {
        lines
            .iter()
            .find(|e| e["user"] == user && e["path"] == path && e["method"] == "SQL")
            .unwrap_or_else(|| panic!("no audit entry for {user}: {path} in {lines:?}"))
    };
    let e = find("ops", &format!("SET MAINTENANCE '{replica}' ON"));
    assert_eq!(
        (e["status"].as_u64(), e["cluster"].as_str()),
        (Some(200), Some("c1"))
    );
    assert_eq!(find("viewer", "SWITCHOVER c1")["status"], 403);
    assert_eq!(find("ops2", "SWITCHOVER c1")["status"], 403);
    assert_eq!(find("ops", "SWITCHOVER nope")["status"], 404);
    let e = find("ops", &format!("SWITCHOVER c1 TO '{replica}'"));
    assert_eq!(
        (e["status"].as_u64(), e["cluster"].as_str()),
        (Some(200), Some("c1"))
    );
    assert!(e["at_ms"].as_u64().unwrap() > 0);
    // The same entries in the API's audit list and in SHOW AUDIT.
    let (_, audit) = http_get(&env, "/api/v1/audit", Some("test-token")).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["method"] == "SQL"),
        "{audit}"
    );
    let mut admin = connect(&env, "admin", "test-token").await.unwrap();
    let shown = rows(&mut admin, "SHOW AUDIT").await;
    assert!(shown
        .iter()
        .any(|r| r["statement"].as_deref() == Some("SWITCHOVER c1")
            && r["status"].as_deref() == Some("403")));

    for c in [ops, ops2, viewer, admin] {
        c.disconnect().await.ok();
    }
    env.stop().await;
}
