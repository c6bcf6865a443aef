//! `GET /v1/ws`: the WebSocket protocol. JSON text frames; several subscriptions per
//! socket (a topic from a position, a consumer group, later a table), commits and
//! produce.
//!
//! Back-pressure by design: a subscription is a reader of the log. Each one runs as
//! a task that reads a chunk, hands the frame to the socket's writer through a small
//! bounded channel, and reads on only when the frame was taken. A slow or stalled
//! client therefore stalls its own readers, which fall behind in the log instead of
//! piling frames up in memory; what the server holds per connection is bounded by
//! the channel's capacity times the chunk size. The writer sends every queued frame
//! before one flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use sluice_log::{AppendUnit, Topic, now_ms, valid_name};
use sluice_openapi::{
    CommitFrame, MapOnly, ProduceFrame, ProduceRecord, ResetNamed, ServerFrame, SubscribeFrame,
    SubscribeFrom, SubscribedFrame, UnsubscribeFrame,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::produce::{encode_all, write};
use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Frames a connection may have queued for its writer.
const QUEUE: usize = 4;

/// WebSocket settings.
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Browser origins allowed to open a socket; empty allows any.
    pub allowed_origins: Vec<String>,
}

/// Close codes.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// Open a WebSocket: subscribe to topics, consume as a group member, produce.
///
/// Client frames: `{"op":"subscribe","id","topic","from"?,"partitions"?}`,
/// `{"op":"subscribe","id","topic","group","consumer"?}`,
/// `{"op":"commit","id","offsets":{"0":11}}`, `{"op":"unsubscribe","id"}`,
/// `{"op":"produce","ref","topic","records":[...]}`. Server frames: `subscribed`,
/// `records`, `assigned`, `committed`, `produced`, `error`. Browsers pass the token
/// as `?access_token=`.
#[utoipa::path(get, path = "/v1/ws", tag = "streaming",
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 401, description = "`unauthorized`.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the Origin is not allowed.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 426, description = "`upgrade_required`: not a WebSocket request.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = sluice_openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|_| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        )
    })?;
    let cfg = state.ws.clone();
    if let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok())
        && !cfg.allowed_origins.is_empty()
        && !cfg.allowed_origins.iter().any(|a| a == "*" || a == origin)
        && !same_origin(origin, &headers)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("origin '{origin}' may not open a WebSocket here"),
        ));
    }
    Ok(ws
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024 + cfg.max_message_bytes)
        .on_upgrade(move |socket| Connection::run(socket, state, principal)))
}

/// A client frame. Parsed in two steps, the `op` first, because serde's tagged
/// enums buffer their content and cannot hand JSON values through untouched.
enum ClientFrame {
    Subscribe(SubscribeFrame),
    Unsubscribe {
        id: String,
    },
    Commit {
        id: String,
        offsets: BTreeMap<String, u64>,
    },
    Produce {
        reference: Option<Value>,
        topic: String,
        records: Vec<MapOnly<ProduceRecord>>,
    },
}

#[derive(Deserialize)]
struct Op {
    op: String,
}

impl ClientFrame {
    fn parse(raw: &str) -> Result<ClientFrame, String> {
        let op: Op = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        let e = |e: serde_json::Error| e.to_string();
        Ok(match op.op.as_str() {
            "subscribe" => ClientFrame::Subscribe(serde_json::from_str(raw).map_err(e)?),
            "unsubscribe" => {
                let f: UnsubscribeFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Unsubscribe { id: f.id }
            }
            "commit" => {
                let f: CommitFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Commit {
                    id: f.id,
                    offsets: f.offsets,
                }
            }
            "produce" => {
                let f: ProduceFrame = serde_json::from_str(raw).map_err(e)?;
                ClientFrame::Produce {
                    reference: f.reference,
                    topic: f.topic,
                    records: f.records,
                }
            }
            other => return Err(format!("unknown op '{other}'")),
        })
    }
}

/// A live subscription: its task, and for a group member what commits need.
struct Sub {
    task: JoinHandle<()>,
    group: Option<GroupSub>,
}

#[derive(Clone)]
struct GroupSub {
    group: String,
    consumer: String,
    topic: Arc<Topic>,
    generation: Arc<AtomicU64>,
}

