//! Rejoin scenarios against real servers: after a failover the old leader comes back and
//! rejoins as a replica of the new one; or, holding a transaction nobody received, it is
//! fenced and kept out.

mod common;

use common::{
    assert_replica_of, assert_same_everywhere, create_table, eventually, insert_rows, scalar,
    Scenario, WAIT,
};
use mysql_async::prelude::Queryable;
use orchestrator::OrchestratorSettings;
use shard_map::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_leader_rejoins_as_a_replica() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 50).await.expect("rows");
    drop(c);

    s.kill(&old);
    let new = s.wait_new_epoch(epoch).await.leader.expect("new leader");
    let mut w = s.app(&new).await.expect("app");
    insert_rows(&mut w, 50, 60)
        .await
        .expect("rows on the new leader");
    // As the sandbox does on a new epoch: the state file follows the leader, so the old
    // leader restarts read-only.
    s.lc.set_leader("c1", &new).expect("set leader");
    s.lc.start_node("c1", &old)
        .await
        .expect("restart the old leader");

    let done = s.wait_event("rejoin.done", &old).await;
    assert!(done.message.contains(&new), "{done:?}");
    assert_replica_of(&s, &old, &new).await;
    assert_same_everywhere(&s, &s.addrs()).await;
    eventually("the old leader published as a replica", WAIT, || async {
        let c = s.cluster();
        let role = c.node(&old).map(|n| n.role);
        anyhow::ensure!(role == Some(Role::Replica), "{role:?}");
        anyhow::ensure!(c.leader.as_deref() == Some(new.as_str()));
        Ok(())
    })
    .await;
    // Semi-sync comes back with the rejoined replica.
    let mut a = s.admin(&new).await.expect("admin");
    let on: i64 = scalar(&mut a, "SELECT @@global.rpl_semi_sync_master_enabled")
        .await
        .expect("flag");
    assert_eq!(on, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_is_refused_when_the_old_leader_has_extra_transactions() {
    // Async: with semi-sync the write below would wait for an acknowledgement.
    let settings = OrchestratorSettings {
        failover_even_if_lagging: true,
        ..OrchestratorSettings::default()
    };
    let mut s = Scenario::start(2, false, settings).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 10).await.expect("rows");
    let replicas: Vec<String> = s.addrs().into_iter().filter(|a| *a != old).collect();
    for addr in &replicas {
        // Wait for the rows, then cut the replica off.
        let ten = eventually("the rows replicated", WAIT, || async {
            let mut a = s.admin(addr).await?;
            let n: i64 = scalar(&mut a, "SELECT COUNT(*) FROM t.k").await?;
            anyhow::ensure!(n == 10, "{n} rows");
            Ok(a)
        })
        .await;
        let mut a = ten;
        a.query_drop("STOP SLAVE IO_THREAD").await.expect("stop IO");
    }
    insert_rows(&mut c, 10, 11)
        .await
        .expect("a write nobody receives");
    let extra: String = scalar(&mut c, "SELECT @@global.gtid_binlog_pos")
        .await
        .expect("position");
    drop(c);

    s.kill(&old);
    let new = s.wait_new_epoch(epoch).await.leader.expect("new leader");
    // Restarted as the leader the state file still names: writable, until fenced.
    s.lc.start_node("c1", &old)
        .await
        .expect("restart the old leader");

    let refused = s.wait_event("rejoin.refused", &old).await;
    assert!(
        refused.message.contains(&extra),
        "the extra GTID {extra} is named: {refused:?}"
    );
    let mut a = s.admin(&old).await.expect("admin on the old leader");
    let ro: i64 = scalar(&mut a, "SELECT @@global.read_only")
        .await
        .expect("ro");
    assert_eq!(ro, 1, "fenced");
    let status: Option<mysql_async::Row> =
        a.query_first("SHOW SLAVE STATUS").await.expect("status");
    assert!(status.is_none(), "not replicating");
    let has: i64 = scalar(&mut a, "SELECT COUNT(*) FROM t.k WHERE id = 10")
        .await
        .expect("count");
    assert_eq!(has, 1, "its extra row is kept for the operator to look at");
    eventually("the old leader published as unknown", WAIT, || async {
        let c = s.cluster();
        let role = c.node(&old).map(|n| n.role);
        anyhow::ensure!(role == Some(Role::Unknown), "{role:?}");
        anyhow::ensure!(c.leader.as_deref() == Some(new.as_str()));
        Ok(())
    })
    .await;
    assert!(
        s.events().iter().any(|e| e.kind == "rejoin.fence"),
        "{:#?}",
        s.events()
    );
    // The new leader never got the extra row.
    let mut n = s.app(&new).await.expect("app");
    let has: i64 = scalar(&mut n, "SELECT COUNT(*) FROM t.k WHERE id = 10")
        .await
        .expect("count");
    assert_eq!(has, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_the_failover_follows_the_new_leader() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 20).await.expect("rows");
    drop(c);
    let replicas: Vec<String> = s.addrs().into_iter().filter(|a| *a != old).collect();
    let late = replicas[1].clone();
    assert_same_everywhere(&s, &s.addrs()).await;
    // Down during the failover, it comes back still pointing at the dead leader.
    s.kill(&late);
    s.kill(&old);
    let new = s.wait_new_epoch(epoch).await.leader.expect("new leader");
    assert_eq!(new, replicas[0]);
    let mut w = s.app(&new).await.expect("app");
    insert_rows(&mut w, 20, 30)
        .await
        .expect("rows on the new leader");
    s.lc.set_leader("c1", &new).expect("set leader");
    s.lc.start_node("c1", &late)
        .await
        .expect("restart the replica");

    let done = s.wait_event("rejoin.done", &late).await;
    assert!(done.message.contains(&new), "{done:?}");
    assert_replica_of(&s, &late, &new).await;
    assert_same_everywhere(&s, &[new.clone(), late.clone()]).await;
    s.stop().await;
}

