//! One client session: reads commands, decides where each goes, keeps the session's state on
//! whichever pooled backend connection runs it, relays the response, and pins the session to
//! one backend connection while it must stay there (transactions, locks, temporary tables).

mod auth;
mod autoinc;
mod gather;
mod kill;
mod multiwrite;
mod prepared;
mod retry;
pub mod state;
mod xa;

#[cfg(test)]
mod footprint;

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::scatter::ScatterError;
use crate::backend::{
    relay, BackendError, PoolKey, PooledConn, RelayError, RelayMode, RelayOutcome, StmtKey,
};
use crate::classify::{parse_set, Classification, PinReason, StatementKind};
use crate::context::{
    Route, RouteError, RouterContext, RouterMetrics, StatementClass, User, WaitReason,
};
use crate::error::RouterError;
use crate::protocol::packet::PacketError;
use crate::protocol::{
    eof_payload, err_payload, ok_payload, CapabilityFlags, PacketReader, PacketWriter, StatusFlags,
};
use crate::server::ClientStream;
use crate::shard::{self, Plan, PlanInput};
use crate::tls::{StreamRead, StreamWrite};

pub use auth::HandshakeFailure;
use prepared::ClientStmt;
use state::{sync_plan, SessionState};

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Answer the client with this error; `seq` overrides the reply's sequence id when part of
    /// a response was already sent.
    Reply(RouterError, Option<u8>),
    /// The client connection is gone: end the session.
    ClientGone,
}

impl From<RouterError> for Failure {
    fn from(e: RouterError) -> Self {
        Failure::Reply(e, None)
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::Reply(RouterError::Backend(e), None)
    }
}

/// Reasons the session must keep its current backend connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pins {
    temp_table: bool,
    lock_tables: bool,
    backup_lock: bool,
    xa: bool,
    user_lock: bool,
    user_var: bool,
    sql_prepare: bool,
    multi: bool,
    cursor: bool,
    /// SQL_CALC_FOUND_ROWS: the next statement (FOUND_ROWS()) needs the same connection.
    next_statement: bool,
    /// `SET TRANSACTION` applies to the next transaction on this connection.
    next_transaction: bool,
    /// A SET whose value can't be replayed elsewhere.
    set_state: bool,
}

impl Pins {
    fn any(&self) -> bool {
        *self != Pins::default()
    }

    fn set(&mut self, reason: PinReason, on: bool) {
        match reason {
            PinReason::TemporaryTable => self.temp_table = on,
            PinReason::LockTables => self.lock_tables = on,
            PinReason::UserLock => self.user_lock = on,
            PinReason::UserVariableAssignment => self.user_var = on,
            PinReason::SqlPrepare => self.sql_prepare = on,
            PinReason::MultiStatement => self.multi = on,
            PinReason::BackupLock => self.backup_lock = on,
            PinReason::XaTransaction => self.xa = on,
        }
    }
}

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    /// The leader of the cluster for the session's database.
    Leader,
    /// The leader as for `Leader`, for a command that changes no data (SET, PING): it may
    /// run while writes are fenced.
    Session,
    /// A fresh replica if replica reads are on, else the leader.
    ReplicaOk,
    /// The leader of the cluster for this database (USE, COM_INIT_DB).
    LeaderFor(&'a str),
    /// The leader of this cluster (a shard's).
    Cluster(&'a str),
}

/// How to run one command on a backend.
#[derive(Debug, Clone, Copy)]
struct Exec {
    mode: RelayMode,
    /// Safe to run again on another connection if the first one failed before any reply:
    /// reads, and statements whose sending failed.
    retry_reads: bool,
    /// Carry LAST_INSERT_ID() over to the connection first.
    with_insert_id: bool,
}

/// How the results of a read sent to several shards become one.
#[derive(Debug, Clone)]
pub(crate) enum Gather {
    /// Every shard's rows (merged by these result columns, descending?, when given), at
    /// most `limit` in all.
    Rows {
        limit: Option<u64>,
        order: Vec<(String, bool)>,
    },
    /// One row: each COUNT column summed over the shards.
    SumCounts,
    /// Each shard ran `spec.sql` (text protocol); the router merges the results and writes
    /// them as text rows, or binary rows for an execute (`binary`).
    Merge {
        spec: Box<crate::shard::gather::GatherSpec>,
        binary: bool,
    },
}

/// A command to run on a backend.
#[derive(Debug)]
pub(crate) enum Cmd<'a> {
    /// Forwarded as the client sent it.
    Raw(&'a [u8]),
    /// COM_STMT_EXECUTE: the statement is prepared on the chosen connection first (once per
    /// connection), its long data sent, and its backend id patched into `packet`.
    Execute {
        key: &'a StmtKey,
        packet: &'a mut Vec<u8>,
        long_data: &'a HashMap<u16, Vec<u8>>,
    },
}

/// An authenticated client session.
#[derive(Debug)]
pub struct Session {
    ctx: Arc<RouterContext>,
    id: u32,
    peer: String,
    input: PacketReader<StreamRead>,
    output: PacketWriter<StreamWrite>,
    user: Arc<User>,
    caps: CapabilityFlags,
    scramble: [u8; 20],
    state: SessionState,
    pinned: Option<PooledConn>,
    /// Where `pinned` was routed, to notice when its leader is replaced.
    pinned_route: Option<Route>,
    /// A `BEGIN` in a sharded keyspace waits for the first statement, so that the
    /// transaction starts on the shard that statement goes to.
    pending_begin: Option<String>,
    /// The distributed (XA) transaction in a sharded keyspace, from its BEGIN to its end
    /// (boxed: rare, and most sessions are idle outside one).
    xa: Option<Box<xa::XaTxn>>,
    pins: Pins,
    multi_statements: bool,
    stmts: HashMap<u32, ClientStmt, crate::FastHash>,
    next_stmt_id: u32,
    last_prepared: u32,
    /// What the current command is, for the statement counters.
    class: StatementClass,
    /// The shard map the current command was planned with, and whether a backend connection
    /// was checked out for it yet: a command that waited for a hold while the map changed,
    /// with nothing of it run, is planned again on the new map (a reshard's cutover).
    command_map: Option<Arc<shard_map::ShardMap>>,
    checked_out: std::sync::atomic::AtomicBool,
    /// This session in the router's list of live sessions (removed on drop).
    listed: crate::sessions::SessionEntry,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Before the client socket closes with the fields: its descriptor number may be
        // reused by the next connection, which a `KILL CONNECTION` must not reach.
        self.listed.forget_client_socket();
    }
}

impl Session {
    /// Runs the connection phase and then the command loop until the client leaves.
    pub async fn serve(
        ctx: Arc<RouterContext>,
        stream: ClientStream,
        id: u32,
        span: tracing::Span,
    ) {
        use tracing::Instrument;
        // The connection phase's futures (TLS handshake, authentication, the first USE) are
        // larger than the command loop's; boxed, they are freed once the client is in
        // instead of sizing the task for as long as the connection lives.
        let login = Self::login(ctx, stream, id).instrument(span);
        let Some(mut session) = Box::pin(login).await else {
            return;
        };
        session.list_idle(std::time::Instant::now());
        session.command_loop().await;
        if session.xa.is_some() {
            // The client left inside a distributed transaction: its unprepared branches end
            // with their connections, never back in the pool.
            session.xa_lost("the client left");
        }
        if session.listed.was_killed() {
            // Killed: what the session held on its backend connection ends with it, and when
            // it was its user's last session the user's idle pooled connections close too,
            // so that the server no longer lists the user, as after a KILL there.
            if let Some(c) = session.pinned.take() {
                c.discard();
            }
            if session.ctx.sessions.of_user(&session.user.name).len() <= 1 {
                session.ctx.pools.forget_user(&session.user.name);
            }
        }
        if session.pins.any() || !session.ctx.config.multiplexing {
            // What pinned the session (table locks, user locks, temporary tables, variables
            // that can't be replayed, an open cursor; without multiplexing, the connection
            // itself) is the session's own: closing the connection releases it on the
            // server, where the pool would hand it on.
            if let Some(c) = session.pinned.take() {
                c.discard();
            }
        }
    }

