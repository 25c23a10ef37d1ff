//! Helpers shared by the orchestrator's integration tests: polling with a deadline and
//! connections to local nodes.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use orchestrator::{LocalClusters, LocalNode, ProvisionSpec};

/// Polls `check` until it returns `Ok`, failing the test with `what` and the last error once
/// `within` has passed. The only way these tests wait for anything.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Starts clusters, failing loudly (with the install hint) if MariaDB is missing.
pub async fn start(spec: ProvisionSpec) -> LocalClusters {
    match LocalClusters::start(spec).await {
        Ok(lc) => lc,
        Err(e) => panic!("starting local clusters failed: {e}"),
    }
}

/// A 1-cluster spec in `dir` with `replicas` replicas.
pub fn spec(dir: &std::path::Path, replicas: usize) -> ProvisionSpec {
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = 1;
    spec.replicas = replicas;
    spec
}

pub async fn connect(node: &LocalNode, user: &str, password: &str) -> anyhow::Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(node.port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    Ok(Conn::new(opts).await?)
}

pub async fn app(lc: &LocalClusters, node: &LocalNode) -> anyhow::Result<Conn> {
    let s = lc.spec();
    connect(node, &s.app_user, &s.app_password).await
}

pub async fn admin(lc: &LocalClusters, node: &LocalNode) -> anyhow::Result<Conn> {
    let s = lc.spec();
    connect(node, &s.admin_user, &s.admin_password).await
}

/// One value of a one-row, one-column query.
pub async fn scalar<T: mysql_async::prelude::FromValue>(
    conn: &mut Conn,
    query: &str,
) -> anyhow::Result<T> {
    let row: Row = conn
        .query_first(query)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{query}: no row"))?;
    Ok(row
        .get_opt(0)
        .ok_or_else(|| anyhow::anyhow!("{query}: no column"))??)
}

