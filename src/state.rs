//! What must survive a restart of the process and is not in the configuration file: each
//! cluster's leader, leadership epoch, operator flags (maintenance, preferred, ignored) and the
//! start times of the failovers the anti-flapping limits count, kept as `topology.json` in
//! `state_dir`. Without it a restarted process would start every
//! epoch at 1 again (so "never a leader of an older epoch" would only hold within one run),
//! forget nodes put in maintenance, and trust a leader named in a file written before the
//! last switchover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shard_map::{NodeFlags, Topology, TopologyHandle};

/// The kept part of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptCluster {
    pub leader: Option<String>,
    pub epoch: u64,
    /// Flags of the nodes that have any set.
    #[serde(default)]
    pub flags: BTreeMap<String, NodeFlags>,
    /// When the failovers the anti-flapping limits still count started (ms since the Unix
    /// epoch), so that a restart does not reset `failover_limit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers_ms: Vec<u64>,
}

/// The kept part of the topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptState {
    pub clusters: BTreeMap<String, KeptCluster>,
}

impl KeptState {
    /// What of `t` is kept, with each cluster's recent failovers from `failovers`.
    pub fn of(t: &Topology, failovers: &dyn Fn(&str) -> Vec<u64>) -> KeptState {
        KeptState {
            clusters: t
                .clusters
                .iter()
                .map(|(name, c)| {
                    let flags = c
                        .nodes
                        .iter()
                        .filter(|n| n.flags != NodeFlags::default())
                        .map(|n| (n.addr.clone(), n.flags))
                        .collect();
                    (
                        name.clone(),
                        KeptCluster {
                            leader: c.leader.clone(),
                            epoch: c.epoch,
                            flags,
                            failovers_ms: failovers(name),
                        },
                    )
                })
                .collect(),
        }
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join("topology.json")
    }

    /// The state kept in `dir`; empty when nothing was kept yet.
    pub fn load(dir: &Path) -> anyhow::Result<KeptState> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeptState::default()),
            Err(e) => Err(e).with_context(|| format!("can't read {}", path.display())),
        }
    }

    /// Writes the state to `dir` atomically (a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("can't create {}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = dir.join(".topology.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        std::fs::write(&tmp, text).with_context(|| format!("can't write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("can't replace {}", path.display()))
    }

    /// The kept leader of `cluster` when it is still one of `nodes`.
    pub fn leader(&self, cluster: &str, nodes: &[String]) -> Option<String> {
        self.clusters
            .get(cluster)?
            .leader
            .clone()
            .filter(|l| nodes.contains(l))
    }

    /// Puts the kept epochs and flags into a topology built from the configuration.
    pub fn restore(&self, t: &mut Topology) {
        for (name, c) in t.clusters.iter_mut() {
            let Some(kept) = self.clusters.get(name) else {
                continue;
            };
            c.epoch = c.epoch.max(kept.epoch);
            for n in c.nodes.iter_mut() {
                if let Some(f) = kept.flags.get(&n.addr) {
                    n.flags = *f;
                }
            }
        }
    }
}

/// Saves the kept state to `dir` whenever the topology changes (and the state with it), until
/// `stop`.
pub async fn keep(
    topology: TopologyHandle,
    failovers: impl Fn(&str) -> Vec<u64>,
    dir: Arc<Path>,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        let mut changes = topology.subscribe();
        let mut saved: Option<KeptState> = None;
        loop {
            let now = KeptState::of(&topology.load(), &failovers);
            if saved.as_ref() != Some(&now) {
                let (dir, state) = (dir.clone(), now.clone());
                let written = tokio::task::spawn_blocking(move || state.save(&dir)).await;
                match written {
                    Ok(Ok(())) => saved = Some(now),
                    Ok(Err(e)) => {
                        tracing::error!(error = %format!("{e:#}"), "can't keep the topology state")
                    }
                    Err(e) => tracing::error!(error = %e, "can't keep the topology state"),
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_map::{ClusterStatus, NodeStatus, Role};

    #[test]
    fn kept_state_round_trips_and_restores_epochs_and_flags() {
        let mut t = Topology::default();
        let mut c = ClusterStatus::new(
            "c1",
            Some("a:1".into()),
            vec![
                NodeStatus::new("a:1", Role::Leader),
                NodeStatus::new("b:2", Role::Replica),
            ],
        );
        c.epoch = 7;
        c.nodes[1].flags.maintenance = true;
        t.clusters.insert("c1".into(), c);
        let kept = KeptState::of(&t, &|c| if c == "c1" { vec![5, 7] } else { vec![] });
        let dir = tempfile::tempdir().unwrap();
        kept.save(dir.path()).unwrap();
        let back = KeptState::load(dir.path()).unwrap();
        assert_eq!(back, kept);
        assert_eq!(back.clusters["c1"].failovers_ms, vec![5, 7]);
        assert_eq!(back.leader("c1", &["a:1".into()]), Some("a:1".into()));
        assert_eq!(back.leader("c1", &["b:2".into()]), None, "no longer a node");

        let mut fresh = Topology::default();
        fresh.clusters.insert(
            "c1".into(),
            ClusterStatus::new(
                "c1",
                Some("a:1".into()),
                vec![
                    NodeStatus::new("a:1", Role::Leader),
                    NodeStatus::new("b:2", Role::Replica),
                ],
            ),
        );
        back.restore(&mut fresh);
        let c = &fresh.clusters["c1"];
        assert_eq!(c.epoch, 7);
        assert!(c.nodes[1].flags.maintenance && !c.nodes[0].flags.maintenance);
        assert_eq!(
            KeptState::load(&dir.path().join("none")).unwrap(),
            KeptState::default()
        );
    }
}
