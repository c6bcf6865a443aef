//! Produce: JSON records (one or a batch), NDJSON bulk loads and CloudEvents in
//! structured, batched and binary mode, all on `POST /v1/topics/{topic}/records`.
//!
//! The handler turns the body into encoded records with their partitions chosen,
//! then hands them to the log's group commit and answers once they are durable.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use sluice_log::{NewRecord, Topic, now_ms};
use sluice_openapi::{
    CloudEvent, MapOnly, Problem, ProduceBatch, ProduceBody, ProduceRecord, ProduceRecordSchema,
    ProduceResponse,
};

use crate::api::topic;
use crate::auth::{Object, Principal};
use crate::cloudevents;
use crate::error::{ApiError, Body, Path, json_error};
use crate::records::{encode, encode_all, unit, write};
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
pub(crate) async fn produce(
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
