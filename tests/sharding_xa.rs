//! Atomic writes over several shards: multi-row INSERTs cut by shard, reference-table writes,
//! UPDATE/DELETE over several shards and explicit transactions over both clusters commit on
//! every shard or on none (XA two-phase commit with a logged decision); a router killed
//! between the phases is resolved when it starts again; concurrent transfers keep a bank's
//! total.

mod common;

use std::time::Duration;

use common::process::{free_port, write_serve_config, Serve, ServeConfig};
use common::{eventually, query_one, shard_of, TestEnv, SHARDS};
use mysql_async::prelude::*;
use mysql_async::Conn;

fn cluster_of(id: i64) -> &'static str {
    SHARDS[shard_of(id)].2
}

/// The first id from `from` whose shard is on `cluster`.
fn id_on(cluster: &str, from: i64) -> i64 {
    (from..).find(|i| cluster_of(*i) == cluster).unwrap()
}

fn server_code(r: Result<(), mysql_async::Error>, what: &str) -> u16 {
    match r {
        Err(mysql_async::Error::Server(e)) => e.code,
        other => panic!("{what}: expected a server error, got {other:?}"),
    }
}

async fn create_tables(c: &mut Conn) {
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(20), \
         balance BIGINT NOT NULL DEFAULT 0)",
    )
    .await
    .unwrap();
    c.query_drop("CREATE TABLE countries (code CHAR(2) PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE settings (k INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
}

/// Direct connections to every shard database: (shard index, connection).
async fn shard_conns(env: &TestEnv) -> Vec<Conn> {
    let mut out = Vec::new();
    for (_, _, cluster, db) in SHARDS {
        out.push(env.direct_conn(env.leader_port(cluster), Some(db)).await);
    }
    out
}

/// The ids of `customers` on each shard, read directly.
async fn ids_per_shard(conns: &mut [Conn]) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for c in conns.iter_mut() {
        out.push(
            c.query("SELECT id FROM customers ORDER BY id")
                .await
                .unwrap(),
        );
    }
    out
}

