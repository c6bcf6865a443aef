//! Following a topic's partitions from positions, for every kind of subscriber
//! (WebSocket topic subscriptions, server-sent events): the next chunk of records
//! from the shared tail cache, word when retention passed a reader, and a wait for
//! appends once every partition is caught up.

use std::sync::Arc;

use sluice_log::Topic;
use tokio::sync::watch;

use crate::state::AppState;
use crate::stream::tail::Chunk;

/// What a follower found.
pub(crate) enum Found {
    /// Records of a partition; the position moved past them.
    Records { partition: u32, chunk: Chunk },
    /// Retention deleted `[from, to)` of a partition before they were read; the
    /// position moved to `to`.
    Deleted { partition: u32, from: u64, to: u64 },
}

/// A reader of several partitions of one topic, each from its own position.
pub(crate) struct Follower {
    topic: Arc<Topic>,
    positions: Vec<(u32, u64)>,
    /// The partition to look at first next time, so none starves the others.
    turn: usize,
    appended: watch::Receiver<u64>,
}

impl Follower {
    /// A follower of `positions` (partition, next offset to read).
    pub(crate) fn new(state: &AppState, topic: Arc<Topic>, positions: Vec<(u32, u64)>) -> Self {
        Follower {
            appended: state.waiters.subscribe_topic(topic.id()),
            topic,
            positions,
            turn: 0,
        }
    }

    /// The next chunk of some partition with records past its position, taking the
    /// partitions in turn; `None` when every partition is caught up (then [`wait`]).
    ///
    /// [`wait`]: Follower::wait
    pub(crate) async fn next(
        &mut self,
        state: &AppState,
    ) -> Result<Option<Found>, sluice_log::Error> {
        // Appends from here on wake the next wait, even if this look finds nothing.
        self.appended.borrow_and_update();
        let n = self.positions.len();
        for _ in 0..n {
            let i = self.turn;
            self.turn = (i + 1) % n;
            let (p, pos) = self.positions[i];
            let Some(info) = self.topic.partition(p) else {
                continue;
            };
            if pos >= info.end_offset {
                continue;
            }
            match state.tail.read(&state.log, &self.topic, p, pos).await {
                Ok(chunk) if chunk.next > chunk.first => {
                    self.positions[i].1 = chunk.next;
                    state.stats.delivered(
                        self.topic.name(),
                        chunk.next - chunk.first,
                        chunk.json.len() as u64,
                    );
                    return Ok(Some(Found::Records {
                        partition: p,
                        chunk,
                    }));
                }
                Ok(_) => {}
                Err(sluice_log::Error::OffsetOutOfRange { start, .. }) if pos < start => {
                    self.positions[i].1 = start;
                    return Ok(Some(Found::Deleted {
                        partition: p,
                        from: pos,
                        to: start,
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Waits until a partition of the topic grows; `false` when no append can come
    /// any more (the server is closing).
    pub(crate) async fn wait(&mut self) -> bool {
        self.appended.changed().await.is_ok()
    }
}