/// A global status variable's value.
pub async fn status_var(conn: &mut Conn, name: &str) -> anyhow::Result<String> {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await?;
    Ok(row
        .ok_or_else(|| anyhow::anyhow!("no status variable {name}"))?
        .1)
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Kills, when dropped, the listed processes that are still `mariadbd` servers of `dir`: for a
/// test that deliberately leaks servers, so that a failure before it cleans up leaks nothing.
/// Checking the command line keeps it from ever signalling a recycled pid.
pub struct KillLeftovers {
    pub pids: Vec<u32>,
    pub dir: std::path::PathBuf,
}

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        for pid in &self.pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("mariadbd") && cmdline.contains(&dir) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// One scenario: its own clusters (one cluster `c1`) in its own directory, an orchestrator
/// running over them, and helpers to look at both.
pub struct Scenario {
    pub lc: LocalClusters,
    pub topology: shard_map::TopologyHandle,
    pub orch: std::sync::Arc<orchestrator::Orchestrator>,
    /// What the orchestrator watches.
    pub specs: Vec<orchestrator::ClusterSpec>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    // Last: removed after the servers are gone.
    _dir: tempfile::TempDir,
}

/// How long scenario steps may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

impl Scenario {
    /// `replicas` replicas, semi-sync or not, the orchestrator with `settings` and the
    /// monitor's defaults.
    pub async fn start(
        replicas: usize,
        semi_sync: bool,
        settings: orchestrator::OrchestratorSettings,
    ) -> Scenario {
        Self::start_with(replicas, semi_sync, settings, |spec| spec).await
    }

    /// Like [`Scenario::start`], with the cluster spec the orchestrator gets rewritten by
    /// `watch` (to put a proxy in front of a node, say).
    pub async fn start_with(
        replicas: usize,
        semi_sync: bool,
        settings: orchestrator::OrchestratorSettings,
        watch: impl FnOnce(orchestrator::ClusterSpec) -> orchestrator::ClusterSpec,
    ) -> Scenario {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(dir.path(), replicas);
        s.semi_sync = semi_sync;
        let lc = start(s).await;
        let specs = vec![watch(lc.clusters()[0].monitor_spec())];
        let topology =
            shard_map::TopologyHandle::new(orchestrator::monitor::initial_topology(&specs));
        let (orch, stop, task) = launch(&lc, &specs, &topology, settings);
        let scenario = Scenario {
            lc,
            topology,
            orch,
            specs,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        scenario.wait_healthy().await;
        scenario
    }

    /// Replaces the orchestrator with one using `settings` (same topology, fresh memory).
    pub async fn restart_orchestrator(&mut self, settings: orchestrator::OrchestratorSettings) {
        self.stop_orchestrator().await;
        let (orch, stop, task) = launch(&self.lc, &self.specs, &self.topology, settings);
        self.orch = orch;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// `c1` as published now.
    pub fn cluster(&self) -> shard_map::ClusterStatus {
        self.topology
            .load()
            .cluster("c1")
            .cloned()
            .expect("cluster c1 published")
    }

    pub fn leader(&self) -> String {
        self.cluster().leader.expect("c1 has a leader")
    }

    pub fn epoch(&self) -> u64 {
        self.cluster().epoch
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.lc.clusters()[0]
            .nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect()
    }

    pub fn node(&self, addr: &str) -> &LocalNode {
        self.lc.clusters()[0].node(addr).expect("known node")
    }

    pub async fn admin(&self, addr: &str) -> anyhow::Result<Conn> {
        admin(&self.lc, self.node(addr)).await
    }

    pub async fn app(&self, addr: &str) -> anyhow::Result<Conn> {
        app(&self.lc, self.node(addr)).await
    }

    /// Waits until every node is up, the leader is known and the cluster serves.
    pub async fn wait_healthy(&self) {
        eventually("every node up and the cluster serving", WAIT, || async {
            let c = self.cluster();
            anyhow::ensure!(c.leader.is_some(), "no leader");
            anyhow::ensure!(c.phase == shard_map::ClusterPhase::Serving, "{:?}", c.phase);
            let down: Vec<_> = c
                .nodes
                .iter()
                .filter(|n| n.state != shard_map::NodeState::Up)
                .map(|n| (&n.addr, n.state))
                .collect();
            anyhow::ensure!(down.is_empty(), "not up: {down:?}");
            Ok(())
        })
        .await;
    }

    /// Waits until the epoch is past `epoch` and returns the cluster then.
    pub async fn wait_new_epoch(&self, epoch: u64) -> shard_map::ClusterStatus {
        eventually(&format!("an epoch after {epoch}"), WAIT, || async {
            let c = self.cluster();
            anyhow::ensure!(
                c.epoch > epoch && c.phase == shard_map::ClusterPhase::Serving,
                "epoch {} {:?}; events: {:#?}",
                c.epoch,
                c.phase,
                self.events()
            );
            Ok(c)
        })
        .await
    }

    pub fn events(&self) -> Vec<orchestrator::Event> {
        self.orch.events("c1").expect("events of c1")
    }

    /// Waits for an event of `kind` whose message contains `text`.
    pub async fn wait_event(&self, kind: &str, text: &str) -> orchestrator::Event {
        eventually(&format!("a {kind} event with {text:?}"), WAIT, || async {
            self.events()
                .into_iter()
                .find(|e| e.kind == kind && e.message.contains(text))
                .ok_or_else(|| anyhow::anyhow!("events: {:#?}", self.events()))
        })
        .await
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, addr: &str) {
        self.lc.kill_node("c1", addr).expect("kill node");
    }

    /// Stops the orchestrator (the clusters keep running).
    pub async fn stop_orchestrator(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("orchestrator stops")
                .expect("orchestrator task");
        }
    }

    pub async fn stop(mut self) {
        self.stop_orchestrator().await;
        let Scenario { lc, _dir, .. } = self;
        lc.stop().await.expect("stop servers");
    }
}

type Launched = (
    std::sync::Arc<orchestrator::Orchestrator>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// An orchestrator with the monitor's defaults, running.
fn launch(
    lc: &LocalClusters,
    specs: &[orchestrator::ClusterSpec],
    topology: &shard_map::TopologyHandle,
    settings: orchestrator::OrchestratorSettings,
) -> Launched {
    let spec = lc.spec();
    let monitor = orchestrator::MonitorConfig::new(&spec.admin_user, &spec.admin_password);
    let orch = orchestrator::Orchestrator::new(
        monitor,
        settings,
        specs.to_vec(),
        topology.clone(),
        spec.repl_user.clone(),
        spec.repl_password.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(orch.clone().run(async {
        let _ = stopped.await;
    }));
    (orch, stop, task)
}

/// A TCP proxy in front of one server, which the test can cut: open connections are closed
/// and new ones dropped at once.
pub struct Proxy {
    pub addr: String,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts it on a free port; must be called within the tokio runtime.
    pub fn start(upstream: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { addr, cut, task }
    }

    /// From now on nothing gets through.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `t.k (id INT PRIMARY KEY, v VARCHAR(64))` on the leader.
pub async fn create_table(conn: &mut Conn) -> anyhow::Result<()> {
    conn.query_drop("CREATE DATABASE IF NOT EXISTS t").await?;
    conn.query_drop("CREATE TABLE IF NOT EXISTS t.k (id INT PRIMARY KEY, v VARCHAR(64))")
        .await?;
    Ok(())
}

/// Rows `from..to` into `t.k`.
pub async fn insert_rows(conn: &mut Conn, from: u32, to: u32) -> anyhow::Result<()> {
    for id in from..to {
        conn.query_drop(format!("INSERT INTO t.k VALUES ({id}, 'v{id}')"))
            .await?;
    }
    Ok(())
}

/// What a node holds: `@@gtid_current_pos` and `CHECKSUM TABLE t.k`.
pub async fn fingerprint(conn: &mut Conn) -> anyhow::Result<(String, u64)> {
    let pos: String = scalar(conn, "SELECT @@global.gtid_current_pos").await?;
    let row: Row = conn
        .query_first("CHECKSUM TABLE t.k")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no checksum row"))?;
    let sum: Option<u64> = row.get_opt(1).transpose()?.flatten();
    Ok((pos, sum.unwrap_or(0)))
}

/// Every running node holds the same data and GTID position.
pub async fn assert_same_everywhere(s: &Scenario, nodes: &[String]) {
    eventually("the same data and position on every node", WAIT, || async {
        let mut seen = Vec::new();
        for addr in nodes {
            let mut c = s.admin(addr).await?;
            seen.push((addr.clone(), fingerprint(&mut c).await?));
        }
        let first = &seen[0].1;
        anyhow::ensure!(seen.iter().all(|(_, f)| f == first), "{seen:?}");
        Ok(())
    })
    .await;
}

/// `addr` is read-only and replicates from `leader` with both threads running.
pub async fn assert_replica_of(s: &Scenario, addr: &str, leader: &str) {
    eventually(
        &format!("{addr} replicating from {leader}"),
        WAIT,
        || async {
            let mut c = s.admin(addr).await?;
            let ro: i64 = scalar(&mut c, "SELECT @@global.read_only").await?;
            anyhow::ensure!(ro == 1, "{addr} read_only = {ro}");
            let row: mysql_async::Row = c
                .query_first("SHOW SLAVE STATUS")
                .await?
                .ok_or_else(|| anyhow::anyhow!("{addr}: no replication"))?;
            let get = |n: &str| row.get::<String, _>(n).unwrap_or_default();
            let source = format!("{}:{}", get("Master_Host"), get("Master_Port"));
            anyhow::ensure!(
                source == leader
                    && get("Slave_IO_Running") == "Yes"
                    && get("Slave_SQL_Running") == "Yes",
                "{addr}: source {source}, IO {}, SQL {}, {}",
                get("Slave_IO_Running"),
                get("Slave_SQL_Running"),
                get("Last_Error")
            );
            Ok(())
        },
    )
    .await;
}
