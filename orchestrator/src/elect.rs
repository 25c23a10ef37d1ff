//! Electing the replica to promote, as a pure function over fresh facts about each replica.
//!
//! The winner is the eligible replica that has received the most of the leader's replication
//! domain (so that, with semi-sync, every transaction a client saw committed survives), with
//! the `preferred` flag breaking ties, then the address. Not eligible:
//!
//! - `ignored` or `maintenance` nodes, nodes that do not replicate;
//! - a replica whose SQL thread stopped on an error (its data is in doubt);
//! - a replica missing a setting a leader needs (`log_bin`, `gtid_strict_mode`,
//!   `log_slave_updates`);
//! - a replica with errant transactions: a GTID in its `gtid_binlog_pos` written by a server
//!   other than the leader, in a domain the leader does not have or beyond the leader's last
//!   known position in that domain (a write made on the replica itself);
//! - depending on the rules: a replica whose IO or SQL thread is not running (a SQL thread
//!   stopped without an error counts as lagging), or that lags more than `max_lag_s`.
//!
//! A failover also refuses a winner that has received less than some other replica (ignored
//! and non-replicating ones aside): promoting it would lose the transactions only that replica has, and that
//! replica could not follow the new leader.

use shard_map::NodeFlags;

use crate::gtid::{self, GtidPos};

/// Fresh facts about one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    pub addr: String,
    pub flags: NodeFlags,
    /// It has replication configured.
    pub replicating: bool,
    pub io_running: bool,
    pub sql_running: bool,
    /// `Last_SQL_Error`, when the SQL thread stopped on one.
    pub sql_error: Option<String>,
    /// `Seconds_Behind_Master`, or the last known value when the server says `NULL`.
    pub lag_seconds: Option<u64>,
    /// How far it has received (`Gtid_IO_Pos`, or `gtid_slave_pos` where that is further).
    pub received: GtidPos,
    /// `@@gtid_binlog_pos`.
    pub binlog: GtidPos,
    /// Settings that keep it from leading, e.g. `log_bin is OFF`.
    pub setting_problems: Vec<String>,
}

/// What the elected replica must have in common with the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderFacts {
    /// The leader's `gtid_domain_id`: positions are compared in this domain.
    pub domain: u32,
    /// The leader's `server_id`, when it was ever seen.
    pub server_id: Option<u32>,
    /// The leader's last known `gtid_binlog_pos` (empty when never seen).
    pub binlog: GtidPos,
}

/// How strict the election is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The IO thread must be running (switchover).
    pub require_io: bool,
    /// The SQL thread must be running; otherwise a stopped SQL thread (without error) counts
    /// as lagging and is allowed.
    pub require_sql: bool,
    /// The most a candidate may lag, if limited.
    pub max_lag_s: Option<u64>,
    /// Refuse a winner that has received less than another replica (failover).
    pub lossless: bool,
}

/// The outcome of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub winner: String,
    /// The winner's position in the leader's domain.
    pub winner_seq: u64,
    /// Eligible candidates, best first (the winner first unless it was requested).
    pub ranking: Vec<String>,
    /// Every replica that was not eligible, with the reason.
    pub excluded: Vec<(String, String)>,
}

/// Why nobody was elected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("no eligible replica: {}", reasons(.0))]
    NoCandidate(Vec<(String, String)>),
    #[error("{0} is not a replica of this cluster")]
    NotAReplica(String),
    #[error("{addr} is not eligible: {reason}")]
    NotEligible { addr: String, reason: String },
    #[error(
        "{winner} (the best eligible replica, at {winner_pos}) has received less than {ahead} \
         (at {ahead_pos}); promoting it would lose transactions"
    )]
    WouldLoseTransactions {
        winner: String,
        winner_pos: String,
        ahead: String,
        ahead_pos: String,
    },
}

