//! Consul: each cluster's leader as a service in Consul's catalog. The servers are not Consul
//! agents, so they are registered the way Consul documents for external services: `PUT
//! /v1/catalog/register` with an external node (`NodeMeta` `external-node`), one node per
//! cluster whose one service points at the leader; re-registering the same service ID replaces
//! it, and a cluster without a leader gets `PUT /v1/catalog/deregister`.

use std::collections::BTreeMap;

use router::config::Secret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Change, Integration, RetryPolicy};

/// Consul: each cluster's leader as a service of an external node in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// Consul's HTTP API, e.g. `http://127.0.0.1:8500`.
    pub url: String,
    /// ACL token, sent as `X-Consul-Token`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Service name (and ID); `{cluster}` is replaced by the cluster's name.
    #[serde(default = "default_service")]
    pub service: String,
    /// The external node the service is registered on; `{cluster}` is replaced.
    #[serde(default = "default_node")]
    pub node: String,
    /// Tags of the service.
    #[serde(default = "default_tags")]
    pub tags: Vec<String>,
    /// Datacenter; Consul's own when absent.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// How a push is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_service() -> String {
    "{cluster}-leader".into()
}
fn default_node() -> String {
    "switchyard-{cluster}".into()
}
fn default_tags() -> Vec<String> {
    vec!["leader".into()]
}

impl ConsulConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let at = "integrations.consul";
        if !super::is_http_url(&self.url) {
            problems.push(format!("{at}.url `{}` is not an http(s) URL", self.url));
        }
        if self.service.is_empty() || self.node.is_empty() {
            problems.push(format!("{at}: service and node must not be empty"));
        }
        self.retry.validate(at, problems);
    }
}

/// The catalog integration.
pub(crate) struct Consul {
    config: ConsulConfig,
    http: reqwest::Client,
}

impl Consul {
    pub(crate) fn new(config: ConsulConfig) -> Result<Self, String> {
        let http = super::http_client(&config.retry)?;
        Ok(Consul { config, http })
    }

    fn put(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.config.url.trim_end_matches('/'));
        let mut req = self.http.put(url).json(&body);
        if let Some(t) = &self.config.token {
            req = req.header("X-Consul-Token", t.expose().as_ref());
        }
        req
    }
}

impl Integration for Consul {
    fn name(&self) -> &'static str {
        "consul"
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        let v = change.view;
        let service = super::expand(&self.config.service, &v.cluster);
        let node = super::expand(&self.config.node, &v.cluster);
        let leader = v.leader.as_deref().and_then(super::split_addr);
        let (path, mut body) = match leader {
            Some((host, port)) => {
                let meta: BTreeMap<&str, String> = [
                    ("cluster", v.cluster.clone()),
                    ("epoch", v.epoch.to_string()),
                    ("managed_by", "switchyard".to_owned()),
                ]
                .into();
                (
                    "/v1/catalog/register",
                    json!({
                        "Node": node,
                        "Address": host,
                        "NodeMeta": { "external-node": "true", "external-probe": "false" },
                        "Service": {
                            "ID": service,
                            "Service": service,
                            "Tags": self.config.tags,
                            "Address": host,
                            "Port": port,
                            "Meta": meta,
                        },
                        "SkipNodeUpdate": false,
                    }),
                )
            }
            None => (
                "/v1/catalog/deregister",
                json!({ "Node": node, "ServiceID": service }),
            ),
        };
        if let Some(dc) = &self.config.datacenter {
            body["Datacenter"] = json!(dc);
        }
        let resp = self
            .put(path, body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        super::http_ok(resp)
            .await
            .map_err(|e| format!("{path}: {e}"))
    }
}
