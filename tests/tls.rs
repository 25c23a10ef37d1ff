//! TLS end to end, with a throwaway CA made for each test: the `mariadb` CLI, PyMySQL and
//! mysql_async over TLS to the router, plain-text logins refused under
//! `require_secure_transport`, the router's backend connections over TLS to servers started
//! with certificates (and refused with a CA that did not sign them), and the admin API over
//! HTTPS with the CLI and reqwest.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::Pki;
use common::{run_program, TestEnv};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use orchestrator::provision::{LocalClusters, ProvisionSpec, ServerSsl};
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::App;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The `mariadb` CLI through the router with TLS, verifying the router's certificate; `sql`
/// is read from standard input, so that client commands (`status`) work on lines of their own.
fn mariadb_tls(port: u16, ca: &Path, sql: &str) -> (i32, String, String) {
    let port = port.to_string();
    let ca = format!("--ssl-ca={}", s(ca));
    run_program(
        "mariadb",
        &[
            "-h127.0.0.1",
            "-P",
            &port,
            "-uapp",
            "-papp",
            "--ssl",
            &ca,
            "--ssl-verify-server-cert",
        ],
        Some(sql),
    )
}

fn mysql_async_tls(port: u16, ca: &Path) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false)
        .ssl_opts(SslOpts::default().with_root_certs(vec![ca.to_path_buf().into()]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_over_tls_and_plain_text_is_refused() {
    let (code, _, err) = run_program("python3", &["-c", "import pymysql"], None);
    assert_eq!(
        code, 0,
        "PyMySQL is missing: python3 -m pip install PyMySQL (or run scripts/install-deps)\n{err}"
    );
    let pki = Pki::new();
    let (cert, key) = (pki.cert(), pki.key());
    let env = TestEnv::start_with(1, 0, move |c| {
        c.router.tls_cert = Some(cert);
        c.router.tls_key = Some(key);
        c.router.require_secure_transport = true;
    })
    .await;
    let port = env.router_port();

    // The mariadb CLI, checking the certificate against the CA and the host name (an IP SAN).
    let (code, out, err) = mariadb_tls(
        port,
        &pki.ca(),
        "CREATE DATABASE tlsdb; CREATE TABLE tlsdb.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO tlsdb.t VALUES (1, 'one'), (2, 'two'); \
         SELECT v FROM tlsdb.t WHERE id = 2;\nstatus\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("two"), "{out}");
    let ssl_line = out
        .lines()
        .find(|l| l.starts_with("SSL:"))
        .unwrap_or_else(|| panic!("no SSL line in the CLI's status:\n{out}"));
    assert!(ssl_line.contains("Cipher in use is"), "{ssl_line}");

    // Plain text: refused before the password is checked, with MariaDB's error for it.
    let (code, out, err) = common::mariadb_cli(port, "app", "app", "SELECT 1");
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("ERROR 3159 (08004)") && err.contains("require_secure_transport=ON"),
        "{err}"
    );
    // The Unix-domain socket counts as a secure transport, as on a server: no TLS, let in.
    let socket = env
        .app()
        .router_socket
        .clone()
        .expect("the router's socket");
    let (code, out, err) = run_program(
        "mariadb",
        &[
            "-S",
            socket.to_str().expect("UTF-8 path"),
            "-uapp",
            "-papp",
            "--batch",
            "-e",
            "SELECT v FROM tlsdb.t WHERE id = 1",
        ],
        None,
    );
    assert_eq!((code, out.as_str()), (0, "v\none\n"), "{err}");
    // A CA that did not sign the router's certificate: the CLI refuses to go on.
    let other = Pki::new();
    let (code, out, err) = mariadb_tls(port, &other.ca(), "SELECT 1");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("ERROR 2026"), "{err}");

    // PyMySQL with ssl={'ca': ...}: parameterised statements, a transaction, the TLS version.
    let script = r#"
import sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password="app",
                    database="tlsdb", ssl={"ca": sys.argv[2]}, autocommit=False)
cur = c.cursor()
cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, "v%d" % i) for i in range(10, 60)])
c.commit()
total = 0
for i in range(10, 60):
    cur.execute("SELECT id, v FROM t WHERE id = %s", (i,))
    row = cur.fetchone()
    assert row == (i, "v%d" % i), row
    total += 1
