//! The operator commands as a user runs them: the real `switchyard` binary against a running
//! switchyard (`maintenance`, `shard-map get|put|diff`, `switchover` with its progress), and
//! the local ones (`config check`, `hash-password`, help with examples).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, run_program, TestEnv};
use serde_json::Value;

use common::{switchyard_cli as sy, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_against_a_running_switchyard() {
    let env = TestEnv::start(2, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);
    let leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let flag = |env: &TestEnv| {
        let t = env.app().topology.load();
        t.cluster("c1").unwrap().node(&replica).unwrap().flags
    };

    // maintenance on/off, keeping the node's other flags.
    let r = env.app().orchestrator.set_node_flags(
        "c1",
        &replica,
        shard_map::NodeFlags {
            preferred: true,
            ..Default::default()
        },
    );
    r.unwrap();
    let (code, out, err) = sy(&env, &["maintenance", "c1", &replica, "on"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("c1 {replica}: maintenance on"));
    assert!(flag(&env).maintenance && flag(&env).preferred);
    let (code, out, err) = sy(&env, &["maintenance", "c1", &replica, "off"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!flag(&env).maintenance && flag(&env).preferred);
    let (code, _, err) = sy(&env, &["maintenance", "c1", "127.0.0.1:1", "on"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("has no node 127.0.0.1:1"), "{err}");
    let (code, _, err) = sy(&env, &["maintenance", "c1", &replica, "maybe"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("invalid value"), "{err}");

    // shard-map get, diff (none, then some), put, get again.
    let (code, out, err) = sy(&env, &["shard-map", "get"]).await;
    assert_eq!(code, 0, "{err}");
    let mut map: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(map["version"], 1);
    map.as_object_mut().unwrap().remove("version");
    let same = dir.path().join("same.json");
    std::fs::write(&same, map.to_string()).unwrap();
    let (code, out, err) = sy(&env, &["shard-map", "diff", same.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "no changes");

    map["keyspaces"] = serde_json::json!([{"name": "app", "default_cluster": "c1",
        "shards": [{"name": "-80", "cluster": "c1"}, {"name": "80-", "cluster": "c2"}],
        "tables": [{"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"}]}]);
    let new = dir.path().join("new.json");
    std::fs::write(&new, map.to_string()).unwrap();
    let (code, diff, err) = sy(&env, &["shard-map", "diff", new.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.contains("app"), "{diff}");
    let (_, out, _) = sy(&env, &["shard-map", "get"]).await;
    assert!(
        out.contains("\"version\": 1"),
        "diff changed nothing: {out}"
    );
    let (code, out, err) = sy(&env, &["shard-map", "put", new.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("shard map version 2 applied"), "{out}");
    for line in diff.lines() {
        assert!(
            out.contains(line),
            "put should list the change {line:?}: {out}"
        );
    }
    let (_, out, _) = sy(&env, &["shard-map", "get"]).await;
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["version"], 2);
    assert_eq!(got["keyspaces"][0]["name"], "app");
    // An invalid map is refused with its problems, and nothing changes.
    map["keyspaces"][0]["shards"][1]["cluster"] = "c9".into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, map.to_string()).unwrap();
    let (code, _, err) = sy(&env, &["shard-map", "put", bad.to_str().unwrap()]).await;
    assert_ne!(code, 0);
    assert!(err.contains("400") && err.contains("c9"), "{err}");

    // switchover: the steps are printed as they happen, each once, then the outcome.
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
    let admin = format!("http://{}", env.app().admin_addr);
    let lines = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["switchover", "c1", "--admin", &admin])
            .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
        assert!(child.wait().unwrap().success(), "{lines:?}");
        lines
    })
    .await
    .unwrap();
    assert_eq!(lines[0], "switchover of c1 ...");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("c1: {leader} -> {replica} (epoch 2) in ")),
        "{lines:?}"
    );
    let events: Value = common::http()
        .get(env.admin_url("/api/v1/clusters/c1/events"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("switchover."))
        .collect();
    assert!(steps.len() >= 5, "{steps:?}");
    let printed: Vec<&String> = lines[1..lines.len() - 1].iter().collect();
    let mut at = 0;
    for s in &steps {
        let msg = s["message"].as_str().unwrap();
        let pos = printed[at..]
            .iter()
            .position(|l| l.contains(s["kind"].as_str().unwrap()) && l.ends_with(msg))
            .unwrap_or_else(|| panic!("step {s} not printed in order: {printed:?}"));
        at += pos + 1;
    }
    // Each printed once: as many step lines as events.
    assert!(printed.iter().all(|l| l.starts_with("  [")), "{printed:?}");

    // Errors reach the user with their status and reason, and a non-zero exit.
    let (code, _, err) = sy(&env, &["switchover", "c9"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
    env.stop().await;
}

#[test]
fn config_check_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_program(BIN, &["config", "check", "config/serve.toml"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"), "{out}");

    let good = std::fs::read_to_string("config/serve.toml").unwrap();
    let bad = good
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"")
        .replace("tick_ms = 500", "tick_ms = 0")
        + "\n[[clusters]]\nname = \"c1\"\nnodes = [\"not-an-address\"]\n";
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let (code, out, _) = run_program(BIN, &["config", "check", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    for problem in [
        "admin.listen `nowhere` is not host:port",
        "orchestrator.tick_ms must be at least 1",
        "clusters: `c1` is defined twice",
        "node `not-an-address` is not host:port",
    ] {
        assert!(out.contains(problem), "missing {problem:?} in:\n{out}");
    }
    assert!(
        out.contains("4 problem(s)") || out.contains("problem(s)"),
        "{out}"
    );

    let path = dir.path().join("syntax.toml");
    std::fs::write(&path, "[router\n").unwrap();
    let (code, out, _) = run_program(BIN, &["config", "check", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    let (code, _, _) = run_program(BIN, &["config", "check", "/nonexistent.toml"], None);
    assert_eq!(code, 1);
}

#[test]
fn hash_password_makes_a_usable_argon2_hash() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let (code, out, err) = run_program(BIN, &["hash-password"], Some("s3cret\n"));
    assert_eq!(code, 0, "{err}");
    let hash = out.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let parsed = PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(b"s3cret", &parsed)
        .is_ok());
    assert!(!out.contains("s3cret"));
}

#[test]
fn help_has_examples() {
    let (_, out, _) = run_program(BIN, &["--help"], None);
    assert!(out.contains("Examples:"), "{out}");
    for cmd in ["maintenance", "switchover", "status"] {
        let (_, out, _) = run_program(BIN, &[cmd, "--help"], None);
        assert!(out.contains("Example: "), "{cmd}: {out}");
    }
    for sub in [
        ["shard-map", "put"],
        ["shard-map", "diff"],
        ["config", "check"],
    ] {
        let (_, out, _) = run_program(BIN, &[sub[0], sub[1], "--help"], None);
        assert!(out.contains("Example: switchyard"), "{sub:?}: {out}");
    }
}
