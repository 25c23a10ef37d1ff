//! One `mariadbd` child process: its command line, start-up with a readiness deadline, and
//! the guard that kills it. Also clears leftovers of a crashed run (a live server still
//! holding a datadir we are about to use).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use mysql_async::{Conn, OptsBuilder};
use tokio::time::Instant;

use super::mariadb::{running_as_root, Mariadb};
use super::{LocalNode, ProvisionError, ServerSsl};

/// How often start-up and shutdown are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a server may take to accept connections. Generous: many tests start servers at
/// once on a small machine.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The per-start settings that vary with the node's role.
#[derive(Debug, Clone)]
pub(crate) struct ServerRole {
    /// Start with `read_only=1` (every node but the leader).
    pub read_only: bool,
    /// Turn on the semi-sync replica side (`rpl_semi_sync_slave_enabled`).
    pub semi_sync: bool,
    /// With `semi_sync`, recover from a crash as a semi-sync replica (`--init-rpl-role=SLAVE`):
    /// binlogged transactions no replica acknowledged are rolled back. Off for a second try
    /// when the server refuses that recovery (see [`TRUNCATION_REFUSED`]).
    pub truncate_unacknowledged: bool,
    /// Do not resume replication at boot: a full restart starts the replicas' threads itself
    /// once their leader is up, instead of waiting out a failed first connect and a retry.
    pub skip_slave_start: bool,
    /// TLS certificate, key and CA (the spec's, the same for every node).
    pub ssl: Option<ServerSsl>,
    /// The binary log on a filesystem of its own of this many MiB at [`LocalNode::binlog_dir`].
    pub binlog_disk_mb: Option<u32>,
}

/// The `mariadbd` command line for `node`.
///
/// `--no-defaults` must be first (it is only honoured there) and `--log-basename` must come
/// before the other log options, which it would otherwise override.
pub(crate) fn server_args(node: &LocalNode, role: &ServerRole, as_root: bool) -> Vec<OsString> {
    let path_arg = |name: &str, path: &Path| {
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(path);
        arg
    };
    let mut args: Vec<OsString> = vec!["--no-defaults".into(), "--log-basename=node".into()];
    if as_root {
        args.push("--user=root".into());
    }
    args.push(path_arg("datadir", &node.datadir));
    args.push(path_arg("socket", &node.socket));
    args.push(path_arg("pid-file", &node.datadir.join(PID_FILE)));
    args.push(path_arg("log-error", &node.datadir.join(ERROR_LOG)));
    args.push(path_arg("tmpdir", &node.tmp_dir()));
    let owned = [
        "--bind-address=127.0.0.1".to_owned(),
        format!("--port={}", node.port),
        format!("--server-id={}", node.server_id),
        "--skip-name-resolve".into(),
        match role.binlog_disk_mb {
            Some(_) => format!("--log-bin={}/node-bin", node.binlog_dir().display()),
            None => "--log-bin=node-bin".into(),
        },
        "--relay-log=node-relay-bin".into(),
        "--binlog-format=ROW".into(),
        // Column names and signedness in every table map: what a data move (resharding,
        // MoveTables) needs to read row events without guessing.
        "--binlog-row-metadata=FULL".into(),
        "--log-slave-updates=1".into(),
        "--gtid-strict-mode=1".into(),
        // Heartbeats come every 0.5 s (set in CHANGE MASTER): the monitor sees a replica's
        // stream stall after 1.5 s of silence, while its IO thread is still connected (and
        // so can be stopped at once: one reconnecting to a hung semi-sync source makes
        // `STOP SLAVE` wait 2 s). A crashed leader resets the connection and is noticed at
        // once; a hung one that the monitor missed, after this network timeout.
        "--slave-net-timeout=4".into(),
        "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
        format!("--rpl-semi-sync-slave-enabled={}", u8::from(role.semi_sync)),
        format!("--read-only={}", u8::from(role.read_only)),
        // Debian's packaged defaults; without a config file the server would use latin1.
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        // Light servers: many run at once on a test machine.
        "--innodb-buffer-pool-size=32M".into(),
        "--innodb-log-file-size=16M".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--max-connections=1000".into(),
        "--performance-schema=OFF".into(),
    ];
    args.extend(owned.into_iter().map(OsString::from));
    if role.skip_slave_start {
        args.push("--skip-slave-start".into());
    }
    if role.semi_sync && role.truncate_unacknowledged {
        // Crash recovery as a semi-sync replica: a former leader killed after writing a
        // transaction to its binlog but before any replica acknowledged it rolls that
        // transaction back instead of committing it, so it can rejoin the new leader.
        args.push("--init-rpl-role=SLAVE".into());
    }
    if let Some(ssl) = &role.ssl {
        args.push(path_arg("ssl-cert", &ssl.cert));
        args.push(path_arg("ssl-key", &ssl.key));
        if let Some(ca) = &ssl.ca {
            args.push(path_arg("ssl-ca", ca));
        }
    }
    args
}

