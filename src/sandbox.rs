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
    /// The orchestrator's `rebuild_restore_command` (physical rebuilds of the sandbox's
    /// nodes: `scripts/physical-restore-local`).
    pub rebuild_restore_command: Option<PathBuf>,
}

impl SandboxOptions {
    /// Clusters under `dir` on free ports, switchyard on free loopback ports, user `app`
    /// (password `app`), admin token `bench`, unsharded: what the benchmarks start.
    pub fn on_free_ports(dir: &std::path::Path, clusters: usize, replicas: usize) -> Self {
        SandboxOptions {
            dir: dir.to_path_buf(),
            clusters,
            replicas,
            base_port: None,
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            admin_token: "bench".into(),
            app_user: "app".into(),
            app_password: "app".into(),
            shards: 0,
            binlog_disk_mb: None,
            rebuild_restore_command: None,
        }
    }
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
        failover: orchestrator::OrchestratorSettings {
            rebuild_restore_command: opts.rebuild_restore_command.clone(),
            ..Default::default()
        },
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

/// The processes of a multi-process sandbox (`--orchestrators`, `--routers`): the sandbox
/// process itself is the first orchestrator; the others run `switchyard serve` as children,
/// killed when this is dropped.
pub struct Members {
    pub etcd: orchestrator::provision::LocalEtcd,
    pub children: Vec<Member>,
}

/// One child process.
pub struct Member {
    pub name: String,
    pub role: crate::config::ProcessRole,
    pub router: String,
    pub admin: String,
    pub child: std::process::Child,
}

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.children {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// The `[etcd]` section of every sandbox process.
pub fn etcd_section(
    etcd: &orchestrator::provision::LocalEtcd,
    name: &str,
) -> crate::config::EtcdConfig {
    crate::config::EtcdConfig {
        endpoints: etcd.endpoints(),
        prefix: "/switchyard".into(),
        name: Some(name.into()),
        user: None,
        password: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        lease_ttl_ms: 5000,
        request_timeout_ms: 1000,
        failsafe: false,
    }
}

/// `config` as a TOML file for another process (secrets written out: the sandbox's own).
pub fn config_text(config: &Config, secrets: &SandboxOptions, spec: &ProvisionSpec) -> String {
    let mut value = toml::Value::try_from(config).expect("a configuration always serialises");
    let set = |v: &mut toml::Value, path: &[&str], s: &str| {
        let mut at = v;
        for p in path {
            match at.get_mut(*p) {
                Some(next) => at = next,
                None => return,
            }
        }
        *at = toml::Value::String(s.to_owned());
    };
    set(&mut value, &["admin", "token"], &secrets.admin_token);
    set(
        &mut value,
        &["orchestrator", "password"],
        &spec.admin_password,
    );
    set(
        &mut value,
        &["orchestrator", "repl_password"],
        &spec.repl_password,
    );
    if let Some(users) = value
        .get_mut("router")
        .and_then(|r| r.get_mut("users"))
        .and_then(|u| u.as_array_mut())
    {
        for u in users {
            if u.get("name").and_then(|n| n.as_str()) == Some(secrets.app_user.as_str()) {
                set(u, &["password"], &secrets.app_password);
            }
        }
    }
    toml::to_string(&value).expect("TOML values always print")
}

/// A free loopback address.
fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Starts `orchestrators - 1` more orchestrator candidates and `routers` routers as
/// `switchyard serve` children over the same clusters and etcd, each with its own ports.
pub fn spawn_members(
    base: &Config,
    opts: &SandboxOptions,
    spec: &ProvisionSpec,
    etcd: orchestrator::provision::LocalEtcd,
    orchestrators: usize,
    routers: usize,
) -> anyhow::Result<Members> {
    use crate::config::ProcessRole;
    let mut members = Members {
        etcd,
        children: Vec::new(),
    };
    let dir = opts.dir.join("members");
    std::fs::create_dir_all(&dir)?;
    let wanted = (2..=orchestrators)
        .map(|i| (format!("o{i}"), ProcessRole::All))
        .chain((1..=routers).map(|i| (format!("r{i}"), ProcessRole::Router)));
    for (name, role) in wanted {
        let mut c = base.clone();
        c.role = role;
        c.etcd = Some(etcd_section(&members.etcd, &name));
        c.router.listen = free_addr()?;
        c.router.socket = None;
        c.admin.listen = free_addr()?;
        c.admin.sql_listen = None;
        c.state_dir = None;
        c.shard_map_dir = None;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config_text(&c, opts, spec))?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        members.children.push(Member {
            name,
            role,
            router: c.router.listen.clone(),
            admin: c.admin.listen.clone(),
            child,
        });
    }
    Ok(members)
}
