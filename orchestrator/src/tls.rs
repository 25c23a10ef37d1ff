//! TLS on the orchestrator's connections to the servers: the monitor's polls, the operations'
//! connections and, with `required` or `verify_ca`, the replication connections it sets up
//! (`CHANGE MASTER ... MASTER_SSL=1`).

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::{Conn, DriverError, OptsBuilder, SslOpts};
use tokio::time::timeout;

/// When the orchestrator's connections use TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodeTls {
    /// Plain text.
    #[default]
    Disabled,
    /// TLS when the server offers it, plain text otherwise; the certificate is not checked.
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS or no connection; the certificate must chain to this CA (PEM) and name the host.
    VerifyCa(PathBuf),
}

impl NodeTls {
    /// The client side's TLS settings, `None` for plain text.
    fn ssl_opts(&self) -> Option<SslOpts> {
        match self {
            NodeTls::Disabled => None,
            NodeTls::Preferred | NodeTls::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            NodeTls::VerifyCa(ca) => Some(
                SslOpts::default()
                    .with_root_certs(vec![ca.clone().into()])
                    .with_disable_built_in_roots(true),
            ),
        }
    }

    /// Whether the replication connections the orchestrator sets up must use TLS.
    pub fn replication_ssl(&self) -> bool {
        matches!(self, NodeTls::Required | NodeTls::VerifyCa(_))
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Failed(mysql_async::Error),
}

/// Opens a connection with `opts` and the TLS settings of `tls`, within `limit`. `Preferred`
/// falls back to plain text when the server does not offer TLS.
pub(crate) async fn connect(
    opts: OptsBuilder,
    tls: &NodeTls,
    limit: Duration,
) -> Result<Conn, ConnectError> {
    let attempt = |ssl: Option<SslOpts>| {
        let opts = opts.clone().ssl_opts(ssl);
        async move {
            match timeout(limit, Conn::new(opts)).await {
                Err(_) => Err(ConnectError::Timeout),
                Ok(r) => r.map_err(ConnectError::Failed),
            }
        }
    };
    match attempt(tls.ssl_opts()).await {
        Err(ConnectError::Failed(mysql_async::Error::Driver(
            DriverError::NoClientSslFlagFromServer,
        ))) if *tls == NodeTls::Preferred => attempt(None).await,
        r => r,
    }
}
