//! A local etcd (one member, or three for a quorum) as child processes on loopback ports, each
//! member with its own data directory: the topology store of the multi-process sandbox and of
//! the tests. Members can be stopped, started again, killed and frozen one by one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::clusters::free_ports;
use super::process::last_lines;
use super::ProvisionError;

/// How long a member may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const LOG_FILE: &str = "etcd.log";

/// One member.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` (and metrics), also when clients speak TLS.
    health_port: u16,
    dir: PathBuf,
    process: Option<Child>,
    /// The user it runs as, when not this process's.
    uid: Option<u32>,
}

/// A running local etcd. Dropping it kills every member.
#[derive(Debug)]
pub struct LocalEtcd {
    members: Vec<Member>,
    cluster_token: String,
    tls: Option<EtcdTls>,
}

/// TLS for clients (PEM files): the members' certificate and key, and the CA whose client
/// certificates they accept (and require).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to start a [`LocalEtcd`] beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct LocalEtcdOptions {
    /// Member 0 runs as this user (root only): its packets can then be told from the other
    /// members' (an iptables owner match), to cut it from its peers alone. The data
    /// directory is made traversable for that user.
    pub member0_uid: Option<u32>,
    /// Clients speak TLS and must present a certificate.
    pub tls: Option<EtcdTls>,
}

/// `etcd` on PATH or in /usr/bin.
fn etcd_binary() -> Result<PathBuf, ProvisionError> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("etcd");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let p = PathBuf::from("/usr/bin/etcd");
    if p.is_file() {
        Ok(p)
    } else {
        Err(ProvisionError::EtcdNotInstalled)
    }
}

impl LocalEtcd {
    /// Starts `members` members (1 or 3, say) under `dir` on free loopback ports and waits
    /// until each answers. A directory that already holds members' data starts them again
    /// with it.
    pub async fn start(
        dir: impl Into<PathBuf>,
        members: usize,
    ) -> Result<LocalEtcd, ProvisionError> {
        Self::start_with(dir, members, LocalEtcdOptions::default()).await
    }

    /// Like [`LocalEtcd::start`], with `options`.
    pub async fn start_with(
        dir: impl Into<PathBuf>,
        members: usize,
        options: LocalEtcdOptions,
    ) -> Result<LocalEtcd, ProvisionError> {
        if members == 0 {
            return Err(ProvisionError::InvalidSpec(
                "etcd needs at least one member".into(),
            ));
        }
        let dir = dir.into();
        let ports = free_ports(members * 3)?;
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("e{}", i + 1),
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                health_port: ports[3 * i + 2],
                dir: dir.join(format!("etcd{}", i + 1)),
                process: None,
                uid: None,
            })
            .collect();
        let mut members = members;
        if let Some(uid) = options.member0_uid {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
                .map_err(|e| ProvisionError::io(format!("opening up {}", dir.display()), e))?;
            members[0].uid = Some(uid);
        }
        let mut etcd = LocalEtcd {
            members,
            cluster_token: format!("switchyard-{}", std::process::id()),
            tls: options.tls,
        };
        for i in 0..etcd.members.len() {
            etcd.spawn(i)?;
        }
        // Members of a new cluster answer /health only once a leader is elected, which needs
        // a quorum: wait after starting all of them.
        for i in 0..etcd.members.len() {
            etcd.wait_ready(i).await?;
        }
        Ok(etcd)
    }

    /// `127.0.0.1:port` of every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: an etcd has members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member's client and peer ports.
    pub fn ports(&self, member: usize) -> (u16, u16) {
        let m = &self.members[member];
        (m.client_port, m.peer_port)
    }

    /// The member's process id, while it runs.
    pub fn pid(&self, member: usize) -> Option<u32> {
        self.members[member].process.as_ref().map(|c| c.id())
    }

    /// Stops a member (SIGTERM, then SIGKILL after 10 s) and waits for it to exit.
    pub async fn stop_member(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].process.take() {
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }

    /// Kills a member with SIGKILL.
    pub fn kill_member(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to a running member.
    pub fn signal_member(&self, member: usize, sig: libc::c_int) {
        if let Some(child) = &self.members[member].process {
            signal(child, sig);
        }
    }

    /// Starts a stopped member again with its data and waits until it answers (a member of
    /// a cluster without a quorum answers only once enough members run: start them all
    /// with [`LocalEtcd::spawn_member`] first).
    pub async fn start_member(&mut self, member: usize) -> Result<(), ProvisionError> {
        if self.members[member].process.is_none() {
            self.spawn(member)?;
        }
        self.wait_ready(member).await
    }

    /// Starts a stopped member again without waiting for it.
    pub fn spawn_member(&mut self, member: usize) -> Result<(), ProvisionError> {
        if self.members[member].process.is_none() {
            self.spawn(member)?;
        }
        Ok(())
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<(), ProvisionError> {
        let binary = etcd_binary()?;
        let initial_cluster = self.initial_cluster();
        let tls = tls_args(self.tls.as_ref());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let m = &mut self.members[i];
        fs::create_dir_all(&m.dir)
            .map_err(|e| ProvisionError::io(format!("creating {}", m.dir.display()), e))?;
        if let Some(uid) = m.uid {
            std::os::unix::fs::chown(&m.dir, Some(uid), Some(uid))
                .map_err(|e| ProvisionError::io(format!("handing {} over", m.dir.display()), e))?;
        }
        let log_path = m.dir.join(LOG_FILE);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ProvisionError::io(format!("opening {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ProvisionError::io("duplicating a log handle", e))?;
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let health = format!("http://127.0.0.1:{}", m.health_port);
        let mut command = Command::new(binary);
        if let Some(uid) = m.uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let child = command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--listen-metrics-urls", &health])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.cluster_token])
            .args(["--initial-cluster-state", "new"])
            // Loopback: a faster heartbeat than the defaults' 100/1000 ms for a fast quorum
            // change when a member is stopped.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap"])
            .args(tls)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| ProvisionError::io("starting etcd", e))?;
        m.process = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let m = &mut self.members[i];
            if let Some(child) = m.process.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    m.process = None;
                    let log = m.dir.join(LOG_FILE);
                    return Err(ProvisionError::EtcdExited {
                        name: m.name.clone(),
                        status: status.to_string(),
                        tail: last_lines(&fs::read_to_string(&log).unwrap_or_default(), 20),
                        log: log.display().to_string(),
                    });
                }
            }
            if healthy(m.health_port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ProvisionError::Timeout {
                    what: format!("etcd member {} on port {}", m.name, m.client_port),
                    after: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The member's log file.
    pub fn log_path(&self, member: usize) -> PathBuf {
        self.members[member].dir.join(LOG_FILE)
    }

    /// The directory that holds the member's data and log.
    pub fn member_dir(&self, member: usize) -> &Path {
        &self.members[member].dir
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.process.take() {
                // A frozen member would not die of SIGTERM; SIGKILL works on stopped ones.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, which has not been reaped (we hold its Child).
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Whether the member on `port` says it is healthy (it has a leader and answers reads).
/// The members' arguments for TLS to clients.
fn tls_args(tls: Option<&EtcdTls>) -> Vec<std::ffi::OsString> {
    let Some(t) = tls else {
        return Vec::new();
    };
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for (flag, path) in [
        ("--cert-file", &t.cert),
        ("--key-file", &t.key),
        ("--trusted-ca-file", &t.ca),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args.push("--client-cert-auth".into());
    args
}

async fn healthy(port: u16) -> bool {
    let check = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<bool, std::io::Error>(body.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(true))
    )
}
