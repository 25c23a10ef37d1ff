//! Failover and switchover, timed through the router under a steady write workload. Each
//! trial starts fresh servers (a leader and two replicas, semi-sync) and switchyard, lets four
//! writers insert through the router (prepared statements), then:
//!
//! - kill leader: `kill -9` of the leader; the time is from the kill to the acknowledgement of
//!   the first write sent after it (which ran on the new leader). Writes in flight at the kill
//!   get 2013 (their outcome is unknown, as on a direct connection).
//! - freeze leader: the leader hangs (`SIGSTOP`): nothing resets its connections, every read
//!   of it just waits. Timed as the kill; the router cuts the writes left waiting on it once
//!   the new leader is published (2013).
//! - partition leader: every packet to and from the leader's port dropped (iptables on
//!   loopback, no reset), for the monitor, the replicas and the router alike. Timed as the
//!   kill.
//! - disk full leader: the filesystem of the leader's binary log (a tmpfs of its own) filled
//!   up: the server waits for space instead of failing commits, and still answers every
//!   read. Timed as the longest pause between acknowledged writes (the writes that still fit
//!   in the binary log's last page are acknowledged after the fill).
//! - switchover: a planned switchover; the time is the longest pause between acknowledged
//!   writes around it (the writers wait for the new leader meanwhile).
//!
//! Client errors are every error the writers saw during the trial.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use super::spread::Spread;
use super::stage::Stage;
use super::sysbench::{PASSWORD, USER};
use crate::App;

/// Concurrent writers during a trial.
pub const WRITERS: u64 = 4;
/// Acknowledged writes before the event, so that the writers are in full swing.
const WARM_WRITES: usize = 300;

/// What is done to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `kill -9` of the leader: an unplanned failover.
    KillLeader,
    /// The leader frozen (`SIGSTOP`): a failover with no connection reset.
    FreezeLeader,
    /// The leader's port blackholed: a failover across a partition.
    PartitionLeader,
    /// Only what leaves the leader's port dropped: it runs what it is sent, nobody hears back.
    AnswersLostLeader,
    /// The disk of the leader's binary log full: a failover of a leader that answers.
    DiskFullLeader,
    /// A planned switchover to a replica.
    Switchover,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::KillLeader,
        Event::FreezeLeader,
        Event::PartitionLeader,
        Event::AnswersLostLeader,
        Event::DiskFullLeader,
        Event::Switchover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::KillLeader => "kill_leader",
            Event::FreezeLeader => "freeze_leader",
            Event::PartitionLeader => "partition_leader",
            Event::AnswersLostLeader => "answers_lost_leader",
            Event::DiskFullLeader => "disk_full_leader",
            Event::Switchover => "switchover",
        }
    }

    /// The name `--only` matches: `failover/kill_leader`, `failover/switchover`.
    pub fn key(self) -> String {
        format!("failover/{self}")
    }

    /// What the time of a trial measures.
    pub fn measure(self) -> &'static str {
        match self {
            Event::KillLeader => {
                "from the kill -9 of the leader to the acknowledgement of the first write sent \
                 after it (run by the new leader)"
            }
            Event::FreezeLeader => {
                "from the SIGSTOP of the leader to the acknowledgement of the first write sent \
                 after it (run by the new leader)"
            }
            Event::PartitionLeader => {
                "from dropping every packet of the leader's port to the acknowledgement of the \
                 first write sent after it (run by the new leader)"
            }
            Event::AnswersLostLeader => {
                "from dropping every packet leaving the leader's port (what is sent to it still \
                 arrives and runs) to the acknowledgement of the first write sent after it (run \
                 by the new leader)"
            }
            Event::DiskFullLeader => {
                "the longest pause between acknowledged writes from 1 s before the disk of the \
                 leader's binary log was filled until the new leader took writes"
            }
            Event::Switchover => {
                "the longest pause between acknowledged writes from 1 s before the switchover \
                 to 2 s after it returned"
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events `--only` keeps (all when it is empty).
pub fn events(only: &[String]) -> Vec<Event> {
    Event::ALL
        .into_iter()
        .filter(|e| super::matrix::picked(&e.key(), only))
        .collect()
}

/// The trials of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverResult {
    pub event: Event,
    /// What `time_ms` measures.
    pub measure: String,
    /// Trials attempted.
    pub trials: u32,
    /// Concurrent writers.
    pub writers: u64,
    /// The time of each trial that completed, its median (p50) and range; `None` if none did.
    pub time_ms: Option<Spread>,
    /// Client errors of each trial that completed.
    pub client_errors: Vec<u64>,
    /// Acknowledged writes missing from the new leader after each trial that completed.
    #[serde(default)]
    pub writes_lost: Vec<u64>,
    /// Why the other trials did not complete.
    pub failures: Vec<String>,
}

impl FailoverResult {
    /// The name `--only` matches.
    pub fn key(&self) -> String {
        self.event.key()
    }

    pub fn client_errors_total(&self) -> u64 {
        self.client_errors.iter().sum()
    }

    pub fn writes_lost_total(&self) -> u64 {
        self.writes_lost.iter().sum()
    }
}

/// One trial's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    pub time_ms: f64,
    pub client_errors: u64,
    /// Acknowledged writes the new leader does not hold.
    pub writes_lost: u64,
}

