//! HTTPS for the admin API: with `admin.tls_cert` and `admin.tls_key` set, the API is served
//! over TLS only (rustls, ring provider), and shuts down gracefully as the plain server does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::AdminConfig;

/// How long open requests may run on after shutdown starts.
const GRACE: Duration = Duration::from_secs(5);

/// The TLS settings `admin` asks for, `None` when it serves plain HTTP.
pub fn config(admin: &AdminConfig) -> anyhow::Result<Option<RustlsConfig>> {
    let (Some(cert), Some(key)) = (&admin.tls_cert, &admin.tls_key) else {
        return Ok(None);
    };
    let mut tls = router::tls::server_config(cert, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(RustlsConfig::from_config(Arc::new(tls))))
}

/// Serves `api` over HTTPS on `listener` until `stop` completes.
pub fn spawn(
    listener: TcpListener,
    api: Router,
    tls: RustlsConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = listener
        .into_std()
        .context("taking over the admin listener")?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .context("serving HTTPS on the admin listener")?
        .handle(handle.clone());
    Ok(tokio::spawn(async move {
        let shutdown = handle.clone();
        let watcher = tokio::spawn(async move {
            stop.await;
            shutdown.graceful_shutdown(Some(GRACE));
        });
        if let Err(e) = server.serve(api.into_make_service()).await {
            tracing::error!(error = %e, "admin API stopped");
        }
        watcher.abort();
    }))
}
