//! Prepared statements. The router gives clients its own statement ids and prepares each
//! statement lazily on whichever backend connection runs it (cached per connection by text),
//! so that a prepared session needs no pinning. Parameter types are remembered, because a
//! client that sends them only with the first execute relies on the connection remembering.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{relay, RelayError, RelayMode, RelayOutcome, StmtKey};
use crate::classify::{Classification, StatementKind};
use crate::context::{RouterMetrics, StatementClass};
use crate::error::RouterError;

use super::retry::is_read;
use super::{Cmd, Exec, Failure, Gather, Session, Target};
use crate::shard::Plan;

/// A statement as the client knows it.
#[derive(Debug)]
pub(crate) struct ClientStmt {
    pub key: StmtKey,
    pub class: Arc<Classification>,
    pub params: u16,
    /// Parameter types from the last execute that sent them (2 bytes each).
    pub param_types: Option<Vec<u8>>,
    /// COM_STMT_SEND_LONG_DATA chunks per parameter, sent before the next execute.
    pub long_data: HashMap<u16, Vec<u8>>,
    pub cursor_open: bool,
    /// On a sharded table: planned again at each execute, from its parameters.
    pub sharded: bool,
    /// A sharded statement's syntax tree, parsed once here for the planner of every execute.
    pub parsed: Option<Arc<sqlparser::ast::Statement>>,
}

const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

fn stmt_id(payload: &[u8]) -> Result<u32, RouterError> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(RouterError::Malformed("statement id"))
}

