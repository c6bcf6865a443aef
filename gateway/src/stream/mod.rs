//! The streaming layer: everything that reads records out to clients, each piece
//! written once and shared by the handlers.
//!
//! - [`encode`]: a record's wire JSON, and the one read-and-encode every reader uses.
//! - [`tail`]: the shared cache of encoded chunks, so subscribers that follow the
//!   same partition share the reads and encodings of its chunks.
//! - [`follow`]: following partitions from positions (the next chunk, retention
//!   passing a reader, waiting for appends): WebSocket topic subscriptions and
//!   server-sent events.
//! - [`start`]: where a subscription starts (earliest, latest, offsets, a time).
//! - [`poll`]: a long poll against a deadline: fetches and group polls.

pub(crate) mod encode;
pub(crate) mod follow;
pub(crate) mod poll;
pub(crate) mod start;
pub(crate) mod tail;

/// Most records one fetch or poll returns.
pub(crate) const MAX_LIMIT: usize = 10_000;
/// Default records per fetch.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// Default byte budget of a fetch or poll.
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Longest long poll, in milliseconds.
pub(crate) const MAX_WAIT_MS: u64 = 60_000;
/// Largest byte budget of a fetch or poll.
pub(crate) const MAX_MAX_BYTES: usize = 64 * 1024 * 1024;
