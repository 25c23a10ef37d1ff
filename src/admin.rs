//! The admin HTTP API (axum) under `/api/v1`: health, cluster topology, router counters, and
//! the orchestrator's operations (switchover, failover, rebuild, node flags, failover limits,
//! events).
//! Bearer-token auth on everything but health; errors are JSON `{"error": ...}`.
//! Every route is declared through `utoipa_axum::routes!`, so the OpenAPI document served at
//! `/api/v1/openapi.json` is generated from the same declarations the router serves.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::acl::{Acl, AuditEntry, Denied, Principal};
use crate::control::{Command, Done, Failure};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use orchestrator::{Orchestrator, RebuildMethod};
use router::RouterContext;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shard_map::{
    ClusterPhase, NodeFlags, NodeState, ShardMap, ShardMapStore, TopologyHandle, VersionedShardMap,
};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod history;
mod moves;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Online moves of rows (reshard, MoveTables).
    pub moves: Arc<crate::moves::Moves>,
    pub topology: TopologyHandle,
    pub router: Arc<RouterContext>,
    pub orchestrator: Arc<Orchestrator>,
    /// The changes an operator asks for (run here, or asked of the leader).
    pub control: Arc<crate::control::Control>,
    pub acl: Arc<Acl>,
    pub shard_maps: Arc<ShardMapState>,
    /// The configuration in force, and its reload.
    pub reloader: Arc<crate::reload::Reloader>,
    /// Routing-layer integrations: their settings (HAProxy's generated configuration) and
    /// push counters.
    pub integrations: Arc<crate::integrations::Integrations>,
    /// This process's part in a deployment sharing etcd; `None` when it works alone.
    pub members: Option<Arc<crate::distributed::Membership>>,
}

/// Why a new shard map was not put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceError {
    /// The version in force is not the one the change was based on.
    Stale { current: u64 },
    /// etcd did not take it.
    Etcd(String),
    /// The file store could not save it.
    Persist(String),
}

/// The shard map's version and store, behind the API's GET/PUT.
pub struct ShardMapState {
    /// The applied version; changes are serialised by this lock.
    version: std::sync::Mutex<u64>,
    store: Option<Arc<dyn ShardMapStore>>,
    clusters: Vec<String>,
    /// With several processes the shard map lives in etcd (compare-and-set on the version)
    /// and every process applies what is saved there.
    etcd: Option<shard_map::etcd::EtcdStore>,
    /// Serialises saves to etcd (they wait on it, so the version lock can't be held).
    saving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ShardMapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardMapState").finish_non_exhaustive()
    }
}

