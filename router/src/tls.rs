//! TLS with rustls (ring provider): certificates and keys read from PEM files, the server side
//! offered to MySQL clients (and reused by the admin API), the client side used towards
//! backends, and the stream halves that carry plain TCP, a Unix-domain socket or TLS. The
//! halves are enums, not boxed trait objects, so that a plaintext session pays one branch per
//! read or write.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{unix, TcpStream, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use bytes::BytesMut;

use crate::protocol::compress::{CompressedRead, CompressedWrite, FrameSeq};

use crate::config::{BackendTlsMode, RouterConfig};

/// A TLS connection over TCP, either side.
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("can't read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{what} {path} is not valid PEM: {detail}")]
    Pem {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS settings refused by rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider everything here uses: ring (aws-lc-rs would need cmake to build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider (once; later calls do nothing). HTTP clients
/// built on rustls without a provider of their own (reqwest, for the CLI and the admin API's
/// callers) look for it, and refuse to start without one.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn pem_error(what: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            what,
            path: path.display().to_string(),
            source,
        },
        other => TlsError::Pem {
            what,
            path: path.display().to_string(),
            detail: other.to_string(),
        },
    }
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    // Read first, so that a missing file is reported as such and not as bad PEM.
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what,
            path: path.display().to_string(),
            expected: "PRIVATE KEY block",
        },
        other => pem_error(what, path, other),
    })
}

/// A server-side TLS configuration from a certificate chain and its key (PEM files); the key
/// must match the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs = load_certs("certificate", cert)?;
    let key = load_key("private key", key)?;
    Ok(ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// The client-side TLS configuration for backends in `mode` (`None` when disabled).
pub fn backend_config(
    mode: BackendTlsMode,
    ca: Option<&Path>,
) -> Result<Option<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match mode {
        BackendTlsMode::Disabled => return Ok(None),
        BackendTlsMode::Preferred | BackendTlsMode::Required => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
            .with_no_client_auth(),
        BackendTlsMode::VerifyCa => {
            let mut roots = RootCertStore::empty();
            let path = ca.ok_or_else(|| TlsError::Empty {
                what: "router.backend_tls_ca",
                path: "(not set)".into(),
                expected: "CA certificate",
            })?;
            for cert in load_certs("CA certificate", path)? {
                roots.add(cert)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// Encrypts without checking who is on the other end (`preferred` and `required`, as the
/// MariaDB client's `--ssl` without `--ssl-verify-server-cert`): the handshake signatures are
/// still checked, the certificate chain is not.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The router's TLS, built once from its settings.
#[derive(Clone, Default)]
pub struct RouterTls {
    /// Offered to clients when a certificate is configured.
    pub clients: Option<TlsAcceptor>,
    /// Towards backends, with the mode that says what to do when a server offers no TLS.
    pub backends: Option<BackendTls>,
}

impl fmt::Debug for RouterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterTls")
            .field("clients", &self.clients.is_some())
            .field("backends", &self.backends)
            .finish()
    }
}

impl RouterTls {
    /// Reads the certificates and keys `config` names.
    pub fn load(config: &RouterConfig) -> Result<Self, TlsError> {
        let clients = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(Arc::new(server_config(cert, key)?))),
            _ => None,
        };
        let backends =
            backend_config(config.backend_tls, config.backend_tls_ca.as_deref())?.map(|c| {
                BackendTls {
                    mode: config.backend_tls,
                    connector: TlsConnector::from(Arc::new(c)),
                }
            });
        Ok(RouterTls { clients, backends })
    }
}

