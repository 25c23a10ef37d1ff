//! `switchyard sandbox`: local MariaDB clusters provisioned on loopback ports plus a complete
//! switchyard (router, monitor, admin API) over them, in one foreground process.

use std::path::PathBuf;

use orchestrator::provision::{LocalClusters, ProvisionSpec};
use router::config::{Secret, UserConfig};
use router::RouterConfig;

use crate::config::{AdminConfig, ClusterConfig, Config, OrchestratorConfig};

/// What the sandbox should look like.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub dir: PathBuf,
    pub clusters: usize,
    pub replicas: usize,
    /// First MariaDB port; `None` picks free ports.
    pub base_port: Option<u16>,
    pub listen: String,
    pub admin: String,
    pub admin_token: String,
    pub app_user: String,
    pub app_password: String,
    /// Split keyspace `app` into this many equal key ranges over the clusters (0: unsharded).
    pub shards: usize,
    /// Every node's binary log on a filesystem of its own of this many MiB (needs root), so
    /// that a full disk can be tried (`switchyard scenario`, the disk-full tests).
    pub binlog_disk_mb: Option<u32>,
}

/// The router's Unix-domain socket, in the sandbox directory.
pub const ROUTER_SOCKET: &str = "router.sock";

/// The default sandbox directory: under the user's data directory, else the temp dir.
pub fn default_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match data {
        Some(d) => d.join("switchyard").join("sandbox"),
        None => std::env::temp_dir().join("switchyard-sandbox"),
    }
}

/// Provisions (or restarts) the local clusters.
pub async fn provision(opts: &SandboxOptions) -> anyhow::Result<LocalClusters> {
    let mut spec = ProvisionSpec::new(&opts.dir);
    spec.clusters = opts.clusters;
    spec.replicas = opts.replicas;
    spec.base_port = opts.base_port;
    spec.app_user = opts.app_user.clone();
    spec.app_password = opts.app_password.clone();
    spec.binlog_disk_mb = opts.binlog_disk_mb;
    Ok(LocalClusters::start(spec).await?)
}

/// The configuration of a switchyard over these local clusters.
pub fn config_for(local: &LocalClusters, opts: &SandboxOptions) -> Config {
    let spec = local.spec();
    let clusters: Vec<ClusterConfig> = local
        .clusters()
        .iter()
        .map(|c| ClusterConfig {
            name: c.name.clone(),
            nodes: c.nodes.iter().map(|n| n.addr.clone()).collect(),
            leader: Some(c.leader.clone()),
        })
        .collect();
    let mut router = RouterConfig::with_users(vec![UserConfig {
        name: opts.app_user.clone(),
        password: Secret::new(opts.app_password.as_str()),
    }]);
    router.listen = opts.listen.clone();
    // Applications on this host may also come in through a socket (as `mariadb -S`).
    let socket = opts.dir.join(ROUTER_SOCKET);
    // A longer path can't be bound: the sandbox then has no socket.
    if socket.as_os_str().len() <= orchestrator::provision::MAX_SOCKET_PATH {
        router.socket = Some(socket);
    }
    Config {
        default_cluster: Some("c1".into()),
        router,
        admin: AdminConfig {
            listen: opts.admin.clone(),
            token: Some(Secret::new(opts.admin_token.as_str())),
            users: Vec::new(),
            audit_log: None,
            sql_listen: None,
            tls_cert: None,
            tls_key: None,
        },
        orchestrator: OrchestratorConfig {
            user: spec.admin_user.clone(),
            password: Secret::new(spec.admin_password.as_str()),
            tick_ms: 500,
            connect_timeout_ms: 1000,
            poll_timeout_ms: 1000,
            suspect_timeout_ms: 500,
            down_after: 3,
            repl_user: spec.repl_user.clone(),
            repl_password: Secret::new(spec.repl_password.as_str()),
            tls: Default::default(),
            tls_ca: None,
        },
        failover: Default::default(),
        keyspaces: sharded_app_keyspace(&clusters, opts.shards),
        clusters,
        shard_map_dir: Some(opts.dir.join("shard-map")),
        state_dir: Some(opts.dir.join("state")),
        include_dir: None,
        key_file: None,
        origin: Default::default(),
        integrations: Default::default(),
        role: Default::default(),
        etcd: None,
    }
}

/// Keyspace `app` split into `shards` equal ranges, dealt round-robin over the clusters, with
/// example tables: `customers` (by `id`) and `orders` (by `customer_id`) sharded with the
/// `hash` vindex, `countries` a reference table.
fn sharded_app_keyspace(clusters: &[ClusterConfig], shards: usize) -> Vec<shard_map::Keyspace> {
    if shards == 0 || clusters.is_empty() {
        return Vec::new();
    }
    let ranges =
        shard_map::KeyRange::split_even(shards).unwrap_or_else(|_| vec![shard_map::KeyRange::FULL]);
    let shard_specs = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| shard_map::ShardSpec {
            name: r.name(),
            cluster: clusters[i % clusters.len()].name.clone(),
        })
        .collect();
    vec![shard_map::Keyspace {
        name: "app".into(),
        default_cluster: clusters[0].name.clone(),
        shards: shard_specs,
        tables: vec![
            shard_map::TableSpec::sharded("customers", "id", shard_map::VindexKind::Hash),
            shard_map::TableSpec::sharded("orders", "customer_id", shard_map::VindexKind::Hash),
            shard_map::TableSpec::reference("countries"),
        ],
    }]
}

/// Records in the local clusters' state file every leader the topology has moved to.
pub fn follow_leaders(
    local: &mut LocalClusters,
    topology: &shard_map::Topology,
) -> Result<(), orchestrator::ProvisionError> {
    let moved: Vec<(String, String)> = local
        .clusters()
        .iter()
        .filter_map(|c| {
            let leader = topology.cluster(&c.name)?.leader.clone()?;
            (leader != c.leader).then(|| (c.name.clone(), leader))
        })
        .collect();
    for (cluster, leader) in moved {
        local.set_leader(&cluster, &leader)?;
    }
    Ok(())
}