impl ShardMapState {
    pub fn new(version: u64, store: Option<Arc<dyn ShardMapStore>>, clusters: Vec<String>) -> Self {
        ShardMapState {
            version: std::sync::Mutex::new(version),
            store,
            clusters,
            etcd: None,
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// Keeps the shard map in etcd instead of `store`.
    pub fn with_etcd(mut self, etcd: shard_map::etcd::EtcdStore) -> Self {
        self.etcd = Some(etcd);
        self
    }

    /// Puts `map` in force as the next version (saved first: in etcd, or in the file store)
    /// unless the version in force is not `based_on`; returns the new version and what
    /// changed. The map must have been validated for these clusters.
    pub async fn replace(
        &self,
        router: &RouterContext,
        map: ShardMap,
        based_on: Option<u64>,
    ) -> Result<(u64, Vec<String>), ReplaceError> {
        if let Some(etcd) = &self.etcd {
            let _saving = self.saving.lock().await;
            let current = self.current();
            if based_on.is_some_and(|v| v != current) {
                return Err(ReplaceError::Stale { current });
            }
            let next = VersionedShardMap {
                version: current + 1,
                map: map.clone(),
            };
            match etcd.save_shard_map(&next).await {
                Ok(()) => {}
                Err(shard_map::etcd::EtcdError::Conflict { current }) => {
                    return Err(ReplaceError::Stale { current })
                }
                Err(e) => {
                    return Err(ReplaceError::Etcd(format!(
                        "could not save the shard map in etcd: {e}"
                    )))
                }
            }
            let changes = shard_map::diff(&router.shard_map.load(), &map);
            self.apply_saved(router, next);
            return Ok((current + 1, changes));
        }
        let mut version = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if based_on.is_some_and(|v| v != *version) {
            return Err(ReplaceError::Stale { current: *version });
        }
        let next = *version + 1;
        if let Some(store) = &self.store {
            store
                .save(&VersionedShardMap {
                    version: next,
                    map: map.clone(),
                })
                .map_err(|e| {
                    ReplaceError::Persist(format!("could not persist the shard map: {e}"))
                })?;
        }
        let changes = shard_map::diff(&router.shard_map.load(), &map);
        router.shard_map.store(Arc::new(map));
        *version = next;
        Ok((next, changes))
    }

    /// The clusters a shard map must fit.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// Whether the shard map lives in etcd (several processes).
    pub fn in_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// The version in force.
    pub fn current(&self) -> u64 {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `map` as `version` if that is newer than the version in force (a map saved in
    /// etcd by any process); false when it is not newer or does not fit the clusters.
    pub fn apply_saved(&self, router: &RouterContext, saved: VersionedShardMap) -> bool {
        let mut version = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if saved.version <= *version {
            return false;
        }
        let names: Vec<&str> = self.clusters.iter().map(String::as_str).collect();
        let problems = saved.map.validate(&names);
        if !problems.is_empty() {
            tracing::error!(
                version = saved.version,
                ?problems,
                "the shard map saved in etcd does not fit this process's clusters: not applied"
            );
            return false;
        }
        router.shard_map.store(Arc::new(saved.map));
        *version = saved.version;
        true
    }

    /// A shard map sent in a request, valid for these clusters, with the `version` it was
    /// based on when the body names one (the JSON `GET` returns), or the 400 answer's body:
    /// the JSON error, or every problem of the map.
    fn parse_versioned(&self, body: &str) -> Result<(ShardMap, Option<u64>), serde_json::Value> {
        let bad_json =
            |e: serde_json::Error| json!({ "error": format!("invalid shard map JSON: {e}") });
        let mut value: serde_json::Value = serde_json::from_str(body).map_err(bad_json)?;
        let based_on = match value.as_object_mut().and_then(|o| o.remove("version")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(
                || json!({ "error": "invalid shard map JSON: `version` must be a whole number" }),
            )?),
        };
        let map = self.parse(&value.to_string())?;
        Ok((map, based_on))
    }

    /// A shard map sent in a request, valid for these clusters, or the 400 answer's body:
    /// the JSON error, or every problem of the map.
    fn parse(&self, body: &str) -> Result<ShardMap, serde_json::Value> {
        let map = ShardMap::from_json(body)
            .map_err(|e| json!({ "error": format!("invalid shard map JSON: {e}") }))?;
        let names: Vec<&str> = self.clusters.iter().map(String::as_str).collect();
        let problems: Vec<String> = map.validate(&names).iter().map(|p| p.to_string()).collect();
        if problems.is_empty() {
            Ok(map)
        } else {
            Err(json!({
                "error": format!("invalid shard map: {}", problems.join("; ")),
                "problems": problems,
            }))
        }
    }
}

/// A shard map as the API shows it: its JSON with its `version`.
fn shard_map_body(map: &ShardMap, version: u64) -> serde_json::Value {
    let mut body: serde_json::Value =
        serde_json::from_str(&map.to_json()).unwrap_or_else(|_| json!({}));
    body["version"] = json!(version);
    body
}

/// The document's frame; paths and schemas come from the route declarations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard admin API",
        description = "Health, cluster topology, router counters, shard map, and the \
                       orchestrator's operations. Every endpoint but health and this document \
                       needs `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Readiness and this document"),
        (name = "clusters", description = "Topology and the orchestrator's operations"),
        (name = "router", description = "Router counters and the shard map"),
        (name = "moves", description = "Online moves of rows: reshard and MoveTables"),
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme the protected operations refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document describing exactly them.
fn api(state: Option<AdminState>) -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    let mut protected = OpenApiRouter::new()
        .routes(routes!(clusters))
        .routes(routes!(cluster))
        .routes(routes!(switchover))
        .routes(routes!(failover))
        .routes(routes!(reset_limits))
        .routes(routes!(events))
        .routes(routes!(set_flags))
        .routes(routes!(rebuild))
        .routes(routes!(router_stats))
        .routes(routes!(members))
        .routes(routes!(sessions))
        .routes(routes!(get_shard_map, put_shard_map))
        .routes(routes!(history::shard_map_versions))
        .routes(routes!(history::shard_map_version))
        .routes(routes!(
            history::shard_map_diff_versions,
            history::shard_map_diff_proposed
        ))
        .routes(routes!(history::topology_version))
        .routes(routes!(audit))
        .routes(routes!(get_config))
        .routes(routes!(history::validate_config))
        .routes(routes!(history::reload_config))
        .routes(routes!(haproxy_config))
        .routes(routes!(moves::list_moves, moves::create_move))
        .routes(routes!(moves::get_move))
        .routes(routes!(moves::diff_move))
        .routes(routes!(moves::switch_writes))
        .routes(routes!(moves::reverse_move))
        .routes(routes!(moves::complete_move))
        .routes(routes!(moves::cancel_move));
    // The layer does not change the document, so `openapi()` can do without a state.
    if let Some(state) = state {
        protected = protected.route_layer(middleware::from_fn_with_state(state, authorize));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(prometheus))
        .routes(routes!(dashboard))
        .routes(routes!(check_leader))
        .routes(routes!(check_replica))
        .routes(routes!(root))
        .merge(protected)
        .split_for_parts()
}

/// The OpenAPI document of this API (generated from the route declarations).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api(None).1
}

