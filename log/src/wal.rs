//! The write-ahead log that makes small commits cheap.
//!
//! A small group made only of appends and offset commits appends the rows it
//! writes to this file as one entry, fsync'd: one sequential write instead of
//! redb's scattered pages. Its callers are answered after that. Its record batches
//! and partition rows stay in memory ([`crate::pending`]) until they add up to
//! enough to go to redb together, in a commit without an fsync
//! (`Durability::None`); its dedupe rows and committed offsets go to redb that way
//! at once. Every so often, and before anything else, a group is committed durably
//! (a checkpoint), which makes every earlier entry redundant; the file is then
//! started over.
//!
//! After a crash redb comes back at its last durable commit, which records the
//! sequence number of the last entry it holds (`meta.wal_seq`); opening the log
//! writes the rows of every later entry again, in order, and stops at the first
//! entry that is torn (its length or checksum does not hold): that one was never
//! acknowledged.
//!
//! The file is written over from its start after each checkpoint rather than
//! truncated, and it is filled with zeros to [`PREALLOCATED`] bytes when created, so
//! an entry's fsync only flushes data: growing a file makes every fsync commit the
//! filesystem's journal too, which costs about as much again. Entries left over from
//! before a checkpoint are told apart by their sequence numbers: the entries of one
//! round are numbered consecutively from the file's start, so reading stops at the
//! first entry whose number does not follow its predecessor's.
//!
//! Entry: `magic u32 | payload length u32 | crc32 of (seq, payload) u32 | seq u64 |
//! payload`, integers little-endian. Payload: puts, each a tag byte and its fields.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use redb::WriteTransaction;

use crate::error::Result;
use crate::record::Reader;
use crate::schema::{DEDUPE, DEDUPE_EXPIRY, GROUP_OFFSETS, PARTITIONS, RECORDS};

pub(crate) const WAL_FILE: &str = "sluice.wal";
const MAGIC: u32 = 0x4c41_5753; // "SWAL"
const HEADER: usize = 20;
/// The size the file is filled to when created. It grows past this (and stays
/// grown) when the entries between two checkpoints need more.
pub(crate) const PREALLOCATED: u64 = 4 << 20;

/// One row written by a group, to be written again on recovery. Every put is an
/// insert that overwrites: replaying one twice gives the same table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Put {
    Record {
        key: u128,
        value: Arc<Vec<u8>>,
    },
    Partition {
        key: u64,
        state: (u64, u64, u64),
    },
    Dedupe {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DedupeExpiry {
        at: u64,
        key: Vec<u8>,
    },
    GroupOffset {
        group: String,
        topic_id: u64,
        partition: u32,
        offset: u64,
    },
}

/// A whole entry read back: its sequence number and rows.
pub(crate) type Entry = (u64, Vec<Put>);

pub(crate) struct Wal {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the file in `dir` and reads its whole entries, in order,
    /// up to the first torn or left-over one.
    pub(crate) fn open(dir: &Path) -> Result<(Wal, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(WAL_FILE))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut at = 0usize;
        while let Some((seq, puts, next)) = parse_entry(&bytes, at) {
            if entries.last().is_some_and(|(prev, _)| seq != prev + 1) {
                break;
            }
            entries.push((seq, puts));
            at = next;
        }
        if (bytes.len() as u64) < PREALLOCATED {
            // Zeros, really written: blocks merely reserved would still need the
            // journal on their first write.
            let zeros = vec![0u8; 1 << 20];
            let mut size = bytes.len() as u64;
            while size < PREALLOCATED {
                let n = zeros.len().min((PREALLOCATED - size) as usize);
                file.write_all(&zeros[..n])?;
                size += n as u64;
            }
            file.sync_all()?;
            // The file's name too, when it was just created.
            File::open(dir)?.sync_all()?;
        }
        file.seek(SeekFrom::Start(at as u64))?;
        Ok((
            Wal {
                file,
                len: at as u64,
                buf: Vec::new(),
            },
            entries,
        ))
    }

    /// Bytes written since the file was last started over.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one entry and makes it durable.
    pub(crate) fn append(&mut self, seq: u64, puts: &[Put]) -> std::io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER]);
        for p in puts {
            encode_put(&mut self.buf, p);
        }
        let payload_len = (self.buf.len() - HEADER) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&self.buf[HEADER..]);
        self.buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        self.buf[4..8].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        self.buf[12..20].copy_from_slice(&seq.to_le_bytes());
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.len += self.buf.len() as u64;
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Starts the file over, once a durable commit holds everything in it. Not
    /// synced: entries that survive a crash are skipped by their sequence number.
    pub(crate) fn reset(&mut self) -> std::io::Result<()> {
        if self.len > 0 {
            self.file.seek(SeekFrom::Start(0))?;
            self.len = 0;
        }
        Ok(())
    }
}

