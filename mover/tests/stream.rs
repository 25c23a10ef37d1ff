//! Streams against real MariaDB servers: a copy and catch-up under a random write load
//! (multi-row transactions, keys moving across the split point, deletes and re-inserts, XA),
//! interrupted and resumed, checked against the source itself; DDL and precondition refusals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mover::stream::{self, FilterSpec, Phase, StreamSpec, TableMove};
use mover::{Endpoint, MoverError};
use mysql_async::prelude::Queryable;
use orchestrator::provision::{LocalClusters, ProvisionSpec};
use rand::{Rng, SeedableRng};
use shard_map::gtid::GtidPos;
use shard_map::vindex::VindexKind;
use shard_map::KeyRange;

/// Two clusters (`replicas` replicas each, no semi-sync): the source's leader, its first
/// replica (if any) and the target's leader, as the mover's endpoints.
async fn servers(
    dir: &std::path::Path,
    replicas: usize,
    timeout: Duration,
) -> (LocalClusters, Endpoint, Option<Endpoint>, Endpoint) {
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = 2;
    spec.replicas = replicas;
    spec.semi_sync = false;
    let local = LocalClusters::start(spec)
        .await
        .unwrap_or_else(|e| panic!("MariaDB must be installed (see scripts/install-deps): {e}"));
    let ep = |addr: &str| Endpoint {
        addr: addr.to_owned(),
        user: "switchyard".into(),
        password: "switchyard".into(),
        timeout,
    };
    let source = ep(&local.clusters()[0].leader);
    let replica = local.clusters()[0].replicas().next().map(|n| ep(&n.addr));
    let target = ep(&local.clusters()[1].leader);
    (local, source, replica, target)
}

async fn two_servers(dir: &std::path::Path) -> (LocalClusters, Endpoint, Endpoint) {
    let (local, a, _, b) = servers(dir, 0, Duration::from_secs(10)).await;
    (local, a, b)
}

