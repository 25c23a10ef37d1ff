//! `KILL` and `COM_PROCESS_KILL` by the ids clients see: the router's session ids (the
//! handshake's, and `CONNECTION_ID()`'s with multiplexing), or the backend thread id a
//! server's process list shows for a statement a session is running. A session's running
//! statement is
//! stopped on the backend connection running it, by a `KILL QUERY` of that connection's
//! thread, never of a pooled connection another session holds; a killed connection ends the
//! client's session. The server's rules decide who may kill whom: a user its own sessions,
//! a user with `CONNECTION ADMIN` (or `SUPER`) anyone's.

use std::sync::Arc;
use std::time::Duration;

use super::{Failure, Session, Target};
use crate::backend::BackendError;
use crate::classify::{with_connection_id, Kill, KillTarget};
use crate::context::RouterMetrics;
use crate::error::RouterError;
use crate::sessions::SessionInfo;

/// Longest wait for a backend to take a `KILL` (or to answer the privilege check).
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// ER_NO_SUCH_THREAD: the thread ended before the `KILL` reached it.
const NO_SUCH_THREAD: u16 = 1094;

impl Session {
    /// Runs `kill`. `None` when it is not the router's to answer (without multiplexing, an id
    /// that is no session of this router is a backend thread id, which the server kills).
    pub(super) async fn kill(&mut self, kill: Kill, seq: u8) -> Option<Result<(), Failure>> {
        let multiplexing = self.ctx.config.multiplexing;
        let targets = match &kill.target {
            KillTarget::QueryId(_) if !multiplexing => return None,
            KillTarget::QueryId(_) => {
                return Some(Err(RouterError::NotSupported(
                    "KILL QUERY ID through a multiplexing router: query ids belong to \
                     backend connections shared by the router's sessions; KILL QUERY with \
                     the session's CONNECTION_ID() instead"
                        .into(),
                )
                .into()))
            }
            KillTarget::User(user) => {
                let mut all = self.ctx.sessions.of_user(user);
                all.retain(|s| s.id != self.id);
                all
            }
            KillTarget::Id(id) => match self.session_by_id(*id, kill.query, seq).await {
                Some(Ok(t)) => vec![t],
                Some(Err(f)) => return Some(Err(f)),
                None => return None,
            },
            KillTarget::Expr(expr) => {
                let id = match self.evaluate_id(expr).await {
                    Ok(id) => id,
                    Err(f) => return Some(Err(f)),
                };
                match self.session_by_id(id, kill.query, seq).await {
                    Some(Ok(t)) => vec![t],
                    Some(Err(f)) => return Some(Err(f)),
                    None => return None,
                }
            }
        };
        Some(self.kill_sessions(&targets, &kill, seq).await)
    }

    /// The live session `id`: `Err` when it is this one (answered here) or unknown with
    /// multiplexing; `None` when unknown without multiplexing (a backend thread id).
    async fn session_by_id(
        &mut self,
        id: u64,
        query: bool,
        seq: u8,
    ) -> Option<Result<Arc<SessionInfo>, Failure>> {
        if id == u64::from(self.id) {
            // As on a server: killing one's own connection ends it with ER_CONNECTION_KILLED,
            // one's own query interrupts the KILL statement itself.
            if query {
                return Some(Err(RouterError::QueryInterrupted.into()));
            }
            RouterMetrics::inc(&self.ctx.metrics.errors);
            self.ctx
                .metrics
                .count_error(RouterError::ConnectionKilled.to_client().code);
            let _ = self.reply_error(seq, RouterError::ConnectionKilled).await;
            return Some(Err(Failure::ClientGone));
        }
        match u32::try_from(id)
            .ok()
            .and_then(|id| self.ctx.sessions.get(id))
        {
            Some(s) => Some(Ok(s)),
            // With multiplexing an id from a server's process list names the session whose
            // statement runs on that backend connection, if one does: never the connection
            // itself, which another session may hold next.
            None if self.ctx.config.multiplexing => match self.ctx.sessions.running_on_thread(id) {
                Some(s) => Some(Ok(s)),
                None => Some(Err(RouterError::UnknownThread(id).into())),
            },
            None => None,
        }
    }

