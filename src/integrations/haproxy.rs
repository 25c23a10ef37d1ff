//! HAProxy: a complete `haproxy.cfg` generated from the topology (per cluster a write backend
//! whose only enabled server is the leader, and a read backend of the replicas), and, on every
//! change, the server states set through HAProxy's runtime API (`set server BE/SRV state
//! ready|maint`, plain text over the `stats socket ... level admin`, unix or TCP).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use shard_map::Topology;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Change, ClusterView, Integration, RetryPolicy};

/// HAProxy: the generated `haproxy.cfg` and the server states set through its runtime API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// HAProxy's runtime API: a unix socket path (`/run/haproxy/admin.sock`) or `host:port`,
    /// declared in HAProxy as `stats socket ... level admin` (the generated configuration
    /// declares it).
    pub runtime_api: String,
    /// Name of each cluster's write backend; `{cluster}` is replaced by the cluster's name.
    #[serde(default = "default_write_backend")]
    pub write_backend: String,
    /// Name of each cluster's read backend; `{cluster}` is replaced by the cluster's name.
    #[serde(default = "default_read_backend")]
    pub read_backend: String,
    /// Where the generated configuration listens for each cluster.
    #[serde(default)]
    pub frontends: Vec<HaproxyFrontend>,
    /// A MariaDB user without password and without privileges (`CREATE USER
    /// 'haproxy_check'@'<haproxy host>'`) for the generated configuration's health checks
    /// (`option mysql-check user ... post-41`, a full login and QUIT). Without it, servers are
    /// checked by TCP connect, which MariaDB counts as aborted connections: keep
    /// `max_connect_errors` high enough, or the HAProxy host gets blocked.
    #[serde(default)]
    pub check_user: Option<String>,
    /// How a push is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_write_backend() -> String {
    "{cluster}_write".into()
}
fn default_read_backend() -> String {
    "{cluster}_read".into()
}

/// The listening addresses of one cluster in the generated HAProxy configuration.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaproxyFrontend {
    /// The cluster (one of `[[clusters]]`).
    pub cluster: String,
    /// `host:port` for writes (to the leader).
    #[serde(default)]
    pub write: Option<String>,
    /// `host:port` for reads (balanced over the replicas).
    #[serde(default)]
    pub read: Option<String>,
}

impl HaproxyConfig {
    pub(crate) fn validate(&self, clusters: &[&str], problems: &mut Vec<String>) {
        let at = "integrations.haproxy";
        if !self.runtime_api.starts_with('/') && super::split_addr(&self.runtime_api).is_none() {
            problems.push(format!(
                "{at}.runtime_api `{}` is neither an absolute socket path nor host:port",
                self.runtime_api
            ));
        }
        for (what, pattern) in [
            ("write_backend", &self.write_backend),
            ("read_backend", &self.read_backend),
        ] {
            if pattern.is_empty() || !pattern.chars().all(name_char_or_brace) {
                problems.push(format!(
                    "{at}.{what} `{pattern}`: use letters, digits, `_ - . :` and `{{cluster}}`"
                ));
            }
        }
        if self.check_user.as_ref().is_some_and(|u| {
            u.is_empty()
                || !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        }) {
            problems.push(format!("{at}.check_user: use letters, digits and `_ - .`"));
        }
        if self.write_backend == self.read_backend {
            problems.push(format!("{at}: write_backend and read_backend must differ"));
        }
        for f in &self.frontends {
            if !clusters.contains(&f.cluster.as_str()) {
                problems.push(format!("{at}.frontends: unknown cluster `{}`", f.cluster));
            }
            for a in f.write.iter().chain(&f.read) {
                if super::split_addr(a).is_none() {
                    problems.push(format!(
                        "{at}.frontends.{}: `{a}` is not host:port",
                        f.cluster
                    ));
                }
            }
        }
        self.retry.validate(at, problems);
    }

    fn write_backend(&self, cluster: &str) -> String {
        super::expand(&self.write_backend, cluster)
    }

    fn read_backend(&self, cluster: &str) -> String {
        super::expand(&self.read_backend, cluster)
    }
}

fn name_char_or_brace(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:{}".contains(c)
}

/// The HAProxy server name of a node: `s_` and its address with every character HAProxy
/// does not allow in names replaced by `_` (`127.0.0.1:3310` -> `s_127.0.0.1_3310`).
pub fn server_name(addr: &str) -> String {
    let mut s = String::from("s_");
    s.extend(addr.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '_'
        }
    }));
    s
}

