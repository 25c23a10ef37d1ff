//! Wires one switchyard process from a [`Config`]: the router's MySQL listener, the
//! orchestrator's monitor and the admin API, sharing one topology. `serve`, `sandbox` and the
//! integration tests all start it here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use orchestrator::monitor::{self, ClusterSpec, MonitorConfig};
use orchestrator::Orchestrator;
use router::backend::{BackendConn, ConnectOptions};
use router::config::Secret;
use router::context::FailureReporter;
use router::RouterContext;
use shard_map::{FileStore, ShardMapStore, TopologyHandle, VersionedShardMap};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, ShardMapState};
use crate::config::Config;
use crate::reload::Reloader;

/// A running switchyard.
#[derive(Debug)]
pub struct App {
    /// The router's MySQL listener; `None` with role `orchestrator`.
    pub router_addr: Option<SocketAddr>,
    /// The router's Unix-domain socket, when `router.socket` is set.
    pub router_socket: Option<std::path::PathBuf>,
    pub admin_addr: SocketAddr,
    /// The admin SQL port, when `admin.sql_listen` is set.
    pub admin_sql_addr: Option<SocketAddr>,
    pub topology: TopologyHandle,
    pub router: Arc<RouterContext>,
    pub orchestrator: Arc<Orchestrator>,
    pub admin_token: Secret,
    /// Reloads the configuration (SIGHUP in `serve`, `POST /api/v1/config/reload`).
    pub reloader: Arc<Reloader>,
    /// Online moves of rows (reshard, MoveTables).
    pub moves: Arc<crate::moves::Moves>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// The router's port.
    ///
    /// # Panics
    /// With role `orchestrator` (no router listener): callers start processes that route.
    pub fn router_port(&self) -> u16 {
        self.router_addr
            .expect("this process has role \"orchestrator\": it has no router listener")
            .port()
    }

