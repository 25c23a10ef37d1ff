//! Local cluster provisioning (the sandbox and the test harness): starts N clusters of one
//! leader and R replicas as `mariadbd` child processes on loopback ports, each with its own
//! datadir under one directory, wired with GTID replication and semi-sync.
//!
//! A state file in the directory records the clusters, ports and leaders, so that a second
//! [`LocalClusters::start`] on the same directory brings the same servers back in their roles.

mod clusters;
mod etcd;
mod mariadb;
mod process;
pub(crate) mod sql;
mod state;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::monitor::ClusterSpec;

pub use clusters::LocalClusters;
pub use etcd::{EtcdTls, LocalEtcd, LocalEtcdOptions};

/// The longest unix socket path (`sun_path` is 108 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;
pub use state::STATE_FILE;

/// What to provision.
#[derive(Clone)]
pub struct ProvisionSpec {
    /// The directory that holds every node's datadir and the state file.
    pub dir: PathBuf,
    /// Number of clusters, named `c1..cN`.
    pub clusters: usize,
    /// Replicas per cluster (besides the leader).
    pub replicas: usize,
    /// First port of a consecutive range; `None` picks free ports (what parallel tests need).
    pub base_port: Option<u16>,
    /// The application user: plain data privileges, so it cannot write on a read-only replica.
    pub app_user: String,
    pub app_password: String,
    /// The orchestrator's own user: all privileges (SUPER, READ_ONLY ADMIN, replication...).
    pub admin_user: String,
    pub admin_password: String,
    /// The user replicas connect to their leader with.
    pub repl_user: String,
    pub repl_password: String,
    /// Semi-synchronous replication (AFTER_SYNC), enabled on the leader once replicas connect.
    pub semi_sync: bool,
    /// TLS on every server (`--ssl-cert`, `--ssl-key`, `--ssl-ca`); `None`: no TLS.
    pub ssl: Option<ServerSsl>,
    /// Every node's binary log on a filesystem of its own of this many MiB (ext4 on a loop
    /// device mounted at `DATADIR/binlog`, which needs root), so that a full or a stalled disk
    /// can be injected (filling it, `fsfreeze`); `None`: the binary log lives in the datadir.
    pub binlog_disk_mb: Option<u32>,
}

/// The certificate, key and CA (PEM files) the servers are started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSsl {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

impl ProvisionSpec {
    /// The sandbox defaults: 2 clusters of a leader and 2 replicas, free ports, `app`/`app`,
    /// semi-sync on.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProvisionSpec {
            dir: dir.into(),
            clusters: 2,
            replicas: 2,
            base_port: None,
            app_user: "app".into(),
            app_password: "app".into(),
            admin_user: "switchyard".into(),
            admin_password: "switchyard".into(),
            repl_user: "repl".into(),
            repl_password: "repl".into(),
            semi_sync: true,
            ssl: None,
            binlog_disk_mb: None,
        }
    }

    /// Collects every problem with the spec.
    fn validate(&self) -> Result<(), ProvisionError> {
        let mut problems = Vec::new();
        if self.clusters == 0 {
            problems.push("at least one cluster is needed".to_owned());
        }
        if self.replicas > 98 {
            problems.push(format!(
                "at most 98 replicas per cluster (got {})",
                self.replicas
            ));
        }
        let users = [
            ("app_user", &self.app_user),
            ("admin_user", &self.admin_user),
            ("repl_user", &self.repl_user),
        ];
        for (field, name) in users {
            if name.is_empty() {
                problems.push(format!("{field} is empty"));
            }
        }
        if self.app_user == self.admin_user
            || self.app_user == self.repl_user
            || self.admin_user == self.repl_user
        {
            problems.push("app_user, admin_user and repl_user must be different".to_owned());
        }
        if let Some(base) = self.base_port {
            let needed = self.clusters * (self.replicas + 1);
            if base == 0 || usize::from(base) + needed > usize::from(u16::MAX) + 1 {
                problems.push(format!(
                    "base_port {base} leaves no room for {needed} ports"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProvisionError::InvalidSpec(problems.join("; ")))
        }
    }
}

/// Passwords are left out.
impl fmt::Debug for ProvisionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionSpec")
            .field("dir", &self.dir)
            .field("clusters", &self.clusters)
            .field("replicas", &self.replicas)
            .field("base_port", &self.base_port)
            .field("app_user", &self.app_user)
            .field("admin_user", &self.admin_user)
            .field("repl_user", &self.repl_user)
            .field("semi_sync", &self.semi_sync)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

/// One server of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// `127.0.0.1:PORT`, the node's identity everywhere in switchyard.
    pub addr: String,
    pub port: u16,
    pub datadir: PathBuf,
    /// The unix socket (inside the datadir); root can log in here without a password.
    pub socket: PathBuf,
    pub server_id: u32,
}

