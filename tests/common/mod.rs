//! The integration-test harness: real MariaDB clusters on loopback ports (each test gets its
//! own data directory and free ports), a complete switchyard over them started in-process,
//! and helpers to connect directly or through the router. Everything started here is
//! stopped when the `TestEnv` is dropped, also when the test fails.
#![allow(dead_code)]

pub mod faults;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod writes;

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use orchestrator::provision::LocalClusters;
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::App;
use tempfile::TempDir;

/// An HTTP client. reqwest speaks TLS through rustls with the crypto provider the process
/// installs (as `App::start` and the CLI do); a test that calls the API of a child process
/// before starting an `App` of its own needs it installed first.
pub fn http() -> reqwest::Client {
    http_builder().build().expect("an HTTP client")
}

/// [`http`], to be configured further.
pub fn http_builder() -> reqwest::ClientBuilder {
    router::tls::install_default_provider();
    reqwest::Client::builder()
}

/// `POST /api/v1/clusters/{cluster}/switchover` (to the best replica) on the admin API at
/// `admin`, with the tests' token.
pub async fn ask_switchover(admin: std::net::SocketAddr, cluster: &str) -> reqwest::Response {
    http()
        .post(format!(
            "http://{admin}/api/v1/clusters/{cluster}/switchover"
        ))
        .bearer_auth("test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("the admin API answers")
}

/// A running test environment.
pub struct TestEnv {
    pub app: Option<App>,
    pub local: Option<LocalClusters>,
    pub opts: SandboxOptions,
    _dir: TempDir,
}

impl TestEnv {
    /// `clusters` clusters of one leader and `replicas` replicas, and a switchyard over them.
    pub async fn start(clusters: usize, replicas: usize) -> TestEnv {
        Self::start_with(clusters, replicas, |_| {}).await
    }

    /// Like `start`, letting the test adjust the configuration first.
    pub async fn start_with(
        clusters: usize,
        replicas: usize,
        adjust: impl FnOnce(&mut switchyard::Config),
    ) -> TestEnv {
        Self::start_full(clusters, replicas, 0, adjust, None).await
    }

    /// Like `start`, with keyspace `app` split into `shards` key ranges (`sandbox --shards`).
    pub async fn start_sharded(clusters: usize, shards: usize) -> TestEnv {
        Self::start_full(clusters, 0, shards, |_| {}, None).await
    }

    /// Like `start`, every node's binary log on a tmpfs of `mb` MiB of its own (for full-disk
    /// faults; needs root).
    pub async fn start_with_binlog_disk(clusters: usize, replicas: usize, mb: u32) -> TestEnv {
        Self::start_full(clusters, replicas, 0, |_| {}, Some(mb)).await
    }

    /// Like `start_sharded`, each cluster with `replicas` replicas.
    pub async fn start_sharded_replicated(
        clusters: usize,
        replicas: usize,
        shards: usize,
    ) -> TestEnv {
        Self::start_full(clusters, replicas, shards, |_| {}, None).await
    }

    /// Like `start_sharded_replicated`, letting the test adjust the configuration first.
    pub async fn start_sharded_with(
        clusters: usize,
        replicas: usize,
        shards: usize,
        adjust: impl FnOnce(&mut switchyard::Config),
    ) -> TestEnv {
        Self::start_full(clusters, replicas, shards, adjust, None).await
    }

    async fn start_full(
        clusters: usize,
        replicas: usize,
        shards: usize,
        adjust: impl FnOnce(&mut switchyard::Config),
        binlog_disk_mb: Option<u32>,
    ) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("sy-test-")
            .tempdir()
            .expect("temp dir");
        let opts = SandboxOptions {
            dir: dir.path().to_path_buf(),
            clusters,
            replicas,
            base_port: None,
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            admin_token: "test-token".into(),
            app_user: "app".into(),
            app_password: "app".into(),
            shards,
            binlog_disk_mb,
            rebuild_restore_command: None,
        };
        let local = match sandbox::provision(&opts).await {
            Ok(l) => l,
            Err(e) => panic!(
                "could not start local MariaDB clusters: {e:#}\n\
                 These tests need MariaDB: apt-get install -y mariadb-server mariadb-client"
            ),
        };
        let mut config = sandbox::config_for(&local, &opts);
        adjust(&mut config);
        let app = App::start(config).await.expect("switchyard starts");
        assert!(
            app.wait_ready(Duration::from_secs(30)).await,
            "every cluster should get a healthy leader"
        );
        TestEnv {
            app: Some(app),
            local: Some(local),
            opts,
            _dir: dir,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("app running")
    }

    pub fn local(&self) -> &LocalClusters {
        self.local.as_ref().expect("clusters running")
    }

    pub fn local_mut(&mut self) -> &mut LocalClusters {
        self.local.as_mut().expect("clusters running")
    }

    pub fn router_port(&self) -> u16 {
        self.app().router_port()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().admin_addr)
    }

    /// `GET /api/v1/router`: the router's counters.
    pub async fn router_stats(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.admin_url("/api/v1/router"))
            .bearer_auth("test-token")
            .send()
            .await
            .expect("admin API answers")
            .json()
            .await
            .expect("JSON")
    }

    /// `GET /metrics`: the Prometheus exposition.
    pub async fn metrics(&self) -> String {
        metrics_of(self.app().admin_addr).await
    }

    /// The current leader's port of a cluster.
    pub fn leader_port(&self, cluster: &str) -> u16 {
        let c = self.local().cluster(cluster).expect("cluster");
        c.leader_node().expect("leader").port
    }

    /// Ports of a cluster's replicas.
    pub fn replica_ports(&self, cluster: &str) -> Vec<u16> {
        let c = self.local().cluster(cluster).expect("cluster");
        c.replicas().map(|n| n.port).collect()
    }

    /// mysql_async options for the router.
    pub fn router_opts(&self, db: Option<&str>) -> Opts {
        opts_for(self.router_port(), "app", "app", db)
    }

    /// mysql_async options for a direct connection to a server.
    pub fn direct_opts(&self, port: u16, db: Option<&str>) -> Opts {
        opts_for(port, "app", "app", db)
    }

    pub async fn router_conn(&self, db: Option<&str>) -> Conn {
        Conn::new(self.router_opts(db))
            .await
            .expect("connect through the router")
    }

    pub async fn direct_conn(&self, port: u16, db: Option<&str>) -> Conn {
        Conn::new(self.direct_opts(port, db))
            .await
            .expect("connect directly")
    }

    /// An admin connection straight to a server (all privileges).
    pub async fn admin_conn(&self, port: u16) -> Conn {
        Conn::new(opts_for(port, "switchyard", "switchyard", None))
            .await
            .expect("admin connection")
    }

    /// Stops switchyard and the servers, reporting errors.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        if let Some(local) = self.local.take() {
            local.stop().await.expect("servers stop");
        }
    }
}