cur.execute("UPDATE t SET v = %s WHERE id BETWEEN %s AND %s", ("upd", 10, 19))
c.rollback()
cur.execute("SELECT COUNT(*) FROM t WHERE v = %s", ("upd",))
assert cur.fetchone() == (0,)
print("rows", total, "tls", c._sock.version())
"#;
    let (code, out, err) = run_program(
        "python3",
        &["-c", script, &port.to_string(), s(&pki.ca())],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("rows 50 tls TLSv1."), "{out}");

    // mysql_async with rustls, and the plain-text refusal as a client library sees it.
    let mut conn = Conn::new(mysql_async_tls(port, &pki.ca()))
        .await
        .expect("mysql_async over TLS");
    let n: i64 = conn
        .exec_first("SELECT COUNT(*) FROM tlsdb.t WHERE id > ?", (5,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 50);
    conn.disconnect().await.unwrap();
    // The compressed protocol inside TLS: zlib frames under the TLS records.
    let mut conn = Conn::new(
        mysql_async_tls(port, &pki.ca()).compression(Some(mysql_async::Compression::default())),
    )
    .await
    .expect("mysql_async over TLS, compressed");
    let long: String = conn
        .query_first("SELECT REPEAT('tls+zlib', 50000)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(long.len(), 400_000);
    let n: i64 = conn
        .exec_first("SELECT COUNT(*) FROM tlsdb.t WHERE id > ?", (5,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 50);
    conn.disconnect().await.unwrap();
    let plain = Conn::new(env.router_opts(None)).await;
    match plain {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (3159, "08004"), "{e:?}")
        }
        other => panic!("plain text should be refused with 3159, got {other:?}"),
    }

    // The SSLRequest and the TLS ClientHello in one write, as a fast client may send them.
    let ca = pki.ca();
    let reply = tokio::task::spawn_blocking(move || tls_login_in_one_write(port, &ca))
        .await
        .unwrap();
    assert!(
        !reply.is_empty() && reply[0] == 0x00,
        "not an OK: {reply:?}"
    );

    let stats = env.router_stats().await;
    assert!(stats["insecure_refused"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["tls_connections"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["compressed_connections"], 1, "{stats}");
    env.stop().await;
}

fn read_packet(r: &mut impl std::io::Read) -> (u8, Vec<u8>) {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).expect("packet header");
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).expect("packet payload");
    (header[3], payload)
}

/// Logs in as app/app over TLS, sending the SSLRequest and the ClientHello in one segment;
/// returns the payload of the router's answer to the login.
fn tls_login_in_one_write(port: u16, ca: &Path) -> Vec<u8> {
    use router::protocol::handshake::{
        backend_hello, parse_backend_greeting, router_capabilities, scramble_native, ssl_request,
    };
    use router::protocol::packet::frame;
    use std::io::Write;
    use std::sync::Arc;

    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (_, greeting) = read_packet(&mut tcp);
    let greeting = parse_backend_greeting(&greeting).expect("greeting");
    assert!(greeting
        .caps
        .contains(router::protocol::CapabilityFlags::CLIENT_SSL));
    let mut roots = rustls::RootCertStore::empty();
    for cert in router::tls::load_certs("CA", ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(router::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), "127.0.0.1".try_into().unwrap()).unwrap();
    let caps = (router_capabilities() | router::protocol::CapabilityFlags::CLIENT_SSL)
        - router::protocol::CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    let mut first = Vec::new();
    frame(1, &ssl_request(caps, 45), &mut first);
    tls.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let token = scramble_native(&greeting.scramble, b"app");
    let mut hello = Vec::new();
    frame(2, &backend_hello(caps, 45, "app", &token, None), &mut hello);
    stream.write_all(&hello).unwrap();
    let (seq, reply) = read_packet(&mut stream);
    assert_eq!(seq, 3, "sequence ids go on across the switch to TLS");
    reply
}