/// What `mariadbd` logs when it cannot recover as a semi-sync replica: an event it may not
/// cut off (a prepared XA transaction, a DDL) follows the first transaction to roll back. It
/// then refuses to start at all.
pub(crate) const TRUNCATION_REFUSED: &str = "Cannot truncate the binary log";

pub(crate) const PID_FILE: &str = "mariadbd.pid";
pub(crate) const ERROR_LOG: &str = "error.log";
/// The server's stdout/stderr (a few messages come before the error log is open).
const CONSOLE_LOG: &str = "console.log";

/// A running `mariadbd` this handle started. Dropping it kills and reaps the process, so a
/// panicking test or a failed start-up leaves no server behind.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    child: Child,
    exited: Option<ExitStatus>,
    /// Killed because it did not stop in time after SIGTERM.
    forced: bool,
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended (reaping it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends a signal unless the process has already been reaped (its pid may be reused).
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_exited().is_none() {
            // SAFETY: kill(2) on our own, not yet reaped child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Whether [`terminate_all`] had to kill it.
    pub fn killed_after_timeout(&self) -> bool {
        self.forced
    }

    /// SIGKILL and reap. Blocks only for the moment the kernel needs to tear the process down.
    pub fn kill_and_wait(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// Why a start attempt failed.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// The port was taken: the caller may retry on another one.
    PortInUse,
    Other(ProvisionError),
}

impl From<ProvisionError> for StartFailure {
    fn from(e: ProvisionError) -> Self {
        StartFailure::Other(e)
    }
}

/// Starts `node` and waits until it accepts connections on its unix socket.
pub(crate) async fn start_server(
    mariadb: &Mariadb,
    node: &LocalNode,
    role: ServerRole,
) -> Result<NodeProcess, StartFailure> {
    kill_stale_server(&node.datadir).await?;
    if let Some(mb) = role.binlog_disk_mb {
        mount_binlog_disk(&node.binlog_dir(), mb)?;
    }
    fs::create_dir_all(node.tmp_dir())
        .map_err(|e| ProvisionError::io(format!("creating {}", node.tmp_dir().display()), e))?;
    let error_log = node.datadir.join(ERROR_LOG);
    // Only what this attempt writes counts: the log keeps earlier runs' messages.
    let log_offset = fs::metadata(&error_log).map(|m| m.len()).unwrap_or(0);
    let console = fs::File::options()
        .create(true)
        .append(true)
        .open(node.datadir.join(CONSOLE_LOG))
        .map_err(|e| ProvisionError::io(format!("opening the console log of {}", node.addr), e))?;
    let console_err = console
        .try_clone()
        .map_err(|e| ProvisionError::io("duplicating a file descriptor", e))?;
    let child = Command::new(&mariadb.mariadbd)
        .args(server_args(node, &role, running_as_root()))
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .spawn()
        .map_err(|e| ProvisionError::io(format!("starting {}", mariadb.mariadbd.display()), e))?;
    let mut process = NodeProcess {
        child,
        exited: None,
        forced: false,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = process.try_exited() {
            let tail = read_from(&error_log, log_offset);
            if tail.contains("Address already in use") {
                return Err(StartFailure::PortInUse);
            }
            return Err(ProvisionError::ServerExited {
                addr: node.addr.clone(),
                status: status.to_string(),
                log: error_log.display().to_string(),
                tail: last_lines(&tail, 20),
            }
            .into());
        }
        if ping_socket(&node.socket).await {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err(ProvisionError::Timeout {
                what: format!(
                    "{} to accept connections (see {})",
                    node.addr,
                    error_log.display()
                ),
                after: READY_TIMEOUT,
            }
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Mounts a filesystem of its own of `mb` MiB at `dir` (created if needed), unless one is
/// mounted there already (a restarted node keeps its binary log): ext4 in an image file beside
/// `dir` (`DIR.img`) on a loop device, without reserved blocks, so that a fault can fill it or
/// freeze it (`fsfreeze`, which tmpfs does not support). Needs root and e2fsprogs.
pub(crate) fn mount_binlog_disk(dir: &Path, mb: u32) -> Result<(), ProvisionError> {
    fs::create_dir_all(dir)
        .map_err(|e| ProvisionError::io(format!("creating {}", dir.display()), e))?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let image = binlog_image(dir);
    let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<(), ProvisionError> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| ProvisionError::io(format!("running {program} (needs root)"), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ProvisionError::Mariadb {
                message: format!(
                    "{program} for the binary log's disk at {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    };
    if !image.exists() {
        let file = fs::File::create(&image)
            .map_err(|e| ProvisionError::io(format!("creating {}", image.display()), e))?;
        file.set_len(u64::from(mb) * 1024 * 1024)
            .map_err(|e| ProvisionError::io(format!("sizing {}", image.display()), e))?;
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                image.as_os_str(),
            ],
        )?;
    }
    run(
        "mount",
        &[
            "-o".as_ref(),
            "loop".as_ref(),
            image.as_os_str(),
            dir.as_os_str(),
        ],
    )
}

/// The image file of a binary log's own disk.
fn binlog_image(dir: &Path) -> std::path::PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".img");
    name.into()
}

/// Unmounts what [`mount_binlog_disk`] mounted (lazily: a server being reaped may still hold
/// files there; the loop device goes with it) and removes its image. Nothing mounted is not
/// an error.
pub(crate) fn unmount_binlog_disk(dir: &Path) {
    if is_mount_point(dir) {
        // A frozen filesystem would keep its writers waiting forever.
        let _ = Command::new("fsfreeze").arg("-u").arg(dir).output();
        match Command::new("umount").arg("-l").arg(dir).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                dir = %dir.display(),
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "unmounting the binary log's disk"
            ),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "unmounting"),
        }
    }
    let _ = fs::remove_file(binlog_image(dir));
}

/// Whether `dir` is on another filesystem than its parent.
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(dir), dir.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Opens a bootstrap connection: root, passwordless, over the node's unix socket. Root has no
/// password but exists only as `root@localhost`, which `--skip-name-resolve` makes unreachable
/// over TCP.
pub(crate) fn socket_opts(socket: &Path) -> OptsBuilder {
    OptsBuilder::default()
        .socket(Some(socket.to_string_lossy()))
        .user(Some("root"))
        .prefer_socket(false)
}

async fn ping_socket(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(2), Conn::new(socket_opts(socket))).await {
        Ok(Ok(conn)) => {
            let _ = conn.disconnect().await;
            true
        }
        _ => false,
    }
}

/// Sends SIGTERM to every process and waits for them all; any still running after `timeout`
/// are killed.
pub(crate) async fn terminate_all(processes: &mut [&mut NodeProcess], timeout: Duration) {
    for p in processes.iter_mut() {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = 0;
        for p in processes.iter_mut() {
            if p.try_exited().is_none() {
                running += 1;
            }
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    for p in processes.iter_mut() {
        if p.try_exited().is_none() {
            tracing::warn!(pid = p.pid(), "mariadbd did not stop in time; killing it");
            p.forced = true;
            p.kill_and_wait();
        }
    }
}

/// The pid of a live `mariadbd` serving `datadir`, as its pid file names it.
fn server_on(datadir: &Path) -> Option<libc::pid_t> {
    fs::read_to_string(datadir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 0 && is_server_for(*pid, datadir))
}

/// Signals the `mariadbd` serving `datadir` that this process did not start (one a physical
/// rebuild's restore program started again on it, or one left by a crashed run), without
/// waiting. Returns its pid.
pub(crate) fn signal_foreign_server(datadir: &Path, signal: libc::c_int) -> Option<libc::pid_t> {
    let pid = server_on(datadir)?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked just above.
    unsafe {
        libc::kill(pid, signal);
    }
    Some(pid)
}

/// If the datadir's pid file names a live `mariadbd` serving this very datadir (left by a run
/// that crashed before it could stop its servers), kill it: it holds the port and the InnoDB
/// locks. Anything else the pid file might name is left alone.
pub(crate) async fn kill_stale_server(datadir: &Path) -> Result<(), ProvisionError> {
    let Some(pid) = signal_foreign_server(datadir, libc::SIGKILL) else {
        return Ok(());
    };
    tracing::warn!(pid, datadir = %datadir.display(), "killed a leftover mariadbd");
    wait_gone(pid, datadir, Duration::from_secs(10)).await
}

/// Shuts down (SIGTERM, then SIGKILL after `timeout`) the `mariadbd` a physical rebuild's
/// restore program started again on `datadir`, if there is one.
pub(crate) async fn stop_restarted_server(
    datadir: &Path,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let Some(pid) = signal_foreign_server(datadir, libc::SIGTERM) else {
        return Ok(());
    };
    tracing::info!(pid, datadir = %datadir.display(), "stopping a mariadbd a restore started");
    if wait_gone(pid, datadir, timeout).await.is_ok() {
        return Ok(());
    }
    signal_foreign_server(datadir, libc::SIGKILL);
    wait_gone(pid, datadir, Duration::from_secs(10)).await
}

/// Waits until `pid`, not a child of ours (it cannot be reaped here), is gone or a zombie
/// (which holds no ports or locks).
async fn wait_gone(
    pid: libc::pid_t,
    datadir: &Path,
    limit: Duration,
) -> Result<(), ProvisionError> {
    let deadline = Instant::now() + limit;
    while is_server_for(pid, datadir) && !is_zombie(pid) {
        if Instant::now() >= deadline {
            return Err(ProvisionError::Timeout {
                what: format!("mariadbd {pid} on {} to exit", datadir.display()),
                after: limit,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// Whether `pid` is a `mariadbd` whose command line names `datadir`.
fn is_server_for(pid: libc::pid_t, datadir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let is_mariadbd = args.next().is_some_and(|argv0| {
        let argv0 = String::from_utf8_lossy(argv0);
        argv0.ends_with("mariadbd") || argv0.ends_with("mysqld")
    });
    let wanted = format!("--datadir={}", datadir.display());
    is_mariadbd && args.any(|a| a == wanted.as_bytes())
}

fn is_zombie(pid: libc::pid_t) -> bool {
    // The state is the first field after the parenthesised command name.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state == 'Z')
}

/// The file's content from `offset` on (empty if unreadable).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn node() -> LocalNode {
        LocalNode {
            addr: "127.0.0.1:3307".into(),
            port: 3307,
            datadir: PathBuf::from("/d/c1/n1"),
            socket: PathBuf::from("/d/c1/n1/mysqld.sock"),
            server_id: 101,
        }
    }

    #[test]
    fn no_defaults_first_and_log_basename_before_log_options() {
        let role = ServerRole {
            read_only: true,
            semi_sync: true,
            truncate_unacknowledged: true,
            skip_slave_start: false,
            ssl: None,
            binlog_disk_mb: None,
        };
        let args: Vec<String> = server_args(&node(), &role, true)
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect();
        assert_eq!(args[0], "--no-defaults");
        let pos = |prefix: &str| {
            args.iter()
                .position(|a| a.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} missing from {args:?}"))
        };
        let basename = pos("--log-basename=");
        for later in ["--log-error=", "--log-bin=", "--relay-log=", "--pid-file="] {
            assert!(basename < pos(later), "{later} before --log-basename");
        }
        assert!(args.contains(&"--user=root".to_owned()));
        assert!(args.contains(&"--read-only=1".to_owned()));
        assert!(args.contains(&"--server-id=101".to_owned()));
        assert!(args.contains(&"--port=3307".to_owned()));
        assert!(args.contains(&"--rpl-semi-sync-slave-enabled=1".to_owned()));
        assert!(!args.iter().any(|a| a.contains("semi-sync-master-enabled")));
        assert!(!args.contains(&"--skip-slave-start".to_owned()));
        // Each server its own tmpdir, outside its datadir (see LocalNode::tmp_dir).
        let tmpdir = &args[pos("--tmpdir=")];
        assert_eq!(tmpdir, &format!("--tmpdir={}", node().tmp_dir().display()));
        assert!(!node().tmp_dir().starts_with(&node().datadir));
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn our_own_process_is_not_a_server() {
        let me = std::process::id() as libc::pid_t;
        assert!(!is_server_for(me, Path::new("/nonexistent")));
        assert!(!is_zombie(me));
    }
}
