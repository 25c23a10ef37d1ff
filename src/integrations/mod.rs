//! Routing layers and service discovery that follow the topology: HAProxy (runtime API),
//! Consul (catalog), webhooks, ProxySQL (admin interface), MaxScale (REST API) and scripts.
//! One task per configured integration watches the topology and, whenever a cluster's leader,
//! phase or node set changes, pushes that cluster's whole desired state (never a delta), with
//! bounded retries. Failures are logged and counted; they never hold up the router or the
//! orchestrator. The built-in router needs none of this: it follows the topology in-process.

pub mod consul;
pub mod haproxy;
pub mod maxscale;
pub mod proxysql;
pub mod script;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shard_map::{ClusterPhase, ClusterStatus, NodeState, Role, TopologyHandle};

/// Routing layers and service discovery kept in step with the topology. Every integration is
/// off unless its sub-section is present.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationsConfig {
    /// How often each integration compares its last pushed state with the topology again,
    /// so that a push that failed every retry is tried once more without a new change (ms).
    #[serde(default = "default_resync_ms")]
    pub resync_ms: u64,
    /// HAProxy: generated configuration and runtime API updates.
    #[serde(default)]
    pub haproxy: Option<haproxy::HaproxyConfig>,
    /// Consul: each cluster's leader registered in the catalog.
    #[serde(default)]
    pub consul: Option<consul::ConsulConfig>,
    /// Webhooks: a JSON POST for every change of a cluster.
    #[serde(default)]
    pub webhooks: Vec<webhook::WebhookConfig>,
    /// ProxySQL: writer and reader hostgroups through its admin interface.
    #[serde(default)]
    pub proxysql: Option<proxysql::ProxysqlConfig>,
    /// MaxScale: server states through its REST API.
    #[serde(default)]
    pub maxscale: Option<maxscale::MaxscaleConfig>,
    /// Scripts run for every change of a cluster.
    #[serde(default)]
    pub scripts: Vec<script::ScriptConfig>,
}

impl Default for IntegrationsConfig {
    fn default() -> Self {
        IntegrationsConfig {
            resync_ms: default_resync_ms(),
            haproxy: None,
            consul: None,
            webhooks: Vec::new(),
            proxysql: None,
            maxscale: None,
            scripts: Vec::new(),
        }
    }
}

fn default_resync_ms() -> u64 {
    10_000
}

/// How one push is retried before it is given up (until the next change or resync).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per push, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one (ms).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The longest wait between two attempts (ms).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Time limit of one attempt: connecting, sending and reading the answer (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    3_000
}

impl RetryPolicy {
    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.attempts == 0 {
            problems.push(format!("{at}.retry.attempts must be at least 1"));
        }
        if self.timeout_ms == 0 {
            problems.push(format!("{at}.retry.timeout_ms must be at least 1"));
        }
        if self.max_backoff_ms < self.backoff_ms {
            problems.push(format!(
                "{at}.retry.max_backoff_ms ({}) is below backoff_ms ({})",
                self.max_backoff_ms, self.backoff_ms
            ));
        }
    }

    /// The time limit of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl IntegrationsConfig {
    /// Every problem, each prefixed with its place in the file. `clusters` are the configured
    /// cluster names, `nodes` every configured `host:port`.
    pub fn validate(&self, clusters: &[&str], nodes: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.resync_ms == 0 {
            problems.push("integrations.resync_ms must be at least 1".into());
        }
        if let Some(h) = &self.haproxy {
            h.validate(clusters, &mut problems);
        }
        if let Some(c) = &self.consul {
            c.validate(&mut problems);
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(&format!("integrations.webhooks[{i}]"), &mut problems);
        }
        if let Some(p) = &self.proxysql {
            p.validate(clusters, &mut problems);
        }
        if let Some(m) = &self.maxscale {
            m.validate(nodes, &mut problems);
        }
        for (i, s) in self.scripts.iter().enumerate() {
            s.validate(&format!("integrations.scripts[{i}]"), &mut problems);
        }
        problems
    }
}

