//! Event sources over HTTP: make, list, describe, rotate the secret, delete
//! (admin); and the endpoint senders post to, `/v1/hooks/{name}`, authenticated
//! by the sender's signature instead of a token, with the CloudEvents webhook
//! validation handshake (`OPTIONS`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_log::{AppendUnit, RecordParts, ValueKind};
use sluice_openapi::{
    HookAccepted, Problem, SourceDefinition, SourceInfo, SourceList, SourceRotate,
};
use sluice_sources::Refusal;

use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, parse_json, reject_duplicate_keys};
use crate::records::{encode_parts, write};
use crate::sources::{Fault, Source};
use crate::state::AppState;

impl From<Fault> for ApiError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_source", m)
            }
            Fault::NotFound(n) => ApiError::new(
                StatusCode::NOT_FOUND,
                "source_not_found",
                format!("source '{n}' does not exist"),
            ),
            Fault::Exists(n) => ApiError::new(
                StatusCode::CONFLICT,
                "source_exists",
                format!("source '{n}' already exists"),
            ),
            Fault::NoTopic(t) => ApiError::topic_not_found(&t),
            Fault::Log(e) => e.into(),
        }
    }
}

/// Runs a blocking source operation off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Fault> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// Make a source (admin): requests to `/v1/hooks/<name>` signed the way its
/// senders sign become records of its topic, deduplicated by their delivery id.
#[utoipa::path(post, path = "/v1/sources", tag = "sources",
    request_body(content = SourceDefinition, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Made.", body = SourceInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`source_exists`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_source`: an unknown scheme, a bad key or dedupe path, a missing secret; the detail says which.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_source(
    State(state): State<AppState>,
    principal: Principal,
    Body(body, _in_flight): Body,
) -> Result<(StatusCode, Json<SourceInfo>), ApiError> {
    principal.require(Object::Admin)?;
    reject_duplicate_keys(&body)?;
    let value: serde_json::Value = parse_json(&body)?;
    let def: SourceDefinition = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let sources = state.sources.clone();
    let info = blocking(move || sources.create(def)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// List sources (admin).
#[utoipa::path(get, path = "/v1/sources", tag = "sources",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every source.", body = SourceList),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_sources(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SourceList>, ApiError> {
    principal.require(Object::Admin)?;
    let sources = state.sources.clone();
    let sources = blocking(move || sources.list()).await?;
    Ok(Json(SourceList { sources }))
}

/// Describe a source (admin): its definition without secrets, the secrets it
/// accepts, this gateway's counts.
#[utoipa::path(get, path = "/v1/sources/{source}", tag = "sources",
    params(("source" = String, Path, description = "Source name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The source.", body = SourceInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`source_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_source(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<SourceInfo>, ApiError> {
    principal.require(Object::Admin)?;
    let sources = state.sources.clone();
    Ok(Json(blocking(move || sources.describe(&name)).await?))
}

/// Give a source a new secret (admin); the previous ones are still accepted
/// for `keep_old_s` (default a day), so senders can be switched over.
#[utoipa::path(post, path = "/v1/sources/{source}/secret/rotate", tag = "sources",
    params(("source" = String, Path, description = "Source name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    request_body(content = SourceRotate, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rotated.", body = SourceInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`source_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_source`: an empty secret.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn rotate_source_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Body(body, _in_flight): Body,
) -> Result<Json<SourceInfo>, ApiError> {
    principal.require(Object::Admin)?;
    let SourceRotate { secret, keep_old_s } = serde_json::from_value(parse_json(&body)?)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let sources = state.sources.clone();
    let keep = keep_old_s.unwrap_or(crate::sources::KEEP_OLD_S);
    Ok(Json(
        blocking(move || sources.rotate(&name, secret, keep)).await?,
    ))
}

/// Delete a source (admin); its topic and records stay.
#[utoipa::path(delete, path = "/v1/sources/{source}", tag = "sources",
    params(("source" = String, Path, description = "Source name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`source_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_source(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    let sources = state.sources.clone();
    blocking(move || sources.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The source a hook names (one made through another gateway a moment ago is
/// looked for in the engine).
async fn find(state: &AppState, name: &str) -> Result<Arc<Source>, ApiError> {
    if let Some(s) = state.sources.cached(name) {
        return Ok(s);
    }
    let sources = state.sources.clone();
    let lookup = name.to_string();
    let found = tokio::task::spawn_blocking(move || sources.get(&lookup))
        .await
        .map_err(|_| ApiError::internal())?;
    Ok(found.ok_or_else(|| Fault::NotFound(name.to_string()))?)
}

fn refused(r: &Refusal) -> ApiError {
    let code = match r {
        Refusal::Missing(_) => "signature_missing",
        Refusal::Stale(_) => "signature_stale",
        Refusal::BadSignature => "signature_invalid",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, r.to_string())
}

/// A sender's request (no token: the source's signature scheme authenticates
/// it). Answered 200 once its record is durable; a redelivery (the same
/// delivery id within the dedupe window) is answered with the first offsets
/// and writes nothing. The body is the record's value: JSON as JSON, anything
/// else as bytes. A Slack `url_verification` is answered with its challenge.
#[utoipa::path(post, path = "/v1/hooks/{source}", tag = "sources",
    params(("source" = String, Path, description = "Source name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    request_body(content = Vec<u8>, description = "Whatever the sender sends.", content_type = "*/*"),
    responses(
        (status = 200, description = "Appended (or a redelivery of what was).", body = HookAccepted),
        (status = 400, description = "`invalid_record`: a key or header too large for a record.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`signature_missing`, `signature_stale` (a signed timestamp outside the tolerance), `signature_invalid`; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`source_not_found`, `topic_not_found` (the source's topic was deleted).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`insufficient_storage`; nothing was written.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn receive_hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body, _in_flight): Body,
) -> Result<Response, ApiError> {
    let source = find(&state, &name).await?;
    // Sources are rate limited per source, like a token's subject.
    let principal = Principal {
        sub: Some(format!("source:{name}")),
        permissions: None,
        rate_key: format!("source:{name}"),
    };
    state.limits.check_requests(&principal.rate_key)?;
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now_ms = sluice_log::now_ms();
    if let Err(r) = sluice_sources::verify(
        source.scheme,
        &source.secrets(now_ms),
        source.header.as_deref(),
        source.tolerance_s,
        &header,
        &body,
        now_ms / 1000,
    ) {
        state.sources.count(&name, false);
        return Err(refused(&r));
    }
    let d = sluice_sources::delivery(
        &header,
        &body,
        source.key.as_ref(),
        source.dedupe.as_ref(),
        &source.headers,
    );
    if source.scheme == sluice_sources::Scheme::Slack
        && let Some(j) = &d.json
        && j["type"] == "url_verification"
    {
        state.sources.count(&name, true);
        return Ok(Json(serde_json::json!({"challenge": j["challenge"]})).into_response());
    }
    let topic = crate::api::topic(&state, &source.topic)?;
    if topic.id() != source.topic_id {
        return Err(ApiError::topic_not_found(&source.topic));
    }
    let (kind, value): (ValueKind, &[u8]) = match &d.json {
        Some(_) => (ValueKind::Json, &body),
        None => (ValueKind::Binary, &body),
    };
    let record = encode_parts(
        &topic,
        None,
        RecordParts {
            timestamp: now_ms,
            key: d.key.as_deref(),
            headers: &d.headers,
            kind,
            value,
        },
    )
    .map_err(|e| e.at("the request"))?;
    let dedupe_key = d.id.map(|id| {
        let mut k = format!("s:{name}\0").into_bytes();
        k.extend_from_slice(id.as_bytes());
        k
    });
    let offsets = write(
        &state,
        &principal,
        &topic,
        vec![AppendUnit {
            dedupe_key,
            records: vec![record],
        }],
        None,
    )
    .await?;
    state.sources.count(&name, true);
    Ok(Json(HookAccepted { offsets }).into_response())
}

/// The CloudEvents webhook validation handshake: a sender asks whether it may
/// deliver to this source (`WebHook-Request-Origin`); the answer allows its
/// origin, at any rate.
#[utoipa::path(options, path = "/v1/hooks/{source}", tag = "sources",
    params(
        ("source" = String, Path, description = "Source name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("WebHook-Request-Origin" = String, Header, description = "The sender's origin."),
    ),
    responses(
        (status = 200, description = "Allowed: `WebHook-Allowed-Origin` and `WebHook-Allowed-Rate` say so."),
        (status = 400, description = "`invalid_request`: no `WebHook-Request-Origin`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`source_not_found`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn validate_hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    find(&state, &name).await?;
    let origin = headers
        .get("webhook-request-origin")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "the validation handshake names its origin in WebHook-Request-Origin",
            )
        })?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert("webhook-allowed-origin", origin);
    r.headers_mut()
        .insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    Ok(r)
}