/// The whole `haproxy.cfg` for `topology`: a stats socket at the runtime API address, and per
/// cluster a write backend (every node a server, all but the leader `disabled`) and a read
/// backend (every node a server, only the readable replicas enabled), with frontends where
/// configured. Servers are health-checked with a MariaDB login as `check_user`, or by TCP
/// connect without one.
pub fn generate(config: &HaproxyConfig, topology: &Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by switchyard (`switchyard haproxy-config` or GET /api/v1/haproxy/config).\n\
         # switchyard keeps the server states of the backends below in step with the topology\n\
         # through the runtime API (the stats socket); do not rename backends or servers.\n"
    );
    let socket = if config.runtime_api.starts_with('/') {
        format!("{} mode 600 level admin", config.runtime_api)
    } else {
        format!("ipv4@{} level admin", config.runtime_api)
    };
    let _ = writeln!(
        out,
        "global\n    maxconn 4096\n    stats socket {socket}\n\n\
         defaults\n    mode tcp\n    option redispatch\n    retries 3\n    timeout connect 3s\n    \
         timeout client 1h\n    timeout server 1h\n    timeout check 2s\n"
    );
    for c in topology.clusters.values() {
        let view = ClusterView::of(c);
        let write = config.write_backend(&c.name);
        let read = config.read_backend(&c.name);
        if let Some(f) = config.frontends.iter().find(|f| f.cluster == c.name) {
            if let Some(a) = &f.write {
                let _ = writeln!(
                    out,
                    "frontend fe_{write}\n    bind {a}\n    default_backend {write}\n"
                );
            }
            if let Some(a) = &f.read {
                let _ = writeln!(
                    out,
                    "frontend fe_{read}\n    bind {a}\n    default_backend {read}\n"
                );
            }
        }
        let _ = writeln!(
            out,
            "# {}: the leader only{}",
            c.name,
            if view.leader.is_none() {
                " (not known yet: every server disabled until switchyard enables it)"
            } else {
                ""
            }
        );
        let check = match &config.check_user {
            Some(u) => format!("    option mysql-check user {u} post-41\n"),
            None => String::new(),
        };
        let _ = write!(out, "backend {write}\n{check}");
        for n in &view.nodes {
            let enabled = write_enabled(&view, &n.addr);
            let _ = writeln!(
                out,
                "    server {} {} check inter 1s rise 1 fall 2 on-marked-down shutdown-sessions{}",
                server_name(&n.addr),
                n.addr,
                if enabled { "" } else { " disabled" }
            );
        }
        let _ = writeln!(out, "\n# {}: the replicas fit to serve reads", c.name);
        let _ = write!(out, "backend {read}\n    balance leastconn\n{check}");
        for n in &view.nodes {
            let _ = writeln!(
                out,
                "    server {} {} check inter 1s rise 1 fall 2{}",
                server_name(&n.addr),
                n.addr,
                if n.readable { "" } else { " disabled" }
            );
        }
        out.push('\n');
    }
    out
}

/// `switchyard haproxy-config --config FILE`: the generated haproxy.cfg for the clusters of
/// the file, with the leaders it names (none enabled for a cluster without one: switchyard
/// enables the leader through the runtime API once it knows it).
pub fn config_for_file(config: &crate::Config) -> Result<String, String> {
    let Some(h) = &config.integrations.haproxy else {
        return Err("the configuration has no [integrations.haproxy] section".into());
    };
    let specs: Vec<orchestrator::monitor::ClusterSpec> = config
        .clusters
        .iter()
        .map(|c| orchestrator::monitor::ClusterSpec {
            name: c.name.clone(),
            nodes: c.nodes.clone(),
            leader: c.leader.clone(),
        })
        .collect();
    let topology = orchestrator::monitor::initial_topology(&specs);
    Ok(generate(h, &topology))
}

/// Whether `addr` takes writes: the leader, unless a leader change is under way.
fn write_enabled(view: &ClusterView, addr: &str) -> bool {
    !view.held && view.leader.as_deref() == Some(addr)
}

/// The runtime API commands that bring HAProxy to `view`, in order: the write backend's other
/// servers are put in maintenance (and their sessions cut) before the leader is enabled, so
/// that two servers never take writes at once.
pub fn commands(config: &HaproxyConfig, view: &ClusterView) -> Vec<String> {
    let write = config.write_backend(&view.cluster);
    let read = config.read_backend(&view.cluster);
    let mut cmds = Vec::new();
    for n in &view.nodes {
        if !write_enabled(view, &n.addr) {
            let s = server_name(&n.addr);
            cmds.push(format!("set server {write}/{s} state maint"));
            cmds.push(format!("shutdown sessions server {write}/{s}"));
        }
    }
    for n in &view.nodes {
        if write_enabled(view, &n.addr) {
            cmds.push(format!(
                "set server {write}/{} state ready",
                server_name(&n.addr)
            ));
        }
    }
    for n in &view.nodes {
        let state = if n.readable { "ready" } else { "maint" };
        cmds.push(format!(
            "set server {read}/{} state {state}",
            server_name(&n.addr)
        ));
    }
    cmds
}