/// Servers started with certificates, and a switchyard whose router connects to them over TLS.
struct BackendTlsEnv {
    local: Option<LocalClusters>,
    opts: SandboxOptions,
    _dir: TempDir,
}

impl BackendTlsEnv {
    async fn start(pki: &Pki) -> BackendTlsEnv {
        Self::start_replicated(pki, 0).await
    }

    /// One cluster of a leader and `replicas` replicas, every server with the test CA's
    /// certificate.
    async fn start_replicated(pki: &Pki, replicas: usize) -> BackendTlsEnv {
        let dir = tempfile::Builder::new()
            .prefix("sy-test-")
            .tempdir()
            .unwrap();
        let opts = SandboxOptions {
            dir: dir.path().to_path_buf(),
            clusters: 1,
            replicas,
            base_port: None,
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            admin_token: "test-token".into(),
            app_user: "app".into(),
            app_password: "app".into(),
            binlog_disk_mb: None,
            shards: 0,
            rebuild_restore_command: None,
        };
        let mut spec = ProvisionSpec::new(&opts.dir);
        spec.clusters = 1;
        spec.replicas = replicas;
        spec.ssl = Some(ServerSsl {
            cert: pki.cert(),
            key: pki.key(),
            ca: Some(pki.ca()),
        });
        let local = LocalClusters::start(spec).await.unwrap_or_else(|e| {
            panic!(
                "could not start MariaDB with TLS: {e}\n\
                 These tests need MariaDB: apt-get install -y mariadb-server mariadb-client"
            )
        });
        BackendTlsEnv {
            local: Some(local),
            opts,
            _dir: dir,
        }
    }

    /// A switchyard over the servers, verifying their certificates against `ca`.
    async fn app(&self, ca: &Path) -> App {
        let mut config = sandbox::config_for(self.local.as_ref().unwrap(), &self.opts);
        config.router.backend_tls = router::config::BackendTlsMode::VerifyCa;
        config.router.backend_tls_ca = Some(ca.to_path_buf());
        let app = App::start(config).await.expect("switchyard starts");
        assert!(app.wait_ready(Duration::from_secs(30)).await, "leader up");
        app
    }
}