/// Prepared XA branches on a server (data column, as text).
async fn xa_recover(port: u16) -> Vec<String> {
    let mut c = Conn::new(common::opts_for(port, "switchyard", "switchyard", None))
        .await
        .expect("admin connection");
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = c.query("XA RECOVER").await.unwrap();
    rows.into_iter()
        .map(|r| String::from_utf8_lossy(&r.3).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_several_shards_commit_everywhere_or_nowhere() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    create_tables(&mut c).await;
    let mut shards = shard_conns(&env).await;

    // One INSERT with rows for every shard: each shard gets exactly its rows.
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, 'n{i}')")).collect();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 20);
    let per_shard = ids_per_shard(&mut shards).await;
    for (i, ids) in per_shard.iter().enumerate() {
        let want: Vec<i64> = (1..=20).filter(|id| shard_of(*id) == i).collect();
        assert_eq!(ids, &want, "shard {i}");
    }

    // One row is a duplicate on its shard: nothing of the statement lands anywhere.
    let dup = id_on("c2", 1);
    let fresh: Vec<i64> = (100..110).collect();
    let mut rows: Vec<String> = fresh.iter().map(|i| format!("({i}, 'x')")).collect();
    rows.push(format!("({dup}, 'dup')"));
    let r = c
        .query_drop(format!(
            "INSERT INTO customers (id, name) VALUES {}",
            rows.join(",")
        ))
        .await;
    assert_eq!(server_code(r, "duplicate in a split insert"), 1062);
    for (i, ids) in ids_per_shard(&mut shards).await.iter().enumerate() {
        assert!(
            ids.iter().all(|id| !fresh.contains(id)),
            "shard {i} kept rows of a failed insert: {ids:?}"
        );
    }

    // IGNORE and REPLACE survive the cut: rows are counted as each shard counts them.
    let (n1, n2) = (id_on("c1", 150), id_on("c2", 150));
    c.query_drop(format!(
        "INSERT IGNORE INTO customers (id, name) VALUES ({dup}, 'd'), ({n1}, 'i'), ({n2}, 'i')"
    ))
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 2, "the duplicate is skipped");
    c.query_drop(format!(
        "REPLACE INTO customers (id, name) VALUES ({n1}, 'r'), ({n2}, 'r')"
    ))
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 4, "each replaced row counts twice");

    // ON DUPLICATE KEY UPDATE and prepared parameters survive the cut.
    let (a, b) = (id_on("c1", 200), id_on("c2", 200));
    c.exec_drop(
        "INSERT INTO customers (id, name) VALUES (?, ?), (?, ?)",
        (a, "pa", b, "pb"),
    )
    .await
    .unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({a}, 'x'), ({b}, 'y') \
         ON DUPLICATE KEY UPDATE name = CONCAT(name, '!')"
    ))
    .await
    .unwrap();
    for (id, want) in [(a, "pa!"), (b, "pb!")] {
        let name: String = query_one(
            &mut c,
            &format!("SELECT name FROM customers WHERE id = {id}"),
        )
        .await;
        assert_eq!(name, want);
    }

    // Reference tables: every copy, one copy's row count.
    c.query_drop("INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany')")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 2);
    c.query_drop("UPDATE countries SET name = 'FR' WHERE code = 'fr'")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    for s in shards.iter_mut() {
        let n: String =
            query_one(s, "SELECT GROUP_CONCAT(name ORDER BY code) FROM countries").await;
        assert_eq!(n, "Germany,FR");
    }

    // UPDATE and DELETE over several shards: rows counted over all of them.
    c.query_drop("UPDATE customers SET balance = 5 WHERE id <= 20")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 20);
    let (x, y) = (id_on("c1", 1), id_on("c2", 1));
    c.query_drop(format!("DELETE FROM customers WHERE id IN ({x}, {y})"))
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 2);
    let r = c
        .query_drop("UPDATE customers SET balance = 1 ORDER BY id LIMIT 2")
        .await;
    assert_eq!(server_code(r, "UPDATE with LIMIT over shards"), 1235);

    // An explicit transaction over both clusters: ROLLBACK leaves nothing, COMMIT all.
    let (p, q) = (id_on("c1", 300), id_on("c2", 300));
    for commit in [false, true] {
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop(format!(
            "INSERT INTO customers (id, name) VALUES ({p}, 'p')"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO customers (id, name) VALUES ({q}, 'q')"
        ))
        .await
        .unwrap();
        let seen: Option<String> = c
            .query_first(format!("SELECT name FROM customers WHERE id = {p}"))
            .await
            .unwrap();
        assert_eq!(
            seen.as_deref(),
            Some("p"),
            "a transaction reads its own writes"
        );
        c.query_drop(if commit { "COMMIT" } else { "ROLLBACK" })
            .await
            .unwrap();
        let n: i64 = query_one(
            &mut c,
            &format!("SELECT COUNT(*) FROM customers WHERE id IN ({p}, {q})"),
        )
        .await;
        assert_eq!(n, if commit { 2 } else { 0 }, "commit={commit}");
    }

    // Unsharded tables (on the keyspace's default cluster) join the same transaction.
    let u = id_on("c2", 350);
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({u})"))
        .await
        .unwrap();
    c.query_drop("INSERT INTO settings VALUES (1, 1)")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let n: i64 = query_one(&mut c, "SELECT COUNT(*) FROM settings").await;
    assert_eq!(n, 0);
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({u})"))
        .await
        .unwrap();
    c.query_drop("INSERT INTO settings VALUES (1, 1)")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {u}"),
    )
    .await;
    let m: i64 = query_one(&mut c, "SELECT COUNT(*) FROM settings").await;
    assert_eq!((n, m), (1, 1));

    // A multi-shard statement failing inside a transaction is undone on every shard, and the
    // transaction goes on, as on one server.
    let r_id = id_on("c2", 400);
    let other = id_on("c1", 400);
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({r_id})"))
        .await
        .unwrap();
    let r = c
        .query_drop(format!(
            "INSERT INTO customers (id) VALUES ({other}), ({}), ({p})",
            id_on("c2", r_id + 1)
        ))
        .await;
    assert_eq!(server_code(r, "duplicate inside a transaction"), 1062);
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {other}"),
    )
    .await;
    assert_eq!(n, 0, "the failed statement's rows are undone");
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {r_id}"),
    )
    .await;
    assert_eq!(n, 1, "the transaction's earlier write stays");
    c.query_drop("ROLLBACK").await.unwrap();
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {r_id}"),
    )
    .await;
    assert_eq!(n, 0);

    // autocommit=0 transactions are distributed too.
    let (s1, s2) = (id_on("c1", 500), id_on("c2", 500));
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({s1})"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({s2})"))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 1").await.unwrap();
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id IN ({s1}, {s2})"),
    )
    .await;
    assert_eq!(n, 2);

    // A branch lost under the transaction (its connection killed): the statement fails, the
    // transaction is rolled back everywhere, later statements get 1213 until ROLLBACK.
    let (k1, k2) = (id_on("c1", 600), id_on("c2", 600));
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({k1})"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({k2})"))
        .await
        .unwrap();
    let mut admin2 = env.admin_conn(env.leader_port("c2")).await;
    let thread: u64 = query_one(
        &mut admin2,
        "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX",
    )
    .await;
    admin2
        .query_drop(format!("KILL CONNECTION {thread}"))
        .await
        .unwrap();
    let r = c
        .query_drop(format!("UPDATE customers SET name = 'k' WHERE id = {k2}"))
        .await;
    assert!(r.is_err(), "a statement on the lost branch fails");
    let r = c
        .query_drop(format!("UPDATE customers SET name = 'k' WHERE id = {k1}"))
        .await;
    assert_eq!(server_code(r, "statement after a lost branch"), 1213);
    let r = c.query_drop("COMMIT").await;
    assert_eq!(server_code(r, "COMMIT after a lost branch"), 1213);
    let n: i64 = query_one(
        &mut c,
        &format!("SELECT COUNT(*) FROM customers WHERE id IN ({k1}, {k2})"),
    )
    .await;
    assert_eq!(n, 0, "nothing of the lost transaction is committed");

    // A client that leaves inside a transaction leaves nothing behind.
    let mut gone = env.router_conn(Some("app")).await;
    gone.query_drop("BEGIN").await.unwrap();
    gone.query_drop(format!("INSERT INTO customers (id) VALUES ({k1})"))
        .await
        .unwrap();
    gone.query_drop(format!("INSERT INTO customers (id) VALUES ({k2})"))
        .await
        .unwrap();
    drop(gone);
    eventually(
        Duration::from_secs(10),
        "the left transaction rolled back",
        || {
            let opts = env.direct_opts(env.leader_port("c1"), Some(SHARDS[shard_of(k1)].3));
            async move {
                let mut d = Conn::new(opts).await.ok()?;
                let rows: Vec<i64> = d
                    .query(format!("SELECT id FROM customers WHERE id = {k1}"))
                    .await
                    .ok()?;
                rows.is_empty().then_some(())
            }
        },
    )
    .await;
    c.query_drop(format!("INSERT INTO customers (id) VALUES ({k1}), ({k2})"))
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 2);

    for cluster in ["c1", "c2"] {
        assert!(xa_recover(env.leader_port(cluster)).await.is_empty());
    }
    // Decisions are deleted once every branch committed (just after the reply).
    let opts = env.direct_opts(env.leader_port("c1"), None);
    eventually(Duration::from_secs(10), "decisions deleted", || {
        let opts = opts.clone();
        async move {
            let mut c = Conn::new(opts).await.ok()?;
            let n: i64 = c
                .query_first("SELECT COUNT(*) FROM switchyard.xa_decisions")
                .await
                .ok()??;
            (n == 0).then_some(())
        }
    })
    .await;
    drop(c);
    drop(shards);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    create_tables(&mut c).await;
    const ACCOUNTS: i64 = 16;
    const START: i64 = 1000;
    let values: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, 'acct', {START})"))
        .collect();
    c.query_drop(format!(
        "INSERT INTO customers (id, name, balance) VALUES {}",
        values.join(",")
    ))
    .await
    .unwrap();
    let opts = env.router_opts(Some("app"));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.unwrap();
            // Deadlocks across clusters are not detected by either server: they end in a
            // lock wait timeout, kept short here.
            c.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
                .await
                .unwrap();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let (mut done, mut retries) = (0, 0);
            while done < 40 {
                let from = (next() % ACCOUNTS as u64) as i64 + 1;
                let to = (next() % ACCOUNTS as u64) as i64 + 1;
                if from == to {
                    continue;
                }
                let amount = (next() % 50) as i64 + 1;
                let r: Result<(), mysql_async::Error> = async {
                    c.query_drop("BEGIN").await?;
                    if t % 2 == 0 {
                        c.query_drop(format!(
                            "UPDATE customers SET balance = balance - {amount} WHERE id = {from}"
                        ))
                        .await?;
                        c.query_drop(format!(
                            "UPDATE customers SET balance = balance + {amount} WHERE id = {to}"
                        ))
                        .await?;
                    } else {
                        // Prepared statements take the same way.
                        let sql = "UPDATE customers SET balance = balance + ? WHERE id = ?";
                        c.exec_drop(sql, (-amount, from)).await?;
                        c.exec_drop(sql, (amount, to)).await?;
                    }
                    c.query_drop("COMMIT").await
                }
                .await;
                match r {
                    Ok(()) => done += 1,
                    Err(mysql_async::Error::Server(e)) if [1213, 1205].contains(&e.code) => {
                        retries += 1;
                        c.query_drop("ROLLBACK").await.unwrap();
                    }
                    Err(e) => panic!("transfer {from}->{to}: {e}"),
                }
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    eprintln!("transfers done with {retries} retries");
    let mut total = 0i64;
    let mut rows = 0i64;
    for mut s in shard_conns(&env).await {
        let (n, sum): (i64, i64) = s
            .query_first(
                "SELECT COUNT(*), CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM customers",
            )
            .await
            .unwrap()
            .unwrap();
        rows += n;
        total += sum;
    }
    assert_eq!((rows, total), (ACCOUNTS, ACCOUNTS * START));
    for cluster in ["c1", "c2"] {
        assert!(xa_recover(env.leader_port(cluster)).await.is_empty());
    }
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_between_phases_is_resolved_when_it_starts_again() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    create_tables(&mut c).await;
    drop(c);

    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write_serve_config(
        &env,
        &path,
        ServeConfig {
            port,
            admin,
            router_id: "crash-test",
            dead: &[],
            extra: "",
        },
    );
    let router_opts = common::opts_for(port, "app", "app", Some("app"));
    let connect = || async {
        eventually(Duration::from_secs(30), "the router to accept", || {
            let o = router_opts.clone();
            async move { Conn::new(o).await.ok() }
        })
        .await
    };
    let leaders = [env.leader_port("c1"), env.leader_port("c2")];

    for (round, point) in ["xa-after-prepare", "xa-after-decision"].iter().enumerate() {
        let (a, b) = (
            id_on("c1", 1000 * (round as i64 + 1)),
            id_on("c2", 1000 * (round as i64 + 1)),
        );
        let mut serve = Serve::start(&path, Some(point));
        let mut c = connect().await;
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop(format!(
            "INSERT INTO customers (id, name) VALUES ({a}, 'a')"
        ))
        .await
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO customers (id, name) VALUES ({b}, 'b')"
        ))
        .await
        .unwrap();
        let r = c.query_drop("COMMIT").await;
        assert!(r.is_err(), "{point}: the router dies during COMMIT");
        let status = serve.exited(Duration::from_secs(20)).await;
        assert!(!status.success(), "{point}: aborted, not exited cleanly");

        // The failpoint hit between the phases: both branches are prepared.
        for port in leaders {
            let prepared = eventually(Duration::from_secs(10), "a prepared branch", || async {
                let x = xa_recover(port).await;
                (x.iter().any(|d| d.starts_with("sy:crash-test:"))).then_some(x)
            })
            .await;
            assert_eq!(prepared.len(), 1, "{point}: {prepared:?}");
        }

        // Restarted without the failpoint, the router resolves them.
        let _serve = Serve::start(&path, None);
        for port in leaders {
            eventually(
                Duration::from_secs(30),
                "no prepared branch left",
                || async { xa_recover(port).await.is_empty().then_some(()) },
            )
            .await;
        }
        let mut n = 0i64;
        for (_, _, cluster, db) in SHARDS {
            let mut s = env.direct_conn(env.leader_port(cluster), Some(db)).await;
            n += query_one::<i64>(
                &mut s,
                &format!("SELECT COUNT(*) FROM customers WHERE id IN ({a}, {b})"),
            )
            .await;
        }
        let want = if *point == "xa-after-decision" { 2 } else { 0 };
        assert_eq!(n, want, "{point}: rows after recovery");
        let opts = env.direct_opts(leaders[0], None);
        eventually(Duration::from_secs(10), "the decision log tidied", || {
            let opts = opts.clone();
            async move {
                let mut c = Conn::new(opts).await.ok()?;
                let n: i64 = c
                    .query_first("SELECT COUNT(*) FROM switchyard.xa_decisions")
                    .await
                    .ok()??;
                (n == 0).then_some(())
            }
        })
        .await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_increment_ids_come_from_one_sequence_across_shards() {
    let env = TestEnv::start_sharded(2, 4).await;
    let mut c = env.router_conn(None).await;
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop("USE app").await.unwrap();
    c.query_drop("CREATE TABLE customers (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    // One row at a time: the reply's insert id and LAST_INSERT_ID() are the generated id,
    // and the row is found by it (on the shard the id hashes to).
    let mut ids = Vec::new();
    for i in 0..30 {
        let sql = if i % 2 == 0 {
            format!("INSERT INTO customers (name) VALUES ('n{i}')")
        } else {
            format!("INSERT INTO customers VALUES (NULL, 'n{i}')")
        };
        c.query_drop(sql).await.unwrap();
        let id = c.last_insert_id().expect("an insert id");
        let last: u64 = query_one(&mut c, "SELECT LAST_INSERT_ID()").await;
        assert_eq!(last, id);
        let name: String = query_one(
            &mut c,
            &format!("SELECT name FROM customers WHERE id = {id}"),
        )
        .await;
        assert_eq!(name, format!("n{i}"));
        ids.push(id);
    }
    // Several rows over several shards: the first generated id is reported.
    c.query_drop("INSERT INTO customers (name) VALUES ('a'), ('b'), ('c'), ('d')")
        .await
        .unwrap();
    let first = c.last_insert_id().unwrap();
    assert_eq!(c.affected_rows(), 4);
    let last: u64 = query_one(&mut c, "SELECT LAST_INSERT_ID()").await;
    assert_eq!(last, first);
    let a: u64 = query_one(&mut c, "SELECT id FROM customers WHERE name = 'a'").await;
    assert_eq!(a, first);
    // Prepared, with the id left NULL.
    c.exec_drop("INSERT INTO customers (id, name) VALUES (NULL, ?)", ("p",))
        .await
        .unwrap();
    let p = c.last_insert_id().unwrap();
    let name: String = query_one(
        &mut c,
        &format!("SELECT name FROM customers WHERE id = {p}"),
    )
    .await;
    assert_eq!(name, "p");

    // Every id once, over more than one shard.
    let mut all = Vec::new();
    let mut used = 0;
    for mut s in shard_conns(&env).await {
        let mine: Vec<u64> = s.query("SELECT id FROM customers").await.unwrap();
        used += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((all.len(), n), (35, 35));
    assert!(used > 1, "rows are spread over the shards");
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_branches_survive_a_participants_failover_and_commit_on_its_new_leader() {
    let mut env = TestEnv::start_sharded_replicated(2, 1, 4).await;
    let mut c = env.router_conn(None).await;
    create_tables(&mut c).await;
    drop(c);
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write_serve_config(
        &env,
        &path,
        ServeConfig {
            port,
            admin,
            router_id: "crash-test",
            dead: &[],
            extra: "",
        },
    );
    let router_opts = common::opts_for(port, "app", "app", Some("app"));
    let connect = || async {
        eventually(Duration::from_secs(30), "the router to accept", || {
            let o = router_opts.clone();
            async move { Conn::new(o).await.ok() }
        })
        .await
    };

    // The router dies with the decision logged and both branches prepared.
    let (a, b) = (id_on("c1", 1), id_on("c2", 1));
    let mut serve = Serve::start(&path, Some("xa-after-decision"));
    let mut c = connect().await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({a}, 'a')"
    ))
    .await
    .unwrap();
    c.query_drop(format!(
        "INSERT INTO customers (id, name) VALUES ({b}, 'b')"
    ))
    .await
    .unwrap();
    assert!(c.query_drop("COMMIT").await.is_err());
    assert!(!serve.exited(Duration::from_secs(20)).await.success());
    drop(serve);

    // c2's prepared branch reaches its replica; then c2's leader dies and the replica is
    // promoted.
    let old = env.leader_port("c2");
    let replica = env.replica_ports("c2")[0];
    eventually(
        Duration::from_secs(20),
        "the prepared branch on c2's replica",
        || async { (!xa_recover(replica).await.is_empty()).then_some(()) },
    )
    .await;
    let old_addr = format!("127.0.0.1:{old}");
    env.local_mut().kill_node("c2", &old_addr).unwrap();
    let new_leader = eventually(Duration::from_secs(30), "c2's new leader", || {
        let topo = env.app().topology.load();
        let leader = topo
            .cluster("c2")
            .and_then(|c| c.leader.clone())
            .filter(|l| *l != old_addr);
        async move { leader }
    })
    .await;
    let new_port: u16 = new_leader.rsplit(':').next().unwrap().parse().unwrap();

    // Restarted over the clusters as they are now, the router commits both branches.
    write_serve_config(
        &env,
        &path,
        ServeConfig {
            port,
            admin,
            router_id: "crash-test",
            dead: &[format!("127.0.0.1:{old}")],
            extra: "",
        },
    );
    let _serve = Serve::start(&path, None);
    for p in [env.leader_port("c1"), new_port] {
        eventually(
            Duration::from_secs(30),
            "no prepared branch left",
            || async { xa_recover(p).await.is_empty().then_some(()) },
        )
        .await;
    }
    let mut d1 = env
        .direct_conn(env.leader_port("c1"), Some(SHARDS[shard_of(a)].3))
        .await;
    let mut d2 = env.direct_conn(new_port, Some(SHARDS[shard_of(b)].3)).await;
    let n1: i64 = query_one(
        &mut d1,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {a}"),
    )
    .await;
    let n2: i64 = query_one(
        &mut d2,
        &format!("SELECT COUNT(*) FROM customers WHERE id = {b}"),
    )
    .await;
    assert_eq!((n1, n2), (1, 1), "committed on c1 and on c2's new leader");
    drop((d1, d2));
    env.stop().await;
}