/// Runs `trials` trials of each event, interleaved (kill, switchover, kill, ...), each on fresh
/// servers. A trial that fails is recorded as such and the others go on. Also returns the
/// servers' version, if a trial got that far.
pub async fn run(events: &[Event], trials: u32) -> (Vec<FailoverResult>, Option<String>) {
    let mut out: Vec<FailoverResult> = events
        .iter()
        .map(|&event| FailoverResult {
            event,
            measure: event.measure().into(),
            trials,
            writers: WRITERS,
            time_ms: None,
            client_errors: Vec::new(),
            writes_lost: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); events.len()];
    let mut version = None;
    for i in 0..trials {
        for (k, &event) in events.iter().enumerate() {
            eprint!("[{}/{trials}] {} ... ", i + 1, event.key());
            match trial(event, &mut version).await {
                Ok(t) => {
                    eprintln!(
                        "{:.0} ms, {} client errors, {} writes lost",
                        t.time_ms, t.client_errors, t.writes_lost
                    );
                    times[k].push(t.time_ms);
                    out[k].client_errors.push(t.client_errors);
                    out[k].writes_lost.push(t.writes_lost);
                }
                Err(e) => {
                    eprintln!("FAILED: {e:#}");
                    out[k].failures.push(format!("trial {}: {e:#}", i + 1));
                }
            }
        }
    }
    for (result, times) in out.iter_mut().zip(times) {
        result.time_ms = Spread::of(&times);
    }
    (out, version)
}

/// One trial on fresh servers, stopped (also on error) before it returns. Sets `version` to
/// the servers' version once connected.
pub async fn trial(event: Event, version: &mut Option<String>) -> anyhow::Result<Trial> {
    // A binary log on a disk of its own, to fill; 64 MiB hold a trial's writes many times.
    let binlog_disk_mb = (event == Event::DiskFullLeader).then_some(64);
    let mut stage = Stage::start_with("sy-bench-failover-", 1, 2, binlog_disk_mb).await?;
    let outcome = measure(event, &stage.app, &mut stage.local, version).await;
    stage.stop().await;
    outcome
}

/// What the writers saw: when each acknowledged write was sent and acknowledged, and the
/// errors (server error codes; 0 for a lost connection or a failed connect).
#[derive(Default)]
struct Timeline {
    sent_acked: Mutex<Vec<(Instant, Instant)>>,
    /// The ids of the acknowledged writes.
    acked_ids: Mutex<Vec<u64>>,
    errors: Mutex<Vec<u16>>,
}

impl Timeline {
    fn acks(&self) -> usize {
        self.sent_acked.lock().map_or(0, |v| v.len())
    }

    fn error(&self, code: u16) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(code);
        }
    }
}

/// The writers, stopped when dropped.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(port: u16, timeline: &Arc<Timeline>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WRITERS)
            .map(|w| tokio::spawn(writer(port, (w + 1) << 40, timeline.clone(), stop.clone())))
            .collect();
        Writers { stop, tasks }
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Inserts rows with ids from `base` until told to stop, reconnecting after a lost connection.
async fn writer(port: u16, base: u64, tl: Arc<Timeline>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Conn> = None;
    let mut id = base;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::new(super::loopback_opts(port, USER, PASSWORD, None)).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tl.error(0);
                    // Not a synchronisation: a pause between reconnects while the router
                    // has no leader, so that a writer does not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        id += 1;
        let sent = Instant::now();
        match c.exec_drop("INSERT INTO b.t (id) VALUES (?)", (id,)).await {
            Ok(()) => {
                let acked = Instant::now();
                if let Ok(mut v) = tl.sent_acked.lock() {
                    v.push((sent, acked));
                }
                if let Ok(mut v) = tl.acked_ids.lock() {
                    v.push(id);
                }
            }
            Err(mysql_async::Error::Server(e)) => tl.error(e.code),
            Err(_) => {
                tl.error(0);
                conn = None;
            }
        }
    }
}