/// The API's routes.
pub fn routes(state: AdminState) -> Router {
    let (router, doc) = api(Some(state.clone()));
    let doc = Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    );
    router
        .layer(Extension(OpenApiJson(doc)))
        .fallback(not_found)
        .with_state(state)
}

/// The serialised document, shared by the handler.
#[derive(Debug, Clone)]
struct OpenApiJson(Arc<String>);

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
        .into_response()
}

/// Prometheus metrics of every cluster, node and of the router (no token: counts only).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
async fn prometheus(State(state): State<AdminState>) -> Response {
    let mut body = crate::metrics::render(&state.topology, &state.orchestrator, &state.router);
    body.push_str(&crate::metrics::render_moves(&state.moves));
    body.push_str(&crate::metrics::render_integrations(
        &state.integrations.metrics,
    ));
    if let Some(m) = &state.members {
        body.push_str(&crate::metrics::render_membership(m, &state.router));
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// A health check's answer: 200 or 503 with a one-line reason, for HAProxy's `option httpchk`.
fn check_answer(result: Result<&'static str, String>) -> Response {
    match result {
        Ok(why) => (StatusCode::OK, why.to_owned()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// 200 when `node` is the cluster's leader, up, and the cluster is not changing leader.
#[utoipa::path(get, path = "/api/v1/check/{cluster}/leader/{node}", tag = "health",
    params(("cluster" = String, Path, description = "Cluster name"), ("node" = String, Path, description = "The node, `host:port`")),
    responses(
        (status = 200, description = "The node is the leader and may take writes", content_type = "text/plain"),
        (status = 503, description = "It is not (the reason in the body)", content_type = "text/plain"),
    ))]
async fn check_leader(
    State(state): State<AdminState>,
    Path((cluster, node)): Path<(String, String)>,
) -> Response {
    let t = state.topology.load();
    let result = match t.cluster(&cluster) {
        None => Err(format!("unknown cluster {cluster}\n")),
        Some(c) if c.leader.as_deref() != Some(node.as_str()) => {
            Err(format!("{node} is not the leader of {cluster}\n"))
        }
        Some(c) if c.phase == ClusterPhase::Held => Err(format!("{cluster} is changing leader\n")),
        Some(c) => match c.node(&node) {
            Some(n) if n.state == NodeState::Up => Ok("leader\n"),
            _ => Err(format!("{node} is not up\n")),
        },
    };
    check_answer(result)
}

/// 200 when `node` is a replica of the cluster that is up, replicating (both threads), not
/// under maintenance, with a known lag.
#[utoipa::path(get, path = "/api/v1/check/{cluster}/replica/{node}", tag = "health",
    params(("cluster" = String, Path, description = "Cluster name"), ("node" = String, Path, description = "The node, `host:port`")),
    responses(
        (status = 200, description = "The node is a healthy replica", content_type = "text/plain"),
        (status = 503, description = "It is not (the reason in the body)", content_type = "text/plain"),
    ))]
async fn check_replica(
    State(state): State<AdminState>,
    Path((cluster, node)): Path<(String, String)>,
) -> Response {
    let t = state.topology.load();
    let result = match t
        .cluster(&cluster)
        .and_then(|c| c.node(&node).map(|n| (c, n)))
    {
        None => Err(format!("no node {node} in cluster {cluster}\n")),
        Some((c, _)) if c.leader.as_deref() == Some(node.as_str()) => {
            Err(format!("{node} is the leader\n"))
        }
        Some((_, n)) if n.role != shard_map::Role::Replica || n.state != NodeState::Up => {
            Err(format!("{node} is not an up replica\n"))
        }
        Some((_, n)) if n.flags.maintenance => Err(format!("{node} is under maintenance\n")),
        Some((_, n)) if n.io_running != Some(true) || n.sql_running != Some(true) => {
            Err(format!("{node}: replication threads are not running\n"))
        }
        Some((_, n)) if n.lag_seconds.is_none() => Err(format!("{node}: lag unknown\n")),
        Some(_) => Ok("replica\n"),
    };
    check_answer(result)
}

/// The dashboard: one static page that polls this API with the token typed into it.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The web dashboard (topology, shard map, events, switchover and maintenance buttons).
#[utoipa::path(get, path = "/ui", tag = "health",
    responses((status = 200, description = "The dashboard page; its calls use the token typed into it", content_type = "text/html")))]
