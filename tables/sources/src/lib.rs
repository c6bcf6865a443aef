//! Event sources of Sluice without the HTTP. It owns where a record's key and
//! delivery id come from ([`Pick`]), checking a request's signature the way each
//! sender signs
//! ([`verify`]: Standard Webhooks, GitHub, Stripe, Slack, a generic HMAC or a
//! shared token), and the record a verified request becomes ([`Delivery`]).
//!
//! The gateway receives `POST /v1/hooks/{name}`, asks this crate whether the
//! request is the sender's and what to append, and appends it with the
//! delivery id as the unit's dedupe key, so a redelivery is answered with the
//! first offsets and writes nothing.
//!
//! It must not depend on another Sluice crate, an HTTP framework, a storage
//! engine or an async runtime: requests come in as a header lookup and the
//! body's bytes.

use serde_json::Value;

pub mod verify;

pub use crate::verify::{Refusal, Scheme, verify};

/// Errors of a source's definition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A definition that cannot be kept; the text says why.
    #[error("{0}")]
    Invalid(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a value of a request comes from: a header or a JSON path of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// `header:<name>` (case-insensitive).
    Header(String),
    /// `$.a.b`: a field of the JSON body.
    Path(Vec<String>),
}

impl Pick {
    /// Parses `header:NAME` or `$.a.b`.
    pub fn parse(s: &str) -> Result<Pick> {
        if let Some(h) = s.strip_prefix("header:") {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Error::Invalid(format!("'{s}' names no header")));
            }
            return Ok(Pick::Header(h));
        }
        let Some(rest) = s.strip_prefix("$.") else {
            return Err(Error::Invalid(format!(
                "'{s}' is neither header:<name> nor a JSON path like $.id"
            )));
        };
        let path: Vec<String> = rest.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::Invalid(format!("'{s}' has an empty part")));
        }
        Ok(Pick::Path(path))
    }

    /// The value it picks of a request, as text (a number as its digits).
    pub fn pick<'a>(
        &self,
        header: &dyn Fn(&str) -> Option<&'a str>,
        body: Option<&Value>,
    ) -> Option<String> {
        match self {
            Pick::Header(h) => header(h).map(str::to_string),
            Pick::Path(path) => {
                let mut at = body?;
                for p in path {
                    at = at.get(p)?;
                }
                match at {
                    Value::String(s) => Some(s.clone()),
                    Value::Null | Value::Object(_) | Value::Array(_) => None,
                    other => Some(other.to_string()),
                }
            }
        }
    }
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pick::Header(h) => write!(f, "header:{h}"),
            Pick::Path(p) => write!(f, "$.{}", p.join(".")),
        }
    }
}

/// Headers kept on the record by default (when the request has them): its
/// content type and what the known senders say about the event.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "x-slack-retry-reason",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-specversion",
];

/// The delivery id a scheme's senders put on every request, used to dedupe
/// when the definition names none.
pub fn default_dedupe(scheme: Scheme) -> Option<Pick> {
    match scheme {
        Scheme::StandardWebhooks => Some(Pick::Header("webhook-id".into())),
        Scheme::Github => Some(Pick::Header("x-github-delivery".into())),
        Scheme::Stripe => Some(Pick::Path(vec!["id".into()])),
        Scheme::Slack => Some(Pick::Path(vec!["event_id".into()])),
        Scheme::Hmac | Scheme::Token => None,
    }
}

/// What a verified request becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The record's key.
    pub key: Option<String>,
    /// The delivery id the record is deduplicated by.
    pub id: Option<String>,
    /// Headers kept on the record (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
}

/// Reads a verified request: its JSON body (if it is JSON), its key and
/// delivery id, and the headers to keep (`KEPT_HEADERS` and `extra`).
pub fn delivery<'a>(
    header: &dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
    key: Option<&Pick>,
    dedupe: Option<&Pick>,
    extra: &[String],
) -> Delivery {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let mut headers = Vec::new();
    for h in KEPT_HEADERS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        if let Some(v) = header(h)
            && !headers.iter().any(|(n, _): &(String, String)| n == h)
        {
            headers.push((h.to_string(), v.to_string()));
        }
    }
    Delivery {
        key: key.and_then(|k| k.pick(header, json.as_ref())),
        id: dedupe.and_then(|d| d.pick(header, json.as_ref())),
        headers,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_from_headers_and_paths() {
        let h = |n: &str| (n == "x-github-delivery").then_some("d-1");
        let body = json!({"id": 7, "data": {"after": {"id": "r9"}}});
        assert_eq!(
            Pick::parse("header:X-GitHub-Delivery")
                .unwrap()
                .pick(&h, Some(&body)),
            Some("d-1".into())
        );
        assert_eq!(
            Pick::parse("$.id").unwrap().pick(&h, Some(&body)),
            Some("7".into())
        );
        assert_eq!(
            Pick::parse("$.data.after.id")
                .unwrap()
                .pick(&h, Some(&body)),
            Some("r9".into())
        );
        assert_eq!(Pick::parse("$.data").unwrap().pick(&h, Some(&body)), None);
        for bad in ["id", "$.", "$.a..b", "header:", "header:a b"] {
            assert!(Pick::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delivery_keeps_known_headers() {
        let h = |n: &str| match n {
            "content-type" => Some("application/json"),
            "x-github-event" => Some("push"),
            "x-custom" => Some("c"),
            _ => None,
        };
        let d = delivery(
            &h,
            br#"{"ref": "main"}"#,
            Some(&Pick::parse("$.ref").unwrap()),
            None,
            &["x-custom".into()],
        );
        assert_eq!(d.key.as_deref(), Some("main"));
        assert_eq!(
            d.headers,
            vec![
                ("content-type".into(), "application/json".into()),
                ("x-github-event".into(), "push".into()),
                ("x-custom".into(), "c".into())
            ]
        );
        assert_eq!(delivery(&h, b"not json", None, None, &[]).json, None);
    }
}