    /// The connection phase: greeting, optional switch to TLS, authentication, the database
    /// of the handshake, and the OK that ends it. `None` when the client did not get in.
    async fn login(ctx: Arc<RouterContext>, stream: ClientStream, id: u32) -> Option<Session> {
        // The socket's descriptor, by which `KILL CONNECTION` ends the session (forgotten in
        // the session's `Drop`, before the socket closes).
        let socket = {
            use std::os::fd::AsRawFd;
            match &stream {
                ClientStream::Tcp(s) => s.as_raw_fd(),
                ClientStream::Unix(s) => s.as_raw_fd(),
            }
        };
        // A client on the Unix-domain socket is `localhost`, is offered no TLS and counts as
        // a secure transport, as on a server.
        let (peer, origin, (r, w), local) = match stream {
            ClientStream::Tcp(stream) => {
                let addr = stream.peer_addr().ok();
                stream.set_nodelay(true).ok();
                let peer = addr.map_or_else(|| "unknown".into(), |a| a.ip().to_string());
                let origin = format!("{peer}:{}", addr.map_or(0, |a| a.port()));
                (peer, origin, crate::tls::split_plain(stream), false)
            }
            ClientStream::Unix(stream) => (
                "localhost".to_string(),
                "localhost".to_string(),
                crate::tls::split_unix(stream),
                true,
            ),
        };
        // Small buffers: most client connections send short commands and sit idle.
        let mut input = PacketReader::with_chunk(r, 2048);
        let mut output = PacketWriter::with_capacity(w, 2048);
        let offer_tls = !local && ctx.tls.clients.is_some();
        let mut secure = local;
        let result = match auth::greet(&ctx, id, offer_tls, &mut output).await {
            Ok(scramble) => loop {
                match auth::respond(&ctx, &peer, &scramble, secure, &mut input, &mut output).await {
                    Ok(auth::Step::StartTls) => match auth::start_tls(&ctx, input, output).await {
                        Some((i, o)) => {
                            (input, output) = (i, o);
                            secure = true;
                        }
                        None => return None,
                    },
                    Ok(auth::Step::Done(a)) => break Ok(a),
                    Err(e) => break Err(e),
                }
            },
            Err(e) => Err(e),
        };
        let auth = match result {
            Ok(a) => a,
            Err(HandshakeFailure::Refuse(e, seq)) => {
                ctx.metrics.count_error(e.to_client().code);
                write_error(&mut output, seq, &e).await.ok();
                return None;
            }
            Err(HandshakeFailure::Gone) => return None,
        };
        let auth::Authenticated {
            user,
            mut hello,
            caps,
            scramble,
            next_seq: seq,
        } = auth;
        // Only the database is needed from the handshake response; the rest (user name, auth
        // token, plugin name) is freed now, not kept for the connection's lifetime.
        let database = hello.database.take();
        let collation = hello.collation;
        let listed = ctx.sessions.register(id, user.name.clone(), &origin);
        listed.set_client_socket(socket);
        let mut session = Session {
            id,
            peer,
            input,
            output,
            user,
            caps,
            scramble,
            state: SessionState::for_handshake(collation, None),
            pinned: None,
            pinned_route: None,
            pending_begin: None,
            xa: None,
            pins: Pins::default(),
            multi_statements: caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS),
            stmts: HashMap::default(),
            next_stmt_id: 1,
            last_prepared: 0,
            class: StatementClass::Other,
            command_map: None,
            checked_out: std::sync::atomic::AtomicBool::new(false),
            listed,
            ctx,
        };
        if let Some(db) = database {
            // Refuse an unknown database now, as a server would, not at the first statement.
            if let Err(f) = session.select_db(&db, seq, false).await {
                if let Failure::Reply(e, s) = f {
                    write_error(&mut session.output, s.unwrap_or(seq), &e)
                        .await
                        .ok();
                }
                return None;
            }
        }
        session.output.push(
            seq,
            &ok_payload(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0, 0),
        );
        session.output.flush().await.ok()?;
        if session.caps.contains(CapabilityFlags::CLIENT_COMPRESS) {
            // Everything after the handshake's OK travels in compressed frames.
            session.compress();
            RouterMetrics::inc(&session.ctx.metrics.compressed_connections);
        }
        Some(session)
    }

    /// Puts the compressed protocol under the session's packet reader and writer.
    fn compress(&mut self) {
        use crate::tls::{StreamRead, StreamWrite};
        let (chunk, capacity) = (self.input.chunk(), self.output.capacity());
        let input = std::mem::replace(
            &mut self.input,
            PacketReader::with_chunk(StreamRead::Detached, chunk),
        );
        let output = std::mem::replace(
            &mut self.output,
            PacketWriter::with_capacity(StreamWrite::Detached, capacity),
        );
        let (r, early) = input.into_parts();
        let (r, w) = crate::tls::compressed(r, early, output.into_inner());
        self.input = PacketReader::with_chunk(r, chunk);
        self.output = PacketWriter::with_capacity(w, capacity);
    }

    async fn command_loop(&mut self) {
        let max = self.ctx.config.max_allowed_packet;
        loop {
            // Nothing is queued after a command: an idle session holds no output buffer (the
            // reader holds none either while it waits).
            self.output.release();
            let (last, payload) = match self.input.read_message(max).await {
                Ok(Some((_, last, p))) => (last, p),
                Ok(None) => return,
                Err(PacketError::TooLarge { .. }) => {
                    // Boxed, as every rare path here: the loop's own future is what an idle
                    // session holds.
                    Box::pin(self.refuse_too_large()).await;
                    return;
                }
                Err(_) => return,
            };
            let seq = last.wrapping_add(1);
            let Some(&command) = payload.first() else {
                if Box::pin(self.reply_error(seq, RouterError::Malformed("empty packet")))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            if self.user.generation
                != self
                    .ctx
                    .users_generation
                    .load(std::sync::atomic::Ordering::Acquire)
            {
                self.refresh_user();
            }
            RouterMetrics::inc(&self.ctx.metrics.statements);
            // Set by `query` and `stmt_execute` once they know what the statement is.
            self.class = StatementClass::Other;
            let started = std::time::Instant::now();
            self.listed.started(command, started);
            let result = match command {
                0x01 => return,                   // COM_QUIT
                0x0e => self.reply_ok(seq).await, // COM_PING
                0x18 => self.stmt_send_long_data(&payload),
                0x19 => self.stmt_close(&payload),
                // The futures of commands that go to a backend are a few KiB (2.5 for a
                // statement; the rare paths inside are boxed in turn): boxed, they exist only
                // while the command runs, and the session's task stays small for the (mostly
                // idle) rest of the connection's life.
                _ => Box::pin(self.dispatch(command, &payload, seq)).await,
            };
            let elapsed = started.elapsed();
            self.ctx.metrics.record_command(self.class, elapsed);
            self.list_idle(started + elapsed);
            match result {
                Ok(()) => {}
                Err(Failure::ClientGone) => return,
                Err(Failure::Reply(
                    RouterError::TransactionLost { .. }
                    | RouterError::PinnedLostDuringQuery { .. }
                    | RouterError::LostDuringQuery { .. },
                    _,
                )) if !self.ctx.config.multiplexing => {
                    // Without multiplexing the backend connection is the client's session on
                    // the server: it is gone, and so is this one, as on a direct connection
                    // (the client library reports the lost connection itself).
                    RouterMetrics::inc(&self.ctx.metrics.errors);
                    return;
                }
                Err(Failure::Reply(e, s)) => {
                    RouterMetrics::inc(&self.ctx.metrics.errors);
                    self.ctx.metrics.count_error(e.to_client().code);
                    if Box::pin(self.reply_error(s.unwrap_or(seq), e))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Answers a packet larger than max_allowed_packet and ends the session.
    async fn refuse_too_large(&mut self) {
        // Let the client finish sending (bounded in bytes and time) so that it can read the
        // error, as a server does.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.input.skip_refused(64 << 20),
        )
        .await;
        // The connection does not go on after this, as on a server.
        write_error(&mut self.output, 1, &RouterError::PacketTooLarge)
            .await
            .ok();
    }

    /// Runs one command (`payload`, starting with the command byte) that may need a backend.
    /// The future of this function is allocated for every command: the statements (text
    /// and prepared) run inline, the rarer commands are boxed so as not to size it.
    async fn dispatch(&mut self, command: u8, payload: &[u8], seq: u8) -> Result<(), Failure> {
        match command {
            0x03 | 0x17 => {
                // Planned again (at most twice) when the shard map changed while the command
                // waited, before any of it ran.
                let mut again = 0;
                loop {
                    self.command_map = Some(self.ctx.shard_map.load_full());
                    self.checked_out
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    let r = if command == 0x03 {
                        self.query(payload, seq).await
                    } else {
                        self.stmt_execute(payload, seq).await
                    };
                    self.command_map = None;
                    match r {
                        Err(Failure::Reply(RouterError::ShardMapChanged, None)) if again < 2 => {
                            again += 1;
                            RouterMetrics::inc(&self.ctx.metrics.replanned);
                        }
                        other => return other,
                    }
                }
            }
            0x02 => {
                let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                Box::pin(self.select_db(&db, seq, true)).await
            }
            0x04 => Box::pin(self.simple(payload, RelayMode::Rows)).await, // COM_FIELD_LIST
            0x09 => Box::pin(self.simple(payload, RelayMode::Single)).await, // COM_STATISTICS
            0x11 => Box::pin(self.change_user(payload, seq)).await,
            0x1b => self.set_option(payload, seq).await,
            0x1f => self.reset_connection(seq).await,
            0x16 => Box::pin(self.stmt_prepare(payload, seq)).await,
            0x1a => self.stmt_reset(payload, seq).await,
            0x1c => self.stmt_fetch(payload, seq).await,
            0x0c => {
                // COM_PROCESS_KILL: `KILL CONNECTION id`.
                let id = payload
                    .get(1..5)
                    .ok_or(RouterError::Malformed("COM_PROCESS_KILL"))?;
                let kill = crate::classify::Kill {
                    query: false,
                    mode: None,
                    target: crate::classify::KillTarget::Id(u64::from(u32::from_le_bytes(
                        id.try_into().expect("four bytes"),
                    ))),
                };
                match Box::pin(self.kill(kill, seq)).await {
                    Some(done) => done,
                    None => Box::pin(self.simple(payload, RelayMode::Single)).await,
                }
            }
            other => Err(RouterError::UnknownCommand(other).into()),
        }
    }

    /// Shows the session as waiting for its next command since `at`, in its current state.
    fn list_idle(&mut self, at: std::time::Instant) {
        let pinned = self.pinned.as_ref();
        let in_txn = pinned.is_some_and(|c| c.in_transaction()) || self.xa.is_some();
        self.listed.idle(
            at,
            in_txn,
            self.state.db.as_deref(),
            pinned.map(|c| &c.addr),
        );
    }

    async fn reply_error(&mut self, seq: u8, e: RouterError) -> Result<(), Failure> {
        tracing::debug!(session = self.id, error = %e, "statement failed");
        write_error(&mut self.output, seq, &e)
            .await
            .map_err(|_| Failure::ClientGone)
    }

    async fn reply_ok(&mut self, seq: u8) -> Result<(), Failure> {
        let status = self.client_status();
        self.output.push(seq, &ok_payload(0, 0, status, 0, 0));
        self.output.flush().await.map_err(|_| Failure::ClientGone)
    }

    /// Status flags for replies the router makes itself.
    fn client_status(&self) -> StatusFlags {
        let mut s = StatusFlags::empty();
        match &self.pinned {
            Some(c) => s |= StatusFlags::from_bits_truncate(c.status & 0x0003),
            None => s |= StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        }
        s
    }

    fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    async fn query(&mut self, payload: &[u8], seq: u8) -> Result<(), Failure> {
        let sql = String::from_utf8_lossy(&payload[1..]);
        let class = self.ctx.classifier.classify(&sql);
        if let Some(sql) = self.own_connection_id(&payload[1..], &class) {
            // Run as if the client had written the id (the rewritten text calls none).
            let mut rewritten = Vec::with_capacity(sql.len() + 1);
            rewritten.push(0x03);
            rewritten.extend_from_slice(sql.as_bytes());
            return Box::pin(self.query(&rewritten, seq)).await;
        }
        self.class = StatementClass::of(&class.kind);
        if !class.parsed {
            RouterMetrics::inc(&self.ctx.metrics.unparsed);
        }
        if class.multi && !self.multi_statements {
            return Err(RouterError::MultiStatementsOff.into());
        }
        if class.multi && self.ctx.config.multiplexing && crate::classify::has_kill_statement(&sql)
        {
            // Its id could only be sent on to a backend, where it names a pooled connection.
            return Err(RouterError::NotSupported(
                "KILL in a multi-statement text through a multiplexing router; send it alone"
                    .into(),
            )
            .into());
        }
        if matches!(class.kind, StatementKind::Other) && !class.multi {
            if let Some(kill) = crate::classify::parse_kill(&sql) {
                if let Some(done) = Box::pin(self.kill(kill, seq)).await {
                    return done;
                }
            }
        }
        self.unpin_unless_diagnostics(sql.as_bytes(), &class);
        let exec = Exec {
            mode: RelayMode::ResultSet { cursor: false },
            retry_reads: retry::is_read(&class),
            with_insert_id: class.uses_session_functions,
        };
        if !class.multi && self.xa.is_some() {
            match class.kind {
                StatementKind::Commit => {
                    let upper = sql.to_ascii_uppercase();
                    let words: Vec<&str> = upper.split_whitespace().collect();
                    let chain = words.windows(2).any(|w| w == ["AND", "CHAIN"]);
                    let release = words.last() == Some(&"RELEASE") && !upper.contains("NO RELEASE");
                    if chain || release {
                        return Err(RouterError::NotSupported(
                            "COMMIT AND CHAIN / RELEASE of a distributed transaction".into(),
                        )
                        .into());
                    }
                    return Box::pin(self.xa_end(true, seq)).await;
                }
                StatementKind::Rollback => return Box::pin(self.xa_end(false, seq)).await,
                StatementKind::Other
                    if self.xa.as_ref().is_some_and(|x| x.clusters.len() > 1)
                        && sql
                            .trim_start()
                            .to_ascii_uppercase()
                            .starts_with("ROLLBACK") =>
                {
                    // A savepoint lives on one branch: rolling back to it would keep the
                    // other clusters' later writes.
                    return Err(RouterError::NotSupported(
                        "ROLLBACK TO SAVEPOINT in a transaction spanning several clusters".into(),
                    )
                    .into());
                }
                _ => {
                    if let Some(why) = self.xa.as_ref().and_then(|x| x.failed.clone()) {
                        return Err(RouterError::XaRolledBack(why).into());
                    }
                }
            }
        }
        if !class.multi
            && self.pinned.is_none()
            && self.xa.is_none()
            && self.pending_begin.is_none()
            && matches!(
                class.kind,
                StatementKind::Select { .. } | StatementKind::Write
            )
            && self.autocommit_off()
            && self.in_sharded_keyspace()
        {
            // autocommit=0: the statement opens a transaction, which is distributed.
            self.pending_begin = Some("BEGIN".into());
            self.xa_begin();
        }
        if !class.multi && self.pinned.is_none() && self.in_sharded_keyspace() {
            match class.kind {
                StatementKind::Begin => {
                    self.pending_begin = Some(sql.to_string());
                    if xa::xa_capable_begin(&sql) {
                        self.xa_begin();
                    }
                    let status =
                        StatusFlags::SERVER_STATUS_IN_TRANS | StatusFlags::SERVER_STATUS_AUTOCOMMIT;
                    self.output.push(seq, &ok_payload(0, 0, status, 0, 0));
                    return self.output.flush().await.map_err(|_| Failure::ClientGone);
                }
                StatementKind::Commit | StatementKind::Rollback if self.pending_begin.is_some() => {
                    // Nothing ran inside it.
                    self.pending_begin = None;
                    self.xa = None;
                    return self.reply_ok(seq).await;
                }
                _ => {}
            }
        }
        match &class.kind {
            StatementKind::Use(db) if !class.multi => {
                let db = db.clone();
                let outcome = self
                    .run(Target::LeaderFor(&db), Cmd::Raw(payload), exec)
                    .await?;
                if outcome.error.is_none() {
                    self.state.db = Some(db);
                    if let Some(c) = self.pinned.as_mut() {
                        c.state.db = self.state.db.clone();
                    }
                }
                self.after_statement(&class, &outcome);
                let _ = seq;
                Ok(())
            }
            StatementKind::Set if !class.multi => {
                let items = parse_set(&sql);
                // The statement runs on some connection; if its effect can be replayed from
                // literals, the session records it and stays free, otherwise it stays there.
                let outcome = self.run(Target::Session, Cmd::Raw(payload), exec).await?;
                if outcome.error.is_none() {
                    match items {
                        Ok(items) => {
                            let effect = self.state.apply_set(&items);
                            self.pins.set_state |= effect.needs_pin;
                            self.pins.next_transaction |= effect.next_transaction;
                        }
                        Err(_) => self.pins.set_state = true,
                    }
                    // The connection that ran it now holds exactly the session's state.
                    self.sync_conn_record();
                }
                self.after_statement(&class, &outcome);
                Ok(())
            }
            _ => {
                if self.ctx.shard_map.load().has_sharded_keyspace() {
                    // Boxed: the sharded paths' futures are large, and the session's command
                    // future (allocated per command) stays small for unsharded statements.
                    if Box::pin(self.query_sharded(payload, &sql, &class, exec, seq)).await? {
                        return Ok(());
                    }
                }
                // A deferred BEGIN starts on the leader, even with a read first.
                let target =
                    if retry::is_read(&class) && !self.pins.any() && self.pending_begin.is_none() {
                        Target::ReplicaOk
                    } else {
                        Target::Leader
                    };
                let outcome = self.run(target, Cmd::Raw(payload), exec).await?;
                self.after_statement(&class, &outcome);
                Ok(())
            }
        }
    }

    /// With multiplexing, `sql` with its `CONNECTION_ID()` calls made to return this
    /// session's id (the handshake's, which `KILL` takes), not the id of whichever pooled
    /// backend connection runs it; `None` when nothing changes. Only statements that
    /// evaluate the call when they run (reads, writes, `SET`): in a definition (a column's
    /// `DEFAULT`, a view, a routine's body) it stays a call. Text that is not UTF-8 is left
    /// as it is.
    pub(super) fn own_connection_id(&self, sql: &[u8], class: &Classification) -> Option<String> {
        let evaluated = matches!(
            class.kind,
            StatementKind::Select { .. } | StatementKind::Write | StatementKind::Set
        );
        if !self.ctx.config.multiplexing || !evaluated || !class.uses_session_functions {
            return None;
        }
        const CALL: &[u8] = b"connection_id";
        if !sql
            .windows(CALL.len())
            .any(|w| w.eq_ignore_ascii_case(CALL))
        {
            return None;
        }
        let sql = std::str::from_utf8(sql).ok()?;
        crate::classify::with_connection_id(sql, self.id)
    }

    /// The sharded part of [`Session::query`]: `true` when the statement was answered here,
    /// `false` when it runs as an unsharded statement.
    async fn query_sharded(
        &mut self,
        payload: &[u8],
        sql: &str,
        class: &Classification,
        exec: Exec,
        seq: u8,
    ) -> Result<bool, Failure> {
        let map = self.ctx.shard_map.load();
        if let Some((text, first)) = self.fill_auto_increment(&map, sql, class).await? {
            return self
                .run_filled_insert(&map, &text, first, seq)
                .await
                .map(|()| true);
        }
        let planned = match shard::plan::plan_by_key(&map, sql, class, self.state.db.as_deref()) {
            Some(target) => {
                RouterMetrics::inc(&self.ctx.metrics.sharded_by_key);
                Plan::Single(target)
            }
            None => {
                self.plan(&map, sql, class, self.state.db.as_deref(), None, None)
                    .await?
            }
        };
        match planned {
            Plan::Unsharded => {
                let xa_started = self.xa.as_ref().is_some_and(|x| !x.clusters.is_empty());
                if !class.tables.is_empty() && xa_started {
                    // Unsharded tables: the branch of the cluster they live on.
                    let mut clusters: Vec<&str> = class
                        .tables
                        .iter()
                        .map(|t| {
                            map.cluster_for_db(t.schema.as_deref().or(self.state.db.as_deref()))
                        })
                        .collect();
                    clusters.sort_unstable();
                    clusters.dedup();
                    if clusters.len() > 1 {
                        return Err(RouterError::NotSupported(
                            "a statement using tables on several clusters".into(),
                        )
                        .into());
                    }
                    let cluster = clusters[0].to_string();
                    self.xa_use_cluster(&cluster).await?;
                } else if !class.tables.is_empty()
                    && self.pinned_elsewhere(self.pinned_route.as_ref())
                {
                    return Err(RouterError::NotSupported(
                        "a transaction using tables on several clusters \
                         (distributed transactions)"
                            .into(),
                    )
                    .into());
                }
            }
            Plan::Single(target) => {
                let outcome = self.run_on_shard(&target, Cmd::Raw(payload), exec).await?;
                self.after_statement(class, &outcome);
                return Ok(true);
            }
            Plan::Every(targets) => {
                return self
                    .run_on_every_shard(&targets, sql, seq)
                    .await
                    .map(|()| true)
            }
            Plan::Scatter {
                targets,
                limit,
                order,
            } => {
                return self
                    .scatter_or_gather(&targets, limit, order, Cmd::Raw(payload), sql)
                    .await
                    .map(|()| true);
            }
            Plan::Gather { targets, spec } => {
                return self.run_gather(&targets, spec, false).await.map(|()| true);
            }
            Plan::ScatterCount { targets } => {
                return self
                    .run_scatter(&targets, Gather::SumCounts, Cmd::Raw(payload))
                    .await
                    .map(|()| true)
            }
            Plan::KeyspaceDatabases(dbs) => {
                return self
                    .run_on_keyspace_databases(&dbs, sql, seq)
                    .await
                    .map(|()| true)
            }
            Plan::MultiWrite { parts, copies } => {
                return self.xa_write(parts, copies, seq, None).await.map(|()| true)
            }
            Plan::NeedsParams | Plan::NeedsColumnPosition { .. } => {
                return Err(RouterError::NotSupported(
                    "`?` placeholders in a text statement on a sharded table".into(),
                )
                .into())
            }
            Plan::Refuse(why) => return Err(RouterError::NotSupported(why).into()),
        }
        Ok(false)
    }

    /// After a SET ran on the pinned-or-just-used connection, record the new state on it.
    fn sync_conn_record(&mut self) {
        if let Some(c) = self.pinned.as_mut() {
            let lid = c.state.last_insert_id;
            c.state = self.state.as_conn_state();
            c.state.last_insert_id = lid;
        }
    }

    /// Updates pins from a statement that has run.
    fn after_statement(&mut self, class: &Classification, outcome: &RelayOutcome) {
        if let Some(e) = &outcome.error {
            self.ctx.metrics.count_error(e.code);
        }
        self.pins.next_statement = false;
        if outcome.error.is_none() {
            if let Some(r) = class.pin {
                self.pins.set(r, true);
            }
            if let Some(r) = class.unpin {
                self.pins.set(r, false);
            }
            if class.calc_found_rows {
                self.pins.next_statement = true;
            }
        }
        // FOUND_ROWS(), SHOW WARNINGS / SHOW ERRORS and @@warning_count read what the previous
        // statement left on its connection: the next statement runs there too.
        if outcome.warnings > 0 || outcome.error.is_some() {
            self.pins.next_statement = true;
        }
        if self.pins.next_transaction {
            if let Some(c) = &self.pinned {
                if c.in_transaction() {
                    // The transaction it was for has begun; the transaction itself pins now.
                    self.pins.next_transaction = false;
                }
            }
        }
        self.release_if_free();
    }

    /// After an error or warnings the session stays on its connection so that SHOW WARNINGS
    /// and the like read them there; any other statement lets it go first (it may need other
    /// shards' connections, or its cluster may have changed leader meanwhile).
    pub(crate) fn unpin_unless_diagnostics(&mut self, sql: &[u8], class: &Classification) {
        if !self.pins.next_statement || class.uses_session_functions || class.calc_found_rows {
            return;
        }
        let lower = sql.to_ascii_lowercase();
        let diagnostics = ["warning", "error", "diagnostics", "found_rows", "row_count"]
            .iter()
            .any(|w| lower.windows(w.len()).any(|x| x == w.as_bytes()));
        if !diagnostics {
            self.pins.next_statement = false;
            self.release_if_free();
        }
    }

    /// Returns the pinned connection to the pool when nothing holds the session to it.
    fn release_if_free(&mut self) {
        let keep = !self.ctx.config.multiplexing
            || self.pins.any()
            || self.pinned.as_ref().is_some_and(|c| c.in_transaction())
            || self.xa.as_ref().is_some_and(|x| !x.clusters.is_empty());
        if !keep {
            self.pinned = None;
            self.pinned_route = None;
        }
    }

    /// Runs a command on a backend connection and relays the response. The connection stays
    /// in `self.pinned` afterwards; callers decide whether to release it.
    ///
    /// While the target cluster changes leader the statement is held (up to the router's
    /// hold timeout) and then runs on the new leader. It is run again elsewhere only when it
    /// provably did not run: it could not be sent, the old leader refused it as read-only or
    /// killed it with an error, or it is a read.
    async fn run(
        &mut self,
        target: Target<'_>,
        mut cmd: Cmd<'_>,
        exec: Exec,
    ) -> Result<RelayOutcome, Failure> {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let mut read_retried = false;
        loop {
            let was_pinned = self.pinned.is_some();
            let (mut conn, route) = match self.pinned.take() {
                Some(mut c) => {
                    let route = self.pinned_route.take();
                    if !c.looks_alive() {
                        // Closed by the server (killed, timed out) or sent something after
                        // its last response: what the session had open there is gone.
                        c.discard();
                        return Err(self.lost_pinned(None));
                    }
                    if let Some(r) = route.as_ref().filter(|r| !self.ctx.route_current(r)) {
                        // Its leader was replaced: whatever the session had open there is gone,
                        // and nothing may be written to a leader of an older epoch.
                        c.discard();
                        return Err(self.lost_pinned_to_leader_change(&r.cluster));
                    }
                    if let Some(r) = route.as_ref().filter(|r| {
                        !c.in_transaction() && self.xa.is_none() && self.ctx.draining(&r.cluster)
                    }) {
                        // A move's cutover: an open transaction goes on, but nothing new
                        // starts on the cluster until it serves again; the session keeps its
                        // connection meanwhile.
                        let cluster = r.cluster.clone();
                        self.pinned = Some(c);
                        self.pinned_route = route;
                        Box::pin(self.wait_draining(&cluster, deadline)).await?;
                        continue;
                    }
                    (c, route)
                }
                None => self.route_and_checkout(target, deadline).await?,
            };
            let mut began = false;
            if !was_pinned {
                if let Some(begin) = self.pending_begin.take() {
                    began = true;
                    // The deferred BEGIN starts here, on the connection that runs the first
                    // statement of the transaction: as the first XA branch when the
                    // transaction is distributed.
                    let begin = match route.as_ref() {
                        Some(r) => self.xa_start_sql(&r.cluster.clone()).unwrap_or(begin),
                        None => begin,
                    };
                    // Boxed, as every rare path of this function: its future is part of
                    // every command's.
                    let started = Box::pin(async {
                        self.sync(&mut conn, false).await?;
                        conn.query(&begin).await.map_err(RouterError::from)
                    })
                    .await;
                    if let Err(e) = started {
                        conn.discard();
                        if self.xa.is_some() {
                            self.xa_lost("XA START failed");
                        }
                        return Err(e.into());
                    }
                }
            }
            // A session in a shard's transaction runs its table-less statements (COMMIT,
            // SET, SELECT 1) in the shard's database: its keyspace's own database may not
            // exist on that cluster.
            let keep_db = was_pinned && self.pinned_elsewhere(route.as_ref());
            let session_db = if keep_db {
                std::mem::replace(&mut self.state.db, conn.state.db.clone())
            } else {
                None
            };
            self.listed.statement_on(&conn.addr, conn.conn_id);
            let sent = self.send(&mut conn, &mut cmd, exec.with_insert_id).await;
            if keep_db {
                self.state.db = session_db;
            }
            if let Err(e) = sent {
                conn.kill_sent |= self.listed.statement_done();
                let connection_failed =
                    matches!(&e, RouterError::Backend(b) if b.is_connection_failure());
                if !connection_failed {
                    // A server error before the command ran (an unknown database, say).
                    self.keep(conn, route);
                    self.release_if_free();
                    return Err(e.into());
                }
                conn.discard();
                if was_pinned || began {
                    return Err(self.lost_pinned(None));
                }
                // Nothing ran: wait for the topology to move on if the server is gone.
                if let Some(r) = &route {
                    self.ctx.report_failure(&r.addr);
                    RouterMetrics::inc(&self.ctx.metrics.backend_retries);
                    Box::pin(self.hold(r.version, &r.cluster, deadline, e)).await?;
                }
                continue;
            }
            let intercept = !was_pinned && route.as_ref().is_some_and(|r| r.leader);
            let result = relay(
                &mut conn,
                exec.mode,
                &mut self.output,
                Some(&mut self.input),
                intercept,
            )
            .await;
            conn.kill_sent |= self.listed.statement_done();
            match result {
                Ok(mut outcome) => {
                    if let Some((seq, payload)) = outcome.intercepted.take() {
                        let code = outcome.error.as_ref().map_or(0, |e| e.code);
                        if let Some(r) = route.as_ref().filter(|r| {
                            retry::not_executed_on_old_leader(code) && !self.ctx.route_current(r)
                        }) {
                            // The old leader refused it during a leader change: it did not
                            // run there, so it runs on the new leader.
                            RouterMetrics::inc(&self.ctx.metrics.leader_change_retries);
                            drop(conn);
                            let err = RouterError::Backend(BackendError::Server(
                                outcome
                                    .error
                                    .clone()
                                    .unwrap_or_else(retry::lost_without_error),
                            ));
                            Box::pin(self.hold(r.version, &r.cluster, deadline, err)).await?;
                            continue;
                        }
                        self.output.push(seq, &payload);
                        self.output.flush().await.map_err(|_| Failure::ClientGone)?;
                    }
                    if outcome.error.is_some() {
                        if let Some(r) = &route {
                            self.ctx.metrics.count_cluster_error(&r.cluster);
                        }
                    }
                    if outcome.error.is_none() {
                        conn.status = outcome.status;
                        if let Some(ok) = outcome.ok.filter(|ok| ok.last_insert_id != 0) {
                            self.state.last_insert_id = ok.last_insert_id;
                            conn.state.last_insert_id = ok.last_insert_id;
                        }
                    }
                    if outcome.cursor_open {
                        self.pins.cursor = true;
                    }
                    self.keep(conn, route);
                    return Ok(outcome);
                }
                Err(RelayError::Client(_)) => {
                    conn.discard();
                    return Err(Failure::ClientGone);
                }
                Err(RelayError::Backend {
                    source,
                    forwarded,
                    next_seq,
                }) => {
                    tracing::warn!(session = self.id, backend = %conn.addr, error = %source, "backend failed mid-response");
                    let addr = conn.addr.to_string();
                    conn.discard();
                    if let Some(r) = &route {
                        self.ctx.report_failure(&r.addr);
                    }
                    if was_pinned || began {
                        // The session's transaction (or whatever pinned it) is gone, and the
                        // statement reached the server: its outcome is unknown (a COMMIT may
                        // have committed).
                        let _ = self.lost_pinned(None);
                        return Err(Failure::Reply(
                            RouterError::PinnedLostDuringQuery { addr },
                            forwarded.then_some(next_seq),
                        ));
                    }
                    if !forwarded && exec.retry_reads && !read_retried {
                        read_retried = true;
                        RouterMetrics::inc(&self.ctx.metrics.backend_retries);
                        if let Some(r) = route.as_ref().filter(|r| !self.ctx.route_current(r)) {
                            let e = RouterError::LostDuringQuery { addr: addr.clone() };
                            Box::pin(self.hold(r.version, &r.cluster, deadline, e)).await?;
                        }
                        continue;
                    }
                    return Err(Failure::Reply(
                        RouterError::LostDuringQuery { addr },
                        forwarded.then_some(next_seq),
                    ));
                }
            }
        }
    }

    /// Runs a command on one shard: its cluster's leader, in the shard's database.
    async fn run_on_shard(
        &mut self,
        target: &shard_map::ShardTarget,
        cmd: Cmd<'_>,
        exec: Exec,
    ) -> Result<RelayOutcome, Failure> {
        if self.xa.is_none() {
            if let Some(r) = &self.pinned_route {
                if *r.cluster != *target.cluster {
                    return Err(RouterError::NotSupported(format!(
                        "a locked session or non-distributed transaction (START TRANSACTION \
                         READ ONLY / WITH CONSISTENT SNAPSHOT) spanning shards on clusters `{}` \
                         and `{}`",
                        r.cluster, target.cluster
                    ))
                    .into());
                }
            }
        }
        let saved = self.state.db.replace(target.database.clone());
        let switched = self.xa_use_cluster(&target.cluster).await;
        let result = match switched {
            Ok(()) => self.run(Target::Cluster(&target.cluster), cmd, exec).await,
            Err(f) => Err(f),
        };
        self.state.db = saved;
        result
    }

    /// A read over several shards whose answer is the concatenation of theirs: sent to every
    /// shard at once, relayed as one result set.
    async fn run_scatter(
        &mut self,
        targets: &[shard_map::ShardTarget],
        gather: Gather,
        mut cmd: Cmd<'_>,
    ) -> Result<(), Failure> {
        let binary = matches!(cmd, Cmd::Execute { .. });
        if self.pinned.is_some() || self.pending_begin.is_some() {
            return Err(RouterError::NotSupported(
                "queries over several shards inside a transaction or locked session".into(),
            )
            .into());
        }
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let mut conns = Vec::with_capacity(targets.len());
        for t in targets {
            let (mut conn, _) = self
                .route_and_checkout(Target::Cluster(&t.cluster), deadline)
                .await?;
            let saved = self.state.db.replace(t.database.clone());
            let sent = match &mut cmd {
                Cmd::Raw(p) => match self.sync(&mut conn, false).await {
                    Ok(()) => conn.send_command(p).await.map_err(RouterError::from),
                    Err(e) => Err(e),
                },
                Cmd::Execute {
                    key,
                    packet,
                    long_data,
                } => {
                    if !long_data.is_empty() {
                        Err(RouterError::NotSupported(
                            "long data parameters in a query over several shards".into(),
                        ))
                    } else {
                        let shard_key = StmtKey {
                            db: Some(t.database.as_str().into()),
                            sql: key.sql.clone(),
                        };
                        let mut c = Cmd::Execute {
                            key: &shard_key,
                            packet,
                            long_data,
                        };
                        self.send(&mut conn, &mut c, false).await
                    }
                }
            };
            self.state.db = saved;
            if let Err(e) = sent {
                for mut c in conns {
                    let c: &mut PooledConn = &mut c;
                    c.broken = true;
                }
                conn.broken = true;
                return Err(e.into());
            }
            conns.push(conn);
        }
        let deprecate_eof = self.deprecate_eof();
        let mut refs: Vec<&mut crate::backend::BackendConn> =
            conns.iter_mut().map(|c| &mut **c).collect();
        let result = match gather {
            Gather::Rows { limit, order } => crate::backend::scatter::concat(
                &mut refs,
                &mut self.output,
                deprecate_eof,
                limit,
                &order,
                binary,
            )
            .await
            .map(|_| ()),
            Gather::SumCounts => {
                crate::backend::scatter::sum_counts(
                    &mut refs,
                    &mut self.output,
                    deprecate_eof,
                    binary,
                )
                .await
            }
            Gather::Merge { spec, binary } => crate::backend::aggregate::gather(
                &mut refs,
                &mut self.output,
                deprecate_eof,
                &spec,
                binary,
            )
            .await
            .map(|_| ()),
        };
        if result.is_err() {
            // Responses still unread on some connections: none may go back to the pool.
            for c in conns.iter_mut() {
                c.broken = true;
            }
        }
        match result {
            Ok(_) => Ok(()),
            Err(ScatterError::Server(e)) => {
                Err(RouterError::Backend(BackendError::Server(e)).into())
            }
            Err(ScatterError::Backend {
                source,
                forwarded,
                next_seq,
            }) => {
                let e = match source {
                    BackendError::Server(e) => RouterError::Backend(BackendError::Server(e)),
                    other => RouterError::LostDuringQuery {
                        addr: other.to_string(),
                    },
                };
                Err(Failure::Reply(e, forwarded.then_some(next_seq)))
            }
            Err(ScatterError::Client(_)) => Err(Failure::ClientGone),
            Err(ScatterError::Unsupported(what)) => Err(RouterError::NotSupported(what).into()),
        }
    }

    /// DDL on a sharded or reference table: the statement runs on every shard, in each
    /// shard's database; the reply names every shard where it failed.
    async fn run_on_every_shard(
        &mut self,
        targets: &[shard_map::ShardTarget],
        sql: &str,
        seq: u8,
    ) -> Result<(), Failure> {
        if self.pinned.is_some() {
            return Err(RouterError::NotSupported(
                "DDL on sharded tables inside a transaction or locked session".into(),
            )
            .into());
        }
        // Column positions may change with the DDL.
        self.ctx.key_positions.clear();
        self.ctx.auto_increment.clear();
        let mut failures = Vec::new();
        for t in targets {
            let saved = self.state.db.replace(t.database.clone());
            let result = self.run_internal(&t.cluster, sql, true, false).await;
            self.state.db = saved;
            if let Err(e) = result {
                failures.push((
                    format!("shard {} ({}, {})", t.shard, t.cluster, t.database),
                    e,
                ));
            }
        }
        self.reply_fanout(seq, failures).await
    }

    /// `CREATE/DROP DATABASE` of a sharded keyspace: once per shard database.
    async fn run_on_keyspace_databases(
        &mut self,
        dbs: &[(String, String)],
        sql: &str,
        seq: u8,
    ) -> Result<(), Failure> {
        let mut failures = Vec::new();
        for (cluster, db) in dbs {
            let Some(stmt) = crate::classify::with_database_ddl_target(sql, db) else {
                return Err(RouterError::NotSupported("this database statement".into()).into());
            };
            if let Err(e) = self.run_internal(cluster, &stmt, false, true).await {
                failures.push((format!("database {db} on {cluster}"), e));
            }
        }
        self.reply_fanout(seq, failures).await
    }

    /// Runs `sql` on `cluster`'s leader for the router's own purposes (its result is read, not
    /// relayed); with `sync` the connection first takes the session's state. With `discard`
    /// the connection is closed afterwards (its current database may be gone).
    async fn run_internal(
        &self,
        cluster: &str,
        sql: &str,
        sync: bool,
        discard: bool,
    ) -> Result<(), crate::protocol::ServerError> {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let (mut conn, _) = self
            .route_and_checkout(Target::Cluster(cluster), deadline)
            .await
            .map_err(|f| match f {
                Failure::Reply(e, _) => e.to_client(),
                Failure::ClientGone => RouterError::LostDuringQuery {
                    addr: cluster.to_string(),
                }
                .to_client(),
            })?;
        if sync {
            self.sync(&mut conn, false)
                .await
                .map_err(|e| e.to_client())?;
        }
        let result = conn.query(sql).await;
        if discard {
            conn.discard();
        }
        result
            .map(|_| ())
            .map_err(|e| RouterError::Backend(e).to_client())
    }

    /// The reply to a fanned-out statement: OK, or the first failure's code with every
    /// failure named.
    async fn reply_fanout(
        &mut self,
        seq: u8,
        failures: Vec<(String, crate::protocol::ServerError)>,
    ) -> Result<(), Failure> {
        if failures.is_empty() {
            return self.reply_ok(seq).await;
        }
        let first = failures[0].1.clone();
        let message = failures
            .iter()
            .map(|(w, e)| format!("{w}: {}", e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let e = crate::protocol::ServerError {
            code: first.code,
            sqlstate: first.sqlstate,
            message: format!("failed on {} of the shards: {message}", failures.len()),
            raw: None,
        };
        Err(RouterError::Backend(BackendError::Server(e)).into())
    }

    /// Plans a statement on the shard map; an INSERT without a column list gets its key
    /// column's position from a shard's catalog (cached) and is planned again. `parsed` is
    /// `sql` already parsed, when it is (a prepared statement's).
    pub(crate) async fn plan(
        &self,
        map: &shard_map::ShardMap,
        sql: &str,
        class: &crate::classify::Classification,
        db: Option<&str>,
        params: Option<&[Option<shard_map::KeyValue>]>,
        parsed: Option<&sqlparser::ast::Statement>,
    ) -> Result<Plan, Failure> {
        let mut input = PlanInput {
            sql,
            class,
            db,
            params,
            key_position: None,
            parsed,
        };
        let first = shard::plan(map, input);
        let Plan::NeedsColumnPosition {
            keyspace,
            table,
            column,
        } = first
        else {
            return Ok(first);
        };
        let cache_key = (keyspace.clone(), table.clone());
        let pos = match self.ctx.key_positions.get(&cache_key).map(|p| *p) {
            Some(p) => p,
            None => {
                let Some(shard) = map.keyspace(&keyspace).and_then(|k| k.all_shards().first())
                else {
                    return Err(
                        RouterError::NotSupported("a keyspace without shards".into()).into(),
                    );
                };
                let sql = format!(
                    "SELECT ORDINAL_POSITION FROM information_schema.COLUMNS WHERE \
                     TABLE_SCHEMA = {} AND TABLE_NAME = {} AND COLUMN_NAME = {}",
                    shard_map::sql::quote(&shard.database),
                    shard_map::sql::quote(&table),
                    shard_map::sql::quote(&column)
                );
                let deadline = tokio::time::Instant::now()
                    + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
                let (mut conn, _) = self
                    .route_and_checkout(Target::Cluster(&shard.cluster), deadline)
                    .await?;
                let out = conn.query(&sql).await.map_err(RouterError::from)?;
                let found = out
                    .rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .and_then(|v| v.parse::<usize>().ok())
                    .and_then(|p| p.checked_sub(1));
                let Some(p) = found else {
                    return Err(RouterError::NotSupported(format!(
                        "INSERT without a column list into `{table}`, whose shard key `{column}` \
                         is not in the table on shard {}",
                        shard.shard
                    ))
                    .into());
                };
                self.ctx.key_positions.insert(cache_key, p);
                p
            }
        };
        input.key_position = Some(pos);
        Ok(shard::plan(map, input))
    }

    /// Whether `route` (a pinned connection's) is on another cluster than the session
    /// database's own.
    fn pinned_elsewhere(&self, route: Option<&Route>) -> bool {
        let Some(r) = route else {
            return false;
        };
        if !self.in_sharded_keyspace() {
            // Also while a shard statement runs (the session database is then the shard's).
            return false;
        }
        let map = self.ctx.shard_map.load();
        *r.cluster != *map.cluster_for_db(self.state.db.as_deref())
    }

    /// Whether the session's database is a sharded keyspace.
    fn in_sharded_keyspace(&self) -> bool {
        let map = self.ctx.shard_map.load();
        self.state
            .db
            .as_deref()
            .and_then(|d| map.keyspace(d))
            .is_some_and(|k| k.is_sharded())
    }

    /// Keeps `conn` as the session's current connection (released later if nothing pins).
    fn keep(&mut self, conn: PooledConn, route: Option<Route>) {
        self.pinned = Some(conn);
        self.pinned_route = route;
    }

    /// Routes for `target` and checks out a connection, holding while the cluster changes
    /// leader or its leader can't be reached.
    async fn route_and_checkout(
        &self,
        target: Target<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(PooledConn, Option<Route>), Failure> {
        loop {
            self.replan_if_map_changed()?;
            let routed = match target {
                Target::Leader | Target::Session => self.ctx.route(self.state.db.as_deref(), false),
                // Without multiplexing the session keeps the connection it gets: the leader's.
                Target::ReplicaOk => self
                    .ctx
                    .route(self.state.db.as_deref(), self.ctx.config.multiplexing),
                Target::LeaderFor(db) => self.ctx.route(Some(db), false),
                Target::Cluster(c) => self.ctx.route_cluster_in(
                    c,
                    false,
                    self.xa.as_ref().is_some_and(|x| !x.clusters.is_empty()),
                ),
            };
            let fenced = self
                .ctx
                .writes_fenced
                .load(std::sync::atomic::Ordering::Relaxed);
            let routed = match routed {
                // A read may still go to a leader this router may no longer know to be the
                // leader; a write may not.
                Ok(route)
                    if fenced
                        && route.leader
                        && !matches!(
                            target,
                            Target::ReplicaOk | Target::Session | Target::LeaderFor(_)
                        ) =>
                {
                    Err(RouteError::Wait {
                        version: route.version,
                        why: WaitReason::Fenced(route.cluster.to_string()),
                    })
                }
                other => other,
            };
            match routed {
                Ok(route) => match self.checkout_addr(&route.addr).await {
                    Ok(c) => {
                        // A map published between the plan and this checkout (with the
                        // hold already over): nothing ran yet, plan again.
                        self.replan_if_map_changed()?;
                        self.checked_out
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        return Ok((c, Some(route)));
                    }
                    Err(e) if e.is_connection_failure() => {
                        self.ctx.report_failure(&route.addr);
                        Box::pin(self.hold(route.version, &route.cluster, deadline, e.into()))
                            .await?;
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(RouteError::Wait { version, why }) => {
                    let (cluster, e) = match why {
                        WaitReason::Held(c) => (
                            c.clone(),
                            RouterError::HoldTimeout {
                                cluster: c,
                                waited_ms: self.ctx.config.hold_timeout_ms,
                            },
                        ),
                        WaitReason::NoLeader(c) => {
                            (c.clone(), RouterError::NoLeader { cluster: c })
                        }
                        WaitReason::Fenced(c) => (
                            c.clone(),
                            RouterError::Fenced {
                                cluster: c,
                                waited_ms: self.ctx.config.hold_timeout_ms,
                            },
                        ),
                    };
                    Box::pin(self.hold(version, &cluster, deadline, e)).await?;
                }
                Err(RouteError::Fatal(e)) => return Err(e.into()),
            }
        }
    }

    /// When the shard map is not the one the command was planned with: fails with
    /// [`RouterError::ShardMapChanged`] (which plans the command again) if nothing of the
    /// command has run, and with [`RouterError::ShardMapChangedMidway`] (the statement fails,
    /// its parts undone) if a connection was already checked out for it or a distributed
    /// transaction has branches: the rest of it must not run on a stale plan. A pinned
    /// session goes on (its connection's route is checked on its own).
    fn replan_if_map_changed(&self) -> Result<(), Failure> {
        let Some(planned) = &self.command_map else {
            return Ok(());
        };
        if Arc::ptr_eq(planned, &*self.ctx.shard_map.load()) || self.pinned.is_some() {
            return Ok(());
        }
        if self.checked_out.load(std::sync::atomic::Ordering::Relaxed)
            || self.xa.as_ref().is_some_and(|x| !x.clusters.is_empty())
        {
            return Err(RouterError::ShardMapChangedMidway.into());
        }
        Err(RouterError::ShardMapChanged.into())
    }

    /// Waits until `cluster` stops draining, or fails at the deadline.
    async fn wait_draining(
        &self,
        cluster: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), Failure> {
        while self.ctx.draining(cluster) {
            let version = self.ctx.topology.load().version;
            let e = RouterError::HoldTimeout {
                cluster: cluster.to_string(),
                waited_ms: self.ctx.config.hold_timeout_ms,
            };
            self.hold(version, cluster, deadline, e).await?;
        }
        Ok(())
    }

    /// Waits for a topology newer than `version`; fails with `otherwise` at the deadline.
    async fn hold(
        &self,
        version: u64,
        cluster: &str,
        deadline: tokio::time::Instant,
        otherwise: RouterError,
    ) -> Result<(), Failure> {
        use std::sync::atomic::Ordering;
        if tokio::time::Instant::now() >= deadline {
            RouterMetrics::inc(&self.ctx.metrics.hold_timeouts);
            return Err(otherwise.into());
        }
        let held = self.ctx.held.fetch_add(1, Ordering::Relaxed);
        if held >= self.ctx.config.hold_max_statements {
            self.ctx.held.fetch_sub(1, Ordering::Relaxed);
            return Err(RouterError::HoldFull {
                cluster: cluster.to_string(),
            }
            .into());
        }
        RouterMetrics::inc(&self.ctx.metrics.held_statements);
        let changed = self.ctx.wait_topology_change(version, deadline).await;
        self.ctx.held.fetch_sub(1, Ordering::Relaxed);
        if changed {
            Ok(())
        } else {
            RouterMetrics::inc(&self.ctx.metrics.hold_timeouts);
            Err(otherwise.into())
        }
    }

    /// Synchronises the connection's state and sends the command.
    async fn send(
        &self,
        conn: &mut PooledConn,
        cmd: &mut Cmd<'_>,
        with_insert_id: bool,
    ) -> Result<(), RouterError> {
        self.sync(conn, with_insert_id).await?;
        match cmd {
            Cmd::Raw(p) => conn.send_command(p).await?,
            Cmd::Execute {
                key,
                packet,
                long_data,
            } => {
                let stmt = conn.ensure_prepared(key).await?;
                for (param, data) in long_data.iter() {
                    let mut p = Vec::with_capacity(data.len() + 7);
                    p.push(0x18);
                    p.extend_from_slice(&stmt.id.to_le_bytes());
                    p.extend_from_slice(&param.to_le_bytes());
                    p.extend_from_slice(data);
                    conn.send_command(&p).await?;
                }
                packet[1..5].copy_from_slice(&stmt.id.to_le_bytes());
                conn.send_command(packet).await?;
            }
        }
        Ok(())
    }

    /// The pinned connection's cluster changed leader: the session starts afresh.
    fn lost_pinned_to_leader_change(&mut self, cluster: &str) -> Failure {
        let _ = self.lost_pinned(None);
        Failure::Reply(
            RouterError::LeaderChanged {
                cluster: cluster.to_string(),
            },
            None,
        )
    }

    /// The pinned connection died: whatever held the session there is gone with it.
    fn lost_pinned(&mut self, seq: Option<u8>) -> Failure {
        if self.xa.is_some() {
            self.xa_lost("a branch's connection was lost");
        }
        self.pinned_route = None;
        self.pins = Pins::default();
        self.stmts.values_mut().for_each(|s| s.cursor_open = false);
        Failure::Reply(
            RouterError::TransactionLost {
                addr: String::new(),
            },
            seq,
        )
    }

    /// The user table was replaced: take this user's new entry (its password may have
    /// changed on the backends too). A user removed from the table keeps its session.
    fn refresh_user(&mut self) {
        let users = self.ctx.users.load();
        if let Some(u) = users.get(&*self.user.name) {
            self.user = u.clone();
        }
    }

    async fn checkout_addr(&self, addr: &Arc<str>) -> Result<PooledConn, BackendError> {
        let key = PoolKey {
            addr: addr.clone(),
            user: self.user.name.clone(),
            deprecate_eof: self.deprecate_eof(),
            found_rows: self.caps.contains(CapabilityFlags::CLIENT_FOUND_ROWS),
        };
        let state = &self.state;
        let matches = move |c: &crate::backend::ConnState| state.matches(c);
        self.ctx
            .pools
            .checkout(&key, &self.user.password, Some(&matches))
            .await
    }

    /// Brings `conn` to the session's state.
    async fn sync(&self, conn: &mut PooledConn, with_insert_id: bool) -> Result<(), RouterError> {
        let s = &self.state;
        let c = &conn.state;
        if s.matches(c) && (!with_insert_id || s.last_insert_id == c.last_insert_id) {
            return Ok(());
        }
        // Boxed: most statements find the connection in step, and this future is part of
        // every command's.
        Box::pin(self.sync_now(conn, with_insert_id)).await
    }

    /// The round trips of [`Session::sync`] for a connection out of step.
    async fn sync_now(
        &self,
        conn: &mut PooledConn,
        with_insert_id: bool,
    ) -> Result<(), RouterError> {
        let s = &self.state;
        let c = &conn.state;
        let plan = sync_plan(s, c, with_insert_id);
        if plan.reset {
            conn.change_user_reset(&self.user.name, &self.user.password)
                .await?;
        }
        if !plan.sql.is_empty() {
            conn.query(&plan.sql.join(";")).await?;
        }
        let lid = if with_insert_id {
            s.last_insert_id
        } else {
            conn.state.last_insert_id
        };
        conn.state = s.as_conn_state();
        conn.state.last_insert_id = lid;
        Ok(())
    }

    /// COM_INIT_DB (`relay` true) or the database of the handshake (`relay` false, nothing
    /// sent on success).
    async fn select_db(&mut self, db: &str, seq: u8, relay_reply: bool) -> Result<(), Failure> {
        let mut payload = Vec::with_capacity(db.len() + 1);
        payload.push(0x02);
        payload.extend_from_slice(db.as_bytes());
        if relay_reply {
            let exec = Exec {
                mode: RelayMode::Single,
                retry_reads: true,
                with_insert_id: false,
            };
            let outcome = self
                .run(Target::LeaderFor(db), Cmd::Raw(&payload), exec)
                .await?;
            if outcome.error.is_none() {
                self.state.db = Some(db.to_string());
                if let Some(c) = self.pinned.as_mut() {
                    c.state.db = Some(db.to_string());
                }
            }
            self.release_if_free();
            return Ok(());
        }
        let _ = seq;
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let (mut conn, _) = self
            .route_and_checkout(Target::LeaderFor(db), deadline)
            .await?;
        self.sync(&mut conn, false).await?;
        conn.query(&format!("USE {}", shard_map::sql::quote_ident(db)))
            .await
            .map_err(RouterError::from)?;
        self.state.db = Some(db.to_string());
        conn.state.db = Some(db.to_string());
        Ok(())
    }

    /// Commands answered by the leader without session effects.
    async fn simple(&mut self, payload: &[u8], mode: RelayMode) -> Result<(), Failure> {
        let exec = Exec {
            mode,
            retry_reads: true,
            with_insert_id: false,
        };
        self.run(Target::Session, Cmd::Raw(payload), exec).await?;
        self.release_if_free();
        Ok(())
    }

    async fn set_option(&mut self, payload: &[u8], seq: u8) -> Result<(), Failure> {
        let option = payload
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(RouterError::Malformed("COM_SET_OPTION"))?;
        match option {
            0 => self.multi_statements = true,
            1 => self.multi_statements = false,
            _ => return Err(RouterError::Malformed("COM_SET_OPTION value").into()),
        }
        let status = self.client_status();
        if self.deprecate_eof() {
            self.output.push(seq, &ok_payload(0, 0, status, 0, 0xfe));
        } else {
            self.output.push(seq, &eof_payload(status, 0));
        }
        self.output.flush().await.map_err(|_| Failure::ClientGone)
    }

    /// Forgets everything the session set up, as a fresh login would have it.
    fn reset_state(&mut self, collation: u8, db: Option<String>) {
        if let Some(c) = self.pinned.take() {
            // It may hold temporary tables, locks or an open transaction.
            c.discard();
        }
        self.pinned_route = None;
        self.pending_begin = None;
        if self.xa.is_some() {
            // Unprepared branches die with their connections.
            self.xa_lost("");
            self.xa = None;
        }
        self.pins = Pins::default();
        self.stmts.clear();
        self.state = SessionState::for_handshake(collation, db);
        self.multi_statements = self.caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS);
    }

    async fn reset_connection(&mut self, seq: u8) -> Result<(), Failure> {
        let db = self.state.db.clone();
        let names = self.state.names.clone();
        self.reset_state(state::BACKEND_COLLATION, db);
        self.state.names = names;
        self.reply_ok(seq).await
    }

    async fn change_user(&mut self, payload: &[u8], seq: u8) -> Result<(), Failure> {
        let req = auth::parse_change_user(&payload[1..], self.caps)
            .ok_or(RouterError::Malformed("COM_CHANGE_USER"))?;
        let mut seq = seq;
        let mut token = req.token.clone();
        let mut scramble = self.scramble;
        if req
            .plugin
            .as_deref()
            .is_some_and(|p| !p.is_empty() && p != crate::protocol::handshake::NATIVE_PASSWORD)
        {
            scramble = crate::protocol::handshake::new_scramble();
            self.output.push(
                seq,
                &crate::protocol::handshake::auth_switch_request(&scramble),
            );
            self.output.flush().await.map_err(|_| Failure::ClientGone)?;
            match self.input.read_message(64 * 1024).await {
                Ok(Some((_, last, reply))) => {
                    token = reply.to_vec();
                    seq = last.wrapping_add(1);
                }
                _ => return Err(Failure::ClientGone),
            }
        }
        let mut user = auth::check_password(&self.ctx, &req.user, &scramble, &token);
        if user.is_none() && self.ctx.config.backend_accounts {
            user = auth::backend_account(&self.ctx, &req.user, &scramble, &token)
                .await
                .map_err(|e| Failure::Reply(e, Some(seq)))?;
        }
        let Some(user) = user else {
            RouterMetrics::inc(&self.ctx.metrics.auth_failures);
            let e = RouterError::AccessDenied {
                user: req.user,
                host: self.peer.clone(),
                using_password: !token.is_empty(),
            };
            return Err(Failure::Reply(e, Some(seq)));
        };
        self.listed.set_user(user.name.clone());
        self.user = user;
        self.reset_state(req.collation.unwrap_or(state::BACKEND_COLLATION), None);
        if let Some(db) = req.database {
            self.select_db(&db, seq, false).await.map_err(|f| match f {
                Failure::Reply(e, _) => Failure::Reply(e, Some(seq)),
                other => other,
            })?;
        }
        self.reply_ok(seq).await
    }
}

async fn write_error(
    out: &mut PacketWriter<StreamWrite>,
    seq: u8,
    e: &RouterError,
) -> std::io::Result<()> {
    let c = e.to_client();
    out.push(seq, &err_payload(c.code, &c.sqlstate, c.message_bytes()));
    out.flush().await
}
