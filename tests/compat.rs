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
    run_compat("default", &["--both"], "600", 2);
}

/// With `multiplexing = false` the server sees one session per client: tests that count the
/// server's sessions, or KILL a connection by its CONNECTION_ID(), pass as directly.
#[test]
fn without_multiplexing_session_counts_and_kill_behave_as_directly() {
    run_compat(
        "no-multiplexing",
        &[
            "--no-multiplexing",
            "main.kill_query-6728",
            "main.lock_kill",
            "main.transaction_timeout",
            "main.lock_multi_bug38499",
            "main.synchronization",
            "main.consistent_snapshot",
            "main.drop",
            "main.timeout",
            "main.sp-row",
        ],
        "620",
        1,
    );
}

/// Runs scripts/compat with `args` (ports from build thread `build_thread` up) and asserts a
/// table of `protocols` rows, each with nothing lost and nothing hung.
fn run_compat(name: &str, args: &[&str], build_thread: &str, protocols: usize) {
    assert!(
        Path::new(MTR).exists(),
        "MariaDB's test suite is missing ({MTR}): install it with \
         `sudo apt-get install mariadb-test patch` or `scripts/install-deps`"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let out_dir = tempfile_dir(name);
    let stdout = out_dir.join("compat.out");
    let child = Command::new("python3")
        .arg(Path::new(root).join("scripts/compat"))
        .args(["--switchyard", env!("CARGO_BIN_EXE_switchyard")])
        .args(args)
        .args(["--markdown", out_dir.join("compat.md").to_str().unwrap()])
        .env("COMPAT_BUILD_THREAD", build_thread)
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
    assert_eq!(rows.len(), protocols, "a row per protocol:\n{report}");
    let wanted = args.iter().filter(|a| a.starts_with("main.")).count();
    for r in &rows {
        let run: usize = r[1].parse().unwrap();
        let passed_directly: usize = r[2].parse().unwrap();
        let least = if wanted > 0 { wanted } else { 20 };
        assert!(
            run >= least && passed_directly >= least,
            "the list ran and passed directly: {r:?}"
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
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("compat-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
