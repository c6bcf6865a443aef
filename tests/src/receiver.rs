//! A webhook receiver for sink tests and the benchmark: a real HTTP server on a
//! free loopback port that records every request it gets and answers as it is
//! told (2xx, scripted statuses, random 5xx and hangs, 422 for one key).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub partition: u32,
    /// First offset it carried.
    pub offset: u64,
    pub records: u32,
    pub attempt: u32,
    pub key: Option<String>,
    pub content_type: String,
    pub body: Bytes,
    /// The status it was answered with.
    pub status: u16,
    /// When it arrived, in microseconds since the epoch.
    pub at_us: u64,
    /// Every header, by lower-case name.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Answers given first, in order: status and `Retry-After`.
    pub script: VecDeque<(u16, Option<String>)>,
    /// Every other request's status (200 when `None`).
    pub status: Option<u16>,
    /// Share of requests answered 503.
    pub fail_rate: f64,
    /// Share of requests that hang for `hang` before answering 200.
    pub hang_rate: f64,
    pub hang: Duration,
    /// Requests of records with this key are answered 422.
    pub refuse_key: Option<String>,
    /// Requests whose body holds this text are answered 422.
    pub refuse_marker: Option<String>,
    /// Don't record requests (for the benchmark).
    pub quiet: bool,
}

struct Shared {
    behavior: Mutex<Behavior>,
    got: Mutex<Vec<Received>>,
    count: std::sync::atomic::AtomicU64,
    /// Records of the requests answered 2xx.
    records: std::sync::atomic::AtomicU64,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn hook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = headers
        .get("sluice-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, retry_after, hang, quiet) = {
        let mut b = s.behavior.lock().unwrap();
        let quiet = b.quiet;
        if let Some((st, ra)) = b.script.pop_front() {
            (st, ra, None, quiet)
        } else if (b.refuse_key.is_some() && b.refuse_key == key)
            || b.refuse_marker
                .as_ref()
                .is_some_and(|m| body.windows(m.len()).any(|w| w == m.as_bytes()))
        {
            (422, None, None, quiet)
        } else {
            let mut rng = rand::rng();
            if b.fail_rate > 0.0 && rng.random_bool(b.fail_rate) {
                (503, None, None, quiet)
            } else if b.hang_rate > 0.0 && rng.random_bool(b.hang_rate) {
                (200, None, Some(b.hang), quiet)
            } else {
                (b.status.unwrap_or(200), None, None, quiet)
            }
        }
    };
    if let Some(h) = hang {
        tokio::time::sleep(h).await;
        // The sender gave up by now: recorded as a request that failed.
        let mut r = record(&headers, body, 0, key);
        r.status = 0;
        if !quiet {
            s.got.lock().unwrap().push(r);
        }
        return StatusCode::OK.into_response();
    }
    if (200..300).contains(&status) {
        let n = header(&headers, "sluice-records").parse().unwrap_or(1);
        s.records.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    if !quiet {
        let r = record(&headers, body, status, key);
        s.got.lock().unwrap().push(r);
    }
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        format!("answered {status}"),
    )
        .into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_str(&ra).unwrap());
    }
    resp
}

fn record(headers: &HeaderMap, body: Bytes, status: u16, key: Option<String>) -> Received {
    let num = |n: &str| header(headers, n).parse().unwrap_or(0);
    Received {
        webhook_id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
        partition: num("sluice-partition") as u32,
        offset: num("sluice-offset"),
        records: num("sluice-records") as u32,
        attempt: num("sluice-attempt") as u32,
        key,
        content_type: header(headers, "content-type"),
        body,
        status,
        at_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }
}

impl Receiver {
    /// Starts a receiver answering 200 to every request, at `/hook`.
    pub async fn start() -> Receiver {
        Self::start_with(Behavior::default()).await
    }

    pub async fn start_with(behavior: Behavior) -> Receiver {
        let shared = Arc::new(Shared {
            behavior: Mutex::new(behavior),
            got: Mutex::new(Vec::new()),
            count: Default::default(),
            records: Default::default(),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            shared,
            stop: Some(tx),
        }
    }

    /// Changes how it answers from now on.
    pub fn set(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.shared.behavior.lock().unwrap());
    }

    /// Every request so far.
    pub fn got(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Requests so far, recorded or not.
    pub fn count(&self) -> u64 {
        self.shared.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records of the requests answered 2xx so far.
    pub fn records(&self) -> u64 {
        self.shared
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to `limit`) until `done` holds of the requests so far.
    pub async fn until(
        &self,
        limit: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = std::time::Instant::now();
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            assert!(
                start.elapsed() < limit,
                "the receiver did not get what was expected within {limit:?}; it got {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