/// Polls `f` every 10 ms until it holds or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let held = crate::scenario::writes::poll_until(limit, || f().then_some(())).await;
    ensure!(held.is_some(), "{what}: not within {limit:?}");
    Ok(())
}

async fn measure(
    event: Event,
    app: &App,
    local: &mut orchestrator::LocalClusters,
    version: &mut Option<String>,
) -> anyhow::Result<Trial> {
    ensure!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard saw no healthy leader within 30 s"
    );
    let port = app.router_port();
    let mut c = Conn::new(super::loopback_opts(port, USER, PASSWORD, None))
        .await
        .context("connecting through switchyard")?;
    *version = c.query_first("SELECT VERSION()").await?;
    c.query_drop("CREATE DATABASE b")
        .await
        .context("creating the database")?;
    c.query_drop("CREATE TABLE b.t (id BIGINT PRIMARY KEY)")
        .await
        .context("creating the table")?;
    drop(c);
    // Replicas caught up and seen so by the monitor before the clock starts.
    wait_for(
        "replicas streaming with no lag",
        Duration::from_secs(30),
        || {
            let t = app.topology.load();
            t.cluster("c1").is_some_and(|cl| {
                cl.nodes
                    .iter()
                    .filter(|n| Some(&n.addr) != cl.leader.as_ref())
                    .all(|n| n.io_running == Some(true) && n.lag_seconds == Some(0))
            })
        },
    )
    .await?;

    let tl = Arc::new(Timeline::default());
    let writers = Writers::start(port, &tl);
    wait_for("writes through switchyard", Duration::from_secs(30), || {
        tl.acks() > WARM_WRITES
    })
    .await?;
    let time_ms = match event {
        Event::Switchover => switchover(app, &tl).await?,
        lost => lose_leader(lost, app, local, &tl).await?,
    };
    writers.stop().await;
    let client_errors = tl.errors.lock().map_or(0, |e| e.len() as u64);
    let writes_lost = writes_lost(app, &tl).await?;
    Ok(Trial {
        time_ms,
        client_errors,
        writes_lost,
    })
}

/// The leader switchyard knows and its port.
fn leader_and_port(app: &App) -> anyhow::Result<(String, u16)> {
    let leader = app
        .topology
        .load()
        .cluster("c1")
        .and_then(|c| c.leader.clone())
        .context("switchyard knows no leader")?;
    let port = crate::scenario::writes::port_of(&leader);
    ensure!(port != 0, "no port in {leader}");
    Ok((leader, port))
}

/// How many acknowledged writes the leader (read directly, not through the router) lacks.
async fn writes_lost(app: &App, tl: &Timeline) -> anyhow::Result<u64> {
    let (leader, port) = leader_and_port(app)?;
    let mut c = Conn::new(super::loopback_opts(port, USER, PASSWORD, None))
        .await
        .with_context(|| format!("connecting to the leader {leader}"))?;
    let held: std::collections::HashSet<u64> = c
        .query("SELECT id FROM b.t")
        .await
        .with_context(|| format!("reading the rows of {leader}"))?
        .into_iter()
        .collect();
    let _ = c.disconnect().await;
    let acked = tl.acked_ids.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(acked.iter().filter(|id| !held.contains(id)).count() as u64)
}

