//! The orchestrator through its operator surfaces: the admin API (every endpoint, its errors)
//! and the `switchyard status` / `switchover` commands against a running switchyard.

mod common;

use std::time::Duration;

use common::{eventually, run_program, TestEnv};
use serde_json::{json, Value};

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http
        .get(url)
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth("test-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_drives_the_orchestrator() {
    let env = TestEnv::start(1, 2).await;
    let http = common::http();
    let leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replicas: Vec<String> = env
        .replica_ports("c1")
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();

    // Wait for the replicas to be seen replicating before asking for a switchover.
    eventually(
        Duration::from_secs(15),
        "replicas up and caught up",
        || async {
            let (_, c) = get(&http, env.admin_url("/api/v1/clusters/c1")).await;
            let ok = c["nodes"].as_array()?.iter().all(|n| {
                n["addr"] == leader.as_str() || (n["io_running"] == true && n["lag_seconds"] == 0)
            });
            ok.then_some(())
        },
    )
    .await;

    // Flags: set, reflected in the topology; a bad body is refused.
    let url = env.admin_url(&format!("/api/v1/clusters/c1/nodes/{}/flags", replicas[0]));
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .json(&json!({"maintenance": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, c) = get(&http, env.admin_url("/api/v1/clusters/c1")).await;
    let flagged = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == replicas[0].as_str())
        .unwrap()
        .clone();
    assert_eq!(flagged["flags"]["maintenance"], true, "{flagged}");
    let r = http
        .put(&url)
        .bearer_auth("test-token")
        .json(&json!({"colour": "red"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = http
        .put(env.admin_url("/api/v1/clusters/c1/nodes/127.0.0.1:1/flags"))
        .bearer_auth("test-token")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A switchover may not promote the node under maintenance; it picks the other replica.
    let (status, report) = post(
        &http,
        env.admin_url("/api/v1/clusters/c1/switchover"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["new_leader"], replicas[1].as_str(), "{report}");
    assert_eq!(report["old_leader"], leader.as_str());
    assert!(report["steps"].as_array().unwrap().len() >= 5, "{report}");

    // Asking for the node under maintenance explicitly is refused with a reason.
    let (status, body) = post(
        &http,
        env.admin_url("/api/v1/clusters/c1/switchover"),
        json!({"to": replicas[0]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("refused"),
        "{body}"
    );

    // Failover of a cluster whose leader is alive is refused.
    let (status, body) = post(
        &http,
        env.admin_url("/api/v1/clusters/c1/failover"),
        json!({}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Unknown cluster: 404 everywhere.
    for path in ["switchover", "failover", "failover-limits/reset"] {
        let (status, _) = post(
            &http,
            env.admin_url(&format!("/api/v1/clusters/c9/{path}")),
            json!({}),
        )
        .await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = get(&http, env.admin_url("/api/v1/clusters/c9/events")).await;
    assert_eq!(status, 404);

    let (status, _) = post(
        &http,
        env.admin_url("/api/v1/clusters/c1/failover-limits/reset"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);

    // Events list the switchover's steps.
    let (status, events) = get(&http, env.admin_url("/api/v1/clusters/c1/events")).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.iter().any(|k| k.starts_with("switchover")),
        "{kinds:?}"
    );

    // Without the token: 401.
    let r = http
        .post(env.admin_url("/api/v1/clusters/c1/switchover"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_switchover_commands_talk_to_the_api() {
    let env = TestEnv::start(1, 1).await;
    let admin = format!("http://{}", env.app().admin_addr);
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);
    let (code, out, err) = run_program(
        bin,
        &["status", "--admin", &admin, "--admin-token", "test-token"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("cluster c1  leader {leader}  epoch 1")),
        "{out}"
    );
    assert!(out.contains(&replica), "{out}");
    let (code, out, _) = run_program(
        bin,
        &[
            "status",
            "--json",
            "--admin",
            &admin,
            "--admin-token",
            "test-token",
        ],
        None,
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clusters"][0]["leader"], leader.as_str());

    // Wrong token: a clear error and a non-zero exit.
    let (code, _, err) = run_program(
        bin,
        &["status", "--admin", &admin, "--admin-token", "nope"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("401"), "{err}");

    eventually(
        Duration::from_secs(15),
        "the replica is caught up",
        || async {
            let t = env.app().topology.load();
            let n = t.cluster("c1")?.node(&replica)?.clone();
            (n.io_running == Some(true) && n.lag_seconds == Some(0)).then_some(())
        },
    )
    .await;
    let (code, out, err) = run_program(
        bin,
        &[
            "switchover",
            "c1",
            "--to",
            &replica,
            "--admin",
            &admin,
            "--admin-token",
            "test-token",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("c1: {leader} -> {replica} (epoch 2)")),
        "{out}"
    );
    let t = env.app().topology.load();
    assert_eq!(
        t.cluster("c1").unwrap().leader.as_deref(),
        Some(replica.as_str())
    );
    env.stop().await;
}
