//! The Sluice gateway: configuration, the HTTP layer, the dashboard and serving, and
//! the `sluice` command's other commands (token, backup, restore).
//!
//! It owns everything that speaks HTTP: routes, request parsing and validation,
//! problem+json errors, long-polling, the OpenAPI wiring and the embedded dashboard.
//! Storage stays behind the seam, `sluice_log::Backend` (only `engine.rs` names an
//! engine; the gateway must not depend on redb or name another storage type); the consumer-group
//! coordinator is `sluice_log::groups`; sinks' delivery logic is `sluice_sinks`,
//! the HTTP client that carries it lives here (`sinks/`).
//!
//! Its face is [`run`], the configuration types, [`cli`] and the generated API
//! documents; everything else is `pub(crate)`.

#![warn(unreachable_pub)]

mod api;
mod auth;
pub mod cli;
mod cloudevents;
mod config;
mod engine;
mod error;
mod limits;
mod problems;
mod records;
mod server;
mod session;
mod sinks;
mod sources;
mod state;
mod stats;
mod stream;
mod telemetry;
mod views;
mod web;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use sluice_log::Backend;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use crate::auth::Permissions;
pub use crate::config::{Cli, Command, Config, LogFormat, TokenArgs};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::state::{AppState, Waiters};
pub use crate::telemetry::install as install_metrics;

/// The OpenAPI document's static part; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Event streaming gateway: a durable partitioned log, server-managed consumer groups, live WebSocket and SSE subscriptions and declarative tables, over HTTP."),
    tags(
        (name = "topics", description = "Topic administration"),
        (name = "produce", description = "Writing records"),
        (name = "fetch", description = "Reading records by partition and offset"),
        (name = "groups", description = "Server-managed consumer groups"),
        (name = "streaming", description = "WebSocket and Server-Sent Events"),
        (name = "tables", description = "Declarative tables maintained from topics"),
        (name = "sinks", description = "Topics pushed to HTTP endpoints"),
        (name = "processors", description = "Streams derived from topics, exactly once"),
        (name = "sources", description = "Signed webhooks from other systems into topics"),
        (name = "operations", description = "Health, readiness and metrics"),
    ),
    components(schemas(
        sluice_openapi::Problem,
        sluice_openapi::FetchedRecord,
        sluice_openapi::SubscribeFrame,
        sluice_openapi::UnsubscribeFrame,
        sluice_openapi::CommitFrame,
        sluice_openapi::ProduceFrame,
        sluice_openapi::ServerFrame,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Declares the bearer JWT scheme the operations name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT whose `sluice` claim lists the topics it may produce to and \
                         consume, the tables it may query and whether it may administer. \
                         Not needed when the server runs without auth.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every documented route, with its OpenAPI operation.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::topics::create_topic, api::topics::list_topics))
        .routes(routes!(api::topics::get_topic, api::topics::delete_topic))
        .routes(routes!(api::produce::produce))
        .routes(routes!(api::fetch::fetch))
        .routes(routes!(api::groups::poll))
        .routes(routes!(api::groups::commit))
        .routes(routes!(api::groups::list_groups))
        .routes(routes!(
            api::groups::describe_group,
            api::groups::delete_group
        ))
        .routes(routes!(api::groups::leave))
        .routes(routes!(api::groups::reset_offsets))
        .routes(routes!(api::events::events))
        .routes(routes!(ws::upgrade))
        .routes(routes!(api::tables::create_table, api::tables::list_tables))
        .routes(routes!(api::tables::get_table, api::tables::delete_table))
        .routes(routes!(api::tables::get_row))
        .routes(routes!(api::tables::scan_rows))
        .routes(routes!(
            api::processors::create_processor,
            api::processors::list_processors
        ))
        .routes(routes!(
            api::processors::get_processor,
            api::processors::delete_processor
        ))
        .routes(routes!(
            api::sources::create_source,
            api::sources::list_sources
        ))
        .routes(routes!(
            api::sources::get_source,
            api::sources::delete_source
        ))
        .routes(routes!(api::sources::rotate_source_secret))
        .routes(routes!(
            api::sources::receive_hook,
            api::sources::validate_hook
        ))
        .routes(routes!(api::sinks::create_sink, api::sinks::list_sinks))
        .routes(routes!(api::sinks::get_sink, api::sinks::delete_sink))
        .routes(routes!(api::sinks::pause_sink))
        .routes(routes!(api::sinks::resume_sink))
        .routes(routes!(api::sinks::reset_sink))
        .routes(routes!(api::sinks::rotate_secret))
        .routes(routes!(api::sinks::sink_attempts))
        .routes(routes!(api::sinks::test_sink))
        .routes(routes!(api::stats::stats))
        .routes(routes!(api::backup::backup))
        .routes(routes!(crate::telemetry::render))
        .routes(routes!(ready))
}

