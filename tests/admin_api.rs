//! The admin API's contract: the OpenAPI document it serves describes exactly the routes it
//! serves, fetched and probed with a real HTTP client against a running switchyard.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestEnv;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A concrete URL path for a documented template.
fn concrete(template: &str, node: &str) -> String {
    template
        .replace("{name}", "c1")
        .replace("{cluster}", "c1")
        .replace("{addr}", node)
        .replace("{node}", node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_served_routes() {
    let env = TestEnv::start(1, 1).await;
    let http = common::http();
    let node = format!("127.0.0.1:{}", env.leader_port("c1"));

    // Served without a token, as JSON, OpenAPI 3.1.
    let r = http
        .get(env.admin_url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{m} {path} documents no responses"
                );
                documented.insert((m.to_uppercase(), path.clone(), op.get("security").is_some()));
            }
        }
    }

    // Every documented operation is served: without a token the protected ones answer 401
    // (the auth layer only runs on a matched route), the public ones answer for themselves;
    // never the fallback's 404 or a 405.
    for (method, path, secured) in &documented {
        let url = env.admin_url(&concrete(path, &node));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http.request(m, &url).send().await.unwrap();
        let status = r.status().as_u16();
        if *secured {
            assert_eq!(status, 401, "{method} {path} should need a token");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        } else {
            assert!(
                status == 200 || status == 503,
                "{method} {path} answered {status}"
            );
        }
    }

    // ...and nothing else is served on those paths: every other method is 405.
    for (path, item) in paths {
        for m in METHODS {
            if item.get(m).is_none() {
                let url = env.admin_url(&concrete(path, &node));
                let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                let r = http
                    .request(method, &url)
                    .bearer_auth("test-token")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 405, "{m} {path} is served but not documented");
            }
        }
    }

    // Routes are only declared through `routes!` (which documents them), and every endpoint
    // the README lists is documented, and the other way round.
    let admin_src = include_str!("../src/admin.rs");
    assert!(
        !admin_src.contains(".route("),
        "src/admin.rs adds a route outside `routes!`, which the document would miss"
    );
    let readme = include_str!("../README.md");
    let mut listed = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        for part in line.split('`').skip(1).step_by(2) {
            let mut words = part.split_whitespace();
            if let (Some(m), Some(p)) = (words.next(), words.next()) {
                if METHODS.contains(&m.to_lowercase().as_str()) && p.starts_with('/') {
                    listed.insert((m.to_string(), p.to_string()));
                }
            }
        }
    }
    let documented: BTreeSet<(String, String)> =
        documented.into_iter().map(|(m, p, _)| (m, p)).collect();
    assert!(
        !listed.is_empty(),
        "the README's endpoint table was not found"
    );
    let missing: Vec<_> = listed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "in the README but not documented: {missing:?}"
    );
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "documented but not in the README: {unlisted:?}"
    );

    // The generated document is the one `switchyard::admin::openapi()` builds.
    let built: Value =
        serde_json::from_str(&switchyard::admin::openapi().to_json().unwrap()).unwrap();
    assert_eq!(built, doc);
    env.stop().await;
}