    /// Starts every component. `config.admin.token` must be set.
    pub async fn start(mut config: Config) -> anyhow::Result<App> {
        router::tls::install_default_provider();
        let problems = config.validate();
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  - {}",
            problems.join("\n  - ")
        );
        let token = config
            .admin
            .token
            .clone()
            .context("admin token is not set")?;
        let specs: Vec<ClusterSpec> = config
            .clusters
            .iter()
            .map(|c| ClusterSpec {
                name: c.name.clone(),
                nodes: c.nodes.clone(),
                leader: c.leader.clone(),
            })
            .collect();
        // What an earlier run kept: its leaders win over the file's (written before the last
        // switchover, maybe), its epochs and flags carry on.
        let kept = match &config.state_dir {
            Some(dir) => crate::state::KeptState::load(dir)?,
            None => Default::default(),
        };
        let mut specs = specs;
        for s in specs.iter_mut() {
            if let Some(l) = kept.leader(&s.name, &s.all_nodes()) {
                s.leader = Some(l);
            }
        }
        let mut initial = monitor::initial_topology(&specs);
        kept.restore(&mut initial);
        let topology = TopologyHandle::new(initial);
        // With etcd, what the leading orchestrator published wins (its epochs go on).
        let etcd = match &config.etcd {
            Some(e) => {
                let store = shard_map::etcd::EtcdStore::connect(&e.options())
                    .await
                    .with_context(|| format!("can't reach etcd at {}", e.endpoints.join(",")))?;
                crate::distributed::catch_up(&store, &topology)
                    .await
                    .context("reading the topology from etcd")?;
                Some(store)
            }
            None => None,
        };
        if config.router.server_version.is_none() {
            config.router.server_version = Some(announced_version(&config).await);
        }
        let mut shard_map = config
            .shard_map()
            .map_err(|e| anyhow::anyhow!("invalid keyspaces: {e:?}"))?;
        // With etcd, the shard map saved there is the one in force (the first process saves
        // its configuration's) and `shard_map_dir` is not used.
        let store: Option<Arc<dyn ShardMapStore>> = match etcd {
            Some(_) => None,
            None => config
                .shard_map_dir
                .as_ref()
                .map(|d| Arc::new(FileStore::new(d)) as Arc<dyn ShardMapStore>),
        };
        let saved = match (&etcd, &store) {
            (Some(etcd), _) => Some(
                crate::distributed::shard_map_in_force(etcd, &shard_map)
                    .await
                    .context("the shard map in etcd")?,
            ),
            (None, Some(store)) => {
                let saved = store.load().context("reading the stored shard map")?;
                if saved.is_none() {
                    store
                        .save(&VersionedShardMap {
                            version: 1,
                            map: shard_map.clone(),
                        })
                        .context("saving the shard map")?;
                }
                saved
            }
            (None, None) => None,
        };
        let mut version = 1;
        if let Some(saved) = saved {
            let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
            let problems = saved.map.validate(&names);
            let kept = if etcd.is_some() {
                "in etcd"
            } else {
                "in shard_map_dir"
            };
            anyhow::ensure!(
                problems.is_empty(),
                "the shard map {kept} (version {}) does not fit the clusters: {problems:?}",
                saved.version
            );
            shard_map = saved.map;
            version = saved.version;
        }
        let cluster_names: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
        let o = &config.orchestrator;
        let mut mcfg = MonitorConfig::new(o.user.clone(), o.password.expose().to_string());
        mcfg.tick = Duration::from_millis(o.tick_ms);
        mcfg.connect_timeout = Duration::from_millis(o.connect_timeout_ms);
        mcfg.poll_timeout = Duration::from_millis(o.poll_timeout_ms);
        mcfg.suspect_timeout = Duration::from_millis(o.suspect_timeout_ms);
        mcfg.down_after = o.down_after;
        mcfg.tls = o.node_tls();
        let orchestrator = Orchestrator::new(
            mcfg,
            config.failover.clone(),
            specs,
            topology.clone(),
            o.repl_user.clone(),
            o.repl_password.expose().to_string(),
        );
        for (name, c) in &kept.clusters {
            orchestrator.restore_failover_history(name, &c.failovers_ms);
        }
        // Failures the router sees on live traffic make the orchestrator look at once.
        let reporter = {
            let o = Arc::downgrade(&orchestrator);
            FailureReporter(Arc::new(move |addr: &str| {
                if let Some(o) = o.upgrade() {
                    o.report_failure(addr);
                }
            }))
        };
        let router = Arc::new(
            RouterContext::new(config.router.clone(), topology.clone(), shard_map)
                .with_failure_reporter(reporter)
                .with_internal_user(
                    &config.orchestrator.user,
                    config.orchestrator.password.expose(),
                )
                .with_tls()
                .context("router TLS")?,
        );
        // (Validation refuses role "orchestrator" without etcd.)
        let router_listeners = match config.role.routes() {
            true => Some(router_listeners(&config.router).await?),
            false => None,
        };
        let router_addr = match &router_listeners {
            Some(l) => Some(l.tcp.local_addr()?),
            None => None,
        };
        let router_socket_path = router_listeners
            .as_ref()
            .and_then(|l| l.unix.as_ref())
            .map(|l| l.path().to_path_buf());
        let admin_listener = TcpListener::bind(&config.admin.listen)
            .await
            .with_context(|| format!("can't listen on {} (admin API)", config.admin.listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let stop_watch = stop_rx.clone();
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let mut tasks = vec![tokio::spawn(sample_rates(router.clone(), stopped()))];
        if let Some(listeners) = router_listeners {
            tasks.push(tokio::spawn(router::run(
                listeners,
                router.clone(),
                stopped(),
            )));
            tasks.push(tokio::spawn(router::deposed::cut_deposed_leaders(
                router.clone(),
                stopped(),
            )));
            tasks.push(tokio::spawn(xa_recovery(router.clone(), stopped())));
        }
        let mut members = None;
        let mut control = crate::control::Control::new(orchestrator.clone());
        match (&etcd, config.role) {
            (None, _) => tasks.push(tokio::spawn(orchestrator.clone().run(stopped()))),
            (Some(store), role) => {
                let name = crate::distributed::process_name(
                    config.etcd.as_ref().and_then(|e| e.name.as_deref()),
                );
                control = control.forwarding(store.clone(), &name);
                let admin = Some(admin_addr.to_string());
                if let Some(addr) = router_addr {
                    let record = crate::distributed::router_record(
                        &name,
                        Some(addr.to_string()),
                        admin.clone(),
                    );
                    tasks.push(tokio::spawn(crate::distributed::router_membership(
                        store.clone(),
                        router.clone(),
                        record,
                        config.etcd.as_ref().is_some_and(|e| e.failsafe),
                        stopped(),
                    )));
                }
                let coordinator = match role {
                    crate::config::ProcessRole::All | crate::config::ProcessRole::Orchestrator => {
                        let coordinator = crate::distributed::EtcdCoordinator::new(
                            store.clone(),
                            topology.clone(),
                            &name,
                        );
                        orchestrator.set_coordinator(coordinator.clone());
                        tasks.push(tokio::spawn(crate::distributed::orchestrator_duty(
                            store.clone(),
                            coordinator.clone(),
                            orchestrator.clone(),
                            topology.clone(),
                            crate::distributed::member(&name, admin),
                            stop_watch.clone(),
                        )));
                        Some(coordinator)
                    }
                    crate::config::ProcessRole::Router => {
                        orchestrator.set_coordinator(Arc::new(crate::distributed::RouterOnly {
                            store: store.clone(),
                        }));
                        tasks.push(tokio::spawn(crate::distributed::follow(
                            store.clone(),
                            topology.clone(),
                            stop_watch.clone(),
                        )));
                        None
                    }
                };
                members = Some(Arc::new(crate::distributed::Membership {
                    name,
                    role,
                    store: store.clone(),
                    coordinator,
                }));
            }
        }
        if let Some(dir) = &config.state_dir {
            let o = Arc::downgrade(&orchestrator);
            tasks.push(tokio::spawn(crate::state::keep(
                topology.clone(),
                move |c: &str| {
                    o.upgrade()
                        .map(|o| o.failover_history_ms(c))
                        .unwrap_or_default()
                },
                Arc::from(dir.as_path()),
                stopped(),
            )));
        }
        let integrations = crate::integrations::Integrations::with_orchestrator(
            config.integrations.clone(),
            &orchestrator,
        );
        tasks.push(tokio::spawn(
            integrations.clone().run(topology.clone(), stopped()),
        ));
        let acl = Arc::new(crate::acl::Acl::new(
            config.admin.users.clone(),
            Some(token.clone()),
            config.admin.audit_log.clone(),
        ));
        let reloader = Arc::new(Reloader::new(
            config.clone(),
            router.clone(),
            acl.clone(),
            orchestrator.clone(),
        ));
        let shard_maps = {
            let state = ShardMapState::new(version, store, cluster_names);
            Arc::new(match &etcd {
                Some(e) => state.with_etcd(e.clone()),
                None => state,
            })
        };
        if let Some(e) = &etcd {
            tasks.push(tokio::spawn(crate::distributed::follow_shard_map(
                e.clone(),
                router.clone(),
                shard_maps.clone(),
                stopped(),
            )));
        }
        let moves = crate::moves::Moves::load(
            topology.clone(),
            orchestrator.clone(),
            router.clone(),
            shard_maps.clone(),
            config.orchestrator.user.clone(),
            config.orchestrator.password.clone(),
            config.state_dir.as_deref(),
            crate::moves::MoveSettings::default(),
        )
        .context("the moves kept in state_dir")?;
        let admin_state = AdminState {
            moves: moves.clone(),
            topology: topology.clone(),
            router: router.clone(),
            orchestrator: orchestrator.clone(),
            control: Arc::new(control),
            acl,
            reloader: reloader.clone(),
            shard_maps: shard_maps.clone(),
            integrations,
            members,
        };
        let admin_sql_addr = match &config.admin.sql_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("can't listen on {addr} (admin SQL port)"))?;
                let bound = l.local_addr()?;
                tasks.push(tokio::spawn(crate::admin_sql::run(
                    l,
                    admin_state.clone(),
                    stopped(),
                )));
                Some(bound)
            }
            None => None,
        };
        let api = admin::routes(admin_state);
        let admin_stop = stopped();
        match crate::admin_tls::config(&config.admin).context("admin API TLS")? {
            Some(tls) => tasks.push(crate::admin_tls::spawn(
                admin_listener,
                api,
                tls,
                admin_stop,
            )?),
            None => tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(admin_listener, api)
                    .with_graceful_shutdown(admin_stop)
                    .await
                {
                    tracing::error!(error = %e, "admin API stopped");
                }
            })),
        }
        Ok(App {
            router_addr,
            router_socket: router_socket_path,
            admin_addr,
            admin_sql_addr,
            topology,
            router,
            orchestrator,
            admin_token: token,
            reloader,
            moves,
            stop,
            tasks,
        })
    }

    /// Waits until every cluster has a leader that is up, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut changes = self.topology.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if admin::is_ready(&self.topology) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return admin::is_ready(&self.topology);
            }
        }
    }

    /// Stops accepting, lets sessions finish (bounded), stops the monitor and the API.
    pub async fn shutdown(self) {
        self.moves.shutdown().await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Resolves the prepared XA branches an earlier run of this router left behind: once every
/// leader is known at start, and again whenever a cluster gets a new leader (a branch whose
/// connection died with the old leader is then prepared on the new one).
async fn xa_recovery(router: Arc<RouterContext>, stop: impl std::future::Future<Output = ()>) {
    if !router.shard_map.load().has_sharded_keyspace() {
        return;
    }
    let work = async {
        let mut changes = router.topology.subscribe();
        let mut epochs: Option<Vec<(String, u64)>> = None;
        loop {
            let topo = router.topology.load();
            let now: Vec<(String, u64)> = topo
                .clusters
                .iter()
                .map(|(n, c)| (n.clone(), c.epoch))
                .collect();
            let ready = topo.clusters.values().all(|c| c.leader.is_some());
            let leftovers = ready
                && router
                    .xa
                    .leftovers
                    .swap(false, std::sync::atomic::Ordering::Relaxed);
            if ready && (epochs.as_ref() != Some(&now) || leftovers) {
                let r = router::xa::recover(&router).await;
                if r.unreachable.is_empty() {
                    epochs = Some(now);
                }
                if !r.committed.is_empty() || !r.rolled_back.is_empty() {
                    tracing::info!(
                        committed = r.committed.len(),
                        rolled_back = r.rolled_back.len(),
                        "XA recovery done"
                    );
                }
            }
            if tokio::time::timeout(Duration::from_secs(5), changes.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

/// Samples the router's per-cluster counters once a second, for the rates the API shows.
async fn sample_rates(router: Arc<RouterContext>, stop: impl std::future::Future<Output = ()>) {
    let work = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            router.metrics.rates.sample(&router.metrics);
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

/// The version clients are shown: the first leader's, marked as ours, with the `5.5.5-`
/// prefix MariaDB servers use so that old MySQL clients do not mistake them for 5.x.
async fn announced_version(config: &Config) -> String {
    const FALLBACK: &str = "5.5.5-10.11.0-MariaDB-switchyard";
    let Some(addr) = config
        .clusters
        .first()
        .and_then(|c| c.leader.clone().or_else(|| c.nodes.first().cloned()))
    else {
        return FALLBACK.into();
    };
    let opts = ConnectOptions {
        user: config.orchestrator.user.as_str().into(),
        password: config.orchestrator.password.expose().clone(),
        deprecate_eof: false,
        found_rows: false,
        connect_timeout: Duration::from_secs(2),
        // The backends may insist on TLS; a failure here only means the default version.
        tls: router::tls::RouterTls::load(&config.router)
            .ok()
            .and_then(|t| t.backends),
        tcp: config.router.tcp_options(),
    };
    let version = async {
        let mut c = BackendConn::connect(&addr, &opts).await.ok()?;
        let out = c.query("SELECT VERSION()").await.ok()?;
        out.rows.first()?.first()?.clone()
    }
    .await;
    match version {
        Some(v) => {
            let base = v.split('-').next().unwrap_or(&v);
            format!("5.5.5-{base}-MariaDB-switchyard")
        }
        None => FALLBACK.into(),
    }
}

/// The router's MySQL listeners: TCP, and the Unix-domain socket when `socket` is set.
async fn router_listeners(
    config: &router::config::RouterConfig,
) -> anyhow::Result<router::server::Listeners> {
    let tcp = listen(&config.listen, ROUTER_BACKLOG)
        .await
        .with_context(|| format!("can't listen on {} (router)", config.listen))?;
    let unix = match &config.socket {
        Some(path) => Some(
            router::server::SocketListener::bind(path)
                .await
                .with_context(|| format!("can't listen on {} (router socket)", path.display()))?,
        ),
        None => None,
    };
    Ok(router::server::Listeners { tcp, unix })
}

/// Connections the kernel queues for the router before it accepts them: MySQL clients wait
/// for the server to speak first, so one dropped from a full queue would wait forever.
const ROUTER_BACKLOG: u32 = 4096;

/// Listens on `addr` (host:port, resolved) with a backlog of `backlog` (capped by the
/// kernel's `net.core.somaxconn`).
async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address for {addr}"),
        )
    }))
}
