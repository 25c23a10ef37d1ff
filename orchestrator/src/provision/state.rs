//! The state file (`DIR/switchyard-local.json`): which clusters and nodes live in a directory,
//! their ports and server ids, and each cluster's current leader, so that a later start on the
//! same directory brings the same servers back in the same roles.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LocalCluster, LocalNode, ProvisionError};

/// The state file's name inside the provisioning directory.
pub const STATE_FILE: &str = "switchyard-local.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    pub format: u32,
    /// The server version that initialised the datadirs (informational).
    pub mariadb_version: String,
    pub clusters: Vec<ClusterState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterState {
    pub name: String,
    pub leader: String,
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeState {
    pub port: u16,
    pub server_id: u32,
    /// Relative to the provisioning directory, so that the directory can be moved.
    pub datadir: PathBuf,
}

impl StateFile {
    pub fn from_clusters(mariadb_version: &str, dir: &Path, clusters: &[LocalCluster]) -> Self {
        StateFile {
            format: FORMAT,
            mariadb_version: mariadb_version.to_owned(),
            clusters: clusters
                .iter()
                .map(|c| ClusterState {
                    name: c.name.clone(),
                    leader: c.leader.clone(),
                    nodes: c
                        .nodes
                        .iter()
                        .map(|n| NodeState {
                            port: n.port,
                            server_id: n.server_id,
                            datadir: n
                                .datadir
                                .strip_prefix(dir)
                                .unwrap_or(&n.datadir)
                                .to_path_buf(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The clusters this file describes, with paths resolved against `dir`.
    pub fn to_clusters(&self, dir: &Path) -> Vec<LocalCluster> {
        self.clusters
            .iter()
            .map(|c| LocalCluster {
                name: c.name.clone(),
                leader: c.leader.clone(),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| LocalNode::new(n.port, dir.join(&n.datadir), n.server_id))
                    .collect(),
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<StateFile, ProvisionError> {
        let text = fs::read_to_string(path)
            .map_err(|e| ProvisionError::io(format!("reading {}", path.display()), e))?;
        let state: StateFile = serde_json::from_str(&text).map_err(|e| ProvisionError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(ProvisionError::State {
                path: path.to_path_buf(),
                message: format!(
                    "format {} is not supported (expected {FORMAT})",
                    state.format
                ),
            });
        }
        for c in &state.clusters {
            if !c
                .nodes
                .iter()
                .any(|n| format!("127.0.0.1:{}", n.port) == c.leader)
            {
                return Err(ProvisionError::State {
                    path: path.to_path_buf(),
                    message: format!(
                        "cluster {}: leader {} is not one of its nodes",
                        c.name, c.leader
                    ),
                });
            }
        }
        Ok(state)
    }

    /// Writes the file atomically (temporary file + rename), so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), ProvisionError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ProvisionError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text + "\n")
            .map_err(|e| ProvisionError::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, path)
            .map_err(|e| ProvisionError::io(format!("renaming {}", tmp.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clusters = vec![LocalCluster {
            name: "c1".into(),
            leader: "127.0.0.1:4001".into(),
            nodes: vec![
                LocalNode::new(4001, dir.path().join("c1/n1"), 101),
                LocalNode::new(4002, dir.path().join("c1/n2"), 102),
            ],
        }];
        let path = dir.path().join(STATE_FILE);
        StateFile::from_clusters("10.11.19", dir.path(), &clusters)
            .save(&path)
            .expect("save");
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("\"c1/n2\""),
            "datadirs are stored relative: {text}"
        );
        let back = StateFile::load(&path)
            .expect("load")
            .to_clusters(dir.path());
        assert_eq!(back, clusters);
    }

    #[test]
    fn rejects_a_leader_that_is_not_a_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        fs::write(
            &path,
            r#"{"format":1,"mariadb_version":"x","clusters":[{"name":"c1","leader":"127.0.0.1:9",
               "nodes":[{"port":1,"server_id":1,"datadir":"c1/n1"}]}]}"#,
        )
        .expect("write");
        let err = StateFile::load(&path).expect_err("bad leader");
        assert!(err.to_string().contains("not one of its nodes"), "{err}");
    }
}
