//! Checks the `hash` vindex against an outside computation: a throwaway `mariadbd` computes
//! `CAST(CONV(LEFT(MD5(v),16),16,10) AS UNSIGNED)` for the pinned golden vectors and for a few
//! hundred more values, and every answer must equal ours.
//!
//! Needs MariaDB installed (`apt-get install -y mariadb-server mariadb-client`); fails loudly
//! without it rather than skipping, because this is the test that keeps data from moving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shard_map::vindex::{hash_keyspace_id, HASH_GOLDEN_VECTORS};
use shard_map::KeyValue;

const INSTALL_HINT: &str = "apt-get install -y mariadb-server mariadb-client";

/// A binary on PATH or in the usual sbin directories (mariadbd is not on a user's PATH).
fn find_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/sbin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/local/mysql/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("MariaDB is not installed: `{name}` was not found. Install it: {INSTALL_HINT}")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running throwaway server, killed when dropped (also when the test fails).
struct Server {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    client: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Server {
        let install = find_bin("mariadb-install-db");
        let mariadbd = find_bin("mariadbd");
        let client = find_bin("mariadb");
        let datadir = dir.join("data");
        let root = is_root();
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", datadir.display()));
        if root {
            cmd.arg("--user=root");
        }
        let out = cmd.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "{}",
            describe("mariadb-install-db", &out)
        );

        let socket = dir.join("mysqld.sock");
        let log = dir.join("error.log");
        let mut cmd = Command::new(&mariadbd);
        cmd.arg("--no-defaults");
        if root {
            cmd.arg("--user=root");
        }
        cmd.arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg("--skip-networking")
            .arg("--skip-grant-tables")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("start mariadbd");
        let mut server = Server {
            child,
            socket,
            log,
            client,
        };
        server.wait_ready();
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mariadbd exited ({status}) before accepting connections:\n{}",
                    self.log_text()
                );
            }
            if self.try_query("SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not accept connections within 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(describe("mariadb", &out))
        }
    }
}

/// Decimal texts to check: the golden vectors, edge values and a deterministic spread of
/// signed and unsigned 64-bit values.
fn values() -> Vec<String> {
    let mut v: Vec<String> = HASH_GOLDEN_VECTORS
        .iter()
        .map(|(t, _)| t.to_string())
        .collect();
    v.extend(
        [
            i64::MIN + 1,
            -1_000_000,
            -255,
            7,
            99,
            65535,
            1 << 40,
            i64::MAX - 1,
        ]
        .map(|i| i.to_string()),
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..300u64 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let shrunk = z >> (i % 64);
        v.push(match i % 3 {
            0 => shrunk.to_string(),
            1 => (shrunk as i64).to_string(),
            _ => (-((shrunk >> 1) as i64)).to_string(),
        });
    }
    v
}

fn key_value(text: &str) -> KeyValue {
    match text.parse::<i64>() {
        Ok(i) => KeyValue::Int(i),
        Err(_) => KeyValue::UInt(text.parse().expect("a u64")),
    }
}

#[test]
fn hash_vindex_matches_mariadb_md5() {
    let dir = tempfile::Builder::new()
        .prefix("shardmap-md5-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let server = Server::start(dir.path());

    let values = values();
    // Each value twice: as a string literal and as a numeric literal, which MariaDB turns into
    // the same decimal text before hashing.
    let rows: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                "SELECT '{v}', CAST(CONV(LEFT(MD5('{v}'),16),16,10) AS UNSIGNED), \
                 CAST(CONV(LEFT(MD5({v}),16),16,10) AS UNSIGNED)"
            )
        })
        .collect();
    let sql = rows.join(" UNION ALL ");
    let out = server.try_query(&sql).unwrap_or_else(|e| panic!("{e}"));

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), values.len(), "one row per value:\n{out}");
    for (line, text) in lines.iter().zip(&values) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "{line}");
        assert_eq!(cols[0], text);
        let from_text: u64 = cols[1].parse().expect("an unsigned id");
        let from_number: u64 = cols[2].parse().expect("an unsigned id");
        let ours = hash_keyspace_id(&key_value(text)).expect("integers always hash");
        assert_eq!(ours, from_text, "MD5('{text}')");
        assert_eq!(ours, from_number, "MD5({text})");
    }
    for &(text, pinned) in HASH_GOLDEN_VECTORS {
        let line = lines
            .iter()
            .find(|l| l.split('\t').next() == Some(text))
            .expect("every golden vector was queried");
        assert_eq!(
            line.split('\t').nth(1),
            Some(pinned.to_string().as_str()),
            "{text}"
        );
    }
    drop(server);
}
