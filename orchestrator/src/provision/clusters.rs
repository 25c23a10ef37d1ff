//! The running clusters: bringing them up (fresh from the template, or again from the state
//! file), stopping them, and killing or restarting single nodes for failure tests.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::mariadb::{self, Mariadb};
use super::process::{self, NodeProcess, ServerRole, StartFailure};
use super::sql;
use super::state::{StateFile, STATE_FILE};
use super::{LocalCluster, LocalNode, ProvisionError, ProvisionSpec, MAX_SOCKET_PATH};

/// How many ports a node may try when its first free port was taken before the server bound it.
const PORT_ATTEMPTS: usize = 5;
/// How long [`LocalClusters::stop`] lets servers shut down cleanly before killing them.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Running local clusters. Owns the `mariadbd` child processes: [`LocalClusters::stop`] shuts
/// them down cleanly, and dropping the handle kills whatever is still running, so a test that
/// panics leaves no server behind. Only processes this handle started are ever signalled, and
/// servers started again on its data directories (by a physical rebuild's restore program).
pub struct LocalClusters {
    spec: ProvisionSpec,
    /// The canonical provisioning directory.
    dir: PathBuf,
    mariadb: Mariadb,
    clusters: Vec<LocalCluster>,
    /// Running servers by address.
    procs: BTreeMap<String, NodeProcess>,
}