struct Connection {
    state: AppState,
    principal: Principal,
    out: mpsc::Sender<Message>,
    subs: HashMap<String, Sub>,
}

fn text(v: impl serde::Serialize) -> Message {
    Message::Text(Utf8Bytes::from(
        serde_json::to_string(&v).unwrap_or_default(),
    ))
}

fn error_frame(id: Option<&str>, reference: Option<&Value>, code: &str, message: &str) -> Message {
    text(ServerFrame::Error {
        id: id.map(str::to_string),
        reference: reference.cloned(),
        code: code.to_string(),
        message: message.to_string(),
    })
}

impl Connection {
    async fn run(socket: WebSocket, state: AppState, principal: Principal) {
        let cfg = state.ws.clone();
        let (mut sink, mut stream) = socket.split();
        let (out, mut queue) = mpsc::channel::<Message>(QUEUE);
        // The writer: sends whatever is queued, then flushes once.
        let writer = tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let closing = matches!(first, Message::Close(_));
                if sink.feed(first).await.is_err() {
                    return;
                }
                while let Ok(m) = queue.try_recv() {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() || closing {
                    return;
                }
            }
        });
        let stats = state.stats.clone();
        stats.websocket(true);
        let mut conn = Connection {
            state,
            principal,
            out,
            subs: HashMap::new(),
        };
        let mut shutdown = conn.state.shutdown.clone();
        let mut ping = tokio::time::interval(cfg.ping_interval);
        ping.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let reason = loop {
            tokio::select! {
                msg = stream.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            break too_big(e).then_some((close::TOO_BIG, "message too big"));
                        }
                        None => break None,
                    };
                    last_heard = tokio::time::Instant::now();
                    match msg {
                        Message::Text(t) => conn.handle(t.as_str()).await,
                        Message::Binary(_) => {
                            let _ = conn.out.send(error_frame(None, None, "binary_not_supported", "send JSON text frames")).await;
                        }
                        Message::Close(_) => break None,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > cfg.idle_timeout {
                        break Some((close::POLICY, "idle timeout"));
                    }
                    if conn.out.try_send(Message::Ping(Default::default())).is_err() {
                        // The client does not even take pings: the queue is full.
                    }
                }
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break Some((close::GOING_AWAY, "server shutting down")),
            }
        };
        conn.close_all();
        if let Some((code, why)) = reason {
            let _ = conn
                .out
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(why),
                })))
                .await;
        }
        drop(conn);
        stats.websocket(false);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }

    fn close_all(&mut self) {
        let subs: Vec<Sub> = self.subs.drain().map(|(_, s)| s).collect();
        for sub in subs {
            self.end(sub);
        }
    }

    /// Stops a subscription; a group member leaves its group at once.
    fn end(&self, sub: Sub) {
        metrics::gauge!("sluice_websocket_subscriptions").decrement(1.0);
        sub.task.abort();
        if let Some(g) = sub.group {
            let _ = self.state.groups.leave(
                &g.group,
                &g.consumer,
                self.principal.sub.as_deref(),
                false,
            );
        }
    }

    async fn send(&self, m: Message) {
        let _ = self.out.send(m).await;
    }

    async fn handle(&mut self, raw: &str) {
        let frame = match ClientFrame::parse(raw) {
            Ok(f) => f,
            Err(e) => {
                // Name the id if the frame has one, so the client can match it.
                let v: Option<Value> = serde_json::from_str(raw).ok();
                let id = v.as_ref().and_then(|v| v.get("id")).and_then(Value::as_str);
                let r = v.as_ref().and_then(|v| v.get("ref"));
                self.send(error_frame(id, r, "invalid_frame", &e)).await;
                return;
            }
        };
        match frame {
            ClientFrame::Subscribe(s) => {
                let id = s.id.clone();
                if let Err(e) = self.subscribe(s).await {
                    self.send(error_frame(Some(&id), None, e.code, &e.detail))
                        .await;
                }
            }
            ClientFrame::Unsubscribe { id } => match self.subs.remove(&id) {
                Some(sub) => {
                    self.end(sub);
                    self.send(text(ServerFrame::Unsubscribed { id: id.clone() }))
                        .await;
                }
                None => {
                    self.send(error_frame(
                        Some(&id),
                        None,
                        "unknown_subscription",
                        "no subscription with that id",
                    ))
                    .await;
                }
            },
            ClientFrame::Commit { id, offsets } => {
                let answer = match self.commit(&id, offsets).await {
                    Ok(v) => text(v),
                    Err(e) => error_frame(Some(&id), None, e.code, &e.detail),
                };
                self.send(answer).await;
            }
            ClientFrame::Produce {
                reference,
                topic,
                records,
            } => {
                let answer = match self.produce(&topic, records).await {
                    Ok(offsets) => text(ServerFrame::Produced {
                        reference: reference.clone(),
                        offsets,
                    }),
                    Err(e) => error_frame(None, reference.as_ref(), e.code, &e.detail),
                };
                self.send(answer).await;
            }
        }
    }

    async fn produce(
        &self,
        name: &str,
        records: Vec<MapOnly<ProduceRecord>>,
    ) -> Result<Vec<sluice_openapi::RecordOffset>, ApiError> {
        self.principal.require(Object::Produce(name))?;
        self.state.limits.check_requests(&self.principal.rate_key)?;
        let topic = crate::api::topic(&self.state, name)?;
        let records: Vec<ProduceRecord> = records.into_iter().map(|r| r.0).collect();
        let encoded = encode_all(&topic, &records, now_ms())?;
        let units = vec![AppendUnit {
            dedupe_key: None,
            records: encoded,
        }];
        write(&self.state, &self.principal, &topic, units, None).await
    }

    async fn commit(
        &self,
        id: &str,
        offsets: BTreeMap<String, u64>,
    ) -> Result<ServerFrame, ApiError> {
        let g = self
            .subs
            .get(id)
            .and_then(|s| s.group.clone())
            .ok_or_else(|| {
                ApiError::bad_request("unknown_subscription", "no group subscription with that id")
            })?;
        let mut list = Vec::with_capacity(offsets.len());
        for (p, o) in &offsets {
            let p: u32 = p.parse().map_err(|_| {
                ApiError::bad_request("invalid_frame", format!("'{p}' is not a partition number"))
            })?;
            let info = g.topic.partition_checked(p)?;
            if *o > info.end_offset {
                return Err(sluice_log::Error::OffsetOutOfRange {
                    offset: *o,
                    start: info.start_offset,
                    end: info.end_offset,
                }
                .into());
            }
            list.push((g.topic.clone(), p, *o));
        }
        let owned: Vec<(&str, u32)> = list.iter().map(|(t, p, _)| (t.name(), *p)).collect();
        let generation = g.generation.load(Ordering::Acquire);
        self.state.groups.check_commit(
            &g.group,
            &g.consumer,
            generation,
            &owned,
            self.principal.sub.as_deref(),
            false,
        )?;
        let moved: Vec<(u32, u64)> = list.iter().map(|(_, p, o)| (*p, *o)).collect();
        let log = self.state.log.clone();
        crate::api::call(|r| log.commit_offsets(&g.group, list, r)).await?;
        self.state
            .groups
            .set_positions(&g.group, g.topic.name(), &moved, true);
        Ok(ServerFrame::Committed {
            id: id.to_string(),
            generation,
            offsets,
        })
    }

    async fn subscribe(&mut self, s: SubscribeFrame) -> Result<(), ApiError> {
        if self.subs.contains_key(&s.id) {
            return Err(ApiError::bad_request(
                "duplicate_subscription",
                "a subscription with this id is open",
            ));
        }
        if self.subs.len() >= self.state.ws.max_subscriptions {
            return Err(ApiError::bad_request(
                "too_many_subscriptions",
                format!(
                    "at most {} subscriptions per socket",
                    self.state.ws.max_subscriptions
                ),
            ));
        }
        if let Some(table) = s.table.clone() {
            self.principal.require(Object::Table(&table))?;
            // Subscribe before answering, so no change after `subscribed` is missed.
            let feed = self.state.table_waiters.feed(&table);
            self.state.tables.progress(&table)?;
            let prefix = s.key_prefix.clone().unwrap_or_default();
            self.send(text(ServerFrame::Subscribed(SubscribedFrame {
                id: s.id.clone(),
                table: Some(table.clone()),
                key_prefix: Some(prefix.clone()),
                ..SubscribedFrame::default()
            })))
            .await;
            let task = tokio::spawn(table_reader(
                self.state.clone(),
                s.id.clone(),
                table,
                prefix,
                feed,
                self.out.clone(),
            ));
            self.subs.insert(s.id, Sub { task, group: None });
            metrics::gauge!("sluice_websocket_subscriptions").increment(1.0);
            return Ok(());
        }
        let name = s
            .topic
            .clone()
            .ok_or_else(|| ApiError::bad_request("invalid_frame", "subscribe needs `topic`"))?;
        self.principal.require(Object::Consume(&name))?;
        let topic = crate::api::topic(&self.state, &name)?;
        let id = s.id.clone();
        let (task, group) = match &s.group {
            Some(group) => {
                self.principal.require(Object::Group(group))?;
                let consumer = s
                    .consumer
                    .clone()
                    .unwrap_or_else(|| format!("ws-{:016x}", rand_u64()));
                for (what, n) in [("group", group.as_str()), ("consumer", consumer.as_str())] {
                    if !valid_name(n) {
                        return Err(ApiError::bad_request(
                            "invalid_frame",
                            format!("bad {what} name '{n}'"),
                        ));
                    }
                }
                let g = GroupSub {
                    group: group.clone(),
                    consumer,
                    topic: topic.clone(),
                    generation: Arc::new(AtomicU64::new(0)),
                };
                // Join now, so errors (another subject's consumer id) answer the subscribe.
                let view = self.state.groups.join(
                    group,
                    &name,
                    topic.id(),
                    topic.partition_count(),
                    &g.consumer,
                    None,
                    self.principal.sub.as_deref(),
                    self.state.group_config.bind_subject,
                )?;
                self.send(text(ServerFrame::Subscribed(SubscribedFrame {
                    id: id.clone(),
                    topic: Some(name.clone()),
                    group: Some(g.group.clone()),
                    consumer: Some(g.consumer.clone()),
                    log_epoch: Some(self.state.log.epoch().to_string()),
                    generation: Some(view.generation),
                    assignment: Some(view.assignment.clone()),
                    ..SubscribedFrame::default()
                })))
                .await;
                let task = tokio::spawn(group_reader(
                    self.state.clone(),
                    self.principal.sub.clone(),
                    id.clone(),
                    g.clone(),
                    s.reset.unwrap_or(ResetNamed::Earliest),
                    self.out.clone(),
                ));
                (task, Some(g))
            }
            None => {
                let partitions = match &s.partitions {
                    Some(ps) => {
                        for p in ps {
                            topic.partition_checked(*p)?;
                        }
                        ps.clone()
                    }
                    None => (0..topic.partition_count()).collect(),
                };
                let positions = self.resolve(&topic, &partitions, s.from.clone()).await?;
                self.send(text(ServerFrame::Subscribed(SubscribedFrame {
                    id: id.clone(),
                    topic: Some(name.clone()),
                    log_epoch: Some(self.state.log.epoch().to_string()),
                    positions: Some(positions.iter().map(|(p, o)| (p.to_string(), *o)).collect()),
                    ..SubscribedFrame::default()
                })))
                .await;
                let task = tokio::spawn(topic_reader(
                    self.state.clone(),
                    id.clone(),
                    topic,
                    positions,
                    self.out.clone(),
                ));
                (task, None)
            }
        };
        self.subs.insert(id, Sub { task, group });
        metrics::gauge!("sluice_websocket_subscriptions").increment(1.0);
        Ok(())
    }

    /// Where each partition starts.
    async fn resolve(
        &self,
        topic: &Arc<Topic>,
        partitions: &[u32],
        from: Option<SubscribeFrom>,
    ) -> Result<Vec<(u32, u64)>, ApiError> {
        let mut out = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let info = topic.partition(p).expect("checked partition");
            let o = match &from {
                None | Some(SubscribeFrom::Named(ResetNamed::Latest)) => info.end_offset,
                Some(SubscribeFrom::Named(ResetNamed::Earliest)) => info.start_offset,
                Some(SubscribeFrom::Offsets { offset }) => match offset.get(&p.to_string()) {
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
                Some(SubscribeFrom::Timestamp { timestamp }) => {
                    let (log, t, ts) = (self.state.log.clone(), topic.clone(), *timestamp);
                    tokio::task::spawn_blocking(move || log.offset_for_timestamp(&t, p, ts))
                        .await
                        .map_err(|_| ApiError::internal())??
                }
            };
            out.push((p, o));
        }
        Ok(out)
    }
}