pub fn opts_for(port: u16, user: &str, password: &str, db: Option<&str>) -> Opts {
    switchyard::bench::loopback_opts(port, user, password, db)
}

/// Polls `check` until it returns `Some`, or fails the test after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a program and returns (exit status, stdout, stderr); fails loudly if it is missing.
pub fn run_program(program: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "can't run `{program}` ({e}); install it: \
                 apt-get install -y mariadb-client sysbench python3-pymysql"
            )
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mariadb` CLI through a port, batch mode, returning (status, stdout, stderr).
pub fn mariadb_cli(port: u16, user: &str, password: &str, sql: &str) -> (i32, String, String) {
    mariadb_cli_with(port, user, password, &[], sql)
}

/// [`mariadb_cli`] with more options (`--compress`).
pub fn mariadb_cli_with(
    port: u16,
    user: &str,
    password: &str,
    options: &[&str],
    sql: &str,
) -> (i32, String, String) {
    let port = port.to_string();
    let pw = format!("-p{password}");
    let u = format!("-u{user}");
    let mut args = vec!["-h127.0.0.1", "-P", &port, &u, &pw, "--batch", "--skip-ssl"];
    args.extend_from_slice(options);
    args.extend(["-e", sql]);
    run_program("mariadb", &args, None)
}

/// One value from a query.
pub async fn query_one<T: FromValue + Send + 'static>(conn: &mut Conn, sql: &str) -> T {
    conn.query_first::<T, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A hand-driven client that logs in and then sends whatever the test wants.
pub struct RawClient {
    pub input: router::protocol::PacketReader<tokio::net::tcp::OwnedReadHalf>,
    pub output: router::protocol::PacketWriter<tokio::net::tcp::OwnedWriteHalf>,
}

impl RawClient {
    /// Logs in as `app`/`app`.
    pub async fn login(port: u16) -> RawClient {
        Self::login_as(port, "app", b"app").await.expect("login OK")
    }

    /// Logs in; the error packet's payload when the router refuses.
    pub async fn login_as(port: u16, user: &str, password: &[u8]) -> Result<RawClient, Vec<u8>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (r, w) = stream.into_split();
        let mut c = RawClient {
            input: router::protocol::PacketReader::new(r),
            output: router::protocol::PacketWriter::new(w),
        };
        let (_, _, greeting) =
            tokio::time::timeout(Duration::from_secs(20), c.input.read_message(1 << 20))
                .await
                .expect("the router's greeting within 20 s")
                .unwrap()
                .unwrap();
        let g = router::protocol::handshake::parse_backend_greeting(&greeting).unwrap();
        let token = router::protocol::handshake::scramble_native(&g.scramble, password);
        let mut caps = router::protocol::handshake::router_capabilities();
        caps.remove(
            router::protocol::CapabilityFlags::CLIENT_CONNECT_WITH_DB
                | router::protocol::CapabilityFlags::CLIENT_CONNECT_ATTRS,
        );
        c.output.push(
            1,
            &router::protocol::handshake::backend_hello(caps, 45, user, &token, None),
        );
        c.output.flush().await.unwrap();
        let (_, _, reply) = c.input.read_message(1 << 20).await.unwrap().unwrap();
        if reply[0] == 0 {
            Ok(c)
        } else {
            Err(reply.to_vec())
        }
    }

    pub async fn send(&mut self, seq: u8, payload: &[u8]) {
        self.output.push(seq, payload);
        self.output.flush().await.unwrap();
    }

    /// The next packet's payload, or `None` when the router closed the connection.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match tokio::time::timeout(Duration::from_secs(10), self.input.read_message(1 << 26)).await
        {
            Ok(Ok(Some((_, _, p)))) => Some(p.to_vec()),
            Ok(_) => None,
            Err(_) => panic!("no answer from the router within 10 s"),
        }
    }

    pub async fn expect_error(&mut self, code: u16) {
        let p = self.next().await.expect("an error packet");
        let e =
            router::protocol::parse_err(&p).unwrap_or_else(|| panic!("not an error packet: {p:?}"));
        assert_eq!(e.code, code, "{e}");
    }
}

/// Shards of `sandbox --shards 4` over two clusters: (range start, end, cluster, database).
pub const SHARDS: [(u64, u64, &str, &str); 4] = [
    (0, 0x4000_0000_0000_0000, "c1", "app_00_40"),
    (
        0x4000_0000_0000_0000,
        0x8000_0000_0000_0000,
        "c2",
        "app_40_80",
    ),
    (
        0x8000_0000_0000_0000,
        0xc000_0000_0000_0000,
        "c1",
        "app_80_c0",
    ),
    (0xc000_0000_0000_0000, u64::MAX, "c2", "app_c0_ff"),
];

/// The index in [`SHARDS`] of the shard an integer key hashes to.
pub fn shard_of(id: i64) -> usize {
    let k = shard_map::vindex::hash_keyspace_id(&shard_map::KeyValue::Int(id)).unwrap();
    SHARDS
        .iter()
        .position(|(lo, hi, _, _)| k >= *lo && (k < *hi || *hi == u64::MAX))
        .unwrap()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs the binary with the admin URL and token in the environment, off the async runtime.
pub async fn switchyard_cli(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let admin = format!("http://{}", env.app().admin_addr);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env("SWITCHYARD_ADMIN", &admin)
            .env("SWITCHYARD_ADMIN_TOKEN", "test-token")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run switchyard");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `GET /metrics` of the admin API at `admin`.
pub async fn metrics_of(admin: std::net::SocketAddr) -> String {
    http()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth("test-token")
        .send()
        .await
        .expect("admin API answers")
        .text()
        .await
        .expect("metrics text")
}
