//! Named failure scenarios (`switchyard scenario list` / `run NAME`), also what
//! `tests/faults.rs` runs: each starts a fresh local cluster (a leader and two replicas,
//! semi-sync) with a switchyard over it, puts four writers on it through the router, injects
//! one fault with the fault kit ([`crate::bench::faults`]), and checks, step by step, what an
//! operator who has lived through outages expects: the right decision (a failover, or none),
//! no acknowledged write lost, no row nobody was told about, no client left hanging, replicas
//! converged, a returning old leader fenced. Every wait is bounded; a failed step ends the
//! run with the orchestrator's events printed.
//!
//! A scenario runs with the sandbox's settings, or with the failure-handling settings of an
//! operator's own configuration file (`--config`): `[failover]`, the orchestrator's timings
//! and the router's hold and dead-path limits.

pub mod writes;

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use shard_map::NodeState;
use tokio::time::Instant;

use crate::bench::faults::{self, Blackhole, DiskFull, Frozen};
use crate::bench::stage::Stage;
use crate::Config;
use writes::{poll_until, port_of, Target, Writers};

/// The cluster every scenario runs on.
const CLUSTER: &str = "c1";
/// Concurrent writers.
const WRITERS: u64 = 4;
/// Acknowledged writes that show traffic flowing (before the fault, and after each change).
const FLOWING: usize = 200;
/// The source address of the router's backend connections in the path scenarios, so that
/// its path to a server can be cut apart from the orchestrator's and the replicas' (which
/// leave from 127.0.0.1).
pub const ROUTER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The binary log's own disk in the disk-full scenario (MiB): room for many runs' writes.
const BINLOG_DISK_MB: u32 = 64;

/// A named scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    KillLeader,
    FreezeLeader,
    PartitionLeader,
    LeaderAnswersLost,
    PartitionHealsMidFailover,
    DiskFullLeader,
    DiskStallLeader,
    FreezeReplica,
    PartitionReplica,
    RouterCut,
    OrchestratorCut,
    BrokenReplica,
    Switchover,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::KillLeader,
        Scenario::FreezeLeader,
        Scenario::PartitionLeader,
        Scenario::LeaderAnswersLost,
        Scenario::PartitionHealsMidFailover,
        Scenario::DiskFullLeader,
        Scenario::DiskStallLeader,
        Scenario::FreezeReplica,
        Scenario::PartitionReplica,
        Scenario::RouterCut,
        Scenario::OrchestratorCut,
        Scenario::BrokenReplica,
        Scenario::Switchover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillLeader => "kill-leader",
            Scenario::FreezeLeader => "freeze-leader",
            Scenario::PartitionLeader => "partition-leader",
            Scenario::LeaderAnswersLost => "leader-answers-lost",
            Scenario::PartitionHealsMidFailover => "partition-heals-mid-failover",
            Scenario::DiskFullLeader => "disk-full-leader",
            Scenario::DiskStallLeader => "disk-stall-leader",
            Scenario::FreezeReplica => "freeze-replica",
            Scenario::PartitionReplica => "partition-replica",
            Scenario::RouterCut => "router-cut",
            Scenario::OrchestratorCut => "orchestrator-cut",
            Scenario::BrokenReplica => "broken-replica",
            Scenario::Switchover => "switchover",
        }
    }

    /// What happens, and what is expected.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::KillLeader => {
                "kill -9 of the leader: failover, writes resume on the new leader, the old \
                 one rejoins when restarted"
            }
            Scenario::FreezeLeader => {
                "the leader hangs (SIGSTOP; nothing resets its connections): failover without \
                 waiting on it, the old one fenced when it thaws"
            }
            Scenario::PartitionLeader => {
                "every packet to and from the leader dropped (no reset): failover, the old one \
                 fenced when the partition heals"
            }
            Scenario::LeaderAnswersLost => {
                "a one-way cut: every packet leaving the leader dropped (no reset), while what \
                 is sent to it still arrives and runs (writes whose answers are lost commit \
                 there): failover, no acknowledged write lost, the old one fenced when the \
                 cut heals and kept out or rejoined by what it holds"
            }
            Scenario::PartitionHealsMidFailover => {
                "the leader partitioned, and the partition heals in the middle of the \
                 failover: after the new leader is promoted, before routers are told (a \
                 vip_add hook holds the failover there), so that for a moment both are \
                 writable and reachable: the failover completes, no write reaches the old \
                 leader through the router, and it is fenced"
            }
            Scenario::DiskFullLeader => {
                "the disk of the leader's binary log fills up (it still answers reads): \
                 failover, the old one fenced"
            }
            Scenario::DiskStallLeader => {
                "the disk of the leader's binary log stops answering (fsfreeze: every write \
                 waits, reads still work): failover once commits stood still for \
                 commit_stall_failover_ms"
            }
            Scenario::FreezeReplica => {
                "a replica hangs: no failover, writes go on, it catches up when it thaws"
            }
            Scenario::PartitionReplica => {
                "a replica cut off: no failover, writes go on, it catches up when it heals"
            }
            Scenario::RouterCut => {
                "only the router's path to the leader cut: no failover, clients get errors \
                 instead of hanging, writes resume when it heals"
            }
            Scenario::OrchestratorCut => {
                "only the orchestrator's path to the leader cut (the replicas still stream \
                 from it): suspect, no failover, writes go on"
            }
            Scenario::BrokenReplica => {
                "a replica's SQL thread breaks (a row written on it directly), then the leader \
                 is killed: the healthy replica is elected, the broken one is rebuilt"
            }
            Scenario::Switchover => {
                "a planned switchover under writes: clients see no error, nothing lost"
            }
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Needs root: iptables rules, a tmpfs, a second loopback address.
    pub fn needs_root(self) -> bool {
        !matches!(
            self,
            Scenario::KillLeader
                | Scenario::FreezeLeader
                | Scenario::FreezeReplica
                | Scenario::BrokenReplica
                | Scenario::Switchover
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One checked step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Since the scenario began.
    pub at_ms: u64,
    pub ok: bool,
    pub what: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} +{:>6} ms  {}", self.at_ms, self.what)
    }
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub steps: Vec<Step>,
    /// The orchestrator's events of the cluster, as `+ms kind: message` (from the start).
    pub events: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }
}

