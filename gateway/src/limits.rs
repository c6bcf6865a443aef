//! Per-principal rate limits: requests per second and produced records per second,
//! each a token bucket holding one second's worth. Over the limit, a request gets
//! 429 problem+json with `Retry-After`.

use std::num::NonZeroU32;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Limits the handlers check.
pub struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    requests: Option<DefaultKeyedRateLimiter<String>>,
    records: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Limits {
    /// `0` turns a rate limit off.
    pub fn new(max_body_bytes: usize, requests_per_second: u32, records_per_second: u32) -> Self {
        Limits {
            max_body_bytes,
            requests: limiter(requests_per_second),
            records: limiter(records_per_second),
            clock: DefaultClock::default(),
        }
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
