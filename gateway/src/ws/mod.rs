//! `GET /v1/ws`: the WebSocket protocol. JSON text frames; several subscriptions per
//! socket (a topic from a position, a consumer group, later a table), commits and
//! produce.
//!
//! Back-pressure by design: a subscription is a reader of the log. Each one runs as
//! a task that reads a chunk, hands the frame to the socket's writer through a small
//! bounded channel, and reads on only when the frame was taken. A slow or stalled
//! client therefore stalls its own readers, which fall behind in the log instead of
//! piling frames up in memory; what the server holds per connection is bounded by
//! the channel's capacity times the chunk size. The writer sends every queued frame
//! before one flush.

mod connection;
mod frames;
mod readers;

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

use connection::Connection;

/// Frames a connection may have queued for its writer.
const QUEUE: usize = 4;

/// WebSocket settings.
#[derive(Debug, Clone)]
pub(crate) struct WsConfig {
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Browser origins allowed to open a socket; empty allows any.
    pub allowed_origins: Vec<String>,
}

/// Close codes.
mod close {
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const POLICY: u16 = 1008;
    pub(super) const TOO_BIG: u16 = 1009;
}

/// Open a WebSocket: subscribe to topics, consume as a group member, produce.
///
/// Client frames: `{"op":"subscribe","id","topic","from"?,"partitions"?}`,
/// `{"op":"subscribe","id","topic","group","consumer"?}`,
/// `{"op":"commit","id","offsets":{"0":11}}`, `{"op":"unsubscribe","id"}`,
/// `{"op":"produce","ref","topic","records":[...]}`. Server frames: `subscribed`,
/// `records`, `assigned`, `committed`, `produced`, `error`. Browsers pass the token
/// as `?access_token=`.
#[utoipa::path(get, path = "/v1/ws", tag = "streaming",
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 401, description = "`unauthorized`.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the Origin is not allowed.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 426, description = "`upgrade_required`: not a WebSocket request.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|_| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        )
    })?;
    let cfg = state.ws.clone();
    if let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok())
        && !cfg.allowed_origins.is_empty()
        && !cfg.allowed_origins.iter().any(|a| a == "*" || a == origin)
        && !same_origin(origin, &headers)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("origin '{origin}' may not open a WebSocket here"),
        ));
    }
    Ok(ws
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024 + cfg.max_message_bytes)
        .on_upgrade(move |socket| Connection::run(socket, state, principal)))
}

/// Whether `origin` is this server as the browser reached it (the dashboard), which
/// is always allowed.
fn same_origin(origin: &str, headers: &axum::http::HeaderMap) -> bool {
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some() && authority == host
}