impl Session {
    pub(super) async fn stmt_prepare(&mut self, payload: &[u8], _seq: u8) -> Result<(), Failure> {
        let mut class = self
            .ctx
            .classifier
            .classify(&String::from_utf8_lossy(&payload[1..]));
        let sql: Arc<[u8]> = match self.own_connection_id(&payload[1..], &class) {
            Some(sql) => {
                class = self.ctx.classifier.classify(&sql);
                sql.into_bytes().into()
            }
            None => payload[1..].into(),
        };
        let key = StmtKey {
            db: self.state.db.as_deref().map(Arc::from),
            sql,
        };
        if !class.parsed {
            RouterMetrics::inc(&self.ctx.metrics.unparsed);
        }
        // A statement on a sharded table is prepared on a shard that holds it (any shard has
        // the same columns and parameters); where it runs is decided at each execute.
        let mut shard_target = None;
        let map = self.ctx.shard_map.load();
        if map.has_sharded_keyspace() {
            let sql = String::from_utf8_lossy(&key.sql);
            match self
                .plan(&map, &sql, &class, self.state.db.as_deref(), None, None)
                .await?
            {
                Plan::Unsharded => {}
                Plan::Single(t) => shard_target = Some(t),
                Plan::Scatter { targets, .. }
                | Plan::ScatterCount { targets }
                | Plan::Gather { targets, .. } => shard_target = targets.into_iter().next(),
                Plan::MultiWrite { parts, .. } => {
                    shard_target = parts.into_iter().next().map(|p| p.0)
                }
                Plan::NeedsParams | Plan::NeedsColumnPosition { .. } => {
                    let first = class
                        .tables
                        .iter()
                        .find_map(|t| {
                            map.keyspace(t.schema.as_deref().or(self.state.db.as_deref())?)
                        })
                        .and_then(|ks| ks.all_shards().first().cloned());
                    match first {
                        Some(t) => shard_target = Some(t),
                        None => {
                            return Err(RouterError::NotSupported(
                                "this prepared statement on a sharded table".into(),
                            )
                            .into())
                        }
                    }
                }
                Plan::Every(_) | Plan::KeyspaceDatabases(_) => {
                    return Err(RouterError::NotSupported(
                        "DDL on sharded tables as a prepared statement".into(),
                    )
                    .into())
                }
                Plan::Refuse(why) => {
                    // An INSERT whose AUTO_INCREMENT key the router fills in at execute.
                    let sql = String::from_utf8_lossy(&key.sql);
                    if !self.writes_auto_increment(&map, &sql, &class).await? {
                        return Err(RouterError::NotSupported(why).into());
                    }
                    let ks = self.state.db.as_deref().and_then(|d| map.keyspace(d));
                    shard_target = ks.and_then(|k| k.all_shards().first().cloned());
                }
            }
        }
        let sharded = shard_target.is_some();
        let parsed = if sharded {
            crate::shard::plan::parse_one(&String::from_utf8_lossy(&key.sql)).map(Arc::new)
        } else {
            None
        };
        let key = match &shard_target {
            Some(t) => StmtKey {
                db: Some(t.database.as_str().into()),
                sql: key.sql.clone(),
            },
            None => key,
        };
        if let (Some(t), Some(r), None) = (&shard_target, &self.pinned_route, &self.xa) {
            if *r.cluster != *t.cluster {
                return Err(RouterError::NotSupported(format!(
                    "a transaction or locked session spanning shards on clusters `{}` and `{}` \
                     (distributed transactions)",
                    r.cluster, t.cluster
                ))
                .into());
            }
        }
        let saved = shard_target
            .as_ref()
            .map(|t| self.state.db.replace(t.database.clone()));
        let switched = match &shard_target {
            Some(t) => self.xa_use_cluster(&t.cluster.clone()).await,
            None => Ok(()),
        };
        let prepared = match switched {
            Ok(()) => self.prepare_on(shard_target.as_ref(), &key).await,
            Err(f) => Err(f),
        };
        if let Some(db) = saved {
            self.state.db = db;
        }
        let (stmt, packets) = prepared?;
        self.release_if_free();
        let id = self.next_stmt_id;
        self.next_stmt_id = self.next_stmt_id.wrapping_add(1).max(1);
        self.stmts.insert(
            id,
            ClientStmt {
                key: StmtKey {
                    db: self.state.db.as_deref().map(Arc::from),
                    sql: key.sql.clone(),
                },
                sharded,
                parsed,
                class,
                params: stmt.params,
                param_types: None,
                long_data: HashMap::new(),
                cursor_open: false,
            },
        );
        self.last_prepared = id;
        for (i, (seq, mut p)) in packets.into_iter().enumerate() {
            if i == 0 {
                p[1..5].copy_from_slice(&id.to_le_bytes());
            }
            self.output.push(seq, &p);
        }
        self.output.flush().await.map_err(|_| Failure::ClientGone)
    }

    /// Prepares `key` on the pinned connection or one of `shard`'s cluster (the session's
    /// cluster when `None`), retrying once on another connection if one fails.
    async fn prepare_on(
        &mut self,
        shard: Option<&shard_map::ShardTarget>,
        key: &StmtKey,
    ) -> Result<(crate::backend::BackendStmt, Vec<(u8, bytes::BytesMut)>), Failure> {
        let mut retried = false;
        loop {
            let was_pinned = self.pinned.is_some();
            let target = match shard {
                Some(t) => Target::Cluster(&t.cluster),
                None => Target::Leader,
            };
            let (mut conn, route) = match self.pinned.take() {
                Some(c) => (c, self.pinned_route.take()),
                None => {
                    let deadline = tokio::time::Instant::now()
                        + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
                    self.route_and_checkout(target, deadline).await?
                }
            };
            let prepared = async {
                self.sync(&mut conn, false).await?;
                conn.prepare(key).await.map_err(RouterError::from)
            }
            .await;
            match prepared {
                Ok(p) => {
                    self.keep(conn, route);
                    return Ok(p);
                }
                Err(RouterError::Backend(b)) if b.is_connection_failure() => {
                    conn.discard();
                    if was_pinned {
                        return Err(self.lost_pinned(None));
                    }
                    if retried {
                        return Err(RouterError::Backend(b).into());
                    }
                    retried = true;
                }
                Err(e) => {
                    self.keep(conn, route);
                    self.release_if_free();
                    return Err(e.into());
                }
            }
        }
    }