impl fmt::Debug for LocalClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalClusters")
            .field("dir", &self.dir)
            .field("clusters", &self.clusters)
            .field("running", &self.procs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LocalClusters {
    /// Provisions `spec` (or, if the directory holds a state file from an earlier start, brings
    /// those servers back with the same data, ports and roles) and returns once every leader is
    /// writable and every replica is connected to it.
    pub async fn start(spec: ProvisionSpec) -> Result<LocalClusters, ProvisionError> {
        spec.validate()?;
        let began = Instant::now();
        let mariadb = Mariadb::locate().await?;
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| ProvisionError::io(format!("creating {}", spec.dir.display()), e))?;
        // Absolute paths: they go on mariadbd's command line and identify leftover servers.
        let dir = std::fs::canonicalize(&spec.dir)
            .map_err(|e| ProvisionError::io(format!("resolving {}", spec.dir.display()), e))?;
        let state_path = dir.join(STATE_FILE);
        let restart = state_path.exists();
        // Built before anything starts, so that an error half-way drops it and kills what did.
        let mut this = LocalClusters {
            spec,
            dir,
            mariadb,
            clusters: Vec::new(),
            procs: BTreeMap::new(),
        };
        if restart {
            let state = StateFile::load(&state_path)?;
            this.restart(state).await?;
        } else {
            this.provision().await?;
        }
        tracing::info!(
            dir = %this.dir.display(),
            clusters = this.clusters.len(),
            nodes = this.procs.len(),
            restart,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "local clusters started"
        );
        Ok(this)
    }

    /// The clusters, in name order.
    pub fn clusters(&self) -> &[LocalCluster] {
        &self.clusters
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&LocalCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Prints the last `lines` lines of every server's error log to stderr, and the whole
    /// crash report of a server that crashed (from MariaDB's "got signal" on).
    pub fn print_error_log_tails(&self, lines: usize) {
        for cluster in &self.clusters {
            for node in &cluster.nodes {
                let path = node.error_log();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let from = all
                    .iter()
                    .position(|l| l.contains("got signal"))
                    .unwrap_or(all.len().saturating_sub(lines));
                eprintln!(
                    "--- end of {} ({} {}) ---\n{}",
                    path.display(),
                    cluster.name,
                    node.addr,
                    all[from..].join("\n")
                );
            }
        }
    }

    /// The provisioning directory (canonicalised).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec this handle was started with.
    pub fn spec(&self) -> &ProvisionSpec {
        &self.spec
    }

    /// The pid of the server this handle started for `addr`, unless it was stopped or killed
    /// through this handle.
    pub fn pid(&self, addr: &str) -> Option<u32> {
        self.procs.get(addr).map(NodeProcess::pid)
    }

    /// The pids of every server this handle currently owns.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.values().map(NodeProcess::pid).collect()
    }

    /// Shuts every server down (SIGTERM), waiting up to a minute before killing stragglers.
    pub async fn stop(mut self) -> Result<(), ProvisionError> {
        let mut procs = std::mem::take(&mut self.procs);
        let mut all: Vec<&mut NodeProcess> = procs.values_mut().collect();
        process::terminate_all(&mut all, STOP_TIMEOUT).await;
        // A server a physical rebuild's restore program started again on a node's datadir.
        let datadirs: Vec<PathBuf> = self
            .clusters
            .iter()
            .flat_map(|c| &c.nodes)
            .map(|n| n.datadir.clone())
            .collect();
        for datadir in datadirs {
            process::stop_restarted_server(&datadir, STOP_TIMEOUT).await?;
        }
        let killed: Vec<String> = procs
            .iter()
            .filter(|(_, p)| p.killed_after_timeout())
            .map(|(addr, _)| addr.clone())
            .collect();
        if killed.is_empty() {
            Ok(())
        } else {
            Err(ProvisionError::StopTimeout {
                addrs: killed,
                after: STOP_TIMEOUT,
            })
        }
    }

    /// Kills one server with SIGKILL (a crash, for failover tests). Killing a node that is not
    /// running is not an error.
    pub fn kill_node(&mut self, cluster: &str, addr: &str) -> Result<(), ProvisionError> {
        let (_, node) = self.find(cluster, addr)?;
        let datadir = node.datadir.clone();
        if let Some(mut p) = self.procs.remove(addr) {
            p.kill_and_wait();
        }
        // Or the server a restore program started again in its place.
        process::signal_foreign_server(&datadir, libc::SIGKILL);
        Ok(())
    }

    /// Starts a stopped or killed server again on its datadir and port. Its replication
    /// configuration is left as it is on disk (a replica resumes replicating by itself); it
    /// starts read-only unless it is its cluster's current leader, and a leader gets semi-sync
    /// back once the running replicas that follow it have reconnected.
    pub async fn start_node(&mut self, cluster: &str, addr: &str) -> Result<(), ProvisionError> {
        let (c, node) = self.find(cluster, addr)?;
        let is_leader = c.leader == addr;
        let node = node.clone();
        let followers: Vec<LocalNode> = c
            .replicas()
            .filter(|n| self.procs.contains_key(&n.addr))
            .cloned()
            .collect();
        if let Some(p) = self.procs.get_mut(addr) {
            if p.try_exited().is_none() {
                return Err(ProvisionError::AlreadyRunning { addr: addr.into() });
            }
        }
        self.procs.remove(addr);
        let role = ServerRole {
            read_only: !is_leader,
            semi_sync: self.spec.semi_sync,
            truncate_unacknowledged: true,
            skip_slave_start: false,
            ssl: self.spec.ssl.clone(),
            binlog_disk_mb: self.spec.binlog_disk_mb,
        };
        let p = match process::start_server(&self.mariadb, &node, role.clone()).await {
            Err(StartFailure::Other(ProvisionError::ServerExited { tail, .. }))
                if tail.contains(process::TRUNCATION_REFUSED) =>
            {
                // A former leader killed with prepared XA transactions: the server refuses
                // to cut its binlog, and would never start. Ordinary crash recovery keeps
                // what the binlog holds (prepared XA transactions stay prepared, as they are
                // on the replicas that received them); a transaction no replica acknowledged
                // then makes the node hold GTIDs the new leader lacks, and rejoin keeps it
                // out instead of letting it diverge.
                tracing::warn!(
                    addr = %node.addr,
                    "crash recovery as a semi-sync replica refused; starting with ordinary \
                     crash recovery"
                );
                let role = ServerRole {
                    truncate_unacknowledged: false,
                    ..role
                };
                process::start_server(&self.mariadb, &node, role)
                    .await
                    .map_err(|f| start_error(f, &node))?
            }
            other => other.map_err(|f| start_error(f, &node))?,
        };
        self.procs.insert(node.addr.clone(), p);
        if is_leader {
            let mut expected = 0;
            for f in &followers {
                if sql::replication_source(f).await?.as_deref() == Some(addr) {
                    expected += 1;
                }
            }
            sql::activate_leader(&node, expected, self.spec.semi_sync && expected > 0).await?;
        }
        Ok(())
    }

    /// Records `addr` as `cluster`'s leader in the state file (the failover code calls this
    /// after promoting it), so that a restart gives it the leader's role.
    pub fn set_leader(&mut self, cluster: &str, addr: &str) -> Result<(), ProvisionError> {
        self.find(cluster, addr)?;
        if let Some(c) = self.clusters.iter_mut().find(|c| c.name == cluster) {
            c.leader = addr.to_owned();
        }
        self.save_state()
    }

    fn find(
        &self,
        cluster: &str,
        addr: &str,
    ) -> Result<(&LocalCluster, &LocalNode), ProvisionError> {
        self.cluster(cluster)
            .and_then(|c| c.node(addr).map(|n| (c, n)))
            .ok_or_else(|| ProvisionError::UnknownNode {
                cluster: cluster.into(),
                addr: addr.into(),
            })
    }

    fn save_state(&self) -> Result<(), ProvisionError> {
        StateFile::from_clusters(&self.mariadb.version, &self.dir, &self.clusters)
            .save(&self.dir.join(STATE_FILE))
    }

    /// A fresh start: copy the template to every node, start them all at once, create users,
    /// wire replication, and only then write the state file.
    async fn provision(&mut self) -> Result<(), ProvisionError> {
        let template = self.mariadb.ensure_template().await?;
        let count = self.spec.clusters * (self.spec.replicas + 1);
        let mut ports = match self.spec.base_port {
            Some(base) => (0..count).map(|i| base + i as u16).collect(),
            None => free_ports(count)?,
        }
        .into_iter();
        let mut clusters = Vec::new();
        for ci in 1..=self.spec.clusters {
            let name = format!("c{ci}");
            let mut nodes = Vec::new();
            for ni in 1..=self.spec.replicas + 1 {
                let port = ports
                    .next()
                    .ok_or_else(|| ProvisionError::InvalidSpec("not enough ports".to_owned()))?;
                let datadir = self.dir.join(&name).join(format!("n{ni}"));
                nodes.push(LocalNode::new(port, datadir, (ci * 100 + ni) as u32));
            }
            clusters.push(LocalCluster {
                name,
                leader: nodes[0].addr.clone(),
                nodes,
            });
        }
        check_socket_paths(&clusters)?;

        // Datadirs: a leftover of a start that failed before writing the state file is not
        // worth keeping.
        let copies = clusters.iter().flat_map(|c| &c.nodes).map(|n| {
            let (template, datadir) = (template.clone(), n.datadir.clone());
            async move {
                process::kill_stale_server(&datadir).await?;
                tokio::task::spawn_blocking(move || prepare_datadir(&template, &datadir))
                    .await
                    .map_err(|e| ProvisionError::Mariadb {
                        message: format!("datadir copy task failed: {e}"),
                    })?
            }
        });
        join_all(copies)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;

        let repick = self.spec.base_port.is_none();
        let semi_sync = self.spec.semi_sync;
        let binlog_disk_mb = self.spec.binlog_disk_mb;
        let ssl = &self.spec.ssl;
        let mariadb = &self.mariadb;
        let launches = clusters.iter().enumerate().flat_map(|(ci, c)| {
            c.nodes.iter().enumerate().map(move |(ni, n)| {
                let role = ServerRole {
                    read_only: ni != 0,
                    semi_sync,
                    truncate_unacknowledged: true,
                    skip_slave_start: false,
                    ssl: ssl.clone(),
                    binlog_disk_mb,
                };
                launch(mariadb, n.clone(), role, repick, (ci, ni))
            })
        });
        let mut first_error = None;
        for (node, (ci, ni), result) in join_all(launches).await {
            match result {
                Ok(p) => {
                    self.procs.insert(node.addr.clone(), p);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            clusters[ci].nodes[ni] = node;
        }
        for c in &mut clusters {
            c.leader = c.nodes[0].addr.clone();
        }
        self.clusters = clusters;
        if let Some(e) = first_error {
            return Err(e);
        }

        let spec = &self.spec;
        let users = self
            .clusters
            .iter()
            .flat_map(|c| &c.nodes)
            .map(|n| sql::create_users(n, spec));
        join_all(users)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;

        let wiring = self.clusters.iter().map(|c| async move {
            let leader = c.leader_node().ok_or_else(|| ProvisionError::Mariadb {
                message: format!("cluster {} has no leader node", c.name),
            })?;
            let replicas = c
                .replicas()
                .map(|r| sql::start_replication(r, leader, spec));
            join_all(replicas)
                .await
                .into_iter()
                .collect::<Result<(), _>>()?;
            let expected = c.nodes.len() - 1;
            sql::activate_leader(leader, expected, spec.semi_sync && expected > 0).await
        });
        join_all(wiring)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        self.save_state()
    }

    /// A start on a directory with a state file: same datadirs, ports and leaders; no install,
    /// no user creation, replication as configured on disk.
    async fn restart(&mut self, state: StateFile) -> Result<(), ProvisionError> {
        let state_path = self.dir.join(STATE_FILE);
        let shape_ok = state.clusters.len() == self.spec.clusters
            && state
                .clusters
                .iter()
                .all(|c| c.nodes.len() == self.spec.replicas + 1);
        if !shape_ok {
            return Err(ProvisionError::State {
                path: state_path,
                message: format!(
                    "the directory holds {} cluster(s) of sizes {:?}, but {} cluster(s) of {} \
                     node(s) were asked for; use another directory or remove this one",
                    state.clusters.len(),
                    state
                        .clusters
                        .iter()
                        .map(|c| c.nodes.len())
                        .collect::<Vec<_>>(),
                    self.spec.clusters,
                    self.spec.replicas + 1
                ),
            });
        }
        let clusters = state.to_clusters(&self.dir);
        check_socket_paths(&clusters)?;
        for n in clusters.iter().flat_map(|c| &c.nodes) {
            if !n.datadir.is_dir() {
                return Err(ProvisionError::State {
                    path: state_path,
                    message: format!("datadir {} of {} is missing", n.datadir.display(), n.addr),
                });
            }
        }
        let semi_sync = self.spec.semi_sync;
        let binlog_disk_mb = self.spec.binlog_disk_mb;
        let ssl = &self.spec.ssl;
        let mariadb = &self.mariadb;
        let launches = clusters.iter().enumerate().flat_map(|(ci, c)| {
            c.nodes.iter().enumerate().map(move |(ni, n)| {
                let role = ServerRole {
                    ssl: ssl.clone(),
                    binlog_disk_mb,
                    read_only: n.addr != c.leader,
                    semi_sync,
                    truncate_unacknowledged: true,
                    // Started below once the leader is up, instead of failing a first connect
                    // and waiting a retry period.
                    skip_slave_start: true,
                };
                launch(mariadb, n.clone(), role, false, (ci, ni))
            })
        });
        let mut first_error = None;
        for (node, _, result) in join_all(launches).await {
            match result {
                Ok(p) => {
                    self.procs.insert(node.addr.clone(), p);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.clusters = clusters;
        if let Some(e) = first_error {
            return Err(e);
        }

        let wiring = self.clusters.iter().map(|c| async move {
            let leader = c.leader_node().ok_or_else(|| ProvisionError::Mariadb {
                message: format!("cluster {} has no leader node", c.name),
            })?;
            let mut expected = 0;
            for r in c.replicas() {
                let Some(source) = sql::replication_source(r).await? else {
                    continue;
                };
                sql::start_slave(r).await?;
                if source == leader.addr {
                    expected += 1;
                }
            }
            sql::activate_leader(leader, expected, semi_sync && expected > 0).await
        });
        join_all(wiring)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        // Refreshes the recorded server version.
        self.save_state()
    }
}

impl Drop for LocalClusters {
    /// A panicking owner (a failing test) first prints where every server's error log ends (a
    /// crash, an assertion, a replication error): the data directory usually goes with it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_error_log_tails(25);
        }
        // Signal everything first so the servers die in parallel, then reap each one.
        for p in self.procs.values_mut() {
            p.signal(libc::SIGKILL);
        }
        self.procs.clear();
        // A server a physical rebuild's restore program started again on a node's datadir.
        for n in self.clusters.iter().flat_map(|c| &c.nodes) {
            process::signal_foreign_server(&n.datadir, libc::SIGKILL);
        }
        if self.spec.binlog_disk_mb.is_some() {
            for n in self.clusters.iter().flat_map(|c| &c.nodes) {
                process::unmount_binlog_disk(&n.binlog_dir());
            }
        }
    }
}

/// Starts one node, moving it to a new free port if its port was taken in the meantime (only
/// when ports are picked automatically). Returns the node as finally started and `tag` (its
/// position) so that the caller can put it back in place.
async fn launch<T>(
    mariadb: &Mariadb,
    mut node: LocalNode,
    role: ServerRole,
    may_repick: bool,
    tag: T,
) -> (LocalNode, T, Result<NodeProcess, ProvisionError>) {
    let mut attempt = 1;
    loop {
        match process::start_server(mariadb, &node, role.clone()).await {
            Ok(p) => return (node, tag, Ok(p)),
            Err(StartFailure::PortInUse) if may_repick && attempt < PORT_ATTEMPTS => {
                attempt += 1;
                match free_ports(1) {
                    Ok(ports) => {
                        tracing::info!(addr = %node.addr, new_port = ports[0], "port taken; retrying");
                        node.set_port(ports[0]);
                    }
                    Err(e) => return (node, tag, Err(e)),
                }
            }
            Err(f) => {
                let e = start_error(f, &node);
                return (node, tag, Err(e));
            }
        }
    }
}

fn start_error(failure: StartFailure, node: &LocalNode) -> ProvisionError {
    match failure {
        StartFailure::PortInUse => ProvisionError::PortInUse {
            addr: node.addr.clone(),
        },
        StartFailure::Other(e) => e,
    }
}

/// `count` distinct ports that are free right now. All listeners are held until every port is
/// chosen so that the kernel cannot hand out the same one twice.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>, ProvisionError> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProvisionError::io("binding 127.0.0.1:0 to find a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| ProvisionError::io("reading a listener's port", e))
}

fn check_socket_paths(clusters: &[LocalCluster]) -> Result<(), ProvisionError> {
    for n in clusters.iter().flat_map(|c| &c.nodes) {
        if n.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ProvisionError::InvalidSpec(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter directory",
                n.socket.display()
            )));
        }
    }
    Ok(())
}