/// `SELECT` of one value over a TLS connection (verified against `ca`) as switchyard's admin
/// user.
async fn admin_tls_scalar<T: FromValue + Send + 'static>(port: u16, ca: &Path, sql: &str) -> T {
    let opts = mysql_async_tls(port, ca)
        .user(Some("switchyard"))
        .pass(Some("switchyard"));
    let mut c = Conn::new(opts).await.expect("TLS admin connection");
    let v: T = c.query_first(sql).await.expect(sql).expect("a row");
    c.disconnect().await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_watches_and_fails_over_servers_that_require_tls() {
    let pki = Pki::new();
    let mut env = BackendTlsEnv::start_replicated(&pki, 2).await;
    let nodes: Vec<(String, u16)> = env.local.as_ref().unwrap().clusters()[0]
        .nodes
        .iter()
        .map(|n| (n.addr.clone(), n.port))
        .collect();
    // From now on every TCP login must use TLS (the replication threads already connected
    // stay as they are).
    for (_, port) in &nodes {
        let opts = mysql_async_tls(*port, &pki.ca())
            .user(Some("switchyard"))
            .pass(Some("switchyard"));
        let mut c = Conn::new(opts).await.expect("TLS admin connection");
        c.query_drop("SET GLOBAL require_secure_transport = ON")
            .await
            .unwrap();
        c.disconnect().await.unwrap();
    }
    let plain = Conn::new(common::opts_for(
        nodes[0].1,
        "switchyard",
        "switchyard",
        None,
    ))
    .await;
    assert!(plain.is_err(), "the servers refuse plain-text logins");

    let mut config = sandbox::config_for(env.local.as_ref().unwrap(), &env.opts);
    config.router.backend_tls = router::config::BackendTlsMode::VerifyCa;
    config.router.backend_tls_ca = Some(pki.ca());
    config.orchestrator.tls = router::config::BackendTlsMode::VerifyCa;
    config.orchestrator.tls_ca = Some(pki.ca());
    assert_eq!(config.validate(), Vec::<String>::new());
    let app = App::start(config).await.expect("switchyard starts");
    assert!(
        app.wait_ready(Duration::from_secs(30)).await,
        "the monitor sees a healthy leader over TLS"
    );
    let mut c = Conn::new(common::opts_for(app.router_port(), "app", "app", None))
        .await
        .expect("login through the router");
    c.query_drop("CREATE DATABASE tlsfo; CREATE TABLE tlsfo.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO tlsfo.t VALUES (1)")
        .await
        .unwrap();
    drop(c);

    // A failover: the new leader is promoted and the other replica repointed, over TLS.
    let old = app
        .topology
        .load()
        .cluster("c1")
        .unwrap()
        .leader
        .clone()
        .unwrap();
    env.local.as_mut().unwrap().kill_node("c1", &old).unwrap();
    let new = common::eventually(Duration::from_secs(30), "a new leader", || async {
        let t = app.topology.load();
        let c = t.cluster("c1")?;
        c.leader.clone().filter(|l| *l != old && c.epoch > 1)
    })
    .await;
    let port = app.router_port();
    common::eventually(
        Duration::from_secs(30),
        "a write on the new leader",
        || async {
            let mut c = Conn::new(common::opts_for(port, "app", "app", None))
                .await
                .ok()?;
            c.query_drop("REPLACE INTO tlsfo.t VALUES (2)").await.ok()
        },
    )
    .await;
    let (_, other) = nodes
        .iter()
        .find(|(a, _)| *a != old && *a != new)
        .expect("the other replica");
    common::eventually(
        Duration::from_secs(30),
        "the other replica follows the new leader over TLS",
        || async {
            let n: i64 = admin_tls_scalar(*other, &pki.ca(), "SELECT COUNT(*) FROM tlsfo.t").await;
            (n == 2).then_some(())
        },
    )
    .await;
    let opts = mysql_async_tls(*other, &pki.ca())
        .user(Some("switchyard"))
        .pass(Some("switchyard"));
    let mut a = Conn::new(opts).await.unwrap();
    let status: mysql_async::Row = a.query_first("SHOW SLAVE STATUS").await.unwrap().unwrap();
    let get = |n: &str| status.get::<String, _>(n).unwrap_or_default();
    let new_port = new.rsplit(':').next().unwrap();
    assert_eq!(get("Master_Port"), new_port);
    assert_eq!(get("Master_SSL_Allowed"), "Yes", "replication over TLS");
    assert_eq!(get("Slave_IO_Running"), "Yes", "{}", get("Last_IO_Error"));
    a.disconnect().await.unwrap();
    app.shutdown().await;
    env.local
        .take()
        .unwrap()
        .stop()
        .await
        .expect("servers stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_connects_to_backends_over_verified_tls() {
    let pki = Pki::new();
    let mut env = BackendTlsEnv::start(&pki).await;

    let app = env.app(&pki.ca()).await;
    let port = app.router_port();
    let mut c = Conn::new(common::opts_for(port, "app", "app", None))
        .await
        .expect("login through the router");
    // Forwarded to the router's backend connection: the cipher of that connection.
    let row: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    let (_, cipher) = row.expect("a row");
    assert!(
        !cipher.is_empty(),
        "the backend connection is not encrypted"
    );
    let version: Option<(String, String)> = c
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .unwrap();
    assert!(version.unwrap().1.starts_with("TLSv1."));
    c.disconnect().await.unwrap();
    app.shutdown().await;

    // A CA that did not sign the servers' certificates: a clear error, not a hang.
    let other = Pki::new();
    let app = env.app(&other.ca()).await;
    let port = app.router_port();
    // mysql_async runs statements right after logging in, so the error may come at login.
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        let mut c = Conn::new(common::opts_for(port, "app", "app", None)).await?;
        c.query_drop("SELECT 1").await
    })
    .await
    .expect("the router answers instead of hanging");
    match result {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 2026, "{e:?}");
            assert!(e.message.contains("SSL connection error"), "{e:?}");
            assert!(e.message.to_lowercase().contains("certificate"), "{e:?}");
        }
        other => panic!("expected error 2026, got {other:?}"),
    }
    app.shutdown().await;
    env.local
        .take()
        .unwrap()
        .stop()
        .await
        .expect("servers stop");
}

