//! Produce: JSON records (one or a batch), NDJSON bulk loads and CloudEvents in
//! structured, batched and binary mode, all on `POST /v1/topics/{topic}/records`.
//!
//! The handler turns the body into encoded records with their partitions chosen,
//! then hands them to the log's group commit and answers once they are durable.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use sluice_log::{AppendRequest, AppendUnit, NewRecord, RecordParts, Topic, ValueKind, now_ms};
use sluice_openapi::{
    CloudEvent, MapOnly, Problem, ProduceBatch, ProduceBody, ProduceRecord, ProduceRecordSchema,
    ProduceResponse, RecordOffset,
};

use crate::api::{BASE64_IN, call, topic};
use crate::auth::{Object, Principal};
use crate::cloudevents;
use crate::error::{ApiError, Body, Path, json_error};
use crate::state::AppState;

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The body types a produce reads (besides CloudEvents' binary mode, where the
/// type is the event data's).
const ACCEPTED_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
];

/// Produce records.
///
/// The body is one record, `{"records": [...]}`, NDJSON (`application/x-ndjson`, one
/// record per line) or a CloudEvent (`application/cloudevents+json`,
/// `application/cloudevents-batch+json`, or binary mode with `ce-*` headers). The
/// answer comes once every record is durable, with one offset per record in order.
/// A repeated `Idempotency-Key` (or CloudEvent `source`+`id`) within the dedupe
/// window returns the original offsets and writes nothing.
#[utoipa::path(post, path = "/v1/topics/{topic}/records", tag = "produce",
    params(
        ("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key within the dedupe window returns the first answer.", pattern = "^[!-~]{1,255}$"),
    ),
    request_body(description = "Records to produce.", content(
        (ProduceRecordSchema = "application/json"),
        (ProduceBatch = "application/json"),
        (String = "application/x-ndjson"),
        (CloudEvent = "application/cloudevents+json"),
        (Vec<CloudEvent> = "application/cloudevents-batch+json"),
    )),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Durable.", body = ProduceResponse),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_record`, `invalid_cloudevent`, `invalid_idempotency_key`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`, `partition_not_found` (a record names a partition the topic does not have).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: a `Content-Type` other than those above (and `application/x-www-form-urlencoded`, curl's default, read as JSON); the detail lists them.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`key_required`: the topic is compacted and a record has no key; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store refused the write; nothing was written.", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`insufficient_storage`: the disk is below `--min-free-disk-mb`; nothing was written. Appends resume on their own once space is freed.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token does not cover this object.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn produce(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body, _in_flight): Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    principal.require(Object::Produce(&name))?;
    let topic = topic(&state, &name)?;
    let idempotency_key = idempotency_key(&headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let now = now_ms();
    let units = if headers.contains_key("ce-specversion") {
        vec![cloudevents::binary(
            &topic,
            &headers,
            &content_type,
            &body,
            now,
        )?]
    } else {
        match content_type.as_str() {
            "application/cloudevents+json" => {
                vec![cloudevents::structured(&topic, &body, now)?]
            }
            "application/cloudevents-batch+json" => cloudevents::batch(&topic, &body, now)?,
            "application/x-ndjson" | "application/jsonl" | "application/json-seq" => {
                vec![unit(ndjson(&topic, &body, now)?)]
            }
            // `curl -d` sends form encoding unless told otherwise; its body is
            // read as the JSON it is.
            "" | "application/json" | "application/x-www-form-urlencoded" => {
                let MapOnly(parsed): MapOnly<ProduceBody> =
                    serde_json::from_slice(&body).map_err(json_error)?;
                let records = parsed
                    .into_records()
                    .map_err(|m| ApiError::bad_request("invalid_body", m))?;
                vec![unit(encode_all(&topic, &records, now)?)]
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type '{other}' is not read here; send one of: {}, or a \
                         CloudEvent in binary mode (ce-* headers) with any type",
                        ACCEPTED_TYPES.join(", ")
                    ),
                ));
            }
        }
    };
    let offsets = write(&state, &principal, &topic, units, idempotency_key).await?;
    Ok(Json(ProduceResponse { offsets }))
}

