//! Failures as they happen in production, not only `kill -9`: each named scenario of
//! [`switchyard::scenario`] (what `switchyard scenario run` does for operators) run on fresh
//! servers under write traffic through the router (`kill-leader` runs through the binary in
//! `tests/scenario_cli.rs`): a leader frozen (`SIGSTOP`:
//! every connection to it stays open and silent), partitioned (packets dropped, no reset),
//! or with a full or a stalled disk; a replica frozen or partitioned; only the router's or only the
//! orchestrator's path to the leader cut; a replica whose SQL thread broke when its leader is
//! killed; a planned switchover. Each checks the decision
//! (failover or none), that no acknowledged write is lost and no row appears that nobody
//! was told about, that no writer is left hanging, that the replicas converge, and that an
//! old leader is fenced when it returns; a partition that heals in the middle of the failover
//! (after the promotion, before routers are told). More here: a partition that heals while
//! the orchestrator is deciding; a leader that is only slow (no failover).

mod common;

use std::time::Duration;

use common::eventually;
use common::faults::blackhole;
use common::writes::{
    check_no_write_lost, cluster_under_writes, fenced_and_in_place, more_writes, port_of,
    stop_writers,
};
use switchyard::scenario::{self, Scenario};

/// One scenario at a time: each runs three servers and a switchyard, and judges liveness by
/// timings (a replica's stream silent for 1.5 s is a lost leader), which a machine starved by
/// a dozen scenarios at once would distort.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a scenario, printing its steps; a failed step fails the test, with the
/// orchestrator's events.
async fn passes(s: Scenario) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let outcome = scenario::run(s, None, &mut |step| println!("{s}: {step}"))
        .await
        .unwrap_or_else(|e| panic!("{s} could not run: {e:#}"));
    if !outcome.passed() {
        for e in &outcome.events {
            eprintln!("  {e}");
        }
        let failed = outcome.steps.iter().find(|st| !st.ok);
        panic!("{s} failed: {failed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_failed_over_and_fenced_when_it_thaws() {
    passes(Scenario::FreezeLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_failed_over_and_fenced_when_the_partition_heals() {
    passes(Scenario::PartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_answers_are_lost_is_failed_over_and_loses_no_acknowledged_write() {
    passes(Scenario::LeaderAnswersLost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_healing_after_the_promotion_reaches_no_write_to_the_old_leader() {
    passes(Scenario::PartitionHealsMidFailover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_is_full_is_failed_over_and_fenced() {
    passes(Scenario::DiskFullLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_stalls_is_failed_over_and_fenced() {
    passes(Scenario::DiskStallLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_causes_no_failover() {
    passes(Scenario::FreezeReplica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_causes_no_failover() {
    passes(Scenario::PartitionReplica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_the_leader_causes_no_failover_and_recovers_when_it_heals() {
    passes(Scenario::RouterCut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_cut_off_from_the_leader_causes_no_failover() {
    passes(Scenario::OrchestratorCut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_broken_sql_thread_is_not_elected_and_is_rebuilt() {
    passes(Scenario::BrokenReplica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_writes_shows_clients_no_error() {
    passes(Scenario::Switchover).await;
}

/// A partition of the leader that heals while the orchestrator is deciding (the leader has
/// just been seen down): whether or not the failover goes through, there is one writable
/// leader at the end, under a newer epoch if it changed, no acknowledged write is lost, the
/// nodes that follow the leader converge, and a node left out holds nothing but writes whose
/// clients got an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_healing_during_detection_leaves_one_leader_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (env, old, old_epoch, writers) = cluster_under_writes(4, 200).await;
    let cut = blackhole(port_of(&old));
    eventually(Duration::from_secs(20), "the leader seen down", || async {
        let t = env.app().topology.load();
        let n = t.cluster("c1")?.node(&old)?.clone();
        (n.state == shard_map::NodeState::Down).then_some(())
    })
    .await;
    cut.heal();
    // Writes acknowledged again, then the cluster as it settled: one leader, every node up.
    more_writes(
        &writers.ledger,
        200,
        Duration::from_secs(30),
        "writes after the partition",
    )
    .await;
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    let (leader, epoch) = eventually(Duration::from_secs(30), "a settled cluster", || async {
        let t = env.app().topology.load();
        let c = t.cluster("c1")?;
        let all_up = c.nodes.iter().all(|n| n.state == shard_map::NodeState::Up);
        (all_up && c.phase == shard_map::ClusterPhase::Serving)
            .then(|| (c.leader.clone().unwrap_or_default(), c.epoch))
    })
    .await;
    for e in env.app().orchestrator.events("c1").unwrap() {
        println!("  {} {}: {}", e.at_ms, e.kind, e.message);
    }
    assert!(
        (leader == old && epoch == old_epoch) || (leader != old && epoch == old_epoch + 1),
        "leader {leader} at epoch {epoch} (was {old} at {old_epoch})"
    );
    let present = check_no_write_lost(&env, &leader, &ledger).await;
    // Exactly one writable node; the others follow it or were kept out.
    let mut kept_out = Vec::new();
    for node in &env.local().cluster("c1").unwrap().nodes {
        if node.addr == leader {
            continue;
        }
        if !fenced_and_in_place(&env, "c1", &node.addr, &leader, &present, &ledger).await {
            kept_out.push(node.addr.as_str());
        }
    }
    println!(
        "healed at Down: leader {leader} epoch {epoch} (failover: {}), kept out: {kept_out:?}",
        leader != old
    );
    env.stop().await;
}

/// An old leader that committed transactions of its own while cut off (here: written over its
/// unix socket, which a partition does not cut, with semi-sync turned off so that they commit
/// at once) is rewound by binlog flashback when it returns, with `rejoin_rewind` on: it
/// rejoins, its data equals the new leader's (rows it inserted gone, a row it deleted back, a
/// row it updated as before), and the rewound transactions are saved to the file the event
/// names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_leader_with_its_own_extra_transactions_is_rewound_and_rejoins() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let rewind_dir = tempfile::tempdir().unwrap();
    let dir = rewind_dir.path().to_path_buf();
    let env = common::TestEnv::start_with(1, 2, move |c| {
        c.failover.rejoin_rewind = true;
        c.failover.rewind_dir = Some(dir);
    })
    .await;
    common::writes::setup(&env).await;
    let target = common::writes::target(&env);
    let (old, old_epoch) = target.leader_of("c1");
    let writers = common::writes::writers_flowing(&env, 2, 100).await;
    let acked: Vec<u64> = writers.ledger.acked_ids().into_iter().take(2).collect();
    let socket = env
        .local()
        .cluster("c1")
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.addr == old)
        .unwrap()
        .socket
        .clone();
    let local = mysql_async::OptsBuilder::default()
        .socket(Some(socket.to_string_lossy()))
        .user(Some("root"))
        .prefer_socket(true);
    let mut on_old = mysql_async::Conn::new(local).await.unwrap();
    let cut = blackhole(port_of(&old));
    use mysql_async::prelude::Queryable;
    on_old
        .query_drop(format!(
            "SET GLOBAL rpl_semi_sync_master_enabled = 0; \
             INSERT INTO fo.t VALUES (999000001, 1); \
             UPDATE fo.t SET v = -5 WHERE id = {}; \
             DELETE FROM fo.t WHERE id = {}",
            acked[0], acked[1]
        ))
        .await
        .unwrap();
    drop(on_old);
    let (new, _) = target
        .new_leader("c1", &old, old_epoch, Duration::from_secs(30))
        .await
        .unwrap();
    more_writes(
        &writers.ledger,
        100,
        Duration::from_secs(20),
        "writes on the new leader",
    )
    .await;
    let ledger = stop_writers(writers, Duration::from_secs(10)).await;
    let present = check_no_write_lost(&env, &new, &ledger).await;
    cut.heal();
    // Back in place by itself: rewound, then following the new leader.
    let rewound = eventually(
        Duration::from_secs(40),
        "a rejoin.rewound event",
        || async {
            let events = env.app().orchestrator.events("c1").ok()?;
            if let Some(e) = events.iter().find(|e| e.kind == "rejoin.refused") {
                panic!("kept out instead of rewound: {}", e.message);
            }
            events
                .into_iter()
                .find(|e| e.kind == "rejoin.rewound" && e.message.contains(&old))
        },
    )
    .await;
    println!("{}", rewound.message);
    assert!(fenced_and_in_place(&env, "c1", &old, &new, &present, &ledger).await);
    target
        .converged("c1", &new, &[], Duration::from_secs(30))
        .await
        .unwrap();
    // What was rewound is kept: the inserted row's id is in the saved file.
    let files: Vec<_> = std::fs::read_dir(rewind_dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one file per rewind");
    let saved = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        saved.contains("999000001"),
        "the rewound insert in the file"
    );
    assert!(rewound
        .message
        .contains(&files[0].as_ref().unwrap().path().display().to_string()));
    env.stop().await;
}

/// A slow leader is not a dead one. The leader is reached by everyone (router, monitor and
/// replicas) through the test kit's TCP proxy, which then holds every chunk 400 ms in each
/// direction (this machine's kernel has no netem) for 8 s, three times what detecting a lost
/// leader takes: the monitor's polls time out and it takes the leader for suspect, then down,
/// but its replicas still receive from it, so there is no failover; writes go on being
/// acknowledged, slowly, with no client error; when the delay ends they flow at full speed
/// again, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_leader_is_not_failed_over() {
    const DELAY_MS: u64 = 400;
    use common::proxy::{FaultProxy, Mode};
    use common::writes::{leader_of, setup, writers_flowing};
    use tokio::time::Instant;

    let _turn = ONE_AT_A_TIME.lock().await;
    let slot: std::sync::Arc<std::sync::Mutex<Option<FaultProxy>>> = Default::default();
    let env = {
        let slot = slot.clone();
        common::TestEnv::start_with(1, 2, move |config| {
            // A replica at first, known by the proxy's address.
            let c = &mut config.clusters[0];
            let proxy = FaultProxy::start(c.nodes[1].parse().expect("node address"));
            c.nodes[1] = proxy.addr().to_string();
            *slot.lock().unwrap() = Some(proxy);
        })
        .await
    };
    let proxy = slot.lock().unwrap().take().expect("proxy started");
    let slow = proxy.addr().to_string();
    setup(&env).await;
    // Made leader: the other replicas are pointed at the address the topology knows, so that
    // their streams go through the proxy too.
    env.app()
        .orchestrator
        .switchover("c1", Some(&slow))
        .await
        .unwrap_or_else(|e| panic!("switchover to {slow}: {e}"));
    let (leader, epoch) = leader_of(&env, "c1");
    assert_eq!(leader, slow);
    for port in env.replica_ports("c1") {
        let mut c =
            mysql_async::Conn::new(common::opts_for(port, "switchyard", "switchyard", None))
                .await
                .unwrap();
        let source: Option<u16> = mysql_async::prelude::Queryable::query_first(
            &mut c,
            "SELECT Master_Port FROM information_schema.SLAVE_STATUS",
        )
        .await
        .unwrap_or(None);
        if source.is_some() {
            assert_eq!(
                source,
                Some(proxy.addr().port()),
                "{port} bypasses the proxy"
            );
        }
    }
    let writers = writers_flowing(&env, 4, 100).await;

    proxy.set(Mode::Delay(Duration::from_millis(DELAY_MS)));
    let slowed = Instant::now();
    let before = writers.ledger.acked_count();
    let until = slowed + Duration::from_secs(8);
    let mut states = std::collections::BTreeSet::new();
    while Instant::now() < until {
        if let Some(n) = env
            .app()
            .topology
            .load()
            .cluster("c1")
            .and_then(|c| c.node(&slow))
        {
            states.insert(format!("{:?}", n.state));
        }
        let (now, now_epoch) = leader_of(&env, "c1");
        assert_eq!(
            (now.as_str(), now_epoch),
            (slow.as_str(), epoch),
            "failed over {} ms into the delay",
            slowed.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = writers.ledger.acked_count() - before;
    proxy.set(Mode::Pass);
    assert!(
        states.contains("Suspect") || states.contains("Down"),
        "the monitor never suspected the slow leader ({states:?}): the test no longer tries a \
         false alarm; make the delay longer"
    );
    assert!(during > 0, "no write acknowledged during the 8 s of delay");
    more_writes(
        &writers.ledger,
        300,
        Duration::from_secs(20),
        "writes at full speed again",
    )
    .await;
    let ledger = stop_writers(writers, Duration::from_secs(20)).await;
    let errors = ledger.error_codes();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let events = env.app().orchestrator.events("c1").unwrap();
    assert!(
        !events.iter().any(|e| e.kind.starts_with("failover")),
        "{events:#?}"
    );
    check_no_write_lost(&env, &slow, &ledger).await;
    println!(
        "slow leader: {during} writes acknowledged during the 8 s of delay, {} in all; its \
         states meanwhile {states:?}; events: {:?}",
        ledger.acked_count(),
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>()
    );
    env.stop().await;
    drop(proxy);
}
