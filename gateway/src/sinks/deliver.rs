//! A sink's requests: records formatted into bodies, the HTTP client that sends
//! them (no redirects followed, answers read up to a small cap, destinations
//! checked against the allow-list on the address actually connected to), and
//! what an answer means for the records ([`sluice_sinks::Outcome`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sluice_log::{RecordView, ValueKind};
use sluice_openapi::{SinkAttempt, SinkFormat};
use sluice_sinks::{Failure, Outcome};

use crate::stream::encode::{push_u64, write_record};

/// Bytes of an answer kept, at most.
const ANSWER_BYTES: usize = 512;

/// One record, formatted for its sink.
#[derive(Debug)]
pub(crate) struct Formatted {
    pub id: String,
    pub key: Option<String>,
    /// The body of a request carrying this record alone; a line of a batch.
    /// Shared, so a request of one record sends it without a copy.
    pub body: bytes::Bytes,
    pub content_type: &'static str,
    /// `ce-*` headers (binary CloudEvents).
    pub ce_headers: Vec<(HeaderName, HeaderValue)>,
}

pub(crate) type Payload = Arc<Formatted>;

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Formats the record at `offset` of `topic`'s `partition`.
pub(crate) fn format(
    format: SinkFormat,
    id: String,
    topic: &str,
    partition: u32,
    offset: u64,
    r: &RecordView<'_>,
) -> Formatted {
    let key = r.key.map(str::to_string);
    let mut body = Vec::with_capacity(r.value.len() + 160);
    let mut content_type = "application/json";
    let mut ce_headers = Vec::new();
    match format {
        SinkFormat::Record => {
            body.extend_from_slice(b"{\"id\":");
            json_str(&mut body, &id);
            body.extend_from_slice(b",\"topic\":");
            json_str(&mut body, topic);
            body.push(b',');
            let start = body.len();
            write_record(&mut body, partition, offset, r);
            // write_record opens its own object: drop its brace.
            body.remove(start);
        }
        SinkFormat::Value => match r.kind {
            ValueKind::Null => body.extend_from_slice(b"null"),
            ValueKind::Json => body.extend_from_slice(r.value),
            ValueKind::Binary => {
                body.extend_from_slice(r.value);
                content_type = "application/octet-stream";
            }
        },
        SinkFormat::Cloudevents => {
            body.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
            json_str(&mut body, &id);
            body.extend_from_slice(b",\"source\":");
            json_str(&mut body, &source(topic));
            body.extend_from_slice(b",\"type\":");
            json_str(&mut body, &ce_type(r));
            body.extend_from_slice(b",\"time\":");
            json_str(&mut body, &rfc3339(r.timestamp));
            if let Some(k) = r.key {
                body.extend_from_slice(b",\"partitionkey\":");
                json_str(&mut body, k);
            }
            body.extend_from_slice(b",\"sequence\":");
            json_str(&mut body, &sequence(offset));
            body.extend_from_slice(b",\"sluicepartition\":");
            push_u64(&mut body, u64::from(partition));
            for (n, v) in extensions(r) {
                body.push(b',');
                json_str(&mut body, n);
                body.push(b':');
                json_str(&mut body, v);
            }
            match r.kind {
                ValueKind::Null => {}
                ValueKind::Json => {
                    body.extend_from_slice(b",\"datacontenttype\":\"application/json\",\"data\":");
                    body.extend_from_slice(r.value);
                }
                ValueKind::Binary => {
                    body.extend_from_slice(b",\"data_base64\":\"");
                    body.extend_from_slice(BASE64.encode(r.value).as_bytes());
                    body.push(b'"');
                }
            }
            body.push(b'}');
            content_type = "application/cloudevents+json";
        }
        SinkFormat::CloudeventsBinary => {
            let mut h = |n: &'static str, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    ce_headers.push((HeaderName::from_static(n), v));
                }
            };
            h("ce-specversion", "1.0");
            h("ce-id", &id);
            h("ce-source", &source(topic));
            h("ce-type", &ce_type(r));
            h("ce-time", &rfc3339(r.timestamp));
            if let Some(k) = r.key {
                h("ce-partitionkey", k);
            }
            h("ce-sequence", &sequence(offset));
            for (n, v) in extensions(r) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(format!("ce-{n}").as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    ce_headers.push((n, v));
                }
            }
            match r.kind {
                ValueKind::Null => {}
                ValueKind::Json => body.extend_from_slice(r.value),
                ValueKind::Binary => {
                    body.extend_from_slice(r.value);
                    content_type = "application/octet-stream";
                }
            }
        }
    }
    Formatted {
        id,
        key,
        body: body.into(),
        content_type,
        ce_headers,
    }
}