/// The failure-handling settings of `config` applied to a scenario's own configuration:
/// `[failover]`, the orchestrator's timings, the router's hold and dead-path limits.
pub fn apply_settings(from: &Config, to: &mut Config) {
    to.failover = from.failover.clone();
    let (o, t) = (&from.orchestrator, &mut to.orchestrator);
    t.tick_ms = o.tick_ms;
    t.connect_timeout_ms = o.connect_timeout_ms;
    t.poll_timeout_ms = o.poll_timeout_ms;
    t.suspect_timeout_ms = o.suspect_timeout_ms;
    t.down_after = o.down_after;
    let (r, t) = (&from.router, &mut to.router);
    t.hold_timeout_ms = r.hold_timeout_ms;
    t.backend_dead_after_ms = r.backend_dead_after_ms;
    t.connect_timeout_ms = r.connect_timeout_ms;
}

/// The steps so far, reported as they happen.
struct Log<'a> {
    started: Instant,
    steps: Vec<Step>,
    report: &'a mut dyn FnMut(&Step),
}

impl Log<'_> {
    /// Records a step from a check's result; `Err` when it failed (ending the run).
    fn check(&mut self, result: Result<String, String>) -> Result<(), ()> {
        let ok = result.is_ok();
        let what = match result {
            Ok(s) | Err(s) => s,
        };
        let step = Step {
            at_ms: self.started.elapsed().as_millis() as u64,
            ok,
            what,
        };
        (self.report)(&step);
        self.steps.push(step);
        if ok {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// A fault in force; ended by [`Injected::end`], or by drop on an early return.
enum Injected {
    Killed(String),
    Frozen(Frozen),
    Cut(Blackhole),
    Full(DiskFull),
    Stalled(faults::StalledDisk),
}

/// Runs `scenario` on fresh servers, reporting each step to `report` as it is checked;
/// `settings` overrides the sandbox's failure-handling settings (see [`apply_settings`]).
/// Everything started is stopped before it returns, also when a step fails.
pub async fn run(
    scenario: Scenario,
    settings: Option<&Config>,
    report: &mut dyn FnMut(&Step),
) -> anyhow::Result<Outcome> {
    let binlog_disk_mb = matches!(
        scenario,
        Scenario::DiskFullLeader | Scenario::DiskStallLeader
    )
    .then_some(BINLOG_DISK_MB);
    let router_apart = matches!(scenario, Scenario::RouterCut | Scenario::OrchestratorCut);
    let mut hook_error = None;
    let mut stage = Stage::start_configured("sy-scenario-", 1, 2, binlog_disk_mb, |c, local| {
        if let Some(s) = settings {
            apply_settings(s, c);
        }
        if router_apart {
            c.router.backend_source_address = Some(ROUTER_SOURCE.to_string());
        }
        if scenario == Scenario::PartitionHealsMidFailover {
            match MidFailover::install(local.dir()) {
                Ok(hook) => c.failover.hooks.vip_add = Some(hook),
                Err(e) => hook_error = Some(e),
            }
        }
    })
    .await
    .context("starting the scenario's servers and switchyard")?;
    if let Some(e) = hook_error {
        stage.stop().await;
        return Err(e);
    }
    let mut log = Log {
        started: Instant::now(),
        steps: Vec::new(),
        report,
    };
    let began_ms = unix_ms();
    let _ = steps(scenario, &mut stage, &mut log).await;
    let events = stage
        .app
        .orchestrator
        .events(CLUSTER)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.at_ms >= began_ms)
        .map(|e| format!("+{} ms {}: {}", e.at_ms - began_ms, e.kind, e.message))
        .collect();
    let steps = std::mem::take(&mut log.steps);
    stage.stop().await;
    Ok(Outcome {
        scenario,
        steps,
        events,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a failover may take before the step fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// How long writes may take to flow again.
const FLOW_LIMIT: Duration = Duration::from_secs(30);
/// How long writers may take to stop once told.
const STOP_LIMIT: Duration = Duration::from_secs(15);
/// How long replicas may take to converge, and a returning node to be fenced.
const SETTLE_LIMIT: Duration = Duration::from_secs(40);

async fn steps(scenario: Scenario, stage: &mut Stage, log: &mut Log<'_>) -> Result<(), ()> {
    let target = view(stage);
    let (leader, epoch) = target.leader_of(CLUSTER);
    let replicas: Vec<String> = target
        .nodes(CLUSTER)
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    log.check(Ok(format!(
        "sandbox: {CLUSTER} = leader {leader} + replicas {} (semi-sync), epoch {epoch}",
        replicas.join(", ")
    )))?;
    let router = target.router_opts();
    log.check(
        writes::setup(&router)
            .await
            .map(|()| "table fo.t created through the router".into()),
    )?;
    let writers = Writers::start(&router, WRITERS);
    flowing(log, &writers, {
        format!("{WRITERS} writers through the router: {FLOWING} writes acknowledged")
    })
    .await?;
    match scenario {
        Scenario::KillLeader
        | Scenario::FreezeLeader
        | Scenario::PartitionLeader
        | Scenario::LeaderAnswersLost
        | Scenario::PartitionHealsMidFailover
        | Scenario::DiskFullLeader
        | Scenario::DiskStallLeader => {
            leader_lost(scenario, stage, log, writers, &leader, epoch).await
        }
        Scenario::FreezeReplica | Scenario::PartitionReplica => {
            replica_lost(scenario, stage, log, writers, &leader, epoch, &replicas[0]).await
        }
        Scenario::RouterCut => router_cut(stage, log, writers, &leader, epoch).await,
        Scenario::OrchestratorCut => orchestrator_cut(stage, log, writers, &leader, epoch).await,
        Scenario::BrokenReplica => {
            broken_replica(stage, log, writers, &leader, epoch, &replicas).await
        }
        Scenario::Switchover => switchover(stage, log, writers, &leader).await,
    }
}

/// Injects `scenario`'s fault on `addr`.
fn inject(scenario: Scenario, stage: &mut Stage, addr: &str) -> Result<(Injected, String), String> {
    let pid = stage.local.pid(addr);
    let node = stage
        .local
        .cluster(CLUSTER)
        .and_then(|c| c.nodes.iter().find(|n| n.addr == addr))
        .cloned();
    match scenario {
        Scenario::KillLeader => {
            stage
                .local
                .kill_node(CLUSTER, addr)
                .map_err(|e| format!("killing {addr}: {e}"))?;
            Ok((Injected::Killed(addr.into()), format!("kill -9 of {addr}")))
        }
        Scenario::FreezeLeader | Scenario::FreezeReplica => {
            let pid = pid.ok_or_else(|| format!("no process for {addr}"))?;
            let f = faults::freeze(pid).map_err(|e| format!("freezing {addr}: {e}"))?;
            Ok((
                Injected::Frozen(f),
                format!("SIGSTOP of {addr} (pid {pid})"),
            ))
        }
        Scenario::PartitionLeader
        | Scenario::PartitionHealsMidFailover
        | Scenario::PartitionReplica => {
            let cut = faults::blackhole(port_of(addr))?;
            Ok((
                Injected::Cut(cut),
                format!("every packet to and from {addr} dropped"),
            ))
        }
        Scenario::LeaderAnswersLost => {
            let cut = faults::cut_answers(port_of(addr))?;
            Ok((
                Injected::Cut(cut),
                format!("every packet leaving {addr} dropped; what is sent to it arrives"),
            ))
        }
        Scenario::DiskFullLeader => {
            let dir = node.ok_or_else(|| format!("no node {addr}"))?.binlog_dir();
            let full =
                faults::fill_disk(&dir).map_err(|e| format!("filling {}: {e}", dir.display()))?;
            Ok((
                Injected::Full(full),
                format!("the binary log's disk of {addr} full ({})", dir.display()),
            ))
        }
        Scenario::DiskStallLeader => {
            let dir = node.ok_or_else(|| format!("no node {addr}"))?.binlog_dir();
            let stalled = faults::stall_disk(&dir)?;
            Ok((
                Injected::Stalled(stalled),
                format!(
                    "the binary log's disk of {addr} stalled (fsfreeze {})",
                    dir.display()
                ),
            ))
        }
        _ => Err(format!("{scenario} injects no single-node fault")),
    }
}

/// Ends a fault; a killed node is started again.
async fn end(injected: Injected, stage: &mut Stage) -> Result<String, String> {
    match injected {
        Injected::Killed(addr) => {
            stage
                .local
                .start_node(CLUSTER, &addr)
                .await
                .map_err(|e| format!("restarting {addr}: {e}"))?;
            Ok(format!("{addr} started again"))
        }
        Injected::Frozen(f) => {
            f.thaw();
            Ok("thawed (SIGCONT)".into())
        }
        Injected::Cut(c) => {
            c.heal();
            Ok("partition healed".into())
        }
        Injected::Full(d) => {
            d.free();
            Ok("disk space freed".into())
        }
        Injected::Stalled(d) => {
            d.resume();
            Ok("disk answering again".into())
        }
    }
}

async fn leader_lost(
    scenario: Scenario,
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    old: &str,
    old_epoch: u64,
) -> Result<(), ()> {
    let (injected, what) = match inject(scenario, stage, old) {
        Ok(i) => i,
        Err(e) => return log.check(Err(e)),
    };
    let t0 = Instant::now();
    log.check(Ok(format!("fault: {what}")))?;
    let mut injected = Some(injected);
    if scenario == Scenario::PartitionHealsMidFailover {
        let mid = MidFailover::at(stage.local.dir());
        log.check(mid.reached(FAILOVER_LIMIT).await.map(|()| {
            "the failover promoted a new leader and waits in its vip_add hook, routers not \
             told yet"
                .into()
        }))?;
        let healed = match injected.take() {
            Some(i) => end(i, stage).await,
            None => Err("no fault to end".into()),
        };
        log.check(healed.map(|s| format!("fault ended: {old} {s}")))?;
        let answers = old_leader_answers(&view(stage), old).await;
        log.check(answers.map(|ro| {
            format!("{old} answers again, read_only={ro}, while the new leader is writable")
        }))?;
        log.check(mid.release().map(|()| "the failover goes on".into()))?;
    }
    let target = view(stage);
    let (new, new_epoch) = match target
        .new_leader(CLUSTER, old, old_epoch, FAILOVER_LIMIT)
        .await
    {
        Ok(n) => n,
        Err(e) => return log.check(Err(e)),
    };
    log.check(Ok(format!(
        "new leader {new} at epoch {new_epoch}, {} ms after the fault",
        t0.elapsed().as_millis()
    )))?;
    let flowing = writers.ledger.wait_for_more(FLOWING, FLOW_LIMIT).await;
    let first = writers.ledger.first_sent_after(t0);
    let pause = writers
        .ledger
        .longest_pause(t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0));
    log.check(flowing.map(|()| {
        format!(
            "writes acknowledged on {new}: the first sent after the fault {} ms after it, \
             the longest pause between acknowledgements {} ms",
            first.map_or(-1, |d| d.as_millis() as i64),
            pause.as_millis()
        )
    }))?;
    let ledger = stopped(log, writers).await?;
    log.check(Ok(format!(
        "no writer left waiting; client errors: {:?}",
        ledger.error_codes()
    )))?;
    let present = target.no_write_lost(&new, &ledger).await;
    let present = match present {
        Ok(p) => p,
        Err(e) => return log.check(Err(e)),
    };
    log.check(Ok(format!(
        "no acknowledged write lost: {} acknowledged, {} rows on {new}, {} uncertain",
        ledger.acked_count(),
        present.len(),
        ledger.uncertain_ids().len()
    )))?;
    log.check(
        target
            .converged(CLUSTER, &new, &[old], SETTLE_LIMIT)
            .await
            .map(|()| "the other replica converged (GTID, CHECKSUM TABLE)".into()),
    )?;
    if let Some(injected) = injected {
        log.check(
            end(injected, stage)
                .await
                .map(|s| format!("fault ended: {old} {s}")),
        )?;
    }
    let target = view(stage);
    let placed = target
        .fenced_and_in_place(CLUSTER, old, &new, &present, &ledger, SETTLE_LIMIT)
        .await;
    log.check(placed.map(|rejoined| {
        if rejoined {
            format!("{old} read-only and replicating from {new}")
        } else {
            format!(
                "{old} read-only and kept out (extra transactions reported), holding only \
                 writes whose clients got an error"
            )
        }
    }))?;
    let still = target.leader_of(CLUSTER);
    log.check(if still == (new.clone(), new_epoch) {
        Ok(format!("{new} still leads at epoch {new_epoch}"))
    } else {
        Err(format!("the leader moved again: {still:?}"))
    })
}

/// `@@read_only` of `addr`, asked directly (10 s at most, retried: a healed path may take a
/// moment to carry packets again).
async fn old_leader_answers(target: &Target<'_>, addr: &str) -> Result<u8, String> {
    let opts = target.admin_opts(addr);
    let ask = async {
        let mut conn = mysql_async::Conn::new(opts.clone()).await?;
        let ro: Option<u8> = conn.query_first("SELECT @@global.read_only").await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(ro.unwrap_or(0))
    };
    match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(ro)) => Ok(ro),
        Ok(Err(e)) => Err(format!("{addr} does not answer after the heal: {e}")),
        Err(_) => Err(format!("{addr} does not answer 10 s after the heal")),
    }
}

/// The `vip_add` hook of the partition-heals-mid-failover scenario: it marks that it runs
/// (the new leader is promoted, routers not told yet) and waits (5 s at most, within the
/// orchestrator's hook timeout) until the scenario has healed the partition.
struct MidFailover {
    started: std::path::PathBuf,
    healed: std::path::PathBuf,
}

impl MidFailover {
    const SCRIPT: &'static str = "mid-failover-hook.sh";

    fn at(dir: &std::path::Path) -> MidFailover {
        MidFailover {
            started: dir.join("mid-failover.started"),
            healed: dir.join("mid-failover.healed"),
        }
    }

    /// Writes the hook script into `dir`; its path.
    fn install(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let mid = MidFailover::at(dir);
        let script = format!(
            "#!/bin/sh\n\
             touch '{started}'\n\
             i=0\n\
             while [ ! -e '{healed}' ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done\n",
            started = mid.started.display(),
            healed = mid.healed.display(),
        );
        let path = dir.join(Self::SCRIPT);
        std::fs::write(&path, script).context("writing the scenario's hook")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .context("making the scenario's hook executable")?;
        Ok(path)
    }

    /// Waits until the hook runs.
    async fn reached(&self, limit: Duration) -> Result<(), String> {
        poll_until(limit, || self.started.exists().then_some(()))
            .await
            .ok_or_else(|| format!("the failover did not reach its vip_add hook in {limit:?}"))
    }

    /// Lets the hook, and with it the failover, go on.
    fn release(&self) -> Result<(), String> {
        std::fs::write(&self.healed, b"").map_err(|e| format!("releasing the hook: {e}"))
    }
}

async fn replica_lost(
    scenario: Scenario,
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    leader: &str,
    epoch: u64,
    replica: &str,
) -> Result<(), ()> {
    let (injected, what) = match inject(scenario, stage, replica) {
        Ok(i) => i,
        Err(e) => return log.check(Err(e)),
    };
    log.check(Ok(format!("fault: {what}")))?;
    let seen = wait_node(
        stage,
        replica,
        |s| s != NodeState::Up,
        Duration::from_secs(20),
    )
    .await;
    log.check(seen.map(|s| format!("{replica} seen {s:?} by the monitor")))?;
    flowing(log, &writers, format!("writes go on on {leader}")).await?;
    log.check(
        end(injected, stage)
            .await
            .map(|s| format!("fault ended: {replica} {s}")),
    )?;
    finish_without_failover(stage, log, writers, leader, epoch).await
}

async fn router_cut(
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    leader: &str,
    epoch: u64,
) -> Result<(), ()> {
    let before = writers.ledger.error_count();
    let cut = match faults::blackhole_from(port_of(leader), ROUTER_SOURCE) {
        Ok(c) => c,
        Err(e) => return log.check(Err(e)),
    };
    log.check(Ok(format!(
        "fault: the router's path to {leader} cut (its connections leave from {ROUTER_SOURCE})"
    )))?;
    let all_told = || writers.ledger.error_count() >= before + WRITERS as usize;
    poll_until(FLOW_LIMIT, || all_told().then_some(())).await;
    let told = writers.ledger.error_count() - before;
    log.check(if told >= WRITERS as usize {
        Ok(format!(
            "the writers were told of the dead path ({told} errors), none hangs"
        ))
    } else {
        Err(format!(
            "{told} errors within {FLOW_LIMIT:?}: writers left waiting on a dead path"
        ))
    })?;
    let target = view(stage);
    log.check(
        target.no_failover(CLUSTER, leader, epoch).map(|()| {
            format!("no failover: the orchestrator and the replicas still reach {leader}")
        }),
    )?;
    cut.heal();
    flowing(
        log,
        &writers,
        "path healed: writes acknowledged again".into(),
    )
    .await?;
    finish_without_failover(stage, log, writers, leader, epoch).await
}

async fn orchestrator_cut(
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    leader: &str,
    epoch: u64,
) -> Result<(), ()> {
    let target = view(stage);
    // The replicas' streams from the leader, by their client ports, are spared.
    let hosts = async {
        let mut c = mysql_async::Conn::new(target.admin_opts(leader)).await?;
        c.query::<String, _>(
            "SELECT HOST FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await
    }
    .await;
    let spare: Vec<u16> = match hosts {
        Ok(h) => h.iter().map(|h| port_of(h)).collect(),
        Err(e) => return log.check(Err(format!("listing the replicas' streams: {e}"))),
    };
    let cut = match faults::blackhole_except(port_of(leader), Ipv4Addr::LOCALHOST, &spare) {
        Ok(c) => c,
        Err(e) => return log.check(Err(e)),
    };
    log.check(Ok(format!(
        "fault: {leader} cut off from the orchestrator; the replicas' streams (client ports \
         {spare:?}) and the router (from {ROUTER_SOURCE}) still reach it"
    )))?;
    let down = wait_node(
        stage,
        leader,
        |s| s == NodeState::Down,
        Duration::from_secs(20),
    )
    .await;
    log.check(down.map(|_| format!("{leader} seen down by the orchestrator")))?;
    let suspect = wait_event(stage, "leader.suspect", Duration::from_secs(10)).await;
    log.check(suspect.map(|m| format!("judged suspect, not dead: {m}")))?;
    flowing(log, &writers, "writes go on through the router".into()).await?;
    let target = view(stage);
    log.check(
        target
            .no_failover(CLUSTER, leader, epoch)
            .map(|()| "no failover".into()),
    )?;
    cut.heal();
    let up = wait_node(
        stage,
        leader,
        |s| s == NodeState::Up,
        Duration::from_secs(20),
    )
    .await;
    log.check(up.map(|_| format!("healed: {leader} seen up again")))?;
    finish_without_failover(stage, log, writers, leader, epoch).await
}

async fn broken_replica(
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    old: &str,
    old_epoch: u64,
    replicas: &[String],
) -> Result<(), ()> {
    let (broken, healthy) = (&replicas[0], &replicas[1]);
    let target = view(stage);
    // A row the first writer will insert soon, written on the replica alone (not binlogged):
    // when the insert arrives from the leader, its SQL thread stops on the duplicate key.
    let next = writers
        .ledger
        .acked_ids()
        .range(..2_000_000)
        .next_back()
        .copied();
    let trap = next.unwrap_or(1_000_000) + 100;
    let planted = async {
        let mut c = mysql_async::Conn::new(target.admin_opts(broken)).await?;
        c.query_drop(format!(
            "SET SESSION sql_log_bin = 0; INSERT INTO {} (id, v) VALUES ({trap}, -1)",
            writes::TABLE
        ))
        .await
    }
    .await;
    log.check(
        planted
            .map(|()| format!("fault: row {trap} written directly on {broken}"))
            .map_err(|e| format!("writing on {broken}: {e}")),
    )?;
    let error = poll_until(FLOW_LIMIT, || {
        let t = stage.app.topology.load();
        let n = t.cluster(CLUSTER).and_then(|c| c.node(broken))?;
        (n.sql_running == Some(false)).then(|| n.last_error.clone().unwrap_or_default())
    })
    .await
    .ok_or_else(|| format!("{broken}'s SQL thread still running after {FLOW_LIMIT:?}"));
    log.check(error.map(|e| format!("{broken} seen with its SQL thread stopped: {e}")))?;
    // The writers pause until the healthy replica has received everything: with the broken one
    // acknowledging semi-sync commits too, the healthy one may lack the last of them at the
    // kill, and then no replica can be elected without losing them (refused, rightly).
    let first = stopped(log, writers).await?;
    let caught_up = async {
        let mut l = mysql_async::Conn::new(target.admin_opts(old)).await?;
        let pos: Option<String> = l.query_first("SELECT @@global.gtid_binlog_pos").await?;
        let mut h = mysql_async::Conn::new(target.admin_opts(healthy)).await?;
        let waited: Option<i64> = h
            .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (pos.unwrap_or_default(),))
            .await?;
        Ok::<_, mysql_async::Error>(waited == Some(0))
    }
    .await;
    log.check(match caught_up {
        Ok(true) => Ok(format!(
            "writers paused; {healthy} applied all the leader wrote"
        )),
        Ok(false) => Err(format!("{healthy} did not catch up with {old} within 30 s")),
        Err(e) => Err(format!("waiting for {healthy} to catch up: {e}")),
    })?;
    if let Err(e) = stage.local.kill_node(CLUSTER, old) {
        return log.check(Err(format!("killing {old}: {e}")));
    }
    log.check(Ok(format!("fault: kill -9 of the leader {old}")))?;
    let target = view(stage);
    let elected = target
        .new_leader(CLUSTER, old, old_epoch, FAILOVER_LIMIT)
        .await;
    let (new, _) = match elected {
        Ok(n) => n,
        Err(e) => return log.check(Err(e)),
    };
    log.check(if new == *healthy {
        Ok(format!("{healthy} elected, not the broken {broken}"))
    } else {
        Err(format!("{new} elected, expected the healthy {healthy}"))
    })?;
    // Writes again, through the router, on the new leader.
    let writers = Writers::start_at(&target.router_opts(), WRITERS, 100_000_000);
    flowing(log, &writers, format!("writes acknowledged on {new}")).await?;
    let rebuilt = stage
        .app
        .orchestrator
        .rebuild(CLUSTER, broken, None, None)
        .await;
    log.check(
        rebuilt
            .map(|r| {
                format!(
                    "{broken} rebuilt from {} ({} bytes) and replicating from {}",
                    r.source, r.bytes_copied, r.leader
                )
            })
            .map_err(|e| format!("rebuilding {broken}: {e}")),
    )?;
    let ledger = stopped(log, writers).await?;
    let present = target.none_lost(&new, &[&first, &ledger]).await;
    log.check(present.map(|p| {
        format!(
            "no acknowledged write lost: {} acknowledged, {} rows on {new}",
            first.acked_count() + ledger.acked_count(),
            p.len()
        )
    }))?;
    log.check(
        target
            .converged(CLUSTER, &new, &[old], SETTLE_LIMIT)
            .await
            .map(|()| format!("{broken} converged with {new} (GTID, CHECKSUM TABLE)")),
    )
}

async fn switchover(
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    old: &str,
) -> Result<(), ()> {
    let t0 = Instant::now();
    let report = stage.app.orchestrator.switchover(CLUSTER, None).await;
    let new = match report {
        Ok(r) => {
            log.check(Ok(format!(
                "switchover from {old} to {} at epoch {} in {} ms",
                r.new_leader,
                r.epoch,
                t0.elapsed().as_millis()
            )))?;
            r.new_leader
        }
        Err(e) => return log.check(Err(format!("switchover: {e}"))),
    };
    flowing(log, &writers, format!("writes acknowledged on {new}")).await?;
    let ledger = stopped(log, writers).await?;
    let codes = ledger.error_codes();
    log.check(if codes.is_empty() {
        Ok("clients saw no error".into())
    } else {
        Err(format!("clients saw errors: {codes:?}"))
    })?;
    let target = view(stage);
    let present = target.no_write_lost(&new, &ledger).await;
    log.check(present.map(|p| format!("no acknowledged write lost: {} rows on {new}", p.len())))?;
    log.check(
        target
            .converged(CLUSTER, &new, &[], SETTLE_LIMIT)
            .await
            .map(|()| format!("every node converged with {new}, {old} included")),
    )
}

/// The end of the scenarios without a failover: writers stopped, the leader and epoch
/// unchanged, nothing lost, every node converged.
async fn finish_without_failover(
    stage: &mut Stage,
    log: &mut Log<'_>,
    writers: Writers,
    leader: &str,
    epoch: u64,
) -> Result<(), ()> {
    let ledger = stopped(log, writers).await?;
    log.check(Ok(format!(
        "no writer left waiting; client errors: {:?}",
        ledger.error_codes()
    )))?;
    let target = view(stage);
    log.check(
        target
            .no_failover(CLUSTER, leader, epoch)
            .map(|()| format!("no failover: {leader} still leads at epoch {epoch}")),
    )?;
    let present = target.no_write_lost(leader, &ledger).await;
    log.check(present.map(|p| {
        format!(
            "no acknowledged write lost: {} acknowledged, {} rows on {leader}",
            ledger.acked_count(),
            p.len()
        )
    }))?;
    log.check(
        target
            .converged(CLUSTER, leader, &[], SETTLE_LIMIT)
            .await
            .map(|()| "every node converged (GTID, CHECKSUM TABLE)".into()),
    )
}

/// The checks' view of the stage.
fn view(stage: &Stage) -> Target<'_> {
    Target {
        app: &stage.app,
        local: &stage.local,
    }
}

