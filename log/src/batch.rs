//! A record batch: the value of one row of the `records` table, holding the records
//! of consecutive offsets of one partition, keyed by the first offset.
//!
//! Layout, integers little-endian:
//!
//! | field   | size        | meaning                                               |
//! |---------|-------------|-------------------------------------------------------|
//! | count   | 4           | number of records                                     |
//! | ends    | 4 × count   | end of record i within the records area               |
//! | records | rest        | the records back to back, each in [`crate::record`]'s format |
//!
//! Storing a batch per row rather than a record per row makes an append of many
//! small records a few large page writes instead of one B-tree entry each, and lets
//! a fetch find its starting record with one lookup and then read contiguous pages.

/// Largest batch value the writer builds; bigger groups are split. redb stores a
/// large value in a leaf of a power-of-two number of pages, so a batch stops short
/// of 64 KiB by room for the leaf's header and key: a batch of 64 KiB and a byte
/// would take a 128 KiB leaf. Small enough that a fetch starting mid-batch reads
/// little it does not return.
pub(crate) const TARGET_BATCH_BYTES: usize = 16 * 1024 - 256;

/// Bytes a record adds to a batch value: itself and its index entry.
pub(crate) fn cost(record_len: usize) -> usize {
    record_len + 4
}

/// Encodes records (already in the record format) into one batch value.
pub(crate) fn encode<'a>(records: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let count = records.len();
    let total: usize = records.clone().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(4 + 4 * count + total);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    let mut end = 0u32;
    for r in records.clone() {
        end += r.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// The record count of a batch this process encoded, read without checking the rest.
pub(crate) fn count(bytes: &[u8]) -> usize {
    bytes
        .get(..4)
        .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
}

/// A decoded view of a batch value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a> {
    ends: &'a [u8],
    area: &'a [u8],
}

impl<'a> Batch<'a> {
    /// `None` when the bytes are not a well-formed batch.
    pub(crate) fn parse(bytes: &'a [u8]) -> Option<Self> {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let index_end = 4usize.checked_add(count.checked_mul(4)?)?;
        let ends = bytes.get(4..index_end)?;
        let area = &bytes[index_end..];
        let b = Batch { ends, area };
        // Ends must be non-decreasing and the last must close the area.
        let mut prev = 0;
        for i in 0..count {
            let e = b.end(i);
            if e < prev {
                return None;
            }
            prev = e;
        }
        (prev == area.len()).then_some(b)
    }

    fn end(&self, i: usize) -> usize {
        let c = &self.ends[i * 4..i * 4 + 4];
        u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.ends.len() / 4
    }

    /// The stored bytes of record `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        self.area.get(start..self.end(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let recs: Vec<&[u8]> = vec![b"abc", b"", b"defg"];
        let bytes = encode(recs.iter().copied());
        let b = Batch::parse(&bytes).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(0), Some(&b"abc"[..]));
        assert_eq!(b.get(1), Some(&b""[..]));
        assert_eq!(b.get(2), Some(&b"defg"[..]));
        assert_eq!(b.get(3), None);
        for cut in 0..bytes.len() {
            assert!(Batch::parse(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        assert!(Batch::parse(&[255, 255, 255, 255]).is_none());
    }
}
