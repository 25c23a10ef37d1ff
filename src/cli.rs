//! The operator commands that talk to a running switchyard's admin API: `status`,
//! `switchover`, `failover`.

use anyhow::{bail, Context};
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Self {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("can't reach the admin API at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("no details");
            bail!("{status}: {msg}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// `switchyard status`: a table of clusters and nodes.
pub fn format_status(clusters: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for c in clusters["clusters"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "cluster {}  leader {}  epoch {}  {}\n",
            c["name"].as_str().unwrap_or("?"),
            c["leader"].as_str().unwrap_or("(none)"),
            c["epoch"],
            c["phase"].as_str().unwrap_or("?"),
        ));
        out.push_str(&format!(
            "  {:<22} {:<8} {:<8} {:>5}  {:<4} {:<4}  {}\n",
            "node", "role", "state", "lag", "io", "sql", "gtid_current_pos"
        ));
        for n in c["nodes"].as_array().unwrap_or(&empty) {
            let yes_no = |v: &Value| match v.as_bool() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let mut flags = Vec::new();
            for f in ["maintenance", "preferred", "ignored"] {
                if n["flags"][f].as_bool() == Some(true) {
                    flags.push(f);
                }
            }
            out.push_str(&format!(
                "  {:<22} {:<8} {:<8} {:>5}  {:<4} {:<4}  {}{}\n",
                n["addr"].as_str().unwrap_or("?"),
                n["role"].as_str().unwrap_or("?"),
                n["state"].as_str().unwrap_or("?"),
                n["lag_seconds"]
                    .as_u64()
                    .map_or("-".to_string(), |l| l.to_string()),
                yes_no(&n["io_running"]),
                yes_no(&n["sql_running"]),
                n["gtid_current_pos"].as_str().unwrap_or(""),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", flags.join(","))
                },
            ));
        }
    }
    out
}

/// The steps of a switchover or failover report, one per line.
pub fn format_report(report: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for step in report["steps"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "  {:<24} {}\n",
            step["kind"].as_str().unwrap_or(""),
            step["message"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "{}: {} -> {} (epoch {}) in {} ms\n",
        report["cluster"].as_str().unwrap_or("?"),
        report["old_leader"].as_str().unwrap_or("?"),
        report["new_leader"].as_str().unwrap_or("?"),
        report["epoch"],
        report["duration_ms"]
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_table_shows_every_node_and_flag() {
        let v = json!({"clusters": [{"name": "c1", "leader": "127.0.0.1:1", "epoch": 2,
            "phase": "serving", "nodes": [
              {"addr": "127.0.0.1:1", "role": "leader", "state": "up", "lag_seconds": null,
               "io_running": null, "sql_running": null, "gtid_current_pos": "0-1-5",
               "flags": {"maintenance": false, "preferred": false, "ignored": false}},
              {"addr": "127.0.0.1:2", "role": "replica", "state": "up", "lag_seconds": 0,
               "io_running": true, "sql_running": false, "gtid_current_pos": "0-1-4",
               "flags": {"maintenance": true, "preferred": false, "ignored": false}}]}]});
        let t = format_status(&v);
        assert!(
            t.contains("cluster c1  leader 127.0.0.1:1  epoch 2  serving"),
            "{t}"
        );
        assert!(t.contains("127.0.0.1:2"), "{t}");
        assert!(t.contains("[maintenance]"), "{t}");
        assert!(t.contains("NO"), "{t}");
    }
}
