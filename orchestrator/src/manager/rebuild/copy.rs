//! The copy of a rebuild: `mariadb-dump` on the source piped into the `mariadb` client on the
//! target, both over TCP with the orchestrator's login (a logical copy), or a `mariadb-backup`
//! stream into the program that restores it on the target (a physical one, see
//! [`super::physical`]); the bytes counted on their way through this process. Passwords go in
//! `MYSQL_PWD`, never on a command line `ps` shows.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::tls::NodeTls;

/// The dump program (MariaDB's `mysqldump`).
pub(crate) const DUMP_PROGRAM: &str = "mariadb-dump";
/// The client program that loads the dump.
pub(crate) const LOAD_PROGRAM: &str = "mariadb";
/// How much of each program's stderr is kept for the error (its end).
const STDERR_KEPT: usize = 4096;
/// How long a line of a program's stderr may be in an error (characters).
const LINE_KEPT: usize = 300;
/// How much of the end of the dump is kept, to read the position it sets.
const DUMP_TAIL: usize = 8192;
/// Both programs send and accept statements up to this size (the server's own
/// `max_allowed_packet` still applies).
const MAX_PACKET: &str = "--max-allowed-packet=1073741824";

/// Where a program connects and how.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub connect_timeout: Duration,
    pub tls: &'a NodeTls,
}

impl Endpoint<'_> {
    /// The connection arguments of `mariadb-binlog` (the same as the other programs').
    pub(crate) fn binlog_args(&self) -> Vec<String> {
        self.args()
    }

    /// The connection arguments, the same for both programs. `--no-defaults` first (it must be
    /// the first argument): no option file of the machine changes what runs.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--no-defaults".to_owned(),
            "--protocol=TCP".to_owned(),
            format!("--host={}", self.host),
            format!("--port={}", self.port),
            format!("--user={}", self.user),
        ];
        match self.tls {
            NodeTls::Disabled => args.push("--skip-ssl".to_owned()),
            // The clients' own default: TLS when the server offers it, unchecked.
            NodeTls::Preferred => {}
            NodeTls::Required => args.push("--ssl".to_owned()),
            NodeTls::VerifyCa(ca) => {
                args.push("--ssl".to_owned());
                args.push(format!("--ssl-ca={}", ca.display()));
                args.push("--ssl-verify-server-cert".to_owned());
            }
        }
        args
    }
}

/// The arguments of the dump on the source:
///
/// - `--single-transaction`: one consistent InnoDB snapshot, no lock held on the source
///   (with `--master-data` MariaDB's dump reads the snapshot's own binlog position,
///   `binlog_snapshot_file`/`_pos` turned into a GTID position by `BINLOG_GTID_POS()`, with no
///   `FLUSH TABLES WITH READ LOCK`: a replica source keeps applying, a leader keeps writing);
/// - `--gtid --master-data=2`: the dump ends with the snapshot's position as a comment,
///   `-- SET GLOBAL gtid_slave_pos='<position>';`, the position the target then replicates
///   from. Commented (`=1` would run it), because the orchestrator sets it itself once the
///   load is complete: until then the target's binlog carries the rebuild's mark (see
///   `rebuild::mark`), and MariaDB refuses a `gtid_slave_pos` without the binlog's domains
///   (error 1948);
/// - `--all-databases --ignore-database=mysql`: every database but the system schema (the
///   dump leaves out `information_schema`, `performance_schema` and `sys` by itself). The
///   `mysql` schema stays the target's own: copying its tables would overwrite
///   `mysql.gtid_slave_pos` with the source's rows (the position the target would come back
///   with after a restart, instead of the one the dump sets), the privilege tables under the
///   logged-in session, and the InnoDB statistics. Accounts are cluster state that replicates
///   as statements (`CREATE USER`, `GRANT`), which the target has applied up to where it left
///   the leader. `--system=users` would copy accounts as statements, but its `GRANT PROXY ON
///   ''@'%' TO root@localhost` is refused to any other user (error 1698), which stops the load;
///   so accounts created on the leader while the node was out are not copied;
/// - `--routines --events --triggers`: stored code goes with its database (dropping a database
///   drops its routines and events, so they must come back with it);
/// - `--skip-add-locks`: no `LOCK TABLES` around each table's rows; nobody else writes to the
///   read-only target;
/// - `--hex-blob`: binary columns as hex literals, whatever the connection character set.
pub(crate) fn dump_args(source: &Endpoint<'_>) -> Vec<String> {
    let mut args = source.args();
    args.extend(
        [
            "--single-transaction",
            "--gtid",
            "--master-data=2",
            "--all-databases",
            "--ignore-database=mysql",
            "--routines",
            "--events",
            "--triggers",
            "--skip-add-locks",
            "--hex-blob",
            MAX_PACKET,
        ]
        .map(str::to_owned),
    );
    args
}