fn reasons(list: &[(String, String)]) -> String {
    if list.is_empty() {
        return "the cluster has no replicas".into();
    }
    list.iter()
        .map(|(a, r)| format!("{a}: {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why `c` cannot be elected under `rules`, if it cannot.
pub fn ineligibility(c: &Candidate, leader: &LeaderFacts, rules: &Rules) -> Option<String> {
    if c.flags.ignored {
        return Some("ignored by the operator".into());
    }
    if c.flags.maintenance {
        return Some("under maintenance".into());
    }
    if !c.replicating {
        return Some("not replicating".into());
    }
    if let Some(e) = &c.sql_error {
        return Some(format!(
            "replication broken: SQL thread stopped on error: {e}"
        ));
    }
    if !c.setting_problems.is_empty() {
        return Some(c.setting_problems.join(", "));
    }
    let errant = errant_transactions(&c.binlog, leader);
    if !errant.is_empty() {
        return Some(format!(
            "errant transactions not from the leader: {}",
            gtid::list(&errant)
        ));
    }
    if rules.require_io && !c.io_running {
        return Some("IO thread not running".into());
    }
    if rules.require_sql && !c.sql_running {
        return Some("SQL thread not running (lagging)".into());
    }
    if let (Some(max), Some(lag)) = (rules.max_lag_s, c.lag_seconds) {
        if lag > max {
            return Some(format!("lagging {lag} s > max_lag_s {max}"));
        }
    }
    None
}

/// The GTIDs of `binlog` that a replica wrote itself rather than received from the leader.
pub fn errant_transactions(binlog: &GtidPos, leader: &LeaderFacts) -> Vec<gtid::Gtid> {
    let Some(leader_id) = leader.server_id else {
        // Never saw the leader: nothing to compare with.
        return Vec::new();
    };
    binlog
        .iter()
        .filter(|g| g.server_id != leader_id)
        .filter(|g| match leader.binlog.get(g.domain) {
            None => true,
            Some(l) => g.seq > l.seq,
        })
        .collect()
}

/// Elects among `candidates` (every replica of the cluster), or the `requested` one if it is
/// eligible.
pub fn elect(
    candidates: &[Candidate],
    leader: &LeaderFacts,
    rules: &Rules,
    requested: Option<&str>,
) -> Result<Election, ElectionError> {
    let mut eligible: Vec<&Candidate> = Vec::new();
    let mut excluded = Vec::new();
    for c in candidates {
        match ineligibility(c, leader, rules) {
            None => eligible.push(c),
            Some(reason) => excluded.push((c.addr.clone(), reason)),
        }
    }
    let seq = |c: &Candidate| c.received.seq(leader.domain);
    eligible.sort_by(|a, b| {
        seq(b)
            .cmp(&seq(a))
            .then(b.flags.preferred.cmp(&a.flags.preferred))
            .then(a.addr.cmp(&b.addr))
    });
    let winner = match requested {
        Some(to) => {
            if !candidates.iter().any(|c| c.addr == to) {
                return Err(ElectionError::NotAReplica(to.into()));
            }
            if let Some((_, reason)) = excluded.iter().find(|(a, _)| a == to) {
                return Err(ElectionError::NotEligible {
                    addr: to.into(),
                    reason: reason.clone(),
                });
            }
            eligible.iter().find(|c| c.addr == to).copied()
        }
        None => eligible.first().copied(),
    };
    let Some(winner) = winner else {
        return Err(ElectionError::NoCandidate(excluded));
    };
    if rules.lossless {
        let ahead = candidates
            .iter()
            .filter(|c| c.replicating && !c.flags.ignored)
            .max_by_key(|c| seq(c))
            .filter(|c| seq(c) > seq(winner));
        if let Some(ahead) = ahead {
            let at = |c: &Candidate| {
                c.received
                    .get(leader.domain)
                    .map_or_else(|| "nothing".to_owned(), |g| g.to_string())
            };
            return Err(ElectionError::WouldLoseTransactions {
                winner: winner.addr.clone(),
                winner_pos: at(winner),
                ahead: ahead.addr.clone(),
                ahead_pos: at(ahead),
            });
        }
    }
    Ok(Election {
        winner: winner.addr.clone(),
        winner_seq: seq(winner),
        ranking: eligible.iter().map(|c| c.addr.clone()).collect(),
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPos {
        GtidPos::parse(s).expect("position")
    }

    /// A healthy, caught-up replica at `received`.
    fn cand(addr: &str, received: &str) -> Candidate {
        Candidate {
            addr: addr.into(),
            replicating: true,
            io_running: true,
            sql_running: true,
            lag_seconds: Some(0),
            received: pos(received),
            binlog: pos(received),
            ..Candidate::default()
        }
    }

    fn leader() -> LeaderFacts {
        LeaderFacts {
            domain: 0,
            server_id: Some(1),
            binlog: pos("0-1-10"),
        }
    }

    const FAILOVER: Rules = Rules {
        require_io: false,
        require_sql: true,
        max_lag_s: Some(30),
        lossless: true,
    };
    const SWITCHOVER: Rules = Rules {
        require_io: true,
        require_sql: true,
        max_lag_s: Some(30),
        lossless: false,
    };
    const ANYTHING_GOES: Rules = Rules {
        require_io: false,
        require_sql: false,
        max_lag_s: None,
        lossless: false,
    };

    #[test]
    fn election_table() {
        let preferred = |mut c: Candidate| {
            c.flags.preferred = true;
            c
        };
        let with = |mut c: Candidate, f: &dyn Fn(&mut Candidate)| {
            f(&mut c);
            c
        };
        struct Case {
            name: &'static str,
            candidates: Vec<Candidate>,
            rules: Rules,
            requested: Option<&'static str>,
            // Ok(winner) or Err(text the error must contain)
            expect: Result<&'static str, &'static str>,
        }
        let cases = vec![
            Case {
                name: "most received wins",
                candidates: vec![cand("a", "0-1-9"), cand("b", "0-1-10")],
                rules: SWITCHOVER,
                requested: None,
                expect: Ok("b"),
            },
            Case {
                name: "preferred breaks ties",
                candidates: vec![cand("a", "0-1-10"), preferred(cand("b", "0-1-10"))],
                rules: SWITCHOVER,
                requested: None,
                expect: Ok("b"),
            },
            Case {
                name: "preferred does not beat a further replica",
                candidates: vec![cand("a", "0-1-10"), preferred(cand("b", "0-1-9"))],
                rules: SWITCHOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "address breaks remaining ties",
                candidates: vec![cand("b", "0-1-10"), cand("a", "0-1-10")],
                rules: SWITCHOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "other domains do not count",
                candidates: vec![cand("a", "0-1-10,1-1-99"), cand("b", "0-1-10")],
                rules: ANYTHING_GOES,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "ignored and maintenance are never elected",
                candidates: vec![
                    with(cand("a", "0-1-10"), &|c| c.flags.ignored = true),
                    with(cand("b", "0-1-10"), &|c| c.flags.maintenance = true),
                    cand("c", "0-1-10"),
                ],
                rules: SWITCHOVER,
                requested: None,
                expect: Ok("c"),
            },
            Case {
                name: "SQL error excludes",
                candidates: vec![with(cand("a", "0-1-10"), &|c| {
                    c.sql_running = false;
                    c.sql_error = Some("Duplicate entry".into());
                })],
                rules: ANYTHING_GOES,
                requested: None,
                expect: Err("Duplicate entry"),
            },
            Case {
                name: "SQL thread stopped is lagging: refused unless allowed",
                candidates: vec![with(cand("a", "0-1-10"), &|c| c.sql_running = false)],
                rules: FAILOVER,
                requested: None,
                expect: Err("SQL thread not running"),
            },
            Case {
                name: "SQL thread stopped, lagging allowed",
                candidates: vec![with(cand("a", "0-1-10"), &|c| c.sql_running = false)],
                rules: Rules {
                    require_sql: false,
                    max_lag_s: None,
                    ..FAILOVER
                },
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "all lagging",
                candidates: vec![
                    with(cand("a", "0-1-10"), &|c| c.lag_seconds = Some(31)),
                    with(cand("b", "0-1-10"), &|c| c.lag_seconds = Some(100)),
                ],
                rules: FAILOVER,
                requested: None,
                expect: Err("lagging 31 s > max_lag_s 30"),
            },
            Case {
                name: "IO thread down refused for a switchover only",
                candidates: vec![with(cand("a", "0-1-10"), &|c| c.io_running = false)],
                rules: SWITCHOVER,
                requested: None,
                expect: Err("IO thread not running"),
            },
            Case {
                name: "IO thread down fine for a failover",
                candidates: vec![with(cand("a", "0-1-10"), &|c| c.io_running = false)],
                rules: FAILOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "errant transaction in the leader's domain",
                candidates: vec![
                    with(cand("a", "0-1-10"), &|c| c.binlog = pos("0-7-11")),
                    cand("b", "0-1-9"),
                ],
                rules: ANYTHING_GOES,
                requested: None,
                expect: Ok("b"),
            },
            Case {
                name: "errant domain",
                candidates: vec![with(cand("a", "0-1-10"), &|c| {
                    c.binlog = pos("0-1-10,5-7-1")
                })],
                rules: ANYTHING_GOES,
                requested: None,
                expect: Err("errant transactions not from the leader: 5-7-1"),
            },
            Case {
                name: "the leader's own later transactions are not errant",
                candidates: vec![cand("a", "0-1-12")],
                rules: FAILOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "missing settings",
                candidates: vec![with(cand("a", "0-1-10"), &|c| {
                    c.setting_problems = vec!["log_slave_updates is OFF".into()]
                })],
                rules: SWITCHOVER,
                requested: None,
                expect: Err("log_slave_updates is OFF"),
            },
            Case {
                name: "requested and eligible, though not the best",
                candidates: vec![cand("a", "0-1-10"), cand("b", "0-1-9")],
                rules: SWITCHOVER,
                requested: Some("b"),
                expect: Ok("b"),
            },
            Case {
                name: "requested but lagging",
                candidates: vec![
                    cand("a", "0-1-10"),
                    with(cand("b", "0-1-9"), &|c| c.lag_seconds = Some(99)),
                ],
                rules: SWITCHOVER,
                requested: Some("b"),
                expect: Err("b is not eligible: lagging 99 s"),
            },
            Case {
                name: "requested but unknown",
                candidates: vec![cand("a", "0-1-10")],
                rules: SWITCHOVER,
                requested: Some("zz"),
                expect: Err("zz is not a replica"),
            },
            Case {
                name: "lossless: the only eligible replica is behind a broken one",
                candidates: vec![
                    cand("a", "0-1-9"),
                    with(cand("b", "0-1-10"), &|c| {
                        c.sql_running = false;
                        c.sql_error = Some("x".into());
                    }),
                ],
                rules: FAILOVER,
                requested: None,
                expect: Err("would lose transactions"),
            },
            Case {
                name: "lossless ignores ignored replicas",
                candidates: vec![
                    cand("a", "0-1-9"),
                    with(cand("b", "0-1-10"), &|c| c.flags.ignored = true),
                ],
                rules: FAILOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "lossless ignores nodes that do not replicate",
                candidates: vec![
                    cand("a", "0-1-9"),
                    with(cand("b", "0-1-10"), &|c| c.replicating = false),
                ],
                rules: FAILOVER,
                requested: None,
                expect: Ok("a"),
            },
            Case {
                name: "no replicas",
                candidates: vec![],
                rules: FAILOVER,
                requested: None,
                expect: Err("no replicas"),
            },
        ];
        for case in cases {
            let got = elect(&case.candidates, &leader(), &case.rules, case.requested);
            match (&got, case.expect) {
                (Ok(e), Ok(w)) => assert_eq!(e.winner, w, "{}", case.name),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{}: {e}", case.name)
                }
                _ => panic!("{}: got {got:?}, expected {:?}", case.name, case.expect),
            }
        }
    }

    #[test]
    fn ranking_and_exclusions_are_reported() {
        let mut lagging = cand("c", "0-1-10");
        lagging.lag_seconds = Some(60);
        let e = elect(
            &[cand("a", "0-1-8"), cand("b", "0-1-10"), lagging],
            &leader(),
            &SWITCHOVER,
            None,
        )
        .expect("elected");
        assert_eq!(e.ranking, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(e.winner_seq, 10);
        assert_eq!(e.excluded.len(), 1);
        assert!(e.excluded[0].1.contains("lagging 60 s"));
    }

    #[test]
    fn no_errant_check_without_a_known_leader() {
        let unknown = LeaderFacts::default();
        assert!(errant_transactions(&pos("0-7-99,3-3-3"), &unknown).is_empty());
    }
}
