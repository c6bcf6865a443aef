//! Per-principal rate limits: requests per second and produced records per second,
//! each a token bucket holding one second's worth. Over the limit, a request gets
//! 429 problem+json with `Retry-After`. Without auth the principal is the client's
//! address: the peer's, or, behind a trusted reverse proxy, the one its
//! `Forwarded` / `X-Forwarded-For` header names.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The longest a request body waits for room in the in-flight budget.
pub(crate) const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Limits the handlers check.
pub(crate) struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Request bodies being read or handled at once, in KiB.
    in_flight: Arc<Semaphore>,
    in_flight_kib: u32,
    requests: Option<DefaultKeyedRateLimiter<String>>,
    records: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// Peers whose forwarding headers are believed.
    trusted_proxies: Vec<ipnet::IpNet>,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Limits {
    /// `(requests, records)` per second; `0` turns a rate limit off.
    pub(crate) fn new(
        max_body_bytes: usize,
        in_flight_bytes: usize,
        (requests_per_second, records_per_second): (u32, u32),
        trusted_proxies: Vec<ipnet::IpNet>,
    ) -> Self {
        let in_flight_kib = (in_flight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS) as u32;
        Limits {
            max_body_bytes,
            in_flight: Arc::new(Semaphore::new(in_flight_kib as usize)),
            in_flight_kib,
            requests: limiter(requests_per_second),
            records: limiter(records_per_second),
            clock: DefaultClock::default(),
            trusted_proxies,
        }
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then
    /// the nearest address its forwarding header names that is not itself a
    /// trusted proxy (addresses further left could be made up by the client).
    /// `Forwarded` (RFC 7239) is read before `X-Forwarded-For`.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        // Nearest last; `None` for an entry that names no address.
        let hops: Vec<Option<IpAddr>> = if headers.contains_key(header::FORWARDED) {
            headers
                .get_all(header::FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(forwarded_for)
                .collect()
        } else {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|a| a.trim().parse().ok())
                .collect()
        };
        let mut client = peer;
        // Past an entry that names no address, nothing further left can be trusted.
        for hop in hops.into_iter().rev() {
            let Some(hop) = hop else { break };
            client = hop;
            if !trusted(&hop) {
                break;
            }
        }
        client
    }

    /// Grows `held` to cover `bytes` of a body received so far, waiting for room
    /// within the in-flight budget. A body never holds more than the whole budget,
    /// so one at the limit can always be read. Bodies that each hold part of the
    /// budget and all wait for more would wait for each other forever, so a wait is
    /// bounded: past [`BODY_BUDGET_WAIT`] the request is refused with 429, its share
    /// goes back, and the others go on.
    pub(crate) async fn hold_body(
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
    pub(crate) fn rate_limited(&self) -> bool {
        self.requests.is_some() || self.records.is_some()
    }

    /// Counts one request of `key`.
    pub(crate) fn check_requests(&self, key: &str) -> Result<(), ApiError> {
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
    pub(crate) fn check_records(&self, key: &str, n: usize) -> Result<(), ApiError> {
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
    pub(crate) fn forget_idle(&self) {
        for l in [&self.requests, &self.records].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The address of one element of a `Forwarded` header: its `for=` parameter, an
/// IPv4 address or a quoted `"[IPv6]"`, either with an optional port. Obfuscated
/// identifiers and `unknown` name no address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let value = value.trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.rsplit_once(':')?.0.parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        Limits::new(
            1024,
            1024,
            (1, 1),
            trusted.iter().map(|n| n.parse().unwrap()).collect(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_client_is_the_nearest_address_no_trusted_proxy_added() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.0.0.5");
        let l = limits(&["10.0.0.0/24", "192.168.1.1/32"]);
        for (h, want) in [
            (vec![], "10.0.0.5"),
            (vec![("x-forwarded-for", "203.0.113.7")], "203.0.113.7"),
            // The client made up the first entry; the proxy appended the second.
            (
                vec![("x-forwarded-for", "1.1.1.1, 203.0.113.7")],
                "203.0.113.7",
            ),
            (
                vec![("x-forwarded-for", "203.0.113.7, 192.168.1.1")],
                "203.0.113.7",
            ),
            (
                vec![
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-forwarded-for", "10.0.0.9"),
                ],
                "203.0.113.7",
            ),
            (vec![("x-forwarded-for", "garbage")], "10.0.0.5"),
            (
                vec![("forwarded", "for=198.51.100.17;proto=https")],
                "198.51.100.17",
            ),
            (
                vec![("forwarded", "for=\"[2001:db8::1]:4711\"")],
                "2001:db8::1",
            ),
            (
                vec![("forwarded", "for=198.51.100.17:8080, for=10.0.0.7")],
                "198.51.100.17",
            ),
            (vec![("forwarded", "for=unknown")], "10.0.0.5"),
            // What stands left of an entry the proxy could not name is not believed.
            (
                vec![("forwarded", "for=198.51.100.17, for=unknown")],
                "10.0.0.5",
            ),
            (
                vec![("x-forwarded-for", "198.51.100.17, garbage")],
                "10.0.0.5",
            ),
            // Forwarded wins over X-Forwarded-For.
            (
                vec![
                    ("forwarded", "for=198.51.100.17"),
                    ("x-forwarded-for", "203.0.113.7"),
                ],
                "198.51.100.17",
            ),
        ] {
            assert_eq!(l.client_ip(proxy, &headers(&h)), ip(want), "{h:?}");
        }
        // From a peer that is not a trusted proxy, the headers are ignored.
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(l.client_ip(ip("8.8.8.8"), &h), ip("8.8.8.8"));
        assert_eq!(limits(&[]).client_ip(proxy, &h), proxy);
    }
}