    /// Kills the running statement of each of `targets` (and, unless `KILL QUERY`, their
    /// connections), once the server agreed that this user may.
    async fn kill_sessions(
        &mut self,
        targets: &[Arc<SessionInfo>],
        kill: &Kill,
        seq: u8,
    ) -> Result<(), Failure> {
        let foreign = targets.iter().find(|t| *t.user() != *self.user.name);
        if let Some(t) = foreign {
            if !self.may_kill_others().await? {
                return Err(RouterError::KillDenied(u64::from(t.id)).into());
            }
        }
        for t in targets {
            if let Some((addr, thread)) = t.kill_statement(&self.ctx.sessions) {
                self.kill_backend_statement(&addr, thread, kill.mode, t.id)
                    .await?;
            }
            if !kill.query {
                t.end_connection();
            }
        }
        self.reply_ok(seq).await
    }

    /// Sends `KILL QUERY thread` to `addr`, as this session's user (the server checks it may).
    async fn kill_backend_statement(
        &self,
        addr: &Arc<str>,
        thread: u32,
        mode: Option<&str>,
        session: u32,
    ) -> Result<(), Failure> {
        let sql = format!("KILL {} QUERY {thread}", mode.unwrap_or(""));
        let run = async {
            let mut conn = self.checkout_addr(addr).await?;
            let r = conn.query(&sql).await;
            // A connection that ran a KILL is of no use to anyone else.
            conn.discard();
            r
        };
        match tokio::time::timeout(KILL_TIMEOUT, run).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(BackendError::Server(e))) if e.code == NO_SUCH_THREAD => Ok(()),
            Ok(Err(BackendError::Server(e))) if e.code == 1095 => {
                Err(RouterError::KillDenied(u64::from(session)).into())
            }
            Ok(Err(e)) => Err(RouterError::Backend(e).into()),
            Err(_) => {
                Err(RouterError::Backend(BackendError::ConnectTimeout(addr.to_string())).into())
            }
        }
    }

    /// Whether this session's user holds `CONNECTION ADMIN` or `SUPER`, asked of the server
    /// the session's statements go to.
    async fn may_kill_others(&mut self) -> Result<bool, Failure> {
        let sql = "SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = \
                   CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                   SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') AND PRIVILEGE_TYPE IN \
                   ('SUPER', 'CONNECTION ADMIN') LIMIT 1";
        Ok(!self.internal_rows(sql).await?.is_empty())
    }

    /// The connection id `expr` (a `KILL` target such as `@id`) evaluates to in this
    /// session.
    async fn evaluate_id(&mut self, expr: &str) -> Result<u64, Failure> {
        let expr = if self.ctx.config.multiplexing {
            with_connection_id(expr, self.id).unwrap_or_else(|| expr.to_string())
        } else {
            expr.to_string()
        };
        let rows = self.internal_rows(&format!("SELECT {expr}")).await?;
        let value = rows.first().and_then(|r| r.first()).cloned().flatten();
        value
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                RouterError::NotSupported(format!(
                    "KILL of '{}': it is not a connection id",
                    value.as_deref().unwrap_or("NULL")
                ))
                .into()
            })
    }

    /// Rows of `sql` run on the session's connection (its pinned one, else one brought to
    /// the session's state).
    async fn internal_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Failure> {
        let out = match self.pinned.as_mut() {
            Some(c) => c.query(sql).await,
            None => {
                let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
                let (mut conn, _) = self.route_and_checkout(Target::Session, deadline).await?;
                self.sync(&mut conn, false).await?;
                conn.query(sql).await
            }
        };
        out.map(|o| o.rows)
            .map_err(|e| RouterError::Backend(e).into())
    }
}