/// Creates `app.t` on `ep` with 2,000 rows whose sharding key is `id * factor`.
async fn seed(ep: &Endpoint, factor: i64) -> mysql_async::Conn {
    let mut c = ep.connect().await.unwrap();
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop(TABLE).await.unwrap();
    for chunk in 0..10 {
        let values: Vec<String> = (0..200)
            .map(|i| {
                let id = chunk * 200 + i + 1;
                format!(
                    "({id}, {}, 'row {id}', {id}.5, NOW(6), x'{id:04x}', {id}, NULL)",
                    id * factor
                )
            })
            .collect();
        c.query_drop(format!(
            "INSERT INTO app.t (id, k, v, d, ts, b, u, n) VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    }
    c
}

fn fixed(ep: &Endpoint) -> stream::Locate {
    let ep = ep.clone();
    Arc::new(move || Some(ep.clone()))
}

/// Where the source's leader is now (the test moves it).
type Leader = Arc<std::sync::Mutex<Endpoint>>;

fn current(l: &Leader) -> Endpoint {
    l.lock().unwrap().clone()
}

fn following(l: &Leader) -> stream::Locate {
    let l = l.clone();
    Arc::new(move || Some(current(&l)))
}

const TABLE: &str = "CREATE TABLE app.t (id BIGINT NOT NULL PRIMARY KEY, k BIGINT NOT NULL, \
    v VARCHAR(100) CHARACTER SET utf8mb4, d DECIMAL(12,3), ts DATETIME(6), b BLOB, \
    u INT UNSIGNED, n INT NULL, g BIGINT AS (k * 2) VIRTUAL) ENGINE=InnoDB";

/// The rows of `app.t` whose `k` hashes below 0x80..: computed by MariaDB, not by the mover.
const LOW_HALF: &str = "CAST(CONV(LEFT(MD5(k), 16), 16, 10) AS UNSIGNED) < 9223372036854775808";

fn spec(name: &str) -> StreamSpec {
    let mut s = StreamSpec::new(name, 4_100_001, "app", "app");
    s.tables.push(TableMove {
        table: "t".into(),
        filter: FilterSpec::Range {
            column: "k".into(),
            vindex: VindexKind::Hash,
            range: KeyRange::parse("-80").unwrap(),
        },
    });
    s.chunk_rows = 150;
    s.copy_cycle = Duration::from_millis(150);
    s
}

/// Random writes until told to stop: single rows, multi-row transactions, key changes that
/// move rows across the split, deletes and re-inserts, XA transactions, rollbacks.
async fn workload(leader: Leader, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = |ep: Endpoint| Endpoint {
        user: "app".into(),
        password: "app".into(),
        ..ep
    };
    let mut c_addr = current(&leader).addr;
    let mut c = app(current(&leader)).connect().await.unwrap();
    let mut n = 0u64;
    let mut xa = 0;
    while !stop.load(Ordering::Relaxed) {
        let id: i64 = rng.random_range(1..3000);
        let k: i64 = rng.random_range(-50..100_000);
        let stmts: Vec<String> = match rng.random_range(0..7) {
            0 => vec![format!(
                "REPLACE INTO app.t (id, k, v, d, ts, b, u, n) VALUES ({id}, {k}, 'w{n} é', \
                 {}.125, '2025-03-04 05:06:07.{:06}', x'00ff{:04x}', 4294967295, NULL)",
                rng.random_range(-999..999),
                rng.random_range(0..999_999),
                n % 65536
            )],
            1 => vec![format!("UPDATE app.t SET k = {k}, n = {n} WHERE id = {id}")],
            2 => vec![format!("DELETE FROM app.t WHERE id = {id}")],
            3 => vec![
                "START TRANSACTION".into(),
                format!(
                    "UPDATE app.t SET v = CONCAT(v, 'x') WHERE id BETWEEN {id} AND {}",
                    id + 5
                ),
                format!("DELETE FROM app.t WHERE id = {}", id + 7),
                format!("INSERT IGNORE INTO app.t (id, k) VALUES ({}, {k})", id + 7),
                "COMMIT".into(),
            ],
            4 => {
                xa += 1;
                vec![
                    format!("XA START 'w{seed}-{xa}'"),
                    format!("UPDATE app.t SET k = k + 1, d = NULL WHERE id = {id}"),
                    format!(
                        "INSERT IGNORE INTO app.t (id, k, v) VALUES ({}, {k}, 'xa')",
                        3000 + xa
                    ),
                    format!("XA END 'w{seed}-{xa}'"),
                    format!("XA PREPARE 'w{seed}-{xa}'"),
                    if rng.random_bool(0.8) {
                        format!("XA COMMIT 'w{seed}-{xa}'")
                    } else {
                        format!("XA ROLLBACK 'w{seed}-{xa}'")
                    },
                ]
            }
            5 => vec![
                "START TRANSACTION".into(),
                format!("UPDATE app.t SET k = k + 7 WHERE id = {id}"),
                "ROLLBACK".into(),
            ],
            _ => vec![format!(
                "UPDATE IGNORE app.t SET id = id + 100000 WHERE id = {id}"
            )],
        };
        let mut failed = false;
        for s in &stmts {
            match c.query_drop(s).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e))
                    if e.code == 1062 && s.starts_with("UPDATE IGNORE") => {}
                // Two writers deadlock now and then: the transaction is rolled back.
                Err(mysql_async::Error::Server(e)) if e.code == 1213 || e.code == 1205 => {
                    failed = true;
                    break;
                }
                // The leader moved (read-only now, or gone): write to the new one.
                Err(mysql_async::Error::Server(e)) if e.code == 1290 => {
                    failed = true;
                    break;
                }
                Err(mysql_async::Error::Io(_)) => {
                    failed = true;
                    break;
                }
                Err(e) => panic!("{s}: {e}"),
            }
        }
        if failed {
            if stmts[0].starts_with("XA START") {
                let xid = stmts[0].trim_start_matches("XA START ");
                let _ = c.query_drop(format!("XA END {xid}")).await;
                let _ = c.query_drop(format!("XA ROLLBACK {xid}")).await;
            }
            let _ = c.query_drop("ROLLBACK").await;
            let now = current(&leader);
            if c.query_drop("DO 1").await.is_err() || now.addr != c_addr {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(fresh) = app(now.clone()).connect().await {
                    c = fresh;
                    c_addr = now.addr;
                }
            }
            continue;
        }
        n += 1;
    }
    n
}

async fn source_pos(ep: &Endpoint) -> GtidPos {
    let mut c = ep.connect().await.unwrap();
    let p: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    GtidPos::parse(&p).unwrap()
}