/// Sends one command to the runtime API and returns HAProxy's answer. HAProxy answers a
/// command on a fresh connection and closes it.
pub async fn runtime_command(
    api: &str,
    command: &str,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let work = async {
        if api.starts_with('/') {
            let s = tokio::net::UnixStream::connect(api)
                .await
                .map_err(|e| format!("{api}: {e}"))?;
            exchange(s, command).await
        } else {
            let s = tokio::net::TcpStream::connect(api)
                .await
                .map_err(|e| format!("{api}: {e}"))?;
            exchange(s, command).await
        }
        .map_err(|e| format!("{api}: {e}"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{api}: no answer within {} ms", timeout.as_millis()))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    command: &str,
) -> std::io::Result<String> {
    s.write_all(format!("{command}\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The runtime API integration.
pub(crate) struct Haproxy {
    config: HaproxyConfig,
}

impl Haproxy {
    pub(crate) fn new(config: HaproxyConfig) -> Self {
        Haproxy { config }
    }
}

impl Integration for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn follows_phase(&self) -> bool {
        true
    }

    fn reasserts(&self) -> bool {
        true
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        for cmd in commands(&self.config, change.view) {
            let answer =
                runtime_command(&self.config.runtime_api, &cmd, self.config.retry.timeout())
                    .await?;
            // Successful `set server` and `shutdown sessions` answer nothing but a newline.
            let answer = answer.trim();
            if !answer.is_empty() {
                return Err(format!("`{cmd}`: {answer}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_map::{ClusterStatus, NodeState, NodeStatus, Role};

    fn topology() -> Topology {
        let mut leader = NodeStatus::new("127.0.0.1:3310", Role::Leader);
        leader.state = NodeState::Up;
        let mut replica = NodeStatus::new("127.0.0.1:3311", Role::Replica);
        replica.state = NodeState::Up;
        replica.io_running = Some(true);
        replica.sql_running = Some(true);
        let mut t = Topology::default();
        t.clusters.insert(
            "c1".into(),
            ClusterStatus::new("c1", Some("127.0.0.1:3310".into()), vec![leader, replica]),
        );
        t
    }

    fn config() -> HaproxyConfig {
        toml::from_str(
            r#"runtime_api = "/run/haproxy/admin.sock"
               frontends = [{ cluster = "c1", write = "127.0.0.1:3306", read = "127.0.0.1:3307" }]"#,
        )
        .expect("config parses")
    }

    #[test]
    fn generated_config_enables_only_the_leader_for_writes() {
        let cfg = generate(&config(), &topology());
        assert!(cfg.contains("stats socket /run/haproxy/admin.sock mode 600 level admin"));
        assert!(cfg.contains(
            "frontend fe_c1_write\n    bind 127.0.0.1:3306\n    default_backend c1_write"
        ));
        let write = cfg
            .split("\nbackend c1_write\n")
            .nth(1)
            .expect("write backend");
        let write = write.split("\n\n").next().unwrap_or_default();
        assert!(write.contains("server s_127.0.0.1_3310 127.0.0.1:3310 check inter 1s rise 1 fall 2 on-marked-down shutdown-sessions\n"), "{write}");
        assert!(write.contains("server s_127.0.0.1_3311 127.0.0.1:3311 check inter 1s rise 1 fall 2 on-marked-down shutdown-sessions disabled"), "{write}");
        let read = cfg
            .split("\nbackend c1_read\n")
            .nth(1)
            .expect("read backend");
        assert!(read.contains(
            "server s_127.0.0.1_3310 127.0.0.1:3310 check inter 1s rise 1 fall 2 disabled"
        ));
        assert!(
            read.contains("server s_127.0.0.1_3311 127.0.0.1:3311 check inter 1s rise 1 fall 2\n")
        );
        assert!(!cfg.contains("mysql-check"));
        let mut with_user = config();
        with_user.check_user = Some("haproxy_check".into());
        let cfg = generate(&with_user, &topology());
        assert_eq!(
            cfg.matches("    option mysql-check user haproxy_check post-41\n")
                .count(),
            2,
            "{cfg}"
        );
    }

    #[test]
    fn commands_disable_before_they_enable() {
        let t = topology();
        let mut view = ClusterView::of(&t.clusters["c1"]);
        let cmds = commands(&config(), &view);
        assert_eq!(
            cmds,
            [
                "set server c1_write/s_127.0.0.1_3311 state maint",
                "shutdown sessions server c1_write/s_127.0.0.1_3311",
                "set server c1_write/s_127.0.0.1_3310 state ready",
                "set server c1_read/s_127.0.0.1_3310 state maint",
                "set server c1_read/s_127.0.0.1_3311 state ready",
            ]
        );
        view.held = true;
        assert!(commands(&config(), &view)
            .iter()
            .all(|c| !c.starts_with("set server c1_write/") || c.ends_with("maint")));
    }

    #[test]
    fn bad_settings_are_reported() {
        let mut c = config();
        c.runtime_api = "relative.sock".into();
        c.read_backend = c.write_backend.clone();
        c.frontends[0].cluster = "c9".into();
        let mut problems = Vec::new();
        c.validate(&["c1"], &mut problems);
        let text = problems.join("\n");
        assert!(text.contains("runtime_api"), "{text}");
        assert!(text.contains("must differ"), "{text}");
        assert!(text.contains("unknown cluster `c9`"), "{text}");
    }
}
