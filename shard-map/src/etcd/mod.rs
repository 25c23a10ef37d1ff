//! The topology store of the multi-process mode, on etcd: what several routers and
//! orchestrators on several machines share. The embedded default keeps everything in one
//! process and needs none of this.
//!
//! Key layout, under a prefix (`/switchyard` unless configured):
//!
//! | key                       | value (JSON)                       | written by             | lease |
//! |---------------------------|------------------------------------|------------------------|-------|
//! | `{p}/topology/{cluster}`  | [`ClusterStatus`]: leader, epoch, phase, nodes | the leading orchestrator, guarded | no |
//! | `{p}/leader`              | [`Member`]: the leading orchestrator | the orchestrator that wins | yes |
//! | `{p}/orchestrators/{id}`  | [`Member`]: a candidate            | each orchestrator      | yes   |
//! | `{p}/routers/{id}`        | [`RouterRecord`]: the epochs it holds for | each router     | yes   |
//! | `{p}/shard-map`           | [`VersionedShardMap`]: the shard map in force | any process, compare-and-set on the version | no |
//! | `{p}/shard-map-history/{version}` | [`VersionedShardMap`]: every version saved (zero-padded) | with `{p}/shard-map`, same transaction | no |
//! | `{p}/intents/{cluster}`   | [`Intent`]: a change of leader under way | the leading orchestrator, guarded | no |
//! | `{p}/requests/{id}`       | [`Request`]: a change asked of the leader, then its outcome | the asking process; taken and answered by the leader | the asker's |
//!
//! - [`lease`]: a lease kept alive in the background, and until when it surely holds;
//! - [`election`]: one leading orchestrator, and the guard every topology write carries;
//! - [`records`]: the records above and their (de)serialisation.
//! - [`requests`]: changes asked of the leader by the other processes.
//!
//! Every call has a deadline ([`EtcdOptions::request_timeout`]); an unreachable etcd is an
//! error, never a wait without end.

mod election;
mod lease;
mod records;
mod requests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    WatchOptions,
};

use crate::store::VersionedShardMap;
use crate::topology::ClusterStatus;

pub use election::LeaderToken;
pub use lease::{Lease, LeaseState};
pub use records::{Intent, Member, RouterRecord};
pub use requests::{Request, StoredRequest};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` or `http(s)://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key is under this prefix (several switchyard deployments may share one etcd).
    pub prefix: String,
    /// User and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// CA certificate (PEM) that signed the members' certificates: TLS to etcd.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), when etcd asks for one.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Lifetime of the leases of orchestrators and routers: how long a silent process counts
    /// as alive, and so how long a failover may wait for a router it cannot hear from.
    pub lease_ttl: Duration,
    /// The bound of every call to etcd.
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// One local etcd, default prefix, TTL and timeouts.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: "/switchyard".into(),
            user: None,
            ca: None,
            cert: None,
            lease_ttl: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a call to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    #[error("etcd did not answer within {} ms ({what})", .after.as_millis())]
    Timeout { what: &'static str, after: Duration },
    /// A guarded write was refused: this process no longer leads.
    #[error("not the leading orchestrator any more (its leadership key is gone or newer)")]
    NotLeader,
    #[error("etcd key {key}: not a valid record: {error}")]
    Corrupt { key: String, error: String },
    #[error("etcd TLS files: {0}")]
    Tls(String),
    /// A compare-and-set found another version than the one it was based on.
    #[error("the stored shard map is version {current}: it changed meanwhile")]
    Conflict { current: u64 },
    /// A record was written since the revision a write was based on (0: it was absent).
    #[error("etcd key {key} changed since revision {based_on} (now {current})")]
    Changed {
        key: String,
        based_on: i64,
        current: i64,
    },
}

/// A connected store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A change to watched keys, in revision order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    Put(T),
    /// The key (without the watched prefix) was deleted.
    Deleted(String),
}

/// A change to a cluster's record.
pub type TopologyChange = Change<ClusterStatus>;