/// Every row of the low half on the source, and every row on the target, as text.
async fn both_sides(src: &Endpoint, tgt: &Endpoint) -> (Vec<String>, Vec<String>) {
    let cols = "CONCAT_WS('|', id, k, IFNULL(v, 'NULL'), IFNULL(d, 'NULL'), IFNULL(ts, 'NULL'), \
                IFNULL(HEX(b), 'NULL'), IFNULL(u, 'NULL'), IFNULL(n, 'NULL'), g)";
    let mut a = src.connect().await.unwrap();
    let mut b = tgt.connect().await.unwrap();
    let s: Vec<String> = a
        .query(format!(
            "SELECT {cols} FROM app.t WHERE {LOW_HALF} ORDER BY id"
        ))
        .await
        .unwrap();
    let t: Vec<String> = b
        .query(format!("SELECT {cols} FROM app.t ORDER BY id"))
        .await
        .unwrap();
    (s, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_under_writes_interrupted_twice_ends_equal_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (local, src, tgt) = two_servers(dir.path()).await;
    seed(&src, 7919).await;

    let spec = spec("split-low");
    stream::prepare(&spec, &src, &tgt).await.unwrap();
    let err = stream::prepare(&spec, &src, &tgt).await.unwrap_err();
    assert!(matches!(err, MoverError::Refused(_)), "{err}");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let leader = Arc::new(std::sync::Mutex::new(src.clone()));
            tokio::spawn(workload(leader, stop.clone(), 7 + i))
        })
        .collect();

    // Start, interrupt mid-copy (the task is aborted as a crash would), resume; twice.
    for round in 0..2 {
        let h = stream::start(spec.clone(), fixed(&src), fixed(&tgt));
        h.wait_until(Duration::from_secs(60), "copying", |s| {
            s.rows_copied > 300 * (round + 1)
        })
        .await
        .unwrap();
        drop(h);
    }
    let h = stream::start(spec.clone(), fixed(&src), fixed(&tgt));
    h.wait_until(Duration::from_secs(120), "copied", |s| {
        s.phase == Phase::Running
    })
    .await
    .unwrap();
    // Keep writing while the stream runs, then interrupt it once more.
    h.wait_until(Duration::from_secs(60), "applying", |s| s.txns_applied > 20)
        .await
        .unwrap();
    drop(h);
    let h = stream::start(spec.clone(), fixed(&src), fixed(&tgt));
    let report = h.diff(Duration::from_secs(60)).await.unwrap();
    assert!(report.is_clean(), "diff under load: {report:?}");
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 100, "the workload ran ({writes} transactions)");

    let end = source_pos(&src).await;
    h.wait_for_pos(&end, Duration::from_secs(60)).await.unwrap();
    let (s, t) = both_sides(&src, &tgt).await;
    assert!(s.len() > 500, "the low half holds rows ({})", s.len());
    assert_eq!(s.len(), t.len(), "row counts");
    assert_eq!(s, t, "the target holds exactly the source's low half");
    let report = h.diff(Duration::from_secs(60)).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tables[0].source_rows as usize, s.len());
    let status = h.status();
    eprintln!("status: {status:?}, writes {writes}");
    h.stop(Duration::from_secs(10)).await;
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddl_on_a_moving_table_stops_the_stream_and_bad_tables_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (local, src, tgt) = two_servers(dir.path()).await;
    let mut c = src.connect().await.unwrap();
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop(TABLE).await.unwrap();
    c.query_drop("CREATE TABLE app.nokey (a INT)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE app.ci (s VARCHAR(10) PRIMARY KEY, k INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO app.t (id, k) VALUES (1, 1), (2, 2)")
        .await
        .unwrap();

    for (table, why) in [
        ("nokey", "no primary key"),
        ("ci", "collation"),
        ("missing", "does not exist"),
    ] {
        let mut s = StreamSpec::new("bad", 4_100_002, "app", "app");
        s.tables.push(TableMove {
            table: table.into(),
            filter: FilterSpec::All,
        });
        let e = stream::prepare(&s, &src, &tgt).await.unwrap_err();
        assert!(e.to_string().contains(why), "{table}: {e}");
    }
    let mut s = spec("bad-column");
    s.tables[0].filter = FilterSpec::Range {
        column: "nope".into(),
        vindex: VindexKind::Hash,
        range: KeyRange::parse("-80").unwrap(),
    };
    let e = stream::prepare(&s, &src, &tgt).await.unwrap_err();
    assert!(e.to_string().contains("no column nope"), "{e}");

    c.query_drop("SET GLOBAL binlog_row_metadata = MINIMAL")
        .await
        .unwrap();
    let e = stream::prepare(&spec("meta"), &src, &tgt)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("binlog_row_metadata"), "{e}");
    c.query_drop("SET GLOBAL binlog_row_metadata = FULL")
        .await
        .unwrap();

    let spec = spec("ddl");
    stream::prepare(&spec, &src, &tgt).await.unwrap();
    let h = stream::start(spec.clone(), fixed(&src), fixed(&tgt));
    h.wait_until(Duration::from_secs(60), "running", |s| {
        s.phase == Phase::Running
    })
    .await
    .unwrap();
    c.query_drop("ALTER TABLE app.t ADD COLUMN extra INT")
        .await
        .unwrap();
    let failed = h
        .wait_until(Duration::from_secs(30), "failed", |s| {
            matches!(s.phase, Phase::Failed { .. })
        })
        .await
        .unwrap();
    let Phase::Failed { error } = failed.phase else {
        unreachable!()
    };
    assert!(error.contains("ADD COLUMN extra"), "{error}");
    // The position stays before the DDL: resuming (after the operator ran it on the target)
    // starts there.
    let ddl_at = source_pos(&src).await;
    assert!(!stream::reached(
        &GtidPos::parse(&failed.pos).unwrap(),
        &ddl_at
    ));
    let e = h.diff(Duration::from_secs(10)).await.unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    h.stop(Duration::from_secs(10)).await;
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_follows_a_switchover_of_its_source_mid_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (local, old, new, tgt) = servers(dir.path(), 1, Duration::from_secs(10)).await;
    let new = new.expect("a replica");
    let mut c = seed(&old, 31).await;
    let leader: Leader = Arc::new(std::sync::Mutex::new(old.clone()));
    let mut spec = spec("follow");
    spec.copy_cycle = Duration::from_millis(100);
    spec.chunk_rows = 50;
    stream::prepare(&spec, &old, &tgt).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(workload(leader.clone(), stop.clone(), 11));
    let h = stream::start(spec.clone(), following(&leader), fixed(&tgt));
    h.wait_until(Duration::from_secs(60), "copying", |s| s.rows_copied > 200)
        .await
        .unwrap();

    // A clean switchover: writes stopped on the old leader, the replica caught up and
    // promoted, writers and stream pointed at it.
    c.query_drop("FLUSH TABLES WITH READ LOCK").await.unwrap();
    c.query_drop("SET GLOBAL read_only = 1").await.unwrap();
    let pos: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let mut r = new.connect().await.unwrap();
    let waited: i64 = r
        .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (pos,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited, 0, "the replica caught up");
    for s in ["STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"] {
        r.query_drop(s).await.unwrap();
    }
    *leader.lock().unwrap() = new.clone();
    c.query_drop("UNLOCK TABLES").await.unwrap();
    let moved = h.status().retries;

    h.wait_until(Duration::from_secs(120), "copied", |s| {
        s.phase == Phase::Running
    })
    .await
    .unwrap();
    h.wait_until(Duration::from_secs(60), "applying on the new leader", |s| {
        s.txns_applied > 50
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let end = source_pos(&new).await;
    h.wait_for_pos(&end, Duration::from_secs(60)).await.unwrap();
    let st = h.status();
    assert!(
        st.retries > moved,
        "the stream restarted on the new leader: {st:?}"
    );
    let (s, t) = both_sides(&new, &tgt).await;
    assert!(s.len() > 300, "rows in the low half ({})", s.len());
    assert_eq!(s, t, "the target holds exactly the new leader's low half");
    let report = h.diff(Duration::from_secs(60)).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    eprintln!("status {st:?}, writes {writes}");
    h.stop(Duration::from_secs(10)).await;
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_source_leader_is_left_within_bounds_for_the_promoted_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (local, old, new, tgt) = servers(dir.path(), 1, Duration::from_secs(2)).await;
    let new = new.expect("a replica");
    let mut c = old.connect().await.unwrap();
    c.query_drop("CREATE DATABASE app").await.unwrap();
    c.query_drop(TABLE).await.unwrap();
    c.query_drop("INSERT INTO app.t (id, k) SELECT seq, seq * 13 FROM app.seq_1_to_500")
        .await
        .unwrap();
    let leader: Leader = Arc::new(std::sync::Mutex::new(old.clone()));
    let spec = spec("frozen");
    stream::prepare(&spec, &old, &tgt).await.unwrap();
    let h = stream::start(spec.clone(), following(&leader), fixed(&tgt));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(workload(leader.clone(), stop.clone(), 21));
    h.wait_until(Duration::from_secs(60), "running", |s| {
        s.phase == Phase::Running && s.txns_applied > 20
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // The replica has everything; then the leader freezes (no reset: every read just waits).
    let pos = source_pos(&old).await;
    let mut r = new.connect().await.unwrap();
    let waited: i64 = r
        .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (pos.to_string(),))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited, 0);
    let pid = local.pid(&old.addr).expect("leader pid") as i32;
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen = h.status().retries;
    // Silence is noticed within three heartbeats; reconnecting to the frozen leader times out
    // (2 s) and the stream keeps retrying.
    h.wait_until(Duration::from_secs(20), "retrying", |s| {
        s.retries > frozen && matches!(s.phase, Phase::Retrying { .. })
    })
    .await
    .unwrap();
    for s in ["STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"] {
        r.query_drop(s).await.unwrap();
    }
    *leader.lock().unwrap() = new.clone();
    r.query_drop("INSERT INTO app.t (id, k, v) VALUES (90001, 1, 'after'), (90002, 2, 'after'), (90003, 3, 'after')")
        .await
        .unwrap();
    let end = source_pos(&new).await;
    h.wait_for_pos(&end, Duration::from_secs(30)).await.unwrap();
    let (s, t) = both_sides(&new, &tgt).await;
    assert_eq!(s, t, "the target holds exactly the new leader's low half");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    h.stop(Duration::from_secs(10)).await;
    drop(local);
}