/// Whether a read failed because the message was over the size limit.
fn too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast::<Error>().map(|b| *b),
        Ok(Error::Capacity(_))
    )
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

/// Whether `origin` is this server as the browser reached it (the dashboard), which
/// is always allowed.
fn same_origin(origin: &str, headers: &axum::http::HeaderMap) -> bool {
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some() && authority == host
}

/// The `records` frame of a chunk: [`ServerFrame::Records`], written around the
/// chunk's shared bytes instead of serialized record by record.
fn records_frame(id: &str, topic: &str, partition: u32, chunk: &crate::tail::Chunk) -> Message {
    let mut s = String::with_capacity(chunk.json.len() + 96);
    s.push_str("{\"type\":\"records\",\"id\":");
    s.push_str(&serde_json::to_string(id).unwrap_or_default());
    s.push_str(",\"topic\":");
    s.push_str(&serde_json::to_string(topic).unwrap_or_default());
    s.push_str(",\"partition\":");
    s.push_str(itoa::Buffer::new().format(partition));
    s.push_str(",\"next_offset\":");
    s.push_str(itoa::Buffer::new().format(chunk.next));
    s.push_str(",\"records\":[");
    // The chunk is JSON written by `write_record`: valid UTF-8.
    s.push_str(std::str::from_utf8(&chunk.json).unwrap_or_default());
    s.push_str("]}");
    Message::Text(Utf8Bytes::from(s))
}

