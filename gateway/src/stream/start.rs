//! Where a subscription starts, per partition: the first retained record, the end,
//! given offsets, or the first record at or after a time. Given offsets must lie in
//! the retained range; partitions not named start at the end.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_log::Topic;

use crate::error::ApiError;
use crate::state::AppState;

/// A starting point.
pub(crate) enum Start {
    Earliest,
    Latest,
    /// Per partition; the others start at the end.
    Offsets(HashMap<u32, u64>),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(u64),
}

/// The position of each of `partitions` (all of them checked to exist).
pub(crate) async fn resolve(
    state: &AppState,
    topic: &Arc<Topic>,
    partitions: &[u32],
    start: &Start,
) -> Result<Vec<(u32, u64)>, ApiError> {
    let mut out = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let info = topic.partition_checked(p)?;
        let o = match start {
            Start::Latest => info.end_offset,
            Start::Earliest => info.start_offset,
            Start::Offsets(given) => match given.get(&p) {
                Some(&o) if o < info.start_offset || o > info.end_offset => {
                    return Err(sluice_log::Error::OffsetOutOfRange {
                        offset: o,
                        start: info.start_offset,
                        end: info.end_offset,
                    }
                    .into());
                }
                Some(&o) => o,
                None => info.end_offset,
            },
            Start::Timestamp(ts) => {
                let (log, t, ts) = (state.log.clone(), topic.clone(), *ts);
                tokio::task::spawn_blocking(move || log.offset_for_timestamp(&t, p, ts))
                    .await
                    .map_err(|_| ApiError::internal())??
            }
        };
        out.push((p, o));
    }
    Ok(out)
}
