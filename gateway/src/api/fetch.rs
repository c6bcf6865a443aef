//! Direct fetch by partition and offset, with long-polling.
//!
//! The response is written straight from the storage pages into one buffer: JSON
//! values are stored as JSON text and copied as they are, so a fetch neither parses
//! nor builds a JSON tree per record.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sluice_log::{RecordView, ValueKind};
use sluice_openapi::{FetchResponse, Problem};
use utoipa::IntoParams;

use crate::api::topic;
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Path, Query};
use crate::state::AppState;

/// Most records one fetch returns.
pub const MAX_LIMIT: usize = 10_000;
/// Default records per fetch.
pub const DEFAULT_LIMIT: usize = 100;
/// Default byte budget of a fetch.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Longest long-poll of a fetch, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Largest byte budget of a fetch.
pub const MAX_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FetchParams {
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
pub async fn fetch(
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
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so a commit between the read and the wait still wakes us.
    let mut waiter = (!wait.is_zero()).then(|| state.waiters.subscribe(topic.id(), partition));
    loop {
        let log = state.log.clone();
        let topic = topic.clone();
        let (body, outcome) = tokio::task::spawn_blocking(move || {
            let mut body = Vec::with_capacity(4096);
            body.extend_from_slice(b"{\"records\":[");
            let outcome = log.read(&topic, partition, offset, limit, max_bytes, &mut |o, r| {
                if body.len() > 12 {
                    body.push(b',');
                }
                write_record(&mut body, partition, o, &r);
            })?;
            Ok::<_, sluice_log::Error>((body, outcome))
        })
        .await
        .map_err(|_| ApiError::internal())??;
        let waited_out = tokio::time::Instant::now() >= deadline;
        state
            .stats
            .delivered(&name, outcome.records as u64, body.len() as u64);
        if outcome.records > 0 || waited_out || waiter.is_none() {
            let mut body = body;
            body.extend_from_slice(b"],\"next_offset\":");
            push_u64(&mut body, outcome.next_offset);
            body.extend_from_slice(b",\"high_watermark\":");
            push_u64(&mut body, outcome.high_watermark);
            body.extend_from_slice(b",\"start_offset\":");
            push_u64(&mut body, outcome.start_offset);
            body.extend_from_slice(b",\"log_epoch\":\"");
            body.extend_from_slice(state.log.epoch().as_bytes());
            body.extend_from_slice(b"\"}");
            let mut res = body.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(res);
        }
        let w = waiter.as_mut().expect("waiter present when waiting");
        if tokio::time::timeout_at(deadline, w.changed())
            .await
            .is_err()
        {
            // Out of time: read once more and answer with whatever is there.
            waiter = None;
        }
    }
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes one record as the JSON object of [`sluice_openapi::FetchedRecord`].
pub fn write_record(out: &mut Vec<u8>, partition: u32, offset: u64, r: &RecordView<'_>) {
    out.extend_from_slice(b"{\"partition\":");
    out.extend_from_slice(itoa::Buffer::new().format(partition).as_bytes());
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, offset);
    out.extend_from_slice(b",\"timestamp\":");
    push_u64(out, r.timestamp);
    if let Some(k) = r.key {
        out.extend_from_slice(b",\"key\":");
        write_str(out, k);
    }
    if r.has_headers() {
        out.extend_from_slice(b",\"headers\":{");
        for (i, (n, v)) in r.headers().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, n);
            out.push(b':');
            write_str(out, v);
        }
        out.push(b'}');
    }
    match r.kind {
        ValueKind::Null => out.extend_from_slice(b",\"value\":null"),
        ValueKind::Json => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(r.value);
        }
        ValueKind::Binary => {
            out.extend_from_slice(b",\"value_base64\":\"");
            let start = out.len();
            out.resize(
                start + base64::encoded_len(r.value.len(), true).unwrap_or(0),
                0,
            );
            let n = BASE64.encode_slice(r.value, &mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
        }
    }
    out.push(b'}');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_log::RecordParts;
    use sluice_openapi::FetchedRecord;

    /// The hand-written encoder produces exactly the documented wire type.
    #[test]
    fn written_records_parse_as_the_wire_type() {
        let headers = vec![("a\"b".to_string(), "é\n".to_string())];
        for (kind, value) in [
            (ValueKind::Json, &br#"{"x":[1,2]}"#[..]),
            (ValueKind::Null, &b""[..]),
            (ValueKind::Binary, &[0u8, 255, 7][..]),
        ] {
            let bytes = RecordParts {
                timestamp: 5,
                key: Some("k\u{1}"),
                headers: &headers,
                kind,
                value,
            }
            .encode();
            let view = RecordView::decode(&bytes).unwrap();
            let mut out = Vec::new();
            write_record(&mut out, 3, 9, &view);
            let r: FetchedRecord = serde_json::from_slice(&out).unwrap();
            assert_eq!((r.partition, r.offset, r.timestamp), (3, 9, 5));
            assert_eq!(r.key.as_deref(), Some("k\u{1}"));
            assert_eq!(r.headers.unwrap()["a\"b"], "é\n");
            match kind {
                ValueKind::Json => assert_eq!(r.value.unwrap(), serde_json::json!({"x":[1,2]})),
                ValueKind::Null => {
                    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                    assert!(v["value"].is_null() && v.get("value").is_some());
                }
                ValueKind::Binary => assert_eq!(r.value_base64.unwrap(), "AP8H"),
            }
        }
    }
}
