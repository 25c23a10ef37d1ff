//! The configuration file's include directory, encrypted passwords (`switchyard keygen` /
//! `encrypt`), and reload without a restart: through the API while clients run queries (no
//! client sees an error), and on SIGHUP to a `switchyard serve` process.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{free_port, Serve};
use common::{eventually, mariadb_cli, opts_for, run_program};
use mysql_async::prelude::Queryable;
use orchestrator::provision::{LocalClusters, ProvisionSpec};
use serde_json::Value;
use switchyard::{App, Config};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn local_cluster(dir: &Path) -> LocalClusters {
    let mut spec = ProvisionSpec::new(dir.join("data"));
    spec.clusters = 1;
    spec.replicas = 1;
    LocalClusters::start(spec)
        .await
        .expect("MariaDB must be installed: apt-get install -y mariadb-server mariadb-client")
}

/// Creates `user` with `password` on every server of the cluster (the router logs in to the
/// backends with its clients' credentials).
async fn create_backend_user(local: &LocalClusters, user: &str, password: &str) {
    let leader = local.clusters()[0].leader_node().unwrap().port;
    let mut c = mysql_async::Conn::new(opts_for(leader, "switchyard", "switchyard", None))
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'; \
         ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'; \
         GRANT ALL ON *.* TO '{user}'@'%'"
    ))
    .await
    .unwrap();
    c.disconnect().await.unwrap();
}

fn main_file(admin_listen: &str, router_listen: &str, extra: &str) -> String {
    format!(
        r#"
include_dir = "conf.d"
key_file = "switchyard.key"
[router]
listen = "{router_listen}"
[admin]
listen = "{admin_listen}"
token = "admin-token"
[orchestrator]
user = "switchyard"
password = "switchyard"
tick_ms = 200
{extra}
"#
    )
}

