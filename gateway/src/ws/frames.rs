//! The protocol's frames: parsing client frames, and writing server frames (the
//! `records` frame around a chunk's shared bytes).

use std::collections::BTreeMap;

use axum::extract::ws::{Message, Utf8Bytes};
use serde::Deserialize;
use serde_json::Value;
use sluice_openapi::{
    CommitFrame, MapOnly, ProduceFrame, ProduceRecord, ServerFrame, SubscribeFrame,
    UnsubscribeFrame,
};

/// A client frame. Parsed in two steps, the `op` first, because serde's tagged
/// enums buffer their content and cannot hand JSON values through untouched.
pub(super) enum ClientFrame {
    Subscribe(SubscribeFrame),
    Unsubscribe {
        id: String,
    },
    Commit {
        id: String,
        offsets: BTreeMap<String, u64>,
    },
    Produce {
        reference: Option<Value>,
        topic: String,
        records: Vec<MapOnly<ProduceRecord>>,
    },
}

#[derive(Deserialize)]
pub(super) struct Op {
    op: String,
}

impl ClientFrame {
    pub(super) fn parse(raw: &str) -> Result<ClientFrame, String> {
        let op: Op = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        let e = |e: serde_json::Error| e.to_string();
        Ok(match op.op.as_str() {
            "subscribe" => ClientFrame::Subscribe(serde_json::from_str(raw).map_err(e)?),
            "unsubscribe" => {
                let f: UnsubscribeFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Unsubscribe { id: f.id }
            }
            "commit" => {
                let f: CommitFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Commit {
                    id: f.id,
                    offsets: f.offsets,
                }
            }
            "produce" => {
                let f: ProduceFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Produce {
                    reference: f.reference,
                    topic: f.topic,
                    records: f.records,
                }
            }
            other => return Err(format!("unknown op '{other}'")),
        })
    }
}

pub(super) fn text(v: impl serde::Serialize) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(&v).unwrap_or_default(),
    ))
}

pub(super) fn error_frame(
    id: Option<&str>,
    reference: Option<&Value>,
    code: &str,
    message: &str,
) -> Message {
    text(ServerFrame::Error {
        id: id.map(str::to_string),
        reference: reference.cloned(),
        code: code.to_string(),
        message: message.to_string(),
    })
}

/// The `records` frame of a chunk: [`ServerFrame::Records`], written around the
/// chunk's shared bytes instead of serialized record by record.
pub(super) fn records_frame(
    id: &str,
    topic: &str,
    partition: u32,
    chunk: &crate::stream::tail::Chunk,
) -> Message {
    let mut s = String::with_capacity(chunk.json.len() + 96);
    s.push_str("{\"type\":\"records\",\"id\":");
    s.push_str(&serde_json::to_string(id).unwrap_or_default());
    s.push_str(",\"topic\":");
    s.push_str(&serde_json::to_string(topic).unwrap_or_default());
    s.push_str(",\"partition\":");
    s.push_str(itoa::Buffer::new().format(partition));
    s.push_str(",\"next_offset\":");
    s.push_str(itoa::Buffer::new().format(chunk.next));
    s.push_str(",\"records\":[");
    // The chunk is JSON written by `write_record`: valid UTF-8.
    s.push_str(std::str::from_utf8(&chunk.json).unwrap_or_default());
    s.push_str("]}");
    Message::Text(Utf8Bytes::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written `records` frame is the documented `ServerFrame::Records`.
    #[test]
    fn records_frame_is_the_documented_frame() {
        let chunk = crate::stream::tail::Chunk {
            first: 4,
            next: 5,
            json: bytes::Bytes::from_static(
                br#"{"partition":2,"offset":4,"timestamp":1,"value":{"a":1}}"#,
            ),
            ends: [(4, 57)].into(),
        };
        let Message::Text(t) = records_frame("s\"1", "orders", 2, &chunk) else {
            panic!("a text frame");
        };
        let f: ServerFrame = serde_json::from_str(t.as_str()).unwrap();
        let ServerFrame::Records {
            id,
            topic,
            partition,
            next_offset,
            records,
        } = f
        else {
            panic!("a records frame");
        };
        assert_eq!(
            (id.as_str(), topic.as_str(), partition, next_offset),
            ("s\"1", "orders", 2, 5)
        );
        assert_eq!(records[0].offset, 4);
    }
}