/// TLS towards backends.
#[derive(Clone)]
pub struct BackendTls {
    pub mode: BackendTlsMode,
    pub connector: TlsConnector,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The name a backend's certificate must carry: the host of its `host:port` address, as an IP
/// address (matched against IP SANs) or a DNS name.
pub fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Runs the server side of a TLS handshake on `tcp`. `early` holds bytes already read from
/// the socket after the client's SSLRequest (the start of its TLS ClientHello, when both
/// arrived in one read): they are handed to rustls before anything more is read.
pub async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream, early: &[u8]) -> io::Result<TlsStream> {
    let mut early_error = None;
    let accept = acceptor.accept_with(tcp, |conn| {
        let mut rest = early;
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    early_error = Some(e);
                    return;
                }
            }
        }
        if !early.is_empty() {
            // Answers the ClientHello now (queued for the handshake's first write); an error
            // stays in the connection and ends the handshake.
            let _ = conn.process_new_packets();
        }
    });
    if let Some(e) = early_error {
        return Err(e);
    }
    Ok(TlsStream::Server(accept.await?))
}

/// Runs the client side of a TLS handshake with the backend at `addr`.
pub async fn connect(tls: &BackendTls, tcp: TcpStream, addr: &str) -> io::Result<TlsStream> {
    let name = match server_name(addr) {
        Some(n) => n,
        None if tls.mode != BackendTlsMode::VerifyCa => ServerName::try_from("localhost")
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} has no host name or IP address to verify the certificate against"),
            ))
        }
    };
    Ok(TlsStream::Client(tls.connector.connect(name, tcp).await?))
}

/// The protocol version and cipher suite of an established connection, for logs.
pub fn describe(stream: &TlsStream) -> (String, String) {
    let common: &rustls::CommonState = match stream {
        TlsStream::Client(s) => s.get_ref().1,
        TlsStream::Server(s) => s.get_ref().1,
    };
    let version = common
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = common
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    (version, cipher)
}

/// The read half of a connection: plain TCP, a Unix-domain socket or TLS.
pub enum StreamRead {
    Plain(OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Tls(ReadHalf<TlsStream>),
    /// A client's connection in the compressed protocol, over one of the others.
    Compressed(Box<CompressedRead<StreamRead>>),
    /// Taken away for a moment while the session's stream is replaced; reads fail.
    Detached,
}

/// The write half of a connection: plain TCP, a Unix-domain socket or TLS.
pub enum StreamWrite {
    Plain(OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    Tls(WriteHalf<TlsStream>),
    /// A client's connection in the compressed protocol, over one of the others.
    Compressed(Box<CompressedWrite<StreamWrite>>),
    /// Taken away for a moment while the session's stream is replaced; writes fail.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream is being replaced")
}

/// Both halves of a connection switched to the compressed protocol (`CLIENT_COMPRESS`, once
/// the handshake is over); `early` holds bytes already read from `r`.
pub fn compressed(r: StreamRead, early: BytesMut, w: StreamWrite) -> (StreamRead, StreamWrite) {
    let seq = FrameSeq::default();
    (
        StreamRead::Compressed(Box::new(CompressedRead::new(r, early, seq.clone()))),
        StreamWrite::Compressed(Box::new(CompressedWrite::new(w, seq))),
    )
}

/// Splits a plain TCP connection.
pub fn split_plain(tcp: TcpStream) -> (StreamRead, StreamWrite) {
    let (r, w) = tcp.into_split();
    (StreamRead::Plain(r), StreamWrite::Plain(w))
}

/// Splits a Unix-domain socket connection.
pub fn split_unix(stream: UnixStream) -> (StreamRead, StreamWrite) {
    let (r, w) = stream.into_split();
    (StreamRead::Unix(r), StreamWrite::Unix(w))
}

/// Splits a TLS connection.
pub fn split_tls(tls: TlsStream) -> (StreamRead, StreamWrite) {
    let (r, w) = tokio::io::split(tls);
    (StreamRead::Tls(r), StreamWrite::Tls(w))
}

/// Puts the halves of a plain TCP connection back together (`None` for other halves or halves
/// of two different connections).
pub fn reunite(r: StreamRead, w: StreamWrite) -> Option<TcpStream> {
    match (r, w) {
        (StreamRead::Plain(r), StreamWrite::Plain(w)) => r.reunite(w).ok(),
        _ => None,
    }
}

impl StreamRead {
    /// Whether this is the read half of a TLS connection.
    pub fn is_tls(&self) -> bool {
        match self {
            StreamRead::Tls(_) => true,
            StreamRead::Compressed(c) => c.get_ref().is_tls(),
            _ => false,
        }
    }
}

impl fmt::Debug for StreamRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamRead::Plain(_) => "StreamRead::Plain",
            StreamRead::Unix(_) => "StreamRead::Unix",
            StreamRead::Tls(_) => "StreamRead::Tls",
            StreamRead::Compressed(_) => "StreamRead::Compressed",
            StreamRead::Detached => "StreamRead::Detached",
        })
    }
}