/// `XA RECOVER` on a node: the prepared transactions' data (gtrid + bqual).
async fn prepared(s: &Scenario, addr: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut a = s.admin(addr).await?;
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = a.query("XA RECOVER").await?;
    Ok(rows.into_iter().map(|r| r.3).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_xa_transaction_no_binlog_names_keeps_the_node_out() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 10).await.expect("rows");
    drop(c);
    assert_same_everywhere(&s, &s.addrs()).await;
    // What a crash can leave: a prepared transaction (holding row 5) that no binlog names (an
    // orphan, or a one-phase commit, which the binlog records without its xid).
    let mut a = s.admin(&old).await.expect("admin");
    a.query_drop(
        "SET SESSION sql_log_bin = 0; XA START 'orphan'; \
         UPDATE t.k SET v = 'orphan' WHERE id = 5; XA END 'orphan'; XA PREPARE 'orphan'",
    )
    .await
    .expect("a prepared transaction no binlog names");
    drop(a);

    s.kill(&old);
    let new = s.wait_new_epoch(epoch).await.leader.expect("new leader");
    let mut w = s.app(&new).await.expect("app");
    insert_rows(&mut w, 10, 20).await.expect("rows");
    drop(w);
    s.lc.set_leader("c1", &new).expect("set leader");
    s.lc.start_node("c1", &old)
        .await
        .expect("restart the old leader");

    let ev = s.wait_event("rejoin.refused", &old).await;
    assert!(
        ev.message.contains("X'6f727068616e',X'',1")
            && ev.message.contains("neither its binlog nor the leader"),
        "{ev:?}"
    );
    // Nothing guessed: still prepared, for the operator.
    assert_eq!(
        prepared(&s, &old).await.expect("XA RECOVER"),
        vec![b"orphan".to_vec()]
    );
    eventually("the old leader published as unknown", WAIT, || async {
        let c = s.cluster();
        let role = c.node(&old).map(|n| n.role);
        anyhow::ensure!(role == Some(Role::Unknown), "{role:?}");
        Ok(())
    })
    .await;
    s.stop().await;
}

