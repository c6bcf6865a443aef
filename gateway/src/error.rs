//! [`ApiError`]: every error the HTTP layer returns, rendered once as an RFC 9457
//! `application/problem+json` body with a stable `code`.

use axum::extract::FromRequest;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_openapi::Problem;

/// An error answer: status, stable code and a sentence for a person.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// With `offset_out_of_range`: the valid range.
    pub range: Option<(u64, u64)>,
    /// With `rate_limited`: seconds to wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            range: None,
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub(crate) fn topic_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "topic_not_found",
            format!("topic '{name}' does not exist"),
        )
    }
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request",
        )
    }
}

impl From<sluice_log::Error> for ApiError {
    fn from(e: sluice_log::Error) -> Self {
        use sluice_log::Error as E;
        match e {
            E::TopicNotFound(name) => ApiError::topic_not_found(&name),
            E::TopicExists(_) => ApiError::new(StatusCode::CONFLICT, "topic_exists", e.to_string()),
            E::PartitionNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "partition_not_found", e.to_string())
            }
            E::OffsetOutOfRange { start, end, .. } => ApiError {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                code: "offset_out_of_range",
                detail: e.to_string(),
                range: Some((start, end)),
                retry_after: None,
            },
            E::KeyRequired(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "key_required",
                e.to_string(),
            ),
            E::Invalid(msg) => ApiError::bad_request("invalid_request", msg),
            E::InsufficientStorage { .. } => {
                let mut e = ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    format!("{e}; nothing was written"),
                );
                e.retry_after = Some(10);
                e
            }
            E::Poisoned | E::Closed | E::CommitFailed(_) => {
                crate::telemetry::request_span()
                    .in_scope(|| tracing::error!(error = %e, "write refused"));
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store cannot accept writes right now; nothing was written",
                )
            }
            E::Unavailable(_) => {
                crate::telemetry::request_span()
                    .in_scope(|| tracing::warn!(error = %e, "storage unavailable"));
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("{e}; try again"),
                );
                e.retry_after = Some(1);
                e
            }
            E::StaleGeneration(detail) => {
                ApiError::new(StatusCode::CONFLICT, "stale_generation", detail)
            }
            E::Unsupported(what) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", what)
            }
            other => {
                crate::telemetry::request_span()
                    .in_scope(|| tracing::error!(error = %other, "storage error"));
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            type_: crate::problems::type_uri(self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_string(),
            start_offset: self.range.map(|r| r.0),
            end_offset: self.range.map(|r| r.1),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        res
    }
}

/// Parses a JSON body, answering malformed JSON and wrong shapes with a 400 that
/// says where the problem is.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(json_error)
}

/// Checks that no object of a JSON document names a key twice (which a parse into
/// a map or a `serde_json::Value` would let pass, the last one winning); answers
/// the first such key, or bad JSON, with a 400.
pub(crate) fn reject_duplicate_keys(bytes: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<Unique>(bytes)
        .map(|_| ())
        .map_err(json_error)
}

/// Any JSON value whose objects have unique keys.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Unique)
    }
}

impl<'de> serde::de::Visitor<'de> for Unique {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<Unique>()?;
            if let Some(key) = seen.replace(key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok(Unique)
    }
}

pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
        Category::Data => ApiError::bad_request("invalid_body", format!("{e}")),
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", e.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request("invalid_path", e.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large()
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    }
}

/// `Query` whose rejection is a problem+json 400.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub T);

/// `Path` whose rejection is a problem+json 400.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub T);

/// The request body as bytes, with 413 problem+json past the body limit. It holds
/// its share of the server's in-flight body budget until the handler is done, so
/// many large requests at once wait for each other instead of exhausting memory.
pub(crate) struct Body(pub axum::body::Bytes, pub InFlight);

/// A share of the in-flight body budget; released when dropped.
pub(crate) struct InFlight(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts (--max-body-bytes)",
    )
}

impl FromRequest<crate::state::AppState> for Body {
    type Rejection = ApiError;

    /// A body declared larger than the limit is refused before any of it is read
    /// (and so before `Expect: 100-continue` invites it). Budget is taken for bytes
    /// as they arrive, never for bytes only announced, so clients that declare a
    /// body and send nothing hold none of it.
    async fn from_request(
        req: axum::extract::Request,
        state: &crate::state::AppState,
    ) -> Result<Self, ApiError> {
        use futures_util::StreamExt;
        let max = state.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > max as u64) {
            return Err(payload_too_large());
        }
        let mut body = req.into_body().into_data_stream();
        let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
        // One chunk, the usual case, is kept as it came; more are gathered.
        let mut first: Option<axum::body::Bytes> = None;
        let mut gathered = bytes::BytesMut::new();
        let mut total = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
            total += chunk.len();
            if total > max {
                return Err(payload_too_large());
            }
            state.limits.hold_body(&mut permit, total).await?;
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if gathered.is_empty() {
                        gathered.extend_from_slice(f);
                    }
                    gathered.extend_from_slice(&chunk);
                }
            }
        }
        let bytes = if gathered.is_empty() {
            first.unwrap_or_default()
        } else {
            gathered.freeze()
        };
        Ok(Body(bytes, InFlight(permit)))
    }
}