/// What a watch delivers.
#[derive(Debug)]
pub enum WatchEvent<T> {
    /// Changes up to and including `revision`.
    Changes {
        revision: i64,
        changes: Vec<Change<T>>,
    },
    /// The history after the watched revision was compacted away: list again.
    Compacted,
}

/// A watch on a key or prefix whose values are `T` records.
pub struct Watch<T> {
    stream: etcd_client::WatchStream,
    prefix: String,
    _records: std::marker::PhantomData<fn() -> T>,
}

/// A watch on `{p}/topology/`.
pub type TopologyWatch = Watch<ClusterStatus>;

impl<T: serde::de::DeserializeOwned> Watch<T> {
    /// The next batch of changes; `Ok(None)` when etcd closed the watch.
    pub async fn next(&mut self) -> Result<Option<WatchEvent<T>>, EtcdError> {
        loop {
            let Some(resp) = self.stream.message().await? else {
                return Ok(None);
            };
            if resp.compact_revision() > 0 {
                return Ok(Some(WatchEvent::Compacted));
            }
            if resp.canceled() {
                return Ok(None);
            }
            if resp.events().is_empty() {
                continue;
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut changes = Vec::new();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match ev.event_type() {
                    etcd_client::EventType::Put => {
                        changes.push(Change::Put(records::decode(&key, kv.value())?))
                    }
                    etcd_client::EventType::Delete => {
                        let name = key.strip_prefix(&self.prefix).unwrap_or(&key);
                        changes.push(Change::Deleted(name.to_owned()));
                    }
                }
            }
            return Ok(Some(WatchEvent::Changes { revision, changes }));
        }
    }
}

