//! Planned switchover scenarios against real servers, by name: twice with replication OK
//! (semi-sync and async), refused under a long transaction, under a long query (and done when
//! the query ends in time), refused when every replica is delayed; hooks.

mod common;

use common::{
    assert_replica_of, assert_same_everywhere, create_table, eventually, insert_rows, scalar,
    Scenario, WAIT,
};
use mysql_async::prelude::Queryable;
use orchestrator::{OrchestratorError, OrchestratorSettings};
use shard_map::Role;

/// `addr` takes the application's writes.
async fn assert_writable(s: &Scenario, addr: &str, id: u32) {
    let mut c = s.app(addr).await.expect("app connection");
    insert_rows(&mut c, id, id + 1)
        .await
        .unwrap_or_else(|e| panic!("write on {addr}: {e}"));
}

async fn switchover_twice(semi_sync: bool) {
    let s = Scenario::start(2, semi_sync, OrchestratorSettings::default()).await;
    let nodes = s.addrs();
    let first = s.leader();
    let mut c = s.app(&first).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 50).await.expect("rows");
    drop(c);

    let mut leader = first.clone();
    for (round, next_id) in [(0, 50), (1, 51)] {
        let epoch = s.epoch();
        let report = s
            .orch
            .switchover("c1", None)
            .await
            .unwrap_or_else(|e| panic!("switchover {round}: {e}; events: {:#?}", s.events()));
        assert_eq!(report.old_leader, leader);
        assert_ne!(report.new_leader, leader);
        assert_eq!(report.epoch, epoch + 1, "epoch bumped by one");
        let c = s.cluster();
        assert_eq!(c.epoch, epoch + 1);
        assert_eq!(c.leader.as_deref(), Some(report.new_leader.as_str()));
        assert_eq!(c.phase, shard_map::ClusterPhase::Serving);
        assert_eq!(
            c.node(&report.new_leader).map(|n| n.role),
            Some(Role::Leader)
        );
        for step in [
            "FLUSH TABLES WITH READ LOCK",
            "read_only=1",
            "promoted",
            "published",
        ] {
            assert!(
                report.steps.iter().any(|e| e.message.contains(step)),
                "no step {step:?} in {:#?}",
                report.steps
            );
        }
        assert_writable(&s, &report.new_leader, next_id).await;
        for addr in nodes.iter().filter(|a| **a != report.new_leader) {
            assert_replica_of(&s, addr, &report.new_leader).await;
        }
        assert_same_everywhere(&s, &nodes).await;
        // The old leader refuses the application's writes.
        let mut old = s.app(&leader).await.expect("app on old leader");
        let refused = old.query_drop("INSERT INTO t.k VALUES (9999, 'x')").await;
        assert!(refused.is_err(), "the old leader took a write");
        if semi_sync {
            let mut a = s.admin(&report.new_leader).await.expect("admin");
            let on: i64 = scalar(&mut a, "SELECT @@global.rpl_semi_sync_master_enabled")
                .await
                .expect("semi-sync flag");
            assert_eq!(on, 1, "semi-sync master on at the new leader");
            let mut a = s.admin(&leader).await.expect("admin");
            let on: i64 = scalar(&mut a, "SELECT @@global.rpl_semi_sync_master_enabled")
                .await
                .expect("semi-sync flag");
            assert_eq!(on, 0, "semi-sync master off at the old leader");
        }
        let mut a = s.admin(&leader).await.expect("admin");
        let max: u64 = scalar(&mut a, "SELECT @@global.max_connections")
            .await
            .expect("max_connections");
        assert_eq!(max, 1000, "max_connections restored on the old leader");
        leader = report.new_leader;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_twice_with_replication_ok_semi_sync() {
    switchover_twice(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_twice_with_replication_ok_async() {
    switchover_twice(false).await;
}

/// Nothing changed: same leader, same epoch, leader writable, serving.
async fn assert_unchanged(s: &Scenario, leader: &str, epoch: u64) {
    let c = s.cluster();
    assert_eq!(c.leader.as_deref(), Some(leader));
    assert_eq!(c.epoch, epoch);
    assert_eq!(c.phase, shard_map::ClusterPhase::Serving);
    let mut a = s.admin(leader).await.expect("admin");
    let ro: i64 = scalar(&mut a, "SELECT @@global.read_only")
        .await
        .expect("ro");
    assert_eq!(ro, 0, "the leader is still writable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_a_long_transaction_is_refused() {
    let settings = OrchestratorSettings {
        switchover_wait_trx_ms: 500,
        ..OrchestratorSettings::default()
    };
    let s = Scenario::start(2, true, settings).await;
    let leader = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&leader).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 10).await.expect("rows");
    let mut trx = s.app(&leader).await.expect("app");
    trx.query_drop("BEGIN").await.expect("begin");
    trx.query_drop("UPDATE t.k SET v = 'changed' WHERE id = 1")
        .await
        .expect("update");

    let err = s.orch.switchover("c1", None).await.expect_err("refused");
    match &err {
        OrchestratorError::Refused(why) => {
            assert!(
                why.contains("long-running") && why.contains("transaction"),
                "{why}"
            )
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert_unchanged(&s, &leader, epoch).await;
    // The transaction is intact and commits.
    trx.query_drop("COMMIT")
        .await
        .expect("commit after the refusal");
    insert_rows(&mut c, 10, 11).await.expect("leader writable");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_a_long_query_is_refused_and_done_when_it_ends_in_time() {
    let settings = OrchestratorSettings {
        // Room for the short query below to be still running when the switchover first
        // looks, on a loaded machine, and to end well within the wait.
        switchover_wait_trx_ms: 3000,
        ..OrchestratorSettings::default()
    };
    let s = Scenario::start(2, true, settings).await;
    let leader = s.leader();
    let epoch = s.epoch();

    let mut slow = s.app(&leader).await.expect("app");
    let slow_id = slow.id();
    let long = tokio::spawn(async move { slow.query_drop("SELECT SLEEP(10)").await });
    eventually("the long query running", WAIT, || async {
        let mut a = s.admin(&leader).await?;
        let n: i64 = scalar(
            &mut a,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(10)'",
        )
        .await?;
        anyhow::ensure!(n == 1, "not running yet");
        Ok(())
    })
    .await;
    let err = s.orch.switchover("c1", None).await.expect_err("refused");
    let why = err.to_string();
    assert!(why.contains("SLEEP(10)"), "{why}");
    assert_unchanged(&s, &leader, epoch).await;
    let mut a = s.admin(&leader).await.expect("admin");
    a.query_drop(format!("KILL QUERY {slow_id}"))
        .await
        .expect("kill the long query");
    let _ = long.await.expect("task");

    // A query that ends within the wait: the switchover waits for it, then goes ahead.
    let mut short = s.app(&leader).await.expect("app");
    let ends = tokio::spawn(async move { short.query_drop("SELECT SLEEP(1.5)").await });
    eventually("the short query running", WAIT, || async {
        let mut a = s.admin(&leader).await?;
        let n: i64 = scalar(
            &mut a,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(1.5)'",
        )
        .await?;
        anyhow::ensure!(n == 1, "not running yet");
        Ok(())
    })
    .await;
    let report = s
        .orch
        .switchover("c1", None)
        .await
        .unwrap_or_else(|e| panic!("switchover: {e}; events: {:#?}", s.events()));
    assert_eq!(report.epoch, epoch + 1);
    assert!(
        report
            .steps
            .iter()
            .any(|e| e.message.contains("waiting up to")),
        "{:#?}",
        report.steps
    );
    ends.await
        .expect("task")
        .expect("the short query completed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_when_all_replicas_are_delayed_is_refused() {
    let s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let leader = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&leader).await.expect("app");
    create_table(&mut c).await.expect("table");
    for addr in s.addrs().iter().filter(|a| **a != leader) {
        let mut a = s.admin(addr).await.expect("admin");
        a.query_drop("STOP SLAVE SQL_THREAD")
            .await
            .expect("stop SQL thread");
    }
    insert_rows(&mut c, 0, 20)
        .await
        .expect("rows the replicas do not apply");

    let err = s.orch.switchover("c1", None).await.expect_err("refused");
    let why = err.to_string();
    assert!(
        why.contains("no eligible replica") && why.contains("SQL thread not running (lagging)"),
        "{why}"
    );
    assert_unchanged(&s, &leader, epoch).await;
    // A requested target is refused the same way.
    let target = s
        .addrs()
        .into_iter()
        .find(|a| *a != leader)
        .expect("replica");
    let err = s
        .orch
        .switchover("c1", Some(&target))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not eligible"), "{err}");
    assert!(s.events().iter().any(|e| e.kind == "switchover.refused"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_named_replica_runs_the_hooks() {
    let hooks_dir = tempfile::tempdir().expect("tempdir");
    let out = hooks_dir.path().join("calls");
    let write = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = hooks_dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    };
    let record = format!(
        "echo \"$1 $2 $3 $4 $SWITCHYARD_EVENT\" >> {}",
        out.display()
    );
    let ok = write("record.sh", &record);
    let failing = write("fail.sh", &format!("{record}\necho cannot >&2\nexit 1"));
    let mut settings = OrchestratorSettings::default();
    settings.hooks.before_switchover = Some(ok.clone());
    settings.hooks.vip_remove = Some(ok.clone());
    settings.hooks.vip_add = Some(failing);
    settings.hooks.after_switchover = Some(ok);
    let s = Scenario::start(2, true, settings).await;
    let old = s.leader();
    let target = s
        .addrs()
        .into_iter()
        .rev()
        .find(|a| *a != old)
        .expect("replica");

    let report = s
        .orch
        .switchover("c1", Some(&target))
        .await
        .unwrap_or_else(|e| panic!("switchover: {e}; events: {:#?}", s.events()));
    assert_eq!(report.new_leader, target, "the named replica was promoted");
    let calls = std::fs::read_to_string(&out).expect("hooks ran");
    let expected: Vec<String> = [
        "before_switchover",
        "vip_remove",
        "vip_add",
        "after_switchover",
    ]
    .iter()
    .map(|e| format!("{e} c1 {old} {target} {e}"))
    .collect();
    assert_eq!(calls.lines().collect::<Vec<_>>(), expected);
    let failed = report
        .steps
        .iter()
        .find(|e| e.kind == "hook.failed")
        .expect("the failing hook is reported");
    assert!(failed.message.contains("vip_add") && failed.message.contains("cannot"));
    assert!(report.steps.iter().any(|e| e.kind == "switchover.done"));

    // Unknown nodes and clusters are errors of their own.
    assert!(matches!(
        s.orch.switchover("c1", Some("127.0.0.1:1")).await,
        Err(OrchestratorError::UnknownNode { .. })
    ));
    assert!(matches!(
        s.orch.switchover("nope", None).await,
        Err(OrchestratorError::UnknownCluster(_))
    ));

    // A hold nobody owns (an operation that died half-way) is released by the next round.
    s.topology.publish(|t| {
        if let Some(c) = t.clusters.get_mut("c1") {
            c.phase = shard_map::ClusterPhase::Held;
        }
    });
    s.wait_event("hold.released", &target).await;
    assert_eq!(s.cluster().phase, shard_map::ClusterPhase::Serving);
    assert_eq!(s.leader(), target);
    s.stop().await;
}
