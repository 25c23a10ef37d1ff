//! The connection phase of a client session: greeting, the switch to TLS after an SSLRequest,
//! handshake response, authentication (`mysql_native_password`, switching clients that ask for
//! another method), COM_CHANGE_USER.

use std::sync::Arc;
use std::time::Duration;

use crate::context::{RouterContext, RouterMetrics, User};
use crate::error::RouterError;
use crate::protocol::handshake::{
    auth_switch_request, client_capabilities, new_scramble, parse_client_hello, recover_stage1,
    server_greeting, stage1_password, verify_native, ClientHello, NATIVE_PASSWORD,
};
use crate::protocol::{read_nul_bytes, CapabilityFlags, PacketReader, PacketWriter};
use crate::tls::{self, StreamRead, StreamWrite};

/// A client that passed authentication.
#[derive(Debug)]
pub struct Authenticated {
    pub user: Arc<User>,
    pub hello: ClientHello,
    pub caps: CapabilityFlags,
    pub scramble: [u8; 20],
    /// Sequence id for the OK that ends the connection phase.
    pub next_seq: u8,
}

/// Why the connection phase ended without a session.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// Tell the client this (with sequence id) and close.
    Refuse(RouterError, u8),
    /// The client left, timed out or spoke nonsense: just close.
    Gone,
}

/// What the connection phase asks of the caller next.
#[derive(Debug)]
pub enum Step {
    /// The client logged in.
    Done(Authenticated),
    /// The client sent an SSLRequest: switch the connection to TLS, then call
    /// [`respond`] again to read the full handshake response over it.
    StartTls,
}

/// Sends the greeting (protocol 10); CLIENT_SSL is offered when `offer_tls`. Returns the
/// scramble the client must answer.
pub async fn greet(
    ctx: &RouterContext,
    conn_id: u32,
    offer_tls: bool,
    output: &mut PacketWriter<StreamWrite>,
) -> Result<[u8; 20], HandshakeFailure> {
    let scramble = new_scramble();
    let mut caps = client_capabilities();
    caps.set(CapabilityFlags::CLIENT_SSL, offer_tls);
    output.push(
        0,
        &server_greeting(conn_id, &ctx.server_version, &scramble, caps, 45, 0x0002),
    );
    output.flush().await.map_err(|_| HandshakeFailure::Gone)?;
    Ok(scramble)
}

/// Reads the client's handshake response and checks its password. `secure` says whether the
/// connection already runs over TLS.
pub async fn respond(
    ctx: &RouterContext,
    peer_host: &str,
    scramble: &[u8; 20],
    secure: bool,
    input: &mut PacketReader<StreamRead>,
    output: &mut PacketWriter<StreamWrite>,
) -> Result<Step, HandshakeFailure> {
    let timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
    let (_, last, payload) = read_timed(input, timeout).await?;
    let mut seq = last.wrapping_add(1);
    let hello = match parse_client_hello(&payload) {
        Ok(h) => h,
        Err(e) => {
            let what = if e == crate::protocol::handshake::HelloError::Protocol40 {
                "client does not speak protocol 4.1"
            } else {
                "handshake response"
            };
            return Err(HandshakeFailure::Refuse(RouterError::Malformed(what), seq));
        }
    };
    if hello.ssl_request {
        if !secure && ctx.tls.clients.is_some() {
            return Ok(Step::StartTls);
        }
        // TLS was not offered, or a second SSLRequest came over TLS.
        return Err(HandshakeFailure::Refuse(
            RouterError::Malformed("SSLRequest where none was expected"),
            seq,
        ));
    }
    if !secure && ctx.config.require_secure_transport {
        // Checked before the password, as MariaDB does: the login is refused whoever it is.
        RouterMetrics::inc(&ctx.metrics.insecure_refused);
        tracing::info!(user = %hello.user, peer = %peer_host, "plain-text login refused: require_secure_transport is on");
        return Err(HandshakeFailure::Refuse(
            RouterError::SecureTransportRequired,
            seq,
        ));
    }
    let caps = client_capabilities();
    let mut token = hello.auth_response.clone();
    let wrong_plugin = hello
        .auth_plugin
        .as_deref()
        .is_some_and(|p| !p.is_empty() && p != NATIVE_PASSWORD);
    if wrong_plugin {
        output.push(seq, &auth_switch_request(scramble));
        output.flush().await.map_err(|_| HandshakeFailure::Gone)?;
        let (_, last, reply) = read_timed(input, timeout).await?;
        token = reply.to_vec();
        seq = last.wrapping_add(1);
    }
    let mut user = check_password(ctx, &hello.user, scramble, &token);
    if user.is_none() && ctx.config.backend_accounts {
        user = backend_account(ctx, &hello.user, scramble, &token)
            .await
            .map_err(|e| HandshakeFailure::Refuse(e, seq))?;
    }
    let Some(user) = user else {
        RouterMetrics::inc(&ctx.metrics.auth_failures);
        let limit = ctx.config.login_failure_limit;
        let t = ctx.login_failures.failed(
            peer_host,
            limit,
            Duration::from_millis(ctx.config.login_failure_delay_ms),
        );
        if t.failures <= limit {
            tracing::warn!(user = %hello.user, peer = %peer_host, "login refused: wrong user or password");
        } else if t.failures == limit + 1 || t.failures.is_multiple_of(100) {
            tracing::warn!(
                peer = %peer_host,
                failures = t.failures,
                "login refused: too many failed logins from this address in 10 s; \
                 answering its failures late"
            );
        }
        if !t.delay.is_zero() {
            RouterMetrics::inc(&ctx.metrics.auth_throttled);
            tokio::time::sleep(t.delay).await;
        }
        return Err(HandshakeFailure::Refuse(
            RouterError::AccessDenied {
                user: hello.user.clone(),
                host: peer_host.to_string(),
                using_password: !token.is_empty(),
            },
            seq,
        ));
    };
    let caps = caps & hello.caps;
    Ok(Step::Done(Authenticated {
        user,
        caps,
        hello,
        scramble: *scramble,
        next_seq: seq,
    }))
}

