//! The multi-process mode: this process's part in a deployment whose routers and
//! orchestrators share their topology through etcd (`[etcd]` in the configuration).
//!
//! - **Orchestrator duty** (role `all`): campaign for leadership with a lease; while leading,
//!   run the orchestrator and publish its topology to etcd, every write guarded by the
//!   leadership; while not, stand by and follow etcd. A leader that cannot renew its lease
//!   stops at once (its orchestrator run ends; its guarded writes would fail anyway).
//! - **Following**: etcd's topology into the local handle the router reads, never going back
//!   to an older epoch; a compacted history is listed again; an unreachable etcd leaves the
//!   last known topology in force.
//! - **Router membership** (every process routes): a lease-bound record that acknowledges
//!   the holds this router applies, and the write fence: while the lease does not surely
//!   hold, the router sends no write to a leader, so a failover that waited for this
//!   router's lease to expire cannot be raced by it.
//!
//! [`EtcdCoordinator`] is what the orchestrator's workflows call: leadership checks, the hold
//! barrier (every live router acknowledged, or its lease gone), and publishing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use orchestrator::coord::Intent;
use orchestrator::{Coordinator, Orchestrator};
use router::RouterContext;
use shard_map::etcd::{
    Change, EtcdError, EtcdStore, LeaderToken, Lease, Member, RouterRecord, TopologyChange,
    WatchEvent,
};
use shard_map::{ClusterStatus, TopologyHandle};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long to wait before trying etcd again after a failure.
pub(crate) const RETRY: Duration = Duration::from_millis(250);
/// How often the router's write fence and record are checked.
const FENCE_CHECK: Duration = Duration::from_millis(50);
/// How often the hold barrier looks at the routers' acknowledgements.
const HOLD_POLL: Duration = Duration::from_millis(20);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This process's name in etcd: the configured one, else host name and pid.
pub fn process_name(configured: Option<&str>) -> String {
    if let Some(n) = configured {
        return n.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// Leadership as the coordinator sees it.
#[derive(Default)]
struct Leading {
    token: Option<LeaderToken>,
    lease: Option<watch::Receiver<shard_map::etcd::LeaseState>>,
}

/// What the orchestrator's workflows call in the multi-process mode (see the module docs).
pub struct EtcdCoordinator {
    store: EtcdStore,
    /// This process's name (recorded in the intents it begins).
    name: String,
    topology: TopologyHandle,
    leading: Mutex<Leading>,
    /// Serialises topology writes so that an older snapshot never overwrites a newer one:
    /// what this leader last wrote of each cluster, and the record's revision after it.
    publish: tokio::sync::Mutex<BTreeMap<String, (ClusterStatus, i64)>>,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl EtcdCoordinator {
    pub fn new(store: EtcdStore, topology: TopologyHandle, name: &str) -> Arc<Self> {
        Arc::new(EtcdCoordinator {
            store,
            name: name.to_owned(),
            topology,
            leading: Mutex::new(Leading::default()),
            publish: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leading> {
        self.leading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token while this process leads and its lease surely holds.
    fn token(&self) -> Result<LeaderToken, String> {
        let l = self.lock();
        let token = l
            .token
            .ok_or("this orchestrator does not lead (another one does, or none yet)")?;
        if l.lease.as_ref().is_some_and(|s| s.borrow().holds()) {
            Ok(token)
        } else {
            Err(
                "this orchestrator's lease in etcd is not renewed: it may have been replaced"
                    .into(),
            )
        }
    }

    fn set_leading(&self, token: Option<LeaderToken>, lease: Option<&Lease>) {
        let mut l = self.lock();
        l.token = token;
        l.lease = lease.map(Lease::subscribe);
    }

    /// Etcd refused a guarded write or check: this process no longer leads. Forgets the
    /// leadership and says so.
    fn deposed(&self) -> String {
        self.set_leading(None, None);
        "this orchestrator no longer leads".into()
    }

    /// Whether this process leads now (as far as it knows without asking etcd).
    pub fn is_leading(&self) -> bool {
        self.token().is_ok()
    }

    /// Writes every cluster whose snapshot differs from what this leader last wrote, each
    /// write based on the record's revision after the last one (see
    /// [`EtcdStore::put_cluster`]).
    async fn sync(&self, only: Option<&str>) -> Result<(), String> {
        let token = self.token()?;
        let mut written = self.publish.lock().await;
        let topo = self.topology.load();
        for (name, c) in &topo.clusters {
            let last = written.get(name);
            if only.is_some_and(|o| o != name) || last.is_some_and(|(w, _)| w == c) {
                continue;
            }
            let mut based_on = match last {
                Some((_, revision)) => *revision,
                // Not written under this leadership yet: the record as it is now.
                None => self
                    .store
                    .cluster_revision(name)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            // A record changed behind this leader can only be one of its own writes that
            // reached etcd late (nobody else holds the leadership): this snapshot is newer,
            // so it is written over it, based on what is there now.
            let mut retried = false;
            loop {
                match self.store.put_cluster(&token, c, based_on).await {
                    Ok(revision) => {
                        written.insert(name.clone(), (c.clone(), revision));
                        break;
                    }
                    Err(EtcdError::NotLeader) => return Err(self.deposed()),
                    Err(EtcdError::Changed { current, .. }) if !retried => {
                        tracing::warn!(
                            cluster = %name,
                            based_on,
                            current,
                            "the topology record changed behind this leader: written again"
                        );
                        based_on = current;
                        retried = true;
                    }
                    Err(e) => {
                        // Unknown outcome: read the record's revision again next time.
                        written.remove(name);
                        return Err(e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets what was written (a new leadership writes everything again).
    async fn reset_written(&self) {
        self.publish.lock().await.clear();
    }
}

/// Why this process may not act, naming the leader when etcd says who it is.
async fn who_leads(store: &EtcdStore, why: String) -> String {
    match store.leader().await {
        Ok(Some(m)) => match m.admin {
            Some(admin) => format!("{why}; the leader is {} (admin API {admin})", m.id),
            None => format!("{why}; the leader is {}", m.id),
        },
        Ok(None) => format!("{why}; no orchestrator leads right now"),
        Err(e) => format!("{why}; etcd does not answer ({e})"),
    }
}

impl Coordinator for EtcdCoordinator {
    fn leads(&self) -> Result<(), String> {
        self.token().map(|_| ())
    }

    fn ensure_leader(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let token = match self.token() {
                Ok(t) => t,
                Err(why) => return Err(who_leads(&self.store, why).await),
            };
            match self.store.check_leader(&token).await {
                Ok(()) => Ok(()),
                Err(EtcdError::NotLeader) => Err(self.deposed()),
                Err(e) => Err(format!("leadership not confirmed: {e}")),
            }
        })
    }

    fn hold<'a>(&'a self, cluster: &'a str, epoch: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.sync(Some(cluster)).await?;
            // A router that can't answer loses its lease within the TTL (and fences itself
            // before that); one more request timeout covers the listing itself.
            let limit = self.store.lease_ttl() + self.store.request_timeout() * 2;
            let deadline = Instant::now() + limit;
            loop {
                let pending: Vec<String> = match self.store.routers().await {
                    Ok(routers) => routers
                        .into_iter()
                        .filter(|r| {
                            r.holds.get(cluster).is_none_or(|e| *e < epoch)
                                && r.epochs.get(cluster).is_none_or(|e| *e <= epoch)
                        })
                        .map(|r| r.id)
                        .collect(),
                    Err(e) => vec![format!("(listing the routers failed: {e})")],
                };
                if pending.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "routers {} did not acknowledge the hold of {cluster} at epoch {epoch} \
                         within {} ms, and their leases did not expire",
                        pending.join(", "),
                        limit.as_millis()
                    ));
                }
                tokio::time::sleep(HOLD_POLL).await;
            }
        })
    }

    fn begin<'a>(&'a self, intent: &'a Intent) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let token = self.token()?;
            let mut intent = intent.clone();
            intent.by = self.name.clone();
            match self.store.put_intent(&token, &intent).await {
                Ok(()) => Ok(()),
                Err(EtcdError::NotLeader) => Err(who_leads(&self.store, self.deposed()).await),
                Err(e) => Err(format!("the change could not be recorded in etcd: {e}")),
            }
        })
    }

    fn publish<'a>(&'a self, cluster: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.sync(Some(cluster)).await?;
            // The outcome is out: the change under way (if any) is over.
            let token = self.token()?;
            self.store
                .delete_intent(&token, cluster)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The coordinator of a process with role `router`: it never acts on a server.
#[derive(Debug)]
pub struct RouterOnly {
    pub store: EtcdStore,
}

impl RouterOnly {
    const WHY: &'static str = "this process has role \"router\"";
}

impl Coordinator for RouterOnly {
    fn leads(&self) -> Result<(), String> {
        Err(format!("{}: ask the leading orchestrator", Self::WHY))
    }

    fn ensure_leader(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { Err(who_leads(&self.store, Self::WHY.into()).await) })
    }

    fn hold<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Err(Self::WHY.into()) })
    }

    fn begin<'a>(&'a self, _: &'a Intent) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Err(Self::WHY.into()) })
    }

    fn publish<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Err(Self::WHY.into()) })
    }
}

