//! The admin HTTP API (axum) under `/api/v1`: health, cluster topology, router counters, and
//! the orchestrator's operations (switchover, failover, node flags, failover limits, events).
//! Bearer-token auth on everything but health; errors are JSON `{"error": ...}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use orchestrator::{Orchestrator, OrchestratorError};
use router::config::Secret;
use router::RouterContext;
use serde::Deserialize;
use serde_json::json;
use shard_map::{NodeFlags, NodeState, ShardMap, ShardMapStore, TopologyHandle, VersionedShardMap};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub topology: TopologyHandle,
    pub router: Arc<RouterContext>,
    pub orchestrator: Arc<Orchestrator>,
    pub token: Secret,
    pub shard_maps: Arc<ShardMapState>,
}

/// The shard map's version and store, behind the API's GET/PUT.
pub struct ShardMapState {
    /// The applied version; changes are serialised by this lock.
    version: std::sync::Mutex<u64>,
    store: Option<Arc<dyn ShardMapStore>>,
    clusters: Vec<String>,
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
        }
    }
}

/// The API's routes.
pub fn routes(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/clusters/{name}", get(cluster))
        .route("/api/v1/clusters/{name}/switchover", post(switchover))
        .route("/api/v1/clusters/{name}/failover", post(failover))
        .route(
            "/api/v1/clusters/{name}/failover-limits/reset",
            post(reset_limits),
        )
        .route("/api/v1/clusters/{name}/events", get(events))
        .route("/api/v1/clusters/{name}/nodes/{addr}/flags", put(set_flags))
        .route("/api/v1/router", get(router_stats))
        .route("/api/v1/shard-map", get(get_shard_map).put(put_shard_map))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/api/v1/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
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

/// The HTTP answer for an orchestrator error.
fn orchestrator_error(e: OrchestratorError) -> Response {
    let status = match &e {
        OrchestratorError::UnknownCluster(_) | OrchestratorError::UnknownNode { .. } => {
            StatusCode::NOT_FOUND
        }
        OrchestratorError::Busy(_) => StatusCode::CONFLICT,
        OrchestratorError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        OrchestratorError::BadAddress(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

async fn cluster(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let t = state.topology.load();
    match t.cluster(&name) {
        Some(c) => Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("unknown cluster `{name}`")),
    }
}

/// Body of a switchover request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverRequest {
    /// The replica to promote (`host:port`); elected when absent.
    to: Option<String>,
}

async fn switchover(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Option<Json<SwitchoverRequest>>,
) -> Response {
    let to = body.and_then(|Json(b)| b.to);
    match state.orchestrator.switchover(&name, to.as_deref()).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => orchestrator_error(e),
    }
}

async fn failover(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.orchestrator.failover(&name).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => orchestrator_error(e),
    }
}

async fn reset_limits(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.orchestrator.reset_failover_limits(&name) {
        Ok(()) => Json(json!({ "reset": name })).into_response(),
        Err(e) => orchestrator_error(e),
    }
}

async fn events(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match state.orchestrator.events(&name) {
        Ok(events) => Json(json!({ "cluster": name, "events": events })).into_response(),
        Err(e) => orchestrator_error(e),
    }
}

async fn set_flags(
    State(state): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    Json(flags): Json<NodeFlags>,
) -> Response {
    match state.orchestrator.set_node_flags(&name, &addr, flags) {
        Ok(()) => Json(json!({ "cluster": name, "node": addr, "flags": flags })).into_response(),
        Err(e) => orchestrator_error(e),
    }
}

async fn get_shard_map(State(state): State<AdminState>) -> Response {
    let version = *state
        .shard_maps
        .version
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let map = state.router.shard_map.load();
    let mut body: serde_json::Value =
        serde_json::from_str(&map.to_json()).unwrap_or_else(|_| json!({}));
    body["version"] = json!(version);
    Json(body).into_response()
}

/// Validates a new shard map, persists it as the next version and applies it to every router
/// session at once. An invalid map is refused whole, listing every problem.
async fn put_shard_map(State(state): State<AdminState>, body: String) -> Response {
    let map = match ShardMap::from_json(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid shard map JSON: {e}"),
            )
        }
    };
    let names: Vec<&str> = state
        .shard_maps
        .clusters
        .iter()
        .map(String::as_str)
        .collect();
    let problems = map.validate(&names);
    if !problems.is_empty() {
        let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid shard map: {}", problems.join("; ")),
                "problems": problems,
            })),
        )
            .into_response();
    }
    let mut version = state
        .shard_maps
        .version
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let next = *version + 1;
    if let Some(store) = &state.shard_maps.store {
        let saved = store.save(&VersionedShardMap {
            version: next,
            map: map.clone(),
        });
        if let Err(e) = saved {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("could not persist the shard map: {e}"),
            );
        }
    }
    let changes = shard_map::diff(&state.router.shard_map.load(), &map);
    state.router.shard_map.store(Arc::new(map));
    *version = next;
    Json(json!({ "version": next, "changes": changes })).into_response()
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.expose().as_bytes()) => {
            next.run(req).await
        }
        Some(_) => {
            let mut r = error(StatusCode::UNAUTHORIZED, "invalid bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            r
        }
        None => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send `Authorization: Bearer <admin token>`",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            r
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn clusters(State(state): State<AdminState>) -> Response {
    let t = state.topology.load();
    Json(json!({
        "version": t.version,
        "clusters": t.clusters.values().collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn router_stats(State(state): State<AdminState>) -> Response {
    let m = &state.router.metrics;
    let c = state.router.classifier.stats();
    Json(json!({
        "connections_total": m.connections_total.load(Ordering::Relaxed),
        "connections_active": m.connections_active.load(Ordering::Relaxed),
        "connections_refused": m.connections_refused.load(Ordering::Relaxed),
        "auth_failures": m.auth_failures.load(Ordering::Relaxed),
        "auth_throttled": m.auth_throttled.load(Ordering::Relaxed),
        "statements": m.statements.load(Ordering::Relaxed),
        "statements_to_replicas": m.statements_to_replicas.load(Ordering::Relaxed),
        "unparsed_statements": m.unparsed.load(Ordering::Relaxed),
        "errors": m.errors.load(Ordering::Relaxed),
        "backend_retries": m.backend_retries.load(Ordering::Relaxed),
        "held_statements": m.held_statements.load(Ordering::Relaxed),
        "hold_timeouts": m.hold_timeouts.load(Ordering::Relaxed),
        "leader_change_retries": m.leader_change_retries.load(Ordering::Relaxed),
        "held_now": state.router.held.load(Ordering::Relaxed),
        "session_panics": m.session_panics.load(Ordering::Relaxed),
        "classifier": { "hits": c.hits, "misses": c.misses, "unparsed": c.unparsed },
        "pools": state.router.pools.stats(),
    }))
    .into_response()
}
