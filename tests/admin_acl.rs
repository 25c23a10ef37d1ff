//! Users, roles and cluster scopes of the admin API: every endpoint called by every kind of
//! user (allowed and denied), the audit log of mutating calls, and no secret in any answer or
//! in the audit file.

mod common;

use argon2::password_hash::{PasswordHasher, SaltString};
use common::TestEnv;
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::acl::{AdminUser, Role};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const OPERATOR_C2: &str = "operator-c2-token-0123456789";
const BOSS_PASSWORD: &str = "boss-password-42";

/// How a request identifies itself.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    BadToken,
    BadPassword,
    Viewer,
    Operator,
    /// An operator scoped to cluster c2.
    OperatorC2,
    /// An admin by name and password (HTTP Basic).
    Boss,
    /// The single `admin.token` of old.
    Legacy,
}

impl Who {
    const ALL: [Who; 8] = [
        Who::Nobody,
        Who::BadToken,
        Who::BadPassword,
        Who::Viewer,
        Who::Operator,
        Who::OperatorC2,
        Who::Boss,
        Who::Legacy,
    ];

    fn role(self) -> Option<Role> {
        match self {
            Who::Nobody | Who::BadToken | Who::BadPassword => None,
            Who::Viewer => Some(Role::Viewer),
            Who::Operator | Who::OperatorC2 => Some(Role::Operator),
            Who::Boss | Who::Legacy => Some(Role::Admin),
        }
    }

    fn sees(self, cluster: &str) -> bool {
        !matches!(self, Who::OperatorC2) || cluster == "c2"
    }

    fn apply(self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Who::Nobody => r,
            Who::BadToken => r.bearer_auth("not-a-token-at-all"),
            Who::BadPassword => r.basic_auth("boss", Some("wrong")),
            Who::Viewer => r.bearer_auth(VIEWER),
            Who::Operator => r.bearer_auth(OPERATOR),
            Who::OperatorC2 => r.bearer_auth(OPERATOR_C2),
            Who::Boss => r.basic_auth("boss", Some(BOSS_PASSWORD)),
            Who::Legacy => r.bearer_auth("test-token"),
        }
    }
}

fn token_user(name: &str, role: Role, token: &str, clusters: Option<&[&str]>) -> AdminUser {
    AdminUser {
        name: name.into(),
        role,
        clusters: clusters.map(|cs| cs.iter().map(|c| c.to_string()).collect()),
        token: Some(router::Secret::new(token)),
        password_hash: None,
    }
}

