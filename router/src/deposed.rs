//! Cuts every backend connection to a leader the moment a newer epoch names another one.
//!
//! A leader that died with `kill -9` resets its connections, and statements waiting on it
//! fail at once. A leader that hangs (a frozen host, a partition that drops packets) resets
//! nothing: a statement sent to it just before it hung waits forever, and if the old leader
//! comes back it may still commit there after a new leader took over. So once the topology
//! names a new leader, the router shuts down its own sockets to the old one: a read waiting
//! on it is retried on the new leader, a write fails as a lost connection (its outcome is
//! unknown, exactly as with a crash), and no connection to the old leader is reused.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use shard_map::Topology;

use crate::context::RouterContext;

/// Each cluster's leader and epoch as last seen.
type Leaders = HashMap<String, (Option<String>, u64)>;

fn leaders(topology: &Topology) -> Leaders {
    topology
        .clusters
        .iter()
        .map(|(name, c)| (name.clone(), (c.leader.clone(), c.epoch)))
        .collect()
}

/// The leaders of `before` that `after` replaced under a newer epoch.
fn deposed(before: &Leaders, after: &Leaders) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (cluster, (leader, epoch)) in after {
        if let Some((Some(old), old_epoch)) = before.get(cluster) {
            if epoch > old_epoch && leader.as_deref() != Some(old.as_str()) {
                out.push((cluster.clone(), old.clone()));
            }
        }
    }
    out
}

/// Watches the topology until `shutdown`, cutting the connections to each deposed leader.
pub async fn cut_deposed_leaders(ctx: Arc<RouterContext>, shutdown: impl Future<Output = ()>) {
    let mut changes = ctx.topology.subscribe();
    let mut known = leaders(&ctx.topology.load());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let now = leaders(&ctx.topology.load());
        for (cluster, old) in deposed(&known, &now) {
            let cut = ctx.pools.cut_server(&old);
            ctx.metrics
                .deposed_cuts
                .fetch_add(cut as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%cluster, leader = %old, connections = cut, "leader replaced: connections to it cut");
        }
        known = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(entries: &[(&str, Option<&str>, u64)]) -> Leaders {
        entries
            .iter()
            .map(|(c, l, e)| (c.to_string(), (l.map(String::from), *e)))
            .collect()
    }

    #[test]
    fn only_a_leader_replaced_under_a_newer_epoch_is_deposed() {
        let before = l(&[("a", Some("x:1"), 3), ("b", Some("y:1"), 1), ("c", None, 1)]);
        // Same leader, same epoch: nothing. New leader, newer epoch: deposed. A cluster
        // that had no leader deposes nobody.
        let after = l(&[
            ("a", Some("x:2"), 4),
            ("b", Some("y:1"), 1),
            ("c", Some("z:1"), 2),
        ]);
        assert_eq!(deposed(&before, &after), vec![("a".into(), "x:1".into())]);
        // A leader lost with no successor yet (no leader published) is deposed as well.
        let none = l(&[("a", None, 4)]);
        assert_eq!(deposed(&before, &none), vec![("a".into(), "x:1".into())]);
        // An epoch bump that keeps the leader (a restart adopting it) cuts nothing.
        let same = l(&[("a", Some("x:1"), 4)]);
        assert!(deposed(&before, &same).is_empty());
    }
}