/// A transaction prepared on the leader and its replicas, then lost on one replica (as a crash
/// recovery may lose it), then ended on the leader by `end` (`COMMIT` or `ROLLBACK`). Returns
/// the scenario, the leader and the replica that lost it.
async fn lost_on_a_replica(end: &str) -> (Scenario, String, String) {
    let s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let leader = s.leader();
    let mut c = s.app(&leader).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 10).await.expect("rows");
    let mut x = s.admin(&leader).await.expect("admin");
    x.query_drop(
        "XA START 'lost'; INSERT INTO t.k VALUES (100, 'xa'); XA END 'lost'; XA PREPARE 'lost'",
    )
    .await
    .expect("prepared");
    let victim = s
        .addrs()
        .into_iter()
        .find(|a| *a != leader)
        .expect("a replica");
    eventually("the prepared transaction replicated", WAIT, || async {
        let p = prepared(&s, &victim).await?;
        anyhow::ensure!(p == vec![b"lost".to_vec()], "{p:?}");
        Ok(())
    })
    .await;
    let mut v = s.admin(&victim).await.expect("admin");
    v.query_drop("SET SESSION sql_log_bin = 0; XA ROLLBACK 'lost'")
        .await
        .expect("lost on the replica");
    x.query_drop(format!("XA {end} 'lost'"))
        .await
        .expect("ended on the leader");
    insert_rows(&mut c, 10, 20).await.expect("rows after");
    (s, leader, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_on_the_rollback_of_an_xa_transaction_it_lost_goes_on() {
    let (s, leader, victim) = lost_on_a_replica("ROLLBACK").await;
    let ev = s.wait_event("rejoin.xa", &victim).await;
    assert!(ev.message.contains("XAER_NOTA"), "{ev:?}");
    assert_replica_of(&s, &victim, &leader).await;
    assert_same_everywhere(&s, &s.addrs()).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_an_xa_transaction_the_leader_committed_is_kept_out() {
    let (s, leader, victim) = lost_on_a_replica("COMMIT").await;
    let ev = s.wait_event("rejoin.refused", &victim).await;
    assert!(
        ev.message
            .contains("lacks an XA transaction the leader committed"),
        "{ev:?}"
    );
    eventually("the replica published as unknown", WAIT, || async {
        let c = s.cluster();
        let role = c.node(&victim).map(|n| n.role);
        anyhow::ensure!(role == Some(Role::Unknown), "{role:?}");
        anyhow::ensure!(c.leader.as_deref() == Some(leader.as_str()));
        Ok(())
    })
    .await;
    s.stop().await;
}

/// A leader killed right after an `XA PREPARE` no replica received comes back with it
/// prepared and at the end of its binlog; the new leader writes `after` rows before it
/// returns (more than the old leader's extra transactions: its position is then refused by
/// the new leader; none: its position shows the extra GTID).
async fn unsent_xa_prepare_is_cut(after: u32) {
    let settings = OrchestratorSettings {
        failover_even_if_lagging: true,
        ..OrchestratorSettings::default()
    };
    let mut s = Scenario::start(2, false, settings).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 10).await.expect("rows");
    for addr in s.addrs().into_iter().filter(|a| *a != old) {
        let mut a = eventually("the rows replicated", WAIT, || async {
            let mut a = s.admin(&addr).await?;
            let n: i64 = scalar(&mut a, "SELECT COUNT(*) FROM t.k").await?;
            anyhow::ensure!(n == 10, "{n} rows");
            Ok(a)
        })
        .await;
        a.query_drop("STOP SLAVE IO_THREAD").await.expect("stop IO");
    }
    let mut x = s.admin(&old).await.expect("admin");
    x.query_drop(
        "XA START 'unsent'; UPDATE t.k SET v = 'unsent' WHERE id = 3; \
         INSERT INTO t.k VALUES (100, 'unsent'); XA END 'unsent'; XA PREPARE 'unsent'",
    )
    .await
    .expect("prepared where nobody receives it");
    drop(x);
    drop(c);

    s.kill(&old);
    let new = s.wait_new_epoch(epoch).await.leader.expect("new leader");
    let mut w = s.app(&new).await.expect("app");
    insert_rows(&mut w, 10, 10 + after)
        .await
        .expect("rows on the new leader");
    w.query_drop("UPDATE t.k SET v = 'new' WHERE id = 3")
        .await
        .expect("the row the unsent transaction changed");
    drop(w);
    s.lc.set_leader("c1", &new).expect("set leader");
    s.lc.start_node("c1", &old)
        .await
        .expect("restart the old leader");

    let ev = s.wait_event("rejoin.xa", "no other node received").await;
    assert!(ev.message.contains(&old), "{ev:?}");
    s.wait_event("rejoin.done", &old).await;
    assert_replica_of(&s, &old, &new).await;
    let replicas: Vec<String> = s.addrs().into_iter().filter(|a| *a != new).collect();
    for r in &replicas {
        let mut a = s.admin(r).await.expect("admin");
        a.query_drop("START SLAVE").await.expect("start");
    }
    assert_same_everywhere(&s, &s.addrs()).await;
    assert!(prepared(&s, &old).await.expect("XA RECOVER").is_empty());
    let mut a = s.admin(&old).await.expect("admin");
    let (v, n): (String, i64) = a
        .query_first(
            "SELECT (SELECT v FROM t.k WHERE id = 3), (SELECT COUNT(*) FROM t.k WHERE id = 100)",
        )
        .await
        .expect("query")
        .expect("row");
    assert_eq!((v.as_str(), n), ("new", 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xa_prepare_nobody_received_is_cut_when_the_new_leader_refuses_the_position() {
    unsent_xa_prepare_is_cut(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xa_prepare_nobody_received_is_cut_when_it_is_the_extra_gtid() {
    unsent_xa_prepare_is_cut(0).await;
}
