//! A TCP proxy for fault injection: it listens on `127.0.0.1:0`, forwards every connection to
//! one server, and can be switched at run time to pass traffic, delay it, cut it (close every
//! connection and refuse new ones) or blackhole it (keep connections open but forward nothing,
//! as a dropped network path looks to both ends). Dropping the proxy closes everything.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward every chunk after this delay (so a round trip takes twice as long more).
    Delay(Duration),
    /// Close every open connection; new ones are accepted and closed at once.
    Cut,
    /// Forward nothing: open connections hang, new ones are accepted and then hang.
    Blackhole,
}

/// A running proxy in front of one server.
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free loopback port. Needs a Tokio runtime, but is not
    /// async, so that it can be called while a configuration is being adjusted.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        std_listener.set_nonblocking(true).expect("non-blocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept_loop(listener, target, mode_rx));
        FaultProxy {
            addr,
            target,
            mode,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind it.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let mode = mode.clone();
                conns.spawn(async move {
                    connection(client, target, mode).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one client connection until either side closes or the proxy cuts it.
async fn connection(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Blackhole => {
            // Hold the client until the path comes back or is cut; it then gets closed, as a
            // connection whose handshake never arrived would be.
            let _ = mode
                .wait_for(|m| matches!(m, Mode::Pass | Mode::Delay(_) | Mode::Cut))
                .await;
            return;
        }
        Mode::Pass | Mode::Delay(_) => {}
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone());
    let down = pump(sr, cw, mode.clone());
    let cut = async {
        let _ = mode.wait_for(|m| *m == Mode::Cut).await;
    };
    // Either direction ending (or a cut) closes both: the halves are dropped here.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut => {}
    }
}

/// Copies bytes one way, applying the current mode to every chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A blackholed path reads nothing, so the sender's buffers fill and it stalls.
        if *mode.borrow_and_update() == Mode::Blackhole
            && mode.wait_for(|m| *m != Mode::Blackhole).await.is_err()
        {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Cut => return,
                // Data read just before the path went dark is delivered when it comes back.
                Mode::Blackhole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
