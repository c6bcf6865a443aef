//! One socket: the reader loop (client frames, keepalive pings, the idle timeout,
//! close codes), the writer that drains the bounded queue, and the operations a
//! client frame asks for (subscribe, unsubscribe, commit, produce).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sluice_log::{AppendUnit, Topic, now_ms, valid_name};
use sluice_openapi::{
    MapOnly, ProduceRecord, ResetNamed, ServerFrame, SubscribeFrame, SubscribeFrom, SubscribedFrame,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::records::{encode_all, write};
use crate::state::AppState;
use crate::stream::start::{self, Start};

use super::frames::{ClientFrame, error_frame, text};
use super::readers::{group_reader, table_reader, topic_reader};
use super::{QUEUE, close};

/// A live subscription: its task, and for a group member what commits need.
pub(super) struct Sub {
    task: JoinHandle<()>,
    group: Option<GroupSub>,
}

#[derive(Clone)]
pub(super) struct GroupSub {
    pub(super) group: String,
    pub(super) consumer: String,
    pub(super) topic: Arc<Topic>,
    pub(super) generation: Arc<AtomicU64>,
}

pub(super) struct Connection {
    state: AppState,
    principal: Principal,
    out: mpsc::Sender<Message>,
    subs: HashMap<String, Sub>,
}

impl Connection {
    pub(super) async fn run(socket: WebSocket, state: AppState, principal: Principal) {
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
            if let Some(cluster) = self.state.cluster.clone() {
                self.state.shares.forget(&g.group, Some(&g.consumer));
                tokio::task::spawn_blocking(move || {
                    let _ = cluster.leave(&g.group, &g.topic, &g.consumer);
                });
                return;
            }
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
            crate::session::check_committable(&self.state, &g.topic, p, *o)?;
            list.push((g.topic.clone(), p, *o));
        }
        let owned: Vec<(&str, u32)> = list.iter().map(|(t, p, _)| (t.name(), *p)).collect();
        let generation = g.generation.load(Ordering::Acquire);
        if self.state.cluster.is_some() {
            let moved: Vec<(u32, u64)> = list.iter().map(|(_, p, o)| (*p, *o)).collect();
            crate::session::commit_member(
                &self.state,
                &g.group,
                &g.topic,
                &g.consumer,
                generation,
                moved,
            )
            .await?;
            return Ok(ServerFrame::Committed {
                id: id.to_string(),
                generation,
                offsets,
            });
        }
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
                let view = if self.state.cluster.is_some() {
                    let member = crate::session::Member {
                        group,
                        topic: &topic,
                        consumer: &g.consumer,
                        session: None,
                        subject: self.principal.sub.as_deref(),
                        reset: s.reset.unwrap_or(ResetNamed::Earliest),
                    };
                    member.turn(&self.state).await?.view
                } else {
                    self.state.groups.join(
                        group,
                        &name,
                        topic.id(),
                        topic.partition_count(),
                        &g.consumer,
                        None,
                        self.principal.sub.as_deref(),
                        self.state.group_config.bind_subject,
                    )?
                };
                self.send(text(ServerFrame::Subscribed(SubscribedFrame {
                    id: id.clone(),
                    topic: Some(name.clone()),
                    group: Some(g.group.clone()),
                    consumer: Some(g.consumer.clone()),
                    log_epoch: Some(self.state.log.topic_epoch(&topic).into_owned()),
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
                let start = match s.from.clone() {
                    None | Some(SubscribeFrom::Named(ResetNamed::Latest)) => Start::Latest,
                    Some(SubscribeFrom::Named(ResetNamed::Earliest)) => Start::Earliest,
                    Some(SubscribeFrom::Offsets { offset }) => Start::Offsets(
                        offset
                            .iter()
                            .filter_map(|(p, o)| Some((p.parse().ok()?, *o)))
                            .collect(),
                    ),
                    Some(SubscribeFrom::Timestamp { timestamp }) => Start::Timestamp(timestamp),
                };
                let positions = start::resolve(&self.state, &topic, &partitions, &start).await?;
                self.send(text(ServerFrame::Subscribed(SubscribedFrame {
                    id: id.clone(),
                    topic: Some(name.clone()),
                    log_epoch: Some(self.state.log.topic_epoch(&topic).into_owned()),
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
}

/// Whether a read failed because the message was over the size limit.
pub(super) fn too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast::<Error>().map(|b| *b),
        Ok(Error::Capacity(_))
    )
}

pub(super) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}