async fn dashboard() -> Response {
    axum::response::Html(DASHBOARD).into_response()
}

/// The dashboard, also at the root.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
async fn root() -> Response {
    axum::response::Html(DASHBOARD).into_response()
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorBody {
    /// What went wrong and, where it helps, what to do.
    error: String,
}

/// An error answer: status and a JSON body `{"error": ...}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/v1/health, /api/v1/clusters, /api/v1/router",
    )
}

/// The HTTP answer for a command: what it did, or its failure with the status its kind
/// calls for.
fn command_answer(result: Result<Done, Failure>) -> Response {
    match result {
        Ok(Done::Changed(report)) => Json(report).into_response(),
        Ok(Done::Rebuilt(report)) => Json(report).into_response(),
        Ok(Done::LimitsReset { cluster }) => Json(json!({ "reset": cluster })).into_response(),
        Ok(Done::Flags {
            cluster,
            node,
            flags,
        }) => Json(json!({ "cluster": cluster, "node": node, "flags": flags })).into_response(),
        Err(f) => error(
            StatusCode::from_u16(f.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &f.message,
        ),
    }
}

#[utoipa::path(get, path = "/api/v1/clusters/{name}", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster: leader, epoch, phase, nodes (role, state, lag, GTID positions, threads, flags), and `kept_out`: the nodes the orchestrator keeps out (read-only, not replicating) until they are rebuilt", body = serde_json::Value),
        (status = 404, description = "Unknown cluster", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn cluster(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let t = state.topology.load();
    match t.cluster(&name) {
        Some(c) => Json(cluster_body(&state, c)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("unknown cluster `{name}`")),
    }
}

/// A cluster as the API shows it: the published status and the nodes kept out.
fn cluster_body(state: &AdminState, c: &shard_map::ClusterStatus) -> serde_json::Value {
    let mut body = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    body["kept_out"] = json!(state.orchestrator.kept_out(&c.name).unwrap_or_default());
    body
}

/// The node flags body as documented (the handler reads `shard_map::NodeFlags`; every field
/// is optional and defaults to false).
#[allow(dead_code)]
#[derive(ToSchema)]
struct FlagsDoc {
    /// Never elected, not failed over when it goes away.
    maintenance: Option<bool>,
    /// Wins an election among equally up-to-date candidates.
    preferred: Option<bool>,
    /// Ignored by elections entirely.
    ignored: Option<bool>,
}

/// Body of a switchover request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SwitchoverRequest {
    /// The replica to promote (`host:port`); elected when absent.
    to: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/clusters/{name}/switchover", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name")),
    request_body(content = Option<SwitchoverRequest>, description = "Optional target replica", content_type = "application/json"),
    responses(
        (status = 503, description = "Several processes share etcd, this one does not lead, and the leading orchestrator could not be asked through etcd in time: the message says whether anything was done", body = ErrorBody),
        (status = 200, description = "Done: old and new leader, epoch, every step", body = serde_json::Value),
        (status = 400, description = "Bad target address", body = ErrorBody),
        (status = 404, description = "Unknown cluster", body = ErrorBody),
        (status = 409, description = "Another operation runs on this cluster", body = ErrorBody),
        (status = 422, description = "Refused, with the reason", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn switchover(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Option<Json<SwitchoverRequest>>,
) -> Response {
    let to = body.and_then(|Json(b)| b.to);
    command_answer(
        state
            .control
            .run(Command::Switchover { cluster: name, to })
            .await,
    )
}

/// Body of a rebuild request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RebuildRequest {
    /// The node to copy (`host:port`): the leader or a healthy replica of it. By default the
    /// most up-to-date healthy replica, else the leader.
    source: Option<String>,
    /// `logical` (`mariadb-dump` over SQL) or `physical` (a `mariadb-backup` stream into
    /// `rebuild_restore_command`); by default the orchestrator's `rebuild_method`.
    #[schema(value_type = Option<String>)]
    method: Option<RebuildMethod>,
}

/// Rebuilds a node (typically one kept out for transactions the leader lacks): empties it,
/// copies a healthy replica (or the leader) into it (`mariadb-dump`, or a physical
/// `mariadb-backup`), and makes it a replica of the leader. Answers when it replicates, with
/// every step.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/nodes/{addr}/rebuild", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name"), ("addr" = String, Path, description = "The node to rebuild, `host:port`")),
    request_body(content = Option<RebuildRequest>, description = "Optional source node and method", content_type = "application/json"),
    responses(
        (status = 503, description = "Several processes share etcd, this one does not lead, and the leading orchestrator could not be asked through etcd in time: the message says whether anything was done", body = ErrorBody),
        (status = 200, description = "Done: node, source, leader, the position it resumed from, bytes copied, every step", body = serde_json::Value),
        (status = 404, description = "Unknown cluster, node or source", body = ErrorBody),
        (status = 409, description = "The node is the leader, or another operation runs on this cluster", body = ErrorBody),
        (status = 422, description = "Refused, with the reason (no healthy source, node unreachable)", body = ErrorBody),
        (status = 500, description = "Failed; the node stays kept out (read-only, not replicating)", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn rebuild(
    State(state): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    body: Option<Json<RebuildRequest>>,
) -> Response {
    let Json(body) = body.unwrap_or_default();
    let command = Command::Rebuild {
        cluster: name,
        node: addr,
        source: body.source,
        method: body.method,
    };
    command_answer(state.control.run(command).await)
}

#[utoipa::path(post, path = "/api/v1/clusters/{name}/failover", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 503, description = "Several processes share etcd, this one does not lead, and the leading orchestrator could not be asked through etcd in time: the message says whether anything was done", body = ErrorBody),
        (status = 200, description = "Done: old and new leader, epoch, every step", body = serde_json::Value),
        (status = 404, description = "Unknown cluster", body = ErrorBody),
        (status = 409, description = "Another operation runs on this cluster", body = ErrorBody),
        (status = 422, description = "Refused, with the reason", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn failover(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    command_answer(state.control.run(Command::Failover { cluster: name }).await)
}

#[utoipa::path(post, path = "/api/v1/clusters/{name}/failover-limits/reset", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 503, description = "Several processes share etcd, this one does not lead, and the leading orchestrator could not be asked through etcd in time: the message says whether anything was done", body = ErrorBody),
        (status = 200, description = "The anti-flapping counters were reset", body = serde_json::Value),
        (status = 404, description = "Unknown cluster", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn reset_limits(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    command_answer(
        state
            .control
            .run(Command::ResetFailoverLimits { cluster: name })
            .await,
    )
}

#[utoipa::path(get, path = "/api/v1/clusters/{name}/events", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "Recent events, oldest first: `{cluster, events: [{at_ms, cluster, kind, message}]}`", body = serde_json::Value),
        (status = 404, description = "Unknown cluster", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn events(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.orchestrator.events(&name) {
        Ok(events) => Json(json!({ "cluster": name, "events": events })).into_response(),
        Err(e) => command_answer(Err(e.into())),
    }
}

#[utoipa::path(put, path = "/api/v1/clusters/{name}/nodes/{addr}/flags", tag = "clusters", security(("bearer" = [])),
    params(("name" = String, Path, description = "Cluster name"), ("addr" = String, Path, description = "The node, `host:port`")),
    request_body(content = FlagsDoc, content_type = "application/json"),
    responses(
        (status = 503, description = "Several processes share etcd, this one does not lead, and the leading orchestrator could not be asked through etcd in time: the message says whether anything was done", body = ErrorBody),
        (status = 200, description = "The flags now set", body = serde_json::Value),
        (status = 422, description = "Unknown field or bad value", body = serde_json::Value),
        (status = 404, description = "Unknown cluster or node", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn set_flags(
    State(state): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    Json(flags): Json<NodeFlags>,
) -> Response {
    let command = Command::SetFlags {
        cluster: name,
        node: addr,
        flags,
    };
    command_answer(state.control.run(command).await)
}

#[utoipa::path(get, path = "/api/v1/shard-map", tag = "router", security(("bearer" = [])),
    responses(
        (status = 200, description = "The applied shard map and its version", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn get_shard_map(State(state): State<AdminState>) -> Response {
    let version = state.shard_maps.current();
    Json(shard_map_body(&state.router.shard_map.load(), version)).into_response()
}

/// Validates a new shard map, persists it as the next version and applies it to every router
/// session at once. An invalid map is refused whole, listing every problem.
#[utoipa::path(put, path = "/api/v1/shard-map", tag = "router", security(("bearer" = [])),
    request_body(content = serde_json::Value, description = "The whole new shard map; with `version` (as `GET` returns it), refused with 409 unless that version is still in force", content_type = "application/json"),
    responses(
        (status = 200, description = "Applied: `{version, changes}`", body = serde_json::Value),
        (status = 400, description = "Invalid: every problem listed", body = serde_json::Value),
        (status = 409, description = "The body's `version` (the one `GET` returned) is not the version in force any more: `{error, version}`", body = serde_json::Value),
        (status = 500, description = "Could not persist it", body = ErrorBody),
        (status = 503, description = "etcd (several processes) did not take it", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn put_shard_map(State(state): State<AdminState>, body: String) -> Response {
    let (map, based_on) = match state.shard_maps.parse_versioned(&body) {
        Ok(m) => m,
        Err(refused) => return (StatusCode::BAD_REQUEST, Json(refused)).into_response(),
    };
    match state.shard_maps.replace(&state.router, map, based_on).await {
        Ok((version, changes)) => {
            Json(json!({ "version": version, "changes": changes })).into_response()
        }
        Err(ReplaceError::Stale { current }) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!(
                    "the shard map changed meanwhile: version {current} is in force, the \
                     request was based on {}; GET it again and re-apply the change",
                    based_on.map_or("an older one".to_owned(), |v| v.to_string())
                ),
                "version": current,
            })),
        )
            .into_response(),
        Err(ReplaceError::Etcd(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(ReplaceError::Persist(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Authenticates the caller, checks the route's rule and the cluster scope, and writes every
/// mutating call (allowed or not) to the audit log.
async fn authorize(
    State(state): State<AdminState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = matched.map(|m| m.as_str().to_owned()).unwrap_or_default();
    // `/api/v1/clusters/{name}/...`: the cluster the call is about.
    let cluster = route
        .starts_with("/api/v1/clusters/{name}")
        .then(|| path.split('/').nth(4).map(str::to_owned))
        .flatten();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = state.acl.authenticate(header);
    let decision = who.as_ref().map_err(Clone::clone).and_then(|p| {
        state
            .acl
            .authorize(p, &method, &route, cluster.as_deref())
            .map(|()| p.clone())
    });
    let response = match decision {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(Denied::Unauthenticated(why)) => {
            let mut r = error(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer, Basic realm=\"switchyard\""
                    .parse()
                    .expect("static header"),
            );
            r
        }
        Err(Denied::Forbidden(why)) => error(StatusCode::FORBIDDEN, &why),
    };
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        state.acl.audit(AuditEntry {
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            user: who.map_or_else(|_| "-".to_owned(), |p| p.name),
            method: method.to_string(),
            path,
            cluster,
            status: response.status().as_u16(),
        });
    }
    response
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "health", security(("bearer" = [])),
    responses(
        (status = 200, description = "The most recent mutating calls, oldest first (admin only)", body = Vec<AuditEntry>),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn audit(State(state): State<AdminState>) -> Response {
    Json(json!({ "entries": state.acl.recent_audit() })).into_response()
}

#[utoipa::path(get, path = "/api/v1/config", tag = "health", security(("bearer" = [])),
    responses(
        (status = 200, description = "The running configuration, passwords and tokens shown as `***` (admin only)", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn get_config(State(state): State<AdminState>) -> Response {
    Json(state.reloader.shown()).into_response()
}

#[utoipa::path(get, path = "/api/v1/haproxy/config", tag = "router", security(("bearer" = [])),
    responses(
        (status = 200, description = "A complete haproxy.cfg for the current topology: per cluster a write backend (only the leader enabled) and a read backend (the replicas), and the runtime API socket switchyard updates", content_type = "text/plain"),
        (status = 404, description = "No `[integrations.haproxy]` section in the configuration", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn haproxy_config(
    State(state): State<AdminState>,
    who: Option<Extension<Principal>>,
) -> Response {
    match &state.integrations.config.haproxy {
        Some(h) => {
            // A user scoped to some clusters gets the configuration of those only.
            let mut t = state.topology.load().as_ref().clone();
            t.clusters
                .retain(|name, _| who.as_ref().is_none_or(|Extension(p)| p.sees(name)));
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                crate::integrations::haproxy::generate(h, &t),
            )
                .into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no [integrations.haproxy] section in the configuration",
        ),
    }
}

/// Ready when every cluster has a leader that the monitor sees up.
pub fn is_ready(topology: &TopologyHandle) -> bool {
    let t = topology.load();
    !t.clusters.is_empty()
        && t.clusters.values().all(|c| {
            c.leader
                .as_deref()
                .and_then(|l| c.node(l))
                .is_some_and(|n| n.state == NodeState::Up)
        })
}

#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses(
        (status = 200, description = "Every cluster has a leader that is up", body = serde_json::Value),
        (status = 503, description = "Not ready yet", body = serde_json::Value),
    ))]
async fn health(State(state): State<AdminState>) -> Response {
    if is_ready(&state.topology) {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "detail": "not every cluster has a leader that is up yet" })),
        )
            .into_response()
    }
}

#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", security(("bearer" = [])),
    responses(
        (status = 200, description = "Topology version and every cluster: leader, epoch, phase, nodes", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn clusters(State(state): State<AdminState>, who: Option<Extension<Principal>>) -> Response {
    let t = state.topology.load();
    let sees = |name: &str| who.as_ref().is_none_or(|Extension(p)| p.sees(name));
    Json(json!({
        "version": t.version,
        "clusters": t
            .clusters
            .values()
            .filter(|c| sees(&c.name))
            .map(|c| cluster_body(&state, c))
            .collect::<Vec<_>>(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/api/v1/members", tag = "clusters", security(("bearer" = [])),
    responses(
        (status = 200, description = "The processes sharing this deployment's etcd: `mode` (`single` or `etcd`), `this` (name, role, whether it leads), `leader` (the leading orchestrator), `orchestrators` (candidates alive), `routers` (alive, with the epochs they route with and the holds they acknowledged; each router and orchestrator with `last_contact_s`, the seconds since etcd last heard from it), and `etcd` (`ok` or why it is unreachable)", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    ))]
async fn members(State(state): State<AdminState>) -> Response {
    match &state.members {
        Some(m) => Json(m.describe().await).into_response(),
        None => Json(json!({
            "mode": "single",
            "this": { "role": "all", "leading": true },
        }))
        .into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/router", tag = "router", security(("bearer" = [])),
    responses(
        (status = 200, description = "Router counters: connections, statements, held statements, retries, classifier, pools, and per cluster statements and errors with their rates over the last 10 s", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn router_stats(State(state): State<AdminState>) -> Response {
    Json(router_counters(&state.router)).into_response()
}

/// The router's counters as `GET /api/v1/router` shows them (also the admin SQL port's
/// `SHOW STATUS`).
pub fn router_counters(router: &RouterContext) -> serde_json::Value {
    let m = &router.metrics;
    let c = router.classifier.stats();
    json!({
        "connections_total": m.connections_total.load(Ordering::Relaxed),
        "connections_active": m.connections_active.load(Ordering::Relaxed),
        "connections_refused": m.connections_refused.load(Ordering::Relaxed),
        "auth_failures": m.auth_failures.load(Ordering::Relaxed),
        "auth_throttled": m.auth_throttled.load(Ordering::Relaxed),
        "tls_connections": m.tls_connections.load(Ordering::Relaxed),
        "compressed_connections": m.compressed_connections.load(Ordering::Relaxed),
        "insecure_refused": m.insecure_refused.load(Ordering::Relaxed),
        "statements": m.statements.load(Ordering::Relaxed),
        "statements_to_replicas": m.statements_to_replicas.load(Ordering::Relaxed),
        "unparsed_statements": m.unparsed.load(Ordering::Relaxed),
        "sharded_by_key": m.sharded_by_key.load(Ordering::Relaxed),
        "errors": m.errors.load(Ordering::Relaxed),
        "backend_retries": m.backend_retries.load(Ordering::Relaxed),
        "held_statements": m.held_statements.load(Ordering::Relaxed),
        "hold_timeouts": m.hold_timeouts.load(Ordering::Relaxed),
        "replanned": m.replanned.load(Ordering::Relaxed),
        "leader_change_retries": m.leader_change_retries.load(Ordering::Relaxed),
        "deposed_leader_cuts": m.deposed_cuts.load(Ordering::Relaxed),
        "held_now": router.held.load(Ordering::Relaxed),
        "session_panics": m.session_panics.load(Ordering::Relaxed),
        "sessions": router.sessions.len(),
        "classifier": { "hits": c.hits, "misses": c.misses, "unparsed": c.unparsed },
        "pools": router.pools.stats(),
        // Per cluster: totals, and rates over the last 10 s.
        "clusters": router.metrics.rates.rates(std::time::Duration::from_secs(10)),
    })
}

#[utoipa::path(get, path = "/api/v1/sessions", tag = "router", security(("bearer" = [])),
    responses(
        (status = 200, description = "The router's live client sessions: `{sessions: [{id, user, peer, db, command, seconds, in_transaction, backend, connected_at_ms}]}`", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role or cluster scope does not allow it", body = ErrorBody),
    ))]
async fn sessions(State(state): State<AdminState>) -> Response {
    Json(json!({ "sessions": state.router.sessions.list() })).into_response()
}
