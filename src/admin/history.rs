//! The shard map's history and differences (`/api/v1/shard-map/versions`, `.../diff`), the
//! topology version for cheap polling, and the configuration's reload and validation.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use shard_map::ShardMap;
use utoipa::ToSchema;

use super::{error, AdminState, ErrorBody};
use crate::reload::{ReloadError, ReloadReport};

/// The versions of the shard map that can be read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardMapVersions {
    /// The version in force.
    pub current: u64,
    /// Versions kept in the store's history (etcd's, or `shard_map_dir`), ascending; just
    /// the current one without either.
    pub versions: Vec<u64>,
}

/// Differences between two shard maps.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardMapDiff {
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// One line per change; empty when both place everything the same way.
    pub changes: Vec<String>,
}

/// Version `v` of the shard map: the one in force, else from the store's history (etcd's,
/// or `shard_map_dir`).
async fn shard_map_at(state: &AdminState, v: u64) -> Result<ShardMap, (StatusCode, String)> {
    if v == state.shard_maps.current() {
        return Ok(state.router.shard_map.load().as_ref().clone());
    }
    let kept = match (&state.shard_maps.etcd, &state.shard_maps.store) {
        (Some(etcd), _) => etcd.shard_map_version(v).await.map_err(|e| e.to_string()),
        (None, Some(store)) => store.load_version(v).map_err(|e| e.to_string()),
        (None, None) => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("version {v} is not kept: no shard_map_dir is configured"),
            ))
        }
    };
    match kept {
        Ok(Some(m)) => Ok(m.map),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!("no shard map version {v}; see /api/v1/shard-map/versions"),
        )),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not read version {v}: {e}"),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/shard-map/versions", tag = "router", security(("bearer" = [])),
    responses(
        (status = 200, description = "The version in force and those kept", body = ShardMapVersions),
        (status = 500, description = "The store could not be read", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
    ))]
pub(super) async fn shard_map_versions(State(state): State<AdminState>) -> Response {
    let current = state.shard_maps.current();
    let listed = match (&state.shard_maps.etcd, &state.shard_maps.store) {
        (Some(etcd), _) => etcd.shard_map_versions().await.map_err(|e| e.to_string()),
        (None, Some(store)) => store.versions().map_err(|e| e.to_string()),
        (None, None) => Ok(vec![current]),
    };
    let versions = match listed {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("could not list the versions: {e}"),
            )
        }
    };
    Json(ShardMapVersions { current, versions }).into_response()
}

#[utoipa::path(get, path = "/api/v1/shard-map/versions/{version}", tag = "router", security(("bearer" = [])),
    params(("version" = u64, Path, description = "A version from /api/v1/shard-map/versions")),
    responses(
        (status = 200, description = "That version of the shard map, with `version`", body = serde_json::Value),
        (status = 404, description = "Not kept", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
    ))]
pub(super) async fn shard_map_version(
    State(state): State<AdminState>,
    Path(version): Path<u64>,
) -> Response {
    match shard_map_at(&state, version).await {
        Ok(map) => Json(super::shard_map_body(&map, version)).into_response(),
        Err((status, why)) => error(status, &why),
    }
}

/// `from` and `to` for a diff of two kept versions.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub(super) struct DiffRange {
    /// The older version; the one before `to` when absent.
    from: Option<u64>,
    /// The newer version; the one in force when absent.
    to: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/shard-map/diff", tag = "router", security(("bearer" = [])),
    params(DiffRange),
    responses(
        (status = 200, description = "What changed from `from` to `to`", body = ShardMapDiff),
        (status = 400, description = "A range that does not make sense", body = ErrorBody),
        (status = 404, description = "A version that is not kept", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
    ))]
pub(super) async fn shard_map_diff_versions(
    State(state): State<AdminState>,
    Query(range): Query<DiffRange>,
) -> Response {
    let to = range.to.unwrap_or_else(|| state.shard_maps.current());
    let Some(from) = range.from.or_else(|| to.checked_sub(1).filter(|v| *v > 0)) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("version {to} is the first; give `from`"),
        );
    };
    let (a, b) = match (
        shard_map_at(&state, from).await,
        shard_map_at(&state, to).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err((status, why)), _) | (_, Err((status, why))) => return error(status, &why),
    };
    Json(ShardMapDiff {
        from: Some(from),
        to: Some(to),
        changes: shard_map::diff(&a, &b),
    })
    .into_response()
}

