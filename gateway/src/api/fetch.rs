//! Direct fetch by partition and offset, with long-polling. The answer is written
//! straight from the storage engine's bytes into one buffer (see
//! [`crate::stream::encode`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_openapi::{FetchResponse, Problem};
use utoipa::IntoParams;

use crate::api::topic;
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Path, Query};
use crate::state::AppState;
use crate::stream::encode::{JsonRecords, answer_buffer, push_u64};
use crate::stream::poll::LongPoll;
use crate::stream::{DEFAULT_LIMIT, DEFAULT_MAX_BYTES, MAX_LIMIT, MAX_MAX_BYTES, MAX_WAIT_MS};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FetchParams {
    /// First offset to read; default: the partition's first retained offset.
    #[param(minimum = 0, maximum = 9223372036854775807i64)]
    offset: Option<u64>,
    /// Most records to return (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Byte budget of the records returned (default 1 MiB, at most 64 MiB); the first
    /// record is returned whatever its size.
    #[param(minimum = 1, maximum = 67108864)]
    max_bytes: Option<usize>,
    /// Wait up to this many milliseconds (at most 60000) for a record when there is
    /// none yet.
    #[param(minimum = 0, maximum = 60000)]
    wait_ms: Option<u64>,
}

/// Fetch records of one partition from an offset.
#[utoipa::path(get, path = "/v1/topics/{topic}/partitions/{partition}/records", tag = "fetch",
    params(
        ("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("partition" = u32, Path, description = "Partition number"),
        FetchParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Records in offset order (possibly none).", body = FetchResponse),
        (status = 400, description = "`invalid_query`, `invalid_path`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`, `partition_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "`offset_out_of_range`: the body carries `start_offset` and `end_offset`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, partition)): Path<(String, u32)>,
    Query(params): Query<FetchParams>,
) -> Result<Response, ApiError> {
    principal.require(Object::Consume(&name))?;
    let topic = topic(&state, &name)?;
    let info = topic.partition_checked(partition)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let max_bytes = params.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(1..=MAX_MAX_BYTES).contains(&max_bytes) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("max_bytes must be between 1 and {MAX_MAX_BYTES}"),
        ));
    }
    let wait_ms = params.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait_ms may be at most {MAX_WAIT_MS}"),
        ));
    }
    let wait = Duration::from_millis(wait_ms);
    let offset = params.offset.unwrap_or(info.start_offset);
    if offset > i64::MAX as u64 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "offset must be at most 2^63 - 1",
        ));
    }
    let epoch = state.log.topic_epoch(&topic).into_owned();
    let mut poll = LongPoll::new(wait, || state.waiters.subscribe(topic.id(), partition));
    loop {
        let log = state.log.clone();
        let topic = topic.clone();
        let (body, outcome) = tokio::task::spawn_blocking(move || {
            let mut body = answer_buffer(limit, max_bytes);
            body.extend_from_slice(b"{\"records\":[");
            let mut records = JsonRecords::new(body, false);
            let outcome = records.read(&log, &topic, partition, offset, limit, max_bytes)?;
            let body = records.buf;
            Ok::<_, sluice_log::Error>((body, outcome))
        })
        .await
        .map_err(|_| ApiError::internal())??;
        state
            .stats
            .delivered(&name, outcome.records as u64, body.len() as u64);
        if outcome.records > 0 || poll.done() {
            let mut body = body;
            body.extend_from_slice(b"],\"next_offset\":");
            push_u64(&mut body, outcome.next_offset);
            body.extend_from_slice(b",\"high_watermark\":");
            push_u64(&mut body, outcome.high_watermark);
            body.extend_from_slice(b",\"start_offset\":");
            push_u64(&mut body, outcome.start_offset);
            body.extend_from_slice(b",\"log_epoch\":\"");
            body.extend_from_slice(epoch.as_bytes());
            body.extend_from_slice(b"\"}");
            let mut res = body.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(res);
        }
        poll.wait(None).await;
    }
}
