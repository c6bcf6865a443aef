//! `GET /v1/stats`: one reading of everything a dashboard shows on its overview.

use axum::Json;
use axum::extract::State;
use sluice_openapi::{GroupStats, Problem, ServerStats, TableStats, TopicStats};

use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{group_names, group_topics, info, may_see};

/// The server at a glance: version, uptime, disk use, and per topic, group and table
/// its size, traffic and lag (only those the token covers). Counters are cumulative;
/// read twice for rates.
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A reading.", body = ServerStats),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ServerStats>, ApiError> {
    let topics = state
        .log
        .topics()
        .iter()
        .filter(|t| may_see(&principal, t.name()))
        .map(|t| {
            let parts = t.partitions();
            TopicStats {
                name: t.name().to_string(),
                partitions: t.partition_count(),
                records: parts.iter().map(|p| p.end_offset - p.start_offset).sum(),
                bytes: parts.iter().map(|p| p.bytes).sum(),
                produced_total: parts.iter().map(|p| p.end_offset).sum(),
                delivered_total: state.stats.delivered_total(t.name()),
            }
        })
        .collect();
    let mut groups = Vec::new();
    for (group, names) in group_names(&state)? {
        // A group's lag tells about its topics: shown only with read access to them.
        if !principal.may(Object::Group(&group))
            || !names.iter().all(|t| principal.may(Object::Consume(t)))
        {
            continue;
        }
        let (_, members) = crate::session::members(&state, &group)?;
        let topics = names.iter().filter_map(|n| state.log.topic(n)).collect();
        let lag = group_topics(&state, &group, &members, topics)?
            .iter()
            .map(|t| t.lag)
            .sum();
        groups.push(GroupStats {
            members: members.len(),
            lag,
            group,
        });
    }
    let tables = state
        .tables
        .names()
        .into_iter()
        .filter(|n| principal.may(Object::Table(n)))
        .filter_map(|n| state.tables.status(&n).ok())
        .map(|s| {
            let t = info(s);
            TableStats {
                name: t.name,
                state: t.state,
                rows: t.rows,
                lag: t.lag,
            }
        })
        .collect();
    let stats = state.stats.clone();
    let data_bytes = tokio::task::spawn_blocking(move || stats.data_bytes())
        .await
        .unwrap_or(0);
    let disk = state.log.health().disk;
    Ok(Json(ServerStats {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_ms: state.stats.started_ms(),
        uptime_ms: state.stats.uptime_ms(),
        now_ms: sluice_log::now_ms(),
        data_bytes,
        disk_free_bytes: disk.map_or(0, |d| d.free_bytes),
        min_free_disk_bytes: disk.map_or(0, |d| d.min_free_bytes),
        websocket_connections: state.stats.websockets(),
        topics,
        groups,
        tables,
    }))
}