fn source(topic: &str) -> String {
    format!("/sluice/topics/{topic}")
}

/// The CloudEvents `sequence`: the offset, zero-padded so that it also sorts
/// as a string.
fn sequence(offset: u64) -> String {
    format!("{offset:020}")
}

/// The type of the event a record holds: its own, when it came in as a
/// CloudEvent.
fn ce_type(r: &RecordView<'_>) -> String {
    r.headers()
        .find(|(n, _)| *n == "ce_type")
        .map_or_else(|| "sluice.record".to_string(), |(_, v)| v.to_string())
}

/// A record's other CloudEvents attributes (`ce_<name>` headers), but those the
/// sink sets itself.
fn extensions<'a>(r: &RecordView<'a>) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
    r.headers().filter_map(|(n, v)| {
        let name = n.strip_prefix("ce_")?;
        (!matches!(
            name,
            "specversion"
                | "id"
                | "source"
                | "type"
                | "time"
                | "partitionkey"
                | "sequence"
                | "datacontenttype"
                | "data"
                | "data_base64"
                | "sluicepartition"
        ))
        .then_some((name, v))
    })
}

/// The body and content type of a request carrying `records`.
pub(crate) fn body(format: SinkFormat, records: &[(u64, Payload)]) -> (bytes::Bytes, &'static str) {
    if let [(_, one)] = records {
        return (one.body.clone(), one.content_type);
    }
    let size: usize = records.iter().map(|(_, r)| r.body.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 2);
    if format == SinkFormat::Cloudevents {
        out.push(b'[');
        for (i, (_, r)) in records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&r.body);
        }
        out.push(b']');
        return (out.into(), "application/cloudevents-batch+json");
    }
    for (_, r) in records {
        if r.content_type == "application/octet-stream" {
            // A binary value in a batch of lines: as a JSON string of base64.
            json_str(&mut out, &BASE64.encode(&r.body));
        } else {
            out.extend_from_slice(&r.body);
        }
        out.push(b'\n');
    }
    (out.into(), "application/x-ndjson")
}

/// Which destinations sinks may reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowList {
    /// Loopback, private and link-local networks allowed.
    pub nets: Vec<ipnet::IpNet>,
}

impl AllowList {
    /// Whether a request may connect to `ip`.
    pub(crate) fn permits(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let metadata = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_multicast()
                    || o == [169, 254, 169, 254]
                    || o == [100, 100, 100, 200]
                    || o == [192, 0, 0, 192]
            }
            IpAddr::V6(v6) => {
                v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
            }
        };
        if metadata {
            return Err(format!("{ip} is never a sink's destination"));
        }
        let special = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                    || o[0] == 0
            }
            IpAddr::V6(v6) => {
                let s = v6.segments()[0];
                v6.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
            }
        };
        if special && !self.nets.iter().any(|n| n.contains(&ip)) {
            return Err(format!(
                "{ip} is a loopback, private or link-local address that --sink-allow-net does not allow"
            ));
        }
        Ok(())
    }

    /// The allowed addresses `host` resolves to; an error naming why none is.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.permits(ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        let mut why = format!("{host} resolves to no address");
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.permits(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    why = format!("{host}: {e}");
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(why);
        }
        Ok(allowed)
    }
}

/// Resolves names for the client through the allow-list, so a request
/// connects only to an allowed address, whatever the name resolved to when
/// the sink was made.
struct Guard(Arc<AllowList>);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            match allow.resolve(name.as_str(), 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// The client every sink sends with.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    pub allow: Arc<AllowList>,
}

