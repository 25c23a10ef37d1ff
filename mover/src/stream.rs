//! One stream: the rows of some tables of a source database that one target owns, copied
//! from consistent snapshots and then followed through the source's binary log, applied
//! exactly once (see [`crate::state`]).
//!
//! # Copy and catch-up (the order that makes them exact)
//! Each copy cycle opens a snapshot on the source (`START TRANSACTION WITH CONSISTENT
//! SNAPSHOT`) and reads the snapshot's own binary log position (`binlog_snapshot_file` /
//! `_position` through `BINLOG_GTID_POS`). The stream then applies the source's transactions
//! exactly up to that position (never past it: it reads one transaction at a time), so the
//! target holds the source's rows *as of the snapshot* for every key the copy has reached.
//! Chunks of the next keys are then read from the snapshot and written, each with the copy's
//! new last key and that position in one target transaction. While a table is being copied,
//! the stream applies changes only to keys up to its last copied key: later keys come with
//! the copy, from a newer snapshot.
//!
//! # XA transactions
//! The first phase of an XA transaction is held in memory and applied at its `XA COMMIT`; the
//! saved `resume` position stays before it until then. The first snapshot makes sure no XA
//! transaction prepared before the stream's start is committed after it: the stream starts
//! reading at a position older than every transaction still prepared when the snapshot is
//! taken.
//!
//! # Bounds
//! Every connection, statement batch and read has a bound; a transient failure (a lost
//! connection, a failover on either side, silence) drops everything and starts again from the
//! saved state on the current leaders. A change the stream cannot follow (a DDL on a moving
//! table, rows the target disagrees about) stops it with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};
use serde::{Deserialize, Serialize};
use shard_map::gtid::{Gtid, GtidPos};
use shard_map::vindex::{Vindex, VindexKind};
use shard_map::KeyRange;
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::Table;
use crate::binlog::{BinlogReader, Body, Item, RowChange, Statement, Txn};
use crate::diff::{self, DiffReport};
use crate::error::MoverError;
use crate::schema::{self, TableSchema};
use crate::sql::qualified;
use crate::state::{self, Saved, TableCopy};
use crate::value::RowFilter;
use crate::Endpoint;

/// Which rows of a table a target owns, by column name: every row, or those whose column's
/// keyspace id (through the `hash` or `numeric` vindex) falls in `range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rows")]
pub enum FilterSpec {
    All,
    Range {
        column: String,
        vindex: VindexKind,
        #[serde(with = "range_name")]
        range: KeyRange,
    },
}

mod range_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use shard_map::KeyRange;

    pub fn serialize<S: Serializer>(r: &KeyRange, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&r.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyRange, D::Error> {
        KeyRange::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A moving table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMove {
    pub table: String,
    pub filter: FilterSpec,
}

/// What a stream moves, and how.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Unique on its target (the state row's key).
    pub name: String,
    /// The replica server id the stream reads the binary log as; unique per source cluster.
    pub server_id: u32,
    pub source_db: String,
    pub target_db: String,
    pub tables: Vec<TableMove>,
    /// Rows read per copied chunk.
    pub chunk_rows: usize,
    /// How long one snapshot is copied from before the stream catches up again.
    pub copy_cycle: Duration,
    /// The source's heartbeat period; three missed ones end a connection.
    pub heartbeat: Duration,
    /// The bound on each step against a server (connect, one transaction, one chunk).
    pub step_timeout: Duration,
}

impl StreamSpec {
    /// A spec with the default pacing.
    pub fn new(name: impl Into<String>, server_id: u32, source_db: &str, target_db: &str) -> Self {
        StreamSpec {
            name: name.into(),
            server_id,
            source_db: source_db.to_owned(),
            target_db: target_db.to_owned(),
            tables: Vec::new(),
            chunk_rows: 1000,
            copy_cycle: Duration::from_secs(10),
            heartbeat: Duration::from_millis(500),
            step_timeout: Duration::from_secs(30),
        }
    }

    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.table.clone()).collect()
    }
}

/// At most this many source transactions are applied in one target transaction.
const BATCH: usize = 200;

/// Where a stream's source or target leader is now (`None`: no leader at the moment).
pub type Locate = Arc<dyn Fn() -> Option<Endpoint> + Send + Sync>;

/// Where a stream is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    Starting,
    Copying {
        table: String,
    },
    Running,
    /// A transient failure; it starts again from its saved state.
    Retrying {
        error: String,
    },
    /// Stopped by a change it cannot follow; an operator decides.
    Failed {
        error: String,
    },
    Stopped,
}