async fn sy_https(url: &str, ca: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let ca = ca.map(Path::to_path_buf);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("SWITCHYARD_ADMIN", &url)
            .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
            .env_remove("SWITCHYARD_ADMIN_CA")
            .env("RUST_LOG", "warn");
        if let Some(ca) = ca {
            cmd.arg("--admin-ca").arg(ca);
        }
        let out = cmd.output().expect("run switchyard");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_serves_https_only() {
    let pki = Pki::new();
    let (cert, key) = (pki.cert(), pki.key());
    let env = TestEnv::start_with(1, 0, move |c| {
        c.admin.tls_cert = Some(cert);
        c.admin.tls_key = Some(key);
    })
    .await;
    let addr = env.app().admin_addr;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap();
    let https = common::http_builder().tls_certs_only([ca]).build().unwrap();
    let r = https
        .get(format!("https://127.0.0.1:{}/api/v1/clusters", addr.port()))
        .bearer_auth("test-token")
        .send()
        .await
        .expect("HTTPS with the test CA");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["clusters"].as_array().is_some_and(|c| c.len() == 1),
        "{body}"
    );
    // The unauthenticated health route too, by name (DNS SAN).
    let r = https
        .get(format!("https://localhost:{}/metrics", addr.port()))
        .send()
        .await
        .expect("HTTPS by host name");
    assert_eq!(r.status(), 200);

    // Plain HTTP on the same port gets no answer.
    let plain = common::http()
        .get(format!("http://127.0.0.1:{}/api/v1/clusters", addr.port()))
        .bearer_auth("test-token")
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered: {plain:?}"
    );

    // The CLI with --admin-ca, and without it (the test CA is not a system root).
    let url = format!("https://127.0.0.1:{}", addr.port());
    let (code, out, err) = sy_https(&url, Some(&pki.ca()), &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("c1"), "{out}");
    let (code, out, err) = sy_https(&url, None, &["status"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("can't reach the admin API"), "{err}");
    env.stop().await;
}

#[test]
fn unreadable_certificates_are_reported_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();
    let mut router = router::config::RouterConfig::with_users(vec![router::config::UserConfig {
        name: "app".into(),
        password: router::Secret::new("app"),
    }]);
    router.tls_cert = Some(dir.path().join("missing.pem"));
    router.tls_key = Some(garbage.clone());
    router.backend_tls = router::config::BackendTlsMode::VerifyCa;
    let problems = router.validate().join("\n");
    assert!(problems.contains("can't read certificate"), "{problems}");
    assert!(problems.contains("missing.pem"), "{problems}");
    assert!(problems.contains("needs backend_tls_ca"), "{problems}");
    router.tls_cert = Some(garbage.clone());
    router.backend_tls_ca = Some(garbage);
    let problems = router.validate().join("\n");
    assert!(problems.contains("holds no CERTIFICATE"), "{problems}");
    assert!(problems.contains("router.backend_tls_ca"), "{problems}");
    router.tls_cert = None;
    router.tls_key = None;
    router.require_secure_transport = true;
    let problems = router.validate().join("\n");
    assert!(
        problems.contains("require_secure_transport needs"),
        "{problems}"
    );
}