/// Appends encoded units for `principal`, after the record rate limit; with an
/// idempotency key the whole request is one unit. Answers once durable.
pub async fn write(
    state: &AppState,
    principal: &Principal,
    topic: &Topic,
    mut units: Vec<AppendUnit>,
    idempotency_key: Option<Vec<u8>>,
) -> Result<Vec<RecordOffset>, ApiError> {
    if units.iter().all(|u| u.records.is_empty()) {
        // An empty batch is nothing to do, not a mistake.
        return Ok(Vec::new());
    }
    let count = units.iter().map(|u| u.records.len()).sum();
    state.limits.check_records(&principal.rate_key, count)?;
    let bytes: usize = units
        .iter()
        .flat_map(|u| &u.records)
        .map(|r| r.bytes.len())
        .sum();
    if let Some(key) = idempotency_key {
        // One key covers the whole request: merge the units into one.
        let records = units.drain(..).flat_map(|u| u.records).collect();
        units.push(AppendUnit {
            dedupe_key: Some(key),
            records,
        });
    }
    let request = AppendRequest {
        topic: topic.name().to_string(),
        topic_id: topic.id(),
        units,
    };
    let log = state.log.clone();
    let offsets = call(|r| log.append(request, r)).await?;
    state
        .stats
        .produced(topic.name(), count as u64, bytes as u64);
    Ok(offsets
        .into_iter()
        .map(|(partition, offset)| RecordOffset { partition, offset })
        .collect())
}

/// Validates and encodes wire records; errors name the record's index.
pub fn encode_all(
    topic: &Topic,
    records: &[ProduceRecord],
    now: u64,
) -> Result<Vec<NewRecord>, ApiError> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| encode(topic, r, now).map_err(|e| e.at(format!("record {i}"))))
        .collect()
}

fn unit(records: Vec<NewRecord>) -> AppendUnit {
    AppendUnit {
        dedupe_key: None,
        records,
    }
}

/// Why a record cannot be written.
#[derive(Debug)]
pub struct RecordError {
    /// The record names a partition the topic does not have.
    pub missing_partition: bool,
    pub message: String,
}

impl From<String> for RecordError {
    fn from(message: String) -> Self {
        RecordError {
            missing_partition: false,
            message,
        }
    }
}

impl From<&str> for RecordError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl RecordError {
    /// The answer for this error at `place` ("record 3", "line 7").
    pub fn at(self, place: impl std::fmt::Display) -> ApiError {
        let detail = format!("{place}: {}", self.message);
        if self.missing_partition {
            ApiError::new(StatusCode::NOT_FOUND, "partition_not_found", detail)
        } else {
            ApiError::bad_request("invalid_record", detail)
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = v.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    let mut key = b"k:".to_vec();
    key.extend_from_slice(bytes);
    Ok(Some(key))
}

fn ndjson(topic: &Topic, body: &[u8], now: u64) -> Result<Vec<NewRecord>, ApiError> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let MapOnly(r): MapOnly<ProduceRecord> = serde_json::from_slice(line)
            .map_err(|e| ApiError::bad_request("invalid_record", format!("line {}: {e}", i + 1)))?;
        out.push(encode(topic, &r, now).map_err(|e| e.at(format!("line {}", i + 1)))?);
    }
    Ok(out)
}

/// Validates a wire record, chooses its partition and encodes it.
pub fn encode(topic: &Topic, r: &ProduceRecord, now: u64) -> Result<NewRecord, RecordError> {
    let binary;
    let (kind, value): (ValueKind, &[u8]) = match (&r.value, &r.value_base64) {
        (Some(_), Some(_)) => return Err("give `value` or `value_base64`, not both".into()),
        (None, None) => return Err("a record needs `value` or `value_base64`".into()),
        (Some(v), None) if v.get() == "null" => (ValueKind::Null, b""),
        (Some(v), None) => (ValueKind::Json, v.get().as_bytes()),
        (None, Some(b)) => {
            binary = BASE64_IN
                .decode(b)
                .map_err(|e| RecordError::from(format!("`value_base64` is not base64: {e}")))?;
            (ValueKind::Binary, &binary)
        }
    };
    if r.timestamp.is_some_and(|t| t > i64::MAX as u64) {
        return Err("`timestamp` must be at most 2^63 - 1".into());
    }
    let headers = r.headers.as_ref().map(|h| h.0.as_slice()).unwrap_or(&[]);
    encode_parts(
        topic,
        r.partition,
        RecordParts {
            timestamp: r.timestamp.unwrap_or(now),
            key: r.key.as_deref(),
            headers,
            kind,
            value,
        },
    )
}

/// Chooses the partition (explicit, else by key, else round-robin) and encodes.
pub fn encode_parts(
    topic: &Topic,
    partition: Option<u32>,
    parts: RecordParts<'_>,
) -> Result<NewRecord, RecordError> {
    parts.check()?;
    let partition = match partition {
        Some(p) if p >= topic.partition_count() => {
            return Err(RecordError {
                missing_partition: true,
                message: format!(
                    "partition {p} does not exist; topic '{}' has {} partitions",
                    topic.name(),
                    topic.partition_count()
                ),
            });
        }
        Some(p) => p,
        None => topic.pick_partition(parts.key),
    };
    Ok(NewRecord {
        partition,
        bytes: parts.encode(),
    })
}
