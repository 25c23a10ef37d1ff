//! The orchestrator and the router as one system: planned switchovers under load show
//! clients no error at all (a leader killed under write traffic is the `kill-leader`
//! scenario, run by `tests/faults.rs`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::writes::{ids_on, leader_of, setup, writer, Ledger};
use common::{eventually, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_under_router_load_show_clients_no_error() {
    let env = TestEnv::start(1, 2).await;
    setup(&env).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(writer(
                env.router_opts(None),
                (w + 1) * 1_000_000,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // A reader too, with a prepared statement.
    let reads = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(Mutex::new(Vec::new()));
    {
        let (opts, stop, reads, read_errors) = (
            env.router_opts(None),
            stop.clone(),
            reads.clone(),
            read_errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match c
                    .exec_first::<i64, _, _>("SELECT COUNT(*) FROM fo.t WHERE id > ?", (0,))
                    .await
                {
                    Ok(_) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => read_errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let http = common::http();
    for round in 1..=2u64 {
        let (before, epoch) = leader_of(&env, "c1");
        let acked = ledger.acked_count();
        eventually(Duration::from_secs(10), "writes flowing", || async {
            (ledger.acked_count() > acked + 100).then_some(())
        })
        .await;
        let resp = http
            .post(env.admin_url("/api/v1/clusters/c1/switchover"))
            .bearer_auth("test-token")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let report: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "switchover {round}: {report}");
        let (after, new_epoch) = leader_of(&env, "c1");
        assert_ne!(after, before);
        assert_eq!(new_epoch, epoch + 1);
        assert_eq!(report["new_leader"], after.as_str());
    }
    let acked = ledger.acked_count();
    eventually(Duration::from_secs(10), "writes flowing after", || async {
        (ledger.acked_count() > acked + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let errors = ledger.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "client errors during switchover: {errors:?}"
    );
    let read_errors = read_errors.lock().unwrap().clone();
    assert!(read_errors.is_empty(), "read errors: {read_errors:?}");
    assert!(reads.load(Ordering::Relaxed) > 0);

    let (leader, _) = leader_of(&env, "c1");
    let port: u16 = leader.rsplit(':').next().unwrap().parse().unwrap();
    let mut l = env.admin_conn(port).await;
    let present = ids_on(&mut l).await;
    let acked = ledger.acked_ids();
    assert!(acked.is_subset(&present), "acknowledged writes missing");
    assert_eq!(present.len(), acked.len(), "no unacknowledged rows");
    drop(l);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_last_statement_failed_writes_after_a_switchover() {
    let env = TestEnv::start(1, 1).await;
    setup(&env).await;
    let mut c = env.router_conn(Some("fo")).await;
    c.query_drop("INSERT INTO t VALUES (1, 1)").await.unwrap();
    // A failed statement keeps the session on its connection for SHOW WARNINGS...
    assert!(c.query_drop("SELECT * FROM no_such_table").await.is_err());
    let (old_leader, _) = leader_of(&env, "c1");
    // ...wait for the replica to be replicating, then switch over.
    eventually(Duration::from_secs(20), "a switchover", || async {
        env.app().orchestrator.switchover("c1", None).await.ok()
    })
    .await;
    let (new_leader, _) = leader_of(&env, "c1");
    assert_ne!(new_leader, old_leader);
    // ...but its next write goes to the new leader, as for any session.
    c.query_drop("INSERT INTO t VALUES (2, 2)").await.unwrap();
    let port: u16 = new_leader.rsplit(':').next().unwrap().parse().unwrap();
    let mut leader = env.admin_conn(port).await;
    let n: i64 = common::query_one(&mut leader, "SELECT COUNT(*) FROM fo.t").await;
    assert_eq!(n, 2);
    drop((c, leader));
    env.stop().await;
}