    pub(super) async fn stmt_execute(&mut self, payload: &[u8], seq: u8) -> Result<(), Failure> {
        const CMD: &str = "mysqld_stmt_execute";
        let mut id = stmt_id(payload)?;
        if id == u32::MAX {
            // MariaDB's "the statement prepared last" id.
            id = self.last_prepared;
        }
        // A prepared KILL is the router's to run, as the text one (see `Session::kill`).
        let kill = self
            .stmts
            .get(&id)
            .filter(|s| s.params == 0 && matches!(s.class.kind, StatementKind::Other))
            .and_then(|s| std::str::from_utf8(&s.key.sql).ok())
            .and_then(crate::classify::parse_kill);
        if let Some(kill) = kill {
            if let Some(done) = Box::pin(self.kill(kill, seq)).await {
                return done;
            }
        }
        let stmt = self
            .stmts
            .get_mut(&id)
            .ok_or(RouterError::UnknownStatement { id, command: CMD })?;
        self.class = StatementClass::of(&stmt.class.kind);
        let flags = *payload
            .get(5)
            .ok_or(RouterError::Malformed("execute flags"))?;
        let n = usize::from(stmt.params);
        // command, id, flags, iteration count
        let mut pos = 10;
        let mut out = Vec::with_capacity(payload.len() + 2 * n + 1);
        out.extend_from_slice(
            payload
                .get(..pos)
                .ok_or(RouterError::Malformed("execute"))?,
        );
        if n > 0 {
            let bitmap = payload
                .get(pos..pos + n.div_ceil(8))
                .ok_or(RouterError::Malformed("execute null bitmap"))?;
            out.extend_from_slice(bitmap);
            pos += bitmap.len();
            let bound = *payload
                .get(pos)
                .ok_or(RouterError::Malformed("execute types flag"))?;
            pos += 1;
            if bound == 1 {
                let types = payload
                    .get(pos..pos + 2 * n)
                    .ok_or(RouterError::Malformed("execute parameter types"))?;
                stmt.param_types = Some(types.to_vec());
                pos += 2 * n;
            }
            let types = stmt
                .param_types
                .as_ref()
                .ok_or(RouterError::Malformed("execute without parameter types"))?;
            // Always send the types: the backend connection may never have seen them.
            out.push(1);
            out.extend_from_slice(types);
            out.extend_from_slice(&payload[pos..]);
        }
        let long = |i: usize| u16::try_from(i).is_ok_and(|i| stmt.long_data.contains_key(&i));
        if n > 0 && !crate::shard::params::well_formed(&out, n, &long) {
            return Err(RouterError::Malformed("execute parameter values").into());
        }
        let cursor = flags & CURSOR_TYPE_READ_ONLY != 0;
        let key = stmt.key.clone();
        let sharded = stmt.sharded;
        let parsed = stmt.parsed.clone();
        let class = stmt.class.clone();
        let long_data = std::mem::take(&mut stmt.long_data);
        let target = if is_read(&class) && !self.pins.any() && !cursor {
            Target::ReplicaOk
        } else {
            Target::Leader
        };
        let exec = Exec {
            mode: RelayMode::ResultSet { cursor },
            retry_reads: is_read(&class),
            with_insert_id: class.uses_session_functions,
        };
        if let Some(why) = self.xa.as_ref().and_then(|x| x.failed.clone()) {
            return Err(RouterError::XaRolledBack(why).into());
        }
        self.unpin_unless_diagnostics(&key.sql, &class);
        let outcome = if sharded {
            // Boxed: the sharded paths' futures are large, and the session's command future
            // (allocated per command) stays small for the common unsharded statement.
            let sharded = Box::pin(self.execute_sharded(
                &key,
                &class,
                parsed.as_deref(),
                &mut out,
                n,
                &long_data,
                exec,
                seq,
            ));
            match sharded.await? {
                Some(outcome) => outcome,
                None => return Ok(()),
            }
        } else {
            let cmd = Cmd::Execute {
                key: &key,
                packet: &mut out,
                long_data: &long_data,
            };
            self.run(target, cmd, exec).await?
        };
        if matches!(class.kind, StatementKind::Set) && outcome.error.is_none() && !sharded {
            // A SET run as a prepared statement (as `mysqltest --ps-protocol` and some
            // connectors do) changes the session as the text one does: recorded when its
            // values are literals, else the session stays on the connection that ran it.
            match crate::classify::parse_set(&String::from_utf8_lossy(&key.sql)) {
                Ok(items) if n == 0 => {
                    let effect = self.state.apply_set(&items);
                    self.pins.set_state |= effect.needs_pin;
                    self.pins.next_transaction |= effect.next_transaction;
                }
                _ => self.pins.set_state = true,
            }
            self.sync_conn_record();
        }
        if outcome.cursor_open {
            if let Some(s) = self.stmts.get_mut(&id) {
                s.cursor_open = true;
            }
        }
        self.after_statement(&class, &outcome);
        Ok(())
    }

