//! Child processes the tests start (a `switchyard serve`, HAProxy), each stopped when its
//! guard is dropped, also when the test fails; and free ports to give them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::*;

use super::{eventually, opts_for, TestEnv};

/// A port nobody listens on right now, for a server the test starts a moment later. It is
/// taken below the kernel's ephemeral range: a port from that range (what binding port 0
/// gives) can be taken in between as the local port of any outgoing connection on the
/// machine, and the server then fails to start (seen once with HAProxy, whose ports are
/// picked before a cluster starts).
pub fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_start > 12_000 {
        for _ in 0..1000 {
            let port = rand::random_range(10_000..ephemeral_start);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `haproxy` (from `$PATH`, else Debian's `/usr/sbin`) in the foreground with the
/// configuration at `path`.
pub fn haproxy(path: &Path) -> KillOnDrop {
    let start = |program: &str| {
        Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    KillOnDrop(
        start("haproxy")
            .or_else(|_| start("/usr/sbin/haproxy"))
            .expect("haproxy runs (scripts/install-deps installs it: apt-get install -y haproxy)"),
    )
}

/// Through a proxy on `port`: inserts `value` into `table` (a column `v`) on a new
/// connection and returns the port of the server that took it.
pub async fn write_through(port: u16, table: &str, value: i64) -> Option<i64> {
    let mut c = mysql_async::Conn::new(opts_for(port, "app", "app", None))
        .await
        .ok()?;
    c.exec_drop(format!("INSERT INTO {table} (v) VALUES (?)"), (value,))
        .await
        .ok()?;
    let served: i64 = c.query_first("SELECT @@port").await.ok()??;
    c.disconnect().await.ok();
    Some(served)
}

/// A `switchyard serve` child process, killed when dropped (also when the test fails).
pub struct Serve {
    child: KillOnDrop,
}

impl Serve {
    /// Starts the binary on `config`, with `SWITCHYARD_FAILPOINT` set to `failpoint`.
    pub fn start(config: &Path, failpoint: Option<&str>) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match failpoint {
            Some(f) => cmd.env("SWITCHYARD_FAILPOINT", f),
            None => cmd.env_remove("SWITCHYARD_FAILPOINT"),
        };
        Serve {
            child: KillOnDrop(cmd.spawn().expect("switchyard binary runs")),
        }
    }

    /// Sends `signal` unless the process has ended.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.child.0.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(self.child.0.id() as libc::pid_t, signal);
            }
        }
    }

    /// Waits (bounded) for the process to end; its exit status.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child.0;
        eventually(timeout, "the switchyard process to end", || {
            let s = child.try_wait().ok().flatten();
            async move { s }
        })
        .await
    }
}

/// What [`write_serve_config`] writes besides the test's clusters and keyspaces.
pub struct ServeConfig<'a> {
    pub port: u16,
    pub admin: u16,
    /// Names the router's XA transactions (recovery resolves its own only).
    pub router_id: &'a str,
    /// Nodes left out of the clusters; with any, no leader is named (the monitor finds it).
    pub dead: &'a [String],
    /// Top-level settings added as they are.
    pub extra: &'a str,
}

/// A `switchyard serve` config at `path` over `env`'s clusters (leaders as the local clusters
/// record them) and keyspaces, admin token `t`.
pub fn write_serve_config(env: &TestEnv, path: &Path, c: ServeConfig<'_>) {
    #[derive(serde::Serialize)]
    struct Keyspaces {
        keyspaces: Vec<shard_map::Keyspace>,
    }
    let config = switchyard::sandbox::config_for(env.local(), &env.opts);
    let clusters: String = config
        .clusters
        .iter()
        .map(|cl| {
            let nodes: Vec<String> = cl
                .nodes
                .iter()
                .filter(|n| !c.dead.contains(n))
                .map(|n| format!("\"{n}\""))
                .collect();
            let leader = match (&cl.leader, c.dead.is_empty()) {
                (Some(l), true) => format!("leader = \"{l}\"\n"),
                _ => String::new(),
            };
            format!(
                "[[clusters]]\nname = \"{}\"\nnodes = [{}]\n{leader}",
                cl.name,
                nodes.join(", ")
            )
        })
        .collect();
    let keyspaces = if config.keyspaces.is_empty() {
        String::new()
    } else {
        toml::to_string(&Keyspaces {
            keyspaces: config.keyspaces.clone(),
        })
        .unwrap()
    };
    let text = format!(
        "default_cluster = \"c1\"\n{}\n\
         [router]\nlisten = \"127.0.0.1:{}\"\nrouter_id = \"{}\"\n\
         users = [{{ name = \"app\", password = \"app\" }}]\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"t\"\n\
         [orchestrator]\nuser = \"switchyard\"\npassword = \"switchyard\"\n\
         repl_user = \"{}\"\nrepl_password = \"{}\"\n\
         {clusters}\n{keyspaces}",
        c.extra,
        c.port,
        c.router_id,
        c.admin,
        env.local().spec().repl_user,
        env.local().spec().repl_password,
    );
    std::fs::write(path, text).unwrap();
}
