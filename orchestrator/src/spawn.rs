//! Starting external programs (hooks, integration scripts).

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Spawns `cmd`, trying again for a moment while its file is busy (`ETXTBSY`): a program that
/// was just written can still be open for writing in a child process that another thread is
/// starting at that instant (the descriptor closes when that child execs).
pub async fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}

/// Waits at most `limit` for `child`, started from `path` with `kill_on_drop` (so that it is
/// killed on a timeout). `Err` says why it failed: the timeout, the wait itself, or a non-zero
/// exit with the last `tail` characters of its output (standard error, then standard output).
pub async fn finish(path: &Path, child: Child, limit: Duration, tail: usize) -> Result<(), String> {
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{}: still running after {} ms, killed",
            path.display(),
            limit.as_millis()
        )),
        Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            let text = text.trim();
            let end = match text.char_indices().rev().nth(tail.saturating_sub(1)) {
                Some((i, _)) => &text[i..],
                None => text,
            };
            Err(format!("{}: {}: {end}", path.display(), out.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[tokio::test]
    async fn a_failure_keeps_the_end_of_the_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf 'abcdefghij' >&2; exit 4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = spawn(&mut cmd).await.expect("sh starts");
        let err = finish(Path::new("sh"), child, Duration::from_secs(10), 4)
            .await
            .expect_err("exit 4");
        assert!(err.ends_with("exit status: 4: ghij"), "{err}");
    }
}
