//! Helpers shared by the orchestrator's integration tests: polling with a deadline and
//! connections to local nodes.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use orchestrator::{LocalClusters, LocalNode, ProvisionSpec};

/// Polls `check` until it returns `Ok`, failing the test with `what` and the last error once
/// `within` has passed. The only way these tests wait for anything.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Starts clusters, failing loudly (with the install hint) if MariaDB is missing.
pub async fn start(spec: ProvisionSpec) -> LocalClusters {
    match LocalClusters::start(spec).await {
        Ok(lc) => lc,
        Err(e) => panic!("starting local clusters failed: {e}"),
    }
}

/// A 1-cluster spec in `dir` with `replicas` replicas.
pub fn spec(dir: &std::path::Path, replicas: usize) -> ProvisionSpec {
    let mut spec = ProvisionSpec::new(dir);
    spec.clusters = 1;
    spec.replicas = replicas;
    spec
}

pub async fn connect(node: &LocalNode, user: &str, password: &str) -> anyhow::Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(node.port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    Ok(Conn::new(opts).await?)
}

pub async fn app(lc: &LocalClusters, node: &LocalNode) -> anyhow::Result<Conn> {
    let s = lc.spec();
    connect(node, &s.app_user, &s.app_password).await
}

pub async fn admin(lc: &LocalClusters, node: &LocalNode) -> anyhow::Result<Conn> {
    let s = lc.spec();
    connect(node, &s.admin_user, &s.admin_password).await
}

/// One value of a one-row, one-column query.
pub async fn scalar<T: mysql_async::prelude::FromValue>(
    conn: &mut Conn,
    query: &str,
) -> anyhow::Result<T> {
    let row: Row = conn
        .query_first(query)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{query}: no row"))?;
    Ok(row
        .get_opt(0)
        .ok_or_else(|| anyhow::anyhow!("{query}: no column"))??)
}

/// A global status variable's value.
pub async fn status_var(conn: &mut Conn, name: &str) -> anyhow::Result<String> {
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await?;
    Ok(row
        .ok_or_else(|| anyhow::anyhow!("no status variable {name}"))?
        .1)
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Kills, when dropped, the listed processes that are still `mariadbd` servers of `dir`: for a
/// test that deliberately leaks servers, so that a failure before it cleans up leaks nothing.
/// Checking the command line keeps it from ever signalling a recycled pid.
pub struct KillLeftovers {
    pub pids: Vec<u32>,
    pub dir: std::path::PathBuf,
}

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        for pid in &self.pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("mariadbd") && cmdline.contains(&dir) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}
