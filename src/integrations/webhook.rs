//! Webhooks: a JSON POST for every change of a cluster, optionally with a bearer token and an
//! HMAC-SHA256 signature of the body (`X-Switchyard-Signature: sha256=<hex>`) so the receiver
//! can tell the call is genuine.

use hmac::{Hmac, Mac};
use router::config::Secret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::{Change, Integration, RetryPolicy};

/// A webhook: a JSON POST for every change of a cluster, optionally authenticated and signed.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Key of the `X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of the body>` header.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// How a push is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl WebhookConfig {
    pub(crate) fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if !super::is_http_url(&self.url) {
            problems.push(format!("{at}.url `{}` is not an http(s) URL", self.url));
        }
        if self
            .hmac_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            problems.push(format!("{at}.hmac_secret must not be empty"));
        }
        self.retry.validate(at, problems);
    }
}

/// The header value signing `body` with `key`: `sha256=<lowercase hex>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The body of a call: `{event, cluster, leader, previous_leader, epoch, nodes, at}`,
/// `at` in milliseconds since the Unix epoch.
pub fn payload(change: Change<'_>) -> serde_json::Value {
    let v = change.view;
    json!({
        "event": change.event,
        "cluster": v.cluster,
        "leader": v.leader,
        "previous_leader": change.previous_leader,
        "epoch": v.epoch,
        "nodes": v.nodes,
        "at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
}

/// One webhook.
pub(crate) struct Webhook {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    pub(crate) fn new(config: WebhookConfig) -> Result<Self, String> {
        let http = super::http_client(&config.retry)?;
        Ok(Webhook { config, http })
    }
}

impl Integration for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        let body = payload(change).to_string();
        let mut req = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.config.bearer_token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(k) = &self.config.hmac_secret {
            req = req.header(
                "X-Switchyard-Signature",
                signature(k.expose().as_bytes(), body.as_bytes()),
            );
        }
        let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
        super::http_ok(resp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
