//! switchyard's TOML configuration for `switchyard serve --config FILE`: the router, the
//! admin API, the orchestrator's monitor and the clusters and keyspaces it manages.

use std::path::Path;

mod load;
pub mod reference;
pub mod secrets;

use orchestrator::OrchestratorSettings;
use router::config::Secret;
use router::RouterConfig;
use serde::{Deserialize, Serialize};
use shard_map::{Keyspace, ShardMap};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cluster for databases outside every keyspace; the first cluster when absent.
    #[serde(default)]
    pub default_cluster: Option<String>,
    pub router: RouterConfig,
    pub admin: AdminConfig,
    pub orchestrator: OrchestratorConfig,
    /// Failure detection, failover and switchover policy.
    #[serde(default)]
    pub failover: OrchestratorSettings,
    /// The replicated clusters watched and routed to.
    pub clusters: Vec<ClusterConfig>,
    /// Logical databases and where their tables live (the shard map); a database in no
    /// keyspace lives on `default_cluster`.
    #[serde(default)]
    pub keyspaces: Vec<Keyspace>,
    /// Where the shard map is persisted (JSON, with its history). When it holds a map, that
    /// map (the last one applied through the API) wins over `keyspaces`.
    #[serde(default)]
    pub shard_map_dir: Option<std::path::PathBuf>,
    /// Where the topology's leaders, epochs, node flags and recent failovers (for
    /// `failover_limit`) are kept across restarts (`topology.json`); without it a restart
    /// begins every epoch at 1 again, forgets maintenance flags and counts failovers from zero.
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Routing layers and service discovery kept in step with the topology (HAProxy, Consul,
    /// webhooks, ProxySQL, MaxScale, scripts); all off by default.
    #[serde(default)]
    pub integrations: crate::integrations::IntegrationsConfig,
    /// A directory of more `*.toml` files merged into this one in name order (relative to
    /// this file): lists such as `[[clusters]]` are appended, a setting given twice is an
    /// error. One file per cluster is the usual layout.
    #[serde(default)]
    pub include_dir: Option<std::path::PathBuf>,
    /// The key for values written `enc:...` (see `switchyard keygen` and `switchyard
    /// encrypt`), relative to this file; `SWITCHYARD_KEY_FILE` when absent.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// What this process does: `all` (router, orchestrator and admin API: the default),
    /// `router` (routes with the topology the leading orchestrator keeps in etcd; needs
    /// `[etcd]`) or `orchestrator` (an orchestrator candidate and admin API, no MySQL
    /// listener; needs `[etcd]`). With `[etcd]`, any number of `all` and `orchestrator`
    /// processes may run: exactly one of them leads and acts on the servers, the others stand
    /// by.
    #[serde(default)]
    pub role: ProcessRole,
    /// The topology store several processes share (etcd); absent: this process works alone.
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
    /// Where this configuration came from; not part of the file.
    #[serde(skip)]
    pub origin: Origin,
}

/// What a process does (see [`Config::role`]).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    /// Router, orchestrator (candidate, with `[etcd]`) and admin API.
    #[default]
    All,
    /// Router and admin API; the topology comes from etcd.
    Router,
    /// Orchestrator candidate and admin API, no router (needs `[etcd]`).
    Orchestrator,
}

impl ProcessRole {
    /// Whether it is an orchestrator candidate.
    pub fn orchestrates(self) -> bool {
        matches!(self, ProcessRole::All | ProcessRole::Orchestrator)
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ProcessRole::All => "all",
            ProcessRole::Router => "router",
            ProcessRole::Orchestrator => "orchestrator",
        }
    }

    /// Whether it routes clients' statements.
    pub fn routes(self) -> bool {
        matches!(self, ProcessRole::All | ProcessRole::Router)
    }
}