/// Whether the server can take writes: 503 while the store refuses them (after a
/// failed commit, or while the disk is below `--min-free-disk-mb`) or while the
/// server shuts down. Reports the disk's free space either way.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready, with the disk's free space.", body = sluice_openapi::Readiness),
        (status = 503, description = "`not_ready`, or `insufficient_storage` (the disk is below the floor; the detail gives its free space).", body = sluice_openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<sluice_openapi::Readiness>, ApiError> {
    let health = state.log.health();
    if health.poisoned || !health.available || *state.shutdown.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the store does not accept writes (shutting down, or a commit failed)",
        ));
    }
    let Some(disk) = health.disk else {
        return Ok(axum::Json(sluice_openapi::Readiness {
            status: "ready".to_string(),
            disk_free_bytes: 0,
            min_free_disk_bytes: 0,
        }));
    };
    if !disk.appends_allowed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "insufficient_storage",
            format!(
                "the disk has {} bytes free, below the floor of {} (--min-free-disk-mb): \
                 appends are refused; reads and deletes are served",
                disk.free_bytes, disk.min_free_bytes
            ),
        ));
    }
    Ok(axum::Json(sluice_openapi::Readiness {
        status: "ready".to_string(),
        disk_free_bytes: disk.free_bytes,
        min_free_disk_bytes: disk.min_free_bytes,
    }))
}

/// The process is up.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "Alive.", body = String)))]
async fn live() -> &'static str {
    "ok"
}

/// The OpenAPI document, generated from the handlers' annotations and wire types.
pub fn api_doc() -> serde_json::Value {
    finish_doc(api_routes().split_for_parts().1)
}

/// Sets the version and adds what utoipa's derives cannot say: of a CloudEvent,
/// which extension attribute names it may carry, that their values are scalars, and
/// that `data` and `data_base64` exclude each other; of a new topic, that
/// `tombstone_retention_ms` needs `"cleanup": "compact"`; of a Server-Sent Event,
/// that its data is a record as JSON; of an optional header, that it is a string
/// when present (never null).
fn finish_doc(mut doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut json = serde_json::to_value(&doc).unwrap_or_default();
    if let Some(ce) = json.pointer_mut("/components/schemas/CloudEvent") {
        ce["propertyNames"] = serde_json::json!({"pattern": "^([a-z0-9]{1,20}|data_base64)$"});
        ce["additionalProperties"] =
            serde_json::json!({"type": ["string", "number", "boolean", "null"]});
        ce["not"] = serde_json::json!({"required": ["data", "data_base64"]});
    }
    // A header is absent or a string, never null.
    if let Some(paths) = json.pointer_mut("/paths").and_then(|p| p.as_object_mut()) {
        let operations = paths.values_mut().filter_map(|p| p.as_object_mut());
        for op in operations.flat_map(|p| p.values_mut()) {
            let params = op.get_mut("parameters").and_then(|p| p.as_array_mut());
            for param in params.into_iter().flatten() {
                if param["in"] == "header"
                    && param["schema"]["type"] == serde_json::json!(["string", "null"])
                {
                    param["schema"]["type"] = serde_json::json!("string");
                }
            }
        }
    }
    // An event's data is a record as JSON text.
    if let Some(data) = json.pointer_mut("/components/schemas/RecordEvent/properties/data") {
        data["contentMediaType"] = serde_json::json!("application/json");
        data["contentSchema"] = serde_json::json!({"$ref": "#/components/schemas/FetchedRecord"});
    }
    // Compaction settings need a compacted topic.
    if let Some(ct) = json.pointer_mut("/components/schemas/CreateTopic") {
        ct["if"] = serde_json::json!({"properties": {"cleanup": {"const": "compact"}}, "required": ["cleanup"]});
        ct["else"] =
            serde_json::json!({"properties": {"tombstone_retention_ms": {"type": "null"}}});
    }
    json
}

