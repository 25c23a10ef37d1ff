//! The README's first command: `switchyard sandbox` as a user runs it. It starts, prints its
//! endpoints, serves the `mariadb` client, stops everything on SIGTERM, and a second start on
//! the same directory keeps the data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::mariadb_cli;

struct Sandbox {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sandbox {
    fn start(dir: &std::path::Path) -> Sandbox {
        Self::start_with(dir, &["--clusters", "2"])
    }

    fn start_with(dir: &std::path::Path, extra: &[&str]) -> Sandbox {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["sandbox"])
            .args(extra)
            .args(["--replicas", "1", "--base-port", "0"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--admin-sql", "127.0.0.1:0"])
            .arg("--dir")
            .arg(dir)
            .env("SWITCHYARD_ADMIN_TOKEN", "sandbox-token")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run switchyard sandbox");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sandbox { child, lines }
    }

    /// Reads printed lines until one starts with `prefix`.
    fn line_starting(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("sandbox never printed a line starting with {prefix:?}")
                });
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn stop(mut self) {
        // SIGTERM, as a service manager (or Ctrl-C) would.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for the sandbox");
        assert!(status.success(), "sandbox exits cleanly: {status:?}");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_of(line: &str) -> u16 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("-P"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no -P port in {line:?}"))
}

fn refuses_connections(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn sandbox_starts_serves_stops_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(dir.path());
    let leader = port_of(&sandbox.line_starting("direct c1/leader:"));
    let replica = port_of(&sandbox.line_starting("direct c1/replica:"));
    let c2_leader = port_of(&sandbox.line_starting("direct c2/leader:"));
    let router = port_of(&sandbox.line_starting("mysql: mariadb"));
    let admin = sandbox.line_starting("admin: http://");
    assert!(admin.ends_with("/api/v1/clusters"), "{admin}");
    let admin_sql = sandbox.line_starting("admin sql: mariadb");
    assert!(
        admin_sql.ends_with("-uadmin -psandbox-token"),
        "{admin_sql}"
    );
    sandbox.line_starting("ready in");
    // The printed admin SQL command works.
    let (code, out, err) = mariadb_cli(
        port_of(&admin_sql),
        "admin",
        "sandbox-token",
        "SHOW CLUSTERS",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");

    let (code, out, err) = mariadb_cli(
        router,
        "app",
        "app",
        "CREATE DATABASE keep; CREATE TABLE keep.t (id INT PRIMARY KEY); \
         INSERT INTO keep.t VALUES (1), (2), (3); SELECT COUNT(*) FROM keep.t",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "COUNT(*)\n3\n");
    // The same user works directly on every backend.
    let (code, out, err) = mariadb_cli(leader, "app", "app", "SELECT COUNT(*) FROM keep.t");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "COUNT(*)\n3\n");
    sandbox.stop();
    for port in [leader, replica, c2_leader, router, port_of(&admin_sql)] {
        assert!(
            refuses_connections(port),
            "port {port} still open after stop"
        );
    }

    // A second start on the same directory reuses the data (and the same server ports).
    let sandbox = Sandbox::start(dir.path());
    assert_eq!(port_of(&sandbox.line_starting("direct c1/leader:")), leader);
    let router = port_of(&sandbox.line_starting("mysql: mariadb"));
    sandbox.line_starting("ready in");
    let (code, out, err) = mariadb_cli(router, "app", "app", "SELECT COUNT(*) FROM keep.t");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "COUNT(*)\n3\n");
    sandbox.stop();
    assert!(refuses_connections(leader));
}

/// `--orchestrators 2 --routers 1`: three processes over a local etcd, each printed with its
/// endpoints, each routing; one leads; SIGTERM stops every one of them.
#[test]
fn a_sandbox_of_several_processes_routes_through_each_and_stops_them_all() {
    let dir = tempfile::Builder::new()
        .prefix("sy-sbx-multi-")
        .tempdir()
        .unwrap();
    let sandbox = Sandbox::start_with(
        dir.path(),
        &["--clusters", "1", "--orchestrators", "2", "--routers", "1"],
    );
    let mut pids = Vec::new();
    let mut ports = Vec::new();
    for name in ["o1", "o2", "r1"] {
        let line = sandbox.line_starting(&format!("process {name} "));
        let port: u16 = line
            .split("mysql 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no mysql port in {line:?}"));
        ports.push(port);
        if let Some(pid) = line
            .split("pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse::<i32>().ok())
        {
            pids.push(pid);
        }
    }
    assert_eq!(pids.len(), 2, "two children (o2, r1)");
    sandbox.line_starting("ready in");
    for port in ports.iter().copied() {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (code, out, err) = mariadb_cli(port, "app", "app", "SELECT 40 + 2");
            if code == 0 && out.contains("42") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no answer through the router on {port}: {err}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    sandbox.stop();
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} outlived the sandbox");
    }
}