/// How to reach etcd, and this process's part there.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// `host:port` (or `http(s)://host:port`) of each etcd member.
    pub endpoints: Vec<String>,
    /// Every key of this deployment is under this prefix.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// This process's name among the routers and orchestrators (unique); host name and pid
    /// when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// etcd user, when etcd has authentication on.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// CA certificate (PEM) of the members' certificates: TLS to etcd.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM), when etcd asks for one.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Lease lifetime (ms, whole seconds): a process that etcd has not heard from for this
    /// long counts as gone. An orchestrator that stops leading is replaced after about this
    /// long; a failover waits at most this long for a router that does not answer; a router
    /// that cannot reach etcd stops sending writes before this long has passed.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// Bound of every call to etcd (ms).
    #[serde(default = "default_etcd_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A router whose lease is not renewed (etcd unreachable) keeps sending writes to the
    /// leaders it knows instead of refusing them. Availability over safety: a failover that
    /// happens meanwhile (an orchestrator waits for this router's lease to expire, then
    /// promotes) is not seen by this router until etcd answers again, and its writes go on
    /// reaching the old leader if that one still takes them. Off by default.
    #[serde(default)]
    pub failsafe: bool,
}

fn default_etcd_prefix() -> String {
    "/switchyard".into()
}
fn default_lease_ttl_ms() -> u64 {
    5000
}
fn default_etcd_timeout_ms() -> u64 {
    1000
}

impl EtcdConfig {
    /// The store's options.
    pub fn options(&self) -> shard_map::etcd::EtcdOptions {
        let mut o = shard_map::etcd::EtcdOptions::new(self.endpoints.clone());
        o.prefix = self.prefix.clone();
        o.user = self.user.clone().map(|u| {
            (
                u,
                self.password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            )
        });
        o.ca = self.tls_ca.clone();
        o.cert = self.tls_cert.clone().zip(self.tls_key.clone());
        o.lease_ttl = std::time::Duration::from_millis(self.lease_ttl_ms);
        o.request_timeout = std::time::Duration::from_millis(self.request_timeout_ms);
        o
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.endpoints.is_empty() {
            problems.push("etcd.endpoints: at least one endpoint is needed".into());
        }
        if !self.prefix.starts_with('/') {
            problems.push(format!("etcd.prefix `{}` must start with /", self.prefix));
        }
        if self.lease_ttl_ms < 1000 || self.lease_ttl_ms % 1000 != 0 {
            problems.push(format!(
                "etcd.lease_ttl_ms ({}) must be whole seconds, at least 1000 (etcd leases count \
                 seconds)",
                self.lease_ttl_ms
            ));
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms >= self.lease_ttl_ms {
            problems.push(format!(
                "etcd.request_timeout_ms ({}) must be above 0 and below lease_ttl_ms ({})",
                self.request_timeout_ms, self.lease_ttl_ms
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("etcd.tls_cert and etcd.tls_key go together".into());
        }
        if self.user.is_some() != self.password.is_some() {
            problems.push("etcd.user and etcd.password go together".into());
        }
        problems
    }
}

/// Where a [`Config`] came from, for reloading it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file it was read from (reloads read it again).
    pub path: Option<std::path::PathBuf>,
    /// The admin token came from the command line or was generated, not from the file: a
    /// reload keeps it.
    pub admin_token_fixed: bool,
}

/// The admin HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin HTTP API address.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token for every endpoint but health, with the admin role. Also
    /// `SWITCHYARD_ADMIN_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// More users, each with a role and optionally a list of clusters.
    #[serde(default)]
    pub users: Vec<crate::acl::AdminUser>,
    /// Where every mutating call is appended as a JSON line (who, what, when, result).
    #[serde(default)]
    pub audit_log: Option<std::path::PathBuf>,
    /// The admin SQL port (MySQL protocol: `SHOW CLUSTERS`, `SWITCHOVER c1`, ...), off when
    /// absent. Same users as the API; passwords arrive in clear text (`mysql_clear_password`),
    /// so keep it on loopback or a trusted network.
    #[serde(default)]
    pub sql_listen: Option<String>,
    /// Certificate chain (PEM); with `tls_key`, the API serves HTTPS only.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:8080".into()
}

/// How the orchestrator reaches and watches the servers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// The orchestrator's own database user (replication and admin privileges).
    pub user: String,
    pub password: Secret,
    /// Monitor poll interval (ms).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Connect timeout for monitor connections (ms).
    #[serde(default = "default_monitor_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Limit on a monitor poll's queries (ms).
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    /// Limit on connecting and on the queries of a poll of a node whose previous poll failed
    /// (ms). A server that hangs (frozen, or cut off without a reset) accepts connections and
    /// then never answers: each failed poll costs this long, so it sets how fast a hung
    /// leader reaches `down_after` failures.
    #[serde(default = "default_suspect_timeout_ms")]
    pub suspect_timeout_ms: u64,
    /// Failed polls after which a node is declared down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// The user replicas connect to their leader with (used when repointing them).
    #[serde(default = "default_repl_user")]
    pub repl_user: String,
    #[serde(default = "default_repl_password")]
    pub repl_password: Secret,
    /// TLS on the orchestrator's connections to the servers (monitoring and operations), as
    /// `router.backend_tls`: `disabled`, `preferred`, `required` or `verify_ca` (the
    /// certificate must chain to `tls_ca` and name the host of the node's address). With
    /// `required` and `verify_ca` the replication connections it sets up use TLS too
    /// (`CHANGE MASTER ... MASTER_SSL=1`). Servers with `require_secure_transport=ON` need
    /// at least `required`.
    #[serde(default)]
    pub tls: router::config::BackendTlsMode,
    /// CA certificate(s) (PEM) the servers' certificates must chain to with `verify_ca`.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl OrchestratorConfig {
    /// The orchestrator's TLS settings.
    pub fn node_tls(&self) -> orchestrator::tls::NodeTls {
        use orchestrator::tls::NodeTls;
        use router::config::BackendTlsMode as Mode;
        match (self.tls, &self.tls_ca) {
            (Mode::Disabled, _) => NodeTls::Disabled,
            (Mode::Preferred, _) => NodeTls::Preferred,
            (Mode::Required, _) => NodeTls::Required,
            (Mode::VerifyCa, Some(ca)) => NodeTls::VerifyCa(ca.clone()),
            // Refused by validate().
            (Mode::VerifyCa, None) => NodeTls::Required,
        }
    }
}

