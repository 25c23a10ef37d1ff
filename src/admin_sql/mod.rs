//! The admin SQL port: a MySQL-protocol listener where operators type `SHOW CLUSTERS`,
//! `SWITCHOVER c1`, `SET MAINTENANCE ...` in the `mariadb` client and get ordinary result
//! sets. Same users, roles, scopes and audit log as the HTTP API.
//!
//! - this file: accept loop, connection limit, shutdown, and the opensrv-mysql shim that turns
//!   packets into calls;
//! - [`parse`]: the statements; [`commands`]: what each one does and answers.
//!
//! **Authentication.** Users' passwords are stored as argon2 hashes, which a
//! `mysql_native_password` scramble can't be checked against, so the port asks for
//! `mysql_clear_password`: the client sends the password itself, checked like HTTP Basic
//! (or a user's token, like a Bearer token). The stock `mariadb` client and PyMySQL do it
//! without options; mysql_async needs `enable_cleartext_plugin(true)`. As with the HTTP API's
//! Basic auth the password crosses the connection as sent: keep the port on loopback or a
//! trusted network. Failures are answered with 1045 (28000), late when an address fails often.

pub mod commands;
pub mod parse;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter,
};
use router::context::LoginThrottle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::acl::Principal;
use crate::admin::AdminState;
use commands::{Cell, ColType, Reply};

/// Admin connections at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A client must finish logging in within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The authentication method asked of every client.
const CLEAR_PASSWORD: &str = "mysql_clear_password";

/// What every connection of the port shares.
struct Server {
    state: AdminState,
    next_id: AtomicU32,
    throttle: LoginThrottle,
}

/// The version the port announces.
pub(crate) fn version(state: &AdminState) -> String {
    format!("{}-admin", state.router.server_version)
}

/// Serves the admin SQL port on `listener` until `shutdown` completes. Then it stops
/// accepting, closes idle connections at once and lets a running statement (a switchover,
/// say) finish and answer first.
pub async fn run(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let server = Arc::new(Server {
        state,
        next_id: AtomicU32::new(1),
        throttle: LoginThrottle::default(),
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stop_rx) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin SQL port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "admin SQL port: too many connections, closing one");
                    continue;
                };
                let server = server.clone();
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    serve(server, stream, peer, stop).await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while conns.join_next().await.is_some() {}
}

/// What a connection's shim and its writer share.
struct ConnShared {
    /// A statement is running or its answer is not yet written out.
    busy: watch::Sender<bool>,
    /// Set when the login failed: the error packet to send instead of opensrv's.
    denial: Mutex<Option<Vec<u8>>>,
    authenticated: OnceLock<Principal>,
    /// The client's capability flags, from its handshake response.
    client_caps: AtomicU32,
    /// A password is being checked (argon2 takes a while, longer on a busy machine).
    verifying: AtomicBool,
}

async fn serve(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    stream.set_nodelay(true).ok();
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    let (busy, busy_rx) = watch::channel(false);
    let shared = Arc::new(ConnShared {
        busy,
        denial: Mutex::new(None),
        authenticated: OnceLock::new(),
        client_caps: AtomicU32::new(0),
        verifying: AtomicBool::new(false),
    });
    let (r, w) = stream.into_split();
    let out = Out {
        inner: w,
        buf: Vec::with_capacity(4096),
        shared: shared.clone(),
    };
    let shim = Shim {
        server: server.clone(),
        id,
        peer,
        shared: shared.clone(),
    };
    let input = In {
        inner: r,
        shared: shared.clone(),
        first: Some(Vec::new()),
        pending: Vec::new(),
        at: 0,
    };
    let conversation = AsyncMysqlIntermediary::run_on(shim, input, out);
    // The client must get to its password within the timeout; checking it may take longer.
    let login_deadline = async {
        loop {
            tokio::time::sleep(LOGIN_TIMEOUT).await;
            if shared.authenticated.get().is_some() {
                std::future::pending::<()>().await;
            }
            if !shared.verifying.load(Ordering::Relaxed) {
                return;
            }
        }
    };
    tokio::select! {
        result = conversation => {
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::PermissionDenied {
                    tracing::debug!(conn = id, %peer, error = %e, "admin SQL connection ended");
                }
            }
        }
        _ = login_deadline => {
            tracing::debug!(conn = id, %peer, "admin SQL client did not log in in time");
        }
        _ = stopping_when_idle(stop, busy_rx) => {}
    }
}