/// Follows a topic from positions: reads a chunk per partition that has records,
/// sends it (waiting while the socket is behind), and waits for appends when caught up.
async fn topic_reader(
    state: AppState,
    id: String,
    topic: Arc<Topic>,
    mut positions: Vec<(u32, u64)>,
    out: mpsc::Sender<Message>,
) {
    let mut appended = state.waiters.subscribe_topic(topic.id());
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
            match state.tail.read(&state.log, &topic, *p, *pos).await {
                Ok(chunk) if chunk.next > chunk.first => {
                    if out
                        .send(records_frame(&id, topic.name(), *p, &chunk))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    state.stats.delivered(
                        topic.name(),
                        chunk.next - chunk.first,
                        chunk.json.len() as u64,
                    );
                    *pos = chunk.next;
                    sent = true;
                }
                Ok(_) => {}
                Err(sluice_log::Error::OffsetOutOfRange { start, .. }) if *pos < start => {
                    // Retention passed this reader: say so and go on from the start.
                    let m = format!(
                        "records {}..{start} of partition {p} were deleted by retention before they were read",
                        *pos
                    );
                    if out
                        .send(error_frame(Some(&id), None, "offset_out_of_range", &m))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    *pos = start;
                }
                Err(e) => {
                    let _ = out
                        .send(error_frame(Some(&id), None, "internal", &e.to_string()))
                        .await;
                    return;
                }
            }
        }
        if !sent && appended.changed().await.is_err() {
            return;
        }
    }
}

