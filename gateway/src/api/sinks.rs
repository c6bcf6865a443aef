//! Sinks over HTTP (admin): make, list, describe, pause, resume, replay,
//! rotate the signing secret, recent attempts, a test request, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sluice_openapi::{
    Problem, SinkAttempts, SinkDefinition, SinkInfo, SinkList, SinkReset, SinkTestResult,
};

use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, parse_json, reject_duplicate_keys};
use crate::sinks::Fault;
use crate::state::AppState;

impl From<Fault> for ApiError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_sink", m),
            Fault::Forbidden(m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "sink_destination_not_allowed",
                m,
            ),
            Fault::NotFound(n) => ApiError::new(
                StatusCode::NOT_FOUND,
                "sink_not_found",
                format!("sink '{n}' does not exist"),
            ),
            Fault::Exists(n) => ApiError::new(
                StatusCode::CONFLICT,
                "sink_exists",
                format!("sink '{n}' already exists"),
            ),
            Fault::NoTopic(t) => ApiError::topic_not_found(&t),
            Fault::NoTable(t) => ApiError::new(
                StatusCode::NOT_FOUND,
                "table_not_found",
                format!("table '{t}' does not exist"),
            ),
            Fault::Log(e) => e.into(),
        }
    }
}

/// Make a sink (admin): push a topic's records to an HTTP endpoint, at least
/// once, in order, signed. The answer holds the signing secret, shown only
/// here.
#[utoipa::path(post, path = "/v1/sinks", tag = "sinks",
    request_body(content = SinkDefinition, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Made; `secret` is the signing secret.", body = SinkInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`, `table_not_found`: the source.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`sink_exists`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_sink`, `sink_destination_not_allowed`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_sink(
    State(state): State<AppState>,
    principal: Principal,
    Body(body, _in_flight): Body,
) -> Result<(StatusCode, Json<SinkInfo>), ApiError> {
    principal.require(Object::Admin)?;
    reject_duplicate_keys(&body)?;
    let value: serde_json::Value = parse_json(&body)?;
    let def: SinkDefinition = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let info = state.sinks.create(def).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// List sinks (admin).
#[utoipa::path(get, path = "/v1/sinks", tag = "sinks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every sink.", body = SinkList),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_sinks(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SinkList>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(SinkList {
        sinks: state.sinks.list().await?,
    }))
}

const SINK: &str = "Sink name";

/// Describe a sink (admin): state, per-partition cursor and lag, counts, the
/// last error and the next attempt.
#[utoipa::path(get, path = "/v1/sinks/{sink}", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sink.", body = SinkInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkInfo>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(state.sinks.info(&name).await?))
}

/// Delete a sink (admin). Its dead-letter topic stays.
#[utoipa::path(delete, path = "/v1/sinks/{sink}", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    state.sinks.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a sink (admin): nothing more is sent until `resume`; requests in
/// flight finish.
#[utoipa::path(post, path = "/v1/sinks/{sink}/pause", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused.", body = SinkInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn pause_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkInfo>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(state.sinks.pause(&name).await?))
}

/// Resume a paused or disabled sink (admin), retrying at once.
#[utoipa::path(post, path = "/v1/sinks/{sink}/resume", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Running.", body = SinkInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn resume_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkInfo>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(state.sinks.resume(&name).await?))
}

/// Replay (admin): start the sink over from the earliest record, an offset or
/// a time. Records are delivered again with the ids they had.
#[utoipa::path(post, path = "/v1/sinks/{sink}/cursor/reset", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    request_body(content = SinkReset, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaying.", body = SinkInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reset_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Body(body, _in_flight): Body,
) -> Result<Json<SinkInfo>, ApiError> {
    principal.require(Object::Admin)?;
    let value: serde_json::Value = parse_json(&body)?;
    let reset: SinkReset = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    Ok(Json(state.sinks.reset(&name, reset.start).await?))
}

/// Rotate the signing secret (admin). The answer holds the new secret, shown
/// only here; the old one goes on co-signing for 24 hours.
#[utoipa::path(post, path = "/v1/sinks/{sink}/secret/rotate", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rotated; `secret` is the new secret.", body = SinkInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_sink`: the sink does not sign.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkInfo>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(state.sinks.rotate(&name).await?))
}

/// Recent delivery attempts made by this gateway (admin), newest first: status,
/// latency and the first bytes of each answer.
#[utoipa::path(get, path = "/v1/sinks/{sink}/attempts", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attempts.", body = SinkAttempts),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn sink_attempts(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkAttempts>, ApiError> {
    principal.require(Object::Admin)?;
    Ok(Json(SinkAttempts {
        attempts: state.sinks.attempts(&name).await?,
    }))
}

/// Send a signed test event (`{"type": "sluice.test", ...}`) to the sink's
/// endpoint now (admin), and answer what came of it.
#[utoipa::path(post, path = "/v1/sinks/{sink}/test", tag = "sinks",
    params(("sink" = String, Path, description = SINK)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sent; `ok` says whether the endpoint acknowledged it.", body = SinkTestResult),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`sink_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn test_sink(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SinkTestResult>, ApiError> {
    principal.require(Object::Admin)?;
    let (ok, attempt) = state.sinks.test(&name).await?;
    Ok(Json(SinkTestResult { ok, attempt }))
}