/// `switchyard keygen` then `switchyard encrypt`: the `enc:` value for `secret`.
fn encrypt(dir: &Path, secret: &str) -> String {
    let key = dir.join("switchyard.key");
    if !key.exists() {
        let (code, _, err) =
            run_program(BIN, &["keygen", "--key-file", key.to_str().unwrap()], None);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = run_program(
        BIN,
        &["encrypt", "--key-file", key.to_str().unwrap()],
        Some(secret),
    );
    assert_eq!(code, 0, "{err}");
    let value = out.trim().to_string();
    assert!(
        value.starts_with("enc:") && !value.contains(secret),
        "{value}"
    );
    value
}

/// conf.d/ with the cluster and the router users, one file each (as an operator lays it out).
fn write_includes(dir: &Path, local: &LocalClusters, users: &[(&str, String)]) {
    let conf = dir.join("conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    let c = &local.clusters()[0];
    let nodes: Vec<String> = c.nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
    std::fs::write(
        conf.join("c1.toml"),
        format!(
            "[[clusters]]\nname = \"c1\"\nnodes = [{}]\nleader = \"{}\"\n",
            nodes.join(", "),
            c.leader
        ),
    )
    .unwrap();
    let users: String = users
        .iter()
        .map(|(n, p)| format!("[[router.users]]\nname = \"{n}\"\npassword = \"{p}\"\n"))
        .collect();
    std::fs::write(conf.join("users.toml"), users).unwrap();
}

async fn api(app: &App, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let r = common::http()
        .request(method, format!("http://{}{path}", app.admin_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn login_code(port: u16, user: &str, password: &str) -> i32 {
    mariadb_cli(port, user, password, "SELECT 1").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_encrypted_passwords_and_reload_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let local = local_cluster(dir.path()).await;
    create_backend_user(&local, "carol", "carol-old").await;
    create_backend_user(&local, "bob", "bob-pw").await;

    let app_pw = encrypt(dir.path(), "app");
    let carol_pw = encrypt(dir.path(), "carol-old");
    write_includes(
        dir.path(),
        &local,
        &[("app", app_pw.clone()), ("carol", carol_pw)],
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, main_file("127.0.0.1:0", "127.0.0.1:0", "")).unwrap();

    // A wrong key is reported with where the value is, never the value.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::copy(&path, wrong.join("switchyard.toml")).unwrap();
    std::fs::create_dir(wrong.join("conf.d")).unwrap();
    for f in ["c1.toml", "users.toml"] {
        std::fs::copy(
            dir.path().join("conf.d").join(f),
            wrong.join("conf.d").join(f),
        )
        .unwrap();
    }
    let (code, _, err) = run_program(
        BIN,
        &[
            "keygen",
            "--key-file",
            wrong.join("switchyard.key").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_program(
        BIN,
        &[
            "config",
            "check",
            wrong.join("switchyard.toml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("router.users[0].password"), "{out}");
    assert!(out.contains("does not decrypt with this key"), "{out}");
    assert!(!out.contains(&app_pw), "{out}");

    let config = Config::load(&path).expect("valid with includes and encrypted passwords");
    assert_eq!(
        config.clusters.len(),
        1,
        "the cluster came from conf.d/c1.toml"
    );
    let app = App::start(config).await.expect("starts");
    assert!(app.wait_ready(Duration::from_secs(20)).await);
    let port = app.router_port();
    assert_eq!(
        login_code(port, "app", "app"),
        0,
        "decrypted password works"
    );
    assert_eq!(login_code(port, "carol", "carol-old"), 0);
    assert_ne!(
        login_code(port, "bob", "bob-pw"),
        0,
        "bob is not a user yet"
    );
    let (status, shown) = api(&app, reqwest::Method::GET, "/api/v1/config", "admin-token").await;
    assert_eq!(status, 200);
    let shown = shown.to_string();
    assert!(
        !shown.contains("carol-old") && !shown.contains("enc:"),
        "{shown}"
    );

    // Clients run queries through the whole reload.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, done) = (stop.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts_for(port, "carol", "carol-old", None))
                .await
                .expect("connects");
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.query_first::<i64, _>("SELECT 1 + 1").await {
                    Ok(Some(2)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            errors
        }));
    }
    let before = eventually(Duration::from_secs(10), "clients to run", || {
        let n = done.load(Ordering::Relaxed);
        async move { (n > 100).then_some(n) }
    })
    .await;

    // The new file: bob added, carol's password changed, a viewer with a token, manual
    // failover, and a listen change that needs a restart.
    create_backend_user(&local, "carol", "carol-new").await;
    write_includes(
        dir.path(),
        &local,
        &[
            ("app", app_pw.clone()),
            ("carol", encrypt(dir.path(), "carol-new")),
            ("bob", encrypt(dir.path(), "bob-pw")),
        ],
    );
    let extra = "[failover]\nfailover = \"manual\"\n\n[[admin.users]]\nname = \"watcher\"\nrole = \"viewer\"\ntoken = \"viewer-token-0123456789\"\n";
    std::fs::write(&path, main_file("127.0.0.1:0", "127.0.0.1:1", extra)).unwrap();
    // The viewer can't reload; the admin can.
    let (status, _) = api(
        &app,
        reqwest::Method::POST,
        "/api/v1/config/reload",
        "viewer-token-0123456789",
    )
    .await;
    assert_eq!(status, 401, "the viewer does not exist before the reload");
    let (status, report) = api(
        &app,
        reqwest::Method::POST,
        "/api/v1/config/reload",
        "admin-token",
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let list = |k: &str| -> Vec<String> {
        report[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list("users_changed"), vec!["bob", "carol"], "{report}");
    for k in ["router.users", "admin.users", "failover.failover"] {
        assert!(list("applied").contains(&k.to_string()), "{k}: {report}");
    }
    assert_eq!(list("restart_required"), vec!["router.listen"], "{report}");
    assert_eq!(report["generation"], 1);

    assert_eq!(
        login_code(port, "bob", "bob-pw"),
        0,
        "bob logs in after the reload"
    );
    assert_eq!(login_code(port, "carol", "carol-new"), 0);
    assert_ne!(
        login_code(port, "carol", "carol-old"),
        0,
        "the old password is refused"
    );
    assert_eq!(
        app.orchestrator.settings().failover,
        orchestrator::FailoverMode::Manual
    );
    let (status, _) = api(
        &app,
        reqwest::Method::GET,
        "/api/v1/clusters",
        "viewer-token-0123456789",
    )
    .await;
    assert_eq!(status, 200, "the new viewer's token works");
    let (status, _) = api(
        &app,
        reqwest::Method::POST,
        "/api/v1/config/reload",
        "viewer-token-0123456789",
    )
    .await;
    assert_eq!(status, 403, "a viewer may not reload");
    let (_, shown) = api(&app, reqwest::Method::GET, "/api/v1/config", "admin-token").await;
    assert_eq!(
        shown["router"]["listen"], "127.0.0.1:0",
        "the listen address is kept"
    );
    assert_eq!(shown["failover"]["failover"], "manual");

    // An invalid file changes nothing and lists every problem.
    std::fs::write(&path, "[router]\nlisten = 5\n").unwrap();
    let (status, body) = api(
        &app,
        reqwest::Method::POST,
        "/api/v1/config/reload",
        "admin-token",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["valid"], false);
    assert_eq!(login_code(port, "bob", "bob-pw"), 0, "still in force");

    // The clients kept going, without one error.
    eventually(Duration::from_secs(10), "clients to keep running", || {
        let n = done.load(Ordering::Relaxed);
        async move { (n > before + 100).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let errors = c.await.unwrap();
        assert!(errors.is_empty(), "client errors during reload: {errors:?}");
    }

    // Validation without applying.
    let r = common::http()
        .post(format!("http://{}/api/v1/config/validate", app.admin_addr))
        .bearer_auth("admin-token")
        .body("[router]\nusers = []\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let check: Value = r.json().await.unwrap();
    assert_eq!(check["valid"], false, "{check}");
    assert!(!check["problems"].as_array().unwrap().is_empty());

    app.shutdown().await;
    local.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_served_file() {
    let dir = tempfile::tempdir().unwrap();
    let local = local_cluster(dir.path()).await;
    create_backend_user(&local, "dave", "dave-pw").await;
    write_includes(dir.path(), &local, &[("app", encrypt(dir.path(), "app"))]);
    let (router_port, admin_port) = (free_port(), free_port());
    let path = dir.path().join("switchyard.toml");
    let file = main_file(
        &format!("127.0.0.1:{admin_port}"),
        &format!("127.0.0.1:{router_port}"),
        "",
    );
    std::fs::write(&path, &file).unwrap();
    let mut serve = Serve::start(&path, None);
    let http = common::http();
    eventually(
        Duration::from_secs(30),
        "switchyard serve to be ready",
        || {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://127.0.0.1:{admin_port}/api/v1/health"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;
    assert_eq!(login_code(router_port, "app", "app"), 0);
    assert_ne!(login_code(router_port, "dave", "dave-pw"), 0);

    write_includes(
        dir.path(),
        &local,
        &[
            ("app", encrypt(dir.path(), "app")),
            ("dave", encrypt(dir.path(), "dave-pw")),
        ],
    );
    serve.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "dave to be let in after SIGHUP",
        || async move { (login_code(router_port, "dave", "dave-pw") == 0).then_some(()) },
    )
    .await;
    let (status, body) = {
        let r = http
            .get(format!("http://127.0.0.1:{admin_port}/api/v1/config"))
            .bearer_auth("admin-token")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(
        body["router"]["users"].as_array().unwrap().len(),
        2,
        "{body}"
    );

    // The CLI asks for the same reload through the API.
    let out = Command::new(BIN)
        .args(["config", "reload", "--admin"])
        .arg(format!("http://127.0.0.1:{admin_port}"))
        .env("SWITCHYARD_ADMIN_TOKEN", "admin-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded (generation 2)"), "{stdout}");
    assert!(
        stdout.contains("users changed:    -"),
        "nothing changed since: {stdout}"
    );
    drop(serve);
    local.stop().await.unwrap();
}