/// Switches a client connection to TLS after its SSLRequest, within the handshake timeout.
/// `None` when the TLS handshake fails (logged at debug: scanners and clients with the wrong
/// CA do this).
pub async fn start_tls(
    ctx: &RouterContext,
    input: PacketReader<StreamRead>,
    output: PacketWriter<StreamWrite>,
) -> Option<(PacketReader<StreamRead>, PacketWriter<StreamWrite>)> {
    let acceptor = ctx.tls.clients.as_ref()?;
    let (chunk, capacity) = (input.chunk(), output.capacity());
    let (r, early) = input.into_parts();
    let tcp = tls::reunite(r, output.into_inner())?;
    let timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
    let stream = match tokio::time::timeout(timeout, tls::accept(acceptor, tcp, &early)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "client TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("client TLS handshake timed out");
            return None;
        }
    };
    let (version, cipher) = tls::describe(&stream);
    tracing::debug!(tls_version = %version, cipher = %cipher, "client connection switched to TLS");
    RouterMetrics::inc(&ctx.metrics.tls_connections);
    let (r, w) = tls::split_tls(stream);
    Some((
        PacketReader::with_chunk(r, chunk),
        PacketWriter::with_capacity(w, capacity),
    ))
}

async fn read_timed(
    input: &mut PacketReader<StreamRead>,
    timeout: Duration,
) -> Result<(u8, u8, bytes::BytesMut), HandshakeFailure> {
    match tokio::time::timeout(timeout, input.read_message(64 * 1024)).await {
        Ok(Ok(Some(m))) => Ok(m),
        _ => Err(HandshakeFailure::Gone),
    }
}

/// The user, when `token` is the right native-password scramble for it.
pub fn check_password(
    ctx: &RouterContext,
    user: &str,
    scramble: &[u8],
    token: &[u8],
) -> Option<Arc<User>> {
    let users = ctx.users.load();
    let u = users.get(user)?;
    verify_native(scramble, token, &u.hash, u.password.is_empty()).then(|| u.clone())
}