/// A step: `FLOWING` more writes acknowledged, described by `what`.
async fn flowing(log: &mut Log<'_>, writers: &Writers, what: String) -> Result<(), ()> {
    let more = writers.ledger.wait_for_more(FLOWING, FLOW_LIMIT).await;
    log.check(more.map(|()| what))
}

/// A step: the writers stopped, none left waiting on its statement.
async fn stopped(log: &mut Log<'_>, writers: Writers) -> Result<Arc<writes::Ledger>, ()> {
    match writers.stop(STOP_LIMIT).await {
        Ok(l) => Ok(l),
        Err(e) => {
            let _ = log.check(Err(e));
            Err(())
        }
    }
}

/// Waits until the monitor publishes `addr` in a state `want` accepts.
async fn wait_node(
    stage: &Stage,
    addr: &str,
    want: impl Fn(NodeState) -> bool,
    limit: Duration,
) -> Result<NodeState, String> {
    let state = || {
        let t = stage.app.topology.load();
        t.cluster(CLUSTER)
            .and_then(|c| c.node(addr))
            .map(|n| n.state)
    };
    poll_until(limit, || state().filter(|s| want(*s)))
        .await
        .ok_or_else(|| format!("{addr} still {:?} after {limit:?}", state()))
}

/// Waits for an orchestrator event of `kind`; returns its message.
async fn wait_event(stage: &Stage, kind: &str, limit: Duration) -> Result<String, String> {
    poll_until(limit, || {
        let events = stage.app.orchestrator.events(CLUSTER).unwrap_or_default();
        events
            .into_iter()
            .find(|e| e.kind == kind)
            .map(|e| e.message)
    })
    .await
    .ok_or_else(|| format!("no {kind} event within {limit:?}"))
}

