//! Server-Sent Events: a topic's records as an event stream, for clients without
//! WebSocket. Each record is one event whose `id` is `partition:offset`; a client
//! that reconnects with `Last-Event-ID` resumes that partition right after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use serde::Deserialize;
use sluice_openapi::Problem;
use utoipa::IntoParams;

use crate::api::topic;
use crate::auth::{Object, Principal};
use crate::error::{ApiError, Path, Query};
use crate::state::AppState;
use crate::stream::follow::{Follower, Found};
use crate::stream::start::{self, Start};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventParams {
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
pub(crate) async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<EventParams>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Object::Consume(&name))?;
    let topic = topic(&state, &name)?;
    let partitions: Vec<u32> = match params.partition {
        Some(p) => {
            topic.partition_checked(p)?;
            vec![p]
        }
        None => (0..topic.partition_count()).collect(),
    };
    let start = parse_from(params.from.as_deref())?;
    let mut positions = start::resolve(&state, &topic, &partitions, &start).await?;
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
            let after = start::resolve(
                &state,
                &topic,
                &[p],
                &Start::Offsets([(p, o.saturating_add(1))].into()),
            )
            .await?;
            *slot = after[0];
        }
    }
    let follower = Follower::new(&state, topic, positions);
    let shutdown = state.shutdown.clone();
    let events = futures_util::stream::unfold(
        (follower, state, shutdown),
        |(mut follower, state, mut shutdown)| async move {
            loop {
                match follower.next(&state).await {
                    Ok(Some(Found::Records { partition, chunk })) => {
                        let events: Vec<Result<Event, Infallible>> = chunk
                            .records()
                            .map(|(offset, json)| {
                                // The chunk is JSON written by `write_record`: UTF-8.
                                let json = std::str::from_utf8(json).unwrap_or_default();
                                Ok(Event::default()
                                    .event("record")
                                    .id(format!("{partition}:{offset}"))
                                    .data(json))
                            })
                            .collect();
                        let next = (follower, state, shutdown);
                        return Some((futures_util::stream::iter(events), next));
                    }
                    // Retention passed the reader: it goes on from the oldest record.
                    Ok(Some(Found::Deleted { .. })) => {}
                    Ok(None) => {
                        tokio::select! {
                            more = follower.wait() => if !more { return None },
                            _ = shutdown.wait_for(|s| *s) => return None,
                        }
                    }
                    Err(_) => return None,
                }
            }
        },
    )
    .flatten();
    let opened = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().comment("stream open"))
    });
    Ok(Sse::new(opened.chain(events)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}

fn parse_from(s: Option<&str>) -> Result<Start, ApiError> {
    match s {
        None | Some("latest") => Ok(Start::Latest),
        Some("earliest") => Ok(Start::Earliest),
        Some(list) => list
            .split(',')
            .map(|pair| {
                pair.split_once(':')
                    .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)))
            })
            .collect::<Option<std::collections::HashMap<u32, u64>>>()
            .map(Start::Offsets)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "from is `earliest`, `latest` or `partition:offset,...`",
                )
            }),
    }
}
