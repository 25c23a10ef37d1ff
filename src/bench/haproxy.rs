//! HAProxy in TCP mode in front of the leader: the proxy that parses nothing, to tell what
//! any extra hop costs from what switchyard's parsing and pooling cost. The process is
//! killed when its handle drops, also when the run fails half-way.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long HAProxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process took the free one before HAProxy bound it.
const PORT_ATTEMPTS: usize = 5;

/// A running `haproxy -db`.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    pub port: u16,
}

impl Haproxy {
    /// Starts `program` with a config in `dir` that forwards a free loopback port to
    /// `backend` (`host:port`), and returns once it accepts connections.
    pub fn start(program: &Path, dir: &Path, backend: &str) -> anyhow::Result<Haproxy> {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, config_text(port, backend))
                .with_context(|| format!("writing {}", config.display()))?;
            let log_path = dir.join("haproxy.log");
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(program)
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("can't run {}", program.display()))?;
            let mut this = Haproxy { child, port };
            if this.wait_listening()? {
                return Ok(this);
            }
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !last_log.to_ascii_lowercase().contains("cannot bind") {
                break;
            }
        }
        bail!("haproxy did not start:\n{last_log}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it listens (`false`: it exited); an error if it neither listens nor exits.
    fn wait_listening(&mut self) -> anyhow::Result<bool> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                bail!("haproxy does not listen on {addr} after {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port nobody listened on a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One TCP listener, one server, timeouts long enough for any row. HAProxy picks its own
/// thread count (one per CPU).
fn config_text(port: u16, backend: &str) -> String {
    format!(
        "global\n    \
             maxconn 4096\n\
         defaults\n    \
             mode tcp\n    \
             timeout connect 5s\n    \
             timeout client 1h\n    \
             timeout server 1h\n\
         listen mysql\n    \
             bind 127.0.0.1:{port}\n    \
             server leader {backend}\n"
    )
}

/// `haproxy -v`'s version, e.g. `2.6.12-1+deb12u4`.
pub fn version(program: &Path) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -v", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or(text.trim())
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_forwards_one_port_to_the_backend() {
        let text = config_text(4000, "127.0.0.1:3310");
        assert!(text.contains("\n    mode tcp\n"), "{text}");
        assert!(text.contains("\n    bind 127.0.0.1:4000\n"), "{text}");
        assert!(
            text.contains("\n    server leader 127.0.0.1:3310\n"),
            "{text}"
        );
    }
}