/// One sample of a scrape: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition; checks each sample belongs to a declared family.
fn parse_exposition(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} declared twice"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = if value == "+Inf" {
            f64::INFINITY
        } else {
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"))
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').expect("closing brace");
                let labels = l
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(types.contains_key(&family), "{name} has no # TYPE");
        if types[&family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} should end in _total"
            );
        }
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(env: &TestEnv) -> (BTreeMap<String, String>, Vec<Sample>) {
    let r = reqwest::get(env.admin_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    parse_exposition(&r.text().await.unwrap())
}

/// Histograms: buckets cumulative and non-decreasing, `+Inf` equals `_count`.
fn check_histograms(types: &BTreeMap<String, String>, samples: &[Sample]) {
    for (family, kind) in types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket) {
            let mut key = s.labels.clone();
            let le = key.remove("le").expect("le label");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            series
                .entry(format!("{key:?}"))
                .or_default()
                .push((le, s.value));
        }
        assert!(!series.is_empty(), "{family} has no buckets");
        for (key, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{key}: buckets not cumulative: {buckets:?}"
            );
            let (last_le, inf) = *buckets.last().unwrap();
            assert!(last_le.is_infinite(), "{family}{key} has no +Inf bucket");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && format!("{:?}", s.labels) == key)
                .expect("_count")
                .value;
            assert_eq!(inf, count, "{family}{key}: +Inf bucket != count");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_and_a_switchover() {
    use mysql_async::prelude::*;
    let env = TestEnv::start(1, 1).await;
    let http = common::http();
    let old_leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);

    let mut conn = env.router_conn(None).await;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS m")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE IF NOT EXISTS m.t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for i in 0..20 {
        conn.exec_drop("INSERT INTO m.t VALUES (?, ?)", (i, i))
            .await
            .unwrap();
        let _: Option<i64> = conn
            .query_first(format!("SELECT v FROM m.t WHERE id = {i}"))
            .await
            .unwrap();
    }
    // Errors: relayed from the server (1146, 1064) and a refused login (1045).
    assert!(conn.query_drop("SELECT * FROM m.missing").await.is_err());
    assert!(conn.query_drop("SELEC 1").await.is_err());
    let bad =
        mysql_async::Conn::new(common::opts_for(env.router_port(), "app", "wrong", None)).await;
    assert!(bad.is_err());

    let (types, first) = scrape(&env).await;
    check_histograms(&types, &first);
    let get = |s: &[Sample], n: &str, l: &[(&str, &str)]| {
        value(s, n, l).unwrap_or_else(|| panic!("{n}{l:?} missing"))
    };
    assert!(
        get(
            &first,
            "switchyard_router_statements_total",
            &[("kind", "write")]
        ) >= 21.0
    );
    assert!(
        get(
            &first,
            "switchyard_router_statements_total",
            &[("kind", "read")]
        ) >= 20.0
    );
    assert!(
        get(
            &first,
            "switchyard_router_statements_total",
            &[("kind", "other")]
        ) >= 1.0
    );
    assert!(
        get(
            &first,
            "switchyard_router_routed_total",
            &[("cluster", "c1"), ("target", "leader")]
        ) >= 40.0
    );
    for code in ["1146", "1064", "1045"] {
        assert!(
            get(&first, "switchyard_router_errors_total", &[("code", code)]) >= 1.0,
            "error {code} not counted"
        );
    }
    assert!(
        get(
            &first,
            "switchyard_router_cluster_errors_total",
            &[("cluster", "c1")]
        ) >= 2.0,
        "1146 and 1064 came from c1's server"
    );
    assert!(get(&first, "switchyard_router_auth_failures_total", &[]) >= 1.0);
    // Per-cluster totals and rates in the API (sampled once a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let rates = loop {
        conn.query_drop("SELECT 1").await.unwrap();
        let v: serde_json::Value = common::http()
            .get(env.admin_url("/api/v1/router"))
            .bearer_auth("test-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c1 = v["clusters"]["c1"].clone();
        if c1["qps"].as_f64().is_some_and(|q| q > 0.0) {
            break c1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no per-cluster rate in time: {v}"
        );
        tokio::task::yield_now().await;
    };
    assert!(rates["statements"].as_u64().unwrap() >= 40, "{rates}");
    assert!(rates["errors"].as_u64().unwrap() >= 2, "{rates}");
    assert!(get(&first, "switchyard_router_connections_total", &[]) >= 2.0);
    assert!(get(&first, "switchyard_router_connections_active", &[]) >= 1.0);
    assert!(
        get(
            &first,
            "switchyard_router_statement_duration_seconds_count",
            &[("kind", "read")]
        ) >= 20.0
    );
    assert_eq!(
        get(&first, "switchyard_node_up", &[("node", &old_leader)]),
        1.0
    );
    assert_eq!(
        get(&first, "switchyard_node_leader", &[("node", &old_leader)]),
        1.0
    );
    assert_eq!(
        get(&first, "switchyard_node_leader", &[("node", &replica)]),
        0.0
    );
    assert_eq!(
        get(&first, "switchyard_switchovers_total", &[("cluster", "c1")]),
        0.0
    );
    assert!(value(&first, "switchyard_switchover_duration_seconds", &[]).is_none());
    let pooled = get(
        &first,
        "switchyard_pool_connections",
        &[("server", &old_leader), ("state", "idle")],
    ) + get(
        &first,
        "switchyard_pool_connections",
        &[("server", &old_leader), ("state", "busy")],
    );
    assert!(pooled >= 1.0, "no pooled connection to the leader");
    let epoch = get(&first, "switchyard_cluster_epoch", &[("cluster", "c1")]);

    // A switchover, waiting first for the replica to be seen caught up.
    common::eventually(
        std::time::Duration::from_secs(15),
        "replica lag 0",
        || async {
            let (_, s) = scrape(&env).await;
            (value(
                &s,
                "switchyard_node_replication_lag_seconds",
                &[("node", &replica)],
            ) == Some(0.0)
                && value(
                    &s,
                    "switchyard_node_gtid_lag_transactions",
                    &[("node", &replica)],
                ) == Some(0.0))
            .then_some(())
        },
    )
    .await;
    let r = http
        .post(env.admin_url("/api/v1/clusters/c1/switchover"))
        .bearer_auth("test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut fresh = env.router_conn(None).await;
    fresh
        .query_drop("INSERT INTO m.t VALUES (100, 100)")
        .await
        .unwrap();
    drop(fresh);

    let (types, second) = scrape(&env).await;
    check_histograms(&types, &second);
    assert_eq!(
        get(
            &second,
            "switchyard_switchovers_total",
            &[("cluster", "c1")]
        ),
        1.0
    );
    let d = get(
        &second,
        "switchyard_switchover_duration_seconds",
        &[("cluster", "c1")],
    );
    assert!(d > 0.0 && d < 60.0, "{d}");
    assert_eq!(
        get(&second, "switchyard_cluster_epoch", &[("cluster", "c1")]),
        epoch + 1.0
    );
    assert_eq!(
        get(&second, "switchyard_node_leader", &[("node", &replica)]),
        1.0
    );
    assert_eq!(
        get(&second, "switchyard_node_leader", &[("node", &old_leader)]),
        0.0
    );
    // Counters only grow.
    for s in &first {
        let kind = types
            .get(&s.name)
            .or_else(|| {
                types.get(
                    s.name
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .trim_end_matches("_sum"),
                )
            })
            .cloned()
            .unwrap_or_default();
        if kind == "counter" || kind == "histogram" {
            let later = second
                .iter()
                .find(|t| t.name == s.name && t.labels == s.labels)
                .unwrap_or_else(|| panic!("{} {:?} vanished", s.name, s.labels));
            assert!(
                later.value >= s.value,
                "{} {:?} went down",
                s.name,
                s.labels
            );
        }
    }
    assert!(
        get(
            &second,
            "switchyard_router_statements_total",
            &[("kind", "write")]
        ) > get(
            &first,
            "switchyard_router_statements_total",
            &[("kind", "write")]
        )
    );
    drop(conn);
    env.stop().await;
}
