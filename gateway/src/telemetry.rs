//! Prometheus metrics: the recorder, the HTTP middleware that counts requests, and
//! `GET /metrics`, which also samples the gauges that are cheaper to compute on
//! demand (group lag, partition offsets, storage size).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Installs the process-wide recorder. Call once, before the log opens.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let seconds = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0,
    ];
    let records = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
        50000.0,
    ];
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(
            Matcher::Full("sluice_commit_batch_records".into()),
            &records,
        )?
        .install_recorder()?)
}

/// Gives each request an `x-request-id` (unless the client sent one): a random
/// per-process prefix and a counter.
#[derive(Clone)]
pub(crate) struct RequestIds {
    prefix: u32,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(sluice_log::now_ms());
        RequestIds {
            prefix: h.finish() as u32,
            next: Default::default(),
        }
    }
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{:08x}-{n:x}", self.prefix);
        axum::http::HeaderValue::from_str(&id).ok().map(Into::into)
    }
}

/// What a request's log lines name: its id, method and path (never the query
/// string, which may carry an access token). Kept for the request's task by
/// [`track`]; the span is only built when a line is logged, so a request that logs
/// nothing costs no span.
struct RequestContext {
    id: Option<axum::http::HeaderValue>,
    method: axum::http::Method,
    uri: axum::http::Uri,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// The span for a log line of the current request (none outside one).
pub(crate) fn request_span() -> tracing::Span {
    REQUEST
        .try_with(|r| {
            let id = r.id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", id = %id, method = %r.method, path = %r.uri.path())
        })
        .unwrap_or_else(|_| tracing::Span::none())
}

/// Answers 408 past the request timeout; counts every request by route, method and
/// status, and times it; logs an answer with a server error; keeps the request's
/// [`RequestContext`] for its log lines.
pub(crate) async fn track(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let context = RequestContext {
        id: req.headers().get("x-request-id").cloned(),
        method: req.method().clone(),
        uri: req.uri().clone(),
    };
    let started = Instant::now();
    let res = REQUEST
        .scope(context, async move {
            let res = match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(res) => res,
                Err(_) => ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request took too long to arrive or to answer",
                )
                .into_response(),
            };
            // A full disk refuses every append; the log says so once, not per answer.
            if res.status().is_server_error()
                && res.status() != axum::http::StatusCode::INSUFFICIENT_STORAGE
            {
                request_span().in_scope(|| {
                    tracing::error!(
                        status = res.status().as_u16(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "answered with a server error"
                    )
                });
            }
            res
        })
        .await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    let (requests, duration) = route_metrics(route, method, res.status().as_u16());
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
    res
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Per route, method and status: the request counter and the duration histogram.
type RouteMetrics = (metrics::Counter, metrics::Histogram);

/// The handles of [`track`]'s metrics, made once per route, method and status (a
/// bounded set: routes are the router's templates) instead of looked up by their
/// labels on every request.
fn route_metrics(route: &str, method: &'static str, status: u16) -> RouteMetrics {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    type ByRoute = HashMap<String, HashMap<(&'static str, u16), RouteMetrics>>;
    static CACHE: LazyLock<RwLock<ByRoute>> = LazyLock::new(Default::default);
    let cached = CACHE
        .read()
        .expect("metrics cache lock")
        .get(route)
        .and_then(|m| m.get(&(method, status)))
        .cloned();
    cached.unwrap_or_else(|| {
        let made = (
            counter!("sluice_http_requests_total", "route" => route.to_string(), "method" => method, "status" => status.to_string()),
            histogram!("sluice_http_request_duration_seconds", "route" => route.to_string(), "method" => method),
        );
        CACHE
            .write()
            .expect("metrics cache lock")
            .entry(route.to_string())
            .or_default()
            .insert((method, status), made.clone());
        made
    })
}

