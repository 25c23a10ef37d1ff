//! Keyspaces: the logical databases clients see, and which cluster holds each one.
//! (Sharded tables and key ranges extend this model.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Problems that make a shard map invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyspaceError {
    #[error("keyspace `{0}` is defined twice")]
    DuplicateKeyspace(String),
    #[error("keyspace `{keyspace}` names unknown cluster `{cluster}`")]
    UnknownCluster { keyspace: String, cluster: String },
    #[error("keyspace name must not be empty")]
    EmptyName,
}

/// A logical database and the cluster that holds its (unsharded) tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    pub name: String,
    pub default_cluster: String,
}

/// Every keyspace, plus the cluster for databases that belong to no keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Where statements go when the session's database is in no keyspace (or none is selected).
    pub default_cluster: String,
    pub keyspaces: BTreeMap<String, Keyspace>,
}

impl ShardMap {
    /// Builds a shard map, checking it against the known cluster names. Every problem is listed.
    pub fn new(
        default_cluster: String,
        keyspaces: Vec<Keyspace>,
        clusters: &[&str],
    ) -> Result<Self, Vec<KeyspaceError>> {
        let mut problems = Vec::new();
        if !clusters.contains(&default_cluster.as_str()) {
            problems.push(KeyspaceError::UnknownCluster {
                keyspace: "(default)".into(),
                cluster: default_cluster.clone(),
            });
        }
        let mut map = BTreeMap::new();
        for ks in keyspaces {
            if ks.name.is_empty() {
                problems.push(KeyspaceError::EmptyName);
                continue;
            }
            if !clusters.contains(&ks.default_cluster.as_str()) {
                problems.push(KeyspaceError::UnknownCluster {
                    keyspace: ks.name.clone(),
                    cluster: ks.default_cluster.clone(),
                });
            }
            if map.contains_key(&ks.name) {
                problems.push(KeyspaceError::DuplicateKeyspace(ks.name.clone()));
            } else {
                map.insert(ks.name.clone(), ks);
            }
        }
        if problems.is_empty() {
            Ok(ShardMap {
                default_cluster,
                keyspaces: map,
            })
        } else {
            Err(problems)
        }
    }

    /// The cluster that serves statements for a session whose current database is `db`.
    pub fn cluster_for_db(&self, db: Option<&str>) -> &str {
        db.and_then(|d| self.keyspaces.get(d))
            .map(|ks| ks.default_cluster.as_str())
            .unwrap_or(&self.default_cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_databases_to_their_keyspace_cluster() {
        let map = ShardMap::new(
            "c1".into(),
            vec![Keyspace {
                name: "orders".into(),
                default_cluster: "c2".into(),
            }],
            &["c1", "c2"],
        )
        .unwrap();
        assert_eq!(map.cluster_for_db(Some("orders")), "c2");
        assert_eq!(map.cluster_for_db(Some("other")), "c1");
        assert_eq!(map.cluster_for_db(None), "c1");
    }

    #[test]
    fn lists_every_problem() {
        let err = ShardMap::new(
            "c9".into(),
            vec![
                Keyspace {
                    name: "a".into(),
                    default_cluster: "c1".into(),
                },
                Keyspace {
                    name: "a".into(),
                    default_cluster: "c3".into(),
                },
            ],
            &["c1"],
        )
        .unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
    }
}
