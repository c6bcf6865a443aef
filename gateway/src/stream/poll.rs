//! A long poll: answer at once when there is something, else wait for what could
//! bring something (an append, a rebalance) until a deadline, then answer anyway.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A long poll's deadline and the signal it waits on.
pub(crate) struct LongPoll {
    deadline: Instant,
    /// `None` once there is no more waiting (none asked for, or out of time).
    data: Option<watch::Receiver<u64>>,
}

impl LongPoll {
    /// A poll that waits up to `wait`; `subscribe` is called at once (before the
    /// first read), so an append between a read and the wait still wakes it.
    pub(crate) fn new(wait: Duration, subscribe: impl FnOnce() -> watch::Receiver<u64>) -> Self {
        LongPoll {
            deadline: Instant::now() + wait,
            data: (!wait.is_zero()).then(subscribe),
        }
    }

    /// Whether to answer now whatever was read: no waiting asked for, or the
    /// deadline passed.
    pub(crate) fn done(&self) -> bool {
        self.data.is_none() || Instant::now() >= self.deadline
    }

    /// Waits for data, for `also` to change, or for the deadline; after the
    /// deadline the caller reads once more and answers.
    pub(crate) async fn wait(&mut self, also: Option<&mut watch::Receiver<u64>>) {
        let Some(data) = self.data.as_mut() else {
            return;
        };
        let other = async {
            match also {
                Some(w) => {
                    let _ = w.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = data.changed() => {}
            () = other => {}
            () = tokio::time::sleep_until(self.deadline) => self.data = None,
        }
    }
}