/// A stream's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    #[serde(flatten)]
    pub phase: Phase,
    /// The source position applied through.
    pub pos: String,
    /// Every table copied.
    pub copied: bool,
    pub rows_copied: u64,
    pub txns_applied: u64,
    pub rows_applied: u64,
    /// Restarts after transient failures.
    pub retries: u64,
}

enum Command {
    Diff(oneshot::Sender<Result<DiffReport, MoverError>>),
    Stop,
}

/// Checks the preconditions of `spec` and prepares its target: the source streams row-based
/// with full images and metadata, every table has a usable primary key and its filter
/// column, the target tables exist empty, the state row is new. Nothing is changed on the
/// target unless everything checks.
pub async fn prepare(
    spec: &StreamSpec,
    source: &Endpoint,
    target: &Endpoint,
) -> Result<(), MoverError> {
    let (mut src, mut tgt) = checked(spec, source, target, false).await?;
    for t in &spec.tables {
        schema::create_target_table(
            &mut src,
            &mut tgt,
            &spec.source_db,
            &spec.target_db,
            &t.table,
        )
        .await?;
    }
    state::create(&mut tgt, &spec.name).await
}

/// Prepares a stream that copies nothing and will follow the source from a position given
/// later ([`set_position`]): a reverse stream, prepared before a cutover and positioned
/// during it, when the source (the former target) and the target (the former source) hold
/// the same rows. The target's tables must exist. A leftover state of that name (an earlier
/// cutover that did not finish) is replaced.
pub async fn prepare_following(
    spec: &StreamSpec,
    source: &Endpoint,
    target: &Endpoint,
) -> Result<(), MoverError> {
    forget(&spec.name, target).await?;
    let (_, mut tgt) = checked(spec, source, target, true).await?;
    state::create(&mut tgt, &spec.name).await?;
    let saved = Saved {
        pos: GtidPos::default(),
        resume: GtidPos::default(),
        copy: spec
            .tables
            .iter()
            .map(|t| (t.table.clone(), TableCopy::Done { rows: 0 }))
            .collect(),
    };
    state::save(&mut tgt, &spec.name, &saved).await
}

/// Sets where a stream prepared with [`prepare_following`] starts reading.
pub async fn set_position(name: &str, target: &Endpoint, from: &GtidPos) -> Result<(), MoverError> {
    let mut tgt = target
        .connect()
        .await
        .map_err(|e| MoverError::sql("connecting", e))?;
    let mut saved = state::load(&mut tgt, name)
        .await?
        .ok_or_else(|| MoverError::State(format!("stream {name} is not prepared")))?;
    saved.pos = from.clone();
    saved.resume = from.clone();
    state::save(&mut tgt, name, &saved).await
}

/// Connects to both sides and checks what every stream needs: the source's binary log
/// settings, its tables' keys and filter columns (and, with `targets_exist`, the target's
/// tables), the state table on the target without a stream of that name.
async fn checked(
    spec: &StreamSpec,
    source: &Endpoint,
    target: &Endpoint,
    targets_exist: bool,
) -> Result<(Conn, Conn), MoverError> {
    let what = |e| MoverError::sql("connecting", e);
    let mut src = source.connect().await.map_err(what)?;
    let mut tgt = target.connect().await.map_err(what)?;
    schema::check_source(&mut src, &source.addr).await?;
    for t in &spec.tables {
        let s = TableSchema::load(&mut src, &spec.source_db, &t.table).await?;
        resolve(&s, &t.filter)?;
        if targets_exist {
            TableSchema::load(&mut tgt, &spec.target_db, &t.table).await?;
        }
    }
    state::ensure_table(&mut tgt).await?;
    if state::load(&mut tgt, &spec.name).await?.is_some() {
        return Err(MoverError::Refused(format!(
            "stream {} already exists on {}",
            spec.name, target.addr
        )));
    }
    Ok((src, tgt))
}

/// Forgets a stream's state on its target (after `complete` or `cancel`).
pub async fn forget(name: &str, target: &Endpoint) -> Result<(), MoverError> {
    let mut tgt = target
        .connect()
        .await
        .map_err(|e| MoverError::sql("connecting", e))?;
    state::ensure_table(&mut tgt).await?;
    state::delete(&mut tgt, name).await
}

