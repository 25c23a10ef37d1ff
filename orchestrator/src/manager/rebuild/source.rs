//! Which node a rebuild copies: the requested one if it is fit, else the most up-to-date
//! healthy replica of the leader (sparing the leader the dump's reads), else the leader.

use super::super::node::NodeSnapshot;
use crate::gtid::{self, GtidPos};

/// What the choice of a source knows of one node other than the target and the leader.
#[derive(Debug, Clone)]
pub(crate) struct SourceFacts {
    pub addr: String,
    /// Why it may not be copied from; `None` when it may.
    pub unfit: Option<String>,
    /// How far it has applied.
    pub applied: GtidPos,
}

/// Why `snap` (a node other than the leader) may not be copied from, if it may not: it must
/// replicate from the leader with both threads running, not be under maintenance, and hold
/// nothing the leader lacks.
pub(crate) fn unfit_source(
    snap: &NodeSnapshot,
    leader: &str,
    leader_binlog: &GtidPos,
    maintenance: bool,
) -> Option<String> {
    let Some(r) = &snap.replication else {
        return Some("it does not replicate".to_owned());
    };
    if r.source != leader {
        return Some(format!("it replicates from {}, not the leader", r.source));
    }
    if !r.io_running {
        return Some(format!("its IO thread is {}", r.io_state));
    }
    if !r.sql_running {
        return Some(format!(
            "its SQL thread is stopped{}",
            r.last_sql_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if maintenance {
        return Some("it is under maintenance".to_owned());
    }
    let extra = GtidPos::parse_lossy(&snap.gtid_binlog_pos).not_in(leader_binlog);
    if !extra.is_empty() {
        return Some(format!(
            "it has transactions the leader lacks: {}",
            gtid::list(&extra)
        ));
    }
    None
}

/// The node to copy from: `requested` if it is fit (the leader always is), else the fit
/// replica that has applied the most in the leader's `domain`, else the leader. `Err` says why
/// the requested one may not be used.
pub(crate) fn choose_source(
    requested: Option<&str>,
    node: &str,
    leader: &str,
    domain: u32,
    replicas: &[SourceFacts],
) -> Result<String, String> {
    if let Some(r) = requested {
        if r == node {
            return Err(format!("{node} cannot be rebuilt from itself"));
        }
        if r == leader {
            return Ok(leader.to_owned());
        }
        return match replicas.iter().find(|f| f.addr == r) {
            None => Err(format!("{r} is not a node of the cluster")),
            Some(SourceFacts {
                unfit: Some(why), ..
            }) => Err(format!("{r} is not a healthy source: {why}")),
            Some(f) => Ok(f.addr.clone()),
        };
    }
    let best = replicas
        .iter()
        .filter(|f| f.addr != node && f.addr != leader && f.unfit.is_none())
        // The furthest; among equals, the first address (a stable choice).
        .max_by(|a, b| {
            a.applied
                .seq(domain)
                .cmp(&b.applied.seq(domain))
                .then_with(|| b.addr.cmp(&a.addr))
        });
    Ok(best.map_or_else(|| leader.to_owned(), |f| f.addr.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Replication;

    fn facts(addr: &str, seq: u64, unfit: Option<&str>) -> SourceFacts {
        SourceFacts {
            addr: addr.into(),
            unfit: unfit.map(str::to_owned),
            applied: GtidPos::parse(&format!("0-1-{seq}")).unwrap(),
        }
    }

    #[test]
    fn the_source_is_the_furthest_healthy_replica_else_the_leader() {
        let replicas = [
            facts("b:1", 90, None),
            facts("c:1", 100, None),
            facts("d:1", 120, Some("its SQL thread is stopped")),
        ];
        assert_eq!(
            choose_source(None, "a:1", "l:1", 0, &replicas),
            Ok("c:1".into())
        );
        // Equals: the first address.
        let tie = [facts("c:1", 100, None), facts("b:1", 100, None)];
        assert_eq!(choose_source(None, "a:1", "l:1", 0, &tie), Ok("b:1".into()));
        // The target itself is never its source, even when listed.
        let only_self = [facts("a:1", 500, None)];
        assert_eq!(
            choose_source(None, "a:1", "l:1", 0, &only_self),
            Ok("l:1".into())
        );
        let none_fit = [facts("b:1", 100, Some("it does not replicate"))];
        assert_eq!(
            choose_source(None, "a:1", "l:1", 0, &none_fit),
            Ok("l:1".into())
        );
        assert_eq!(choose_source(None, "a:1", "l:1", 0, &[]), Ok("l:1".into()));
    }

    #[test]
    fn a_requested_source_must_be_fit() {
        let replicas = [
            facts("b:1", 90, None),
            facts("d:1", 120, Some("unreachable")),
        ];
        let choose = |r| choose_source(Some(r), "a:1", "l:1", 0, &replicas);
        assert_eq!(choose("b:1"), Ok("b:1".into()));
        assert_eq!(choose("l:1"), Ok("l:1".into()));
        assert!(choose("a:1").unwrap_err().contains("from itself"));
        let e = choose("d:1").unwrap_err();
        assert!(e.contains("not a healthy source: unreachable"), "{e}");
        assert!(choose("z:1").unwrap_err().contains("not a node"));
    }

    fn replica_of(source: &str, io: bool, sql: bool) -> NodeSnapshot {
        NodeSnapshot {
            gtid_binlog_pos: "0-1-10".into(),
            gtid_slave_pos: "0-1-10".into(),
            replication: Some(Replication {
                source: source.into(),
                io_state: if io { "Yes" } else { "Connecting" }.into(),
                io_running: io,
                sql_running: sql,
                lag_seconds: Some(0),
                last_io_error: None,
                last_sql_error: (!sql).then(|| "Error 1062: duplicate".to_owned()),
                gtid_io_pos: "0-1-10".into(),
                progress: None,
            }),
            ..NodeSnapshot::default()
        }
    }

    #[test]
    fn unfit_sources_say_why() {
        let lbin = GtidPos::parse("0-1-12").unwrap();
        let unfit = |s: &NodeSnapshot, m| unfit_source(s, "l:1", &lbin, m);
        assert_eq!(unfit(&replica_of("l:1", true, true), false), None);
        assert_eq!(
            unfit(&NodeSnapshot::default(), false).as_deref(),
            Some("it does not replicate")
        );
        assert!(unfit(&replica_of("x:1", true, true), false)
            .unwrap()
            .contains("replicates from x:1"));
        assert!(unfit(&replica_of("l:1", false, true), false)
            .unwrap()
            .contains("IO thread is Connecting"));
        assert!(unfit(&replica_of("l:1", true, false), false)
            .unwrap()
            .contains("duplicate"));
        assert!(unfit(&replica_of("l:1", true, true), true)
            .unwrap()
            .contains("maintenance"));
        let errant = NodeSnapshot {
            gtid_binlog_pos: "0-7-13".into(),
            ..replica_of("l:1", true, true)
        };
        assert!(unfit(&errant, false).unwrap().contains("0-7-13"));
    }
}