/// The arguments of the client loading the dump into the target: nothing it loads goes to the
/// target's binlog (`sql_log_bin=0` in the session: the rows already have their GTIDs on the
/// leader, and binlogging them again would give the target thousands of transactions of its
/// own, errant to the leader); `--binary-mode` so that the dump's bytes reach the server as they
/// are; no reconnect halfway through a load.
/// (`mariadb-dump` 10.11 has no connect timeout option: its connect is bounded by the copy's.)
pub(crate) fn load_args(target: &Endpoint<'_>) -> Vec<String> {
    let mut args = target.args();
    args.push(format!(
        "--connect-timeout={}",
        target.connect_timeout.as_secs().max(1)
    ));
    args.extend(
        [
            "--batch",
            "--binary-mode",
            "--skip-reconnect",
            "--init-command=SET SESSION sql_log_bin=0",
            MAX_PACKET,
        ]
        .map(str::to_owned),
    );
    args
}

/// A program to run: what it is called in errors, its path, arguments and environment (the
/// password is added as `MYSQL_PWD`).
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Program {
    pub(crate) fn new(program: impl Into<String>, args: Vec<String>) -> Program {
        Program {
            program: program.into(),
            args,
            env: Vec::new(),
        }
    }

    pub(crate) fn env(mut self, name: &str, value: impl Into<String>) -> Program {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Starts it with `password` in `MYSQL_PWD`, its stderr piped, killed when dropped.
    fn spawn(&self, password: &str, stdin: Stdio, stdout: Stdio) -> Result<Child, CopyError> {
        Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("MYSQL_PWD", password)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CopyError::Spawn {
                program: self.program.clone(),
                why: e.to_string(),
            })
    }
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copied {
    pub bytes: u64,
    /// The snapshot's position, from the dump's last lines (`-- SET GLOBAL gtid_slave_pos`);
    /// `None` when the dump did not end with it.
    pub position: Option<String>,
    /// The end of what the source program wrote to stderr (a backup's log names its position).
    pub from_stderr: String,
}

/// The position in `SET GLOBAL gtid_slave_pos='...'` (commented or not), near the dump's end,
/// if `tail` (the end of the dump) holds it.
pub(crate) fn dumped_position(tail: &str) -> Option<String> {
    const SET: &str = "SET GLOBAL gtid_slave_pos='";
    let start = tail.rfind(SET)? + SET.len();
    let len = tail[start..].find('\'')?;
    Some(tail[start..start + len].to_owned())
}

/// Why the copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// A program could not be started.
    Spawn { program: String, why: String },
    /// The copy was not over in time; both programs were killed.
    Timeout,
    /// A program failed: which, how, and the end of its stderr.
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    /// Reading from the dump or writing to the client failed, with both programs' stderr.
    Pipe { why: String, stderr: String },
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Spawn { program, why } => write!(f, "could not run {program}: {why}"),
            CopyError::Timeout => write!(f, "timed out; both programs were killed"),
            CopyError::Failed {
                program,
                status,
                stderr,
            } => write!(f, "{program} {status}: {}", one_line(stderr)),
            CopyError::Pipe { why, stderr } => write!(f, "{why}: {}", one_line(stderr)),
        }
    }
}

