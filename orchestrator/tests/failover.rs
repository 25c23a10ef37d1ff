//! Unplanned failover scenarios against real servers (the leader killed with SIGKILL), by
//! name: failover with no replication checks, all replicas delayed (refused unless
//! configured), failover limit reached then reset, too soon after the last one, leader
//! suspect but alive for its replicas, manual mode, no lost commits with semi-sync.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_replica_of, assert_same_everywhere, create_table, insert_rows, scalar, status_var,
    Proxy, Scenario, WAIT,
};
use mysql_async::prelude::Queryable;
use orchestrator::{FailoverMode, OrchestratorError, OrchestratorSettings};
use shard_map::Role;

/// How long a scenario watches for a failover that must not happen.
const QUIET: Duration = Duration::from_secs(3);

/// Settings that let several failovers happen in one test.
fn no_flap_guard() -> OrchestratorSettings {
    OrchestratorSettings {
        failover_limit: 10,
        failover_min_interval_s: 0,
        ..OrchestratorSettings::default()
    }
}

/// The epoch does not move for [`QUIET`] (a bounded watch, not a sleep-and-hope).
async fn assert_no_failover(s: &Scenario, epoch: u64) {
    let mut changes = s.topology.subscribe();
    let moved = tokio::time::timeout(QUIET, async {
        loop {
            if s.epoch() != epoch {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        moved.is_err(),
        "failed over: epoch {} (was {epoch}); events: {:#?}",
        s.epoch(),
        s.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_no_replication_checks() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    insert_rows(&mut c, 0, 100).await.expect("rows");
    drop(c);

    s.kill(&old);
    let cluster = s.wait_new_epoch(epoch).await;
    assert_eq!(cluster.epoch, epoch + 1);
    let new = cluster.leader.clone().expect("new leader");
    assert_ne!(new, old);
    assert_eq!(cluster.node(&new).map(|n| n.role), Some(Role::Leader));
    assert_eq!(
        cluster.node(&old).map(|n| n.role),
        Some(Role::Unknown),
        "the dead leader is nobody's leader"
    );
    let done = s.wait_event("failover.done", &new).await;
    assert!(done.message.contains(&old), "{done:?}");

    let mut w = s.app(&new).await.expect("app on the new leader");
    insert_rows(&mut w, 100, 110)
        .await
        .expect("writes on the new leader");
    let count: i64 = scalar(&mut w, "SELECT COUNT(*) FROM t.k")
        .await
        .expect("count");
    assert_eq!(count, 110, "nothing written before the kill is lost");
    let others: Vec<String> = s.addrs().into_iter().filter(|a| *a != old).collect();
    for addr in others.iter().filter(|a| **a != new) {
        assert_replica_of(&s, addr, &new).await;
    }
    assert_same_everywhere(&s, &others).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_all_replicas_are_delayed_is_refused_unless_configured() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    create_table(&mut c).await.expect("table");
    let replicas: Vec<String> = s.addrs().into_iter().filter(|a| *a != old).collect();
    for addr in &replicas {
        let mut a = s.admin(addr).await.expect("admin");
        a.query_drop("STOP SLAVE SQL_THREAD")
            .await
            .expect("stop SQL thread");
    }
    insert_rows(&mut c, 0, 50)
        .await
        .expect("rows the replicas receive but do not apply");
    drop(c);

    s.kill(&old);
    let refused = s
        .wait_event("failover.refused", "SQL thread not running (lagging)")
        .await;
    assert!(
        refused.message.contains("no eligible replica"),
        "{refused:?}"
    );
    assert_no_failover(&s, epoch).await;
    assert_eq!(s.cluster().leader.as_deref(), Some(old.as_str()));
    assert_eq!(
        s.events()
            .iter()
            .filter(|e| e.kind == "failover.refused")
            .count(),
        1,
        "refused once for this outage, not every round"
    );

    // Configured to fail over anyway: the winner applies what it received first.
    s.restart_orchestrator(OrchestratorSettings {
        failover_even_if_lagging: true,
        ..OrchestratorSettings::default()
    })
    .await;
    let cluster = s.wait_new_epoch(epoch).await;
    let new = cluster.leader.expect("new leader");
    assert!(replicas.contains(&new));
    let mut w = s.app(&new).await.expect("app on the new leader");
    let count: i64 = scalar(&mut w, "SELECT COUNT(*) FROM t.k")
        .await
        .expect("count");
    assert_eq!(count, 50, "the relay log was applied before the promotion");
    insert_rows(&mut w, 50, 51).await.expect("writable");
    let other = replicas.iter().find(|a| **a != new).expect("other replica");
    assert_replica_of(&s, other, &new).await;
    assert_same_everywhere(&s, &replicas).await;
    s.stop().await;
}

/// Kills the leader, waits for the failover, returns the new leader.
async fn kill_and_fail_over(s: &mut Scenario) -> String {
    let old = s.leader();
    let epoch = s.epoch();
    s.kill(&old);
    let c = s.wait_new_epoch(epoch).await;
    c.leader.expect("new leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_limit_reached_then_reset() {
    let mut s = Scenario::start(
        2,
        true,
        OrchestratorSettings {
            failover_limit: 1,
            failover_min_interval_s: 0,
            ..OrchestratorSettings::default()
        },
    )
    .await;
    let second = kill_and_fail_over(&mut s).await;
    let epoch = s.epoch();

    s.kill(&second);
    let refused = s.wait_event("failover.refused", "failover_limit = 1").await;
    assert!(
        refused.message.contains("failover limit reached"),
        "{refused:?}"
    );
    assert_no_failover(&s, epoch).await;
    assert_eq!(s.cluster().leader.as_deref(), Some(second.as_str()));

    s.orch.reset_failover_limits("c1").expect("reset");
    let c = s.wait_new_epoch(epoch).await;
    let third = c.leader.expect("leader");
    assert_ne!(third, second);
    let mut w = s.app(&third).await.expect("app");
    w.query_drop("CREATE DATABASE after_reset")
        .await
        .expect("writable");
    assert!(matches!(
        s.orch.reset_failover_limits("nope"),
        Err(OrchestratorError::UnknownCluster(_))
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_too_soon_after_the_last_one_is_refused() {
    let mut s = Scenario::start(
        2,
        true,
        OrchestratorSettings {
            failover_limit: 10,
            failover_min_interval_s: 3600,
            ..OrchestratorSettings::default()
        },
    )
    .await;
    let second = kill_and_fail_over(&mut s).await;
    let epoch = s.epoch();
    s.kill(&second);
    let refused = s
        .wait_event("failover.refused", "failover_min_interval_s = 3600")
        .await;
    assert!(refused.message.contains("too soon"), "{refused:?}");
    assert_no_failover(&s, epoch).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_suspect_but_alive_for_its_replicas_is_not_failed_over() {
    // The orchestrator reaches the leader only through a proxy; the replicas replicate from
    // its real port. Cutting the proxy cuts the orchestrator's path alone.
    let mut proxy = None;
    let s = Scenario::start_with(2, true, no_flap_guard(), |mut spec| {
        let leader = spec.leader.clone().expect("leader");
        let p = Proxy::start(&leader);
        for n in &mut spec.nodes {
            if *n == leader {
                n.clone_from(&p.addr);
            }
        }
        spec.leader = Some(p.addr.clone());
        proxy = Some(p);
        spec
    })
    .await;
    let proxy = proxy.expect("proxy started");
    assert_eq!(s.leader(), proxy.addr);
    let epoch = s.epoch();

    proxy.cut();
    let suspect = s
        .wait_event("leader.suspect", "still replicate from it")
        .await;
    assert!(suspect.message.contains("not failing over"), "{suspect:?}");
    assert_no_failover(&s, epoch).await;
    assert_eq!(s.cluster().leader.as_deref(), Some(proxy.addr.as_str()));
    assert!(
        !s.events().iter().any(|e| e.kind.starts_with("failover.")),
        "{:#?}",
        s.events()
    );
    // An operator asking for a failover is refused too: the replicas are its evidence.
    let err = s.orch.failover("c1").await.expect_err("refused");
    assert!(err.to_string().contains("may be alive"), "{err}");
    assert_eq!(s.epoch(), epoch);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_mode_waits_for_the_operator() {
    let mut s = Scenario::start(
        2,
        true,
        OrchestratorSettings {
            failover: FailoverMode::Manual,
            ..OrchestratorSettings::default()
        },
    )
    .await;
    let old = s.leader();
    let epoch = s.epoch();
    let err = s.orch.failover("c1").await.expect_err("leader alive");
    assert!(err.to_string().contains("reachable"), "{err}");

    s.kill(&old);
    s.wait_event("leader.dead", "manual").await;
    assert_no_failover(&s, epoch).await;
    let report = s
        .orch
        .failover("c1")
        .await
        .unwrap_or_else(|e| panic!("manual failover: {e}; events: {:#?}", s.events()));
    assert_eq!(report.old_leader, old);
    assert_eq!(report.epoch, epoch + 1);
    assert_eq!(s.leader(), report.new_leader);
    assert!(report.steps.iter().any(|e| e.kind == "failover.done"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_commits_with_semi_sync() {
    let mut s = Scenario::start(2, true, OrchestratorSettings::default()).await;
    let old = s.leader();
    let epoch = s.epoch();
    let mut c = s.app(&old).await.expect("app");
    c.query_drop("CREATE DATABASE w").await.expect("db");
    c.query_drop("CREATE TABLE w.ids (id INT PRIMARY KEY)")
        .await
        .expect("table");
    let mut a = s.admin(&old).await.expect("admin");
    assert_eq!(
        status_var(&mut a, "Rpl_semi_sync_master_status")
            .await
            .expect("status"),
        "ON",
        "semi-sync is on at the leader"
    );
    drop(a);

    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let record = acked.clone();
    let writer = tokio::spawn(async move {
        for id in 0u32.. {
            match c
                .query_drop(format!("INSERT INTO w.ids VALUES ({id})"))
                .await
            {
                Ok(()) => record.lock().expect("lock").push(id),
                Err(_) => return id,
            }
        }
        unreachable!("the writer ends when its leader dies")
    });
    common::eventually("the writer well under way", WAIT, || async {
        let n = acked.lock().expect("lock").len();
        anyhow::ensure!(n >= 300, "{n} rows so far");
        Ok(())
    })
    .await;
    s.kill(&old);
    let failed_at = writer.await.expect("writer task");
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty());

    let cluster = s.wait_new_epoch(epoch).await;
    let new = cluster.leader.expect("new leader");
    let mut n = s.app(&new).await.expect("app on the new leader");
    let present: Vec<u32> = n.query("SELECT id FROM w.ids").await.expect("ids");
    let present: std::collections::BTreeSet<u32> = present.into_iter().collect();
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged commits lost (of {}; the writer failed at {failed_at}): {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
    s.stop().await;
}
