//! Records in: validating wire records, choosing their partitions (Sluice's
//! murmur2, above the storage seam) and encoding them, and appending them under the
//! record rate limit. The HTTP produce, the WebSocket produce and CloudEvents share
//! it.

use axum::http::StatusCode;
use base64::Engine;
use sluice_log::{AppendRequest, AppendUnit, NewRecord, RecordParts, Topic, ValueKind};
use sluice_openapi::{ProduceRecord, RecordOffset};

use crate::api::{BASE64_IN, call};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Appends encoded units for `principal`, after the record rate limit; with an
/// idempotency key the whole request is one unit. Answers once durable.
pub(crate) async fn write(
    state: &AppState,
    principal: &Principal,
    topic: &Topic,
    mut units: Vec<AppendUnit>,
    idempotency_key: Option<Vec<u8>>,
) -> Result<Vec<RecordOffset>, ApiError> {
    let writer = match state.processors.writer_of(topic) {
        Some(p) => Some(format!("processor '{p}'")),
        None => state
            .tables
            .changelog_of(topic)
            .map(|t| format!("table '{t}' (its changelog)")),
    };
    if let Some(writer) = writer {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "topic_is_derived",
            format!(
                "topic '{}' is written by {writer} only; produce to its source",
                topic.name()
            ),
        ));
    }
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
pub(crate) fn encode_all(
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

pub(crate) fn unit(records: Vec<NewRecord>) -> AppendUnit {
    AppendUnit {
        dedupe_key: None,
        records,
    }
}

/// Why a record cannot be written.
#[derive(Debug)]
pub(crate) struct RecordError {
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
    pub(crate) fn at(self, place: impl std::fmt::Display) -> ApiError {
        let detail = format!("{place}: {}", self.message);
        if self.missing_partition {
            ApiError::new(StatusCode::NOT_FOUND, "partition_not_found", detail)
        } else {
            ApiError::bad_request("invalid_record", detail)
        }
    }
}

/// Validates a wire record, chooses its partition and encodes it.
pub(crate) fn encode(topic: &Topic, r: &ProduceRecord, now: u64) -> Result<NewRecord, RecordError> {
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
pub(crate) fn encode_parts(
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
