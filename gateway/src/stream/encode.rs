//! The wire JSON of a record, and the one read-and-encode every reader uses:
//! records go straight from the storage engine's bytes into the answer's buffer.
//! JSON values are stored as JSON text and copied as they are, so no reader parses
//! or builds a JSON tree per record.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sluice_log::{Backend, ReadOutcome, RecordView, Topic, ValueKind};

/// Records written into a buffer as JSON objects joined by commas: the inside of
/// a JSON array that starts where the buffer ended when it was made.
pub(crate) struct JsonRecords {
    pub buf: Vec<u8>,
    start: usize,
    /// Each record's offset and the end of its object in `buf`, when kept.
    pub ends: Option<Vec<(u64, u32)>>,
}

impl JsonRecords {
    /// Records to be written after what `buf` holds; `keep_ends` keeps where each
    /// record ends.
    pub(crate) fn new(buf: Vec<u8>, keep_ends: bool) -> Self {
        JsonRecords {
            start: buf.len(),
            buf,
            ends: keep_ends.then(Vec::new),
        }
    }

    /// Reads one partition from `from` (at most `max_records`, about `max_bytes`)
    /// and writes its records. Blocks: async callers run it on a blocking thread.
    pub(crate) fn read(
        &mut self,
        log: &Arc<dyn Backend>,
        topic: &Topic,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadOutcome, sluice_log::Error> {
        log.read(
            topic,
            partition,
            from,
            max_records,
            max_bytes,
            &mut |o, r| {
                if self.buf.len() > self.start {
                    self.buf.push(b',');
                }
                write_record(&mut self.buf, partition, o, &r);
                if let Some(ends) = self.ends.as_mut() {
                    ends.push((o, self.buf.len() as u32));
                }
            },
        )
    }
}

/// The buffer to write up to `limit` records (about `max_bytes`) into, sized for
/// records of a few hundred bytes so that a full answer is rarely copied while
/// it grows.
pub(crate) fn answer_buffer(limit: usize, max_bytes: usize) -> Vec<u8> {
    Vec::with_capacity(
        limit
            .saturating_mul(384)
            .min(max_bytes)
            .clamp(4096, 4 << 20),
    )
}

pub(crate) fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes one record as the JSON object of [`sluice_openapi::FetchedRecord`].
pub(crate) fn write_record(out: &mut Vec<u8>, partition: u32, offset: u64, r: &RecordView<'_>) {
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
