//! The Sluice gateway: configuration, the HTTP layer and serving.
//!
//! It owns everything that speaks HTTP: routes, request parsing and validation,
//! problem+json errors, long-polling, and the OpenAPI wiring. Storage stays behind
//! the `sluice-log` crate's operations; this crate never touches redb directly.

pub mod api;
pub mod cloudevents;
pub mod config;
pub mod error;
pub mod server;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use sluice_log::{Log, LogOptions};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, Waiters};

/// The OpenAPI document's static part; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Event streaming gateway: a durable partitioned log over HTTP."),
    tags(
        (name = "topics", description = "Topic administration"),
        (name = "produce", description = "Writing records"),
        (name = "fetch", description = "Reading records by partition and offset"),
    ),
    components(schemas(sluice_openapi::Problem, sluice_openapi::FetchedRecord))
)]
pub struct ApiDoc;

/// Opens the log in the configured data directory, wired to wake long polls.
pub fn open_log(config: &Config, waiters: Arc<Waiters>) -> sluice_log::Result<Log> {
    let options = LogOptions {
        two_phase_commit: config.two_phase_commit,
        dedupe_window: std::time::Duration::from_secs(config.dedupe_window_secs),
        cache_bytes: config.cache_mb * 1024 * 1024,
        on_append: Some(Arc::new(move |topic, partition, end| {
            waiters.notify(topic, partition, end)
        })),
        ..LogOptions::default()
    };
    Log::open(&config.data_dir, options)
}

/// The router and the OpenAPI document it serves, generated from the same handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let body_limit = state.limits.max_body_bytes;
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::topics::create_topic, api::topics::list_topics))
        .routes(routes!(api::topics::get_topic, api::topics::delete_topic))
        .routes(routes!(api::produce::produce))
        .routes(routes!(api::fetch::fetch))
        .with_state(state)
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let json = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let json = json.clone();
                async move {
                    (
                        [("content-type", "application/json")],
                        json.as_ref().clone(),
                    )
                }
            }),
        )
        .route("/livez", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the route exists but not for this method",
            )
            .into_response()
        })
        .layer(DefaultBodyLimit::max(body_limit));
    (router, doc)
}

/// Builds the application state and router over an open log.
pub fn app(config: &Config, log: Log, waiters: Arc<Waiters>) -> Router {
    let state = AppState {
        log,
        limits: Arc::new(config.limits()),
        waiters,
    };
    router(state).0
}
