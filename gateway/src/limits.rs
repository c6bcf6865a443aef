//! Per-principal rate limits: requests per second and produced records per second,
//! each a token bucket holding one second's worth. Over the limit, a request gets
//! 429 problem+json with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The longest a request body waits for room in the in-flight budget.
pub const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Limits the handlers check.
pub struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Request bodies being read or handled at once, in KiB.
    in_flight: Arc<Semaphore>,
    in_flight_kib: u32,
    requests: Option<DefaultKeyedRateLimiter<String>>,
    records: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Limits {
    /// `0` turns a rate limit off.
    pub fn new(
        max_body_bytes: usize,
        in_flight_bytes: usize,
        requests_per_second: u32,
        records_per_second: u32,
    ) -> Self {
        let in_flight_kib = (in_flight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS) as u32;
        Limits {
            max_body_bytes,
            in_flight: Arc::new(Semaphore::new(in_flight_kib as usize)),
            in_flight_kib,
            requests: limiter(requests_per_second),
            records: limiter(records_per_second),
            clock: DefaultClock::default(),
        }
    }

    /// Grows `held` to cover `bytes` of a body received so far, waiting for room
    /// within the in-flight budget. A body never holds more than the whole budget,
    /// so one at the limit can always be read. Bodies that each hold part of the
    /// budget and all wait for more would wait for each other forever, so a wait is
    /// bounded: past [`BODY_BUDGET_WAIT`] the request is refused with 429, its share
    /// goes back, and the others go on.
    pub async fn hold_body(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        bytes: usize,
    ) -> Result<(), ApiError> {
        let want = (bytes.div_ceil(1024) as u32).clamp(1, self.in_flight_kib);
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= have {
            return Ok(());
        }
        let more = self.in_flight.clone().acquire_many_owned(want - have);
        match tokio::time::timeout(BODY_BUDGET_WAIT, more).await {
            Ok(Ok(more)) => {
                match held {
                    Some(p) => p.merge(more),
                    None => *held = Some(more),
                }
                Ok(())
            }
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "too many request bodies are being received at once \
                     (--max-inflight-body-mb); retry later",
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// Whether any per-principal rate limit is on (and so needs a principal's key).
    pub fn rate_limited(&self) -> bool {
        self.requests.is_some() || self.records.is_some()
    }

    /// Counts one request of `key`.
    pub fn check_requests(&self, key: &str) -> Result<(), ApiError> {
        let Some(l) = &self.requests else {
            return Ok(());
        };
        l.check_key(&key.to_string()).map_err(|not_until| {
            too_many(
                "requests",
                not_until.wait_time_from(self.clock.now()).as_secs_f64(),
            )
        })
    }

    /// Counts `n` produced records of `key`.
    pub fn check_records(&self, key: &str, n: usize) -> Result<(), ApiError> {
        let (Some(l), Some(n)) = (
            &self.records,
            NonZeroU32::new(n.min(u32::MAX as usize) as u32),
        ) else {
            return Ok(());
        };
        match l.check_key_n(&key.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(too_many(
                "records",
                not_until.wait_time_from(self.clock.now()).as_secs_f64(),
            )),
            Err(_) => Err(too_many("records", 1.0)),
        }
    }

    /// Forgets principals that are back to a full bucket, so the tables stay small.
    pub fn forget_idle(&self) {
        for l in [&self.requests, &self.records].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn too_many(what: &str, wait_secs: f64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} per second for this principal; retry later"),
    );
    e.retry_after = Some(wait_secs.ceil().max(1.0) as u64);
    e
}