impl LocalNode {
    pub(crate) fn new(port: u16, datadir: PathBuf, server_id: u32) -> Self {
        LocalNode {
            addr: format!("127.0.0.1:{port}"),
            port,
            socket: datadir.join("mysqld.sock"),
            datadir,
            server_id,
        }
    }

    /// Where the binary log lives when it has a filesystem of its own
    /// ([`ProvisionSpec::binlog_disk_mb`]).
    pub fn binlog_dir(&self) -> PathBuf {
        self.datadir.join("binlog")
    }

    /// The server's own temporary directory (`tmpdir`), beside its datadir. Never a shared
    /// one such as /tmp: a starting server deletes every `#sql*` file in its tmpdir, and those
    /// of another server running there are its open internal temporary tables (MariaDB
    /// 10.11.19 then crashed in `ha_maria::drop_table` at the end of an
    /// `information_schema.PROCESSLIST` query, or failed it with "Error on delete of
    /// '/tmp/#sql-temptable-...MAI'").
    pub fn tmp_dir(&self) -> PathBuf {
        self.datadir.with_extension("tmp")
    }

    /// The server's error log (inside the datadir).
    pub fn error_log(&self) -> PathBuf {
        self.datadir.join(process::ERROR_LOG)
    }

    fn set_port(&mut self, port: u16) {
        self.port = port;
        self.addr = format!("127.0.0.1:{port}");
    }
}

/// One local cluster: a leader and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCluster {
    /// `c1`, `c2`, ...
    pub name: String,
    pub nodes: Vec<LocalNode>,
    /// The current leader's address.
    pub leader: String,
}

impl LocalCluster {
    /// The node with this address.
    pub fn node(&self, addr: &str) -> Option<&LocalNode> {
        self.nodes.iter().find(|n| n.addr == addr)
    }

    /// The current leader.
    pub fn leader_node(&self) -> Option<&LocalNode> {
        self.node(&self.leader)
    }

    /// Every node but the leader.
    pub fn replicas(&self) -> impl Iterator<Item = &LocalNode> {
        self.nodes.iter().filter(|n| n.addr != self.leader)
    }

    /// What the monitor needs to watch this cluster.
    pub fn monitor_spec(&self) -> ClusterSpec {
        ClusterSpec {
            name: self.name.clone(),
            nodes: self.nodes.iter().map(|n| n.addr.clone()).collect(),
            leader: Some(self.leader.clone()),
        }
    }
}

/// What can go wrong while provisioning or managing local clusters.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "MariaDB is not installed: `{missing}` is neither on PATH nor in /usr/sbin or /usr/bin; \
         install it with `apt-get install -y mariadb-server mariadb-client`"
    )]
    MariadbNotInstalled { missing: &'static str },
    #[error(
        "etcd is not installed: `etcd` is neither on PATH nor in /usr/bin; install it with \
         `apt-get install -y etcd-server etcd-client` (or run scripts/install-deps)"
    )]
    EtcdNotInstalled,
    #[error("etcd member {name} exited during start-up ({status}); end of {log}:\n{tail}")]
    EtcdExited {
        name: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("MariaDB: {message}")]
    Mariadb { message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: {what} failed: {source}")]
    Sql {
        addr: String,
        /// The step, not the statement: statements may carry passwords.
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("mariadbd for {addr} exited during start-up ({status}); end of {log}:\n{tail}")]
    ServerExited {
        addr: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("port of {addr} is in use by another process")]
    PortInUse { addr: String },
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("no node {addr} in cluster {cluster}")]
    UnknownNode { cluster: String, addr: String },
    #[error("{addr} is already running")]
    AlreadyRunning { addr: String },
    #[error("invalid provisioning spec: {0}")]
    InvalidSpec(String),
    #[error("servers did not stop within {after:?} and were killed: {addrs:?}")]
    StopTimeout { addrs: Vec<String>, after: Duration },
}

impl ProvisionError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ProvisionError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sql(addr: &str, what: &str, source: mysql_async::Error) -> Self {
        ProvisionError::Sql {
            addr: addr.to_owned(),
            what: what.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation_collects_every_problem() {
        let mut spec = ProvisionSpec::new("/tmp/x");
        spec.clusters = 0;
        spec.admin_user = "app".into();
        spec.repl_user = String::new();
        let err = spec.validate().expect_err("invalid").to_string();
        assert!(err.contains("at least one cluster"), "{err}");
        assert!(err.contains("repl_user is empty"), "{err}");
        assert!(err.contains("must be different"), "{err}");
        assert!(ProvisionSpec::new("/tmp/x").validate().is_ok());
    }

    #[test]
    fn spec_debug_hides_passwords() {
        let mut spec = ProvisionSpec::new("/tmp/x");
        spec.admin_password = "s3cret".into();
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn base_port_range_must_fit() {
        let mut spec = ProvisionSpec::new("/tmp/x");
        spec.base_port = Some(65533);
        assert!(spec.validate().is_err());
        spec.base_port = Some(20000);
        assert!(spec.validate().is_ok());
    }
}
