//! The subscription kinds, each a task feeding the socket's bounded queue: a topic
//! from positions (through the streaming layer's follower), a consumer-group member
//! (through the one poll cycle of `crate::session`), and a table's changed rows.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::Message;
use sluice_log::Topic;
use sluice_openapi::{ResetNamed, ServerFrame};
use tokio::sync::mpsc;

use crate::session::Member;
use crate::state::AppState;
use crate::stream::follow::{Follower, Found};

use super::connection::GroupSub;
use super::frames::{error_frame, records_frame, text};

/// Follows a topic from positions: sends each chunk of records (waiting while the
/// socket is behind), says when retention passed the reader, and waits for appends
/// when caught up.
pub(super) async fn topic_reader(
    state: AppState,
    id: String,
    topic: Arc<Topic>,
    positions: Vec<(u32, u64)>,
    out: mpsc::Sender<Message>,
) {
    let name = topic.name().to_string();
    let mut follower = Follower::new(&state, topic, positions);
    loop {
        let frame = match follower.next(&state).await {
            Ok(Some(Found::Records { partition, chunk })) => {
                records_frame(&id, &name, partition, &chunk)
            }
            Ok(Some(Found::Deleted {
                partition,
                from,
                to,
            })) => {
                let m = format!(
                    "records {from}..{to} of partition {partition} were deleted by retention \
                     before they were read"
                );
                error_frame(Some(&id), None, "offset_out_of_range", &m)
            }
            Ok(None) => {
                if follower.wait().await {
                    continue;
                }
                return;
            }
            Err(e) => {
                let _ = out
                    .send(error_frame(Some(&id), None, "internal", &e.to_string()))
                    .await;
                return;
            }
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

/// Consumes as a group member: the same membership, positions and commits as HTTP
/// polling; announces each new assignment; refreshes the session while idle.
pub(super) async fn group_reader(
    state: AppState,
    subject: Option<String>,
    id: String,
    g: GroupSub,
    reset: ResetNamed,
    out: mpsc::Sender<Message>,
) {
    let mut appended = state.waiters.subscribe_topic(g.topic.id());
    let name = g.topic.name().to_string();
    let member = Member {
        group: &g.group,
        topic: &g.topic,
        consumer: &g.consumer,
        session: None,
        subject: subject.as_deref(),
        reset,
    };
    let mut announced = None;
    loop {
        appended.borrow_and_update();
        let mut turn = match member.turn(&state).await {
            Ok(t) => t,
            Err(e) => {
                let _ = out
                    .send(error_frame(Some(&id), None, e.code, &e.detail))
                    .await;
                return;
            }
        };
        let generation = turn.view.generation;
        // A new generation, or (where the cluster keeps the group) partitions
        // given or taken at the same epoch.
        let now = (generation, turn.view.assignment.clone());
        if announced.as_ref() != Some(&now) {
            g.generation.store(generation, Ordering::Release);
            let frame = text(ServerFrame::Assigned {
                id: id.clone(),
                generation,
                assignment: turn.view.assignment.clone(),
            });
            if out.send(frame).await.is_err() {
                return;
            }
            member.answered(&state, generation);
            announced = Some(now);
        }
        let mut sent = false;
        for &(p, pos) in &turn.positions {
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
            if !member.hand_out(&state, &turn, &[(p, pos, chunk.next)]) {
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
            _ = turn.rebalanced.changed() => {}
            // Keep the session alive while nothing happens.
            () = tokio::time::sleep(turn.refresh) => {}
        }
    }
}

/// Sends a `row` frame for every changed key under the prefix (`row: null` when the
/// row is gone). A subscriber that falls more than a few batches behind is told to
/// query the table again, rather than making the server keep the backlog.
pub(super) async fn table_reader(
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
