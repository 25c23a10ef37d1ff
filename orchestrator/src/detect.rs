//! Failure detection and anti-flapping, as pure functions over what the monitor saw.
//!
//! A leader is dead only when the orchestrator has failed to reach it `down_after` times in
//! a row AND the replicas agree: every replica the monitor could ask since the failures began
//! has lost its IO thread's connection to it, or has received nothing from it (no event, no
//! heartbeat) for [`stall_limit`] of its heartbeat period. One lost network path
//! (orchestrator to leader) is therefore not enough to fail over: the leader is then merely
//! suspect. The second way to agree is what makes a leader that hangs (frozen, or cut off
//! without a reset) detectable before the replicas' `slave_net_timeout` runs out.

use std::collections::VecDeque;
use std::time::Duration;

use shard_map::NodeState;
use tokio::time::Instant;

use crate::monitor::Replication;

/// The leader as the monitor sees it.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub addr: String,
    pub state: NodeState,
    /// Failed polls in a row.
    pub failures: u32,
    /// When the current run of failed polls began.
    pub failing_since: Option<Instant>,
    /// How long its sessions have been unable to commit, what the monitor saw, and whether
    /// for want of disk space (see [`crate::monitor::StuckWrites`]).
    pub writes_stuck: Option<(Duration, String, bool)>,
}

/// How long a leader's sessions may be unable to commit before it counts as unable to write:
/// waiting for disk space, or stuck in their commit while the binlog does not move (`None`:
/// never judged so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteLimits {
    pub disk_full: Option<Duration>,
    pub commit_stall: Option<Duration>,
}

/// A replica as the monitor sees it.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub addr: String,
    /// Its last poll succeeded.
    pub up: bool,
    /// When its last successful poll was recorded.
    pub last_ok_at: Option<Instant>,
    /// Its `SHOW SLAVE STATUS`, if it has replication configured.
    pub replication: Option<Replication>,
    /// How long its stream has received nothing although its IO thread says `Yes`, when that
    /// is past [`stall_limit`] (see [`crate::monitor::NodeHealth::stream_stalled`]).
    pub stalled: Option<Duration>,
}

/// How long a replica's stream may receive nothing before it counts as having lost its
/// source: three heartbeat periods, and at least a second.
pub fn stall_limit(heartbeat_period_ms: u64) -> Duration {
    Duration::from_millis(heartbeat_period_ms.saturating_mul(3).max(1000))
}

/// What the detector concludes about a cluster's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The leader has not been polled yet.
    Unknown,
    /// The last poll reached it.
    Healthy,
    /// Polls are failing, but not yet `down_after` of them, or the replicas' answers since
    /// the failures began are still on their way.
    Failing,
    /// Unreachable for the orchestrator, but not dead by the replicas' account.
    Suspect(String),
    /// Unreachable, and the replicas agree.
    Dead(String),
    /// Reachable, but it cannot commit: its sessions have waited for disk space for longer
    /// than the limit.
    CannotWrite(String),
}

/// Decides on the leader from the monitor's view of it and of its replicas. A leader whose
/// sessions have been unable to commit for longer than `limits` allow cannot write.
pub fn detect(
    leader: &LeaderView,
    replicas: &[ReplicaView],
    down_after: u32,
    limits: WriteLimits,
) -> Verdict {
    match leader.state {
        NodeState::Unknown => return Verdict::Unknown,
        NodeState::Up => {
            let limit = |full: bool| {
                if full {
                    limits.disk_full
                } else {
                    limits.commit_stall
                }
            };
            return match &leader.writes_stuck {
                Some((waited, what, full)) if limit(*full).is_some_and(|l| *waited >= l) => {
                    Verdict::CannotWrite(format!(
                        "{} cannot write: {what} for {} ms",
                        leader.addr,
                        waited.as_millis()
                    ))
                }
                _ => Verdict::Healthy,
            };
        }
        NodeState::Suspect | NodeState::Down => {}
    }
    if leader.failures < down_after.max(1) {
        return Verdict::Failing;
    }
    let asked: Vec<(&ReplicaView, &Replication)> = replicas
        .iter()
        .filter(|r| r.up)
        .filter_map(|r| r.replication.as_ref().map(|rep| (r, rep)))
        .collect();
    // Answers from before the failures began say nothing about them: wait for fresh ones.
    let fresh = |r: &ReplicaView| match (r.last_ok_at, leader.failing_since) {
        (Some(ok), Some(since)) => ok > since,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if asked.iter().any(|(r, _)| !fresh(r)) {
        return Verdict::Failing;
    }
    let unreachable = format!("{} unreachable for {} polls", leader.addr, leader.failures);
    if asked.is_empty() {
        return Verdict::Suspect(format!(
            "{unreachable}, and no reachable replica can confirm it is down"
        ));
    }
    let still: Vec<&str> = asked
        .iter()
        .filter(|(r, rep)| rep.io_running && r.stalled.is_none())
        .map(|(r, _)| r.addr.as_str())
        .collect();
    if !still.is_empty() {
        return Verdict::Suspect(format!(
            "{unreachable}, but replicas still replicate from it (Slave_IO_Running=Yes): {}",
            still.join(", ")
        ));
    }
    let views: Vec<String> = asked
        .iter()
        .map(|(r, rep)| match (&rep.last_io_error, r.stalled) {
            (_, Some(quiet)) if rep.io_running => format!(
                "{} ({}, but nothing received for {} ms: no event, no heartbeat)",
                r.addr,
                rep.io_state,
                quiet.as_millis()
            ),
            (Some(e), _) => format!("{} ({}: {e})", r.addr, rep.io_state),
            (None, _) => format!("{} ({})", r.addr, rep.io_state),
        })
        .collect();
    Verdict::Dead(format!(
        "{unreachable}; replicas lost it too: {}",
        views.join("; ")
    ))
}

/// The anti-flapping rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverLimits {
    /// At most this many failovers ...
    pub limit: u32,
    /// ... within this window.
    pub window: Duration,
    /// And at least this long between two of them.
    pub min_interval: Duration,
}