/// What the integrations publish of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// `host:port`.
    pub addr: String,
    /// `leader`, `replica` or `unknown`.
    pub role: &'static str,
    /// The monitor sees it up.
    pub up: bool,
    /// Under maintenance (flag set by an operator).
    pub maintenance: bool,
    /// A replica fit to serve reads: up, both replication threads running, not under
    /// maintenance.
    pub readable: bool,
}

/// The desired state of one cluster, as every integration publishes it. Lag and GTID
/// positions are left out on purpose: they change all the time and no routing layer needs
/// them, so they would only cause pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster: String,
    /// `host:port` of the leader, when known.
    pub leader: Option<String>,
    /// The leadership epoch.
    pub epoch: u64,
    /// A leader change is under way (routers hold writes).
    pub held: bool,
    /// Every node of the cluster.
    pub nodes: Vec<NodeView>,
}

impl ClusterView {
    /// The view of a cluster in a topology snapshot.
    pub fn of(c: &ClusterStatus) -> ClusterView {
        let nodes = c
            .nodes
            .iter()
            .map(|n| {
                let up = n.state == NodeState::Up;
                let leader = c.leader.as_deref() == Some(n.addr.as_str());
                NodeView {
                    addr: n.addr.clone(),
                    role: match (leader, n.role) {
                        (true, _) => "leader",
                        (false, Role::Replica) => "replica",
                        _ => "unknown",
                    },
                    up,
                    maintenance: n.flags.maintenance,
                    readable: !leader
                        && up
                        && n.role == Role::Replica
                        && !n.flags.maintenance
                        && n.io_running == Some(true)
                        && n.sql_running == Some(true),
                }
            })
            .collect();
        ClusterView {
            cluster: c.name.clone(),
            leader: c.leader.clone(),
            epoch: c.epoch,
            held: c.phase == ClusterPhase::Held,
            nodes,
        }
    }

    /// The replicas fit to serve reads.
    pub fn readable(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.readable)
    }
}

/// One push: the cluster's state now, and what changed since the last successful push.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// `startup` (first push of this cluster), `leader_change`, `topology_change`, or
    /// `resync` (the same state again, for integrations that reassert it).
    pub event: &'static str,
    /// The cluster's state now.
    pub view: &'a ClusterView,
    /// The leader of the last successful push.
    pub previous_leader: Option<&'a str>,
}

/// A routing layer or directory kept in step with the topology.
pub(crate) trait Integration: Send + Sync + 'static {
    /// The `integration` label of its metrics and log lines.
    fn name(&self) -> &'static str;
    /// Whether a cluster going into or out of the held phase is a change for it (HAProxy
    /// stops sending writes while a leader change is under way; directories only care about
    /// who the leader is).
    fn follows_phase(&self) -> bool {
        false
    }
    /// Whether the unchanged state is pushed again every `resync_ms`: for layers whose state
    /// is lost when they restart (HAProxy's runtime server states, MaxScale's server states),
    /// so that a restarted one is brought back in step without waiting for a change.
    fn reasserts(&self) -> bool {
        false
    }
    fn retry(&self) -> &RetryPolicy;
    /// Publishes `change.view` whole. `Err` says why it failed.
    fn push(&self, change: Change<'_>) -> impl Future<Output = Result<(), String>> + Send;
}

/// Counts of pushes per integration and result, for `/metrics`.
#[derive(Debug, Default)]
pub struct IntegrationMetrics {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl IntegrationMetrics {
    fn count(&self, integration: &'static str, result: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((integration, result))
            .or_default() += 1;
    }

    /// `(integration, result, count)`: result `ok`, `retried` (an attempt failed and another
    /// followed) or `failed` (every attempt failed).
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((i, r), n)| (*i, *r, *n))
            .collect()
    }
}

/// Where a push that failed every attempt, and the first success after it, are recorded as
/// cluster events (`integration.failed`, `integration.recovered`): the orchestrator's event
/// ring, shown by the events API and the dashboard.
pub type EventSink = Arc<dyn Fn(&str, &str, String) + Send + Sync>;

