//! `switchyard scenario` as an operator runs it: the real binary lists the scenarios, runs
//! one on its own fresh servers printing each step, and exits non-zero on an unknown name or
//! a failure. The other scenarios run in-process in `tests/faults.rs`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs the binary with `args`, killed if it is still running after `limit`.
fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchyard binary starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("waiting for switchyard").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaping switchyard");
            panic!(
                "switchyard {args:?} still running after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("reaping switchyard")
}

#[test]
fn scenarios_are_listed_and_run_from_the_command_line() {
    let out = run(&["scenario", "list"], Duration::from_secs(10));
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    for name in [
        "kill-leader",
        "freeze-leader",
        "partition-leader",
        "disk-full-leader",
        "router-cut",
        "orchestrator-cut",
        "switchover",
    ] {
        assert!(list.contains(name), "{name} missing from:\n{list}");
    }

    let out = run(
        &["scenario", "run", "no-such-thing"],
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no scenario \"no-such-thing\""), "{err}");

    let out = run(&["scenario", "run"], Duration::from_secs(10));
    assert!(!out.status.success(), "nothing named, no --all: refused");

    let out = run(
        &["scenario", "run", "kill-leader"],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("== kill-leader: PASS"), "{stdout}");
    for step in [
        "fault: kill -9 of",
        "new leader",
        "no acknowledged write lost",
        "converged",
        "still leads at epoch 2",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
