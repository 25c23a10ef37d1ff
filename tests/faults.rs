//! Failures as they happen in production, not only `kill -9`: a leader that hangs (frozen
//! with `SIGSTOP`: every connection to it stays open and silent), a leader cut off by a
//! partition that drops packets without resets, and the same faults on a replica, which
//! must cause no failover. Each scenario runs under write traffic through the router and
//! ends with the same checks: no acknowledged write lost, no row nobody was told about, the
//! replicas converged, no writer left hanging, and the old leader fenced when it returns.

mod common;

use std::time::Duration;

use common::faults::{blackhole, fill_disk, freeze, Blackhole, DiskFull, Frozen};
use common::writes::{
    check_converged, check_no_write_lost, cluster_under_writes, fenced_and_in_place,
    gtid_and_checksum, leader_of, new_leader, port_of, writes_on, EventsOnPanic,
};
use common::{eventually, query_one, TestEnv};
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
