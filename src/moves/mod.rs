//! Online moves of rows between clusters: a reshard (split or merge shards) or MoveTables
//! (unsharded tables into a sharded keyspace), run as workflows over the `mover` crate's
//! streams while applications keep writing through the router.
//!
//! A move's life: `create` (plan against the shard map, prepare and start one stream per
//! target shard and source: copy, then follow) → `diff` (required clean) → `switch-writes`
//! (the cutover, [`cutover`]) → `complete` (stop the streams, delete the moved rows from the
//! old places), or `reverse` after a switch (writes back to the old places) and `cancel`
//! before one (streams stopped, target tables dropped).
//!
//! Records are kept in `state_dir/moves.json` (rewritten whole at every change); the streams'
//! own progress is on their targets, so a restarted process starts the streams again where
//! they were.

pub mod cli;
mod cutover;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mover::diff::DiffReport;
use mover::plan::{MoveRequest, PlannedStream};
use mover::stream::{self, StreamHandle, StreamSpec, StreamStatus};
use mover::Endpoint;
use orchestrator::Orchestrator;
use router::config::Secret;
use router::RouterContext;
use serde::{Deserialize, Serialize};
use shard_map::{ShardMap, TopologyHandle};

use crate::admin::ShardMapState;

pub use cutover::CutoverReport;

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveState {
    /// Streams copy and follow the old places; writes go there.
    Streaming,
    /// Writes go to the new places; streams carry them back to the old ones.
    Switched,
    /// The moved rows are gone from the old places; the streams are stopped.
    Completed,
    /// Stopped before any switch; the target tables are dropped.
    Cancelled,
}

/// One stream of a move, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub name: String,
    pub server_id: u32,
    #[serde(flatten)]
    pub planned: PlannedStream,
}

impl StreamRecord {
    /// The stream `planned` named `name`, reading binary logs as the replica id that name
    /// gives.
    fn named(name: String, planned: PlannedStream) -> StreamRecord {
        StreamRecord {
            server_id: server_id(&name),
            name,
            planned,
        }
    }
}

/// Something that happened to a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveEvent {
    pub at_ms: u64,
    pub message: String,
}

/// A move as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRecord {
    pub name: String,
    pub request: MoveRequest,
    pub state: MoveState,
    /// The streams running now (copying and following, or following back).
    pub streams: Vec<StreamRecord>,
    /// The streams of the move's first direction (old places to new): their copy progress.
    pub copy_streams: Vec<StreamRecord>,
    /// The shard map before the move and once it is switched.
    pub map_before: ShardMap,
    pub map_after: ShardMap,
    pub created_ms: u64,
    /// When the last diff found both sides equal (none since a switch).
    pub clean_diff_ms: Option<u64>,
    pub cutovers: Vec<CutoverReport>,
    pub events: Vec<MoveEvent>,
}

/// One running stream for the metrics: move, stream, status, transactions behind its source.
pub type StreamProgress = (String, String, StreamStatus, Option<u64>);

/// Bounds and pacing of moves.
#[derive(Debug, Clone)]
pub struct MoveSettings {
    /// How long in-flight statements on a held source may take to finish before they are
    /// killed.
    pub drain: Duration,
    /// How long the streams may take to reach the stop position while writes are held.
    pub catch_up: Duration,
    /// How far streams must be (caught up with the source) before writes are held.
    pub pre_catch_up: Duration,
    pub chunk_rows: usize,
    /// Rows deleted per statement when `complete` clears the old places.
    pub delete_batch: usize,
}

impl Default for MoveSettings {
    fn default() -> Self {
        MoveSettings {
            drain: Duration::from_millis(1000),
            catch_up: Duration::from_millis(2000),
            pre_catch_up: Duration::from_secs(30),
            chunk_rows: 1000,
            delete_batch: 500,
        }
    }
}

