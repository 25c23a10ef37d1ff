//! The accept loop: one task per client connection, a cap on connections (error 1040 past
//! it), a span per session, panics caught per session, and a graceful shutdown that stops
//! accepting and waits (bounded) for sessions to end.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::context::{RouterContext, RouterMetrics};
use crate::error::RouterError;
use crate::protocol::packet::frame;
use crate::session::Session;

/// Serves MySQL clients on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<RouterContext>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    // Every session holds a clone; when only ours is left, all sessions have ended.
    let sessions = Arc::new(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
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
                // Before the handshake the client's capabilities are unknown, so the error
                // goes without a SQLSTATE, as MariaDB sends it (protocol 4.0 layout).
                let e = RouterError::TooManyConnections.to_client();
                let mut payload = vec![0xff];
                payload.extend_from_slice(&e.code.to_le_bytes());
                payload.extend_from_slice(e.message.as_bytes());
                let mut buf = Vec::new();
                frame(0, &payload, &mut buf);
                let _ = stream.write_all(&buf).await;
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
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&sessions) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client connection's task, from accept to close. `permit` and `done` are held until
/// it ends.
async fn serve_client(
    ctx: Arc<RouterContext>,
    stream: TcpStream,
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