/// When a cluster's recent failovers started.
#[derive(Debug, Clone, Default)]
pub struct FailoverHistory {
    started: VecDeque<Instant>,
}

impl FailoverHistory {
    /// Whether another failover may start at `now`; if not, why (naming the setting).
    pub fn check(&self, now: Instant, limits: &FailoverLimits) -> Result<(), String> {
        if let Some(last) = self.started.back() {
            let since = now.saturating_duration_since(*last);
            if since < limits.min_interval {
                return Err(format!(
                    "too soon after the last failover: {} s ago, failover_min_interval_s = {}",
                    since.as_secs(),
                    limits.min_interval.as_secs()
                ));
            }
        }
        let recent = self
            .started
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < limits.window)
            .count();
        if recent >= limits.limit as usize {
            return Err(format!(
                "failover limit reached: {recent} failover(s) in the last {} s \
                 (failover_limit = {}, failover_limit_window_s = {}); reset the limits to allow \
                 another",
                limits.window.as_secs(),
                limits.limit,
                limits.window.as_secs()
            ));
        }
        Ok(())
    }

    /// Notes a failover started at `now`, forgetting those older than `window`.
    pub fn record(&mut self, now: Instant, window: Duration) {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.started.pop_front();
        }
        self.started.push_back(now);
    }

    /// The start times as wall-clock milliseconds since the Unix epoch (`now` is `now_ms`).
    pub fn to_unix_ms(&self, now: Instant, now_ms: u64) -> Vec<u64> {
        self.started
            .iter()
            .map(|t| now_ms.saturating_sub(now.saturating_duration_since(*t).as_millis() as u64))
            .collect()
    }

    /// A history of failovers started at these wall-clock times (`now` is `now_ms`); times
    /// in the future count as now.
    pub fn from_unix_ms(times: &[u64], now: Instant, now_ms: u64) -> FailoverHistory {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        FailoverHistory {
            started: sorted
                .into_iter()
                .map(|t| {
                    now.checked_sub(Duration::from_millis(now_ms.saturating_sub(t)))
                        .unwrap_or(now)
                })
                .collect(),
        }
    }

    /// Forgets every failover (the operator's reset).
    pub fn reset(&mut self) {
        self.started.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_history_survives_a_trip_through_wall_clock_times() {
        let now = Instant::now() + Duration::from_secs(3600);
        let now_ms = 1_800_000_000_000;
        let mut h = FailoverHistory::default();
        h.record(now - Duration::from_secs(100), Duration::from_secs(3600));
        h.record(now - Duration::from_secs(10), Duration::from_secs(3600));
        let ms = h.to_unix_ms(now, now_ms);
        assert_eq!(ms, vec![now_ms - 100_000, now_ms - 10_000]);
        // Read back by a process started later.
        let later = now + Duration::from_secs(5);
        let back = FailoverHistory::from_unix_ms(&ms, later, now_ms + 5_000);
        assert_eq!(back.to_unix_ms(later, now_ms + 5_000), ms);
        let limits = FailoverLimits {
            limit: 2,
            window: Duration::from_secs(3600),
            min_interval: Duration::from_secs(0),
        };
        assert!(back
            .check(later, &limits)
            .unwrap_err()
            .contains("failover limit reached"));
    }

    const L: &str = "127.0.0.1:1";

    fn replication(io: &str, error: Option<&str>) -> Replication {
        Replication {
            source: L.into(),
            io_state: io.into(),
            io_running: io == "Yes",
            sql_running: true,
            lag_seconds: None,
            last_io_error: error.map(Into::into),
            last_sql_error: None,
            gtid_io_pos: "0-1-5".into(),
            progress: None,
        }
    }

    #[test]
    fn detection_table() {
        let t0 = Instant::now();
        let before = t0 - Duration::from_millis(100);
        let after = t0 + Duration::from_millis(100);
        let leader = |state, failures| LeaderView {
            addr: L.into(),
            state,
            failures,
            failing_since: (failures > 0).then_some(t0),
            writes_stuck: None,
        };
        let replica = |addr: &str, up: bool, at: Instant, rep: Option<Replication>| ReplicaView {
            addr: addr.into(),
            up,
            last_ok_at: Some(at),
            replication: rep,
            stalled: None,
        };

        let lost = || {
            Some(replication(
                "Connecting",
                Some("error reconnecting to master"),
            ))
        };
        let stopped = || Some(replication("No", None));
        let running = || Some(replication("Yes", None));
        let stalled = |addr: &str| ReplicaView {
            stalled: Some(Duration::from_millis(1600)),
            ..replica(addr, true, after, running())
        };
        struct Case {
            name: &'static str,
            leader: LeaderView,
            replicas: Vec<ReplicaView>,
            expect: &'static str,
        }
        let cases = vec![
            Case {
                name: "never polled",
                leader: leader(NodeState::Unknown, 0),
                replicas: vec![],
                expect: "unknown",
            },
            Case {
                name: "up",
                leader: leader(NodeState::Up, 0),
                replicas: vec![replica("r1", true, after, lost())],
                expect: "healthy",
            },
            Case {
                name: "fewer failures than down_after",
                leader: leader(NodeState::Suspect, 2),
                replicas: vec![replica("r1", true, after, lost())],
                expect: "failing",
            },
            Case {
                name: "down and every replica lost it",
                leader: leader(NodeState::Down, 3),
                replicas: vec![
                    replica("r1", true, after, lost()),
                    replica("r2", true, after, stopped()),
                ],
                expect: "dead",
            },
            Case {
                name: "down for us, a replica still replicates (false-positive guard)",
                leader: leader(NodeState::Down, 3),
                replicas: vec![
                    replica("r1", true, after, lost()),
                    replica("r2", true, after, running()),
                ],
                expect: "suspect",
            },
            Case {
                name: "down, and the replicas' streams stalled although their IO threads run",
                leader: leader(NodeState::Down, 3),
                replicas: vec![stalled("r1"), replica("r2", true, after, lost())],
                expect: "dead",
            },
            Case {
                name: "one replica stalled, another still receiving: not dead",
                leader: leader(NodeState::Down, 3),
                replicas: vec![stalled("r1"), replica("r2", true, after, running())],
                expect: "suspect",
            },
            Case {
                name: "a replica's answer predates the failures: wait for a fresh one",
                leader: leader(NodeState::Down, 3),
                replicas: vec![
                    replica("r1", true, after, lost()),
                    replica("r2", true, before, lost()),
                ],
                expect: "failing",
            },
            Case {
                name: "unreachable replicas do not vote",
                leader: leader(NodeState::Down, 3),
                replicas: vec![
                    replica("r1", true, after, lost()),
                    replica("r2", false, before, running()),
                ],
                expect: "dead",
            },
            Case {
                name: "nodes without replication do not vote",
                leader: leader(NodeState::Down, 4),
                replicas: vec![
                    replica("r1", true, after, None),
                    replica("r2", true, after, lost()),
                ],
                expect: "dead",
            },
            Case {
                name: "nobody can confirm",
                leader: leader(NodeState::Down, 3),
                replicas: vec![
                    replica("r1", false, before, lost()),
                    replica("r2", true, after, None),
                ],
                expect: "suspect",
            },
        ];
        for case in cases {
            let got = detect(&case.leader, &case.replicas, 3, WriteLimits::default());
            let kind = match &got {
                Verdict::Unknown => "unknown",
                Verdict::Healthy => "healthy",
                Verdict::Failing => "failing",
                Verdict::Suspect(_) => "suspect",
                Verdict::Dead(_) => "dead",
                Verdict::CannotWrite(_) => "cannot write",
            };
            assert_eq!(kind, case.expect, "{}: {got:?}", case.name);
        }
    }

    #[test]
    fn a_leader_whose_commits_are_stuck_cannot_write_once_past_its_limit() {
        let stuck = |ms, full| LeaderView {
            addr: L.into(),
            state: NodeState::Up,
            failures: 0,
            failing_since: None,
            writes_stuck: Some((
                Duration::from_millis(ms),
                "stuck: 2 session(s)".into(),
                full,
            )),
        };
        let limits = WriteLimits {
            disk_full: Some(Duration::from_secs(1)),
            commit_stall: Some(Duration::from_secs(10)),
        };
        assert_eq!(detect(&stuck(400, true), &[], 3, limits), Verdict::Healthy);
        match detect(&stuck(1200, true), &[], 3, limits) {
            Verdict::CannotWrite(why) => {
                assert!(why.contains("stuck") && why.contains("1200 ms"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // A stalled commit has its own, longer limit.
        assert_eq!(
            detect(&stuck(1200, false), &[], 3, limits),
            Verdict::Healthy
        );
        assert!(matches!(
            detect(&stuck(10_500, false), &[], 3, limits),
            Verdict::CannotWrite(_)
        ));
        // Disabled: never judged.
        let off = WriteLimits::default();
        assert_eq!(detect(&stuck(60_000, true), &[], 3, off), Verdict::Healthy);
        assert_eq!(detect(&stuck(60_000, false), &[], 3, off), Verdict::Healthy);
        // Unreachable: the usual rules, whatever it showed before.
        let down = LeaderView {
            state: NodeState::Down,
            failures: 3,
            failing_since: Some(Instant::now()),
            ..stuck(5000, true)
        };
        assert!(matches!(detect(&down, &[], 3, limits), Verdict::Suspect(_)));
    }

    #[test]
    fn verdicts_name_the_evidence() {
        let t0 = Instant::now();
        let leader = LeaderView {
            addr: L.into(),
            state: NodeState::Down,
            failures: 3,
            failing_since: Some(t0),
            writes_stuck: None,
        };
        let r = |io: &str| ReplicaView {
            addr: "127.0.0.1:2".into(),
            up: true,
            last_ok_at: Some(t0 + Duration::from_millis(1)),
            replication: Some(replication(io, None)),
            stalled: None,
        };
        match detect(&leader, &[r("Yes")], 3, WriteLimits::default()) {
            Verdict::Suspect(why) => {
                assert!(why.contains("127.0.0.1:2") && why.contains("Yes"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match detect(&leader, &[r("Connecting")], 3, WriteLimits::default()) {
            Verdict::Dead(why) => assert!(why.contains("Connecting"), "{why}"),
            other => panic!("{other:?}"),
        }
        let quiet = ReplicaView {
            stalled: Some(Duration::from_millis(1700)),
            ..r("Yes")
        };
        match detect(&leader, &[quiet], 3, WriteLimits::default()) {
            Verdict::Dead(why) => assert!(why.contains("nothing received for 1700 ms"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stall_is_three_heartbeat_periods_and_at_least_a_second() {
        assert_eq!(stall_limit(500), Duration::from_millis(1500));
        assert_eq!(stall_limit(100), Duration::from_millis(1000));
        assert_eq!(stall_limit(2000), Duration::from_millis(6000));
    }

    #[test]
    fn anti_flapping_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let limits = |limit, window, min| FailoverLimits {
            limit,
            window: s(window),
            min_interval: s(min),
        };
        // (earlier failovers, seconds after t0, now, limits, allowed, reason contains)
        let cases = [
            (vec![], 0, limits(1, 3600, 60), true, ""),
            (
                vec![0],
                10,
                limits(3, 3600, 60),
                false,
                "failover_min_interval_s = 60",
            ),
            (vec![0], 61, limits(3, 3600, 60), true, ""),
            (vec![0], 61, limits(1, 3600, 0), false, "failover_limit = 1"),
            (vec![0], 3601, limits(1, 3600, 0), true, ""),
            (
                vec![0, 100, 200],
                300,
                limits(3, 3600, 0),
                false,
                "3 failover(s)",
            ),
            (vec![0, 100, 200], 3650, limits(3, 3600, 0), true, ""),
        ];
        for (i, (past, now, limits, allowed, reason)) in cases.into_iter().enumerate() {
            let mut h = FailoverHistory::default();
            for p in past {
                h.record(t0 + s(p), limits.window);
            }
            let got = h.check(t0 + s(now), &limits);
            assert_eq!(got.is_ok(), allowed, "case {i}: {got:?}");
            if let Err(why) = got {
                assert!(why.contains(reason), "case {i}: {why}");
            }
        }
        let mut h = FailoverHistory::default();
        h.record(t0, s(3600));
        h.reset();
        assert!(h.check(t0, &limits(1, 3600, 60)).is_ok(), "reset forgets");
    }
}