/// Applies a cluster read from etcd to the local snapshot, unless the local one has a newer
/// epoch (a router never goes back to an older leader).
fn adopt(topology: &TopologyHandle, changes: Vec<TopologyChange>) {
    let current = topology.load();
    let fresh: Vec<ClusterStatus> = changes
        .into_iter()
        .filter_map(|c| match c {
            TopologyChange::Put(c) => Some(c),
            // Clusters come from the configuration; a deleted key changes nothing here.
            TopologyChange::Deleted(_) => None,
        })
        .filter(|c| {
            current
                .cluster(&c.name)
                .is_some_and(|local| local.epoch <= c.epoch && local != c)
        })
        .collect();
    if fresh.is_empty() {
        return;
    }
    topology.publish(|t| {
        for c in fresh {
            if let Some(local) = t.clusters.get_mut(&c.name) {
                if local.epoch <= c.epoch {
                    *local = c;
                }
            }
        }
    });
}

/// Reads etcd's topology once and adopts it (see [`adopt`]).
pub async fn catch_up(store: &EtcdStore, topology: &TopologyHandle) -> Result<(), EtcdError> {
    let (clusters, _) = store.load_topology().await?;
    adopt(topology, clusters.into_values().map(Change::Put).collect());
    Ok(())
}

/// Follows etcd's topology into `topology` until `stop` turns true (a process with role
/// `router` always; one with role `all` while it does not lead).
pub async fn follow(store: EtcdStore, topology: TopologyHandle, mut stop: watch::Receiver<bool>) {
    let work = list_and_watch(
        "the topology",
        || async {
            let (clusters, revision) = store.load_topology().await?;
            Ok((clusters.into_values().map(Change::Put).collect(), revision))
        },
        |revision| store.watch_topology(revision),
        |changes| adopt(&topology, changes),
    );
    tokio::select! {
        _ = work => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Lists what `list` reads and hands it to `apply`, then every change after it as the watch
/// delivers it; lists again after a compaction or a broken watch, and retries (without end)
/// while etcd does not answer: what was applied last stays in force meanwhile.
async fn list_and_watch<T, L, LF, W, WF>(
    what: &str,
    list: L,
    watch: W,
    mut apply: impl FnMut(Vec<Change<T>>),
) where
    T: serde::de::DeserializeOwned,
    L: Fn() -> LF,
    LF: std::future::Future<Output = Result<(Vec<Change<T>>, i64), EtcdError>>,
    W: Fn(i64) -> WF,
    WF: std::future::Future<Output = Result<shard_map::etcd::Watch<T>, EtcdError>>,
{
    loop {
        let (listed, revision) = match list().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "reading {what} from etcd");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        apply(listed);
        let mut changes = match watch(revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "watching {what} in etcd");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            match changes.next().await {
                Ok(Some(WatchEvent::Changes { changes, .. })) => apply(changes),
                Ok(Some(WatchEvent::Compacted)) => {
                    tracing::info!("the etcd history was compacted: reading {what} again");
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "the watch on {what} broke");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

/// This router's record and write fence, until `stop` completes.
pub async fn router_membership(
    store: EtcdStore,
    router: Arc<RouterContext>,
    mut record: RouterRecord,
    failsafe: bool,
    stop: impl std::future::Future<Output = ()>,
) {
    let topology = router.topology.clone();
    let mut lease: Option<Lease> = None;
    {
        let mut written: Option<RouterRecord> = None;
        let mut held = false;
        let mut tick = tokio::time::interval(FENCE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            // The fence first: it must not wait on etcd.
            let holds = lease.as_ref().is_some_and(Lease::holds);
            if held && !holds && written.is_some() {
                if failsafe {
                    tracing::warn!(
                        router = %record.id,
                        "router lease not renewed in time: writes go on to the leaders known \
                         (failsafe)"
                    );
                } else {
                    tracing::warn!(
                        router = %record.id,
                        "router lease not renewed in time: writes fenced"
                    );
                }
            } else if !held && holds {
                tracing::info!(router = %record.id, "router lease renewed: writes flow again");
            }
            held = holds;
            router.set_writes_fenced(!holds && !failsafe);
            if lease
                .as_ref()
                .is_none_or(|l| l.state() == shard_map::etcd::LeaseState::Expired)
            {
                written = None;
                lease = match Lease::grant(&store).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::debug!(router = %record.id, error = %e, "granting the router's lease");
                        None
                    }
                };
                // A new lease: the old one expired, so a failover may have gone on without
                // this router. Catch up with etcd's topology before the fence lifts.
                if lease.is_some() {
                    if let Err(e) = catch_up(&store, &topology).await {
                        tracing::debug!(
                            router = %record.id,
                            error = %e,
                            "reading the topology with a new lease"
                        );
                        lease = None;
                    }
                }
                continue;
            }
            let topo = topology.load();
            record.holds = topo
                .clusters
                .values()
                .filter(|c| c.phase.holds())
                .map(|c| (c.name.clone(), c.epoch))
                .collect();
            record.epochs = topo
                .clusters
                .values()
                .map(|c| (c.name.clone(), c.epoch))
                .collect();
            if written.as_ref() != Some(&record) {
                if let Some(l) = &lease {
                    match store.put_router(l, &record).await {
                        Ok(()) => written = Some(record.clone()),
                        Err(e) => tracing::debug!(
                            router = %record.id,
                            error = %e,
                            "writing the router's record"
                        ),
                    }
                }
            }
        }
    }
    // Going away: unregister at once, so that no failover waits for this router's lease.
    if let Some(l) = lease {
        l.revoke().await;
    }
}

/// The orchestrator duty of a process with role `all`: campaign, lead or stand by, until
/// `stop` completes; a leader resigns on the way out.
pub async fn orchestrator_duty(
    store: EtcdStore,
    coordinator: Arc<EtcdCoordinator>,
    orchestrator: Arc<Orchestrator>,
    topology: TopologyHandle,
    me: Member,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Stand by: follow etcd while campaigning.
        let (stop_following, following) = watch::channel(false);
        let follower = tokio::spawn(follow(store.clone(), topology.clone(), following));
        let won = tokio::select! {
            won = campaign(&store, &me) => won,
            _ = stop.wait_for(|s| *s) => None,
        };
        let _ = stop_following.send(true);
        let _ = follower.await;
        let Some((lease, token)) = won else {
            return;
        };
        lead(
            &store,
            &coordinator,
            &orchestrator,
            &topology,
            lease,
            token,
            &mut stop,
        )
        .await;
    }
}

/// Campaigns until this process leads: its lease and token.
async fn campaign(store: &EtcdStore, me: &Member) -> Option<(Lease, LeaderToken)> {
    let mut lease: Option<Lease> = None;
    loop {
        if lease.as_ref().is_none_or(|l| !l.holds()) {
            lease = Lease::grant(store).await.ok();
        }
        let Some(l) = &lease else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let _ = store.put_orchestrator(l, me).await;
        match store.try_lead(l, me).await {
            Ok(Ok(token)) => return lease.map(|l| (l, token)),
            Ok(Err(leader)) => {
                tracing::debug!(leader = %leader.id, "another orchestrator leads");
                // Wake when it goes (or re-check each TTL: our own lease is renewed meanwhile).
                let _ = store.wait_leader_gone(store.lease_ttl()).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "campaigning");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Leads until the lease does not surely hold any more, the leadership is lost, or `stop`.
async fn lead(
    store: &EtcdStore,
    coordinator: &Arc<EtcdCoordinator>,
    orchestrator: &Arc<Orchestrator>,
    topology: &TopologyHandle,
    lease: Lease,
    token: LeaderToken,
    stop: &mut watch::Receiver<bool>,
) {
    tracing::info!(revision = token.revision(), "this orchestrator leads");
    // Take over from etcd first: epochs go on from the highest any leader published.
    if let Err(e) = catch_up(store, topology).await {
        tracing::warn!(error = %e, "reading the topology on taking the lead: stepping down");
        step_down(store, &token, lease).await;
        return;
    }
    coordinator.reset_written().await;
    coordinator.set_leading(Some(token), Some(&lease));
    orchestrator.note_everywhere(
        "orchestrator.leading",
        &format!(
            "{} leads: it watches the clusters and fails them over",
            coordinator.name
        ),
    );
    // A change of leader the previous leader began and did not publish: complete or undo
    // it before anything else is decided.
    match store.intents().await {
        Ok(intents) => {
            for intent in intents {
                match orchestrator.resume(&intent).await {
                    Ok(outcome) => {
                        tracing::info!(cluster = %intent.cluster, ?outcome, "intent taken over")
                    }
                    Err(e) => {
                        tracing::warn!(cluster = %intent.cluster, error = %e, "taking over an intent")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the intents on taking the lead: stepping down");
            coordinator.set_leading(None, None);
            step_down(store, &token, lease).await;
            return;
        }
    }
    let (stop_run, run_stopped) = watch::channel(false);
    let run = tokio::spawn(orchestrator.clone().run(async move {
        let mut rx = run_stopped;
        let _ = rx.wait_for(|s| *s).await;
    }));
    // Changes the other processes ask for.
    let requests = {
        let mut rx = stop_run.subscribe();
        tokio::spawn(crate::control::serve_requests(
            store.clone(),
            orchestrator.clone(),
            token,
            coordinator.name.clone(),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    let mut changes = topology.subscribe();
    let mut tick = tokio::time::interval(FENCE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut graceful = false;
    let why = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                graceful = true;
                break "it stops (resigned)".to_owned();
            }
            _ = changes.changed() => {}
            _ = tick.tick() => {}
        }
        let lapsed = "its lease in etcd was not renewed in time (etcd unreachable, or this \
                      process paused)";
        if !lease.holds() {
            tracing::warn!("this orchestrator's lease was not renewed in time: it stops leading");
            break lapsed.to_owned();
        } else if let Err(why) = coordinator.sync(None).await {
            tracing::warn!(%why, "publishing the topology to etcd");
            if !lease.holds() {
                break lapsed.to_owned();
            }
            if !coordinator.is_leading() {
                break format!("etcd refused its leadership ({why})");
            }
        }
    };
    if !graceful {
        orchestrator.note_everywhere(
            "orchestrator.deposed",
            &format!(
                "{} no longer leads: {why}; it fails nothing over until it leads again",
                coordinator.name
            ),
        );
    }
    coordinator.set_leading(None, None);
    let _ = stop_run.send(true);
    let _ = run.await;
    let _ = requests.await;
    if graceful {
        step_down(store, &token, lease).await;
    }
    tracing::info!("this orchestrator no longer leads");
}

/// Gives the leadership up at once: the leader key deleted, the lease ended.
async fn step_down(store: &EtcdStore, token: &LeaderToken, lease: Lease) {
    let _ = store.resign(token).await;
    lease.revoke().await;
}

/// A record for this process's router.
pub fn router_record(id: &str, addr: Option<String>, admin: Option<String>) -> RouterRecord {
    RouterRecord {
        id: id.to_owned(),
        addr,
        admin,
        started_ms: now_ms(),
        holds: BTreeMap::new(),
        epochs: BTreeMap::new(),
    }
}

/// A record for this process as an orchestrator candidate.
pub fn member(id: &str, admin: Option<String>) -> Member {
    Member {
        id: id.to_owned(),
        admin,
        started_ms: now_ms(),
    }
}

/// The shard map in force in etcd; the first process saves `configured` as version 1.
pub async fn shard_map_in_force(
    store: &EtcdStore,
    configured: &shard_map::ShardMap,
) -> Result<shard_map::VersionedShardMap, EtcdError> {
    if let (Some(saved), _) = store.load_shard_map().await? {
        return Ok(saved);
    }
    let first = shard_map::VersionedShardMap {
        version: 1,
        map: configured.clone(),
    };
    match store.save_shard_map(&first).await {
        Ok(()) => Ok(first),
        // Another process saved one first: that one.
        Err(EtcdError::Conflict { .. }) => {
            store.load_shard_map().await?.0.ok_or(EtcdError::Corrupt {
                key: format!("{}/shard-map", store.prefix()),
                error: "deleted right after it was saved".into(),
            })
        }
        Err(e) => Err(e),
    }
}

/// This process's place in a multi-process deployment, for the admin API and `status`.
#[derive(Debug)]
pub struct Membership {
    pub name: String,
    pub role: crate::config::ProcessRole,
    pub store: EtcdStore,
    /// Set for role `all` (an orchestrator candidate).
    pub coordinator: Option<Arc<EtcdCoordinator>>,
}

impl Membership {
    /// What etcd says of the deployment and what this process is in it (`GET
    /// /api/v1/members`). An unreachable etcd is reported, not an error.
    pub async fn describe(&self) -> serde_json::Value {
        let leading = self.coordinator.as_ref().is_some_and(|c| c.is_leading());
        let this = serde_json::json!({
            "name": self.name,
            "role": self.role,
            "leading": leading,
        });
        let read = async {
            let leader = self.store.leader().await?;
            let orchestrators = with_contact(
                self.store.orchestrators().await?,
                |m| &m.id,
                self.store.last_contacts("orchestrators").await?,
            );
            let routers = with_contact(
                self.store.routers().await?,
                |r| &r.id,
                self.store.last_contacts("routers").await?,
            );
            Ok::<_, EtcdError>((leader, orchestrators, routers))
        };
        match read.await {
            Ok((leader, orchestrators, routers)) => serde_json::json!({
                "mode": "etcd",
                "etcd": "ok",
                "this": this,
                "leader": leader,
                "orchestrators": orchestrators,
                "routers": routers,
            }),
            Err(e) => serde_json::json!({
                "mode": "etcd",
                "etcd": format!("unreachable: {e}"),
                "this": this,
            }),
        }
    }
}

/// `records` as JSON, each with `last_contact_s`: the whole seconds since etcd last heard
/// from its process (from `contacts`, by id).
fn with_contact<T: serde::Serialize>(
    records: Vec<T>,
    id: impl Fn(&T) -> &String,
    contacts: BTreeMap<String, u64>,
) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let (Some(o), Some(s)) = (v.as_object_mut(), contacts.get(id(r))) {
                o.insert("last_contact_s".into(), (*s).into());
            }
            v
        })
        .collect()
}

/// Applies every shard map version saved in etcd (by any process) to this router, until
/// `stop`; a compacted history is read again.
pub async fn follow_shard_map(
    store: EtcdStore,
    router: Arc<RouterContext>,
    maps: Arc<crate::admin::ShardMapState>,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = list_and_watch(
        "the shard map",
        || async {
            let (saved, revision) = store.load_shard_map().await?;
            Ok((saved.into_iter().map(Change::Put).collect(), revision))
        },
        |revision| store.watch_shard_map(revision),
        |changes| {
            for c in changes {
                if let Change::Put(saved) = c {
                    if maps.apply_saved(&router, saved) {
                        tracing::info!(version = maps.current(), "shard map from etcd applied");
                    }
                }
            }
        },
    );
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}