fn resolve(schema: &TableSchema, filter: &FilterSpec) -> Result<RowFilter, MoverError> {
    Ok(match filter {
        FilterSpec::All => RowFilter::All,
        FilterSpec::Range {
            column,
            vindex,
            range,
        } => RowFilter::Range {
            column: schema.column(column).ok_or_else(|| {
                MoverError::Refused(format!(
                    "table {} has no column {column} to shard by",
                    schema.name
                ))
            })?,
            vindex: match vindex {
                VindexKind::Hash => Vindex::Hash,
                VindexKind::Numeric => Vindex::Numeric,
                VindexKind::List => {
                    return Err(MoverError::Refused(format!(
                        "table {}: the list vindex names shards, not key ranges; a stream \
                         filters by hash or numeric",
                        schema.name
                    )))
                }
            },
            range: *range,
        },
    })
}

/// A running stream.
pub struct StreamHandle {
    status: watch::Receiver<StreamStatus>,
    cmds: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// Starts a prepared stream (or resumes one from its saved state).
pub fn start(spec: StreamSpec, source: Locate, target: Locate) -> StreamHandle {
    let (status_tx, status) = watch::channel(StreamStatus {
        phase: Phase::Starting,
        pos: String::new(),
        copied: false,
        rows_copied: 0,
        txns_applied: 0,
        rows_applied: 0,
        retries: 0,
    });
    let (cmds_tx, cmds) = mpsc::channel(8);
    let worker = Worker {
        spec,
        source,
        target,
        status: status_tx,
        cmds,
    };
    StreamHandle {
        status,
        cmds: cmds_tx,
        task: tokio::spawn(worker.run()),
    }
}

impl StreamHandle {
    pub fn status(&self) -> StreamStatus {
        self.status.borrow().clone()
    }

