//! Local provisioning against real MariaDB servers: replication, read-only replicas,
//! semi-sync, restart on the same directory, and no server left behind.

mod common;

use std::time::{Duration, Instant};

use common::{
    admin, app, eventually, pid_alive, pid_exists, scalar, spec, start, status_var, KillLeftovers,
};
use mysql_async::prelude::Queryable;
use orchestrator::{LocalClusters, ProvisionError};

const WAIT: Duration = Duration::from_secs(20);

/// Asserts that every node of `c1` holds the row `(id, v)`.
async fn assert_row_everywhere(lc: &LocalClusters, id: u32, v: &str) {
    for node in &lc.clusters()[0].nodes {
        let query = format!("SELECT v FROM t.k WHERE id = {id}");
        let got: String = eventually(&format!("row {id} on {}", node.addr), WAIT, || async {
            let mut conn = app(lc, node).await?;
            let v: String = scalar(&mut conn, &query).await?;
            Ok(v)
        })
        .await;
        assert_eq!(got, v, "row {id} on {}", node.addr);
    }
}

/// Asserts the replication roles of `c1`: leader writable with semi-sync master on and every
/// replica as a semi-sync client; replicas read-only, refusing the app user's writes with 1290,
/// semi-sync master off; GTID positions equal everywhere.
async fn assert_roles(lc: &LocalClusters) {
    let c = &lc.clusters()[0];
    let leader = c.leader_node().expect("leader node");
    let mut l = admin(lc, leader).await.expect("admin on leader");
    assert_eq!(
        scalar::<i64>(&mut l, "SELECT @@global.read_only")
            .await
            .expect("ro"),
        0
    );
    assert_eq!(
        scalar::<i64>(&mut l, "SELECT @@global.rpl_semi_sync_master_enabled")
            .await
            .expect("semi"),
        1,
        "semi-sync master on the leader"
    );
    // Its own tmpdir: a server starting in a shared one deletes the others' temporary tables.
    let tmpdir: String = scalar(&mut l, "SELECT @@global.tmpdir")
        .await
        .expect("tmpdir");
    assert_eq!(
        std::path::Path::new(&tmpdir),
        leader.tmp_dir(),
        "the leader's tmpdir"
    );
    let want_clients = (c.nodes.len() - 1).to_string();
    eventually("every replica as a semi-sync client", WAIT, || async {
        let mut l = admin(lc, leader).await?;
        let n = status_var(&mut l, "Rpl_semi_sync_master_clients").await?;
        anyhow::ensure!(n == want_clients, "Rpl_semi_sync_master_clients = {n}");
        Ok(())
    })
    .await;

    for r in c.replicas() {
        let mut a = admin(lc, r).await.expect("admin on replica");
        assert_eq!(
            scalar::<i64>(&mut a, "SELECT @@global.read_only")
                .await
                .expect("ro"),
            1
        );
        assert_eq!(
            scalar::<i64>(&mut a, "SELECT @@global.rpl_semi_sync_master_enabled")
                .await
                .expect("semi"),
            0,
            "semi-sync master must be off on replica {}",
            r.addr
        );
        let mut conn = app(lc, r).await.expect("app on replica");
        match conn
            .query_drop("INSERT INTO t.k VALUES (999, 'nope')")
            .await
        {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1290, "app write on replica {}: {e:?}", r.addr)
            }
            other => panic!(
                "app write on replica {} should fail with 1290, got {other:?}",
                r.addr
            ),
        }
    }

    let want: String = scalar(&mut l, "SELECT @@global.gtid_binlog_pos")
        .await
        .expect("gtid");
    assert!(!want.is_empty(), "the leader has written transactions");
    for n in &c.nodes {
        eventually(&format!("GTID {want} on {}", n.addr), WAIT, || async {
            let mut conn = admin(lc, n).await?;
            let pos: String = scalar(&mut conn, "SELECT @@global.gtid_current_pos").await?;
            anyhow::ensure!(pos == want, "gtid_current_pos = {pos}");
            Ok(())
        })
        .await;
    }
    // No write ever waited out the semi-sync timeout and fell back to asynchronous.
    assert_eq!(
        status_var(&mut l, "Rpl_semi_sync_master_no_tx")
            .await
            .expect("no_tx"),
        "0"
    );
    assert_eq!(
        status_var(&mut l, "Rpl_semi_sync_master_status")
            .await
            .expect("status"),
        "ON"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_replicates_and_restarts_on_the_same_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(dir.path(), 2);

    let began = Instant::now();
    let lc = start(spec.clone()).await;
    eprintln!("fresh start, 1 x 3 nodes: {:?}", began.elapsed());
    let c = &lc.clusters()[0];
    assert_eq!(c.name, "c1");
    assert_eq!(c.nodes.len(), 3);
    let mut ids: Vec<u32> = c.nodes.iter().map(|n| n.server_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "server ids are unique");
    let leader = c.leader_node().expect("leader").clone();
    assert_eq!(leader.addr, c.nodes[0].addr);

    {
        let mut conn = app(&lc, &leader).await.expect("app on leader");
        conn.query_drop("CREATE DATABASE t")
            .await
            .expect("create db");
        conn.query_drop("CREATE TABLE t.k (id INT PRIMARY KEY, v VARCHAR(20))")
            .await
            .expect("create table");
        conn.query_drop("INSERT INTO t.k VALUES (1, 'one')")
            .await
            .expect("insert");
    }
    assert_row_everywhere(&lc, 1, "one").await;
    assert_roles(&lc).await;

    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    let pids = lc.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    lc.stop().await.expect("stop");
    for p in &pids {
        assert!(!pid_exists(*p), "pid {p} still exists after stop");
    }

    let began = Instant::now();
    let lc = start(spec.clone()).await;
    eprintln!("restart, 1 x 3 nodes: {:?}", began.elapsed());
    let c = &lc.clusters()[0];
    let again: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    assert_eq!(again, addrs, "same ports after restart");
    assert_eq!(c.leader, leader.addr, "same leader after restart");
    assert_row_everywhere(&lc, 1, "one").await;
    {
        let mut conn = app(&lc, &leader).await.expect("app on leader");
        conn.query_drop("INSERT INTO t.k VALUES (2, 'two')")
            .await
            .expect("insert");
    }
    assert_row_everywhere(&lc, 2, "two").await;
    assert_roles(&lc).await;

    // Dropping (what a panicking test does) must leave nothing running either.
    let pids = lc.pids();
    assert_eq!(pids.len(), 3);
    drop(lc);
    for p in &pids {
        assert!(!pid_exists(*p), "pid {p} still exists after drop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_run_are_killed_and_the_data_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(dir.path(), 1);
    let lc = start(spec.clone()).await;
    let leader = lc.clusters()[0].leader_node().expect("leader").clone();
    {
        let mut conn = app(&lc, &leader).await.expect("app on leader");
        conn.query_drop("CREATE DATABASE t")
            .await
            .expect("create db");
        conn.query_drop("CREATE TABLE t.k (id INT PRIMARY KEY, v VARCHAR(20))")
            .await
            .expect("create table");
        conn.query_drop("INSERT INTO t.k VALUES (1, 'kept')")
            .await
            .expect("insert");
    }
    let old_pids = lc.pids();
    let _cleanup = KillLeftovers {
        pids: old_pids.clone(),
        dir: lc.dir().to_path_buf(),
    };
    // A crash of the owning process: the handle vanishes without stopping anything.
    std::mem::forget(lc);
    assert!(old_pids.iter().all(|p| pid_alive(*p)));

    // Another shape on the same directory is refused before anything is touched.
    let mut other = spec.clone();
    other.replicas = 2;
    match LocalClusters::start(other).await {
        Err(ProvisionError::State { message, .. }) => {
            assert!(message.contains("asked for"), "{message}")
        }
        other => panic!("a different shape must be refused, got {other:?}"),
    }
    assert!(
        old_pids.iter().all(|p| pid_alive(*p)),
        "refusal kills nothing"
    );

    let lc = start(spec).await;
    for p in &old_pids {
        assert!(!pid_alive(*p), "leftover server {p} still running");
    }
    let new_pids = lc.pids();
    assert_eq!(new_pids.len(), 2);
    assert!(new_pids.iter().all(|p| !old_pids.contains(p)));
    assert_row_everywhere(&lc, 1, "kept").await;
    lc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_fixed_port_is_reported_and_nothing_is_left_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("addr").port();
    let mut spec = spec(dir.path(), 0);
    spec.base_port = Some(port);
    match LocalClusters::start(spec).await {
        Err(ProvisionError::PortInUse { addr }) => assert_eq!(addr, format!("127.0.0.1:{port}")),
        other => panic!("expected PortInUse for a taken base_port, got {other:?}"),
    }
    // The failed server exited by itself; nothing may hold its datadir.
    let pid_file = dir.path().join("c1/n1/mariadbd.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid: u32 = pid.trim().parse().expect("pid");
        assert!(!pid_alive(pid), "server {pid} still running");
    }
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_comes_back_as_leader_with_semi_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lc = start(spec(dir.path(), 1)).await;
    let c = lc.clusters()[0].clone();
    let leader = c.leader_node().expect("leader").clone();
    let replica = c.replicas().next().expect("replica").clone();
    {
        let mut conn = app(&lc, &leader).await.expect("app on leader");
        conn.query_drop("CREATE DATABASE t")
            .await
            .expect("create db");
        conn.query_drop("CREATE TABLE t.k (id INT PRIMARY KEY, v VARCHAR(20))")
            .await
            .expect("create table");
        conn.query_drop("INSERT INTO t.k VALUES (1, 'before')")
            .await
            .expect("insert");
    }
    assert_row_everywhere(&lc, 1, "before").await;

    let pid = lc.pid(&leader.addr).expect("leader pid");
    lc.kill_node("c1", &leader.addr).expect("kill leader");
    assert!(!pid_exists(pid), "killed leader reaped");
    assert_eq!(lc.pid(&leader.addr), None);
    eventually("the replica to notice its leader is gone", WAIT, || async {
        let mut conn = admin(&lc, &replica).await?;
        let row: mysql_async::Row = conn
            .query_first("SHOW SLAVE STATUS")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no slave status"))?;
        let io: String = row.get("Slave_IO_Running").unwrap_or_default();
        anyhow::ensure!(io != "Yes", "Slave_IO_Running = {io}");
        Ok(())
    })
    .await;

    lc.start_node("c1", &leader.addr)
        .await
        .expect("restart leader");
    match lc.start_node("c1", &leader.addr).await {
        Err(ProvisionError::AlreadyRunning { .. }) => {}
        other => panic!("starting a running node must fail, got {other:?}"),
    }
    {
        let mut conn = app(&lc, &leader).await.expect("app on restarted leader");
        conn.query_drop("INSERT INTO t.k VALUES (2, 'after')")
            .await
            .expect("insert");
    }
    assert_row_everywhere(&lc, 2, "after").await;
    assert_roles(&lc).await;
    lc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_semi_sync_replication_is_asynchronous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = spec(dir.path(), 1);
    spec.semi_sync = false;
    let lc = start(spec).await;
    let c = lc.clusters()[0].clone();
    let leader = c.leader_node().expect("leader").clone();
    for n in &c.nodes {
        let mut conn = admin(&lc, n).await.expect("admin");
        let (master, slave): (i64, i64) = (
            scalar(&mut conn, "SELECT @@global.rpl_semi_sync_master_enabled")
                .await
                .expect("master"),
            scalar(&mut conn, "SELECT @@global.rpl_semi_sync_slave_enabled")
                .await
                .expect("slave"),
        );
        assert_eq!((master, slave), (0, 0), "semi-sync off on {}", n.addr);
    }
    {
        let mut conn = app(&lc, &leader).await.expect("app on leader");
        conn.query_drop("CREATE DATABASE t")
            .await
            .expect("create db");
        conn.query_drop("CREATE TABLE t.k (id INT PRIMARY KEY, v VARCHAR(20))")
            .await
            .expect("create table");
        conn.query_drop("INSERT INTO t.k VALUES (1, 'async')")
            .await
            .expect("insert");
    }
    assert_row_everywhere(&lc, 1, "async").await;
    lc.stop().await.expect("stop");
}