/// The AsyncAPI 3.0 document of the WebSocket and SSE streams, built from the same
/// schemas as the OpenAPI document.
pub fn asyncapi_doc() -> serde_json::Value {
    let openapi = api_doc();
    let schemas = openapi
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_default();
    let msg = |name: &str, schema: &str| serde_json::json!({"name": name, "payload": {"$ref": format!("#/components/schemas/{schema}")}});
    serde_json::json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Sluice streams",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "WebSocket frames on /v1/ws and Server-Sent Events on /v1/topics/{topic}/events. Authenticate with a bearer token or ?access_token=."
        },
        "channels": {
            "websocket": {
                "address": "/v1/ws",
                "messages": {
                    "subscribe": msg("subscribe", "SubscribeFrame"),
                    "unsubscribe": msg("unsubscribe", "UnsubscribeFrame"),
                    "commit": msg("commit", "CommitFrame"),
                    "produce": msg("produce", "ProduceFrame"),
                    "server": msg("server", "ServerFrame"),
                }
            },
            "events": {
                "address": "/v1/topics/{topic}/events",
                "parameters": {"topic": {"description": "Topic name"}},
                "messages": {"record": msg("record", "FetchedRecord")}
            }
        },
        "operations": {
            "sendFrames": {
                "action": "send",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [
                    {"$ref": "#/channels/websocket/messages/subscribe"},
                    {"$ref": "#/channels/websocket/messages/unsubscribe"},
                    {"$ref": "#/channels/websocket/messages/commit"},
                    {"$ref": "#/channels/websocket/messages/produce"}
                ]
            },
            "receiveFrames": {
                "action": "receive",
                "channel": {"$ref": "#/channels/websocket"},
                "messages": [{"$ref": "#/channels/websocket/messages/server"}]
            },
            "receiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
                "messages": [{"$ref": "#/channels/events/messages/record"}]
            }
        },
        "components": {"schemas": schemas}
    })
}

/// The router: the API, `/openapi.json`, the `/docs` page (assets embedded, so it
/// works offline), health, and problem+json answers for unknown routes and methods
/// and for requests that take longer than `request_timeout`.
pub fn router(state: AppState, request_timeout: std::time::Duration) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let (router, doc) = api_routes().with_state(state).split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", finish_doc(doc)))
        .route("/livez", axum::routing::get(live))
        .route("/problems", axum::routing::get(problems::page))
        .route("/", axum::routing::get(web::index))
        .route("/ui/{file}", axum::routing::get(web::asset))
        .route("/sdk/{file}", axum::routing::get(web::sdk))
        .route(
            "/asyncapi.json",
            axum::routing::get(|| async { axum::Json(asyncapi_doc()) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the route exists but not for this method",
            )
            .into_response()
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            crate::telemetry::track,
        ))
}

/// Builds the application state over an open log: loads the token keys and sets
/// up the rate limits.
pub fn build_state(
    config: &Config,
    log: Arc<dyn Backend>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<AppState> {
    use crate::auth::{Auth, KeyConfig};
    let key = if let Some(s) = &config.jwt_secret {
        Some(KeyConfig::Secret(s.as_bytes()))
    } else if let Some(p) = &config.jwt_public_key {
        Some(KeyConfig::PublicKeyPem(p))
    } else {
        config.jwks_file.as_deref().map(KeyConfig::Jwks)
    };
    let auth = key
        .map(|k| {
            Auth::new(
                k,
                config.jwt_issuer.clone(),
                config.jwt_audience.clone(),
                config.jwt_leeway_secs,
            )
        })
        .transpose()?
        .map(Arc::new);
    let table_waiters = Arc::new(crate::state::TableWaiters::default());
    let hook_waiters = table_waiters.clone();
    let tables = Arc::new(sluice_tables::Engine::open(
        log.clone(),
        Some(Arc::new(move |table: &str, keys: &[String]| {
            hook_waiters.notify(table, keys)
        })),
    )?);
    let processors = Arc::new(sluice_tables::Processors::open(
        log.clone(),
        tables.clone(),
    )?);
    let group_changes = Arc::new(crate::state::Signals::default());
    let groups = Arc::new(sluice_log::groups::Coordinator::new(
        Box::new({
            let log = log.clone();
            move || log.reserve_fencing_tokens().map_err(|e| e.to_string())
        }),
        std::time::Duration::from_millis(config.group_session_timeout_ms),
        Some(Arc::new({
            let changes = group_changes.clone();
            move |group: &str| changes.notify(group)
        })),
    ));
    // Long polls and subscriptions wake on the commit that brings them data.
    let waiters = Arc::new(Waiters::default());
    log.subscribe(Arc::new({
        let waiters = waiters.clone();
        move |topic, partition, _end| waiters.notify(topic, partition)
    }));
    let cluster = log.cluster_groups();
    let sealer = crate::sinks::sealer(
        config.sink_secret_key.as_deref(),
        (config.backend == crate::config::BackendKind::Embedded)
            .then_some(config.data_dir.as_path()),
    )?;
    let sources = Arc::new(crate::sources::Sources::new(
        log.clone(),
        sealer.clone(),
        config.dedupe_window_secs,
    ));
    let sinks = crate::sinks::Sinks::new(
        log.clone(),
        (tables.clone(), table_waiters.clone()),
        crate::sinks::deliver::Client::new(crate::sinks::deliver::AllowList {
            nets: config.sink_allow_nets.clone(),
        })?,
        sealer,
    );
    Ok(AppState::new(crate::state::Shared {
        log,
        limits: Arc::new(Limits::new(
            config.max_body_bytes,
            config.max_inflight_body_mb * 1024 * 1024,
            config.rate_limits(),
            config.trusted_proxies.clone(),
        )),
        waiters,
        auth,
        groups,
        cluster,
        shares: Arc::default(),
        group_changes,
        group_config: crate::state::GroupConfig {
            bind_subject: config.bind_consumers_to_subject,
        },
        tail: Arc::new(crate::stream::tail::TailCache::new(
            config.tail_cache_mb * 1024 * 1024,
        )),
        ws: Arc::new(crate::ws::WsConfig {
            max_message_bytes: config.ws_max_message_bytes,
            max_subscriptions: config.ws_max_subscriptions,
            ping_interval: std::time::Duration::from_secs(config.ws_ping_interval_secs),
            idle_timeout: std::time::Duration::from_secs(config.ws_idle_timeout_secs),
            allowed_origins: config.ws_origins.clone(),
        }),
        shutdown,
        metrics,
        tables,
        sinks,
        processors,
        sources,
        table_waiters,
        stats: Arc::new(crate::stats::Stats::new(config.data_dir.clone())),
    }))
}

/// The router with the server-wide layers: request ids and CORS.
pub fn app(config: &Config, state: AppState) -> Router {
    let timeout = std::time::Duration::from_secs(config.request_timeout_secs);
    let mut app = router(state, timeout);
    // Outermost: every request gets an id, echoed in the answer and named by its
    // log lines (see `telemetry::track`).
    app = app
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            crate::telemetry::RequestIds::default(),
        ));
    if !config.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let origins = if config.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                config
                    .cors_origins
                    .iter()
                    .filter_map(|o| o.parse::<axum::http::HeaderValue>().ok()),
            )
        };
        // The preflight answers with the headers the browser asked for: `*` would
        // never cover `Authorization` (Fetch standard), and a fixed list could not
        // name every `ce-*` attribute of CloudEvents' binary mode.
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(Any)
                .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
                .expose_headers(Any)
                .max_age(std::time::Duration::from_secs(600)),
        );
    }
    app
}