/// An argon2id hash with small parameters, so that debug-build tests verify it quickly.
fn hash(password: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"switchyard-tests").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// (method, path, body, role needed, cluster the call is about)
type Endpoint = (Method, String, Option<Value>, Role, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_for_every_role() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_path = audit_dir.path().join("audit.jsonl");
    let boss_hash = hash(BOSS_PASSWORD);
    let env = {
        let (audit_path, boss_hash) = (audit_path.clone(), boss_hash.clone());
        TestEnv::start_with(2, 1, move |c| {
            c.admin.users = vec![
                token_user("vera", Role::Viewer, VIEWER, None),
                token_user("otto", Role::Operator, OPERATOR, None),
                token_user("olga", Role::Operator, OPERATOR_C2, Some(&["c2"])),
                AdminUser {
                    name: "boss".into(),
                    role: Role::Admin,
                    clusters: None,
                    token: None,
                    password_hash: Some(router::Secret::new(boss_hash)),
                },
            ];
            c.admin.audit_log = Some(audit_path);
        })
        .await
    };
    let http = common::http();
    let node = |cluster: &str| format!("127.0.0.1:{}", env.leader_port(cluster));

    let mut endpoints: Vec<Endpoint> = vec![
        (
            Method::GET,
            "/api/v1/clusters".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/router".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/shard-map".into(),
            None,
            Role::Viewer,
            None,
        ),
        (Method::GET, "/api/v1/audit".into(), None, Role::Admin, None),
        (
            Method::GET,
            "/api/v1/config".into(),
            None,
            Role::Admin,
            None,
        ),
        // An invalid map: refused after the ACL, so nothing changes.
        (
            Method::PUT,
            "/api/v1/shard-map".into(),
            Some(json!({"keyspaces": 1})),
            Role::Admin,
            None,
        ),
        (
            Method::GET,
            "/api/v1/shard-map/versions".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/shard-map/versions/1".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/shard-map/diff?from=1&to=1".into(),
            None,
            Role::Viewer,
            None,
        ),
        // A diff applies nothing, so a viewer may ask for one.
        (
            Method::POST,
            "/api/v1/shard-map/diff".into(),
            Some(json!({"keyspaces": 1})),
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/topology/version".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/sessions".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::GET,
            "/api/v1/haproxy/config".into(),
            None,
            Role::Viewer,
            None,
        ),
        (
            Method::POST,
            "/api/v1/config/validate".into(),
            Some(json!("[router]")),
            Role::Admin,
            None,
        ),
        // Not started from a file: refused (409) after the ACL, so nothing changes.
        (
            Method::POST,
            "/api/v1/config/reload".into(),
            None,
            Role::Admin,
            None,
        ),
    ];
    for c in ["c1", "c2"] {
        let base = format!("/api/v1/clusters/{c}");
        endpoints.extend([
            (Method::GET, base.clone(), None, Role::Viewer, Some(c)),
            (
                Method::GET,
                format!("{base}/events"),
                None,
                Role::Viewer,
                Some(c),
            ),
            // A target that is no node: refused after the ACL, so no switchover runs.
            (
                Method::POST,
                format!("{base}/switchover"),
                Some(json!({"to": "127.0.0.1:1"})),
                Role::Operator,
                Some(c),
            ),
            // The leader is alive: refused after the ACL.
            (
                Method::POST,
                format!("{base}/failover"),
                None,
                Role::Operator,
                Some(c),
            ),
            (
                Method::POST,
                format!("{base}/failover-limits/reset"),
                None,
                Role::Operator,
                Some(c),
            ),
            (
                Method::PUT,
                format!("{base}/nodes/{}/flags", node(c)),
                Some(json!({})),
                Role::Operator,
                Some(c),
            ),
        ]);
    }

    let mut bodies = Vec::new();
    let mut mutating_calls = 0;
    for who in Who::ALL {
        for (method, path, body, needed, cluster) in &endpoints {
            let mut r = who.apply(http.request(method.clone(), env.admin_url(path)));
            if let Some(b) = body {
                r = r.json(b);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            if *method != Method::GET {
                mutating_calls += 1;
            }
            let what = format!("{who:?} {method} {path}: {status} {text}");
            match who.role() {
                None => {
                    assert_eq!(status, 401, "{what}");
                    let v: Value = serde_json::from_str(&text).expect(&what);
                    assert!(v["error"].is_string(), "{what}");
                }
                Some(role) if role < *needed || cluster.is_some_and(|c| !who.sees(c)) => {
                    assert_eq!(status, 403, "{what}");
                    let v: Value = serde_json::from_str(&text).expect(&what);
                    assert!(v["error"].is_string(), "{what}");
                }
                Some(_) => {
                    assert!(status != 401 && status != 403, "{what}");
                    assert!(status < 500, "{what}");
                }
            }
            bodies.push(text);
        }
        // Public endpoints answer everyone.
        for path in ["/api/v1/health", "/api/v1/openapi.json", "/metrics"] {
            let r = who
                .apply(http.get(env.admin_url(path)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{who:?} GET {path}");
            bodies.push(r.text().await.unwrap());
        }
    }

    // A scoped user's cluster list holds its clusters only.
    let list: Value = Who::OperatorC2
        .apply(http.get(env.admin_url("/api/v1/clusters")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c2"]);

    // The audit log: every mutating call, allowed or denied, in the file and the API.
    let file = std::fs::read_to_string(&audit_path).unwrap();
    let entries: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), mutating_calls, "{file}");
    let has = |user: &str, method: &str, path: &str, status: u64| {
        entries.iter().any(|e| {
            e["user"] == user && e["method"] == method && e["path"] == path && e["status"] == status
        })
    };
    assert!(
        has(
            "otto",
            "POST",
            "/api/v1/clusters/c1/failover-limits/reset",
            200
        ),
        "{file}"
    );
    assert!(
        has("vera", "POST", "/api/v1/clusters/c1/switchover", 403),
        "{file}"
    );
    assert!(
        has(
            "olga",
            "POST",
            "/api/v1/clusters/c1/failover-limits/reset",
            403
        ),
        "{file}"
    );
    assert!(
        has(
            "olga",
            "POST",
            "/api/v1/clusters/c2/failover-limits/reset",
            200
        ),
        "{file}"
    );
    assert!(has("-", "PUT", "/api/v1/shard-map", 401), "{file}");
    assert!(has("boss", "PUT", "/api/v1/shard-map", 400), "{file}");
    assert!(entries.iter().all(|e| e["at_ms"].as_u64().unwrap() > 0));
    let api: Value = Who::Boss
        .apply(http.get(env.admin_url("/api/v1/audit")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["entries"].as_array().unwrap().len(), entries.len());

    // No secret anywhere: not in answers, not in the audit log.
    let secrets = [
        VIEWER,
        OPERATOR,
        OPERATOR_C2,
        BOSS_PASSWORD,
        boss_hash.as_str(),
        "test-token",
    ];
    for s in secrets {
        assert!(!file.contains(s), "the audit log shows a secret");
        for b in &bodies {
            assert!(!b.contains(s), "an answer shows a secret: {b}");
        }
    }
    env.stop().await;
}

#[test]
fn user_entries_are_validated() {
    let mut u = token_user("x", Role::Viewer, "short", Some(&["nope"]));
    let p = u.validate(&["c1"]);
    assert!(p.iter().any(|p| p.contains("shorter than 16")), "{p:?}");
    assert!(
        p.iter().any(|p| p.contains("unknown cluster `nope`")),
        "{p:?}"
    );
    u.password_hash = Some(router::Secret::new("plain"));
    let p = u.validate(&["c1"]);
    assert!(p.iter().any(|p| p.contains("not both")), "{p:?}");
    u.token = None;
    let p = u.validate(&["c1"]);
    assert!(p.iter().any(|p| p.contains("PHC")), "{p:?}");
}