/// Why a move action failed; the front ends map it to a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("no move named {0:?}")]
    Unknown(String),
    /// The request or the current state does not allow it; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// It failed part-way; the message says what was undone.
    #[error("{0}")]
    Failed(String),
}

/// Every move of this process.
pub struct Moves {
    topology: TopologyHandle,
    orchestrator: Arc<Orchestrator>,
    router: Arc<RouterContext>,
    shard_maps: Arc<ShardMapState>,
    user: String,
    password: Secret,
    file: Option<PathBuf>,
    settings: MoveSettings,
    records: Mutex<BTreeMap<String, MoveRecord>>,
    running: Mutex<HashMap<String, Arc<StreamHandle>>>,
    /// One action at a time (a cutover is bounded; statuses do not wait on it).
    action: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Moves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moves")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replica id a stream reads binary logs as: unique per stream name, far from the ids
/// servers use.
fn server_id(name: &str) -> u32 {
    // FNV-1a: stable across builds (the id is seen by the source as a replica's).
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    2_000_000_000 + h % 1_000_000_000
}

impl Moves {
    /// The moves kept in `state_dir` (their streams started again), or none.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        topology: TopologyHandle,
        orchestrator: Arc<Orchestrator>,
        router: Arc<RouterContext>,
        shard_maps: Arc<ShardMapState>,
        user: String,
        password: Secret,
        state_dir: Option<&std::path::Path>,
        settings: MoveSettings,
    ) -> anyhow::Result<Arc<Moves>> {
        let file = state_dir.map(|d| d.join("moves.json"));
        let records: BTreeMap<String, MoveRecord> = match &file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)?;
                serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: not a moves file: {e}", f.display()))?
            }
            _ => BTreeMap::new(),
        };
        let moves = Arc::new(Moves {
            topology,
            orchestrator,
            router,
            shard_maps,
            user,
            password,
            file,
            settings,
            records: Mutex::new(records),
            running: Mutex::new(HashMap::new()),
            action: tokio::sync::Mutex::new(()),
        });
        let active: Vec<MoveRecord> = moves
            .lock_records()
            .values()
            .filter(|r| matches!(r.state, MoveState::Streaming | MoveState::Switched))
            .cloned()
            .collect();
        for r in active {
            for s in &r.streams {
                moves.start_stream(s);
            }
        }
        Ok(moves)
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MoveRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StreamHandle>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current leader of `cluster` as the mover's endpoint.
    fn endpoint(&self, cluster: &str) -> Option<Endpoint> {
        endpoint_of(&self.topology, cluster, &self.user, &self.password)
    }

    fn endpoint_now(&self, cluster: &str) -> Result<Endpoint, MoveError> {
        self.endpoint(cluster)
            .ok_or_else(|| MoveError::Refused(format!("cluster {cluster} has no leader now")))
    }

    fn locate(&self, cluster: &str) -> stream::Locate {
        let topology = self.topology.clone();
        let (cluster, user, password) =
            (cluster.to_owned(), self.user.clone(), self.password.clone());
        Arc::new(move || endpoint_of(&topology, &cluster, &user, &password))
    }

    fn spec(&self, s: &StreamRecord) -> StreamSpec {
        let mut spec = StreamSpec::new(
            s.name.clone(),
            s.server_id,
            &s.planned.source_db,
            &s.planned.target_db,
        );
        spec.tables = s.planned.tables.clone();
        spec.chunk_rows = self.settings.chunk_rows;
        spec
    }

    fn start_stream(&self, s: &StreamRecord) {
        let h = stream::start(
            self.spec(s),
            self.locate(&s.planned.source_cluster),
            self.locate(&s.planned.target_cluster),
        );
        self.lock_running().insert(s.name.clone(), Arc::new(h));
    }

    async fn stop_stream(&self, name: &str) {
        let h = self.lock_running().remove(name);
        if let Some(h) = h {
            match Arc::try_unwrap(h) {
                Ok(h) => h.stop(Duration::from_secs(10)).await,
                Err(shared) => drop(shared),
            }
        }
    }

    fn handle(&self, name: &str) -> Option<Arc<StreamHandle>> {
        self.lock_running().get(name).cloned()
    }

    fn save(&self) -> Result<(), MoveError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text =
            serde_json::to_string_pretty(&*self.lock_records()).expect("move records serialise");
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, file))
            .map_err(|e| MoveError::Failed(format!("saving {}: {e}", file.display())))
    }

    fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut MoveRecord),
    ) -> Result<MoveRecord, MoveError> {
        let r = {
            let mut records = self.lock_records();
            let r = records
                .get_mut(name)
                .ok_or_else(|| MoveError::Unknown(name.to_owned()))?;
            change(r);
            r.clone()
        };
        self.save()?;
        Ok(r)
    }

    fn event(&self, name: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(r#move = name, %message, "move event");
        let _ = self.update(name, |r| {
            r.events.push(MoveEvent {
                at_ms: now_ms(),
                message,
            });
            let n = r.events.len();
            if n > 200 {
                r.events.drain(..n - 200);
            }
        });
    }

    fn record(&self, name: &str) -> Result<MoveRecord, MoveError> {
        self.lock_records()
            .get(name)
            .cloned()
            .ok_or_else(|| MoveError::Unknown(name.to_owned()))
    }

    /// Plans and starts a move.
    pub async fn create(
        &self,
        name: &str,
        request: MoveRequest,
    ) -> Result<serde_json::Value, MoveError> {
        let _action = self.action.lock().await;
        if self.shard_maps.in_etcd() {
            return Err(MoveError::Refused(
                "moves run in the single-process mode for now; with several processes over \
                 etcd, the routers' switch to the new shard map is not yet ordered with the \
                 release of the hold"
                    .into(),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(MoveError::Refused(
                "a move's name is letters, digits, `-` and `_`".into(),
            ));
        }
        let keyspace = keyspace_of(&request).to_owned();
        {
            let records = self.lock_records();
            if let Some(r) = records.get(name) {
                if matches!(r.state, MoveState::Streaming | MoveState::Switched) {
                    return Err(MoveError::Refused(format!(
                        "move {name} exists and is active"
                    )));
                }
            }
            if let Some(r) = records.values().find(|r| {
                keyspace_of(&r.request) == keyspace
                    && matches!(r.state, MoveState::Streaming | MoveState::Switched)
            }) {
                return Err(MoveError::Refused(format!(
                    "move {} is active on keyspace {keyspace}: complete or cancel it first",
                    r.name
                )));
            }
        }
        let before = (**self.router.shard_map.load()).clone();
        let clusters: Vec<&str> = self
            .shard_maps
            .clusters()
            .iter()
            .map(String::as_str)
            .collect();
        let plan = mover::plan::plan(&before, &clusters, &request)
            .map_err(|e| MoveError::Refused(e.to_string()))?;
        // Tables the shard map names but no source holds have nothing to move.
        let mut planned = plan.streams.clone();
        let mut absent = Vec::new();
        for p in planned.iter_mut() {
            let source = self.endpoint_now(&p.source_cluster)?;
            let present = existing_tables(&source, &p.source_db).await?;
            p.tables.retain(|t| {
                let keep = present.contains(&t.table);
                if !keep {
                    absent.push(format!("{}/{}.{}", p.source_cluster, p.source_db, t.table));
                }
                keep
            });
        }
        let streams: Vec<StreamRecord> = planned
            .iter()
            .map(|p| {
                StreamRecord::named(
                    format!("{name}.{}.{}", p.target_shard, p.source_cluster),
                    p.clone(),
                )
            })
            .collect();
        let mut prepared = Vec::new();
        for s in &streams {
            let source = self.endpoint_now(&s.planned.source_cluster)?;
            let target = self.endpoint_now(&s.planned.target_cluster)?;
            if let Err(e) = stream::prepare(&self.spec(s), &source, &target).await {
                for p in &prepared {
                    self.forget(p).await;
                }
                return Err(MoveError::Refused(format!("stream {}: {e}", s.name)));
            }
            prepared.push(s.clone());
        }
        let record = MoveRecord {
            name: name.to_owned(),
            request,
            state: MoveState::Streaming,
            streams: streams.clone(),
            copy_streams: streams.clone(),
            map_before: before,
            map_after: plan.after,
            created_ms: now_ms(),
            clean_diff_ms: None,
            cutovers: Vec::new(),
            events: vec![MoveEvent {
                at_ms: now_ms(),
                message: format!(
                    "created: {} streams{}",
                    streams.len(),
                    if absent.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; not moved, as no source holds them: {}",
                            absent.join(", ")
                        )
                    }
                ),
            }],
        };
        self.lock_records().insert(name.to_owned(), record);
        self.save()?;
        for s in &streams {
            self.start_stream(s);
        }
        self.status(name)
    }

    /// Forgets a stream's state on its target (best effort: a stream that is not there is
    /// already forgotten).
    async fn forget(&self, s: &StreamRecord) {
        if let Some(target) = self.endpoint(&s.planned.target_cluster) {
            if let Err(e) = stream::forget(&s.name, &target).await {
                tracing::warn!(stream = %s.name, error = %e, "could not delete the stream's state");
            }
        }
    }

    /// Every move's status.
    pub fn list(&self) -> serde_json::Value {
        let names: Vec<String> = self.lock_records().keys().cloned().collect();
        let moves: Vec<serde_json::Value> =
            names.iter().filter_map(|n| self.status(n).ok()).collect();
        serde_json::json!({ "moves": moves })
    }

    /// Every running stream's progress (move, stream, status, transactions behind its
    /// source), and each move's last cutover pause: for the metrics.
    pub fn progress(&self) -> (Vec<StreamProgress>, Vec<(String, u64)>) {
        let records: Vec<MoveRecord> = self.lock_records().values().cloned().collect();
        let topo = self.topology.load();
        let mut streams = Vec::new();
        let mut pauses = Vec::new();
        for r in &records {
            if let Some(c) = r.cutovers.last() {
                pauses.push((r.name.clone(), c.pause_ms));
            }
            if !matches!(r.state, MoveState::Streaming | MoveState::Switched) {
                continue;
            }
            for s in &r.streams {
                let Some(h) = self.handle(&s.name) else {
                    continue;
                };
                let st = h.status();
                let b = behind_source(&topo, s, &st);
                streams.push((r.name.clone(), s.name.clone(), st, b));
            }
        }
        (streams, pauses)
    }

    /// A move's record with its streams' progress.
    pub fn status(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        let r = self.record(name)?;
        let topo = self.topology.load();
        let streams: Vec<serde_json::Value> = r
            .streams
            .iter()
            .map(|s| {
                let status: Option<StreamStatus> = self.handle(&s.name).map(|h| h.status());
                let behind = status.as_ref().and_then(|st| behind_source(&topo, s, st));
                serde_json::json!({
                    "name": s.name,
                    "source": format!("{}/{}", s.planned.source_cluster, s.planned.source_db),
                    "target": format!("{}/{}", s.planned.target_cluster, s.planned.target_db),
                    "target_shard": s.planned.target_shard,
                    "tables": s.planned.tables,
                    "status": status,
                    "behind_transactions": behind,
                })
            })
            .collect();
        let copied = r
            .streams
            .iter()
            .all(|s| self.handle(&s.name).is_some_and(|h| h.status().copied));
        Ok(serde_json::json!({
            "name": r.name,
            "request": r.request,
            "state": r.state,
            "copied": copied,
            "streams": streams,
            "clean_diff_ms": r.clean_diff_ms,
            "cutovers": r.cutovers,
            "changes": shard_map::diff(&r.map_before, &r.map_after),
            "created_ms": r.created_ms,
            "events": r.events,
        }))
    }

    /// Compares every running stream's source and target at one consistent position.
    pub async fn diff(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        let _action = self.action.lock().await;
        let r = self.record(name)?;
        if !matches!(r.state, MoveState::Streaming | MoveState::Switched) {
            return Err(MoveError::Refused(format!("move {name} is not active")));
        }
        let mut reports: Vec<(String, DiffReport)> = Vec::new();
        for s in &r.streams {
            let h = self
                .handle(&s.name)
                .ok_or_else(|| MoveError::Failed(format!("stream {} is not running", s.name)))?;
            let report = h
                .diff(Duration::from_secs(600))
                .await
                .map_err(|e| MoveError::Refused(format!("stream {}: {e}", s.name)))?;
            reports.push((s.name.clone(), report));
        }
        let clean = reports.iter().all(|(_, d)| d.is_clean());
        let at = now_ms();
        self.update(name, |r| r.clean_diff_ms = clean.then_some(at))?;
        self.event(
            name,
            if clean {
                "diff: source and target hold the same rows".to_owned()
            } else {
                "diff: differences found (see the report)".to_owned()
            },
        );
        let reports: Vec<serde_json::Value> = reports
            .into_iter()
            .map(|(n, d)| serde_json::json!({ "stream": n, "report": d }))
            .collect();
        Ok(serde_json::json!({ "clean": clean, "streams": reports }))
    }

    /// Deletes the moved rows from the old places and stops the streams.
    pub async fn complete(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        let _action = self.action.lock().await;
        let r = self.record(name)?;
        if r.state != MoveState::Switched {
            return Err(MoveError::Refused(format!(
                "move {name} completes once its writes are switched to the new places (it is {:?})",
                r.state
            )));
        }
        for s in &r.streams {
            self.stop_stream(&s.name).await;
            self.forget(s).await;
        }
        for s in &r.copy_streams {
            self.forget(s).await;
        }
        // The old places: every (cluster, database) a copy stream read from, with its tables.
        let mut old: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for s in &r.copy_streams {
            let tables = old
                .entry((
                    s.planned.source_cluster.clone(),
                    s.planned.source_db.clone(),
                ))
                .or_default();
            for t in &s.planned.tables {
                if !tables.contains(&t.table) {
                    tables.push(t.table.clone());
                }
            }
        }
        let mut deleted = 0u64;
        for ((cluster, db), tables) in &old {
            for t in tables {
                deleted += self.delete_all(cluster, db, t).await?;
            }
        }
        self.update(name, |r| r.state = MoveState::Completed)?;
        self.event(
            name,
            format!("completed: {deleted} rows deleted from the old places"),
        );
        self.status(name)
    }

    /// Deletes every row of `db.table` on `cluster`'s leader in small batches, waiting while
    /// the cluster's replicas lag.
    async fn delete_all(&self, cluster: &str, db: &str, table: &str) -> Result<u64, MoveError> {
        use mysql_async::prelude::Queryable;
        let ep = self.endpoint_now(cluster)?;
        let fail = |e: mysql_async::Error| {
            MoveError::Failed(format!(
                "deleting the moved rows of {db}.{table} on {cluster}: {e}"
            ))
        };
        let mut c = ep.connect().await.map_err(fail)?;
        let sql = format!(
            "DELETE FROM {}.{} LIMIT {}",
            shard_map::sql::quote_ident(db),
            shard_map::sql::quote_ident(table),
            self.settings.delete_batch
        );
        let mut total = 0;
        loop {
            c.query_drop(&sql).await.map_err(fail)?;
            let n = c.affected_rows();
            total += n;
            if n == 0 {
                return Ok(total);
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while self.max_lag(cluster) > 5 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn max_lag(&self, cluster: &str) -> u64 {
        self.topology
            .load()
            .cluster(cluster)
            .map(|c| {
                c.nodes
                    .iter()
                    .filter_map(|n| n.lag_seconds)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Stops a move that has not switched: streams stopped, their state and the target
    /// tables they filled dropped.
    pub async fn cancel(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        let _action = self.action.lock().await;
        let r = self.record(name)?;
        if r.state != MoveState::Streaming {
            return Err(MoveError::Refused(format!(
                "move {name} can be cancelled only while writes go to the old places and the \
                 copy streams run (it is {:?}); switch the writes back first",
                r.state
            )));
        }
        for s in &r.streams {
            self.stop_stream(&s.name).await;
            self.forget(s).await;
        }
        for s in &r.copy_streams {
            self.drop_target_tables(s).await?;
        }
        self.update(name, |r| r.state = MoveState::Cancelled)?;
        self.event(name, "cancelled: streams stopped, target tables dropped");
        self.status(name)
    }

    async fn drop_target_tables(&self, s: &StreamRecord) -> Result<(), MoveError> {
        use mysql_async::prelude::Queryable;
        let ep = self.endpoint_now(&s.planned.target_cluster)?;
        let fail = |e: mysql_async::Error| {
            MoveError::Failed(format!("dropping the tables of stream {}: {e}", s.name))
        };
        let mut c = ep.connect().await.map_err(fail)?;
        for t in &s.planned.tables {
            c.query_drop(format!(
                "DROP TABLE IF EXISTS {}.{}",
                shard_map::sql::quote_ident(&s.planned.target_db),
                shard_map::sql::quote_ident(&t.table)
            ))
            .await
            .map_err(fail)?;
        }
        Ok(())
    }

    /// Stops every stream (the process stops; they resume at the next start).
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.lock_running().keys().cloned().collect();
        for n in names {
            self.stop_stream(&n).await;
        }
    }
}

/// The tables of `db` on `ep`'s server.
async fn existing_tables(
    ep: &Endpoint,
    db: &str,
) -> Result<std::collections::BTreeSet<String>, MoveError> {
    use mysql_async::prelude::Queryable;
    let fail = |e: mysql_async::Error| {
        MoveError::Failed(format!("listing the tables of {db} on {}: {e}", ep.addr))
    };
    let mut c = ep.connect().await.map_err(fail)?;
    let names: Vec<String> = c
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(fail)?;
    Ok(names.into_iter().collect())
}

fn keyspace_of(r: &MoveRequest) -> &str {
    match r {
        MoveRequest::Reshard { keyspace, .. } | MoveRequest::MoveTables { keyspace, .. } => {
            keyspace
        }
    }
}

fn endpoint_of(
    topology: &TopologyHandle,
    cluster: &str,
    user: &str,
    password: &Secret,
) -> Option<Endpoint> {
    let topo = topology.load();
    let leader = topo.cluster(cluster)?.leader.clone()?;
    Some(Endpoint {
        addr: leader,
        user: user.to_owned(),
        password: password.expose().to_string(),
        timeout: Duration::from_secs(5),
    })
}

/// How many transactions stream `s` is behind its source's leader, as the monitor last saw
/// the leader's position.
fn behind_source(topo: &shard_map::Topology, s: &StreamRecord, st: &StreamStatus) -> Option<u64> {
    let head = topo
        .cluster(&s.planned.source_cluster)
        .and_then(|c| c.leader.as_deref().and_then(|l| c.node(l)))?;
    behind(&st.pos, &head.gtid_binlog_pos)
}

/// How many transactions `pos` is behind `head` (summed over domains); `None` if either is
/// not a position.
fn behind(pos: &str, head: &str) -> Option<u64> {
    let pos = shard_map::gtid::GtidPos::parse(pos).ok()?;
    let head = shard_map::gtid::GtidPos::parse(head).ok()?;
    Some(
        head.iter()
            .map(|g| g.seq.saturating_sub(pos.seq(g.domain)))
            .sum(),
    )
}
