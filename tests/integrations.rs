//! Routing layers and service discovery following a switchover: the real `haproxy` updated
//! through its runtime API; Consul, webhooks and MaxScale against a recording HTTP fake;
//! ProxySQL against a recording MySQL-protocol fake of its admin interface; a script.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use common::process::{free_port, haproxy, write_through};
use common::{eventually, run_program, TestEnv};
use mysql_async::prelude::*;
use switchyard::integrations::haproxy::runtime_command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The admin-state bits of a server in maintenance (forced from the CLI, or inherited);
/// `disabled` in the configuration adds 0x04, which stays set, as a mark of origin, once the
/// server is made ready.
const MAINT: u32 = 0x01 | 0x02;

/// `show servers state BACKEND` as `(server name, operational state, admin state)`.
async fn servers_state(socket: &str, backend: &str) -> Vec<(String, u32, u32)> {
    let out = runtime_command(
        socket,
        &format!("show servers state {backend}"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_or_default();
    out.lines()
        .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 7)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f[3].to_owned(), f[5].parse().ok()?, f[6].parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_a_switchover_through_its_runtime_api() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock").display().to_string();
    let write_port = free_port();
    let read_port = free_port();
    let haproxy_toml = format!(
        r#"runtime_api = "{socket}"
           frontends = [{{ cluster = "c1", write = "127.0.0.1:{write_port}", read = "127.0.0.1:{read_port}" }}]
           retry = {{ attempts = 3, backoff_ms = 100 }}"#
    );
    let env = TestEnv::start_with(1, 1, |c| {
        c.integrations.haproxy = Some(toml::from_str(&haproxy_toml).expect("haproxy section"));
        c.integrations.resync_ms = 300;
    })
    .await;
    let leader = env.leader_port("c1");
    let replica = env.replica_ports("c1")[0];
    let mut direct = env.direct_conn(leader, None).await;
    direct
        .query_drop("CREATE DATABASE IF NOT EXISTS itg")
        .await
        .unwrap();
    direct
        .query_drop("CREATE TABLE IF NOT EXISTS itg.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    drop(direct);

    // The configuration comes from the API, for the live topology.
    let http = common::http();
    let r = http
        .get(env.admin_url("/api/v1/haproxy/config"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cfg = r.text().await.unwrap();
    assert!(
        cfg.contains(&format!("stats socket {socket} mode 600 level admin")),
        "{cfg}"
    );
    assert!(cfg.contains(&format!(
        "server s_127.0.0.1_{replica} 127.0.0.1:{replica} check inter 1s rise 1 fall 2 \
         on-marked-down shutdown-sessions disabled"
    )));
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, &cfg).unwrap();
    let check = Command::new("/usr/sbin/haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy runs (scripts/install-deps installs it: apt-get install -y haproxy)");
    assert!(
        check.status.success(),
        "haproxy rejects the generated configuration: {}{}\n{cfg}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _haproxy = haproxy(&path);
    eventually(
        Duration::from_secs(10),
        "the runtime API answers",
        || async {
            runtime_command(&socket, "show info", Duration::from_secs(1))
                .await
                .ok()
                .filter(|s| s.contains("Name: HAProxy"))
        },
    )
    .await;

    let served = eventually(
        Duration::from_secs(15),
        "a write through HAProxy",
        || async { write_through(write_port, "itg.t", 1).await },
    )
    .await;
    assert_eq!(
        served,
        i64::from(leader),
        "HAProxy sent the write elsewhere"
    );
    let r = http
        .post(env.admin_url("/api/v1/clusters/c1/switchover"))
        .bearer_auth("test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let served = eventually(
        Duration::from_secs(20),
        "a write through HAProxy lands on the new leader",
        || async {
            write_through(write_port, "itg.t", 2)
                .await
                .filter(|p| *p == i64::from(replica))
        },
    )
    .await;
    assert_eq!(served, i64::from(replica));
    for i in 0..5 {
        assert_eq!(
            write_through(write_port, "itg.t", 10 + i).await,
            Some(i64::from(replica)),
            "a later write went elsewhere"
        );
    }
    // The runtime state says the same: in the write backend only the new leader is out of
    // maintenance; the read backend serves the old leader, now a replica.
    let new_leader = format!("s_127.0.0.1_{replica}");
    let old_leader = format!("s_127.0.0.1_{leader}");
    let write_state = eventually(
        Duration::from_secs(15),
        "show servers state c1_write",
        || async {
            let s = servers_state(&socket, "c1_write").await;
            let ready = |name: &str| {
                s.iter()
                    .any(|(n, _, admin)| n == name && admin & MAINT == 0)
            };
            (ready(&new_leader) && !ready(&old_leader)).then_some(s)
        },
    )
    .await;
    assert_eq!(write_state.len(), 2, "{write_state:?}");
    eventually(
        Duration::from_secs(20),
        "the old leader serves reads through HAProxy",
        || async {
            let s = servers_state(&socket, "c1_read").await;
            let ready = |name: &str| {
                s.iter()
                    .any(|(n, _, admin)| n == name && admin & MAINT == 0)
            };
            (ready(&old_leader) && !ready(&new_leader)).then_some(())
        },
    )
    .await;
    // State HAProxy loses (a restart, an operator's command) is put back by the periodic
    // reassertion, without a topology change.
    let answer = runtime_command(
        &socket,
        &format!("set server c1_write/{new_leader} state maint"),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(answer.trim(), "", "{answer}");
    eventually(
        Duration::from_secs(15),
        "the new leader enabled again",
        || async {
            let s = servers_state(&socket, "c1_write").await;
            s.iter()
                .any(|(n, _, admin)| *n == new_leader && admin & MAINT == 0)
                .then_some(())
        },
    )
    .await;
    let metrics = env.metrics().await;
    assert!(
        metrics
            .contains("switchyard_integration_pushes_total{integration=\"haproxy\",result=\"ok\"}"),
        "{metrics}"
    );
    env.stop().await;
}

#[test]
fn haproxy_config_command_prints_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    let mut text = std::fs::read_to_string("config/serve.toml").unwrap();
    text.push_str(
        "\n[integrations.haproxy]\nruntime_api = \"127.0.0.1:9999\"\n\
         frontends = [{ cluster = \"c1\", write = \"127.0.0.1:13306\" }]\n\
         check_user = \"haproxy_check\"\n",
    );
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = run_program(
        env!("CARGO_BIN_EXE_switchyard"),
        &["haproxy-config", "--config", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("option mysql-check user haproxy_check post-41"),
        "{out}"
    );
    assert!(
        out.contains("stats socket ipv4@127.0.0.1:9999 level admin"),
        "{out}"
    );
    // c1 names its leader: only that server takes writes. c2 does not: none until
    // switchyard knows it.
    let write = |c: &str| {
        out.split(&format!("\nbackend {c}_write\n"))
            .nth(1)
            .and_then(|b| b.split("\n\n").next())
            .unwrap_or_default()
            .to_owned()
    };
    let c1 = write("c1");
    assert_eq!(
        c1.lines()
            .filter(|l| l.contains(" server ") && !l.contains("disabled"))
            .count(),
        1,
        "{c1}"
    );
    assert!(
        c1.lines()
            .any(|l| l.contains("127.0.0.1:3310 check") && !l.contains("disabled")),
        "{c1}"
    );
    let c2 = write("c2");
    assert_eq!(
        c2.lines().filter(|l| l.contains("disabled")).count(),
        3,
        "{c2}"
    );
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &out).unwrap();
    let (code, o, e) = run_program(
        "/usr/sbin/haproxy",
        &["-c", "-f", cfg.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "haproxy rejects it: {o}{e}\n{out}");

    // Without the section: a clear error.
    std::fs::write(&file, std::fs::read_to_string("config/serve.toml").unwrap()).unwrap();
    let (code, _, err) = run_program(
        env!("CARGO_BIN_EXE_switchyard"),
        &["haproxy-config", "--config", file.to_str().unwrap()],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("no [integrations.haproxy] section"), "{err}");
    let (_, help, _) = run_program(
        env!("CARGO_BIN_EXE_switchyard"),
        &["haproxy-config", "--help"],
        None,
    );
    assert!(
        help.contains("Example: switchyard haproxy-config"),
        "{help}"
    );
}

/// One recorded HTTP call.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    status: u16,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Call {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A recording HTTP server: every call is kept; the first `consul_failures` calls under
/// `/consul/` get a 500.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    consul_failures: Arc<AtomicUsize>,
}

impl Fake {
    fn calls(&self, prefix: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn record(State(fake): State<Fake>, req: Request) -> (StatusCode, &'static str) {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let failing = path.starts_with("/consul/")
        && fake
            .consul_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    fake.calls.lock().unwrap().push(Call {
        method: parts.method.to_string(),
        path,
        status: if failing { 500 } else { 200 },
        headers: parts.headers,
        body: body.to_vec(),
    });
    if failing {
        (StatusCode::INTERNAL_SERVER_ERROR, "try again")
    } else {
        (StatusCode::OK, "true")
    }
}

async fn start_fake_http(fake: Fake) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(record).with_state(fake);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// What the fake ProxySQL admin saw: the user of each login and every statement.
#[derive(Clone, Default)]
struct AdminLog {
    users: Arc<Mutex<Vec<String>>>,
    statements: Arc<Mutex<Vec<String>>>,
}

async fn write_packet(s: &mut tokio::net::TcpStream, seq: u8, payload: &[u8]) {
    let len = payload.len() as u32;
    let mut buf = len.to_le_bytes()[..3].to_vec();
    buf.push(seq);
    buf.extend_from_slice(payload);
    let _ = s.write_all(&buf).await;
}

async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], payload))
}

const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

/// A MySQL-protocol server that accepts any login and answers OK to every statement,
/// recording them: enough of ProxySQL's admin interface for switchyard's client.
async fn fake_proxysql_admin(listener: TcpListener, log: AdminLog) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let caps: u32 = 0x0001 | 0x0200 | 0x2000 | 0x8000 | 0x1_0000 | 0x2_0000 | 0x8_0000;
            let mut g = vec![10u8];
            g.extend_from_slice(b"5.5.30 (ProxySQL Admin Module)\0");
            g.extend_from_slice(&7u32.to_le_bytes());
            g.extend_from_slice(b"abcdefgh\0");
            g.extend_from_slice(&(caps as u16).to_le_bytes());
            g.push(33);
            g.extend_from_slice(&2u16.to_le_bytes());
            g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
            g.push(21);
            g.extend_from_slice(&[0; 10]);
            g.extend_from_slice(b"ijklmnopqrst\0");
            g.extend_from_slice(b"mysql_native_password\0");
            write_packet(&mut s, 0, &g).await;
            let Some((seq, hello)) = read_packet(&mut s).await else {
                return;
            };
            let user: Vec<u8> = hello
                .get(32..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| **b != 0)
                .copied()
                .collect();
            log.users
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&user).into_owned());
            write_packet(&mut s, seq + 1, OK).await;
            while let Some((_, p)) = read_packet(&mut s).await {
                match <[u8]>::first(&p) {
                    Some(0x01) => return,
                    Some(0x03) => log
                        .statements
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&p[1..]).into_owned()),
                    _ => {}
                }
                write_packet(&mut s, 1, OK).await;
            }
        });
    }
}

