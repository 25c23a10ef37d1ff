//! One connection from the router to a MariaDB/MySQL server, in our own protocol code so that
//! result sets can be relayed to the client as raw packets, never decoded. Also keeps what
//! session state the connection holds, so that a pooled connection is only re-synchronised
//! when it differs from the session that takes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::handshake::{self, NATIVE_PASSWORD};
use crate::protocol::{
    parse_err, parse_ok, CapabilityFlags, OkInfo, PacketReader, ServerError, MAX_PAYLOAD,
};

use super::BackendError;
use crate::config::BackendTlsMode;
use crate::tls::{self, BackendTls, StreamRead, StreamWrite};

/// How to open a backend connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub user: Arc<str>,
    pub password: Arc<str>,
    pub deprecate_eof: bool,
    pub found_rows: bool,
    pub connect_timeout: Duration,
    /// TLS towards the server (`None`: plain text).
    pub tls: Option<BackendTls>,
    pub tcp: TcpOptions,
}

/// How backend sockets are opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// The local address connections leave from (HAProxy's `source`); `None`: the kernel's
    /// choice.
    pub source: Option<std::net::IpAddr>,
    /// A connection whose sent data stays unacknowledged this long, or whose keepalive probes
    /// go unanswered as long, fails (`TCP_USER_TIMEOUT`, keepalive after half of it): a server
    /// or path that drops packets without a reset is given up on in this time instead of the
    /// kernel's ~15 minutes. `None`: the kernel's defaults.
    pub dead_after: Option<Duration>,
    /// Unix-domain sockets of local servers, by server address: connections to these go
    /// through the socket (see [`BackendConn::connect`]).
    pub local_sockets: Arc<std::collections::BTreeMap<Arc<str>, Arc<std::path::Path>>>,
}

impl TcpOptions {
    /// Opens a connection to `addr` (`host:port`) as these options say.
    pub async fn connect(&self, addr: &str) -> std::io::Result<TcpStream> {
        let stream = match self.source {
            None => TcpStream::connect(addr).await?,
            Some(source) => {
                let mut last = None;
                let mut found = None;
                for target in tokio::net::lookup_host(addr).await? {
                    if source.is_ipv4() != target.is_ipv4() {
                        continue;
                    }
                    let socket = match target {
                        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.bind(std::net::SocketAddr::new(source, 0))?;
                    match socket.connect(target).await {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(s), _) => s,
                    (None, Some(e)) => return Err(e),
                    (None, None) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrNotAvailable,
                            format!("{addr} has no address of the family of source {source}"),
                        ))
                    }
                }
            }
        };
        if let Some(limit) = self.dead_after {
            let sock = socket2::SockRef::from(&stream);
            sock.set_tcp_user_timeout(Some(limit))?;
            // Keepalive times are whole seconds.
            let probe = Duration::from_secs((limit.as_secs() / 2).max(1));
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(probe)
                .with_interval(Duration::from_secs(1));
            sock.set_tcp_keepalive(&keepalive)?;
        }
        Ok(stream)
    }
}

/// A statement prepared on this connection.
#[derive(Debug, Clone, Copy)]
pub struct BackendStmt {
    pub id: u32,
    pub params: u16,
    pub columns: u16,
}

/// What identifies a prepared statement on a connection: its text and the database it was
/// prepared in (a statement keeps resolving names in that database, as on a real server).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StmtKey {
    pub db: Option<Arc<str>>,
    pub sql: Arc<[u8]>,
}

/// Session state as it stands on this connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnState {
    pub db: Option<String>,
    /// The statement that set the connection's character set, `None` for the handshake's.
    pub names: Option<Arc<str>>,
    /// `key -> the SET statement that produced the value`, in application order.
    pub vars: Vec<(Arc<str>, Arc<str>)>,
    pub last_insert_id: u64,
}