/// Writes `puts` into `txn`, opening each table once.
pub(crate) fn replay(txn: &WriteTransaction, puts: &[Put]) -> Result<()> {
    let mut records = None;
    let mut partitions = None;
    let mut dedupe = None;
    let mut expiry = None;
    let mut offsets = None;
    for p in puts {
        match p {
            Put::Record { key, value } => {
                opened(&mut records, || txn.open_table(RECORDS))?.insert(*key, value.as_slice())?;
            }
            Put::Partition { key, state } => {
                opened(&mut partitions, || txn.open_table(PARTITIONS))?.insert(*key, *state)?;
            }
            Put::Dedupe { key, value } => {
                opened(&mut dedupe, || txn.open_table(DEDUPE))?
                    .insert(key.as_slice(), value.as_slice())?;
            }
            Put::DedupeExpiry { at, key } => {
                opened(&mut expiry, || txn.open_table(DEDUPE_EXPIRY))?
                    .insert((*at, key.as_slice()), ())?;
            }
            Put::GroupOffset {
                group,
                topic_id,
                partition,
                offset,
            } => {
                opened(&mut offsets, || txn.open_table(GROUP_OFFSETS))?
                    .insert((group.as_str(), *topic_id, *partition), *offset)?;
            }
        }
    }
    Ok(())
}

/// The table in `slot`, opened on first use.
fn opened<T>(
    slot: &mut Option<T>,
    open: impl FnOnce() -> std::result::Result<T, redb::TableError>,
) -> Result<&mut T> {
    if slot.is_none() {
        *slot = Some(open()?);
    }
    Ok(slot.as_mut().expect("just opened"))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_put(out: &mut Vec<u8>, p: &Put) {
    match p {
        Put::Record { key, value } => {
            out.push(1);
            out.extend_from_slice(&key.to_le_bytes());
            put_bytes(out, value);
        }
        Put::Partition { key, state } => {
            out.push(2);
            out.extend_from_slice(&key.to_le_bytes());
            for v in [state.0, state.1, state.2] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Put::Dedupe { key, value } => {
            out.push(3);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        Put::DedupeExpiry { at, key } => {
            out.push(4);
            out.extend_from_slice(&at.to_le_bytes());
            put_bytes(out, key);
        }
        Put::GroupOffset {
            group,
            topic_id,
            partition,
            offset,
        } => {
            out.push(5);
            put_bytes(out, group.as_bytes());
            out.extend_from_slice(&topic_id.to_le_bytes());
            out.extend_from_slice(&partition.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
}

/// The entry at `at`: its sequence number, puts and the offset after it; `None` at
/// the end or at a torn or foreign entry.
fn parse_entry(bytes: &[u8], at: usize) -> Option<(u64, Vec<Put>, usize)> {
    let mut c = Reader(bytes.get(at..)?);
    if c.u32()? != MAGIC {
        return None;
    }
    let len = c.u32()? as usize;
    let crc = c.u32()?;
    let seq = c.u64()?;
    let payload = c.take(len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    if h.finalize() != crc {
        return None;
    }
    let mut p = Reader(payload);
    let mut puts = Vec::new();
    while !p.0.is_empty() {
        let put = match p.take(1)?[0] {
            1 => Put::Record {
                key: p.u128()?,
                value: Arc::new(p.bytes()?.to_vec()),
            },
            2 => Put::Partition {
                key: p.u64()?,
                state: (p.u64()?, p.u64()?, p.u64()?),
            },
            3 => Put::Dedupe {
                key: p.bytes()?.to_vec(),
                value: p.bytes()?.to_vec(),
            },
            4 => Put::DedupeExpiry {
                at: p.u64()?,
                key: p.bytes()?.to_vec(),
            },
            5 => Put::GroupOffset {
                group: String::from_utf8(p.bytes()?.to_vec()).ok()?,
                topic_id: p.u64()?,
                partition: p.u32()?,
                offset: p.u64()?,
            },
            _ => return None,
        };
        puts.push(put);
    }
    Some((seq, puts, at + HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let puts = vec![
            Put::Record {
                key: 7 << 64 | 3,
                value: Arc::new(b"batch".to_vec()),
            },
            Put::Partition {
                key: 7,
                state: (0, 4, 5),
            },
            Put::Dedupe {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Put::DedupeExpiry {
                at: 9,
                key: b"k".to_vec(),
            },
            Put::GroupOffset {
                group: "g".into(),
                topic_id: 1,
                partition: 2,
                offset: 3,
            },
        ];
        let written = {
            let (mut wal, entries) = Wal::open(dir.path()).unwrap();
            assert!(entries.is_empty());
            wal.append(1, &puts).unwrap();
            wal.append(2, &puts[..1]).unwrap();
            wal.len() as usize
        };
        // A torn third entry: its header and half its payload.
        let path = dir.path().join(WAL_FILE);
        let whole = std::fs::read(&path).unwrap()[..written].to_vec();
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..HEADER + 3]);
        std::fs::write(&path, &torn).unwrap();
        let (wal, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![(1, puts.clone()), (2, puts[..1].to_vec())]);
        assert_eq!(wal.len(), whole.len() as u64);
        assert!(std::fs::metadata(&path).unwrap().len() >= PREALLOCATED);
        // A flipped byte ends the readable entries there.
        let mut bad = whole.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![(1, puts)]);
    }

    #[test]
    fn entries_left_from_before_a_reset_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let put = |n: u8| Put::Record {
            key: 1,
            value: Arc::new(vec![n; 10]),
        };
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            for seq in 1..=3 {
                wal.append(seq, &[put(seq as u8)]).unwrap();
            }
            wal.reset().unwrap();
            // The same size as the first entry: the old second one follows it whole.
            wal.append(4, &[put(4)]).unwrap();
        }
        let (mut wal, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![(4, vec![put(4)])]);
        // Appending continues after the last entry read.
        wal.append(5, &[put(5)]).unwrap();
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![(4, vec![put(4)]), (5, vec![put(5)])]);
    }
}
