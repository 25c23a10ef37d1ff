//! Failures as they happen in production, not only `kill -9`: a leader that hangs (frozen
//! with `SIGSTOP`: every connection to it stays open and silent), a leader cut off by a
//! partition that drops packets without resets, and the same faults on a replica, which
//! must cause no failover. Each scenario runs under write traffic through the router and
//! ends with the same checks: no acknowledged write lost, no row nobody was told about, the
//! replicas converged, no writer left hanging, and the old leader fenced when it returns.

mod common;

use std::time::Duration;

use common::faults::{
    blackhole, blackhole_except, blackhole_from, fill_disk, freeze, Blackhole, DiskFull, Frozen,
};
use common::writes::{
    check_converged, check_no_write_lost, cluster_under_writes, fenced_and_in_place,
    gtid_and_checksum, leader_of, new_leader, port_of, writes_on, EventsOnPanic,
};
use common::{eventually, query_one, TestEnv};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

/// How the leader is lost.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Freeze,
    Partition,
    /// The disk of its binary log fills up: it still answers every read, and only the
    /// sessions that wait to commit show it.
    DiskFull,
}

/// A fault in force, ended by [`Injected::end`] (or by drop, on failure).
enum Injected {
    Frozen(Frozen),
    Cut(Blackhole),
    Full(DiskFull),
}

impl Injected {
    fn inject(fault: Fault, env: &TestEnv, addr: &str) -> Injected {
        match fault {
            Fault::Freeze => Injected::Frozen(freeze(env.local().pid(addr).expect("a pid"))),
            Fault::Partition => Injected::Cut(blackhole(port_of(addr))),
            Fault::DiskFull => {
                let node = env.local().cluster("c1").unwrap().nodes.iter();
                let node = node.clone().find(|n| n.addr == addr).expect("the node");
                Injected::Full(fill_disk(&node.binlog_dir()))
            }
        }
    }

    fn end(self) {
        match self {
            Injected::Frozen(f) => f.thaw(),
            Injected::Cut(c) => c.heal(),
            Injected::Full(d) => d.free(),
        }
    }
}

/// The scenario: writes flow, the leader is lost to `fault`, a new leader takes the writes,
/// the fault ends, and the old leader is fenced and rejoins or is kept out.
async fn leader_lost(fault: Fault) {
    let env = match fault {
        Fault::DiskFull => TestEnv::start_with_binlog_disk(1, 2, 64).await,
        _ => TestEnv::start(1, 2).await,
    };
    let (env, old, old_epoch, writers) = writes_on(env, 4, 200).await;
    let _story = EventsOnPanic::new(&env, "c1");

    let t0 = Instant::now();
    let t0_ms = unix_ms();
    let watch = tokio::spawn(watch_nodes(env.app().topology.clone(), t0));
    let injected = Injected::inject(fault, &env, &old);
    eprintln!("{fault:?}: leader {old} lost");
    let (new, new_epoch) = new_leader(&env, "c1", &old, old_epoch, Duration::from_secs(30)).await;
    eprintln!("{fault:?}: new leader {new}");
    let elected_after = t0.elapsed();
    assert_eq!(new_epoch, old_epoch + 1);
    writers
        .ledger
        .wait_for_more(
            200,
            Duration::from_secs(20),
            "writes acknowledged on the new leader",
        )
        .await;
    // Writes acknowledged after the fault went to the new leader (but for any answer already
    // on its way when the fault struck).
    let first_write = writers
        .ledger
        .first_ack_after(t0 + Duration::from_millis(50))
        .map(|d| d + Duration::from_millis(50));
    eprintln!("{fault:?}: writes on the new leader");
    // No writer may be left waiting on the lost leader.
    let ledger = writers.stop(Duration::from_secs(10)).await;
    let present = check_no_write_lost(&env, &new, &ledger).await;
    check_converged(&env, "c1", &new, &[&old]).await;
    eprintln!("{fault:?}: converged");

    // The old leader comes back: never a write through the router again (it is not the
    // leader of the current epoch), fenced read-only, then rejoined or kept out.
    injected.end();
    let mut lconn = env.admin_conn(port_of(&new)).await;
    let want = gtid_and_checksum(&mut lconn).await;
    let rejoined = fenced_and_in_place(&env, "c1", &old, &want, &present, &ledger).await;
    let (leader_now, epoch_now) = leader_of(&env, "c1");
    assert_eq!((leader_now.as_str(), epoch_now), (new.as_str(), new_epoch));
    let events = env.app().orchestrator.events("c1").unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "failover.failed")
        .map(|e| e.message.clone())
        .collect();
    watch.abort();
    for e in events.iter().filter(|e| e.at_ms >= t0_ms) {
        println!("  +{} ms {}: {}", e.at_ms - t0_ms, e.kind, e.message);
    }
    let codes: Vec<u16> = ledger.errors.lock().unwrap().iter().map(|e| e.0).collect();
    println!(
        "{fault:?}: new leader {new} after {} ms, first write acknowledged {} ms after the \
         fault, {} client errors {codes:?}, rejoined: {rejoined}, failed attempts: {failed:?}",
        elected_after.as_millis(),
        first_write.map_or(-1, |d| d.as_millis() as i64),
        codes.len(),
    );
    drop(lconn);
    env.stop().await;
}

