//! Online moves (`/api/v1/moves`): reshard and MoveTables workflows, their progress, diff,
//! write cutover either way, complete and cancel. See [`crate::moves`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mover::plan::MoveRequest;
use serde::Deserialize;

use super::{error, AdminState, ErrorBody};
use crate::moves::MoveError;

/// A new move: its name and what to move.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateMove {
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// `{"kind": "reshard", "keyspace": "app", "from": ["80-"], "to": [{"name": "80-c0",
    /// "cluster": "c3"}, {"name": "c0-", "cluster": "c4"}]}` or `{"kind": "move_tables",
    /// "keyspace": "app", "tables": [{"name": "users", "kind": "sharded", "column": "id",
    /// "vindex": "hash"}]}`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub request: MoveRequest,
}

fn answer(r: Result<serde_json::Value, MoveError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(MoveError::Unknown(n)) => error(StatusCode::NOT_FOUND, &format!("no move named {n:?}")),
        Err(MoveError::Refused(m)) => error(StatusCode::UNPROCESSABLE_ENTITY, &m),
        Err(MoveError::Failed(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

#[utoipa::path(get, path = "/api/v1/moves", tag = "moves", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every move with its streams' progress", body = serde_json::Value),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    ))]
pub(super) async fn list_moves(State(state): State<AdminState>) -> Response {
    Json(state.moves.list()).into_response()
}

#[utoipa::path(post, path = "/api/v1/moves", tag = "moves", security(("bearer" = [])),
    request_body(content = CreateMove, description = "The move", content_type = "application/json"),
    responses(
        (status = 200, description = "Created and started: its status", body = serde_json::Value),
        (status = 400, description = "Not a move request", body = ErrorBody),
        (status = 422, description = "Refused with the reason (the plan, a precondition, an active move on the keyspace); nothing was left behind", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub(super) async fn create_move(State(state): State<AdminState>, body: String) -> Response {
    let req: CreateMove = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a move request: {e}")),
    };
    answer(state.moves.create(&req.name, req.request).await)
}

#[utoipa::path(get, path = "/api/v1/moves/{name}", tag = "moves", security(("bearer" = [])),
    params(("name" = String, Path, description = "Move name")),
    responses(
        (status = 200, description = "State, streams (copy progress, position, transactions behind), cutovers, events", body = serde_json::Value),
        (status = 404, description = "No such move", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    ))]
pub(super) async fn get_move(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Response {
    answer(state.moves.status(&name))
}

macro_rules! move_action {
    ($fn:ident, $path:literal, $what:literal, $call:ident) => {
        #[utoipa::path(post, path = $path, tag = "moves", security(("bearer" = [])),
            params(("name" = String, Path, description = "Move name")),
            responses(
                (status = 200, description = $what, body = serde_json::Value),
                (status = 404, description = "No such move", body = ErrorBody),
                (status = 422, description = "Refused in the move's state, with the reason; nothing was changed", body = ErrorBody),
                (status = 500, description = "Failed part-way; the message says what was undone", body = ErrorBody),
                (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
                (status = 403, description = "Not an admin", body = ErrorBody),
            ))]
        pub(super) async fn $fn(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
            answer(state.moves.$call(&name).await)
        }
    };
}

move_action!(
    diff_move,
    "/api/v1/moves/{name}/diff",
    "Every stream's source and target compared at one consistent position: `clean`, and per table the rows and the missing, extra and different keys",
    diff
);
move_action!(
    switch_writes,
    "/api/v1/moves/{name}/switch-writes",
    "Writes now go to the new places (after a clean diff): the cutover's pause, drain, catch-up and publish times",
    switch_writes
);
move_action!(
    reverse_move,
    "/api/v1/moves/{name}/reverse",
    "Writes go back to the old places; streams carry the new places' writes there until then",
    switch_back
);
move_action!(
    complete_move,
    "/api/v1/moves/{name}/complete",
    "The moved rows are deleted from the old places (in batches, waiting on replica lag) and the streams stopped",
    complete
);
move_action!(
    cancel_move,
    "/api/v1/moves/{name}/cancel",
    "Stopped before any switch: streams stopped, the target tables dropped",
    cancel
);
