//! Running an operator's hook script: arguments and environment describe the event, the
//! script is killed when it overruns, and its failure is reported, never fatal.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What a hook is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HookCall<'a> {
    pub event: &'a str,
    pub cluster: &'a str,
    pub old_leader: &'a str,
    pub new_leader: &'a str,
}

/// How much of a failing hook's output goes into the event.
const OUTPUT_TAIL: usize = 400;

/// Runs `path` with `<event> <cluster> <old_leader> <new_leader>` and the `SWITCHYARD_*`
/// environment, killing it after `limit`. `Err` says why it failed (start failure, non-zero
/// exit with the end of its output, or timeout).
pub(crate) async fn run_hook(
    path: &Path,
    call: HookCall<'_>,
    limit: Duration,
) -> Result<(), String> {
    let mut cmd = Command::new(path);
    cmd.args([call.event, call.cluster, call.old_leader, call.new_leader])
        .env("SWITCHYARD_EVENT", call.event)
        .env("SWITCHYARD_CLUSTER", call.cluster)
        .env("SWITCHYARD_OLD_LEADER", call.old_leader)
        .env("SWITCHYARD_NEW_LEADER", call.new_leader)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the child on timeout kills it.
        .kill_on_drop(true);
    let child = crate::spawn::spawn(&mut cmd)
        .await
        .map_err(|e| format!("{}: cannot start: {e}", path.display()))?;
    crate::spawn::finish(path, child, limit, OUTPUT_TAIL).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    const CALL: HookCall<'static> = HookCall {
        event: "vip_add",
        cluster: "c1",
        old_leader: "127.0.0.1:1",
        new_leader: "127.0.0.1:2",
    };

    #[tokio::test]
    async fn passes_arguments_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let hook = script(
            dir.path(),
            "ok.sh",
            &format!(
                "echo \"$@|$SWITCHYARD_EVENT $SWITCHYARD_CLUSTER $SWITCHYARD_OLD_LEADER \
                 $SWITCHYARD_NEW_LEADER\" > {}",
                out.display()
            ),
        );
        run_hook(&hook, CALL, Duration::from_secs(5))
            .await
            .expect("hook succeeds");
        let got = std::fs::read_to_string(&out).expect("hook wrote");
        assert_eq!(
            got.trim(),
            "vip_add c1 127.0.0.1:1 127.0.0.1:2|vip_add c1 127.0.0.1:1 127.0.0.1:2"
        );
    }

    #[tokio::test]
    async fn failures_say_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let failing = script(dir.path(), "fail.sh", "echo no vip here >&2; exit 3");
        let err = run_hook(&failing, CALL, Duration::from_secs(5))
            .await
            .expect_err("non-zero exit");
        assert!(
            err.contains("exit status: 3") && err.contains("no vip here"),
            "{err}"
        );

        let slow = script(dir.path(), "slow.sh", "exec sleep 30");
        let err = run_hook(&slow, CALL, Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(err.contains("killed"), "{err}");

        let missing = run_hook(&dir.path().join("nope"), CALL, Duration::from_secs(1))
            .await
            .expect_err("missing");
        assert!(missing.contains("cannot start"), "{missing}");
    }
}