impl Client {
    pub(crate) fn new(allow: AllowList) -> anyhow::Result<Client> {
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Guard(allow.clone())))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("Sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, allow })
    }

    /// Checks that `url` may be a sink's destination now.
    pub(crate) async fn check_url(&self, url: &str) -> Result<(), String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("url '{url}': {e}"))?;
        let host = u
            .host_str()
            .ok_or_else(|| format!("url '{url}' has no host"))?;
        let port = u.port_or_known_default().unwrap_or(80);
        self.allow.resolve(host, port).await.map(|_| ())
    }

    /// Sends one request and reads the start of its answer.
    pub(crate) async fn send(&self, req: Request) -> Sent {
        let started = Instant::now();
        let mut sent = Sent {
            outcome: Outcome::Delivered,
            status: None,
            error: None,
            answer: String::new(),
            latency: Duration::ZERO,
        };
        let failed = |message: String| Outcome::Failed {
            failure: Failure {
                status: None,
                message,
                answer: String::new(),
            },
            retry_after_ms: None,
        };
        // An address literal is not resolved, so it is checked here.
        if let Some(host) = req.url.host_str()
            && host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            && let Err(e) = self.allow.resolve(host, 0).await
        {
            sent.error = Some(e.clone());
            sent.outcome = failed(e);
            return sent;
        }
        let answer = self
            .http
            .post(req.url)
            .headers(req.headers)
            .timeout(req.timeout)
            .body(req.body)
            .send()
            .await;
        let mut resp = match answer {
            Ok(r) => r,
            Err(e) => {
                let message = describe(&e);
                sent.latency = started.elapsed();
                sent.error = Some(message.clone());
                sent.outcome = failed(message);
                return sent;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000));
        let mut answer = Vec::new();
        while answer.len() < ANSWER_BYTES {
            match tokio::time::timeout(req.timeout, resp.chunk()).await {
                Ok(Ok(Some(c))) => {
                    answer.extend_from_slice(&c[..c.len().min(ANSWER_BYTES - answer.len())])
                }
                _ => break,
            }
        }
        sent.latency = started.elapsed();
        sent.status = Some(status);
        sent.answer = String::from_utf8_lossy(&answer).into_owned();
        let failure = Failure {
            status: Some(status),
            message: format!("the endpoint answered {status}"),
            answer: sent.answer.clone(),
        };
        sent.outcome = match status {
            200..=299 => Outcome::Delivered,
            400 | 413 | 415 | 422 => Outcome::Refused(failure),
            410 => Outcome::Gone(failure),
            _ => Outcome::Failed {
                failure,
                retry_after_ms: retry_after,
            },
        };
        if !(200..=299).contains(&status) {
            sent.error = Some(format!("the endpoint answered {status}"));
        }
        sent
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A request to send.
pub(crate) struct Request {
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub timeout: Duration,
}

/// What came of a request.
pub(crate) struct Sent {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub answer: String,
    pub latency: Duration,
}

impl Sent {
    pub(crate) fn attempt(
        &self,
        at_ms: u64,
        id: String,
        partition: u32,
        offsets: (u64, u64),
        records: u32,
        attempt: u32,
    ) -> SinkAttempt {
        SinkAttempt {
            at_ms,
            id,
            partition,
            first_offset: offsets.0,
            last_offset: offsets.1,
            records,
            attempt,
            status: self.status,
            error: self.error.clone(),
            latency_ms: self.latency.as_secs_f64() * 1000.0,
            answer: self.answer.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_allow_list() {
        let none = AllowList::default();
        let lo = AllowList {
            nets: vec!["127.0.0.0/8".parse().unwrap()],
        };
        for (ip, by_none, by_lo) in [
            ("93.184.216.34", true, true),
            ("127.0.0.1", false, true),
            ("::ffff:127.0.0.1", false, true),
            ("10.1.2.3", false, false),
            ("169.254.169.254", false, false),
            ("::1", false, false),
            ("fd00:ec2::254", false, false),
            ("0.0.0.0", false, false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(none.permits(ip).is_ok(), by_none, "{ip}");
            assert_eq!(lo.permits(ip).is_ok(), by_lo, "{ip}");
        }
    }
}