    /// The sharded part of [`Session::stmt_execute`]: planned from the parameters, run on one
    /// shard (its outcome returned) or over several (answered here, `None`).
    #[allow(clippy::too_many_arguments)]
    async fn execute_sharded(
        &mut self,
        key: &StmtKey,
        class: &Classification,
        parsed: Option<&sqlparser::ast::Statement>,
        out: &mut Vec<u8>,
        n: usize,
        long_data: &HashMap<u16, Vec<u8>>,
        exec: Exec,
        _seq: u8,
    ) -> Result<Option<RelayOutcome>, Failure> {
        let params = crate::shard::params::decode_with_long_data(&*out, n, &|i| {
            u16::try_from(i).is_ok_and(|i| long_data.contains_key(&i))
        });
        let map = self.ctx.shard_map.load();
        let sql = String::from_utf8_lossy(&key.sql);
        if long_data.is_empty() && self.writes_auto_increment(&map, &sql, class).await? {
            // Generated ids are written into the text: the parameters become literals.
            let text = crate::shard::literals::literals(&*out, n)
                .and_then(|lits| crate::shard::literals::substitute(&sql, &lits));
            if let Some(text) = text {
                let text_class = self.ctx.classifier.classify(&text);
                if let Some((filled, first)) =
                    self.fill_auto_increment(&map, &text, &text_class).await?
                {
                    return self
                        .run_filled_insert(&map, &filled, first, _seq)
                        .await
                        .map(|()| None);
                }
            }
        }
        let t = match self
            .plan(&map, &sql, class, key.db.as_deref(), Some(&params), parsed)
            .await?
        {
            Plan::Single(t) => t,
            Plan::Scatter {
                targets,
                limit,
                order,
            } => {
                // Only needed when a sorted scatter turns into a merged read.
                let literal = if order.is_empty() {
                    None
                } else {
                    crate::shard::params::literal_sql(&sql, &*out, n)
                };
                let literal = literal.unwrap_or_default();
                let cmd = Cmd::Execute {
                    key,
                    packet: &mut *out,
                    long_data,
                };
                self.scatter_or_gather(&targets, limit, order, cmd, &literal)
                    .await?;
                return Ok(None);
            }
            Plan::Gather { .. } | Plan::NeedsParams => {
                return self
                    .execute_gathered(&sql, &*out, n, long_data)
                    .await
                    .map(|()| None);
            }
            Plan::ScatterCount { targets } => {
                let cmd = Cmd::Execute {
                    key,
                    packet: &mut *out,
                    long_data,
                };
                self.run_scatter(&targets, Gather::SumCounts, cmd).await?;
                return Ok(None);
            }
            Plan::MultiWrite { .. } => {
                // The text is cut by shard: the parameters become literals in it.
                if !long_data.is_empty() {
                    return Err(RouterError::NotSupported(
                        "long data parameters in a write over several shards".into(),
                    )
                    .into());
                }
                let text = crate::shard::literals::literals(&*out, n)
                    .and_then(|lits| crate::shard::literals::substitute(&sql, &lits))
                    .ok_or_else(|| {
                        RouterError::NotSupported(
                            "parameter types of this write over several shards".into(),
                        )
                    })?;
                let class = self.ctx.classifier.classify(&text);
                match self
                    .plan(&map, &text, &class, key.db.as_deref(), None, None)
                    .await?
                {
                    Plan::MultiWrite { parts, copies } => {
                        return self
                            .xa_write(parts, copies, _seq, None)
                            .await
                            .map(|()| None)
                    }
                    Plan::Single(t) => {
                        let cmd_text = {
                            let mut p = Vec::with_capacity(text.len() + 1);
                            p.push(0x03);
                            p.extend_from_slice(text.as_bytes());
                            p
                        };
                        let exec = Exec {
                            mode: RelayMode::ResultSet { cursor: false },
                            ..exec
                        };
                        let outcome = self.run_on_shard(&t, Cmd::Raw(&cmd_text), exec).await?;
                        self.after_statement(&class, &outcome);
                        return Ok(None);
                    }
                    Plan::Refuse(why) => return Err(RouterError::NotSupported(why).into()),
                    _ => {
                        return Err(RouterError::NotSupported(
                            "this prepared write over several shards".into(),
                        )
                        .into())
                    }
                }
            }
            Plan::Refuse(why) => return Err(RouterError::NotSupported(why).into()),
            _ => {
                return Err(RouterError::NotSupported(
                    "this prepared statement on a sharded table".into(),
                )
                .into())
            }
        };
        let shard_key = StmtKey {
            db: Some(t.database.as_str().into()),
            sql: key.sql.clone(),
        };
        let cmd = Cmd::Execute {
            key: &shard_key,
            packet: &mut *out,
            long_data,
        };
        Ok(Some(self.run_on_shard(&t, cmd, exec).await?))
    }