/// The HMAC-SHA256 signature header value of `body` under `key`, computed here on its own.
fn expected_signature(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_proxies_follow_a_switchover() {
    let fake = Fake::default();
    fake.consul_failures.store(3, Ordering::SeqCst);
    let (url, _http) = start_fake_http(fake.clone()).await;
    let admin_log = AdminLog::default();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let _admin = tokio::spawn(fake_proxysql_admin(admin, admin_log.clone()));
    let dir = tempfile::tempdir().unwrap();
    let script_out = dir.path().join("script.out");
    let script = dir.path().join("on-change.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", script_out.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let mut node_order = Vec::new();
    let env = TestEnv::start_with(1, 1, |c| {
        let nodes = &c.clusters[0].nodes;
        node_order = nodes.clone();
        let toml = format!(
            r#"
            resync_ms = 300
            [consul]
            url = "{url}/consul"
            token = "consul-secret"
            retry = {{ attempts = 6, backoff_ms = 50 }}
            [[webhooks]]
            url = "{url}/hook"
            bearer_token = "hook-token"
            hmac_secret = "hook-key"
            [[webhooks]]
            url = "http://127.0.0.1:{closed}/nobody-listens"
            retry = {{ attempts = 2, backoff_ms = 10, timeout_ms = 500 }}
            [proxysql]
            admin = "{admin_addr}"
            user = "radmin"
            password = "radmin-pw"
            hostgroups = [{{ cluster = "c1", writer = 10, reader = 20 }}]
            [maxscale]
            url = "{url}/maxscale"
            user = "admin"
            password = "mariadb"
            servers = {{ "{n0}" = "server1", "{n1}" = "server2" }}
            [[scripts]]
            path = "{script}"
            "#,
            closed = free_port(),
            n0 = nodes[0],
            n1 = nodes[1],
            script = script.display(),
        );
        c.integrations = toml::from_str(&toml).expect("integrations section");
    })
    .await;
    let leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);
    let server_of = |addr: &str| {
        if *addr == node_order[0] {
            "server1"
        } else {
            "server2"
        }
    };

    // At start: Consul is retried through its 500s until it takes the registration.
    let registered = |who: String| {
        let fake = fake.clone();
        async move {
            let last = fake
                .calls("/consul/")
                .into_iter()
                .rfind(|c| c.path == "/consul/v1/catalog/register" && c.status == 200)?;
            let body = last.json();
            let service = &body["Service"];
            (format!(
                "{}:{}",
                service["Address"].as_str()?,
                service["Port"].as_u64()?
            ) == who)
                .then_some((last, body))
        }
    };
    let (call, body) = eventually(Duration::from_secs(20), "Consul registration", || {
        registered(leader.clone())
    })
    .await;
    assert_eq!(call.method, "PUT");
    assert_eq!(call.headers.get("x-consul-token").unwrap(), "consul-secret");
    assert_eq!(body["Service"]["Service"], "c1-leader");
    assert_eq!(body["Service"]["Tags"], serde_json::json!(["leader"]));
    assert_eq!(body["NodeMeta"]["external-node"], "true");
    let consul = fake.calls("/consul/");
    assert!(
        consul.len() >= 4
            && consul[..4]
                .iter()
                .all(|c| c.path == "/consul/v1/catalog/register")
            && consul[..4].iter().map(|c| c.status).collect::<Vec<_>>() == [500, 500, 500, 200],
        "three 500s, then the registration that succeeded: {consul:?}"
    );

    let r = common::http()
        .post(env.admin_url("/api/v1/clusters/c1/switchover"))
        .bearer_auth("test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Consul names the new leader.
    eventually(
        Duration::from_secs(20),
        "Consul registration of the new leader",
        || registered(replica.clone()),
    )
    .await;

    // The webhook got a signed leader change.
    let hook = eventually(Duration::from_secs(20), "webhook leader change", || {
        let fake = fake.clone();
        async move {
            fake.calls("/hook")
                .into_iter()
                .find(|c| c.json()["event"] == "leader_change")
        }
    })
    .await;
    let body = hook.json();
    assert_eq!(hook.method, "POST");
    assert_eq!(body["cluster"], "c1");
    assert_eq!(body["leader"], replica.as_str());
    assert_eq!(body["previous_leader"], leader.as_str());
    assert!(body["epoch"].as_u64().unwrap() >= 2, "{body}");
    assert!(body["at"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(
        hook.headers.get("authorization").unwrap(),
        "Bearer hook-token"
    );
    assert_eq!(
        hook.headers
            .get("x-switchyard-signature")
            .unwrap()
            .to_str()
            .unwrap(),
        expected_signature(b"hook-key", &hook.body)
    );
    let startup = fake.calls("/hook");
    assert_eq!(startup[0].json()["event"], "startup");
    assert_eq!(startup[0].json()["leader"], leader.as_str());

    // MaxScale: the old leader lost `master` before the new one got it.
    let (old_server, new_server) = (server_of(&leader), server_of(&replica));
    let maxscale = eventually(Duration::from_secs(20), "MaxScale master moved", || {
        let fake = fake.clone();
        async move {
            let calls: Vec<(String, String)> = fake
                .calls("/maxscale/")
                .into_iter()
                .map(|c| (c.method, c.path))
                .collect();
            let set_new = format!("/maxscale/v1/servers/{new_server}/set?state=master");
            calls.iter().any(|(_, p)| *p == set_new).then_some(calls)
        }
    })
    .await;
    // Up to the first call making the new leader master: the old leader was master (at
    // start) and lost it since.
    let path =
        |server: &str, verb: &str| format!("/maxscale/v1/servers/{server}/{verb}?state=master");
    let promoted = maxscale
        .iter()
        .position(|(_, p)| *p == path(new_server, "set"))
        .unwrap();
    let before = &maxscale[..promoted];
    let last = |p: String| before.iter().rposition(|(_, x)| *x == p);
    assert!(
        last(path(old_server, "set")).is_some()
            && last(path(old_server, "clear")) > last(path(old_server, "set")),
        "{maxscale:?}"
    );
    assert!(maxscale.iter().all(|(m, _)| m == "PUT"));
    let auth = fake.calls("/maxscale/")[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(auth, "Basic YWRtaW46bWFyaWFkYg==", "admin:mariadb");

    // ProxySQL: the last rewrite puts the new leader in the writer hostgroup.
    let (new_host, new_port) = replica.split_once(':').unwrap();
    let (old_host, old_port) = leader.split_once(':').unwrap();
    let statements = eventually(Duration::from_secs(20), "ProxySQL rewrite", || {
        let log = admin_log.clone();
        let want = format!("(10, '{new_host}', {new_port})");
        async move {
            let s = log.statements.lock().unwrap().clone();
            // A whole rewrite seen (not one still being sent).
            let done = s.last().is_some_and(|l| l == "SAVE MYSQL SERVERS TO DISK");
            (done
                && s.iter()
                    .rev()
                    .find(|s| s.starts_with("INSERT"))
                    .is_some_and(|s| s.contains(&want)))
            .then_some(s)
        }
    })
    .await;
    let n = statements.len();
    assert!(n >= 8, "{statements:?}");
    assert_eq!(
        statements[n - 4],
        "DELETE FROM mysql_servers WHERE hostgroup_id IN (10, 20)"
    );
    assert!(
        statements[n - 3]
            .starts_with("INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES"),
        "{statements:?}"
    );
    assert!(
        !statements[n - 3].contains(&format!("(10, '{old_host}', {old_port})")),
        "{statements:?}"
    );
    assert_eq!(statements[n - 2], "LOAD MYSQL SERVERS TO RUNTIME");
    assert_eq!(statements[n - 1], "SAVE MYSQL SERVERS TO DISK");
    assert!(admin_log
        .users
        .lock()
        .unwrap()
        .iter()
        .all(|u| u == "radmin"));

    // The script was told, with its documented arguments.
    let line = eventually(Duration::from_secs(20), "the script ran", || async {
        let text = std::fs::read_to_string(&script_out).ok()?;
        text.lines()
            .find(|l| l.starts_with("leader_change"))
            .map(str::to_owned)
    })
    .await;
    let args: Vec<&str> = line.split(' ').collect();
    assert_eq!(args[..4], ["leader_change", "c1", &replica, &leader]);
    assert!(args[4].parse::<u64>().unwrap() >= 2, "{line}");

    // Counted: Consul's three retried attempts among them.
    let metrics = reqwest::get(env.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "switchyard_integration_pushes_total{integration=\"consul\",result=\"retried\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "switchyard_integration_pushes_total{integration=\"webhook\",result=\"failed\"}"
        ),
        "{metrics}"
    );
    // A push that failed every attempt is a cluster event (once, not at every retry).
    let events: serde_json::Value = common::http()
        .get(env.admin_url("/api/v1/clusters/c1/events"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "integration.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("webhook: "),
        "{events}"
    );
    // Tokens and passwords stay out of the running configuration the API shows.
    let shown = common::http()
        .get(env.admin_url("/api/v1/config"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("\"integrations\""), "{shown}");
    for secret in [
        "consul-secret",
        "hook-token",
        "hook-key",
        "radmin-pw",
        "mariadb",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    for name in ["consul", "webhook", "proxysql", "maxscale", "script"] {
        assert!(
            metrics.contains(&format!(
                "switchyard_integration_pushes_total{{integration=\"{name}\",result=\"ok\"}}"
            )),
            "{name}: {metrics}"
        );
    }
    env.stop().await;
}
