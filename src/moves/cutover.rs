//! A move's write cutover, either way: the routers hold the clusters that take the moved
//! writes now, in-flight statements there finish (or are killed past a bound), the streams
//! reach the position those clusters stopped at, streams the other way are prepared from the
//! other side's position, the next shard map is published, the hold is released. Statements
//! held meanwhile are planned again on the new map (the router re-plans a statement whose
//! map changed while it waited, before any of it ran).
//!
//! Any failure before the map is published undoes everything: the old streams run again,
//! the new ones are forgotten, the hold is released; the map in force never changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use orchestrator::WriteHold;
use serde::{Deserialize, Serialize};
use shard_map::gtid::GtidPos;

use super::{keyspace_of, now_ms, MoveError, MoveState, Moves, StreamRecord};

/// What a cutover did and how long writes waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverReport {
    pub at_ms: u64,
    /// `forward` (to the new places) or `back`.
    pub direction: String,
    /// From the hold confirmed by every router to its release: what a held write waited.
    pub pause_ms: u64,
    /// In-flight statements finishing on the held clusters.
    pub drain_ms: u64,
    /// Statements killed because they did not finish within the drain bound.
    pub killed: u64,
    /// The streams reaching the stop positions.
    pub catch_up_ms: u64,
    /// The other way's streams positioned and the new shard map published.
    pub publish_ms: u64,
    /// Where each held cluster stopped.
    pub stop_positions: BTreeMap<String, String>,
    pub shard_map_version: u64,
}

impl Moves {
    /// Switches the writes of a streaming move to the new places (after a clean diff).
    pub async fn switch_writes(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        self.switch(name, true).await
    }

    /// Switches the writes of a switched move back to the old places.
    pub async fn switch_back(&self, name: &str) -> Result<serde_json::Value, MoveError> {
        self.switch(name, false).await
    }

    async fn switch(&self, name: &str, forward: bool) -> Result<serde_json::Value, MoveError> {
        let _action = self.action.lock().await;
        let r = self.record(name)?;
        let (want, expected_map, next_map, owner_map) = if forward {
            (
                MoveState::Streaming,
                &r.map_before,
                &r.map_after,
                &r.map_before,
            )
        } else {
            (
                MoveState::Switched,
                &r.map_after,
                &r.map_before,
                &r.map_after,
            )
        };
        if r.state != want {
            return Err(MoveError::Refused(format!(
                "move {name} is {:?}: writes can be switched {} only from {want:?}",
                r.state,
                if forward { "to the new places" } else { "back" }
            )));
        }
        let handles: Vec<_> = r
            .streams
            .iter()
            .map(|s| {
                self.handle(&s.name)
                    .ok_or_else(|| MoveError::Failed(format!("stream {} is not running", s.name)))
            })
            .collect::<Result<_, _>>()?;
        if let Some((s, h)) = r
            .streams
            .iter()
            .zip(&handles)
            .find(|(_, h)| !h.status().copied)
        {
            return Err(MoveError::Refused(format!(
                "stream {} has not finished copying ({:?})",
                s.name,
                h.status().phase
            )));
        }
        if forward && r.clean_diff_ms.is_none() {
            return Err(MoveError::Refused(format!(
                "move {name} has no clean diff since its streams started: run diff first"
            )));
        }
        let version = self.shard_maps.current();
        if **self.router.shard_map.load() != *expected_map {
            return Err(MoveError::Refused(format!(
                "the shard map in force (version {version}) is not the one move {name} \
                 expects: it changed since the move began"
            )));
        }
        // Close to the sources before anything is held, so that the held catch-up is short.
        let mut heads = BTreeMap::new();
        for s in &r.streams {
            if !heads.contains_key(&s.planned.source_cluster) {
                let head = self.binlog_pos(&s.planned.source_cluster).await?;
                heads.insert(s.planned.source_cluster.clone(), head);
            }
        }
        for (s, h) in r.streams.iter().zip(&handles) {
            h.wait_for_pos(
                &heads[&s.planned.source_cluster],
                self.settings.pre_catch_up,
            )
            .await
            .map_err(|e| MoveError::Refused(format!("stream {} is behind: {e}", s.name)))?;
        }

        // The streams the other way, prepared now (checks, state rows) and positioned under
        // the hold: from the places that take the writes next.
        let keyspace = keyspace_of(&r.request);
        let planned: Vec<_> = r.streams.iter().map(|s| s.planned.clone()).collect();
        let n = r.cutovers.len() + 1;
        let new_streams: Vec<StreamRecord> = mover::plan::mirror(&planned, owner_map, keyspace)
            .into_iter()
            .map(|p| {
                StreamRecord::named(
                    format!("{name}.{n}.{}.{}", p.target_shard, p.source_cluster),
                    p,
                )
            })
            .collect();
        for (i, s) in new_streams.iter().enumerate() {
            let step = async {
                let source = self.endpoint_now(&s.planned.source_cluster)?;
                let target = self.endpoint_now(&s.planned.target_cluster)?;
                mover::stream::prepare_following(&self.spec(s), &source, &target)
                    .await
                    .map_err(|e| MoveError::Refused(format!("preparing stream {}: {e}", s.name)))
            };
            if let Err(e) = step.await {
                for p in &new_streams[..i] {
                    self.forget(p).await;
                }
                return Err(e);
            }
        }

        let why = format!("move {name}: write cutover");
        let mut holds: Vec<WriteHold> = Vec::new();
        for cluster in heads.keys() {
            match self.orchestrator.hold_writes(cluster, &why).await {
                Ok(h) => holds.push(h),
                Err(e) => {
                    self.release(holds, "the cutover did not start").await;
                    for p in &new_streams {
                        self.forget(p).await;
                    }
                    return Err(MoveError::Refused(format!(
                        "holding writes on {cluster}: {e}"
                    )));
                }
            }
        }
        let held_at = Instant::now();
        let outcome = self
            .held_cutover(&r, &handles, &new_streams, next_map, forward, version)
            .await;
        let pause_ms = held_at.elapsed().as_millis() as u64;
        match outcome {
            Ok(mut report) => {
                self.release(holds, "cutover done").await;
                report.pause_ms = pause_ms;
                for s in &new_streams {
                    self.start_stream(s);
                }
                let old = r.streams.clone();
                self.update(name, |rec| {
                    rec.streams = new_streams.clone();
                    rec.state = if forward {
                        MoveState::Switched
                    } else {
                        MoveState::Streaming
                    };
                    rec.clean_diff_ms = None;
                    rec.cutovers.push(report.clone());
                })?;
                for s in &old {
                    self.forget(s).await;
                }
                self.event(
                    name,
                    format!(
                        "writes switched {}: paused {pause_ms} ms, shard map version {}",
                        if forward { "to the new places" } else { "back" },
                        report.shard_map_version
                    ),
                );
                self.status(name)
            }
            Err(e) => {
                for p in &new_streams {
                    self.forget(p).await;
                }
                for s in &r.streams {
                    if self.handle(&s.name).is_none() {
                        self.start_stream(s);
                    }
                }
                self.release(holds, "cutover undone").await;
                self.event(name, format!("cutover undone after {pause_ms} ms: {e}"));
                Err(e)
            }
        }
    }