    /// An execute whose result the router merges: the parameters are written into the
    /// statement as literals, which is planned again and run through the text protocol on
    /// every shard; the merged rows go to the client in the binary format.
    async fn execute_gathered(
        &mut self,
        sql: &str,
        packet: &[u8],
        n: usize,
        long_data: &HashMap<u16, Vec<u8>>,
    ) -> Result<(), Failure> {
        let literal = (long_data.is_empty())
            .then(|| crate::shard::params::literal_sql(sql, packet, n))
            .flatten()
            .ok_or_else(|| {
                RouterError::NotSupported(
                    "these parameter values (long data, or text that is not UTF-8) in a \
                     query merged over several shards"
                        .into(),
                )
            })?;
        let class = self.ctx.classifier.classify(&literal);
        let map = self.ctx.shard_map.load();
        let targets = match self
            .plan(&map, &literal, &class, self.state.db.as_deref(), None, None)
            .await?
        {
            Plan::Single(t) => vec![t],
            Plan::Scatter { targets, .. }
            | Plan::ScatterCount { targets }
            | Plan::Gather { targets, .. } => targets,
            Plan::Refuse(why) => return Err(RouterError::NotSupported(why).into()),
            _ => {
                return Err(RouterError::NotSupported(
                    "this prepared statement on a sharded table".into(),
                )
                .into())
            }
        };
        let spec = crate::shard::gather::analyze_sql(&literal, &class).map_err(|e| {
            RouterError::NotSupported(match e {
                crate::shard::gather::GatherError::Refuse(w) => {
                    format!("{w} over several shards")
                }
                crate::shard::gather::GatherError::NeedsParams => {
                    "parameters the router could not write into the statement".into()
                }
            })
        })?;
        self.run_gather(&targets, Box::new(spec), true).await
    }