/// Completes once shutdown was asked for and no statement is running or unanswered.
async fn stopping_when_idle(mut stop: watch::Receiver<bool>, mut busy: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
    let _ = busy.wait_for(|b| !*b).await;
}

/// The opensrv-mysql shim: login and statements.
struct Shim {
    server: Arc<Server>,
    id: u32,
    peer: SocketAddr,
    shared: Arc<ConnShared>,
}

#[async_trait::async_trait]
impl AsyncMysqlShim<Out> for Shim {
    type Error = io::Error;

    fn version(&self) -> String {
        version(&self.server.state)
    }

    fn connect_id(&self) -> u32 {
        self.id
    }

    fn default_auth_plugin(&self) -> &str {
        CLEAR_PASSWORD
    }

    async fn auth_plugin_for_username(&self, _user: &[u8]) -> &str {
        CLEAR_PASSWORD
    }

    fn salt(&self) -> [u8; 20] {
        // Not used by clear-text passwords; random all the same, without NUL bytes.
        let mut s: [u8; 20] = rand::random();
        for b in &mut s {
            *b = (*b % 94) + 33;
        }
        s
    }

    async fn authenticate(
        &self,
        _auth_plugin: &str,
        username: &[u8],
        _salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        let user = String::from_utf8_lossy(username).into_owned();
        let password = auth_data.strip_suffix(b"\0").unwrap_or(auth_data);
        let password = String::from_utf8_lossy(password).into_owned();
        let acl = self.server.state.acl.clone();
        let name = user.clone();
        let principal = if password.is_empty() {
            None
        } else {
            self.shared.verifying.store(true, Ordering::Relaxed);
            let p = tokio::task::spawn_blocking(move || acl.login(&name, &password))
                .await
                .ok()
                .flatten();
            self.shared.verifying.store(false, Ordering::Relaxed);
            p
        };
        if let Some(p) = principal {
            tracing::info!(conn = self.id, peer = %self.peer, user = %p.name, "admin SQL login");
            let _ = self.shared.authenticated.set(p);
            return true;
        }
        let host = self.peer.ip().to_string();
        let cfg = &self.server.state.router.config;
        let t = self.server.throttle.failed(
            &host,
            cfg.login_failure_limit,
            Duration::from_millis(cfg.login_failure_delay_ms),
        );
        if t.failures <= cfg.login_failure_limit {
            tracing::warn!(user = %user, peer = %self.peer, "admin SQL login refused: wrong user or password");
        } else if t.failures == cfg.login_failure_limit + 1 {
            tracing::warn!(peer = %self.peer, "admin SQL logins from this address fail too often; answering late");
        }
        if !t.delay.is_zero() {
            tokio::time::sleep(t.delay).await;
        }
        let message = format!(
            "Access denied for user '{}'@'{host}' (using password: {})",
            user.replace('\'', "''"),
            if auth_data.is_empty() { "NO" } else { "YES" }
        );
        *lock(&self.shared.denial) = Some(err_payload(ErrorKind::ER_ACCESS_DENIED_ERROR, &message));
        false
    }

    async fn on_prepare<'a>(
        &'a mut self,
        _query: &'a str,
        info: StatementMetaWriter<'a, Out>,
    ) -> io::Result<()> {
        info.error(
            ErrorKind::ER_UNSUPPORTED_PS,
            b"prepared statements are not supported on the admin port; send the statement as text"
                .as_slice(),
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _id: u32,
        _params: ParamParser<'a>,
        results: QueryResultWriter<'a, Out>,
    ) -> io::Result<()> {
        results
            .error(
                ErrorKind::ER_UNSUPPORTED_PS,
                b"prepared statements are not supported on the admin port".as_slice(),
            )
            .await
    }

    async fn on_close<'a>(&'a mut self, _stmt: u32)
    where
        Out: 'async_trait,
    {
    }

    async fn on_init<'a>(
        &'a mut self,
        _db: &'a str,
        writer: InitWriter<'a, Out>,
    ) -> io::Result<()> {
        // The port has no databases; `USE x` and a database given at login are accepted.
        writer.ok().await
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, Out>,
    ) -> io::Result<()> {
        let Some(who) = self.shared.authenticated.get().cloned() else {
            return results
                .error(
                    ErrorKind::ER_ACCESS_DENIED_ERROR,
                    b"not logged in".as_slice(),
                )
                .await;
        };
        self.shared.busy.send_replace(true);
        let reply = match parse::parse(query) {
            Ok(stmt) => {
                if stmt.mutates() {
                    tracing::info!(conn = self.id, user = %who.name, statement = %query.trim(), "admin SQL statement");
                }
                commands::execute(&self.server.state, &who, self.id, stmt, query).await
            }
            Err(why) => commands::syntax_error(&why),
        };
        let session_track = self.shared.client_caps.load(Ordering::Relaxed) & SESSION_TRACK != 0;
        write_reply(reply, results, session_track).await
    }
}