/// Serves the gateway on `listener` until `shutdown` resolves: opens the data
/// directory, builds the state, starts the upkeep tasks (session expiry, rate-limit
/// and metrics upkeep), serves, and on shutdown turns `/readyz` to 503, waits
/// `--shutdown-delay-ms`, drains in-flight requests and closes the store. Prints
/// `listening on http://ADDR` once it accepts connections.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::time::Duration;
    if let Some(m) = metrics.clone() {
        every(Duration::from_secs(5), move || m.run_upkeep());
    }
    let log = crate::engine::open(&config).with_context(|| match config.backend {
        crate::config::BackendKind::Embedded => {
            format!("opening data directory {}", config.data_dir.display())
        }
        crate::config::BackendKind::Kafka => format!(
            "connecting to the Kafka cluster at {}",
            config.kafka_bootstrap.as_deref().unwrap_or_default()
        ),
    })?;
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let state = build_state(&config, log.clone(), stopped, metrics)?;
    let addr = listener.local_addr()?;
    tracing::info!(backend = ?config.backend, data_dir = %config.data_dir.display(), log_epoch = log.epoch(), "storage open");
    if state.auth.is_none() {
        tracing::warn!(
            "auth is off: anyone who can reach {addr} can read, write and delete everything"
        );
    }
    // Sessions end on time even when nobody polls the group.
    let groups = state.groups.clone();
    every(Duration::from_millis(250), move || groups.expire_all());
    let limits = state.limits.clone();
    every(Duration::from_secs(60), move || limits.forget_idle());
    state.sinks.supervise(state.shutdown.clone());
    println!("listening on http://{addr}");
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let tables = state.tables.clone();
    let processors = state.processors.clone();
    let sinks = state.sinks.clone();
    let router = app(&config, state);
    server::run(
        listener,
        router,
        server::ServeLimits {
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            drain: Duration::from_secs(10),
            max_connections: config.max_connections,
        },
        async move {
            shutdown.await;
            // /readyz answers 503 from here on; WebSockets and event streams close
            // themselves.
            let _ = stopping.send(true);
            if !delay.is_zero() {
                tracing::info!(?delay, "shutting down: not ready, still serving");
                tokio::time::sleep(delay).await;
            }
        },
    )
    .await?;
    // Sinks save what they delivered, so a restart sends none of it again.
    sinks.stop(Duration::from_secs(5)).await;
    // The table engine stops before the stores it writes go to other gateways,
    // so none of its batches is under way then (the next writer would fence it
    // in any case).
    let release = log.clone();
    let _ = tokio::task::spawn_blocking(move || {
        tables.stop();
        processors.stop();
        release.release_stores();
    })
    .await;
    tracing::info!("stopped serving; closing the log");
    drop(log);
    Ok(())
}

/// Runs `f` every `period` in the background.
fn every(period: std::time::Duration, f: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            f();
        }
    });
}