/// The configured integrations and their counters.
pub struct Integrations {
    /// The `[integrations]` section.
    pub config: IntegrationsConfig,
    /// Push counters, for `/metrics`.
    pub metrics: Arc<IntegrationMetrics>,
    events: EventSink,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Integrations {
    /// The integrations of `config`, recording failures and recoveries as the orchestrator's
    /// cluster events.
    pub fn with_orchestrator(
        config: IntegrationsConfig,
        orchestrator: &Arc<orchestrator::Orchestrator>,
    ) -> Arc<Integrations> {
        let o = Arc::downgrade(orchestrator);
        let sink: EventSink = Arc::new(move |cluster: &str, kind: &str, message: String| {
            if let Some(o) = o.upgrade() {
                o.record_event(cluster, kind, message);
            }
        });
        Arc::new(Integrations {
            config,
            metrics: Arc::default(),
            events: sink,
        })
    }

    /// Follows `topology` until `stop` resolves: one task per configured integration.
    pub async fn run(self: Arc<Self>, topology: TopologyHandle, stop: impl Future<Output = ()>) {
        let c = &self.config;
        let resync = Duration::from_millis(c.resync_ms);
        let mut tasks = tokio::task::JoinSet::new();
        let m = &Reporting {
            metrics: self.metrics.clone(),
            events: self.events.clone(),
        };
        if let Some(h) = &c.haproxy {
            tasks.spawn(follow(
                haproxy::Haproxy::new(h.clone()),
                topology.clone(),
                m.clone(),
                resync,
            ));
        }
        if let Some(h) = &c.consul {
            match consul::Consul::new(h.clone()) {
                Ok(i) => {
                    tasks.spawn(follow(i, topology.clone(), m.clone(), resync));
                }
                Err(e) => tracing::error!(error = %e, "consul integration not started"),
            }
        }
        for w in &c.webhooks {
            match webhook::Webhook::new(w.clone()) {
                Ok(i) => {
                    tasks.spawn(follow(i, topology.clone(), m.clone(), resync));
                }
                Err(e) => tracing::error!(error = %e, "webhook integration not started"),
            }
        }
        if let Some(p) = &c.proxysql {
            tasks.spawn(follow(
                proxysql::Proxysql::new(p.clone()),
                topology.clone(),
                m.clone(),
                resync,
            ));
        }
        if let Some(x) = &c.maxscale {
            match maxscale::Maxscale::new(x.clone()) {
                Ok(i) => {
                    tasks.spawn(follow(i, topology.clone(), m.clone(), resync));
                }
                Err(e) => tracing::error!(error = %e, "maxscale integration not started"),
            }
        }
        for s in &c.scripts {
            tasks.spawn(follow(
                script::Script::new(s.clone()),
                topology.clone(),
                m.clone(),
                resync,
            ));
        }
        if tasks.is_empty() {
            return;
        }
        stop.await;
        tasks.abort_all();
    }
}

/// One integration's loop: on every topology change (and every `resync`), each cluster whose
/// view differs from the last one pushed successfully is pushed whole (and, for integrations
/// that reassert, also an unchanged one last pushed `resync` ago or more).
async fn follow<I: Integration>(
    integration: I,
    topology: TopologyHandle,
    report: Reporting,
    resync: Duration,
) {
    let mut changes = topology.subscribe();
    let mut pushed: HashMap<String, (ClusterView, tokio::time::Instant)> = HashMap::new();
    // Clusters whose last push failed: only the first failure and the recovery become
    // events, so an integration down for a long time does not flood the event ring.
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        let snapshot = topology.load();
        for c in snapshot.clusters.values() {
            let mut view = ClusterView::of(c);
            if !integration.follows_phase() {
                view.held = false;
            }
            let (last, pushed_at) = match pushed.get(&view.cluster) {
                Some((v, at)) => (Some(v), Some(*at)),
                None => (None, None),
            };
            let due = integration.reasserts() && pushed_at.is_some_and(|t| t.elapsed() >= resync);
            if last == Some(&view) && !due {
                continue;
            }
            // Nothing to say about a cluster whose leader was never known.
            if last.is_none() && view.leader.is_none() {
                continue;
            }
            let change = Change {
                event: match last {
                    None => "startup",
                    Some(l) if l.leader != view.leader => "leader_change",
                    Some(l) if *l == view => "resync",
                    Some(_) => "topology_change",
                },
                view: &view,
                previous_leader: last.and_then(|l| l.leader.as_deref()),
            };
            let name = integration.name();
            match push_with_retry(&integration, change, &report.metrics).await {
                Ok(()) => {
                    if failing.remove(&view.cluster) {
                        report.event(
                            &view.cluster,
                            "integration.recovered",
                            format!("{name}: up to date again (epoch {})", view.epoch),
                        );
                    }
                    pushed.insert(view.cluster.clone(), (view, tokio::time::Instant::now()));
                }
                Err(why) => {
                    if failing.insert(view.cluster.clone()) {
                        report.event(
                            &view.cluster,
                            "integration.failed",
                            format!("{name}: {why}"),
                        );
                    }
                }
            }
        }
        // A change, or the resync tick; the topology gone means shutting down.
        if let Ok(Err(_)) = tokio::time::timeout(resync, changes.changed()).await {
            return;
        }
    }
}

