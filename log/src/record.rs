//! The stored form of one record, the value of a row in the `records` table.
//!
//! Layout, all integers little-endian:
//!
//! | field        | size           | meaning                                         |
//! |--------------|----------------|-------------------------------------------------|
//! | timestamp    | 8              | milliseconds since the Unix epoch               |
//! | flags        | 1              | bits 0-1: value kind (0 null, 1 JSON, 2 binary); bit 2: has key |
//! | key length   | 4 (if has key) | length of the key bytes                         |
//! | key          | key length     | UTF-8 key                                       |
//! | header count | 2              | number of headers                               |
//! | per header   | 2 + n + 4 + m  | name length, name, value length, value (UTF-8)  |
//! | value        | rest           | JSON text, or raw bytes for binary values       |
//!
//! JSON values are kept as the producer's JSON text so a fetch copies them into the
//! response without parsing them again.

/// What kind of value a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A tombstone: `"value": null`.
    Null,
    /// JSON text.
    Json,
    /// Opaque bytes (`value_base64` on the wire).
    Binary,
}

const HAS_KEY: u8 = 0b100;
const KIND_MASK: u8 = 0b11;

/// A borrowed view of a record to be encoded.
#[derive(Debug, Clone, Copy)]
pub struct RecordParts<'a> {
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Optional key.
    pub key: Option<&'a str>,
    /// Headers, in order.
    pub headers: &'a [(String, String)],
    /// Value kind.
    pub kind: ValueKind,
    /// Value bytes: JSON text for `Json`, raw bytes for `Binary`, empty for `Null`.
    pub value: &'a [u8],
}

impl RecordParts<'_> {
    /// Encodes the record into its stored form.
    ///
    /// Header names longer than 65,535 bytes or more than 65,535 headers are the
    /// caller's to refuse; see [`RecordParts::check`].
    pub fn encode(&self) -> Vec<u8> {
        let mut len = 8 + 1 + 2 + self.value.len();
        if let Some(k) = self.key {
            len += 4 + k.len();
        }
        for (n, v) in self.headers {
            len += 2 + n.len() + 4 + v.len();
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        let kind = match self.kind {
            ValueKind::Null => 0,
            ValueKind::Json => 1,
            ValueKind::Binary => 2,
        };
        out.push(kind | if self.key.is_some() { HAS_KEY } else { 0 });
        if let Some(k) = self.key {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
        }
        out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (n, v) in self.headers {
            out.extend_from_slice(&(n.len() as u16).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(self.value);
        out
    }

    /// Returns why the record cannot be stored, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.headers.len() > u16::MAX as usize {
            return Err(format!("at most {} headers per record", u16::MAX));
        }
        for (n, v) in self.headers {
            if n.len() > u16::MAX as usize {
                return Err("a header name is longer than 65535 bytes".into());
            }
            if v.len() > u32::MAX as usize {
                return Err("a header value is too long".into());
            }
        }
        Ok(())
    }
}

/// A decoded view of a stored record, borrowing the stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Optional key.
    pub key: Option<&'a str>,
    headers: &'a [u8],
    header_count: u16,
    /// Value kind.
    pub kind: ValueKind,
    /// Value bytes.
    pub value: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// A record without headers, borrowed from its parts (for engines that hold
    /// records in another form).
    pub fn plain(timestamp: u64, key: Option<&'a str>, kind: ValueKind, value: &'a [u8]) -> Self {
        RecordView {
            timestamp,
            key,
            headers: &[],
            header_count: 0,
            kind,
            value,
        }
    }

    /// Decodes a stored record; `None` when the bytes are not a valid record.
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let timestamp = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let flags = r.take(1)?[0];
        let kind = match flags & KIND_MASK {
            0 => ValueKind::Null,
            1 => ValueKind::Json,
            2 => ValueKind::Binary,
            _ => return None,
        };
        let key = if flags & HAS_KEY != 0 {
            let n = r.u32()? as usize;
            Some(std::str::from_utf8(r.take(n)?).ok()?)
        } else {
            None
        };
        let header_count = r.u16()?;
        let headers_start = r.0;
        for _ in 0..header_count {
            let n = r.u16()? as usize;
            std::str::from_utf8(r.take(n)?).ok()?;
            let m = r.u32()? as usize;
            std::str::from_utf8(r.take(m)?).ok()?;
        }
        let headers = &headers_start[..headers_start.len() - r.0.len()];
        Some(RecordView {
            timestamp,
            key,
            headers,
            header_count,
            kind,
            value: r.0,
        })
    }

    /// The record's headers, in the order they were produced.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let mut r = Reader(self.headers);
        (0..self.header_count).map_while(move |_| {
            // Validated in `decode`, so these never fail.
            let n = r.u16()? as usize;
            let name = std::str::from_utf8(r.take(n)?).ok()?;
            let m = r.u32()? as usize;
            let value = std::str::from_utf8(r.take(m)?).ok()?;
            Some((name, value))
        })
    }

    /// Whether the record has any headers.
    pub fn has_headers(&self) -> bool {
        self.header_count > 0
    }
}

/// Reads little-endian integers and length-prefixed byte strings off a buffer;
/// `None` when it runs out.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    /// A byte string behind its u32 length.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let headers = vec![("a".to_string(), "1".to_string()), ("bé".into(), "".into())];
        let parts = RecordParts {
            timestamp: 1_764_000_000_000,
            key: Some("c-42"),
            headers: &headers,
            kind: ValueKind::Json,
            value: br#"{"x":1}"#,
        };
        let bytes = parts.encode();
        let v = RecordView::decode(&bytes).expect("decodes");
        assert_eq!(v.timestamp, 1_764_000_000_000);
        assert_eq!(v.key, Some("c-42"));
        assert_eq!(v.kind, ValueKind::Json);
        assert_eq!(v.value, br#"{"x":1}"#);
        let hs: Vec<_> = v.headers().collect();
        assert_eq!(hs, vec![("a", "1"), ("bé", "")]);
    }

    #[test]
    fn truncated_bytes_do_not_decode() {
        let headers = vec![("h".to_string(), "v".to_string())];
        let bytes = RecordParts {
            timestamp: 1,
            key: Some("k"),
            headers: &headers,
            kind: ValueKind::Binary,
            value: b"",
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(RecordView::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }
}