/// `switchyard scenario list`: one line per scenario.
pub fn list() -> String {
    let mut out = String::new();
    for s in Scenario::ALL {
        let root = if s.needs_root() { " (root)" } else { "" };
        out.push_str(&format!("{:<18} {}{root}\n", s.name(), s.describe()));
    }
    out
}

/// `switchyard scenario run`: runs `names` (every scenario when empty) one after the other,
/// printing each step as it is checked and, for a failed run, the orchestrator's events.
/// Returns whether all passed.
pub async fn run_named(names: &[String], settings: Option<&Config>) -> anyhow::Result<bool> {
    let picked: Vec<Scenario> = if names.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        names
            .iter()
            .map(|n| {
                Scenario::from_name(n).with_context(|| {
                    format!("no scenario {n:?} (`switchyard scenario list` names them)")
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut all = true;
    for s in picked {
        println!("== {s}: {}", s.describe());
        let outcome = run(s, settings, &mut |step| println!("{step}")).await?;
        if outcome.passed() {
            println!("== {s}: PASS\n");
        } else {
            all = false;
            println!("== {s}: FAIL; the orchestrator's events:");
            for e in &outcome.events {
                println!("   {e}");
            }
            println!();
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_found_by_its_name() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            assert!(!s.describe().is_empty());
        }
        assert_eq!(Scenario::from_name("nothing"), None);
    }

    #[test]
    fn a_run_passes_only_if_every_step_did() {
        let step = |ok| Step {
            at_ms: 0,
            ok,
            what: String::new(),
        };
        let outcome = |steps| Outcome {
            scenario: Scenario::KillLeader,
            steps,
            events: Vec::new(),
        };
        assert!(outcome(vec![step(true), step(true)]).passed());
        assert!(!outcome(vec![step(true), step(false)]).passed());
        assert!(!outcome(vec![]).passed());
        assert_eq!(step(false).to_string(), "FAIL +     0 ms  ");
    }
}