/// An open backend connection.
#[derive(Debug)]
pub struct BackendConn {
    pub addr: Arc<str>,
    reader: PacketReader<StreamRead>,
    writer: StreamWrite,
    pub conn_id: u32,
    pub server_version: String,
    /// The greeting's scramble, needed again by COM_CHANGE_USER.
    scramble: Vec<u8>,
    pub deprecate_eof: bool,
    pub state: ConnState,
    /// Statements prepared here, by SQL text.
    pub stmts: HashMap<StmtKey, BackendStmt, crate::FastHash>,
    /// Status flags of the last response.
    pub status: u16,
    /// Set when the connection can no longer be trusted (i/o error, protocol confusion).
    pub broken: bool,
    /// The connection runs over TLS (which authentication plugins that send the password
    /// itself require).
    secure: bool,
    /// A `KILL` was sent to a statement on this connection: it may still arrive, so the
    /// connection never serves another session (it closes instead of going back to the pool).
    pub kill_sent: bool,
    /// When the connection last went back to its pool (for the pool's idle timeout).
    pub last_used: Instant,
    /// A second handle on the TCP socket (a duplicated descriptor), taken by the pool so
    /// that it can cut the connection while a read waits on it.
    pub(crate) socket: Option<std::os::fd::OwnedFd>,
    /// The pool's record of the socket; dropped with the connection.
    pub(crate) registration: Option<super::pool::Registration>,
}

/// A duplicate of the connection's socket descriptor (`None` if the process is out of
/// descriptors: the connection then works, but cannot be cut from outside).
fn dup_socket(stream: &impl std::os::fd::AsFd) -> Option<std::os::fd::OwnedFd> {
    stream.as_fd().try_clone_to_owned().ok()
}

/// Whether a read that must not wait found nothing to read.
fn nothing_to_read(read: std::io::Result<usize>) -> bool {
    matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// What an authentication plugin's client side is told of the connection.
struct AuthContext<'a> {
    password: &'a [u8],
    secure: bool,
    scramble: &'a [u8],
}