    /// Waits (at most `timeout`) until the status satisfies `ok`; a failed stream ends the
    /// wait with its error.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&StreamStatus) -> bool,
    ) -> Result<StreamStatus, MoverError> {
        let mut rx = self.status.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if ok(&s) {
                        return Ok(s.clone());
                    }
                    if let Phase::Failed { error } = &s.phase {
                        return Err(MoverError::State(format!("the stream failed: {error}")));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(MoverError::State("the stream ended".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            MoverError::Timeout(format!(
                "waiting for the stream to be {what} (it is {:?})",
                *self.status.borrow()
            ))
        })?
    }

    /// Waits until the stream has applied the source through `pos`.
    pub async fn wait_for_pos(&self, pos: &GtidPos, timeout: Duration) -> Result<(), MoverError> {
        let want = pos.clone();
        self.wait_until(timeout, &format!("at {pos}"), move |s| {
            GtidPos::parse(&s.pos).is_ok_and(|p| reached(&p, &want))
        })
        .await
        .map(|_| ())
    }

    /// Compares the source's rows with the target's at one consistent position.
    pub async fn diff(&self, timeout: Duration) -> Result<DiffReport, MoverError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Diff(tx))
            .await
            .map_err(|_| MoverError::State("the stream ended".into()))?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| MoverError::Timeout("diff".into()))?
            .map_err(|_| MoverError::State("the stream ended during the diff".into()))?
    }

    /// Stops the stream (at a transaction boundary) and waits for it, at most `timeout`;
    /// past that the task is aborted (its state is saved per transaction, so nothing is lost).
    pub async fn stop(mut self, timeout: Duration) {
        let _ = self.cmds.try_send(Command::Stop);
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `pos` has reached `want` in every domain `want` names.
pub fn reached(pos: &GtidPos, want: &GtidPos) -> bool {
    want.iter().all(|g| pos.seq(g.domain) >= g.seq)
}

struct Worker {
    spec: StreamSpec,
    source: Locate,
    target: Locate,
    status: watch::Sender<StreamStatus>,
    cmds: mpsc::Receiver<Command>,
}

/// How a session ended without an error.
enum End {
    Stopped,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let error = match self.session().await {
                Ok(End::Stopped) => break,
                Err(e) => e,
            };
            if !error.is_transient() {
                tracing::error!(stream = %self.spec.name, %error, "stream stopped");
                self.status.send_modify(|s| {
                    s.phase = Phase::Failed {
                        error: error.to_string(),
                    }
                });
                // Answer commands until told to stop.
                while let Some(c) = self.cmds.recv().await {
                    match c {
                        Command::Diff(reply) => {
                            let _ = reply.send(Err(MoverError::State(format!(
                                "the stream failed: {error}"
                            ))));
                        }
                        Command::Stop => break,
                    }
                }
                break;
            }
            tracing::warn!(stream = %self.spec.name, %error, "stream restarts");
            self.status.send_modify(|s| {
                s.phase = Phase::Retrying {
                    error: error.to_string(),
                };
                s.retries += 1;
            });
            // Back off a second, still answering commands.
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                match tokio::time::timeout_at(until, self.cmds.recv()).await {
                    Err(_) => break,
                    Ok(None) | Ok(Some(Command::Stop)) => {
                        self.status.send_modify(|s| s.phase = Phase::Stopped);
                        return;
                    }
                    Ok(Some(Command::Diff(reply))) => {
                        let _ = reply.send(Err(MoverError::State(format!(
                            "the stream is reconnecting: {error}"
                        ))));
                    }
                }
            }
        }
        self.status.send_modify(|s| s.phase = Phase::Stopped);
    }

    async fn session(&mut self) -> Result<End, MoverError> {
        let mut s = Session::connect(self).await?;
        self.status.send_modify(|st| {
            st.pos = s.saved.pos.to_string();
            st.rows_copied = s.saved.rows_copied();
            st.copied = s.saved.copied(&self.spec.table_names());
        });
        while !s.saved.copied(&self.spec.table_names()) {
            if let Some(end) = self.commands(&mut s, false).await? {
                return Ok(end);
            }
            s.copy_cycle(self).await?;
        }
        self.status.send_modify(|st| {
            st.phase = Phase::Running;
            st.copied = true;
        });
        if s.reader.is_none() {
            s.open_reader(self).await?;
        }
        loop {
            if let Some(end) = self.commands(&mut s, true).await? {
                return Ok(end);
            }
            s.step(self, None).await?;
        }
    }

    /// Handles waiting commands; `Some` ends the session.
    async fn commands(&mut self, s: &mut Session, copied: bool) -> Result<Option<End>, MoverError> {
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Command::Stop => {
                    s.flush(self).await?;
                    return Ok(Some(End::Stopped));
                }
                Command::Diff(reply) => {
                    if !copied {
                        let _ = reply.send(Err(MoverError::Refused(
                            "the copy is not finished; diff after it".into(),
                        )));
                        continue;
                    }
                    match s.diff(self).await {
                        Ok(r) => {
                            let _ = reply.send(Ok(r));
                        }
                        Err(e) if e.is_transient() => {
                            let _ = reply.send(Err(MoverError::State(format!(
                                "the diff was interrupted: {e}"
                            ))));
                            return Err(e);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(MoverError::State(e.to_string())));
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

/// An XA transaction whose first phase was read and whose outcome was not yet.
struct PendingXa {
    xid: String,
    /// Where reading must start again to see its first phase.
    before: GtidPos,
    rows: Vec<RowChange>,
}

/// One connected attempt: target connection, schemas, binlog reader, in-memory state.
struct Session {
    tgt: Conn,
    /// The leaders this session works with: when either moves, the session ends and the
    /// next one starts on the new leaders.
    source_addr: String,
    target_addr: String,
    tables: HashMap<String, Table>,
    reader: Option<BinlogReader>,
    saved: Saved,
    /// The position of the last transaction read (may be behind `saved.pos` while re-reading
    /// from `resume`).
    read: GtidPos,
    xa: Vec<PendingXa>,
    /// `saved.pos` moved without being saved (transactions the target has no rows of).
    dirty: bool,
    last_save: Instant,
}

impl Session {
    async fn connect(w: &Worker) -> Result<Session, MoverError> {
        let spec = &w.spec;
        let source = (w.source)().ok_or_else(|| no_leader("source"))?;
        let target = (w.target)().ok_or_else(|| no_leader("target"))?;
        let mut src = source
            .connect()
            .await
            .map_err(|e| MoverError::sql(&format!("connecting to source {}", source.addr), e))?;
        let mut tables = HashMap::new();
        for t in &spec.tables {
            let s = TableSchema::load(&mut src, &spec.source_db, &t.table).await?;
            let filter = resolve(&s, &t.filter)?;
            tables.insert(t.table.clone(), Table::new(s, filter, &spec.target_db));
        }
        drop(src);
        let mut tgt = data_conn(&target).await?;
        let saved = state::load(&mut tgt, &spec.name).await?.ok_or_else(|| {
            MoverError::Refused(format!(
                "stream {} is not prepared on {}",
                spec.name, target.addr
            ))
        })?;
        let mut s = Session {
            tgt,
            source_addr: source.addr.clone(),
            target_addr: target.addr.clone(),
            tables,
            reader: None,
            read: saved.resume.clone(),
            saved,
            xa: Vec::new(),
            dirty: false,
            last_save: Instant::now(),
        };
        if !s.saved.pos.is_empty() {
            s.open_reader(w).await?;
        }
        Ok(s)
    }

    async fn open_reader(&mut self, w: &Worker) -> Result<(), MoverError> {
        let source = (w.source)().ok_or_else(|| no_leader("source"))?;
        let dbs = HashSet::from([w.spec.source_db.clone()]);
        self.reader = Some(
            BinlogReader::open(
                &source,
                w.spec.server_id,
                &self.saved.resume,
                dbs,
                w.spec.heartbeat,
            )
            .await?,
        );
        self.read = self.saved.resume.clone();
        Ok(())
    }

    /// Reads the next source transaction (waiting for it, or for a heartbeat), and with it
    /// those already arrived (at most [`BATCH`], never past `limit`), and applies them in
    /// one target transaction with the position after the last.
    async fn step(&mut self, w: &Worker, limit: Option<&GtidPos>) -> Result<(), MoverError> {
        for (side, locate, addr) in [
            ("source", &w.source, &self.source_addr),
            ("target", &w.target, &self.target_addr),
        ] {
            let now = locate().map(|e| e.addr);
            if now.as_ref() != Some(addr) {
                return Err(MoverError::Sql {
                    what: format!("following the {side} leader"),
                    error: format!(
                        "the leader moved from {addr} to {}",
                        now.as_deref().unwrap_or("nowhere")
                    ),
                });
            }
        }
        let reader = self.reader.as_mut().expect("reader open");
        let first = match reader.next().await? {
            Item::Idle => return self.flush(w).await,
            Item::Txn(t) => t,
        };
        let mut read = self.read.clone();
        read.advance(first.gtid);
        let mut txns = vec![first];
        // More that already arrived: `next` is cancel-safe (a transaction read in part stays
        // in the reader), so polling it once and dropping it loses nothing.
        while txns.len() < BATCH && !limit.is_some_and(|l| reached(&read, l)) {
            match futures::FutureExt::now_or_never(reader.next()) {
                Some(Ok(Item::Txn(t))) => {
                    read.advance(t.gtid);
                    txns.push(t);
                }
                Some(Ok(Item::Idle)) | None => break,
                Some(Err(e)) => return Err(e),
            }
        }
        let bound = w.spec.step_timeout;
        tokio::time::timeout(bound, self.apply_batch(w, txns))
            .await
            .map_err(|_| MoverError::Timeout("applying source transactions".into()))??;
        if self.dirty && self.last_save.elapsed() > Duration::from_secs(1) {
            self.flush(w).await?;
        }
        let pos = self.saved.pos.to_string();
        w.status.send_if_modified(|s| {
            let changed = s.pos != pos;
            s.pos = pos;
            changed
        });
        Ok(())
    }

    /// Saves a moved position that no applied transaction saved.
    async fn flush(&mut self, w: &Worker) -> Result<(), MoverError> {
        if !self.dirty {
            return Ok(());
        }
        self.resume_point();
        let save = state::save(&mut self.tgt, &w.spec.name, &self.saved);
        tokio::time::timeout(w.spec.step_timeout, save)
            .await
            .map_err(|_| MoverError::Timeout("saving the stream position".into()))??;
        self.dirty = false;
        self.last_save = Instant::now();
        Ok(())
    }

    fn resume_point(&mut self) {
        self.saved.resume = match self.xa.first() {
            Some(x) => x.before.clone(),
            None => self.saved.pos.clone(),
        };
    }

    /// What one source transaction means for the target: its rows to apply (if any),
    /// collected into `work` with its GTID; XA first phases held, outcomes matched.
    fn collect(
        &mut self,
        w: &Worker,
        t: Txn,
        work: &mut Vec<(Gtid, Vec<RowChange>)>,
    ) -> Result<(), MoverError> {
        let g = t.gtid;
        let before = self.read.clone();
        self.read.advance(g);
        // Already applied before a restart: only XA first phases matter (their rows wait for
        // an outcome that may come after the saved position).
        let done = g.seq <= self.saved.pos.seq(g.domain);
        if !done {
            self.check_statements(w, g, &t.statements)?;
        }
        let rows = match t.body {
            Body::XaPrepare { xid, rows } => {
                self.xa.push(PendingXa { xid, before, rows });
                Vec::new()
            }
            Body::XaRollback { xid } => {
                self.xa.retain(|x| x.xid != xid);
                Vec::new()
            }
            Body::XaCommit { xid } => {
                let pending = self
                    .xa
                    .iter()
                    .position(|x| x.xid == xid)
                    .map(|i| self.xa.remove(i));
                match (done, pending) {
                    (true, _) => Vec::new(),
                    (false, Some(p)) => p.rows,
                    (false, None) => {
                        return Err(MoverError::Stopped {
                            gtid: g.to_string(),
                            reason: format!(
                                "XA COMMIT of {xid}, whose first phase the stream did not read"
                            ),
                        })
                    }
                }
            }
            Body::Rows(rows) => rows,
        };
        if !done {
            let relevant: Vec<RowChange> = rows
                .into_iter()
                .filter(|r| r.db == w.spec.source_db && self.tables.contains_key(&r.table))
                .collect();
            work.push((g, relevant));
        }
        Ok(())
    }

    /// Applies source transactions in one target transaction with the position after the
    /// last (or, when none has rows for the target, just moves the position).
    async fn apply_batch(&mut self, w: &Worker, txns: Vec<Txn>) -> Result<(), MoverError> {
        let mut work = Vec::new();
        for t in txns {
            self.collect(w, t, &mut work)?;
        }
        if work.iter().all(|(_, rows)| rows.is_empty()) {
            for (g, _) in &work {
                self.saved.pos.advance(*g);
                self.dirty = true;
            }
            return Ok(());
        }
        let what = |e| MoverError::apply("applying source transactions", e);
        self.tgt
            .query_drop("START TRANSACTION")
            .await
            .map_err(what)?;
        let mut written = 0u64;
        let mut applied = 0u64;
        for (g, rows) in &work {
            let mut any = false;
            for r in rows {
                let table = &self.tables[&r.table];
                let wrote = table
                    .apply(&mut self.tgt, r, self.saved.copy.get(&r.table))
                    .await
                    .map_err(|e| at(*g, e))?;
                written += u64::from(wrote);
                any |= wrote;
            }
            applied += u64::from(any);
            self.saved.pos.advance(*g);
        }
        self.resume_point();
        state::save(&mut self.tgt, &w.spec.name, &self.saved).await?;
        self.tgt.query_drop("COMMIT").await.map_err(what)?;
        self.dirty = false;
        self.last_save = Instant::now();
        w.status.send_modify(|s| {
            s.pos = self.saved.pos.to_string();
            s.txns_applied += applied;
            s.rows_applied += written;
        });
        Ok(())
    }

    /// Stops the stream before a statement logged as text that touches a moving table (a
    /// DDL, a statement-based change): following it by guess could corrupt the target.
    fn check_statements(
        &self,
        w: &Worker,
        g: Gtid,
        statements: &[Statement],
    ) -> Result<(), MoverError> {
        for st in statements {
            if let Some(reason) = touches(st, &w.spec.source_db, self.tables.keys()) {
                return Err(MoverError::Stopped {
                    gtid: g.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Applies the source up to exactly `to`.
    async fn catch_up(&mut self, w: &Worker, to: &GtidPos) -> Result<(), MoverError> {
        while !reached(&self.saved.pos, to) || !reached(&self.read, to) {
            self.step(w, Some(to)).await?;
        }
        Ok(())
    }

    /// One copy cycle: a snapshot, the stream brought exactly to it, chunks until the cycle's
    /// time is up or every table is copied.
    async fn copy_cycle(&mut self, w: &Worker) -> Result<(), MoverError> {
        let spec = &w.spec;
        let source = (w.source)().ok_or_else(|| no_leader("source"))?;
        let first = self.saved.pos.is_empty();
        let (mut snap, resume, at) =
            tokio::time::timeout(spec.step_timeout * 2, snapshot(&source, first))
                .await
                .map_err(|_| MoverError::Timeout("opening a source snapshot".into()))??;
        if first {
            self.saved.pos = at.clone();
            self.saved.resume = resume.clone();
            state::save(&mut self.tgt, &spec.name, &self.saved).await?;
            self.open_reader(w).await?;
        }
        self.catch_up(w, &at).await?;
        let deadline = Instant::now() + spec.copy_cycle;
        for name in spec.table_names() {
            while !matches!(self.saved.copy.get(&name), Some(TableCopy::Done { .. })) {
                w.status.send_modify(|s| {
                    s.phase = Phase::Copying {
                        table: name.clone(),
                    }
                });
                tokio::time::timeout(spec.step_timeout, self.chunk(w, &mut snap, &name))
                    .await
                    .map_err(|_| MoverError::Timeout(format!("copying a chunk of {name}")))??;
                if Instant::now() >= deadline {
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let _ = snap.query_drop("COMMIT").await;
        Ok(())
    }

    async fn chunk(&mut self, w: &Worker, snap: &mut Conn, name: &str) -> Result<(), MoverError> {
        let spec = &w.spec;
        let table = &self.tables[name];
        let (last, total) = match self.saved.copy.get(name) {
            Some(TableCopy::Started { last, rows }) => (Some(last.clone()), *rows),
            Some(TableCopy::Done { .. }) => return Ok(()),
            None => (None, 0),
        };
        let from = qualified(&spec.source_db, name);
        let (sql, params) = match &last {
            None => (
                format!(
                    "SELECT {} FROM {from} ORDER BY {} LIMIT {}",
                    table.schema.select_list(),
                    table.schema.key_order(),
                    spec.chunk_rows
                ),
                Vec::new(),
            ),
            Some(last) => {
                let (cond, binds) = table.schema.after_key();
                (
                    format!(
                        "SELECT {} FROM {from} WHERE {cond} ORDER BY {} LIMIT {}",
                        table.schema.select_list(),
                        table.schema.key_order(),
                        spec.chunk_rows
                    ),
                    binds.iter().map(|&j| last[j].to_value()).collect(),
                )
            }
        };
        let rows: Vec<Row> = snap
            .exec(sql, Params::from(params))
            .await
            .map_err(|e| MoverError::sql(&format!("reading a chunk of {name}"), e))?;
        let rows: Vec<Vec<Value>> = rows.into_iter().map(Row::unwrap).collect();
        let mut kept = Vec::new();
        for r in &rows {
            if table.filter.keeps(r)? {
                kept.push(r.clone());
            }
        }
        let copy = match rows.last() {
            Some(r) if rows.len() >= spec.chunk_rows => TableCopy::Started {
                last: table.key(r)?,
                rows: total + kept.len() as u64,
            },
            _ => TableCopy::Done {
                rows: total + kept.len() as u64,
            },
        };
        let what = |e| MoverError::apply(&format!("copying a chunk of {name}"), e);
        self.tgt
            .query_drop("START TRANSACTION")
            .await
            .map_err(what)?;
        table.insert_rows(&mut self.tgt, &kept).await?;
        let mut next = self.saved.clone();
        next.copy.insert(name.to_owned(), copy);
        self.resume_point();
        next.resume = self.saved.resume.clone();
        state::save(&mut self.tgt, &spec.name, &next).await?;
        self.tgt.query_drop("COMMIT").await.map_err(what)?;
        self.saved = next;
        self.dirty = false;
        let copied = self.saved.rows_copied();
        w.status.send_modify(|s| {
            s.rows_copied = copied;
            s.pos = self.saved.pos.to_string();
        });
        Ok(())
    }

    /// A diff at one consistent position: a source snapshot, the stream brought exactly to
    /// it, a target snapshot taken there; then both compared while the stream waits.
    async fn diff(&mut self, w: &Worker) -> Result<DiffReport, MoverError> {
        let spec = &w.spec;
        let source = (w.source)().ok_or_else(|| no_leader("source"))?;
        let target = (w.target)().ok_or_else(|| no_leader("target"))?;
        let (mut snap, _, at) = snapshot(&source, false).await?;
        let mut tsnap = data_conn(&target).await?;
        self.catch_up(w, &at).await?;
        self.flush(w).await?;
        tsnap
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(|e| MoverError::sql("opening a target snapshot", e))?;
        let mut report = DiffReport {
            pos: at.to_string(),
            tables: Vec::new(),
        };
        for name in spec.table_names() {
            let t = &self.tables[&name];
            report.tables.push(
                diff::compare(
                    t,
                    &mut snap,
                    &spec.source_db,
                    &mut tsnap,
                    &spec.target_db,
                    spec.chunk_rows,
                )
                .await?,
            );
        }
        let _ = snap.query_drop("COMMIT").await;
        let _ = tsnap.query_drop("COMMIT").await;
        Ok(report)
    }
}

/// An error inside a transaction, named by its GTID.
fn at(g: Gtid, e: MoverError) -> MoverError {
    match e {
        MoverError::Stopped { reason, .. } => MoverError::Stopped {
            gtid: g.to_string(),
            reason,
        },
        MoverError::Data(reason) => MoverError::Stopped {
            gtid: g.to_string(),
            reason,
        },
        other => other,
    }
}

fn no_leader(side: &str) -> MoverError {
    MoverError::Sql {
        what: format!("finding the {side} leader"),
        error: "the cluster has no leader now".into(),
    }
}

/// A connection for reading or writing rows: bytes as stored (`SET NAMES binary`), times in
/// UTC, no strict-mode rewrites of what the source holds, foreign keys not checked (the copy
/// goes table by table).
pub(crate) async fn data_conn(ep: &Endpoint) -> Result<Conn, MoverError> {
    let what = format!("connecting to {}", ep.addr);
    let mut c = ep.connect().await.map_err(|e| MoverError::sql(&what, e))?;
    for setup in [
        "SET NAMES binary, time_zone = '+00:00', \
         sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', foreign_key_checks = 0",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        c.query_drop(setup)
            .await
            .map_err(|e| MoverError::sql(&what, e))?;
    }
    Ok(c)
}

/// Opens a consistent snapshot on the source; returns it with the snapshot's own position
/// and where a new stream must start reading. For a new stream (`first`), that start is
/// older than every XA transaction still prepared at the snapshot: it is the binlog position
/// read before waiting for every transaction prepared at that time to end.
async fn snapshot(source: &Endpoint, first: bool) -> Result<(Conn, GtidPos, GtidPos), MoverError> {
    let what = |e| MoverError::sql("opening a snapshot on the source", e);
    let mut c = data_conn(source).await?;
    let mut start = GtidPos::default();
    if first {
        let pos: String = c
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .map_err(what)?
            .unwrap_or_default();
        start = GtidPos::parse(&pos).map_err(|e| MoverError::State(e.to_string()))?;
        let prepared = xa_prepared(&mut c).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = xa_prepared(&mut c).await?;
            if !now.iter().any(|x| prepared.contains(x)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(MoverError::Timeout(format!(
                    "waiting for XA transactions prepared on the source to end ({} still \
                     prepared; see XA RECOVER)",
                    now.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(what)?;
    let status: Vec<(String, String)> = c
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(what)?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| MoverError::State(format!("the source does not report {k}")))
    };
    let file = get("binlog_snapshot_file")?;
    let offset: u64 = get("binlog_snapshot_position")?
        .parse()
        .map_err(|_| MoverError::State("binlog_snapshot_position is not a number".into()))?;
    let pos: Option<String> = c
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), offset))
        .await
        .map_err(what)?;
    let pos =
        pos.ok_or_else(|| MoverError::State(format!("BINLOG_GTID_POS({file}, {offset}) is NULL")))?;
    let at = GtidPos::parse(&pos).map_err(|e| MoverError::State(e.to_string()))?;
    if !first {
        start = at.clone();
    }
    Ok((c, start, at))
}

/// The XIDs prepared on a server now (`XA RECOVER`).
async fn xa_prepared(c: &mut Conn) -> Result<Vec<Vec<u8>>, MoverError> {
    let rows: Vec<Row> = c
        .query("XA RECOVER")
        .await
        .map_err(|e| MoverError::sql("XA RECOVER on the source", e))?;
    Ok(rows
        .into_iter()
        .map(|r| match r.unwrap().pop() {
            Some(Value::Bytes(b)) => b,
            _ => Vec::new(),
        })
        .collect())
}

/// Why `st` touches a moving table of `db`, if it may. Conservative: any statement naming one
/// of the tables (with `db` as default schema or named), or dropping or altering `db` itself.
fn touches<'a>(
    st: &Statement,
    db: &str,
    tables: impl Iterator<Item = &'a String>,
) -> Option<String> {
    let words: Vec<String> = st
        .query
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let names_db = st.schema == db || words.iter().any(|w| w == db);
    if !names_db {
        return None;
    }
    let upper = st.query.trim_start().to_ascii_uppercase();
    if upper.starts_with("DROP DATABASE")
        || upper.starts_with("DROP SCHEMA")
        || upper.starts_with("ALTER DATABASE")
        || upper.starts_with("ALTER SCHEMA")
    {
        return Some(format!(
            "the source ran `{}` on the moving database",
            st.query
        ));
    }
    for t in tables {
        if words.iter().any(|w| w == t) {
            return Some(format!(
                "the source ran `{}`, which may change moving table {t}; the stream cannot \
                 follow a table's definition changing (run it on the targets too, then \
                 resume), or a statement-logged change",
                st.query
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(schema: &str, q: &str) -> Statement {
        Statement {
            schema: schema.into(),
            query: q.into(),
        }
    }

    #[test]
    fn statements_touching_moving_tables_are_found() {
        let tables = ["orders".to_owned()];
        let t = |s: &Statement| touches(s, "app", tables.iter());
        assert!(t(&st("app", "ALTER TABLE orders ADD c INT")).is_some());
        assert!(t(&st("", "ALTER TABLE `app`.`orders` ADD c INT")).is_some());
        assert!(t(&st("", "DROP DATABASE app")).is_some());
        assert!(t(&st("app", "CREATE TABLE other (id INT)")).is_none());
        assert!(t(&st("shop", "ALTER TABLE orders ADD c INT")).is_none());
    }

    #[test]
    fn reached_compares_every_domain_asked() {
        let p = GtidPos::parse("0-1-10,1-2-5").unwrap();
        assert!(reached(&p, &GtidPos::parse("0-1-10").unwrap()));
        assert!(!reached(&p, &GtidPos::parse("0-1-10,1-1-6").unwrap()));
        assert!(reached(&p, &GtidPos::default()));
    }
}
