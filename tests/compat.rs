//! MariaDB's own regression suite through the router, as CI runs it: `scripts/compat` on its
//! default list (`scripts/compat-tests.txt`: the tests that once hung or were lost, and a few
//! ordinary ones), in the text protocol and with `--ps-protocol`, each directly against a
//! fresh server and through `switchyard serve` in front of another. Nothing that passes
//! directly may be lost through the router, and nothing may hang.
//!
//! Needs Debian's `mariadb-test` package (`scripts/install-deps` installs it); without it the
//! test fails and says so, rather than passing without having run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MTR: &str = "/usr/share/mysql/mysql-test/mariadb-test-run";
/// Both protocols take about two minutes on two cores; a hung test costs one minute.
const BOUND: Duration = Duration::from_secs(8 * 60);

/// The harness, stopped (SIGTERM: it stops its servers and routers, then exits) if the test
/// ends before it does, whether by timeout or by a panic.
struct Harness(Child);

impl Drop for Harness {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn mariadb_main_suite_subset_loses_nothing_through_the_router() {
    assert!(
        Path::new(MTR).exists(),
        "MariaDB's test suite is missing ({MTR}): install it with \
         `sudo apt-get install mariadb-test patch` or `scripts/install-deps`"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let out_dir = tempfile_dir();
    let stdout = out_dir.join("compat.out");
    let child = Command::new("python3")
        .arg(Path::new(root).join("scripts/compat"))
        .args(["--both", "--switchyard", env!("CARGO_BIN_EXE_switchyard")])
        .args(["--markdown", out_dir.join("compat.md").to_str().unwrap()])
        .env("COMPAT_BUILD_THREAD", "600")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs scripts/compat");
    let mut harness = Harness(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = harness.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < BOUND,
            "scripts/compat still running after {BOUND:?}; stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&stdout).unwrap_or_default();
    println!("{report}");
    assert!(status.success(), "scripts/compat: {status}\n{report}");
    // Both protocols ran, every row with 0 lost and 0 hung.
    let rows: Vec<Vec<&str>> = report
        .lines()
        .filter(|l| l.starts_with("text ") || l.starts_with("ps-protocol "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "a row per protocol:\n{report}");
    for r in &rows {
        let run: u32 = r[1].parse().unwrap();
        let passed_directly: u32 = r[2].parse().unwrap();
        assert!(
            run >= 20 && passed_directly >= 20,
            "most of the list ran: {r:?}"
        );
        assert_eq!(
            (r[4], r[5]),
            ("0", "0"),
            "lost and hung, {}: {report}",
            r[0]
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// A fresh directory for the harness's output.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("compat-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