impl mysql_common::auth::plugins::Context for AuthContext<'_> {
    fn pass(&self) -> &[u8] {
        self.password
    }
    fn is_ipc_transport(&self) -> bool {
        false
    }
    fn is_tls_transport(&self) -> bool {
        self.secure
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

/// Statements kept prepared per connection before the cache is flushed.
const MAX_CACHED_STMTS: usize = 512;

/// The results of an internal query: OKs and errors of each statement, rows of any result set
/// as text (NULL as `None`).
#[derive(Debug, Default)]
pub struct QueryOutput {
    pub oks: Vec<OkInfo>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl BackendConn {
    /// Connects, switches to TLS when `opts.tls` says so, and authenticates with
    /// `mysql_native_password`. A server with a local socket in `opts.tcp.local_sockets` is
    /// reached through it (never with TLS), once it has shown it is the server at `addr`.
    pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Self, BackendError> {
        let timed_out = |_| BackendError::ConnectTimeout(addr.to_string());
        if let Some(path) = opts.tcp.local_sockets.get(addr) {
            let stream = tokio::time::timeout(
                opts.connect_timeout,
                tokio::net::UnixStream::connect(&**path),
            )
            .await
            .map_err(timed_out)?
            .map_err(|e| BackendError::Connect(format!("{addr} (socket {})", path.display()), e))?;
            let socket = dup_socket(&stream);
            let login = async {
                let mut conn = Self::handshake(addr, tls::split_unix(stream), None, opts).await?;
                conn.check_port(addr, path).await?;
                Ok::<_, BackendError>(conn)
            };
            let mut conn = tokio::time::timeout(opts.connect_timeout, login)
                .await
                .map_err(timed_out)??;
            conn.socket = socket;
            return Ok(conn);
        }
        let stream = tokio::time::timeout(opts.connect_timeout, opts.tcp.connect(addr))
            .await
            .map_err(timed_out)?
            .map_err(|e| BackendError::Connect(addr.to_string(), e))?;
        stream.set_nodelay(true).ok();
        let socket = dup_socket(&stream);
        let handshake = Self::handshake(addr, tls::split_plain(stream), opts.tls.as_ref(), opts);
        let mut conn = tokio::time::timeout(opts.connect_timeout, handshake)
            .await
            .map_err(timed_out)??;
        conn.socket = socket;
        Ok(conn)
    }

    /// Checks that the server reached through the local socket `path` is the one at `addr`:
    /// it listens on `addr`'s port.
    async fn check_port(&mut self, addr: &str, path: &std::path::Path) -> Result<(), BackendError> {
        let out = self.query("SELECT @@port").await?;
        let port = out.rows.first().and_then(|r| r.first()).cloned().flatten();
        let expected = addr.rsplit_once(':').map(|(_, p)| p);
        if port.as_deref() != expected {
            let why = format!(
                "the server on socket {} listens on port {}, not on this address's: check \
                 router.backend_sockets",
                path.display(),
                port.as_deref().unwrap_or("?")
            );
            return Err(BackendError::Connect(
                addr.to_string(),
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why),
            ));
        }
        Ok(())
    }

    async fn handshake(
        addr: &str,
        (r, w): (StreamRead, StreamWrite),
        tls: Option<&BackendTls>,
        opts: &ConnectOptions,
    ) -> Result<Self, BackendError> {
        let io_error =
            |e: &dyn std::fmt::Display| BackendError::Io(addr.to_string(), e.to_string());
        let mut reader = PacketReader::new(r);
        let mut writer = w;
        let greeting = match reader.read_message(usize::MAX).await {
            Ok(Some((_, _, g))) => g,
            Ok(None) => return Err(BackendError::Closed(addr.to_string())),
            Err(e) => return Err(io_error(&e)),
        };
        if greeting.first() == Some(&0xff) {
            return Err(BackendError::Server(
                parse_err(&greeting)
                    .unwrap_or_else(|| protocol_error("unreadable error in greeting")),
            ));
        }
        let g = handshake::parse_backend_greeting(&greeting)
            .ok_or_else(|| BackendError::Protocol("unreadable greeting".into()))?;
        let mut caps = handshake::router_capabilities() & g.caps;
        // IGNORE_SPACE would add IGNORE_SPACE to the session's sql_mode and INTERACTIVE would
        // give it interactive_timeout as wait_timeout: neither is what a client that did not
        // ask for them gets from a server.
        caps.remove(
            CapabilityFlags::CLIENT_CONNECT_WITH_DB
                | CapabilityFlags::CLIENT_CONNECT_ATTRS
                | CapabilityFlags::CLIENT_IGNORE_SPACE
                | CapabilityFlags::CLIENT_INTERACTIVE,
        );
        caps.set(CapabilityFlags::CLIENT_DEPRECATE_EOF, opts.deprecate_eof);
        caps.set(CapabilityFlags::CLIENT_FOUND_ROWS, opts.found_rows);
        if opts.deprecate_eof && !g.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
            return Err(BackendError::Protocol(
                "backend does not support CLIENT_DEPRECATE_EOF".into(),
            ));
        }
        let offered = g.caps.contains(CapabilityFlags::CLIENT_SSL);
        let mut seq = 1;
        match tls {
            Some(t) if offered => {
                let mut buf = Vec::with_capacity(36);
                crate::protocol::packet::frame(seq, &handshake::ssl_request(caps, 45), &mut buf);
                writer.write_all(&buf).await.map_err(|e| io_error(&e))?;
                let (r, early) = reader.into_parts();
                if !early.is_empty() {
                    return Err(BackendError::Protocol(
                        "backend sent data before the TLS handshake".into(),
                    ));
                }
                let tcp = tls::reunite(r, writer)
                    .ok_or_else(|| BackendError::Protocol("connection halves mismatch".into()))?;
                let stream = tls::connect(t, tcp, addr)
                    .await
                    .map_err(|e| BackendError::Tls(addr.to_string(), e.to_string()))?;
                let (version, cipher) = tls::describe(&stream);
                tracing::debug!(backend = %addr, tls_version = %version, cipher = %cipher, "backend connection uses TLS");
                let (r, w) = tls::split_tls(stream);
                reader = PacketReader::new(r);
                writer = w;
                caps.insert(CapabilityFlags::CLIENT_SSL);
                seq = 2;
            }
            Some(t) if t.mode != BackendTlsMode::Preferred => {
                return Err(BackendError::Tls(
                    addr.to_string(),
                    format!(
                        "the server does not offer TLS and router.backend_tls is {:?}; \
                         start it with ssl_cert and ssl_key, or lower backend_tls",
                        t.mode
                    ),
                ));
            }
            _ => {}
        }
        let mut conn = BackendConn {
            addr: addr.into(),
            reader,
            writer,
            conn_id: g.conn_id,
            server_version: g.server_version.clone(),
            scramble: g.scramble.clone(),
            deprecate_eof: opts.deprecate_eof,
            state: ConnState::default(),
            stmts: HashMap::default(),
            status: 0,
            broken: false,
            secure: caps.contains(CapabilityFlags::CLIENT_SSL),
            kill_sent: false,
            last_used: Instant::now(),
            socket: None,
            registration: None,
        };
        let token = handshake::scramble_native(&g.scramble, opts.password.as_bytes());
        let hello = handshake::backend_hello(caps, 45, &opts.user, &token, None);
        conn.write_packet(seq, &hello).await?;
        conn.finish_auth(&opts.password).await?;
        Ok(conn)
    }

    /// The rest of an authentication exchange once the login (or COM_CHANGE_USER) is sent:
    /// an account of another plugin than `mysql_native_password` (`client_ed25519`,
    /// `caching_sha2_password`, `parsec`, ...) switches to it and is answered with the
    /// password by that plugin's client side.
    async fn finish_auth(&mut self, password: &str) -> Result<(), BackendError> {
        use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Response};
        // The plugin the server switched to; `None`: native password, answered here (it
        // also takes the stage-1 form of a backend account's password).
        let mut plugin: Option<AuthProc> = None;
        // The nonce of the switch, which some plugins use again in later rounds.
        let mut nonce: Vec<u8> = Vec::new();
        loop {
            let (_, seq, resp) = self.read_raw().await?;
            let answer = match resp.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => {
                    return Err(BackendError::Server(
                        parse_err(&resp).unwrap_or_else(|| protocol_error("bad auth error")),
                    ))
                }
                Some(0xfe) => {
                    let mut pos = 1;
                    let name = crate::protocol::read_nul_bytes(&resp, &mut pos)
                        .unwrap_or_default()
                        .to_vec();
                    let data = &resp[pos.min(resp.len())..];
                    if name == NATIVE_PASSWORD.as_bytes() {
                        plugin = None;
                        let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                        Some(handshake::scramble_native(nonce, password.as_bytes()))
                    } else {
                        let what = String::from_utf8_lossy(&name).into_owned();
                        if handshake::is_stage1_password(password.as_bytes()) {
                            return Err(BackendError::Protocol(format!(
                                "the backend account is of the {what} plugin: the router knows \
                                 only the SHA1 of its password (router.backend_accounts); \
                                 configure the user in router.users with its password"
                            )));
                        }
                        let mut p =
                            AuthProc::init(&mysql_common::packets::AuthPlugin::from_bytes(&name))
                                .map_err(|e| BackendError::Protocol(format!("backend auth: {e}")))?;
                        // A 20-byte scramble comes NUL-terminated; other plugins' data is
                        // taken as it is (an ed25519 nonce may end in a zero byte).
                        let data = match data {
                            [d @ .., 0] if d.len() == 20 => d,
                            d => d,
                        };
                        nonce = data.to_vec();
                        let ctx = AuthContext {
                            password: password.as_bytes(),
                            secure: self.secure,
                            scramble: &nonce,
                        };
                        let out = p.run(ctx, &nonce).map_err(|e| {
                            BackendError::Protocol(format!("backend auth plugin {what}: {e}"))
                        })?;
                        plugin = Some(p);
                        match out {
                            Response::Next { packet } | Response::Last { packet } => packet,
                        }
                    }
                }
                Some(0x01) if plugin.is_some() => {
                    // More data for the plugin (caching_sha2_password's fast-auth result).
                    let p = plugin.as_mut().expect("checked");
                    let ctx = AuthContext {
                        password: password.as_bytes(),
                        secure: self.secure,
                        scramble: &nonce,
                    };
                    match p.run(ctx, &resp[1..]) {
                        Ok(Response::Next { packet } | Response::Last { packet }) => packet,
                        Err(e) => return Err(BackendError::Protocol(format!("backend auth: {e}"))),
                    }
                }
                _ => return Err(BackendError::Protocol("unexpected packet in auth".into())),
            };
            if let Some(answer) = answer {
                self.write_packet(seq.wrapping_add(1), &answer).await?;
            }
        }
    }

    /// Reads one whole message (continuations joined).
    pub async fn read_raw(&mut self) -> Result<(u8, u8, BytesMut), BackendError> {
        match self.reader.read_message(usize::MAX).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => {
                self.broken = true;
                Err(BackendError::Closed(self.addr.to_string()))
            }
            Err(e) => {
                self.broken = true;
                Err(BackendError::Io(self.addr.to_string(), e.to_string()))
            }
        }
    }

    /// Writes one message starting at sequence id `seq`.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<(), BackendError> {
        let mut buf = Vec::with_capacity(payload.len() + 8);
        crate::protocol::packet::frame(seq, payload, &mut buf);
        if let Err(e) = self.write_framed(&buf).await {
            self.broken = true;
            return Err(BackendError::Io(self.addr.to_string(), e.to_string()));
        }
        Ok(())
    }

    /// Writes bytes that are already framed as packets.
    pub(crate) async fn write_framed(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(framed).await?;
        // A no-op on TCP; on TLS it pushes out records still held by the TLS layer.
        self.writer.flush().await
    }

    /// Sends a command packet (sequence id 0).
    pub async fn send_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.write_packet(0, payload).await
    }

    /// Runs SQL (possibly several `;`-separated statements) for the router's own purposes,
    /// reading every result. The first server error ends it.
    pub async fn query(&mut self, sql: &str) -> Result<QueryOutput, BackendError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(0x03);
        payload.extend_from_slice(sql.as_bytes());
        self.send_command(&payload).await?;
        let mut out = QueryOutput::default();
        loop {
            let (_, _, first) = self.read_raw().await?;
            let more = match first.first() {
                Some(0x00) => {
                    let ok = parse_ok(&first).ok_or_else(|| self.confused("bad OK"))?;
                    self.status = ok.status;
                    out.oks.push(ok);
                    ok.status & MORE_RESULTS != 0
                }
                Some(0xff) => {
                    let e = parse_err(&first).ok_or_else(|| self.confused("bad ERR"))?;
                    return Err(BackendError::Server(e));
                }
                _ => self.read_text_rows(&first, &mut out.rows).await?,
            };
            if !more {
                return Ok(out);
            }
        }
    }

    /// Reads a text result set whose column-count packet is `first`; returns whether more
    /// results follow.
    async fn read_text_rows(
        &mut self,
        first: &[u8],
        rows: &mut Vec<Vec<Option<String>>>,
    ) -> Result<bool, BackendError> {
        let mut pos = 0;
        let columns = crate::protocol::read_lenenc_int(first, &mut pos)
            .ok_or_else(|| self.confused("bad column count"))?;
        for _ in 0..columns {
            self.read_raw().await?;
        }
        if !self.deprecate_eof {
            self.read_raw().await?;
        }
        loop {
            let (_, _, p) = self.read_raw().await?;
            if p.first() == Some(&0xff) {
                return Err(BackendError::Server(
                    parse_err(&p).unwrap_or_else(|| protocol_error("bad ERR")),
                ));
            }
            if crate::protocol::is_eof_or_ok_terminator(&p) {
                let status = crate::protocol::terminator_status(&p, self.deprecate_eof)
                    .ok_or_else(|| self.confused("bad terminator"))?;
                self.status = status;
                return Ok(status & MORE_RESULTS != 0);
            }
            let mut pos = 0;
            let mut row = Vec::with_capacity(columns as usize);
            for _ in 0..columns {
                if p.get(pos) == Some(&0xfb) {
                    pos += 1;
                    row.push(None);
                } else {
                    let v = crate::protocol::read_lenenc_bytes(&p, &mut pos)
                        .ok_or_else(|| self.confused("bad row"))?;
                    row.push(Some(String::from_utf8_lossy(v).into_owned()));
                }
            }
            rows.push(row);
        }
    }

    fn confused(&mut self, what: &str) -> BackendError {
        self.broken = true;
        BackendError::Protocol(format!("{what} from {}", self.addr))
    }

    /// Prepares `sql` here unless already prepared; returns the backend statement.
    pub async fn ensure_prepared(&mut self, key: &StmtKey) -> Result<BackendStmt, BackendError> {
        if let Some(s) = self.stmts.get(key) {
            return Ok(*s);
        }
        // Boxed: a statement is prepared once per connection, and this future is part of
        // every execute's.
        let (stmt, _) = Box::pin(self.prepare(key)).await?;
        Ok(stmt)
    }

    /// Prepares `sql` and returns the statement with the whole response (for the client).
    /// The statement is prepared in its own database; the connection is left there (the
    /// session's next statement brings it back to the session's database if needed).
    pub async fn prepare(
        &mut self,
        key: &StmtKey,
    ) -> Result<(BackendStmt, Vec<(u8, BytesMut)>), BackendError> {
        if self.stmts.len() >= MAX_CACHED_STMTS {
            self.close_all_statements().await?;
        }
        if let Some(db) = &key.db {
            if self.state.db.as_deref() != Some(db) {
                self.query(&format!("USE `{}`", db.replace('`', "``")))
                    .await?;
                self.state.db = Some(db.to_string());
            }
        }
        let sql = &key.sql;
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(0x16);
        payload.extend_from_slice(sql);
        self.send_command(&payload).await?;
        let (_, seq, first) = self.read_raw().await?;
        if first.first() == Some(&0xff) {
            return Err(BackendError::Server(
                parse_err(&first).unwrap_or_else(|| protocol_error("bad ERR")),
            ));
        }
        if first.first() != Some(&0x00) || first.len() < 12 {
            return Err(self.confused("bad prepare response"));
        }
        let id = u32::from_le_bytes([first[1], first[2], first[3], first[4]]);
        let columns = u16::from_le_bytes([first[5], first[6]]);
        let params = u16::from_le_bytes([first[7], first[8]]);
        let mut packets = vec![(seq, first)];
        let mut expect = usize::from(params) + usize::from(columns);
        if !self.deprecate_eof {
            expect += usize::from(params > 0) + usize::from(columns > 0);
        }
        for _ in 0..expect {
            let (_, seq, p) = self.read_raw().await?;
            packets.push((seq, p));
        }
        let stmt = BackendStmt {
            id,
            params,
            columns,
        };
        if let Some(old) = self.stmts.insert(key.clone(), stmt) {
            // Prepared twice (two sessions at once): close the one no longer reachable.
            let mut p = vec![0x19];
            p.extend_from_slice(&old.id.to_le_bytes());
            self.send_command(&p).await?;
        }
        Ok((stmt, packets))
    }

    /// Closes every statement prepared here (COM_STMT_CLOSE has no response).
    pub async fn close_all_statements(&mut self) -> Result<(), BackendError> {
        let ids: Vec<u32> = self.stmts.drain().map(|(_, s)| s.id).collect();
        for id in ids {
            let mut p = vec![0x19];
            p.extend_from_slice(&id.to_le_bytes());
            self.send_command(&p).await?;
        }
        Ok(())
    }

    /// Resets the connection to a fresh login's state with COM_CHANGE_USER: no database, no
    /// variables, no prepared statements, default character set.
    pub async fn change_user_reset(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<(), BackendError> {
        // The token is computed over the scramble of the original greeting.
        let token = handshake::scramble_native(&self.scramble, password.as_bytes());
        let mut p = Vec::with_capacity(64);
        p.push(0x11);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(token.len() as u8);
        p.extend_from_slice(&token);
        p.push(0); // no database
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
        p.push(0);
        self.send_command(&p).await?;
        if let Err(e) = self.finish_auth(password).await {
            self.broken = true;
            return Err(e);
        }
        self.state = ConnState::default();
        self.stmts.clear();
        self.status = AUTOCOMMIT;
        Ok(())
    }

    /// Whether the idle connection still looks usable: nothing unread, not closed by the
    /// server (a killed connection shows up as end-of-stream or an unsolicited error packet).
    pub fn looks_alive(&mut self) -> bool {
        if self.broken || !self.reader.buffer().is_empty() {
            return false;
        }
        match self.reader.get_ref() {
            // Nothing to read yet is the one good answer.
            StreamRead::Plain(r) => nothing_to_read(r.try_read(&mut [0u8; 1])),
            StreamRead::Unix(r) => nothing_to_read(r.try_read(&mut [0u8; 1])),
            // Through TLS: poll a read once without waiting. Pending means nothing arrived
            // (TLS session tickets are consumed by the TLS layer and do not count); anything
            // else (data, end of stream, an error) means the connection is not reusable.
            StreamRead::Tls(_) => {
                use futures::FutureExt;
                self.reader.fill().now_or_never().is_none()
            }
            // Client streams only.
            StreamRead::Compressed(_) | StreamRead::Detached => false,
        }
    }

    /// Whether the last response left a transaction open.
    pub fn in_transaction(&self) -> bool {
        self.status & IN_TRANS != 0
    }

    pub(crate) fn reader(&mut self) -> &mut PacketReader<StreamRead> {
        &mut self.reader
    }

    /// Discards bytes that a relay consumed from the read buffer.
    pub(crate) fn consume(&mut self, n: usize) {
        self.reader.buffer().advance(n);
    }
}

