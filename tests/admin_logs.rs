//! Secrets stay out of the logs: `switchyard serve` at debug level, driven through the admin
//! API with good and bad tokens and passwords, never prints a token, password or hash.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use orchestrator::provision::{LocalClusters, ProvisionSpec};

const TOKEN: &str = "file-admin-token-9d81f0";
const VIEWER: &str = "viewer-token-5b7e21aa90";
const PASSWORD: &str = "op-password-c4e2";
const MISTYPED: &str = "op-password-c4e3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ProvisionSpec::new(dir.path().join("data"));
    spec.clusters = 1;
    spec.replicas = 0;
    let local = LocalClusters::start(spec).await.expect("MariaDB starts");
    let leader = local.clusters()[0].leader.clone();
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            PASSWORD.as_bytes(),
            &SaltString::encode_b64(b"log-test-salt").unwrap(),
        )
        .unwrap()
        .to_string();
    let audit = dir.path().join("audit.jsonl");
    let text = format!(
        r#"
        [router]
        listen = "127.0.0.1:0"
        users = [{{ name = "app", password = "app" }}]
        [admin]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"
        audit_log = "{audit}"
        [[admin.users]]
        name = "vera"
        role = "viewer"
        token = "{VIEWER}"
        [[admin.users]]
        name = "otto"
        role = "operator"
        password_hash = "{hash}"
        [orchestrator]
        user = "switchyard"
        password = "switchyard"
        [[clusters]]
        name = "c1"
        nodes = ["{leader}"]
        leader = "{leader}"
        "#,
        audit = audit.display()
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let log_path = dir.path().join("log.txt");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // Drained by a thread, so that the child never blocks on a full pipe.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let admin = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("serve printed no admin address: {printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.trim().strip_prefix("admin: http://") {
            break rest.trim_end_matches("/api/v1/clusters").to_string();
        }
    };
    let url = |p: &str| format!("http://{admin}{p}");
    let http = common::http();
    common::eventually(Duration::from_secs(20), "ready", || async {
        let r = http.get(url("/api/v1/health")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let calls = [
        http.get(url("/api/v1/clusters")).bearer_auth(TOKEN),
        http.get(url("/api/v1/config")).bearer_auth(TOKEN),
        http.get(url("/api/v1/clusters")).bearer_auth(VIEWER),
        http.post(url("/api/v1/clusters/c1/failover-limits/reset"))
            .bearer_auth(VIEWER),
        http.post(url("/api/v1/clusters/c1/failover-limits/reset"))
            .basic_auth("otto", Some(PASSWORD)),
        http.post(url("/api/v1/clusters/c1/failover-limits/reset"))
            .basic_auth("otto", Some(MISTYPED)),
        http.put(url("/api/v1/shard-map"))
            .basic_auth("otto", Some(PASSWORD))
            .body("{}"),
    ];
    let mut answers = String::new();
    for c in calls {
        let r = c.send().await.unwrap();
        answers.push_str(&r.text().await.unwrap());
    }
    assert!(
        answers.contains("\"***\""),
        "the config shows secrets as ***: {answers}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    for line in lines.try_iter() {
        printed.push_str(&line);
        printed.push('\n');
    }
    // The log lines go to stdout (tracing's default), anything else to stderr.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        printed.contains("DEBUG") && printed.contains("orchestrator event"),
        "no logs captured: {printed}"
    );
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(audit.lines().count(), 4, "{audit}");
    for secret in [TOKEN, VIEWER, PASSWORD, MISTYPED, hash.as_str()] {
        for (what, text) in [
            ("logs", &logs),
            ("stdout", &printed),
            ("answers", &answers),
            ("audit", &audit),
        ] {
            assert!(!text.contains(secret), "a secret in the {what}");
        }
    }
    local.stop().await.unwrap();
}
