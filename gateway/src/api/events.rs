//! Server-Sent Events: a topic's records as an event stream, for clients without
//! WebSocket. Each record is one event whose `id` is `partition:offset`; a client
//! that reconnects with `Last-Event-ID` resumes that partition right after it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_log::Topic;
use sluice_openapi::Problem;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::api::fetch::write_record;
use crate::api::topic;
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Path, Query};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Where to start: `earliest`, `latest` (default), or offsets per partition as
    /// `0:12,1:7` (partitions not named start at the end).
    #[param(pattern = "^(earliest|latest|[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*)$")]
    from: Option<String>,
    /// Stream only this partition.
    partition: Option<u32>,
}

/// Stream a topic's records as Server-Sent Events.
///
/// Every record is an event `record` with `id: partition:offset` and the record as
/// JSON `data`. `Last-Event-ID` resumes the named partition after that offset; to
/// resume several partitions exactly, pass their offsets in `from`, or open one
/// stream per partition.
#[utoipa::path(get, path = "/v1/topics/{topic}/events", tag = "streaming",
    params(
        ("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        EventParams,
        ("Last-Event-ID" = Option<String>, Header, description = "`partition:offset` of the last event received", pattern = "^[0-9]{1,9}:[0-9]{1,18}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An event stream: one event per record (the schema describes one event).", content_type = "text/event-stream", body = sluice_openapi::RecordEvent),
        (status = 400, description = "`invalid_query`, `invalid_last_event_id`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`, `partition_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "`offset_out_of_range`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<EventParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(Object::Consume(&name))?;
    let topic = topic(&state, &name)?;
    let partitions: Vec<u32> = match params.partition {
        Some(p) => {
            topic.partition_checked(p)?;
            vec![p]
        }
        None => (0..topic.partition_count()).collect(),
    };
    let mut positions = Vec::with_capacity(partitions.len());
    let named = parse_from(params.from.as_deref())?;
    for &p in &partitions {
        let info = topic.partition(p).expect("partition in range");
        let o = match &named {
            From::Earliest => info.start_offset,
            From::Latest => info.end_offset,
            From::Offsets(list) => list
                .iter()
                .find(|(q, _)| *q == p)
                .map_or(info.end_offset, |(_, o)| *o),
        };
        positions.push((p, o));
    }
    // An empty Last-Event-ID is what a client that saw no event sends: no position.
    if let Some(last) = headers.get("last-event-id").filter(|v| !v.is_empty()) {
        let (p, o) = last
            .to_str()
            .ok()
            .and_then(|s| s.split_once(':'))
            .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be `partition:offset`",
                )
            })?;
        if let Some(slot) = positions.iter_mut().find(|(q, _)| *q == p) {
            slot.1 = o + 1;
        }
    }
    for &(p, o) in &positions {
        let info = topic.partition(p).expect("partition in range");
        if o < info.start_offset || o > info.end_offset {
            return Err(sluice_log::Error::OffsetOutOfRange {
                offset: o,
                start: info.start_offset,
                end: info.end_offset,
            }
            .into());
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(stream(state, topic, positions, tx));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}

enum From {
    Earliest,
    Latest,
    Offsets(Vec<(u32, u64)>),
}

fn parse_from(s: Option<&str>) -> Result<From, ApiError> {
    match s {
        None | Some("latest") => Ok(From::Latest),
        Some("earliest") => Ok(From::Earliest),
        Some(list) => list
            .split(',')
            .map(|pair| {
                pair.split_once(':')
                    .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)))
            })
            .collect::<Option<Vec<(u32, u64)>>>()
            .map(From::Offsets)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "from is `earliest`, `latest` or `partition:offset,...`",
                )
            }),
    }
}

/// Writes events into the channel; the bounded channel holds the reader back when
/// the client is slow. Ends when the client goes away.
async fn stream(
    state: AppState,
    topic: Arc<Topic>,
    mut positions: Vec<(u32, u64)>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut appended = state.waiters.subscribe_topic(topic.id());
    let mut shutdown = state.shutdown.clone();
    if tx
        .send(Bytes::from_static(b": stream open\n\n"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        appended.borrow_and_update();
        let mut sent = false;
        for (p, pos) in positions.iter_mut() {
            let Some(info) = topic.partition(*p) else {
                continue;
            };
            if *pos >= info.end_offset {
                continue;
            }
            let (log, t, p2, from) = (
                state.log.clone(),
                topic.clone(),
                *p,
                (*pos).max(info.start_offset),
            );
            let read = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(16 * 1024);
                let mut record = Vec::with_capacity(512);
                let outcome = log.read(&t, p2, from, 500, 256 * 1024, &mut |o, r| {
                    record.clear();
                    write_record(&mut record, p2, o, &r);
                    out.extend_from_slice(b"event: record\nid: ");
                    out.extend_from_slice(itoa::Buffer::new().format(p2).as_bytes());
                    out.push(b':');
                    out.extend_from_slice(itoa::Buffer::new().format(o).as_bytes());
                    out.extend_from_slice(b"\ndata: ");
                    out.extend_from_slice(&record);
                    out.extend_from_slice(b"\n\n");
                });
                outcome.map(|o| (out, o.next_offset))
            })
            .await;
            match read {
                Ok(Ok((bytes, next))) if next > from => {
                    state
                        .stats
                        .delivered(topic.name(), next - from, bytes.len() as u64);
                    if tx.send(Bytes::from(bytes)).await.is_err() {
                        return;
                    }
                    *pos = next;
                    sent = true;
                }
                Ok(Ok(_)) => {}
                Ok(Err(sluice_log::Error::OffsetOutOfRange { start, .. })) => *pos = start,
                _ => return,
            }
        }
        if sent {
            continue;
        }
        tokio::select! {
            r = appended.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(15)) => {
                if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                    return;
                }
            }
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => return,
        }
    }
}
