//! What every router session shares: settings, users, backend pools, the topology and shard
//! map snapshots, the classification cache and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use shard_map::{ShardMap, TopologyHandle};

use crate::backend::Pools;
use crate::classify::Classifier;
use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::protocol::handshake::native_password_hash;

/// A user the router accepts.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    pub password: Arc<str>,
    pub hash: [u8; 20],
}

/// Counters exposed by the admin API.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_refused: AtomicU64,
    pub auth_failures: AtomicU64,
    pub statements: AtomicU64,
    pub statements_to_replicas: AtomicU64,
    /// Statements sqlparser could not parse, forwarded as they were.
    pub unparsed: AtomicU64,
    pub errors: AtomicU64,
    pub backend_retries: AtomicU64,
    pub session_panics: AtomicU64,
}

impl RouterMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by all sessions of one router.
#[derive(Debug)]
pub struct RouterContext {
    pub config: RouterConfig,
    pub users: HashMap<String, Arc<User>>,
    pub pools: Pools,
    pub topology: TopologyHandle,
    pub shard_map: ArcSwap<ShardMap>,
    pub classifier: Classifier,
    pub metrics: RouterMetrics,
    pub server_version: String,
    next_conn_id: AtomicU32,
    replica_rr: AtomicUsize,
}

impl RouterContext {
    pub fn new(config: RouterConfig, topology: TopologyHandle, shard_map: ShardMap) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                let pw = u.password.expose().clone();
                (
                    u.name.clone(),
                    Arc::new(User {
                        name: u.name.as_str().into(),
                        hash: native_password_hash(pw.as_bytes()),
                        password: pw,
                    }),
                )
            })
            .collect();
        let server_version = config
            .server_version
            .clone()
            .unwrap_or_else(|| "5.5.5-10.11.0-MariaDB-switchyard".into());
        RouterContext {
            pools: Pools::new(config.pool_options()),
            users,
            topology,
            shard_map: ArcSwap::from_pointee(shard_map),
            classifier: Classifier::new(10_000),
            metrics: RouterMetrics::default(),
            server_version,
            next_conn_id: AtomicU32::new(1),
            replica_rr: AtomicUsize::new(0),
            config,
        }
    }

    pub fn next_conn_id(&self) -> u32 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The backend address for a statement on `db`'s cluster: the leader, or with
    /// `replica_ok` a fresh-enough replica when replica reads are configured.
    pub fn route(&self, db: Option<&str>, replica_ok: bool) -> Result<Arc<str>, RouterError> {
        let map = self.shard_map.load();
        let cluster = map.cluster_for_db(db);
        let topo = self.topology.load();
        let c = topo
            .cluster(cluster)
            .ok_or_else(|| RouterError::UnknownCluster {
                cluster: cluster.to_string(),
            })?;
        if replica_ok {
            if let Some(max_lag) = self.config.replica_read_max_lag {
                let fresh: Vec<_> = c.fresh_replicas(max_lag).collect();
                if !fresh.is_empty() {
                    let i = self.replica_rr.fetch_add(1, Ordering::Relaxed) % fresh.len();
                    RouterMetrics::inc(&self.metrics.statements_to_replicas);
                    return Ok(fresh[i].addr.as_str().into());
                }
            }
        }
        c.leader
            .as_deref()
            .map(Arc::from)
            .ok_or_else(|| RouterError::NoLeader {
                cluster: cluster.to_string(),
            })
    }
}