/// Replaces whatever is at `datadir` with a copy of the template.
fn prepare_datadir(template: &Path, datadir: &Path) -> Result<(), ProvisionError> {
    if datadir.exists() {
        std::fs::remove_dir_all(datadir)
            .map_err(|e| ProvisionError::io(format!("removing {}", datadir.display()), e))?;
    }
    if let Some(parent) = datadir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ProvisionError::io(format!("creating {}", parent.display()), e))?;
    }
    mariadb::copy_dir(template, datadir).map_err(|e| {
        ProvisionError::io(
            format!("copying {} to {}", template.display(), datadir.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(20).expect("ports");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20);
    }

    /// Against a real server: a free port taken before mariadbd binds it is replaced by another.
    #[tokio::test]
    async fn launch_moves_to_another_port_when_its_port_is_taken() {
        let mariadb = Mariadb::locate().await.expect("MariaDB must be installed");
        let template = mariadb.ensure_template().await.expect("template");
        let dir = tempfile::tempdir().expect("tempdir");
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let node = LocalNode::new(taken, dir.path().join("n1"), 1);
        prepare_datadir(&template, &node.datadir).expect("datadir");
        let role = ServerRole {
            read_only: false,
            semi_sync: false,
            truncate_unacknowledged: true,
            skip_slave_start: false,
            ssl: None,
            binlog_disk_mb: None,
        };
        let (started, (), result) = launch(&mariadb, node.clone(), role.clone(), true, ()).await;
        let mut process = result.expect("started on another port");
        assert_ne!(started.port, taken);
        assert_eq!(started.addr, format!("127.0.0.1:{}", started.port));
        assert!(process.try_exited().is_none(), "server running");
        std::net::TcpStream::connect(("127.0.0.1", started.port)).expect("server listens");

        // Without permission to move, the taken port is an error.
        let other = LocalNode::new(taken, dir.path().join("n2"), 2);
        prepare_datadir(&template, &other.datadir).expect("datadir");
        let (_, (), result) = launch(&mariadb, other, role, false, ()).await;
        assert!(matches!(result, Err(ProvisionError::PortInUse { .. })));
    }
}
