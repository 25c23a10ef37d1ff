//! The operator commands that talk to a running switchyard's admin API: `status`,
//! `switchover` and `rebuild` (with their steps printed as they happen), `failover`,
//! `maintenance`,
//! `shard-map get|put|diff`; and `config check`, which needs no running switchyard.

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
        router::tls::install_default_provider();
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Trusts only the CA certificate(s) in `ca` (PEM) for an HTTPS admin API.
    pub fn with_ca(mut self, ca: &std::path::Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca)
            .with_context(|| format!("can't read the admin CA file {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not a PEM certificate bundle", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", ca.display());
        self.http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .build()
            .context("building the HTTPS client")?;
        Ok(self)
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

    /// PUT with a JSON body given as text (sent as it is, so the server reports its problems).
    pub async fn put_text(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// `switchyard maintenance CLUSTER NODE on|off`: sets the flag, keeping the node's others.
pub async fn maintenance(
    api: &ApiClient,
    cluster: &str,
    node: &str,
    on: bool,
) -> anyhow::Result<Value> {
    let c = api.get(&format!("/api/v1/clusters/{cluster}")).await?;
    let Some(n) = c["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["addr"] == node))
    else {
        bail!("cluster {cluster} has no node {node}");
    };
    let mut flags = n["flags"].clone();
    flags["maintenance"] = Value::Bool(on);
    api.put(
        &format!("/api/v1/clusters/{cluster}/nodes/{node}/flags"),
        flags,
    )
    .await
}

/// The applied shard map without its version, as the map's own JSON.
pub async fn current_shard_map(api: &ApiClient) -> anyhow::Result<shard_map::ShardMap> {
    let mut body = api.get("/api/v1/shard-map").await?;
    if let Some(o) = body.as_object_mut() {
        o.remove("version");
    }
    shard_map::ShardMap::from_json(&body.to_string())
        .context("the server's shard map could not be read")
}

/// `switchyard shard-map diff FILE`: what applying FILE would change.
pub async fn shard_map_diff(
    api: &ApiClient,
    file: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("can't read {}", file.display()))?;
    let new = shard_map::ShardMap::from_json(&text)
        .with_context(|| format!("{} is not a shard map", file.display()))?;
    let current = current_shard_map(api).await?;
    Ok(shard_map::diff(&current, &new))
}

/// `switchyard config check FILE`: every problem, one per line; `Ok(true)` when none.
pub fn config_check(
    file: &std::path::Path,
    out: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    match crate::Config::load(file) {
        Ok(_) => {
            writeln!(out, "{}: ok", file.display())?;
            Ok(true)
        }
        Err(crate::config::ConfigError::Invalid(problems)) => {
            writeln!(out, "{}: {} problem(s)", file.display(), problems.len())?;
            for p in problems {
                writeln!(out, "  - {p}")?;
            }
            Ok(false)
        }
        Err(e) => {
            writeln!(out, "{e}")?;
            Ok(false)
        }
    }
}

/// A reload's answer, one line per list.
pub fn format_reload(report: &Value) -> String {
    let list = |k: &str| -> String {
        let items: Vec<&str> = report[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    format!(
        "reloaded (generation {})\n  in force now:     {}\n  needs a restart:  {}\n  users changed:    {}\n",
        report["generation"],
        list("applied"),
        list("restart_required"),
        list("users_changed"),
    )
}

/// `switchyard switchover`: runs it, printing each step as the orchestrator logs it (the
/// cluster's events are polled while the request runs), then the outcome.
pub async fn switchover_with_progress(
    api: &ApiClient,
    cluster: &str,
    to: Option<&str>,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/clusters/{cluster}/switchover");
    let body = serde_json::json!({ "to": to });
    let report = post_with_progress(api, cluster, &path, body, out).await?;
    writeln!(
        out,
        "{}: {} -> {} (epoch {}) in {} ms",
        report["cluster"].as_str().unwrap_or("?"),
        report["old_leader"].as_str().unwrap_or("?"),
        report["new_leader"].as_str().unwrap_or("?"),
        report["epoch"],
        report["duration_ms"]
    )?;
    Ok(report)
}

/// `switchyard rebuild`: runs it, printing each step (the bytes copied among them) as the
/// orchestrator logs it, then the outcome.
pub async fn rebuild_with_progress(
    api: &ApiClient,
    cluster: &str,
    node: &str,
    source: Option<&str>,
    method: Option<orchestrator::RebuildMethod>,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/clusters/{cluster}/nodes/{node}/rebuild");
    let body = serde_json::json!({ "source": source, "method": method });
    let report = post_with_progress(api, cluster, &path, body, out).await?;
    writeln!(
        out,
        "{}: {} rebuilt from {} ({}, {} bytes), replicating from {} at {}{} in {} ms",
        report["cluster"].as_str().unwrap_or("?"),
        report["node"].as_str().unwrap_or("?"),
        report["source"].as_str().unwrap_or("?"),
        report["method"].as_str().unwrap_or("?"),
        report["bytes_copied"],
        report["leader"].as_str().unwrap_or("?"),
        report["gtid_slave_pos"].as_str().unwrap_or("?"),
        if report["caught_up"] == true {
            ""
        } else {
            " (still catching up)"
        },
        report["duration_ms"]
    )?;
    Ok(report)
}

/// POSTs `body` to `path`, printing the cluster's new events while the request runs (they are
/// polled), and returns the answer.
async fn post_with_progress(
    api: &ApiClient,
    cluster: &str,
    path: &str,
    body: Value,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<Value> {
    let events_path = format!("/api/v1/clusters/{cluster}/events");
    let seen_before = api.get(&events_path).await?["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen: std::collections::HashSet<String> =
        seen_before.iter().map(|e| e.to_string()).collect();
    let started = std::time::Instant::now();
    let request = api.post(path, body);
    tokio::pin!(request);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    let mut print_new = |events: &Value, out: &mut dyn std::io::Write| -> std::io::Result<()> {
        for e in events["events"].as_array().into_iter().flatten() {
            if seen.insert(e.to_string()) {
                writeln!(
                    out,
                    "  [{:>6.3}s] {:<22} {}",
                    started.elapsed().as_secs_f64(),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )?;
                out.flush()?;
            }
        }
        Ok(())
    };
    let result = loop {
        tokio::select! {
            r = &mut request => break r,
            _ = tick.tick() => {
                if let Ok(events) = api.get(&events_path).await {
                    print_new(&events, out)?;
                }
            }
        }
    };
    // The steps logged after the last poll.
    if let Ok(events) = api.get(&events_path).await {
        print_new(&events, out)?;
    }
    result
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
            let kept_out = c["kept_out"]
                .as_array()
                .is_some_and(|k| k.iter().any(|a| *a == n["addr"]));
            if kept_out {
                flags.push("kept out: rebuild it");
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

/// The processes of a multi-process deployment (`GET /api/v1/members`), for `status`: empty
/// for a process that works alone.
pub fn format_members(members: &Value) -> String {
    if members["mode"] != "etcd" {
        return String::new();
    }
    let mut out = String::new();
    let this = &members["this"];
    out.push_str(&format!(
        "this process: {} ({}{})  etcd: {}\n",
        this["name"].as_str().unwrap_or("?"),
        this["role"].as_str().unwrap_or("?"),
        if this["leading"] == true {
            ", leading"
        } else {
            ""
        },
        members["etcd"].as_str().unwrap_or("?"),
    ));
    let leader = members["leader"]["id"].as_str();
    let empty = Vec::new();
    for o in members["orchestrators"].as_array().unwrap_or(&empty) {
        let id = o["id"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "  orchestrator {:<20} {:<10} admin {}{}\n",
            id,
            if Some(id) == leader {
                "leader"
            } else {
                "standby"
            },
            o["admin"].as_str().unwrap_or("-"),
            contact(o),
        ));
    }
    for r in members["routers"].as_array().unwrap_or(&empty) {
        let epochs: Vec<String> = r["epochs"]
            .as_object()
            .map(|m| m.iter().map(|(c, e)| format!("{c}@{e}")).collect())
            .unwrap_or_default();
        let holds: Vec<String> = r["holds"]
            .as_object()
            .map(|m| m.iter().map(|(c, e)| format!("{c}@{e}")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "  router       {:<20} {:<22} epochs {}{}{}\n",
            r["id"].as_str().unwrap_or("?"),
            r["addr"].as_str().unwrap_or("-"),
            epochs.join(","),
            if holds.is_empty() {
                String::new()
            } else {
                format!("  holding {}", holds.join(","))
            },
            contact(r),
        ));
    }
    out
}

/// `  seen Ns ago` from a member's `last_contact_s`, when known.
fn contact(member: &Value) -> String {
    member["last_contact_s"]
        .as_u64()
        .map_or(String::new(), |s| format!("  seen {s}s ago"))
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
               "flags": {"maintenance": true, "preferred": false, "ignored": false}},
              {"addr": "127.0.0.1:3", "role": "unknown", "state": "up", "lag_seconds": null,
               "io_running": null, "sql_running": null, "gtid_current_pos": "0-3-9",
               "flags": {"maintenance": false, "preferred": false, "ignored": false}}],
            "kept_out": ["127.0.0.1:3"]}]});
        let t = format_status(&v);
        let line = |addr: &str| t.lines().find(|l| l.contains(addr)).unwrap().to_owned();
        assert!(
            line("127.0.0.1:3").ends_with("[kept out: rebuild it]"),
            "{t}"
        );
        assert!(!line("127.0.0.1:2").contains("kept out"), "{t}");
        assert!(
            t.contains("cluster c1  leader 127.0.0.1:1  epoch 2  serving"),
            "{t}"
        );
        assert!(t.contains("127.0.0.1:2"), "{t}");
        assert!(t.contains("[maintenance]"), "{t}");
        assert!(t.contains("NO"), "{t}");
    }

    #[test]
    fn members_show_the_leader_standbys_and_routers_holding() {
        assert_eq!(format_members(&json!({"mode": "single"})), "");
        let v = json!({"mode": "etcd", "etcd": "ok",
            "this": {"name": "a", "role": "all", "leading": true},
            "leader": {"id": "a", "admin": "127.0.0.1:8080", "started_ms": 1},
            "orchestrators": [{"id": "a", "admin": "127.0.0.1:8080", "started_ms": 1},
                              {"id": "b", "started_ms": 2}],
            "routers": [{"id": "r1", "addr": "127.0.0.1:6033", "started_ms": 3,
                         "epochs": {"c1": 4}, "holds": {"c1": 4}, "last_contact_s": 1}]});
        let t = format_members(&v);
        assert!(
            t.starts_with("this process: a (all, leading)  etcd: ok"),
            "{t}"
        );
        let line = |id: &str| t.lines().find(|l| l.contains(id)).unwrap().to_owned();
        assert!(line("orchestrator a ").contains("leader"), "{t}");
        assert!(line("orchestrator b ").contains("standby"), "{t}");
        assert!(
            line("router       r1").ends_with("epochs c1@4  holding c1@4  seen 1s ago"),
            "{t}"
        );
    }
}

/// How the operator commands reach the admin API.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Admin API base URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "SWITCHYARD_ADMIN"
    )]
    pub admin: String,
    /// Admin API bearer token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// CA certificate (PEM) that an HTTPS admin API's certificate must chain to; without it
    /// the system's roots are used.
    #[arg(long, env = "SWITCHYARD_ADMIN_CA")]
    pub admin_ca: Option<std::path::PathBuf>,
}

/// The token is left out.
impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("admin", &self.admin)
            .field("admin_ca", &self.admin_ca)
            .finish_non_exhaustive()
    }
}

impl ApiArgs {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let client = ApiClient::new(&self.admin, &self.admin_token);
        match &self.admin_ca {
            Some(ca) => client.with_ca(ca),
            None => Ok(client),
        }
    }
}