/// Prints each change of the nodes' published state after `t0` (diagnostics for the log).
async fn watch_nodes(topology: shard_map::TopologyHandle, t0: Instant) {
    let mut last = String::new();
    loop {
        let t = topology.load();
        let now: Vec<String> = t
            .clusters
            .values()
            .flat_map(|c| c.nodes.iter())
            .map(|n| format!("{} {:?} io={:?}", n.addr, n.state, n.io_running))
            .collect();
        let now = now.join(" | ");
        if now != last {
            println!("  +{} ms nodes: {now}", t0.elapsed().as_millis());
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_failed_over_and_fenced_when_it_thaws() {
    leader_lost(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_failed_over_and_fenced_when_the_partition_heals() {
    leader_lost(Fault::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_is_full_is_failed_over_and_fenced() {
    leader_lost(Fault::DiskFull).await;
}

/// A replica lost the same ways is no reason to fail over: the leader keeps its epoch and
/// the writes go on; the replica catches up when it returns.
async fn replica_lost(fault: Fault) {
    let (env, leader, epoch, writers) = cluster_under_writes(2, 100).await;
    let replica = env
        .local()
        .cluster("c1")
        .unwrap()
        .replicas()
        .next()
        .unwrap()
        .addr
        .clone();
    let injected = Injected::inject(fault, &env, &replica);
    // The monitor sees it go; writes go on meanwhile.
    eventually(
        Duration::from_secs(20),
        "the replica marked not up",
        || async {
            let t = env.app().topology.load();
            let n = t.cluster("c1")?.node(&replica)?.clone();
            (n.state != shard_map::NodeState::Up).then_some(())
        },
    )
    .await;
    writers
        .ledger
        .wait_for_more(
            200,
            Duration::from_secs(20),
            "writes while the replica is lost",
        )
        .await;
    injected.end();
    let ledger = writers.stop(Duration::from_secs(10)).await;
    assert_eq!(
        leader_of(&env, "c1"),
        (leader.clone(), epoch),
        "no failover"
    );
    let events = env.app().orchestrator.events("c1").unwrap();
    assert!(
        !events.iter().any(|e| e.kind.starts_with("failover.")),
        "no failover was attempted: {events:?}"
    );
    check_no_write_lost(&env, &leader, &ledger).await;
    check_converged(&env, "c1", &leader, &[]).await;
    let mut c = env.admin_conn(port_of(&replica)).await;
    let ro: i64 = query_one(&mut c, "SELECT @@global.read_only").await;
    assert_eq!(ro, 1);
    drop(c);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_causes_no_failover() {
    replica_lost(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_causes_no_failover() {
    replica_lost(Fault::Partition).await;
}

/// A partition of the leader that heals while the orchestrator is deciding (the leader has
/// just been seen down): whether or not the failover goes through, there is one writable
/// leader at the end, under a newer epoch if it changed, no acknowledged write is lost, the
/// nodes that follow the leader converge, and a node left out holds nothing but writes whose
/// clients got an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_healing_during_detection_leaves_one_leader_and_loses_nothing() {
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
    writers
        .ledger
        .wait_for_more(200, Duration::from_secs(30), "writes after the partition")
        .await;
    let ledger = writers.stop(Duration::from_secs(10)).await;
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
    let mut lconn = env.admin_conn(port_of(&leader)).await;
    let want = gtid_and_checksum(&mut lconn).await;
    let mut kept_out = Vec::new();
    for node in &env.local().cluster("c1").unwrap().nodes {
        if node.addr == leader {
            continue;
        }
        if !fenced_and_in_place(&env, "c1", &node.addr, &want, &present, &ledger).await {
            kept_out.push(node.addr.as_str());
        }
    }
    println!(
        "healed at Down: leader {leader} epoch {epoch} (failover: {}), kept out: {kept_out:?}",
        leader != old
    );
    drop(lconn);
    env.stop().await;
}

/// The source address the router's backend connections leave from in the path scenarios, so
/// that the router's path to a server can be cut apart from the orchestrator's and the
/// replicas' (which leave from 127.0.0.1).
const ROUTER_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// One cluster with writers through a router whose backend connections leave from
/// [`ROUTER_SOURCE`].
async fn cluster_with_router_apart() -> (TestEnv, String, u64, common::writes::Writers) {
    let env = TestEnv::start_with(1, 2, |c| {
        c.router.backend_source_address = Some(ROUTER_SOURCE.to_string());
    })
    .await;
    writes_on(env, 4, 200).await
}

/// No failover was attempted, and the leader and epoch are still `leader`/`epoch`.
fn no_failover(env: &TestEnv, leader: &str, epoch: u64) {
    assert_eq!(
        leader_of(env, "c1"),
        (leader.to_owned(), epoch),
        "no failover"
    );
    let events = env.app().orchestrator.events("c1").unwrap();
    let failovers: Vec<_> = events
        .iter()
        .filter(|e| e.kind.starts_with("failover."))
        .collect();
    assert!(failovers.is_empty(), "no failover attempted: {failovers:?}");
}

/// Only the router's path to the leader is cut. The router's failing connections are no
/// evidence of a dead leader (the orchestrator and the replicas still reach it): no
/// failover. The router gives up on the dead path (`backend_dead_after_ms`) instead of
/// leaving its clients waiting, and serves writes again once the path heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_the_leader_causes_no_failover_and_recovers_when_it_heals() {
    let (env, leader, epoch, writers) = cluster_with_router_apart().await;
    let _story = EventsOnPanic::new(&env, "c1");
    let errors_before = writers.ledger.errors.lock().unwrap().len();
    let cut = blackhole_from(port_of(&leader), ROUTER_SOURCE);
    // Every writer's statement on the dead path ends in an error, none hangs.
    eventually(
        Duration::from_secs(30),
        "each writer told of the dead path",
        || async {
            let n = writers.ledger.errors.lock().unwrap().len();
            (n >= errors_before + 4).then_some(())
        },
    )
    .await;
    // Meanwhile the orchestrator still sees a healthy leader.
    let t = env.app().topology.load();
    let state = t
        .cluster("c1")
        .and_then(|c| c.node(&leader))
        .map(|n| n.state);
    assert_eq!(state, Some(shard_map::NodeState::Up));
    no_failover(&env, &leader, epoch);
    cut.heal();
    writers
        .ledger
        .wait_for_more(200, Duration::from_secs(30), "writes once the path healed")
        .await;
    let ledger = writers.stop(Duration::from_secs(10)).await;
    no_failover(&env, &leader, epoch);
    check_no_write_lost(&env, &leader, &ledger).await;
    check_converged(&env, "c1", &leader, &[]).await;
    let codes: Vec<u16> = ledger.errors.lock().unwrap().iter().map(|e| e.0).collect();
    println!("router path cut: client errors {codes:?}");
    env.stop().await;
}

/// The orchestrator's path to the leader is cut, while the replicas' streams (and the
/// router) still reach it: the leader is unreachable for the orchestrator only, the replicas
/// say it lives, no failover; writes through the router go on all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_cut_off_from_the_leader_causes_no_failover() {
    let (env, leader, epoch, writers) = cluster_with_router_apart().await;
    let _story = EventsOnPanic::new(&env, "c1");
    // The replicas' connections to the leader, by their client ports.
    let mut lconn = env.admin_conn(port_of(&leader)).await;
    let hosts: Vec<String> = lconn
        .query(
            "SELECT HOST FROM information_schema.PROCESSLIST \
             WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await
        .unwrap();
    drop(lconn);
    let spare: Vec<u16> = hosts.iter().map(|h| port_of(h)).collect();
    assert_eq!(
        spare.len(),
        2,
        "both replicas stream from the leader: {hosts:?}"
    );
    let cut = blackhole_except(port_of(&leader), std::net::Ipv4Addr::LOCALHOST, &spare);
    eventually(
        Duration::from_secs(20),
        "the leader seen down by the orchestrator",
        || async {
            let t = env.app().topology.load();
            let n = t.cluster("c1")?.node(&leader)?.clone();
            (n.state == shard_map::NodeState::Down).then_some(())
        },
    )
    .await;
    // Judged: suspect, not dead, because the replicas still receive from it.
    eventually(
        Duration::from_secs(10),
        "a leader.suspect event",
        || async {
            let events = env.app().orchestrator.events("c1").ok()?;
            events
                .iter()
                .any(|e| e.kind == "leader.suspect")
                .then_some(())
        },
    )
    .await;
    writers
        .ledger
        .wait_for_more(
            200,
            Duration::from_secs(20),
            "writes while the orchestrator is cut off",
        )
        .await;
    no_failover(&env, &leader, epoch);
    cut.heal();
    eventually(
        Duration::from_secs(20),
        "the leader seen up again",
        || async {
            let t = env.app().topology.load();
            let n = t.cluster("c1")?.node(&leader)?.clone();
            (n.state == shard_map::NodeState::Up).then_some(())
        },
    )
    .await;
    let ledger = writers.stop(Duration::from_secs(10)).await;
    no_failover(&env, &leader, epoch);
    check_no_write_lost(&env, &leader, &ledger).await;
    check_converged(&env, "c1", &leader, &[]).await;
    env.stop().await;
}