#[utoipa::path(post, path = "/api/v1/shard-map/diff", tag = "router", security(("bearer" = [])),
    request_body(content = serde_json::Value, description = "A proposed shard map", content_type = "application/json"),
    responses(
        (status = 200, description = "What applying it would change (nothing is applied)", body = ShardMapDiff),
        (status = 400, description = "Not a valid shard map: every problem listed", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
    ))]
pub(super) async fn shard_map_diff_proposed(
    State(state): State<AdminState>,
    body: String,
) -> Response {
    let map = match state.shard_maps.parse(&body) {
        Ok(m) => m,
        Err(refused) => return (StatusCode::BAD_REQUEST, Json(refused)).into_response(),
    };
    Json(ShardMapDiff {
        from: Some(state.shard_maps.current()),
        to: None,
        changes: shard_map::diff(&state.router.shard_map.load(), &map),
    })
    .into_response()
}

/// The topology's version alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopologyVersion {
    /// Bumped by every change of any cluster's leader, node state or phase.
    pub version: u64,
    /// Each cluster's leadership epoch.
    pub epochs: HashMap<String, u64>,
}

#[utoipa::path(get, path = "/api/v1/topology/version", tag = "clusters", security(("bearer" = [])),
    responses(
        (status = 200, description = "The snapshot version and each cluster's epoch, for cheap polling", body = TopologyVersion),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The role does not allow it", body = ErrorBody),
    ))]
pub(super) async fn topology_version(
    State(state): State<AdminState>,
    who: Option<axum::Extension<crate::acl::Principal>>,
) -> Response {
    let t = state.topology.load();
    let sees = |name: &str| who.as_ref().is_none_or(|axum::Extension(p)| p.sees(name));
    Json(TopologyVersion {
        version: t.version,
        epochs: t
            .clusters
            .iter()
            .filter(|(n, _)| sees(n))
            .map(|(n, c)| (n.clone(), c.epoch))
            .collect(),
    })
    .into_response()
}

/// The outcome of validating a configuration.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigCheck {
    pub valid: bool,
    /// Every problem, not just the first.
    pub problems: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/config/validate", tag = "health", security(("bearer" = [])),
    request_body(content = String, description = "A configuration file (TOML); relative paths are taken next to the running one", content_type = "text/plain"),
    responses(
        (status = 200, description = "Whether it is valid, with every problem (nothing is applied)", body = ConfigCheck),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(super) async fn validate_config(State(state): State<AdminState>, body: String) -> Response {
    let problems = state.reloader.check(&body);
    Json(ConfigCheck {
        valid: problems.is_empty(),
        problems,
    })
    .into_response()
}

#[utoipa::path(post, path = "/api/v1/config/reload", tag = "health", security(("bearer" = [])),
    responses(
        (status = 200, description = "Reloaded: what is now in force and what needs a restart", body = ReloadReport),
        (status = 409, description = "Not started from a file", body = ErrorBody),
        (status = 422, description = "The file is not valid: nothing changed, every problem listed", body = ConfigCheck),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(super) async fn reload_config(State(state): State<AdminState>) -> Response {
    let reloader = state.reloader.clone();
    // Reading and hashing the file is blocking work.
    let outcome = tokio::task::spawn_blocking(move || reloader.reload()).await;
    match outcome {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(ReloadError::NoFile)) => {
            error(StatusCode::CONFLICT, &ReloadError::NoFile.to_string())
        }
        Ok(Err(ReloadError::Config(crate::config::ConfigError::Invalid(problems)))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("configuration not reloaded: {}", problems.join("; ")),
                "valid": false,
                "problems": problems,
            })),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!("configuration not reloaded: {e}"),
                "valid": false,
                "problems": [e.to_string()],
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the reload failed: {e}"),
        ),
    }
}