impl fmt::Debug for StreamWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamWrite::Plain(_) => "StreamWrite::Plain",
            StreamWrite::Unix(_) => "StreamWrite::Unix",
            StreamWrite::Tls(_) => "StreamWrite::Tls",
            StreamWrite::Compressed(_) => "StreamWrite::Compressed",
            StreamWrite::Detached => "StreamWrite::Detached",
        })
    }
}

impl AsyncRead for StreamRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            StreamRead::Unix(r) => Pin::new(r).poll_read(cx, buf),
            StreamRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
            StreamRead::Compressed(r) => Pin::new(r.as_mut()).poll_read(cx, buf),
            StreamRead::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for StreamWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            StreamWrite::Unix(w) => Pin::new(w).poll_write(cx, buf),
            StreamWrite::Tls(w) => Pin::new(w).poll_write(cx, buf),
            StreamWrite::Compressed(w) => Pin::new(w.as_mut()).poll_write(cx, buf),
            StreamWrite::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            StreamWrite::Unix(w) => Pin::new(w).poll_flush(cx),
            StreamWrite::Tls(w) => Pin::new(w).poll_flush(cx),
            StreamWrite::Compressed(w) => Pin::new(w.as_mut()).poll_flush(cx),
            StreamWrite::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            StreamWrite::Unix(w) => Pin::new(w).poll_shutdown(cx),
            StreamWrite::Tls(w) => Pin::new(w).poll_shutdown(cx),
            StreamWrite::Compressed(w) => Pin::new(w.as_mut()).poll_shutdown(cx),
            StreamWrite::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWrite::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            StreamWrite::Unix(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            StreamWrite::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            StreamWrite::Compressed(w) => Pin::new(w.as_mut()).poll_write_vectored(cx, bufs),
            StreamWrite::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            StreamWrite::Plain(w) => w.is_write_vectored(),
            StreamWrite::Unix(w) => w.is_write_vectored(),
            StreamWrite::Tls(w) => w.is_write_vectored(),
            StreamWrite::Compressed(w) => w.is_write_vectored(),
            StreamWrite::Detached => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:3306"),
            Some(ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(
            server_name("db1.example.com:3306"),
            Some(ServerName::try_from("db1.example.com").unwrap())
        );
        assert_eq!(
            server_name("[::1]:3306"),
            Some(ServerName::try_from("::1").unwrap())
        );
        assert_eq!(server_name("bad name:3306"), None);
    }

    #[test]
    fn missing_and_garbage_pem_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = load_certs("certificate", &missing).unwrap_err().to_string();
        assert!(
            e.contains("can't read certificate") && e.contains("missing.pem"),
            "{e}"
        );
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = load_certs("certificate", &garbage).unwrap_err().to_string();
        assert!(e.contains("holds no CERTIFICATE"), "{e}");
        let e = load_key("private key", &garbage).unwrap_err().to_string();
        assert!(e.contains("holds no PRIVATE KEY"), "{e}");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_certs("certificate", &broken).unwrap_err().to_string();
        assert!(e.contains("not valid PEM"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
