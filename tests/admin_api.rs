//! The admin API's contract: the OpenAPI document it serves describes exactly the routes it
//! serves, fetched and probed with a real HTTP client against a running switchyard.

mod common;

use std::collections::BTreeSet;

use common::TestEnv;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A concrete URL path for a documented template.
fn concrete(template: &str, node: &str) -> String {
    template.replace("{name}", "c1").replace("{addr}", node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_served_routes() {
    let env = TestEnv::start(1, 1).await;
    let http = reqwest::Client::new();
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
                if METHODS.contains(&m.to_lowercase().as_str()) && p.starts_with("/api/v1/") {
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