/// CLIENT_SESSION_TRACK.
const SESSION_TRACK: u32 = 0x80_0000;

async fn write_reply(
    reply: Reply,
    results: QueryResultWriter<'_, Out>,
    session_track: bool,
) -> io::Result<()> {
    match reply {
        Reply::Error { kind, message } => results.error(kind, message.as_bytes()).await,
        Reply::Ok { affected, info } => {
            // Servers send the message as a length-encoded string, which is what clients
            // read; opensrv-mysql writes it bare unless the client tracks session state.
            // (Our messages are short; one length byte below 128 keeps the text UTF-8.)
            let info = if session_track || info.is_empty() {
                info
            } else {
                let mut end = info.len().min(127);
                while !info.is_char_boundary(end) {
                    end -= 1;
                }
                let mut s = String::with_capacity(end + 1);
                s.push(char::from(end as u8));
                s.push_str(&info[..end]);
                s
            };
            results
                .completed(OkResponse {
                    affected_rows: affected,
                    info,
                    ..Default::default()
                })
                .await
        }
        Reply::Rows { columns, rows } => {
            let cols: Vec<Column> = columns
                .into_iter()
                .map(|(name, ty)| Column {
                    table: String::new(),
                    column: name,
                    coltype: match ty {
                        ColType::Text => ColumnType::MYSQL_TYPE_VAR_STRING,
                        ColType::Int => ColumnType::MYSQL_TYPE_LONGLONG,
                    },
                    colflags: ColumnFlags::empty(),
                })
                .collect();
            let mut w = results.start(&cols).await?;
            for row in rows {
                for cell in row {
                    match cell {
                        Cell::Null => w.write_col(None::<i64>)?,
                        Cell::Int(n) => w.write_col(n)?,
                        Cell::Text(s) => w.write_col(s.as_str())?,
                    }
                }
                w.end_row().await?;
            }
            w.finish().await
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An ERR packet's payload.
fn err_payload(kind: ErrorKind, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&(kind as u16).to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(kind.sqlstate());
    p.extend_from_slice(message.as_bytes());
    p
}

/// The connection's output: buffers what opensrv writes until it flushes (one write per
/// answer instead of one per packet), replaces the error of a failed login with 1045
/// (opensrv-mysql answers every failed login with 1698), and tells the shutdown when an
/// answer is fully written.
struct Out {
    inner: OwnedWriteHalf,
    buf: Vec<u8>,
    shared: Arc<ConnShared>,
}

impl Out {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Out {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= 64 * 1024 {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(payload) = lock(&this.shared.denial).take() {
            // The buffer holds exactly opensrv's error packet: keep its sequence id.
            let seq = this.buf.get(3).copied().unwrap_or(2);
            let len = (payload.len() as u32).to_le_bytes();
            this.buf.clear();
            this.buf.extend_from_slice(&[len[0], len[1], len[2], seq]);
            this.buf.extend_from_slice(&payload);
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.shared
            .busy
            .send_if_modified(|b| std::mem::replace(b, false));
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The connection's input: passes bytes through, except that a handshake response made for
/// another method (mysql_async and most connectors first answer with a
/// `mysql_native_password` scramble, whatever the server asked for) loses its auth data, so
/// that opensrv-mysql asks the client to switch to `mysql_clear_password`.
struct In {
    inner: OwnedReadHalf,
    shared: Arc<ConnShared>,
    /// The first packet while it is read; `None` once it was handed on.
    first: Option<Vec<u8>>,
    /// The (rewritten) first packet being handed on.
    pending: Vec<u8>,
    at: usize,
}

impl AsyncRead for In {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(first) = &mut this.first {
            loop {
                let need = match first.get(..3) {
                    Some(h) => {
                        4 + (usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16)
                    }
                    None => 4,
                };
                // A handshake response is a few hundred bytes: a larger one is handed on
                // as it comes, unchanged.
                if first.len() >= need || need > 64 * 1024 {
                    break;
                }
                let mut chunk = [0u8; 512];
                let want = (need - first.len()).min(chunk.len());
                let mut rb = ReadBuf::new(&mut chunk[..want]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                if rb.filled().is_empty() {
                    // The client left: hand on what there is (opensrv then sees the end).
                    break;
                }
                first.extend_from_slice(rb.filled());
            }
            let packet = this.first.take().unwrap_or_default();
            if let Some(c) = packet.get(4..8) {
                let caps = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                this.shared.client_caps.store(caps, Ordering::Relaxed);
            }
            let whole = packet.get(..3).is_some_and(|h| {
                packet.len()
                    == 4 + (usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16)
            });
            this.pending = if whole {
                without_foreign_auth(packet)
            } else {
                packet
            };
            this.at = 0;
        }
        if this.at < this.pending.len() {
            let n = buf.remaining().min(this.pending.len() - this.at);
            buf.put_slice(&this.pending[this.at..this.at + n]);
            this.at += n;
            if this.at == this.pending.len() {
                this.pending = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// A handshake response packet (header included) with its auth data emptied when it was made
/// for a method other than `mysql_clear_password`; anything else unchanged.
fn without_foreign_auth(packet: Vec<u8>) -> Vec<u8> {
    const PROTOCOL_41: u32 = 0x200;
    const CONNECT_WITH_DB: u32 = 0x8;
    const SECURE_CONNECTION: u32 = 0x8000;
    const PLUGIN_AUTH: u32 = 0x8_0000;
    const LENENC_AUTH: u32 = 0x20_0000;
    const SSL: u32 = 0x800;
    let Some(p) = packet.get(4..) else {
        return packet;
    };
    let Some(caps) = p
        .get(..4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    else {
        return packet;
    };
    if caps & PROTOCOL_41 == 0 || caps & SSL != 0 || p.len() <= 32 {
        return packet;
    }
    let nul = |from: usize| {
        p.get(from..)?
            .iter()
            .position(|&b| b == 0)
            .map(|i| from + i)
    };
    let Some(user_end) = nul(32) else {
        return packet;
    };
    let auth_at = user_end + 1;
    let (auth_len, len_size) = if caps & LENENC_AUTH != 0 {
        match p.get(auth_at) {
            Some(&n) if n < 0xfb => (usize::from(n), 1),
            _ => return packet,
        }
    } else if caps & SECURE_CONNECTION != 0 {
        match p.get(auth_at) {
            Some(&n) => (usize::from(n), 1),
            None => return packet,
        }
    } else {
        return packet;
    };
    let rest_at = auth_at + len_size + auth_len;
    if auth_len == 0 || rest_at > p.len() {
        return packet;
    }
    let mut at = rest_at;
    if caps & CONNECT_WITH_DB != 0 && at < p.len() {
        match nul(at) {
            Some(end) => at = end + 1,
            None => return packet,
        }
    }
    let plugin = if caps & PLUGIN_AUTH != 0 && at < p.len() {
        nul(at).map_or(&p[at..], |end| &p[at..end])
    } else {
        &b""[..]
    };
    if plugin == CLEAR_PASSWORD.as_bytes() {
        return packet;
    }
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&[0, 0, 0, packet[3]]);
    out.extend_from_slice(&p[..auth_at]);
    out.push(0);
    out.extend_from_slice(&p[rest_at..]);
    let len = (out.len() - 4) as u32;
    out[..3].copy_from_slice(&len.to_le_bytes()[..3]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(plugin: &str, auth: &[u8]) -> Vec<u8> {
        let caps: u32 = 0x200 | 0x8 | 0x8000 | 0x8_0000 | 0x20_0000;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        p.extend_from_slice(b"ops\0");
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
        p.extend_from_slice(b"db\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p.extend_from_slice(&[3, 1, b'k', 0]);
        let len = (p.len() as u32).to_le_bytes();
        let mut packet = vec![len[0], len[1], len[2], 1];
        packet.extend_from_slice(&p);
        packet
    }

    #[test]
    fn a_native_scramble_is_dropped_so_that_the_client_switches() {
        let got = without_foreign_auth(hello("mysql_native_password", &[7; 20]));
        assert_eq!(got, hello("mysql_native_password", &[]));
        let clear = hello(CLEAR_PASSWORD, b"secret\0");
        assert_eq!(without_foreign_auth(clear.clone()), clear);
        let empty = hello("", &[]);
        assert_eq!(without_foreign_auth(empty.clone()), empty);
        for junk in [vec![], vec![1, 0, 0, 1, 0], vec![40, 0, 0, 1, 0, 2, 0, 0]] {
            assert_eq!(without_foreign_auth(junk.clone()), junk);
        }
    }
}