    pub(super) fn stmt_send_long_data(&mut self, payload: &[u8]) -> Result<(), Failure> {
        // No reply, even on error, as the protocol says; a bad id fails at execute.
        let Ok(id) = stmt_id(payload) else {
            return Ok(());
        };
        if let (Some(stmt), Some(param)) = (self.stmts.get_mut(&id), payload.get(5..7)) {
            let param = u16::from_le_bytes([param[0], param[1]]);
            stmt.long_data
                .entry(param)
                .or_default()
                .extend_from_slice(&payload[7..]);
        }
        Ok(())
    }

    pub(super) fn stmt_close(&mut self, payload: &[u8]) -> Result<(), Failure> {
        let Ok(id) = stmt_id(payload) else {
            return Ok(());
        };
        if let Some(stmt) = self.stmts.remove(&id) {
            if stmt.cursor_open {
                self.pins.cursor = self.stmts.values().any(|s| s.cursor_open);
                self.release_if_free();
            }
        }
        Ok(())
    }

    pub(super) async fn stmt_reset(&mut self, payload: &[u8], seq: u8) -> Result<(), Failure> {
        let id = stmt_id(payload)?;
        let stmt = self
            .stmts
            .get_mut(&id)
            .ok_or(RouterError::UnknownStatement {
                id,
                command: "mysqld_stmt_reset",
            })?;
        stmt.long_data.clear();
        let had_cursor = std::mem::take(&mut stmt.cursor_open);
        let key = stmt.key.clone();
        if had_cursor {
            self.pins.cursor = self.stmts.values().any(|s| s.cursor_open);
            if let Some(conn) = self.pinned.as_mut() {
                // Close the cursor on the backend; its OK is ours to swallow.
                if let Some(b) = conn.stmts.get(&key).copied() {
                    let mut p = vec![0x1a];
                    p.extend_from_slice(&b.id.to_le_bytes());
                    let ok = conn.send_command(&p).await.is_ok() && conn.read_raw().await.is_ok();
                    if !ok {
                        if let Some(c) = self.pinned.take() {
                            c.discard();
                        }
                    }
                }
            }
            self.release_if_free();
        }
        self.reply_ok(seq).await
    }

    pub(super) async fn stmt_fetch(&mut self, payload: &[u8], _seq: u8) -> Result<(), Failure> {
        let id = stmt_id(payload)?;
        let unknown = RouterError::UnknownStatement {
            id,
            command: "mysqld_stmt_fetch",
        };
        let stmt = self.stmts.get(&id).ok_or(unknown)?;
        if !stmt.cursor_open {
            return Err(RouterError::UnknownStatement {
                id,
                command: "mysqld_stmt_fetch",
            }
            .into());
        }
        let key = stmt.key.clone();
        let Some(mut conn) = self.pinned.take() else {
            return Err(self.lost_pinned(None));
        };
        let route = self.pinned_route.take();
        let Some(b) = conn.stmts.get(&key).copied() else {
            self.keep(conn, route);
            return Err(RouterError::UnknownStatement {
                id,
                command: "mysqld_stmt_fetch",
            }
            .into());
        };
        let mut out = payload.to_vec();
        out[1..5].copy_from_slice(&b.id.to_le_bytes());
        if conn.send_command(&out).await.is_err() {
            conn.discard();
            return Err(self.lost_pinned(None));
        }
        match relay(
            &mut conn,
            RelayMode::Rows,
            &mut self.output,
            Some(&mut self.input),
            false,
        )
        .await
        {
            Ok(_) => {
                self.pinned = Some(conn);
                Ok(())
            }
            Err(RelayError::Client(_)) => {
                conn.discard();
                Err(Failure::ClientGone)
            }
            Err(RelayError::Backend {
                forwarded,
                next_seq,
                ..
            }) => {
                conn.discard();
                Err(self.lost_pinned(forwarded.then_some(next_seq)))
            }
        }
    }
}
