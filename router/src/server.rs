//! The accept loop: clients over TCP and, on the same host, over a Unix-domain socket; one
//! task per client connection, a cap on connections (error 1040 past it), a span per session,
//! panics caught per session, and a graceful shutdown that stops accepting and waits
//! (bounded) for sessions to end.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::context::{RouterContext, RouterMetrics};
use crate::error::RouterError;
use crate::protocol::packet::frame;
use crate::session::Session;

/// A client's connection as accepted.
#[derive(Debug)]
pub enum ClientStream {
    Tcp(TcpStream),
    /// Over the Unix-domain socket: a client on this host.
    Unix(UnixStream),
}

/// Where the router takes clients: its TCP port and, when configured, a Unix-domain socket.
#[derive(Debug)]
pub struct Listeners {
    pub tcp: TcpListener,
    pub unix: Option<SocketListener>,
}

impl From<TcpListener> for Listeners {
    fn from(tcp: TcpListener) -> Self {
        Listeners { tcp, unix: None }
    }
}

/// A listening Unix-domain socket; its file is removed when this is dropped.
#[derive(Debug)]
pub struct SocketListener {
    listener: UnixListener,
    path: PathBuf,
}

impl SocketListener {
    /// Listens on `path`, open to every local user (the login still checks who they are), as
    /// a server's socket is. A socket left there by a process that has gone is replaced; one
    /// where something still accepts connections, or a file that is not a socket, is an error.
    pub async fn bind(path: &Path) -> std::io::Result<SocketListener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            let probe = tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path));
            if let Ok(Ok(_)) = probe.await {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another process listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
        Ok(SocketListener {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The next client on the Unix-domain socket; never, without one.
async fn accept_local(listener: &Option<SocketListener>) -> std::io::Result<UnixStream> {
    match listener {
        Some(l) => l.listener.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Serves MySQL clients on `listeners` until `shutdown` completes.
pub async fn run(
    listeners: impl Into<Listeners>,
    ctx: Arc<RouterContext>,
    shutdown: impl Future<Output = ()>,
) {
    let listeners = listeners.into();
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    // Every session holds a clone; when only ours is left, all sessions have ended.
    let sessions = Arc::new(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listeners.tcp.accept() => a.map(|(s, peer)| (ClientStream::Tcp(s), peer.to_string())),
            a = accept_local(&listeners.unix) => a.map(|s| (ClientStream::Unix(s), "localhost".to_string())),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        RouterMetrics::inc(&ctx.metrics.connections_total);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            RouterMetrics::inc(&ctx.metrics.connections_refused);
            tokio::spawn(async move {
                let mut stream = stream;
                // Before the handshake the client's capabilities are unknown, so the error
                // goes without a SQLSTATE, as MariaDB sends it (protocol 4.0 layout).
                let e = RouterError::TooManyConnections.to_client();
                let mut payload = vec![0xff];
                payload.extend_from_slice(&e.code.to_le_bytes());
                payload.extend_from_slice(e.message.as_bytes());
                let mut buf = Vec::new();
                frame(0, &payload, &mut buf);
                let _ = match &mut stream {
                    ClientStream::Tcp(s) => s.write_all(&buf).await,
                    ClientStream::Unix(s) => s.write_all(&buf).await,
                };
            });
            continue;
        };
        let ctx = ctx.clone();
        let id = ctx.next_conn_id();
        // The span covers the connection phase. The command loop runs outside it: entering a
        // span on every poll costs the hot path about 4% of the router's own CPU, so its log
        // lines name the session themselves.
        let span = tracing::info_span!("session", id, %peer);
        tokio::spawn(serve_client(
            ctx,
            stream,
            id,
            span,
            permit,
            sessions.clone(),
        ));
    }
    drop(listeners);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&sessions) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client connection's task, from accept to close. `permit` and `done` are held until
/// it ends.
async fn serve_client(
    ctx: Arc<RouterContext>,
    stream: ClientStream,
    id: u32,
    span: tracing::Span,
    permit: OwnedSemaphorePermit,
    done: Arc<()>,
) {
    ctx.metrics
        .connections_active
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = AssertUnwindSafe(Session::serve(ctx.clone(), stream, id, span))
        .catch_unwind()
        .await;
    if let Err(panic) = result {
        RouterMetrics::inc(&ctx.metrics.session_panics);
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(session = id, panic = %what, "session panicked; connection closed");
    }
    ctx.metrics
        .connections_active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(permit);
    drop(done);
}

/// Bytes of the future each client connection's task holds for as long as the connection
/// lives (tokio adds a header of about a hundred bytes). Its largest state is the one
/// waiting for the next command, so this is what an idle connection costs besides its
/// socket and the session's own heap data.
pub fn connection_task_size() -> usize {
    fn output_size<A, B, C, D, E, G, F: Future>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    output_size(serve_client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_left_behind_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        // A socket file whose listener has gone (as after a crash).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = SocketListener::bind(&path)
            .await
            .expect("the stale file replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o777);
        let err = SocketListener::bind(&path)
            .await
            .expect_err("a second listener");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        assert!(path.exists(), "the live listener's file kept");
        drop(live);
        assert!(!path.exists(), "removed with its listener");
        // Anything else at the path is left alone.
        std::fs::write(&path, "data").unwrap();
        let err = SocketListener::bind(&path)
            .await
            .expect_err("a regular file");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