/// Counters and events, shared by every integration's task.
#[derive(Clone)]
struct Reporting {
    metrics: Arc<IntegrationMetrics>,
    events: EventSink,
}

impl Reporting {
    fn event(&self, cluster: &str, kind: &str, message: String) {
        (self.events)(cluster, kind, message);
    }
}

/// Pushes with the integration's retry policy; `Err` carries the last attempt's error.
async fn push_with_retry<I: Integration>(
    integration: &I,
    change: Change<'_>,
    metrics: &IntegrationMetrics,
) -> Result<(), String> {
    let policy = integration.retry();
    let name = integration.name();
    let mut backoff = Duration::from_millis(policy.backoff_ms);
    let max = Duration::from_millis(policy.max_backoff_ms);
    for attempt in 1..=policy.attempts.max(1) {
        // The attempt's own time limit covers integrations whose client has none.
        let result = match tokio::time::timeout(
            policy.timeout() + Duration::from_millis(500),
            integration.push(change),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", policy.timeout_ms)),
        };
        match result {
            Ok(()) => {
                metrics.count(name, "ok");
                tracing::info!(
                    integration = name,
                    cluster = %change.view.cluster,
                    leader = change.view.leader.as_deref().unwrap_or("-"),
                    epoch = change.view.epoch,
                    event = change.event,
                    "integration updated"
                );
                return Ok(());
            }
            Err(why) if attempt < policy.attempts => {
                metrics.count(name, "retried");
                tracing::warn!(
                    integration = name,
                    cluster = %change.view.cluster,
                    attempt,
                    error = %why,
                    "integration push failed, retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
            Err(why) => {
                metrics.count(name, "failed");
                tracing::error!(
                    integration = name,
                    cluster = %change.view.cluster,
                    attempts = policy.attempts,
                    error = %why,
                    "integration push gave up; tried again at the next change or resync"
                );
                return Err(why);
            }
        }
    }
    Err("no attempt made".into())
}

/// Splits `host:port` (the host may be a bracketed IPv6 address).
pub(crate) fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    Some((h, p.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

/// Replaces `{cluster}` in a name pattern.
pub(crate) fn expand(pattern: &str, cluster: &str) -> String {
    pattern.replace("{cluster}", cluster)
}

/// Whether `url` is an absolute http(s) URL.
pub(crate) fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https")
}

/// A reqwest client with the policy's time limit.
pub(crate) fn http_client(policy: &RetryPolicy) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(policy.timeout())
        .connect_timeout(policy.timeout())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// `Err` with the status and the start of the body unless the answer is a success.
pub(crate) async fn http_ok(resp: reqwest::Response) -> Result<(), String> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(format!("{status}: {}", body.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_map::NodeStatus;

    #[test]
    fn views_leave_out_what_changes_all_the_time() {
        let mut replica = NodeStatus::new("h:2", Role::Replica);
        replica.state = NodeState::Up;
        replica.io_running = Some(true);
        replica.sql_running = Some(true);
        let mut leader = NodeStatus::new("h:1", Role::Leader);
        leader.state = NodeState::Up;
        let c = ClusterStatus::new("c1", Some("h:1".into()), vec![leader, replica]);
        let v = ClusterView::of(&c);
        assert_eq!(
            v.readable().map(|n| n.addr.as_str()).collect::<Vec<_>>(),
            ["h:2"]
        );
        let mut later = c.clone();
        later.nodes[1].lag_seconds = Some(3);
        later.nodes[1].gtid_current_pos = "0-1-9".into();
        assert_eq!(ClusterView::of(&later), v);
        later.nodes[1].flags.maintenance = true;
        assert_ne!(ClusterView::of(&later), v);
        assert_eq!(ClusterView::of(&later).readable().count(), 0);
    }

    #[test]
    fn the_example_in_serve_toml_parses() {
        let text = include_str!("../../config/serve.toml");
        let start = text.find("# (Example begins").expect("example start");
        let end = text.find("# (Example ends.)").expect("example end");
        let example: String = text[start..end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        struct File {
            integrations: IntegrationsConfig,
        }
        let f: File = toml::from_str(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        let i = f.integrations;
        let nodes = ["127.0.0.1:3310", "127.0.0.1:3311", "127.0.0.1:3312"];
        let problems = i.validate(&["c1", "c2"], &nodes);
        // Everything but the script, which does not exist here.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("on-topology-change"), "{problems:?}");
        assert_eq!(i.webhooks.len(), 1);
        assert!(i.haproxy.is_some() && i.consul.is_some() && i.proxysql.is_some());
        assert_eq!(i.maxscale.map(|m| m.servers.len()), Some(3));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
            resync_ms = 0
            [consul]
            url = "consul:8500"
            [[webhooks]]
            url = "ftp://x"
            hmac_secret = ""
            retry = { attempts = 0, backoff_ms = 500, max_backoff_ms = 100 }
            [proxysql]
            admin = "localhost"
            user = "a"
            password = "b"
            hostgroups = [{ cluster = "c9", writer = 1, reader = 1 }]
            [maxscale]
            url = "http://127.0.0.1:8989"
            user = "a"
            password = "b"
            servers = { "10.9.9.9:3306" = "server1" }
        "#;
        let c: IntegrationsConfig = toml::from_str(text).expect("parses");
        let problems = c.validate(&["c1"], &["127.0.0.1:3310"]).join("\n");
        for expected in [
            "integrations.resync_ms must be at least 1",
            "integrations.consul.url `consul:8500` is not an http(s) URL",
            "integrations.webhooks[0].url `ftp://x`",
            "integrations.webhooks[0].hmac_secret must not be empty",
            "integrations.webhooks[0].retry.attempts must be at least 1",
            "integrations.webhooks[0].retry.max_backoff_ms (100) is below backoff_ms (500)",
            "integrations.proxysql.admin `localhost` is not host:port",
            "integrations.proxysql.hostgroups: unknown cluster `c9`",
            "integrations.proxysql.hostgroups.c9: writer and reader must differ",
            "integrations.maxscale.servers: `10.9.9.9:3306` is not a node of any cluster",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
        // Unknown keys are refused.
        assert!(
            toml::from_str::<IntegrationsConfig>("[consul]\nurl = \"http://x\"\nacl = 1").is_err()
        );
    }

    #[test]
    fn addresses_split() {
        assert_eq!(split_addr("127.0.0.1:3306"), Some(("127.0.0.1", 3306)));
        assert_eq!(split_addr("[::1]:3306"), Some(("::1", 3306)));
        assert_eq!(split_addr(":3306"), None);
        assert_eq!(split_addr("host"), None);
    }
}