    async fn release(&self, holds: Vec<WriteHold>, why: &str) {
        for h in holds {
            self.orchestrator.release_writes(h, why).await;
        }
    }

    /// The part under the hold; on error nothing is left changed (the caller forgets the
    /// new streams, restarts the old ones and releases the hold).
    async fn held_cutover(
        &self,
        r: &super::MoveRecord,
        handles: &[std::sync::Arc<mover::stream::StreamHandle>],
        new_streams: &[StreamRecord],
        next_map: &shard_map::ShardMap,
        forward: bool,
        version: u64,
    ) -> Result<CutoverReport, MoveError> {
        let mut report = CutoverReport {
            at_ms: now_ms(),
            direction: if forward { "forward" } else { "back" }.to_owned(),
            pause_ms: 0,
            drain_ms: 0,
            killed: 0,
            catch_up_ms: 0,
            publish_ms: 0,
            stop_positions: BTreeMap::new(),
            shard_map_version: version,
        };
        let sources: Vec<String> = {
            let mut v: Vec<String> = r
                .streams
                .iter()
                .map(|s| s.planned.source_cluster.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let t = Instant::now();
        for c in &sources {
            report.killed += self.drain(c).await?;
        }
        report.drain_ms = t.elapsed().as_millis() as u64;
        let mut stops = BTreeMap::new();
        for c in &sources {
            let pos = self.binlog_pos(c).await?;
            report.stop_positions.insert(c.clone(), pos.to_string());
            stops.insert(c.clone(), pos);
        }
        let t = Instant::now();
        for (s, h) in r.streams.iter().zip(handles) {
            h.wait_for_pos(&stops[&s.planned.source_cluster], self.settings.catch_up)
                .await
                .map_err(|e| {
                    MoveError::Failed(format!(
                        "stream {} did not reach the stop position in time: {e}",
                        s.name
                    ))
                })?;
        }
        for s in &r.streams {
            self.stop_stream(&s.name).await;
        }
        report.catch_up_ms = t.elapsed().as_millis() as u64;

        // The other way: positioned where the places that take the writes next are now
        // (nothing writes there: their old streams stopped, the map not yet moved).
        let t = Instant::now();
        let mut from_cache: BTreeMap<String, GtidPos> = BTreeMap::new();
        for s in new_streams {
            let from = match from_cache.get(&s.planned.source_cluster) {
                Some(p) => p.clone(),
                None => {
                    let p = self.binlog_pos(&s.planned.source_cluster).await?;
                    from_cache.insert(s.planned.source_cluster.clone(), p.clone());
                    p
                }
            };
            let target = self.endpoint_now(&s.planned.target_cluster)?;
            mover::stream::set_position(&s.name, &target, &from)
                .await
                .map_err(|e| MoveError::Failed(format!("positioning stream {}: {e}", s.name)))?;
        }
        match self
            .shard_maps
            .replace(&self.router, next_map.clone(), Some(version))
            .await
        {
            Ok((v, _)) => report.shard_map_version = v,
            Err(e) => {
                return Err(MoveError::Failed(format!(
                    "publishing the next shard map: {e:?}"
                )));
            }
        }
        report.publish_ms = t.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// The leader's `@@gtid_binlog_pos`.
    async fn binlog_pos(&self, cluster: &str) -> Result<GtidPos, MoveError> {
        let ep = self.endpoint_now(cluster)?;
        let fail = |e: String| MoveError::Failed(format!("reading the position of {cluster}: {e}"));
        let mut c = ep.connect().await.map_err(|e| fail(e.to_string()))?;
        let pos: Option<String> = c
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .map_err(|e| fail(e.to_string()))?;
        GtidPos::parse(&pos.unwrap_or_default()).map_err(|e| fail(e.to_string()))
    }

    /// Lets what is under way on a held cluster's leader end, within the drain bound: no
    /// statement or InnoDB transaction of another user there, no router session with a
    /// transaction open on it, no XA transaction prepared there. Past the bound, every connection of another
    /// user is killed (what was open is rolled back; the sessions get an error at their next
    /// statement), and an XA transaction still prepared then fails the cutover (its outcome
    /// could come after the stop position). Returns how many connections were killed.
    async fn drain(&self, cluster: &str) -> Result<u64, MoveError> {
        let ep = self.endpoint_now(cluster)?;
        let fail = |e: String| MoveError::Failed(format!("draining {cluster}: {e}"));
        let mut c = ep.connect().await.map_err(|e| fail(e.to_string()))?;
        let running = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND IN \
                       ('Query', 'Execute') AND ID <> CONNECTION_ID() AND USER <> ? AND USER <> \
                       'system user'";
        let deadline = Instant::now() + self.settings.drain;
        loop {
            let statements: u64 = c
                .exec_first(running, (self.user.as_str(),))
                .await
                .map_err(|e| fail(e.to_string()))?
                .unwrap_or(0);
            let prepared: Vec<mysql_async::Row> = c
                .query("XA RECOVER")
                .await
                .map_err(|e| fail(e.to_string()))?;
            let transactions: u64 = c
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN \
                     information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                     WHERE p.USER <> ? AND p.ID <> CONNECTION_ID()",
                    (self.user.as_str(),),
                )
                .await
                .map_err(|e| fail(e.to_string()))?
                .unwrap_or(0);
            let open = self
                .router
                .sessions
                .list()
                .iter()
                .filter(|s| {
                    s.backend.as_deref() == Some(ep.addr.as_str())
                        && (s.in_transaction || s.command != "Sleep")
                })
                .count();
            if statements == 0 && transactions == 0 && prepared.is_empty() && open == 0 {
                return Ok(0);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Past the bound: end every other user's connection, as a switchover does.
        let ids: Vec<u64> = c
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND \
                 USER <> ? AND USER <> 'system user' AND COMMAND NOT IN ('Binlog Dump', \
                 'Binlog Dump GTID', 'Daemon')",
                (self.user.as_str(),),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut killed = 0;
        for id in &ids {
            // Gone meanwhile: nothing to kill.
            if c.query_drop(format!("KILL CONNECTION {id}")).await.is_ok() {
                killed += 1;
            }
        }
        let gone = Instant::now() + Duration::from_secs(2);
        loop {
            let left: u64 = c
                .exec_first(running, (self.user.as_str(),))
                .await
                .map_err(|e| fail(e.to_string()))?
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            if Instant::now() >= gone {
                return Err(fail(format!(
                    "{left} statements still run after their connections were killed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let prepared: Vec<mysql_async::Row> = c
            .query("XA RECOVER")
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !prepared.is_empty() {
            return Err(fail(format!(
                "{} XA transactions stay prepared: their outcome could come after the stop \
                 position; the cutover is undone (try again)",
                prepared.len()
            )));
        }
        Ok(killed)
    }
}
