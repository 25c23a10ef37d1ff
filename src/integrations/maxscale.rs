//! MaxScale: server states set through MaxScale's REST API (port 8989, basic auth) so that
//! its routers send writes to the new leader. MaxScale documents, in the REST API's Server
//! Resource, `PUT /v1/servers/:name/set?state=<state>` and `PUT /v1/servers/:name/clear?state=
//! <state>` for this; states are `master`, `slave`, `maintenance`, `running`, `drain`. The
//! servers must not be monitored by a MaxScale monitor, which would set its own view of
//! `master`/`slave` over ours: switchyard is their monitor.

use std::collections::BTreeMap;

use router::config::Secret;
use serde::{Deserialize, Serialize};

use super::{Change, ClusterView, Integration, RetryPolicy};

/// MaxScale: `master`/`slave` server states set through its REST API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaxscaleConfig {
    /// The REST API, e.g. `http://127.0.0.1:8989`.
    pub url: String,
    /// REST API user (MaxScale's default is `admin`).
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// MaxScale's server name of each node (`"127.0.0.1:3310" = "server1"`); nodes not
    /// listed are left alone.
    pub servers: BTreeMap<String, String>,
    /// How a push is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl MaxscaleConfig {
    pub(crate) fn validate(&self, nodes: &[&str], problems: &mut Vec<String>) {
        let at = "integrations.maxscale";
        if !super::is_http_url(&self.url) {
            problems.push(format!("{at}.url `{}` is not an http(s) URL", self.url));
        }
        for (addr, name) in &self.servers {
            if !nodes.contains(&addr.as_str()) {
                problems.push(format!(
                    "{at}.servers: `{addr}` is not a node of any cluster"
                ));
            }
            if name.is_empty() || name.contains('/') || name.contains('?') {
                problems.push(format!("{at}.servers.\"{addr}\": bad server name `{name}`"));
            }
        }
        if self.servers.is_empty() {
            problems.push(format!(
                "{at}.servers: map at least one node to a server name"
            ));
        }
        self.retry.validate(at, problems);
    }
}

/// The calls that bring MaxScale to `view`, in order, as `(server, "set"|"clear", state)`:
/// every other server loses `master` before the leader gets it, so there is never a moment
/// with two masters.
pub fn calls<'a>(
    servers: &'a BTreeMap<String, String>,
    view: &ClusterView,
) -> Vec<(&'a str, &'static str, &'static str)> {
    let mut out = Vec::new();
    let leader = view.leader.as_deref().filter(|_| !view.held);
    for n in &view.nodes {
        let Some(name) = servers.get(&n.addr) else {
            continue;
        };
        if Some(n.addr.as_str()) != leader {
            out.push((name.as_str(), "clear", "master"));
            if n.readable {
                out.push((name.as_str(), "set", "slave"));
            } else {
                out.push((name.as_str(), "clear", "slave"));
            }
        }
    }
    if let Some(name) = leader.and_then(|l| servers.get(l)) {
        out.push((name.as_str(), "clear", "slave"));
        out.push((name.as_str(), "set", "master"));
    }
    out
}

/// The REST API integration.
pub(crate) struct Maxscale {
    config: MaxscaleConfig,
    http: reqwest::Client,
}

impl Maxscale {
    pub(crate) fn new(config: MaxscaleConfig) -> Result<Self, String> {
        let http = super::http_client(&config.retry)?;
        Ok(Maxscale { config, http })
    }
}

impl Integration for Maxscale {
    fn name(&self) -> &'static str {
        "maxscale"
    }

    fn reasserts(&self) -> bool {
        true
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        let base = self.config.url.trim_end_matches('/');
        for (server, verb, state) in calls(&self.config.servers, change.view) {
            let url = format!("{base}/v1/servers/{server}/{verb}?state={state}");
            let resp = self
                .http
                .put(&url)
                .basic_auth(&self.config.user, Some(self.config.password.expose()))
                .send()
                .await
                .map_err(|e| format!("PUT {url}: {e}"))?;
            super::http_ok(resp)
                .await
                .map_err(|e| format!("PUT {url}: {e}"))?;
        }
        Ok(())
    }
}
