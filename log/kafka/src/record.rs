//! Sluice records as Kafka records and back.
//!
//! A Sluice record is a timestamp, an optional key, string headers and a value that
//! is JSON text, opaque bytes, or null. In Kafka: the key's bytes, the value's bytes
//! (none for null: a tombstone), the timestamp, and the headers; a binary value
//! carries the header `sluice-binary`, which readers through Sluice do not see. A
//! record written by another client without that header reads as JSON when its
//! value parses as JSON, else as bytes.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use sluice_log::{RecordParts, RecordView, ValueKind};

/// Marks a binary value.
pub(crate) const BINARY: &str = "sluice-binary";

/// A record's Kafka form, borrowed from its stored Sluice bytes.
pub(crate) struct Outgoing<'a> {
    pub key: Option<&'a str>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: Option<OwnedHeaders>,
}

/// The Kafka form of a record in Sluice's stored format.
pub(crate) fn outgoing<'a>(view: &RecordView<'a>) -> Outgoing<'a> {
    let mut headers = None;
    if view.has_headers() || view.kind == ValueKind::Binary {
        let mut h = OwnedHeaders::new();
        for (n, v) in view.headers() {
            h = h.insert(Header {
                key: n,
                value: Some(v),
            });
        }
        if view.kind == ValueKind::Binary {
            h = h.insert(Header::<&str> {
                key: BINARY,
                value: None,
            });
        }
        headers = Some(h);
    }
    Outgoing {
        key: view.key,
        value: (view.kind != ValueKind::Null).then_some(view.value),
        timestamp: view.timestamp as i64,
        headers,
    }
}

/// Hands a Kafka record to `visit` as a Sluice record, with about the bytes it
/// takes stored. A record with no headers and a UTF-8 key (what Sluice writes for
/// JSON values) is viewed in place; any other is converted to the stored format.
pub(crate) fn incoming<T>(
    m: &BorrowedMessage<'_>,
    visit: &mut dyn FnMut(RecordView<'_>, usize) -> T,
) -> Option<T> {
    let timestamp = m.timestamp().to_millis().unwrap_or(0).max(0) as u64;
    let value = m.payload();
    let key = match m.key().map(std::str::from_utf8) {
        None => Some(None),
        Some(Ok(k)) => Some(Some(k)),
        Some(Err(_)) => None,
    };
    if m.headers().is_none()
        && let Some(key) = key
    {
        let kind = kind_of(value, false);
        let size = 17 + key.map_or(0, str::len) + value.map_or(0, <[u8]>::len);
        return Some(visit(
            RecordView::plain(timestamp, key, kind, value.unwrap_or_default()),
            size,
        ));
    }
    let mut headers = Vec::new();
    let mut binary = false;
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let header = h.get(i);
            if header.key == BINARY {
                binary = true;
                continue;
            }
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            headers.push((header.key.to_string(), value.into_owned()));
        }
    }
    let key = m.key().map(String::from_utf8_lossy);
    let stored = RecordParts {
        timestamp,
        key: key.as_deref(),
        headers: &headers,
        kind: kind_of(value, binary),
        value: value.unwrap_or_default(),
    }
    .encode();
    let view = RecordView::decode(&stored)?;
    Some(visit(view, stored.len()))
}

/// A value's kind: null without one; bytes when marked binary or not JSON.
fn kind_of(value: Option<&[u8]>, binary: bool) -> ValueKind {
    match value {
        None => ValueKind::Null,
        Some(_) if binary => ValueKind::Binary,
        Some(v) if serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok() => ValueKind::Json,
        Some(_) => ValueKind::Binary,
    }
}