/// SERVER_MORE_RESULTS_EXISTS.
pub const MORE_RESULTS: u16 = 0x0008;
/// SERVER_STATUS_IN_TRANS.
pub const IN_TRANS: u16 = 0x0001;
/// SERVER_STATUS_AUTOCOMMIT.
pub const AUTOCOMMIT: u16 = 0x0002;
/// SERVER_STATUS_CURSOR_EXISTS.
pub const CURSOR_EXISTS: u16 = 0x0040;

fn protocol_error(what: &str) -> ServerError {
    ServerError {
        code: 2027,
        sqlstate: "HY000".into(),
        message: format!("Malformed packet from backend: {what}"),
        raw: None,
    }
}

/// The largest payload one packet carries.
pub const PACKET_MAX: usize = MAX_PAYLOAD;

#[cfg(test)]
mod tcp_tests {
    use super::*;

    #[tokio::test]
    async fn connections_leave_from_the_source_address_with_dead_path_detection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let opts = TcpOptions {
            source: Some("127.0.0.2".parse().unwrap()),
            dead_after: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        let (stream, accepted) = tokio::join!(opts.connect(&addr), listener.accept());
        let stream = stream.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
        let sock = socket2::SockRef::from(&stream);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(3));

        // The defaults: the kernel's choices.
        let defaults = TcpOptions::default();
        let (plain, accepted) = tokio::join!(defaults.connect(&addr), listener.accept());
        let plain = plain.unwrap();
        assert_eq!(accepted.unwrap().1.ip().to_string(), "127.0.0.1");
        let sock = socket2::SockRef::from(&plain);
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);
        assert!(!sock.keepalive().unwrap());

        // A source of the wrong family finds no address to connect to.
        let v6 = TcpOptions {
            source: Some("::1".parse().unwrap()),
            dead_after: None,
            ..Default::default()
        };
        let e = v6.connect(&addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
    }
}
