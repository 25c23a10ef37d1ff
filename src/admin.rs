//! The admin HTTP API (axum): health, cluster topology and router counters, under
//! `/api/v1`, with bearer-token auth on everything but health.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use router::config::Secret;
use router::RouterContext;
use serde_json::json;
use shard_map::{NodeState, TopologyHandle};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub topology: TopologyHandle,
    pub router: Arc<RouterContext>,
    pub token: Secret,
}

/// The API's routes.
pub fn routes(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/router", get(router_stats))
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
        "statements": m.statements.load(Ordering::Relaxed),
        "statements_to_replicas": m.statements_to_replicas.load(Ordering::Relaxed),
        "unparsed_statements": m.unparsed.load(Ordering::Relaxed),
        "errors": m.errors.load(Ordering::Relaxed),
        "backend_retries": m.backend_retries.load(Ordering::Relaxed),
        "session_panics": m.session_panics.load(Ordering::Relaxed),
        "classifier": { "hits": c.hits, "misses": c.misses, "unparsed": c.unparsed },
        "pools": state.router.pools.stats(),
    }))
    .into_response()
}