/// Consumes as a group member: the same membership, positions and commits as HTTP
/// polling; announces each new assignment; refreshes the session while idle.
async fn group_reader(
    state: AppState,
    subject: Option<String>,
    id: String,
    g: GroupSub,
    reset: ResetNamed,
    out: mpsc::Sender<Message>,
) {
    let mut appended = state.waiters.subscribe_topic(g.topic.id());
    let name = g.topic.name().to_string();
    let mut announced = None;
    loop {
        appended.borrow_and_update();
        let view = match state.groups.join(
            &g.group,
            &name,
            g.topic.id(),
            g.topic.partition_count(),
            &g.consumer,
            None,
            subject.as_deref(),
            state.group_config.bind_subject,
        ) {
            Ok(v) => v,
            Err(e) => {
                let _ = out
                    .send(error_frame(
                        Some(&id),
                        None,
                        ApiError::from(e).code,
                        "left the group",
                    ))
                    .await;
                return;
            }
        };
        let mut rebalanced = state.groups.watch(&g.group);
        if announced != Some(view.generation) {
            g.generation.store(view.generation, Ordering::Release);
            let frame = text(ServerFrame::Assigned {
                id: id.clone(),
                generation: view.generation,
                assignment: view.assignment.clone(),
            });
            if out.send(frame).await.is_err() {
                return;
            }
            state
                .groups
                .answered(&g.group, &name, &g.consumer, view.generation);
            announced = Some(view.generation);
        }
        let committed = match crate::api::groups::ensure_committed(
            &state,
            &g.group,
            &g.topic,
            &view.assignment,
            reset,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = out
                    .send(error_frame(Some(&id), None, e.code, &e.detail))
                    .await;
                return;
            }
        };
        let Some(positions) =
            state
                .groups
                .positions(&g.group, &name, &g.consumer, view.generation, |p| {
                    committed[p as usize]
                })
        else {
            continue;
        };
        let mut sent = false;
        for (p, pos) in positions {
            let info = g.topic.partition(p).expect("assigned partition");
            let from = pos.clamp(info.start_offset, info.end_offset);
            if from >= info.end_offset {
                continue;
            }
            let Ok(chunk) = state.tail.read(&state.log, &g.topic, p, from).await else {
                continue;
            };
            if chunk.next == chunk.first {
                continue;
            }
            // Hand the records out only if the partition is still ours at this position.
            if !state.groups.advance(
                &g.group,
                &name,
                &g.consumer,
                view.generation,
                &[(p, pos, chunk.next)],
            ) {
                break;
            }
            if out
                .send(records_frame(&id, &name, p, &chunk))
                .await
                .is_err()
            {
                return;
            }
            state
                .stats
                .delivered(&name, chunk.next - chunk.first, chunk.json.len() as u64);
            sent = true;
        }
        if sent {
            continue;
        }
        tokio::select! {
            _ = appended.changed() => {}
            () = crate::groups::rebalanced(rebalanced.as_mut()) => {}
            // Keep the session alive while nothing happens.
            () = tokio::time::sleep(view.session_timeout / 3) => {}
        }
    }
}