fn default_repl_user() -> String {
    "repl".into()
}
fn default_repl_password() -> Secret {
    Secret::new("repl")
}

fn default_tick_ms() -> u64 {
    500
}
fn default_monitor_connect_timeout_ms() -> u64 {
    1000
}
fn default_poll_timeout_ms() -> u64 {
    1000
}
fn default_suspect_timeout_ms() -> u64 {
    500
}
fn default_down_after() -> u32 {
    3
}

/// One replicated cluster of existing servers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The name the API, metrics and shard map use.
    pub name: String,
    /// `host:port` of every server.
    pub nodes: Vec<String>,
    /// The current leader; discovered (the one writable, non-replicating node) when absent.
    #[serde(default)]
    pub leader: Option<String>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{} problem(s) in the configuration:\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads a TOML file (with its `include_dir` files, `enc:` values decrypted), parses
    /// and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = load::parse(path)?;
        config.origin.path = Some(path.to_path_buf());
        config.validated()
    }

    /// Parses and validates `text` as if it were the file `path` (which anchors its
    /// relative `include_dir` and `key_file`); nothing is read from `path` itself.
    pub fn from_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        load::parse_str(text, path)?.validated()
    }

    fn validated(self) -> Result<Config, ConfigError> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem, not just the first.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = self.router.validate();
        if self.clusters.is_empty() {
            problems.push("clusters: at least one cluster is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        let mut seen_nodes = std::collections::HashSet::new();
        for c in &self.clusters {
            if !seen.insert(c.name.as_str()) {
                problems.push(format!("clusters: `{}` is defined twice", c.name));
            }
            if c.nodes.is_empty() {
                problems.push(format!("clusters.{}: no nodes", c.name));
            }
            for n in &c.nodes {
                if !is_host_port(n) {
                    problems.push(format!("clusters.{}: node `{n}` is not host:port", c.name));
                }
                if !seen_nodes.insert(n.as_str()) {
                    problems.push(format!("clusters.{}: node `{n}` appears twice", c.name));
                }
            }
            if let Some(l) = &c.leader {
                if !c.nodes.contains(l) {
                    problems.push(format!(
                        "clusters.{}: leader `{l}` is not one of its nodes",
                        c.name
                    ));
                }
            }
        }
        if let Err(errs) = self.shard_map() {
            problems.extend(errs.into_iter().map(|e| format!("keyspaces: {e}")));
        }
        if !is_host_port(&self.admin.listen) {
            problems.push(format!(
                "admin.listen `{}` is not host:port",
                self.admin.listen
            ));
        }
        if let Some(a) = self
            .admin
            .sql_listen
            .as_deref()
            .filter(|a| !is_host_port(a))
        {
            problems.push(format!("admin.sql_listen `{a}` is not host:port"));
        }
        if !is_host_port(&self.router.listen) {
            problems.push(format!(
                "router.listen `{}` is not host:port",
                self.router.listen
            ));
        }
        if self.router.hold_timeout_ms < self.failover.hold_max_ms {
            problems.push(format!(
                "router.hold_timeout_ms ({}) must be at least failover.hold_max_ms ({}), or \
                 statements give up while the orchestrator still holds them",
                self.router.hold_timeout_ms, self.failover.hold_max_ms
            ));
        }
        let cluster_names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut user_names = std::collections::HashSet::new();
        for u in &self.admin.users {
            if !user_names.insert(u.name.as_str()) {
                problems.push(format!("admin.users: `{}` is defined twice", u.name));
            }
            problems.extend(u.validate(&cluster_names));
        }
        let nodes: Vec<&str> = self
            .clusters
            .iter()
            .flat_map(|c| c.nodes.iter().map(String::as_str))
            .collect();
        problems.extend(self.integrations.validate(&cluster_names, &nodes));
        let o = &self.orchestrator;
        for (name, value) in [
            ("tick_ms", o.tick_ms),
            ("connect_timeout_ms", o.connect_timeout_ms),
            ("poll_timeout_ms", o.poll_timeout_ms),
            ("suspect_timeout_ms", o.suspect_timeout_ms),
        ] {
            if value == 0 {
                problems.push(format!("orchestrator.{name} must be at least 1"));
            }
        }
        match (self.orchestrator.tls, &self.orchestrator.tls_ca) {
            (router::config::BackendTlsMode::VerifyCa, None) => {
                problems.push("orchestrator.tls = \"verify_ca\" needs tls_ca (a PEM file)".into())
            }
            (router::config::BackendTlsMode::VerifyCa, Some(ca)) => {
                if let Err(e) = router::tls::backend_config(self.orchestrator.tls, Some(ca)) {
                    problems.push(format!("orchestrator.tls_ca: {e}"));
                }
            }
            (_, Some(_)) => {
                problems.push("orchestrator.tls_ca is only used with tls = \"verify_ca\"".into())
            }
            _ => {}
        }
        match (&self.etcd, self.role) {
            (Some(e), _) => problems.extend(e.validate()),
            (None, ProcessRole::Router) => problems.push(
                "role = \"router\" needs [etcd]: a router alone learns of no leader change".into(),
            ),
            (None, ProcessRole::Orchestrator) => problems.push(
                "role = \"orchestrator\" needs [etcd]: without it no router learns of what it does"
                    .into(),
            ),
            (None, ProcessRole::All) => {}
        }
        match (&self.admin.tls_cert, &self.admin.tls_key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = router::tls::server_config(cert, key) {
                    problems.push(format!("admin.tls_cert/tls_key: {e}"));
                }
            }
            (Some(_), None) => problems.push("admin.tls_cert is set but tls_key is not".into()),
            (None, Some(_)) => problems.push("admin.tls_key is set but tls_cert is not".into()),
            (None, None) => {}
        }
        problems
    }

    /// The shard map these keyspaces describe.
    pub fn shard_map(&self) -> Result<ShardMap, Vec<shard_map::KeyspaceError>> {
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let default = self
            .default_cluster
            .clone()
            .or_else(|| names.first().map(|s| s.to_string()))
            .unwrap_or_default();
        ShardMap::new(default, self.keyspaces.clone(), &names)
    }
}

fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}
