//! The monitor against a real 1 leader + 1 replica cluster: it sees both nodes up with the
//! right roles and replication state, names the leader of a cluster given none, and notices a
//! killed replica going down and coming back.

mod common;

use std::time::Duration;

use common::{eventually, spec, start};
use orchestrator::monitor::{self, initial_topology, ClusterSpec, MonitorConfig};
use shard_map::{NodeState, NodeStatus, Role, TopologyHandle};

const WAIT: Duration = Duration::from_secs(20);

/// The node's status in the current snapshot, or an error saying why it is not there yet.
fn node(topology: &TopologyHandle, addr: &str) -> anyhow::Result<NodeStatus> {
    let t = topology.load();
    let c = t
        .cluster("c1")
        .ok_or_else(|| anyhow::anyhow!("no cluster c1"))?;
    c.node(addr)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no node {addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_roles_lag_and_a_killed_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lc = start(spec(dir.path(), 1)).await;
    let c = lc.clusters()[0].clone();
    let leader = c.leader.clone();
    let replica = c.replicas().next().expect("replica").addr.clone();

    // No leader given: the monitor must find it (the only writable, non-replicating node).
    let specs = vec![ClusterSpec {
        leader: None,
        ..c.monitor_spec()
    }];
    let topology = TopologyHandle::new(initial_topology(&specs));
    let mut cfg = MonitorConfig::new(&lc.spec().admin_user, &lc.spec().admin_password);
    cfg.tick = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(monitor::run(cfg, specs, topology.clone(), async {
        let _ = stopped.await;
    }));

    eventually("both nodes up with their roles", WAIT, || async {
        let l = node(&topology, &leader)?;
        let r = node(&topology, &replica)?;
        anyhow::ensure!(
            l.state == NodeState::Up
                && l.role == Role::Leader
                && l.read_only == Some(false)
                && l.io_running.is_none(),
            "leader: {l:?}"
        );
        anyhow::ensure!(
            r.state == NodeState::Up
                && r.role == Role::Replica
                && r.read_only == Some(true)
                && r.lag_seconds == Some(0)
                && r.io_running == Some(true)
                && r.sql_running == Some(true)
                && r.last_error.is_none(),
            "replica: {r:?}"
        );
        Ok(())
    })
    .await;
    let snapshot = topology.load();
    let c1 = snapshot.cluster("c1").expect("c1");
    assert_eq!(
        c1.leader.as_deref(),
        Some(leader.as_str()),
        "leader discovered"
    );
    assert_eq!(c1.epoch, 2, "naming a leader starts a new epoch");
    let version = snapshot.version;

    lc.kill_node("c1", &replica).expect("kill replica");
    eventually("the killed replica down", WAIT, || async {
        let r = node(&topology, &replica)?;
        anyhow::ensure!(r.state == NodeState::Down, "replica: {r:?}");
        Ok(())
    })
    .await;
    let snapshot = topology.load();
    assert!(snapshot.version > version);
    let l = snapshot
        .cluster("c1")
        .and_then(|c| c.node(&leader))
        .expect("leader");
    assert_eq!(l.state, NodeState::Up, "the leader is unaffected");
    assert_eq!(
        snapshot.cluster("c1").and_then(|c| c.leader.clone()),
        Some(leader.clone()),
        "the monitor does not move leadership"
    );

    lc.start_node("c1", &replica)
        .await
        .expect("restart replica");
    eventually("the restarted replica up and replicating", WAIT, || async {
        let r = node(&topology, &replica)?;
        anyhow::ensure!(
            r.state == NodeState::Up
                && r.role == Role::Replica
                && r.io_running == Some(true)
                && r.sql_running == Some(true),
            "replica: {r:?}"
        );
        Ok(())
    })
    .await;

    stop.send(()).expect("monitor still running");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("monitor stops on shutdown")
        .expect("monitor task");
    lc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_cluster_publishes_nothing_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lc = start(spec(dir.path(), 1)).await;
    let specs: Vec<ClusterSpec> = lc.clusters().iter().map(|c| c.monitor_spec()).collect();
    let topology = TopologyHandle::new(initial_topology(&specs));
    let mut cfg = MonitorConfig::new(&lc.spec().admin_user, &lc.spec().admin_password);
    cfg.tick = Duration::from_millis(100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(monitor::run(cfg, specs, topology.clone(), async {
        let _ = stopped.await;
    }));
    let leader = lc.clusters()[0].leader.clone();
    eventually("the leader up", WAIT, || async {
        let l = node(&topology, &leader)?;
        anyhow::ensure!(l.state == NodeState::Up, "leader: {l:?}");
        Ok(())
    })
    .await;
    // Wait until a full round has passed with everything up, then watch ten more rounds: on an
    // idle cluster nothing changes, so nothing may be published.
    eventually("every node up", WAIT, || async {
        let t = topology.load();
        let c = t.cluster("c1").ok_or_else(|| anyhow::anyhow!("no c1"))?;
        anyhow::ensure!(c.nodes.iter().all(|n| n.state == NodeState::Up));
        Ok(())
    })
    .await;
    let mut changes = topology.subscribe();
    changes.borrow_and_update();
    let before = topology.load().version;
    let quiet = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    assert!(
        quiet.is_err(),
        "published on an idle cluster: version {before} -> {}",
        topology.load().version
    );
    stop.send(()).expect("monitor still running");
    task.await.expect("monitor task");
    lc.stop().await.expect("stop");
}