impl EtcdStore {
    /// Connects (bounded by the request timeout) and checks that etcd answers.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdStore, EtcdError> {
        let tls = opts.ca.is_some() || opts.cert.is_some();
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if tls {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(opts.request_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(1), opts.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the others must not answer: reads and leases go to the
            // majority's side.
            .with_require_leader(true);
        if let Some((user, password)) = &opts.user {
            copts = copts.with_user(user.clone(), password.clone());
        }
        if tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &opts.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| EtcdError::Tls(format!("{}: {e}", ca.display())))?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &opts.cert {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| EtcdError::Tls(format!("{}: {e}", p.display())))
                };
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            copts = copts.with_tls(t);
        }
        let client = bounded(
            opts.request_timeout,
            "connecting",
            Client::connect(endpoints, Some(copts)),
        )
        .await?;
        let store = EtcdStore {
            client,
            prefix: opts.prefix.trim_end_matches('/').to_owned(),
            timeout: opts.request_timeout,
            ttl: opts.lease_ttl,
        };
        // Client::connect is lazy: a first request tells whether anything answers (a key of
        // this deployment's: with authentication on, its user may read no other).
        bounded(
            store.timeout,
            "first request",
            store.kv().get(store.leader_key(), None),
        )
        .await?;
        Ok(store)
    }

    /// The lease lifetime every orchestrator and router uses.
    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    /// The bound of each call.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client()
    }

    fn topology_prefix(&self) -> String {
        format!("{}/topology/", self.prefix)
    }

    fn topology_key(&self, cluster: &str) -> String {
        format!("{}{cluster}", self.topology_prefix())
    }

    pub(crate) fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    fn orchestrator_key(&self, id: &str) -> String {
        format!("{}/orchestrators/{id}", self.prefix)
    }

    fn router_prefix(&self) -> String {
        format!("{}/routers/", self.prefix)
    }

    /// Every cluster as stored, and the revision they were read at.
    pub async fn load_topology(&self) -> Result<(BTreeMap<String, ClusterStatus>, i64), EtcdError> {
        let (clusters, revision) = self
            .list_at::<ClusterStatus>(self.topology_prefix())
            .await?;
        Ok((
            clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
            revision,
        ))
    }

    /// Writes one cluster, provided `token` still leads (else [`EtcdError::NotLeader`]) and
    /// the record is still at revision `based_on` (0: absent; else [`EtcdError::Changed`]):
    /// a write that reaches etcd late (its answer lost, sent again meanwhile) cannot put an
    /// older snapshot over a newer one. The record's new revision.
    pub async fn put_cluster(
        &self,
        token: &LeaderToken,
        c: &ClusterStatus,
        based_on: i64,
    ) -> Result<i64, EtcdError> {
        let key = self.topology_key(&c.name);
        let leader = self.leader_key();
        let txn = Txn::new()
            .when([
                token.guard(&leader),
                Compare::mod_revision(key.as_str(), etcd_client::CompareOp::Equal, based_on),
            ])
            .and_then([TxnOp::put(key.as_str(), records::encode(c), None)])
            .or_else([
                TxnOp::get(leader.as_str(), None),
                TxnOp::get(key.as_str(), None),
            ]);
        let resp = bounded(self.timeout, "writing the topology", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        // Which compare failed: the leadership first.
        let gets: Vec<Option<(i64, i64)>> = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| (kv.create_revision(), kv.mod_revision())),
                _ => None,
            })
            .collect();
        let leads = gets
            .first()
            .copied()
            .flatten()
            .is_some_and(|(created, _)| created == token.revision());
        if !leads {
            return Err(EtcdError::NotLeader);
        }
        Err(EtcdError::Changed {
            key,
            based_on,
            current: gets.get(1).copied().flatten().map_or(0, |(_, m)| m),
        })
    }

    /// A cluster record's revision now (0: absent), to base a [`EtcdStore::put_cluster`] on.
    pub async fn cluster_revision(&self, name: &str) -> Result<i64, EtcdError> {
        let key = self.topology_key(name);
        let resp = bounded(
            self.timeout,
            "reading the topology",
            self.kv()
                .get(key.as_str(), Some(GetOptions::new().with_keys_only())),
        )
        .await?;
        Ok(resp.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    /// Watches the topology keys for changes after `revision`.
    pub async fn watch_topology(&self, revision: i64) -> Result<TopologyWatch, EtcdError> {
        self.watch(self.topology_prefix(), true, revision).await
    }

    async fn watch<T>(
        &self,
        key: String,
        prefix: bool,
        revision: i64,
    ) -> Result<Watch<T>, EtcdError> {
        let mut options = WatchOptions::new().with_start_revision(revision + 1);
        if prefix {
            options = options.with_prefix();
        }
        let stream = bounded(
            self.timeout,
            "watching",
            self.client
                .watch_client()
                .watch(key.as_str(), Some(options)),
        )
        .await?;
        Ok(Watch {
            stream,
            prefix: key,
            _records: std::marker::PhantomData,
        })
    }

    fn shard_map_key(&self) -> String {
        format!("{}/shard-map", self.prefix)
    }

    /// The shard map in force and the revision it was read at, if one was ever saved.
    pub async fn load_shard_map(&self) -> Result<(Option<VersionedShardMap>, i64), EtcdError> {
        let (stored, revision) = self.stored_shard_map().await?;
        Ok((stored.map(|(map, _)| map), revision))
    }

    /// The stored shard map with its key's mod revision, and the revision of the read.
    async fn stored_shard_map(&self) -> Result<(Option<(VersionedShardMap, i64)>, i64), EtcdError> {
        let key = self.shard_map_key();
        let resp = bounded(
            self.timeout,
            "reading the shard map",
            self.kv().get(key.as_str(), None),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let stored = resp
            .kvs()
            .first()
            .map(|kv| {
                records::decode::<VersionedShardMap>(&key, kv.value())
                    .map(|map| (map, kv.mod_revision()))
            })
            .transpose()?;
        Ok((stored, revision))
    }

    /// Makes `map` the shard map in force if the stored one is still version
    /// `map.version - 1` (or none is stored and `map.version` is 1); else
    /// [`EtcdError::Conflict`] with the stored version. Any process may save it: the
    /// compare-and-set orders concurrent saves.
    pub async fn save_shard_map(&self, map: &VersionedShardMap) -> Result<(), EtcdError> {
        let key = self.shard_map_key();
        let (current, guard) = match self.stored_shard_map().await?.0 {
            Some((stored, mod_revision)) => (
                stored.version,
                Compare::mod_revision(key.as_str(), etcd_client::CompareOp::Equal, mod_revision),
            ),
            None => (
                0,
                Compare::create_revision(key.as_str(), etcd_client::CompareOp::Equal, 0),
            ),
        };
        if map.version != current + 1 {
            return Err(EtcdError::Conflict { current });
        }
        let txn = Txn::new().when([guard]).and_then([
            TxnOp::put(key.as_str(), records::encode(map), None),
            TxnOp::put(
                self.shard_map_history_key(map.version),
                records::encode(map),
                None,
            ),
        ]);
        let resp = bounded(self.timeout, "saving the shard map", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            // Saved by someone else in between: report what is there now.
            let (now, _) = self.load_shard_map().await?;
            Err(EtcdError::Conflict {
                current: now.map_or(0, |m| m.version),
            })
        }
    }

    fn shard_map_history_prefix(&self) -> String {
        format!("{}/shard-map-history/", self.prefix)
    }

    fn shard_map_history_key(&self, version: u64) -> String {
        format!("{}{version:020}", self.shard_map_history_prefix())
    }

    /// The versions of the shard map kept, ascending.
    pub async fn shard_map_versions(&self) -> Result<Vec<u64>, EtcdError> {
        let prefix = self.shard_map_history_prefix();
        let resp = bounded(
            self.timeout,
            "listing the shard map versions",
            self.kv().get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
        let mut versions: Vec<u64> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                String::from_utf8_lossy(kv.key())
                    .strip_prefix(&prefix)
                    .and_then(|v| v.parse().ok())
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// One kept version of the shard map.
    pub async fn shard_map_version(
        &self,
        version: u64,
    ) -> Result<Option<VersionedShardMap>, EtcdError> {
        self.record(
            self.shard_map_history_key(version),
            "reading a shard map version",
        )
        .await
    }

    /// The record at `key`, if there is one.
    pub(crate) async fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
        what: &'static str,
    ) -> Result<Option<T>, EtcdError> {
        let resp = bounded(self.timeout, what, self.kv().get(key.as_str(), None)).await?;
        resp.kvs()
            .first()
            .map(|kv| records::decode(&key, kv.value()))
            .transpose()
    }

    /// Watches the shard map for versions saved after `revision`.
    pub async fn watch_shard_map(
        &self,
        revision: i64,
    ) -> Result<Watch<VersionedShardMap>, EtcdError> {
        self.watch(self.shard_map_key(), false, revision).await
    }

    fn intent_key(&self, cluster: &str) -> String {
        format!("{}/intents/{cluster}", self.prefix)
    }

    /// Records a change of leader about to be made, provided `token` still leads.
    pub async fn put_intent(&self, token: &LeaderToken, intent: &Intent) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([self.leader_guard(token)])
            .and_then([TxnOp::put(
                self.intent_key(&intent.cluster),
                records::encode(intent),
                None,
            )]);
        let resp = bounded(self.timeout, "recording an intent", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader)
        }
    }

    /// Removes a cluster's intent (its outcome is published), provided `token` still leads.
    pub async fn delete_intent(&self, token: &LeaderToken, cluster: &str) -> Result<(), EtcdError> {
        let txn = Txn::new()
            .when([self.leader_guard(token)])
            .and_then([TxnOp::delete(self.intent_key(cluster), None)]);
        let resp = bounded(self.timeout, "removing an intent", self.kv().txn(txn)).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(EtcdError::NotLeader)
        }
    }

    /// The changes of leader begun and not published.
    pub async fn intents(&self) -> Result<Vec<Intent>, EtcdError> {
        self.list(format!("{}/intents/", self.prefix)).await
    }

    /// Registers (or updates) an orchestrator candidate, bound to its lease.
    pub async fn put_orchestrator(&self, lease: &Lease, m: &Member) -> Result<(), EtcdError> {
        self.put_leased(self.orchestrator_key(&m.id), records::encode(m), lease)
            .await
    }

    /// Every orchestrator candidate that is alive (its lease holds).
    pub async fn orchestrators(&self) -> Result<Vec<Member>, EtcdError> {
        self.list(format!("{}/orchestrators/", self.prefix)).await
    }

    /// Registers (or updates) a router, bound to its lease: its presence is what a failover
    /// waits on, its `holds` what it acknowledges.
    pub async fn put_router(&self, lease: &Lease, r: &RouterRecord) -> Result<(), EtcdError> {
        let key = format!("{}{}", self.router_prefix(), r.id);
        self.put_leased(key, records::encode(r), lease).await
    }

    /// Every router that is alive (its lease holds).
    pub async fn routers(&self) -> Result<Vec<RouterRecord>, EtcdError> {
        self.list(self.router_prefix()).await
    }

    /// For each live router (`"routers"`) or orchestrator candidate (`"orchestrators"`): the
    /// whole seconds since etcd last heard from its process (its lease's granted TTL minus
    /// what remains of it).
    pub async fn last_contacts(&self, kind: &str) -> Result<BTreeMap<String, u64>, EtcdError> {
        let prefix = format!("{}/{kind}/", self.prefix);
        let resp = bounded(
            self.timeout,
            "listing",
            self.kv().get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
        let mut contacts = BTreeMap::new();
        let mut leases = self.client.lease_client();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(id) = key.strip_prefix(&prefix) else {
                continue;
            };
            if kv.lease() == 0 {
                continue;
            }
            let ttl = bounded(
                self.timeout,
                "reading a lease",
                leases.time_to_live(kv.lease(), None),
            )
            .await?;
            if ttl.ttl() >= 0 {
                contacts.insert(
                    id.to_owned(),
                    ttl.granted_ttl().saturating_sub(ttl.ttl()).max(0) as u64,
                );
            }
        }
        Ok(contacts)
    }

    async fn put_leased(
        &self,
        key: String,
        value: Vec<u8>,
        lease: &Lease,
    ) -> Result<(), EtcdError> {
        let opts = etcd_client::PutOptions::new().with_lease(lease.id());
        bounded(
            self.timeout,
            "registering",
            self.kv().put(key, value, Some(opts)),
        )
        .await?;
        Ok(())
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<Vec<T>, EtcdError> {
        Ok(self.list_at(prefix).await?.0)
    }

    /// The records under `prefix` and the revision they were read at.
    async fn list_at<T: serde::de::DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<(Vec<T>, i64), EtcdError> {
        let resp = bounded(
            self.timeout,
            "listing",
            self.kv()
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let records = resp
            .kvs()
            .iter()
            .map(|kv| records::decode(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect::<Result<_, _>>()?;
        Ok((records, revision))
    }

    /// Compacts the history up to the current revision (operators do this; tests too, to
    /// check that watchers list again).
    pub async fn compact_all(&self) -> Result<i64, EtcdError> {
        let resp = bounded(self.timeout, "reading", self.kv().get("\0", None)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        bounded(
            self.timeout,
            "compacting",
            self.kv().compact(revision, None),
        )
        .await?;
        Ok(revision)
    }

    /// A transaction that succeeds only while `token` leads.
    pub(crate) fn leader_guard(&self, token: &LeaderToken) -> Compare {
        token.guard(&self.leader_key())
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }
}

/// `fut` with a deadline; a timeout becomes [`EtcdError::Timeout`].
pub(crate) async fn bounded<T>(
    after: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(EtcdError::from),
        Err(_) => Err(EtcdError::Timeout { what, after }),
    }
}
