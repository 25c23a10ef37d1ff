//! The orchestrator and the router as one system: a leader killed under write traffic through
//! the router loses no acknowledged write, and planned switchovers under load show clients no
//! error at all.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::writes::{
    check_no_write_lost, cluster_under_writes, fenced_and_in_place, gtid_and_checksum, ids_on,
    leader_of, new_leader, setup, writer, Ledger,
};
use common::{eventually, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_router_writes_loses_no_acknowledged_write() {
    let (mut env, old_leader, old_epoch, writers) = cluster_under_writes(4, 200).await;
    env.local_mut().kill_node("c1", &old_leader).unwrap();
    // A new leader with a higher epoch, and writes acknowledged after it.
    let (new_leader, new_epoch) =
        new_leader(&env, "c1", &old_leader, old_epoch, Duration::from_secs(30)).await;
    assert_eq!(new_epoch, old_epoch + 1);
    writers
        .ledger
        .wait_for_more(
            200,
            Duration::from_secs(20),
            "writes acknowledged on the new leader",
        )
        .await;
    let ledger = writers.stop(Duration::from_secs(10)).await;

    let present = check_no_write_lost(&env, &new_leader, &ledger).await;
    let acked = ledger.acked_ids();
    let new_port = common::writes::port_of(&new_leader);
    let mut leader = env.admin_conn(new_port).await;
    // The other replica follows the new leader and converges.
    let (want_gtid, want_sum) = gtid_and_checksum(&mut leader).await;
    let other = env
        .local()
        .cluster("c1")
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.addr != old_leader && n.addr != new_leader)
        .unwrap()
        .port;
    eventually(
        Duration::from_secs(20),
        "the other replica converges",
        || async {
            let mut c = Conn::new(common::opts_for(other, "switchyard", "switchyard", None))
                .await
                .ok()?;
            (gtid_and_checksum(&mut c).await == (want_gtid.clone(), want_sum)).then_some(())
        },
    )
    .await;

    // The old leader comes back. It rejoins as a replica when it has nothing the new leader
    // lacks; otherwise it is kept out, and then what only it has may only be writes whose
    // outcome the client was told is unknown: no write reached it after the new epoch.
    env.local_mut().start_node("c1", &old_leader).await.unwrap();
    let want = (want_gtid, want_sum);
    fenced_and_in_place(&env, "c1", &old_leader, &want, &present, &ledger).await;
    let errors = ledger.errors.lock().unwrap().clone();
    println!(
        "acknowledged {} writes, {} client errors during the failover: {:?}",
        acked.len(),
        errors.len(),
        errors.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    drop(leader);
    env.stop().await;
}

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