/// What a program's stderr says went wrong, on one line: its error lines (the client echoes
/// the failing statement before its `ERROR ... at line N`, and a statement carries rows, which
/// have no place in an error message), else its last line; each cut at [`LINE_KEPT`] bytes.
fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("ERROR") || l.contains("error:") || l.contains("Error:"))
        .collect();
    let picked: Vec<&str> = if errors.is_empty() {
        lines.last().copied().into_iter().collect()
    } else {
        errors[errors.len().saturating_sub(3)..].to_vec()
    };
    if picked.is_empty() {
        return "(nothing on stderr)".to_owned();
    }
    picked
        .iter()
        .map(|l| match l.char_indices().nth(LINE_KEPT) {
            Some((at, _)) => format!("{}...", &l[..at]),
            None => (*l).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `dump` (on the source) into `load` (on the target), both with the password in
/// `MYSQL_PWD`, until `deadline` (both are killed then, and when this future is dropped).
/// `progress` is called with the bytes copied so far every `every`.
pub(crate) async fn copy_with(
    dump: Program,
    load: Program,
    password: &str,
    deadline: Instant,
    every: Duration,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Copied, CopyError> {
    let (dump_name, load_name) = (dump.program.as_str(), load.program.as_str());
    let mut dumper = dump.spawn(password, Stdio::null(), Stdio::piped())?;
    let mut loader = load.spawn(password, Stdio::piped(), Stdio::null())?;
    let dump_err = Tail::start(dumper.stderr.take());
    let load_err = Tail::start(loader.stderr.take());
    let (Some(mut from), Some(mut into)) = (dumper.stdout.take(), loader.stdin.take()) else {
        return Err(CopyError::Pipe {
            why: "the programs' pipes are missing".to_owned(),
            stderr: String::new(),
        });
    };

    // `move`: both pipe ends close when the copy stops, so that a dump whose client died
    // gets an error writing instead of waiting on a full pipe.
    let piped = tokio::time::timeout_at(deadline, async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        let mut tail: Vec<u8> = Vec::with_capacity(2 * DUMP_TAIL);
        let mut next_report = Instant::now() + every;
        loop {
            let n = from.read(&mut buf).await.map_err(|e| (dump_name, e))?;
            if n == 0 {
                break;
            }
            into.write_all(&buf[..n])
                .await
                .map_err(|e| (load_name, e))?;
            copied += n as u64;
            tail.extend_from_slice(&buf[n.saturating_sub(DUMP_TAIL)..n]);
            if tail.len() > DUMP_TAIL {
                tail.drain(..tail.len() - DUMP_TAIL);
            }
            if Instant::now() >= next_report {
                progress(copied);
                next_report = Instant::now() + every;
            }
        }
        // End of input: the client ends once it has run the last statement.
        into.shutdown().await.map_err(|e| (load_name, e))?;
        drop(into);
        Ok::<_, (&str, std::io::Error)>((copied, dumped_position(&String::from_utf8_lossy(&tail))))
    })
    .await;
    let piped = match piped {
        Err(_) => {
            kill(&mut dumper, &mut loader).await;
            return Err(CopyError::Timeout);
        }
        Ok(r) => r,
    };
    let statuses = tokio::time::timeout_at(deadline, async {
        let d = dumper.wait().await;
        let l = loader.wait().await;
        (d, l)
    })
    .await;
    let Ok((dump_status, load_status)) = statuses else {
        kill(&mut dumper, &mut loader).await;
        return Err(CopyError::Timeout);
    };
    // Both have exited: their stderr pipes close with them (unless a process they started
    // keeps one: a server a restore program starts).
    let dump_err = dump_err.finish().await;
    let load_err = load_err.finish().await;
    let failed = |program: &str, status: std::io::Result<ExitStatus>, stderr: String| {
        let status = match status {
            Ok(s) if s.success() => return None,
            Ok(s) => s.to_string(),
            Err(e) => format!("could not be waited for ({e})"),
        };
        Some(CopyError::Failed {
            program: program.to_owned(),
            status,
            stderr,
        })
    };
    // The client's failure first: a dump cut off by a client that stopped reading says only
    // that it could not write.
    if let Some(e) = failed(load_name, load_status, load_err.clone()) {
        return Err(e);
    }
    if let Some(e) = failed(dump_name, dump_status, dump_err.clone()) {
        return Err(e);
    }
    match piped {
        Ok((bytes, position)) => Ok(Copied {
            bytes,
            position,
            from_stderr: dump_err,
        }),
        Err((program, e)) => Err(CopyError::Pipe {
            why: format!("{program}'s pipe: {e}"),
            stderr: format!("{dump_name}: {dump_err}; {load_name}: {load_err}"),
        }),
    }
}

/// Runs `program` on the output of `from`, as [`copy_with`] does with the dump and the load, with
/// no progress report (a rewind's flashback into the client).
pub(crate) async fn pipe(
    from: Program,
    into: Program,
    password: &str,
    deadline: Instant,
) -> Result<Copied, CopyError> {
    let never = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    copy_with(from, into, password, deadline, never, &mut |_| {}).await
}

/// Runs `program` with the password in `MYSQL_PWD` until `deadline` (killed then, and when
/// this future is dropped), and returns what it wrote to stdout.
pub(crate) async fn output(
    program: Program,
    password: &str,
    deadline: Instant,
) -> Result<String, CopyError> {
    let child = program.spawn(password, Stdio::null(), Stdio::piped())?;
    let program = program.program.as_str();
    let out = match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
        Err(_) => return Err(CopyError::Timeout),
        Ok(Err(e)) => {
            return Err(CopyError::Failed {
                program: program.to_owned(),
                status: format!("could not be waited for ({e})"),
                stderr: String::new(),
            })
        }
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let kept = stderr.len().saturating_sub(STDERR_KEPT);
        return Err(CopyError::Failed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: stderr[stderr.ceil_char_boundary(kept)..].to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills both programs and reaps them.
async fn kill(a: &mut Child, b: &mut Child) {
    let _ = a.kill().await;
    let _ = b.kill().await;
}

/// How long a program's stderr may stay open after the program exited (held by a process it
/// started) before what was read of it is taken as all of it.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// A program's stderr read to its end in a task, keeping the last [`STDERR_KEPT`] bytes.
struct Tail {
    kept: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tail {
    fn start(stderr: Option<impl AsyncRead + Unpin + Send + 'static>) -> Tail {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let into = kept.clone();
        let task = tokio::spawn(async move {
            let Some(mut stderr) = stderr else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEPT {
                    let cut = kept.len() - STDERR_KEPT;
                    kept.drain(..cut);
                }
            }
        });
        Tail { kept, task }
    }

    /// What was read, once the pipe closed or [`STDERR_GRACE`] passed.
    async fn finish(mut self) -> String {
        if tokio::time::timeout(STDERR_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(tls: &NodeTls) -> Endpoint<'_> {
        Endpoint {
            host: "127.0.0.1",
            port: 3307,
            user: "switchyard",
            connect_timeout: Duration::from_millis(1500),
            tls,
        }
    }

    #[test]
    fn dump_arguments_carry_no_password_and_skip_the_system_schema() {
        let args = dump_args(&endpoint(&NodeTls::Disabled));
        assert_eq!(args[0], "--no-defaults", "must come first");
        for want in [
            "--protocol=TCP",
            "--host=127.0.0.1",
            "--port=3307",
            "--user=switchyard",
            "--skip-ssl",
            "--single-transaction",
            "--gtid",
            "--master-data=2",
            "--all-databases",
            "--ignore-database=mysql",
            "--routines",
            "--events",
            "--triggers",
            "--skip-add-locks",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--password") || a.starts_with("-p")),
            "{args:?}"
        );
    }

    #[test]
    fn load_arguments_turn_the_binlog_off_for_the_session() {
        let args = load_args(&endpoint(&NodeTls::Disabled));
        assert_eq!(args[0], "--no-defaults");
        assert!(args.contains(&"--init-command=SET SESSION sql_log_bin=0".to_owned()));
        assert!(args.contains(&"--binary-mode".to_owned()));
        assert!(args.contains(&"--skip-reconnect".to_owned()));
        assert!(args.contains(&"--connect-timeout=1".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("--password")));
    }

    #[test]
    fn tls_settings_become_client_options() {
        let has = |tls: &NodeTls, opt: &str| endpoint(tls).args().iter().any(|a| a == opt);
        assert!(has(&NodeTls::Disabled, "--skip-ssl"));
        let preferred = endpoint(&NodeTls::Preferred).args();
        assert!(
            !preferred.iter().any(|a| a.contains("ssl")),
            "{preferred:?}"
        );
        assert!(has(&NodeTls::Required, "--ssl"));
        assert!(!has(&NodeTls::Required, "--ssl-verify-server-cert"));
        let ca = NodeTls::VerifyCa("/etc/ca.pem".into());
        assert!(has(&ca, "--ssl-ca=/etc/ca.pem"));
        assert!(has(&ca, "--ssl-verify-server-cert"));
    }

    fn sh(script: &str) -> Program {
        Program::new("sh", vec!["-c".to_owned(), script.to_owned()])
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(20)
    }

    #[tokio::test]
    async fn copies_every_byte_and_passes_the_password_in_the_environment() {
        let out = tempfile::NamedTempFile::new().unwrap();
        let load = format!("cat > {}", out.path().display());
        let mut reports = Vec::new();
        let copied = copy_with(
            sh("printf %s \"$MYSQL_PWD\"; head -c 300000 /dev/zero"),
            sh(&load),
            "s3cret",
            far(),
            Duration::ZERO,
            &mut |n| reports.push(n),
        )
        .await
        .unwrap();
        assert_eq!(copied.bytes, 300_006);
        assert_eq!(copied.position, None);
        let written = std::fs::read(out.path()).unwrap();
        assert_eq!(written.len(), 300_006);
        assert!(written.starts_with(b"s3cret"));
        assert!(!reports.is_empty(), "progress reported");
        assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
    }

    #[tokio::test]
    async fn the_source_log_is_kept_and_a_process_left_holding_stderr_does_not_hold_the_copy() {
        let started = std::time::Instant::now();
        let copied = copy_with(
            sh("echo data; echo 'GTID of the last change' >&2"),
            sh("cat > /dev/null; (sleep 5 &) ; echo restored >&2"),
            "pw",
            far(),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(copied.from_stderr, "GTID of the last change\n");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_position_is_read_from_the_end_of_a_long_dump() {
        let copied = copy_with(
            sh("head -c 100000 /dev/zero | tr '\\0' x; \
                printf \"\\nSET GLOBAL gtid_slave_pos='0-1-42';\\n-- Dump completed\\n\""),
            sh("cat > /dev/null"),
            "pw",
            far(),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(copied.position.as_deref(), Some("0-1-42"));
    }

    #[test]
    fn the_dumped_position_is_read_from_the_end_of_the_dump() {
        let tail = "-- Preferably use GTID to start replication from GTID position:\n\n\
                    -- SET GLOBAL gtid_slave_pos='0-1-10,1-2-3';\n\
                    /*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed\n";
        assert_eq!(dumped_position(tail).as_deref(), Some("0-1-10,1-2-3"));
        assert_eq!(
            dumped_position("SET GLOBAL gtid_slave_pos='';").as_deref(),
            Some("")
        );
        assert_eq!(dumped_position("INSERT INTO t VALUES (1);"), None);
        assert_eq!(dumped_position("SET GLOBAL gtid_slave_pos='0-1-"), None);
    }

    #[tokio::test]
    async fn a_failing_program_is_named_with_its_stderr() {
        let e = copy_with(
            sh("echo 'Got error: 1045: Access denied' >&2; exit 2"),
            sh("cat > /dev/null"),
            "pw",
            far(),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sh exit status: 2"), "{e}");
        assert!(e.contains("Access denied"), "{e}");

        let e = copy_with(
            sh("echo 'CREATE TABLE t;'"),
            sh("cat > /dev/null; echo 'ERROR 1064 (42000) at line 1' >&2; exit 1"),
            "pw",
            far(),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("ERROR 1064"), "{e}");
    }

    #[test]
    fn errors_name_the_error_lines_not_the_rows() {
        let stderr = "--------------\nINSERT INTO `t` VALUES (1,'secret')\n--------------\n\n\
                      ERROR 2006 (HY000) at line 57: Server has gone away\n";
        assert_eq!(
            one_line(stderr),
            "ERROR 2006 (HY000) at line 57: Server has gone away"
        );
        let dump = "mariadb-dump: Got error: 1045: \"Access denied\" when trying to connect\n";
        assert_eq!(one_line(dump), dump.trim());
        assert_eq!(one_line("just this\n"), "just this");
        assert_eq!(one_line(" \n"), "(nothing on stderr)");
        let long = format!("ERROR 1064 {}", "y".repeat(1000));
        assert_eq!(one_line(&long).len(), LINE_KEPT + 3);
    }

    #[tokio::test]
    async fn a_copy_past_its_deadline_is_killed() {
        let started = std::time::Instant::now();
        let e = copy_with(
            sh("exec sleep 30"),
            sh("cat > /dev/null"),
            "pw",
            Instant::now() + Duration::from_millis(300),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CopyError::Timeout), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