/// Prometheus text exposition of every metric (admin when auth is on).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String),
        (status = 401, description = "`unauthorized`.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: metrics are not enabled in this process.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn render(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Object::Admin)?;
    let Some(handle) = state.metrics.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled in this process",
        ));
    };
    for k in state.sinks.list().await? {
        let name = k.name;
        gauge!("sluice_sink_lag_records", "sink" => name.clone()).set(k.lag_records as f64);
        counter!("sluice_sink_delivered_total", "sink" => name.clone()).absolute(k.delivered);
        counter!("sluice_sink_retried_total", "sink" => name.clone()).absolute(k.retried);
        counter!("sluice_sink_dead_lettered_total", "sink" => name.clone())
            .absolute(k.dead_lettered);
        let healthy = matches!(
            k.state,
            sluice_openapi::SinkState::Running | sluice_openapi::SinkState::Paused
        );
        gauge!("sluice_sink_healthy", "sink" => name).set(f64::from(u8::from(healthy)));
    }
    let s = state.clone();
    tokio::task::spawn_blocking(move || sample(&s))
        .await
        .map_err(|_| ApiError::internal())??;
    let text = handle.render();
    Ok(([("content-type", "text/plain; version=0.0.4")], text).into_response())
}

/// Sets the gauges that are read from the store at scrape time.
fn sample(state: &AppState) -> Result<(), ApiError> {
    for t in state.log.topics() {
        for p in t.partitions() {
            let labels = [
                ("topic", t.name().to_string()),
                ("partition", p.partition.to_string()),
            ];
            gauge!("sluice_partition_end_offset", &labels).set(p.end_offset as f64);
            gauge!("sluice_partition_start_offset", &labels).set(p.start_offset as f64);
            gauge!("sluice_partition_bytes", &labels).set(p.bytes as f64);
        }
    }
    for (group, topics) in state.log.committed_groups()? {
        let (_, members) = crate::session::members(state, &group)?;
        for t in crate::views::group_topics(state, &group, &members, topics)? {
            for p in t.partitions {
                gauge!("sluice_group_lag", "group" => group.clone(), "topic" => t.topic.clone(), "partition" => p.partition.to_string())
                    .set(p.lag as f64);
            }
        }
    }
    for name in state.tables.names() {
        let Ok(s) = state.tables.status(&name) else {
            continue;
        };
        let t = crate::views::info(s);
        gauge!("sluice_table_lag_records", "table" => name.clone()).set(t.lag as f64);
        gauge!("sluice_table_rows", "table" => name.clone()).set(t.rows as f64);
        counter!("sluice_table_skipped_records_total", "table" => name).absolute(t.skipped);
    }
    if let Ok(sources) = state.sources.list() {
        for x in sources {
            for (outcome, n) in [
                ("accepted", x.counts.accepted),
                ("refused", x.counts.refused),
            ] {
                counter!("sluice_source_requests_total", "source" => x.name.clone(), "outcome" => outcome)
                    .absolute(n);
            }
        }
    }
    for name in state.processors.names() {
        let Ok(s) = state.processors.status(&name) else {
            continue;
        };
        let lag: u64 = s.partitions.iter().map(|(_, at, end)| end - at).sum();
        let c = s.counts;
        gauge!("sluice_processor_lag_records", "processor" => name.clone()).set(lag as f64);
        gauge!("sluice_processor_running", "processor" => name.clone()).set(f64::from(u8::from(
            s.state == sluice_tables::ProcessorState::Running,
        )));
        for (outcome, n) in [
            ("written", c.written),
            ("filtered", c.filtered),
            ("dead_lettered", c.dead_lettered),
            ("skipped", c.skipped),
        ] {
            counter!("sluice_processor_records_total", "processor" => name.clone(), "outcome" => outcome)
                .absolute(n);
        }
    }
    let health = state.log.health();
    if let Some(bytes) = health.file_bytes {
        gauge!("sluice_storage_bytes").set(bytes as f64);
    }
    if let Some(disk) = health.disk {
        gauge!("sluice_disk_free_bytes").set(disk.free_bytes as f64);
        gauge!("sluice_disk_min_free_bytes").set(disk.min_free_bytes as f64);
        gauge!("sluice_disk_reserve_held").set(f64::from(u8::from(disk.reserve_held)));
    }
    Ok(())
}
