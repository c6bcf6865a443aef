//! CloudEvents 1.0 over HTTP: structured, batched and binary mode, mapped onto
//! records the way the CloudEvents Kafka binding does it. The event's `subject`
//! (else its `id`) is the key, `data` is the value, and every other attribute is a
//! `ce_<name>` header (`datacontenttype` becomes `content-type`). Each event is
//! remembered under its `source` + `id`, so a redelivered event is not written twice.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_log::{AppendUnit, RecordParts, Topic, ValueKind};

use crate::api::BASE64_IN;
use crate::error::{ApiError, json_error};
use crate::records::encode_parts;

type Event = BTreeMap<String, Box<RawValue>>;

/// Context attributes whose type is string in the CloudEvents spec.
const CORE_STRINGS: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_cloudevent", msg)
}

/// `application/cloudevents+json`: one event.
pub(crate) fn structured(topic: &Topic, body: &[u8], now: u64) -> Result<AppendUnit, ApiError> {
    let event: Event = serde_json::from_slice(body).map_err(json_error)?;
    from_structured(topic, event, now).map_err(invalid)
}

/// `application/cloudevents-batch+json`: an array of events, each deduplicated on its
/// own.
pub(crate) fn batch(topic: &Topic, body: &[u8], now: u64) -> Result<Vec<AppendUnit>, ApiError> {
    let events: Vec<Event> = serde_json::from_slice(body).map_err(json_error)?;
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            from_structured(topic, e, now).map_err(|m| invalid(format!("event {i}: {m}")))
        })
        .collect()
}

fn from_structured(topic: &Topic, mut event: Event, now: u64) -> Result<AppendUnit, String> {
    let data = event.remove("data");
    let data_base64 = event.remove("data_base64");
    if data.is_some() && data_base64.is_some() {
        return Err("an event has `data` or `data_base64`, not both".into());
    }
    let data_base64 = data_base64.filter(|d| d.get() != "null");
    let mut attrs = Attributes::default();
    for (name, raw) in event {
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        if CORE_STRINGS.contains(&name.as_str()) && !matches!(value, Value::String(_) | Value::Null)
        {
            return Err(format!("attribute `{name}` must be a string"));
        }
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => {
                return Err(format!(
                    "attribute `{name}` must be a string, number or boolean"
                ));
            }
        };
        attrs.set(name, text)?;
    }
    let binary;
    let (kind, value): (ValueKind, &[u8]) = match (&data, &data_base64) {
        (Some(_), Some(_)) => return Err("an event has `data` or `data_base64`, not both".into()),
        (Some(d), None) if d.get() == "null" => (ValueKind::Null, b""),
        (Some(d), None) => (ValueKind::Json, d.get().as_bytes()),
        (None, Some(b)) => {
            let s: String = serde_json::from_str(b.get())
                .map_err(|_| "`data_base64` must be a string".to_string())?;
            binary = BASE64_IN
                .decode(s)
                .map_err(|e| format!("`data_base64` is not base64: {e}"))?;
            (ValueKind::Binary, &binary)
        }
        (None, None) => (ValueKind::Null, b""),
    };
    attrs.into_unit(topic, kind, value, now)
}

/// Binary mode: attributes in `ce-*` headers, the body is the data.
pub(crate) fn binary(
    topic: &Topic,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
    now: u64,
) -> Result<AppendUnit, ApiError> {
    let mut attrs = Attributes::default();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value
            .to_str()
            .map_err(|_| invalid(format!("header `{name}` is not visible ASCII")))?;
        attrs
            .set(attr.to_string(), text.to_string())
            .map_err(invalid)?;
    }
    if !content_type.is_empty() {
        attrs
            .set("datacontenttype".into(), content_type.to_string())
            .map_err(invalid)?;
    }
    let json = content_type.is_empty()
        || content_type == "application/json"
        || content_type.ends_with("+json");
    let kind = if body.is_empty() {
        ValueKind::Null
    } else if json {
        serde_json::from_slice::<&RawValue>(body).map_err(json_error)?;
        ValueKind::Json
    } else {
        ValueKind::Binary
    };
    attrs.into_unit(topic, kind, body, now).map_err(invalid)
}

#[derive(Default)]
struct Attributes {
    id: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    headers: Vec<(String, String)>,
}

impl Attributes {
    fn set(&mut self, name: String, value: String) -> Result<(), String> {
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "attribute name `{name}` is not 1 to 20 lowercase letters or digits"
            ));
        }
        match name.as_str() {
            "specversion" if value != "1.0" => {
                return Err(format!("specversion `{value}` is not supported; use 1.0"));
            }
            "id" => self.id = Some(value.clone()),
            "source" => self.source = Some(value.clone()),
            "subject" => self.subject = Some(value.clone()),
            _ => {}
        }
        let header = if name == "datacontenttype" {
            "content-type".to_string()
        } else {
            format!("ce_{name}")
        };
        self.headers.push((header, value));
        Ok(())
    }

    fn into_unit(
        self,
        topic: &Topic,
        kind: ValueKind,
        value: &[u8],
        now: u64,
    ) -> Result<AppendUnit, String> {
        let has = |h: &str| self.headers.iter().any(|(n, _)| n == h);
        for required in ["specversion", "type"] {
            if !has(&format!("ce_{required}")) {
                return Err(format!("the event has no `{required}`"));
            }
        }
        if self
            .headers
            .iter()
            .any(|(n, v)| n == "ce_type" && v.is_empty())
        {
            return Err("the event's `type` is empty".into());
        }
        let id = self
            .id
            .filter(|s| !s.is_empty())
            .ok_or("the event has no `id`")?;
        let source = self
            .source
            .filter(|s| !s.is_empty())
            .ok_or("the event has no `source`")?;
        let key = self.subject.as_deref().unwrap_or(&id);
        let record = encode_parts(
            topic,
            None,
            RecordParts {
                timestamp: now,
                key: Some(key),
                headers: &self.headers,
                kind,
                value,
            },
        )
        .map_err(|e| e.message)?;
        let mut dedupe = Vec::with_capacity(4 + source.len() + id.len());
        dedupe.extend_from_slice(b"ce:");
        dedupe.extend_from_slice(source.as_bytes());
        dedupe.push(0);
        dedupe.extend_from_slice(id.as_bytes());
        Ok(AppendUnit {
            dedupe_key: Some(dedupe),
            records: vec![record],
        })
    }
}