/// Kills, freezes, cuts off the leader or fills its disk; returns the ms from then to the first acknowledged
/// write sent after.
async fn lose_leader(
    event: Event,
    app: &App,
    local: &mut orchestrator::LocalClusters,
    tl: &Timeline,
) -> anyhow::Result<f64> {
    let (leader, port) = leader_and_port(app)?;
    let pid = local
        .pid(&leader)
        .with_context(|| format!("no process for {leader}"))?;
    // The fault stays until the trial is measured (each guard undoes it when dropped).
    let (mut _frozen, mut _cut, mut _full) = (None, None, None);
    match event {
        Event::DiskFullLeader => {
            let node = local
                .cluster("c1")
                .and_then(|c| c.nodes.iter().find(|n| n.addr == leader))
                .with_context(|| format!("no node {leader}"))?;
            let dir = node.binlog_dir();
            _full = Some(
                super::faults::fill_disk(&dir)
                    .with_context(|| format!("filling {}", dir.display()))?,
            )
        }
        Event::FreezeLeader => {
            _frozen =
                Some(super::faults::freeze(pid).with_context(|| format!("freezing {leader}"))?)
        }
        Event::PartitionLeader => {
            _cut = Some(super::faults::blackhole(port).map_err(anyhow::Error::msg)?)
        }
        Event::AnswersLostLeader => {
            _cut = Some(super::faults::cut_answers(port).map_err(anyhow::Error::msg)?)
        }
        _ => {
            // SIGKILL and reap: once kill_node returns the old leader is gone.
            local
                .kill_node("c1", &leader)
                .with_context(|| format!("killing {leader}"))?;
        }
    }
    let killed = Instant::now();
    let first_after = || {
        tl.sent_acked.lock().ok().and_then(|v| {
            v.iter()
                .filter(|(sent, _)| *sent > killed)
                .map(|(_, acked)| *acked)
                .min()
        })
    };
    wait_for(
        "a write acknowledged after the leader was lost",
        Duration::from_secs(60),
        || first_after().is_some(),
    )
    .await?;
    let first = first_after().context("no write after the leader was lost")?;
    if event != Event::DiskFullLeader {
        return Ok((first - killed).as_secs_f64() * 1000.0);
    }
    // A full disk still takes the writes that fit in the binary log's last page, so the
    // first writes after the fill may be acknowledged by the old leader: the outage is the
    // longest pause between acknowledgements, once the new leader has taken writes.
    wait_for("a new leader", Duration::from_secs(60), || {
        app.topology
            .load()
            .cluster("c1")
            .and_then(|c| c.leader.clone())
            .is_some_and(|l| l != leader)
    })
    .await?;
    let before = tl.acks();
    wait_for("writes on the new leader", Duration::from_secs(30), || {
        tl.acks() > before + WARM_WRITES
    })
    .await?;
    let from = killed.checked_sub(Duration::from_secs(1)).unwrap_or(killed);
    Ok(longest_pause(tl, from, Instant::now()))
}

/// The longest time between two consecutive acknowledgements within `from..=to` (ms).
fn longest_pause(tl: &Timeline, from: Instant, to: Instant) -> f64 {
    let mut acks: Vec<Instant> = tl
        .sent_acked
        .lock()
        .map(|v| v.iter().map(|(_, acked)| *acked).collect())
        .unwrap_or_default();
    acks.sort();
    let window: Vec<Instant> = acks
        .into_iter()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    window
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max)
}

/// Switches the leader over; returns the longest pause between acknowledged writes around it.
async fn switchover(app: &App, tl: &Timeline) -> anyhow::Result<f64> {
    let began = Instant::now();
    let report = app.orchestrator.switchover("c1", None).await;
    let ended = Instant::now();
    report.map_err(|e| anyhow::anyhow!("the switchover failed: {e}"))?;
    let before = tl.acks();
    wait_for(
        "writes after the switchover",
        Duration::from_secs(30),
        || tl.acks() > before + WARM_WRITES,
    )
    .await?;
    let from = began.checked_sub(Duration::from_secs(1)).unwrap_or(began);
    Ok(longest_pause(tl, from, ended + Duration::from_secs(2)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two completed kill trials, for the report tests.
    pub(crate) fn result() -> FailoverResult {
        FailoverResult {
            event: Event::KillLeader,
            measure: Event::KillLeader.measure().into(),
            trials: 2,
            writers: WRITERS,
            time_ms: Spread::of(&[140.0, 180.0]),
            client_errors: vec![3, 4],
            writes_lost: vec![0, 0],
            failures: Vec::new(),
        }
    }

    #[test]
    fn only_picks_failover_events_by_name() {
        assert_eq!(events(&[]), Event::ALL);
        assert_eq!(events(&["failover".into()]), Event::ALL);
        assert_eq!(events(&["failover/kill".into()]), [Event::KillLeader]);
        assert_eq!(events(&["sharded".into()]), []);
        let r = result();
        assert_eq!(r.key(), "failover/kill_leader");
        assert_eq!(r.client_errors_total(), 7);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["event"], "kill_leader");
        assert_eq!(json["time_ms"]["median"], 160.0);
    }
}