/// Sends a `row` frame for every changed key under the prefix (`row: null` when the
/// row is gone). A subscriber that falls more than a few batches behind is told to
/// query the table again, rather than making the server keep the backlog.
async fn table_reader(
    state: AppState,
    id: String,
    table: String,
    prefix: String,
    mut feed: tokio::sync::broadcast::Receiver<Arc<[String]>>,
    out: mpsc::Sender<Message>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let keys = match feed.recv().await {
            Ok(keys) => keys,
            Err(RecvError::Lagged(_)) => {
                let m = "changes were missed; query the table to catch up";
                if out
                    .send(error_frame(Some(&id), None, "lagged", m))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
            let row = match state.tables.get(&table, key) {
                Ok(r) => r.map(|(row, _)| row),
                Err(e) => {
                    let _ = out
                        .send(error_frame(
                            Some(&id),
                            None,
                            "table_not_found",
                            &e.to_string(),
                        ))
                        .await;
                    return;
                }
            };
            let frame = text(ServerFrame::Row {
                id: id.clone(),
                table: table.clone(),
                key: key.clone(),
                row,
            });
            if out.send(frame).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written `records` frame is the documented `ServerFrame::Records`.
    #[test]
    fn records_frame_is_the_documented_frame() {
        let chunk = crate::tail::Chunk {
            first: 4,
            next: 5,
            json: bytes::Bytes::from_static(
                br#"{"partition":2,"offset":4,"timestamp":1,"value":{"a":1}}"#,
            ),
        };
        let Message::Text(t) = records_frame("s\"1", "orders", 2, &chunk) else {
            panic!("a text frame");
        };
        let f: ServerFrame = serde_json::from_str(t.as_str()).unwrap();
        let ServerFrame::Records {
            id,
            topic,
            partition,
            next_offset,
            records,
        } = f
        else {
            panic!("a records frame");
        };
        assert_eq!(
            (id.as_str(), topic.as_str(), partition, next_offset),
            ("s\"1", "orders", 2, 5)
        );
        assert_eq!(records[0].offset, 4);
    }
}