/// With `backend_accounts`: `user` as an account of the default cluster's leader
/// (`mysql.user`, read now with the router's internal user), when `token` proves its
/// password (an anonymous account `''@host` stands for any user name, as on the server).
/// `Err` names an account the router can't log in with (another authentication plugin).
pub async fn backend_account(
    ctx: &RouterContext,
    user: &str,
    scramble: &[u8],
    token: &[u8],
) -> Result<Option<Arc<User>>, RouterError> {
    let mut other_plugin = None;
    let found = backend_account_rows(ctx, user, scramble, token, &mut other_plugin).await;
    match (found, other_plugin) {
        (Some(u), _) => Ok(Some(u)),
        (None, Some(plugin)) => Err(RouterError::NotSupported(format!(
            "logins to backend accounts of the {plugin} plugin ('{user}')"
        ))),
        (None, None) => Ok(None),
    }
}

async fn backend_account_rows(
    ctx: &RouterContext,
    user: &str,
    scramble: &[u8],
    token: &[u8],
    other_plugin: &mut Option<String>,
) -> Option<Arc<User>> {
    let cluster = ctx.route(None, false).ok()?.cluster;
    let mut conn = match crate::xa::internal_conn(ctx, &cluster, None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "backend accounts: cannot read mysql.user");
            return None;
        }
    };
    let quoted = user.replace('\\', "\\\\").replace('\'', "''");
    let sql = format!(
        "SELECT Password, authentication_string, plugin, User = '' FROM mysql.user \
         WHERE User = '{quoted}' OR User = '' ORDER BY User = ''"
    );
    let rows = match conn.query(&sql).await {
        Ok(out) => out.rows,
        Err(e) => {
            tracing::warn!(error = %e, "backend accounts: cannot read mysql.user");
            return None;
        }
    };
    // Closed, not pooled: logins of backend accounts are rare, and an idle connection of the
    // router's own would show in the server's process list among the clients'.
    conn.discard();
    let generation = ctx
        .users_generation
        .load(std::sync::atomic::Ordering::Acquire);
    for row in rows {
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let plugin = field(2);
        if !(plugin.is_empty() || plugin == NATIVE_PASSWORD) {
            if field(3) == "0" && other_plugin.is_none() {
                *other_plugin = Some(plugin);
            }
            continue;
        }
        let stored = Some(field(0))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| field(1));
        let (password, hash) = if stored.is_empty() {
            if !token.is_empty() {
                continue;
            }
            (String::new(), [0u8; 20])
        } else {
            let Some(hash) = parse_native_hash(&stored) else {
                if field(3) == "0" && other_plugin.is_none() {
                    // A pre-4.1 hash (16 hex digits) under the native plugin's name.
                    *other_plugin = Some("mysql_old_password".into());
                }
                continue;
            };
            let Some(stage1) = recover_stage1(scramble, token, &hash) else {
                continue;
            };
            (stage1_password(&stage1), hash)
        };
        let password: Arc<str> = password.into();
        // The account may have been dropped and made again since this user's pooled
        // connections logged in (with other privileges, or another host part): they are
        // not reused for a new login.
        ctx.pools.forget_user(user);
        return Some(Arc::new(User {
            name: user.into(),
            password,
            hash,
            generation,
        }));
    }
    None
}

/// `*` and 40 hex digits, as `mysql.user` shows a native-password hash.
fn parse_native_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A parsed COM_CHANGE_USER.
#[derive(Debug)]
pub struct ChangeUser {
    pub user: String,
    pub token: Vec<u8>,
    pub database: Option<String>,
    pub collation: Option<u8>,
    pub plugin: Option<String>,
}

/// Parses COM_CHANGE_USER's payload (after the command byte).
pub fn parse_change_user(p: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let mut pos = 0;
    let user = String::from_utf8_lossy(read_nul_bytes(p, &mut pos)?).into_owned();
    let token = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let len = usize::from(*p.get(pos)?);
        pos += 1;
        let t = p.get(pos..pos + len)?.to_vec();
        pos += len;
        t
    } else {
        read_nul_bytes(p, &mut pos)?.to_vec()
    };
    let db = read_nul_bytes(p, &mut pos).unwrap_or_default();
    let database = (!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned());
    let mut collation = None;
    if pos + 2 <= p.len() {
        collation = Some(p[pos]);
        pos += 2;
    }
    let plugin = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && pos < p.len() {
        read_nul_bytes(p, &mut pos).map(|b| String::from_utf8_lossy(b).into_owned())
    } else {
        None
    };
    Some(ChangeUser {
        user,
        token,
        database,
        collation,
        plugin,
    })
}
