//! Tables over HTTP: define (JSON or SQL), list, describe, delete, and query rows
//! by key (with ETag, long-poll and read-your-writes) or by key prefix.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_openapi::{
    Problem, Row, RowPage, RowResponse, SqlDefinition, TableDefinition, TableInfo, TableList,
};
use sluice_tables::{Error as TableError, TableDef};
use utoipa::IntoParams;

use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, Query, parse_json, reject_duplicate_keys};
use crate::state::AppState;
use crate::views::info;

impl From<TableError> for ApiError {
    fn from(e: TableError) -> Self {
        match e {
            // Well-formed but meaningless (a bad path, unsupported SQL): 422.
            TableError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_table", m)
            }
            TableError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "table_not_found", e.to_string())
            }
            TableError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "table_exists", e.to_string())
            }
            TableError::NoSource(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "topic_not_found", e.to_string())
            }
            TableError::Log(e) => e.into(),
            other => {
                crate::telemetry::request_span()
                    .in_scope(|| tracing::error!(error = %other, "table engine error"));
                ApiError::internal()
            }
        }
    }
}

/// Define a table from a topic (admin), in JSON or SQL. It fills from the topic's
/// first record in the background and then follows it live.
#[utoipa::path(post, path = "/v1/tables", tag = "tables",
    request_body(content(
        (TableDefinition = "application/json"),
        (SqlDefinition = "application/json"),
    )),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = TableInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`: the source topic.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`table_exists`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_table`: a bad path, filter or unsupported SQL; the detail says where.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_table(
    State(state): State<AppState>,
    principal: Principal,
    Body(body, _in_flight): Body,
) -> Result<(StatusCode, Json<TableInfo>), ApiError> {
    principal.require(Object::Admin)?;
    // Read as a `Value` below, where a repeated key would silently win.
    reject_duplicate_keys(&body)?;
    let value: serde_json::Value = parse_json(&body)?;
    let (def, sql) = if value.get("sql").is_some() {
        let SqlDefinition { sql, changelog } = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        let mut def = TableDef::from_sql(&sql)?;
        def.changelog = changelog;
        def.compile()?;
        (def, Some(sql))
    } else {
        let def: TableDef = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        (def, None)
    };
    let engine = state.tables.clone();
    let status = tokio::task::spawn_blocking(move || engine.create(def, sql))
        .await
        .map_err(|_| ApiError::internal())??;
    Ok((StatusCode::CREATED, Json(info(status))))
}

/// List tables.
#[utoipa::path(get, path = "/v1/tables", tag = "tables",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tables the token may query.", body = TableList),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_tables(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<TableList>, ApiError> {
    let mut tables = Vec::new();
    for name in state.tables.names() {
        if principal.may(Object::Table(&name))
            && let Ok(s) = state.tables.status(&name)
        {
            tables.push(info(s));
        }
    }
    Ok(Json(TableList { tables }))
}

/// Describe a table: definition, state, rows, skipped records, lag per partition.
#[utoipa::path(get, path = "/v1/tables/{table}", tag = "tables",
    params(("table" = String, Path, description = "Table name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The table.", body = TableInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`table_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_table(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<TableInfo>, ApiError> {
    principal.require(Object::Table(&name))?;
    Ok(Json(info(state.tables.status(&name)?)))
}

/// Delete a table and its rows (admin). Re-creating it rebuilds it from the topic.
#[utoipa::path(delete, path = "/v1/tables/{table}", tag = "tables",
    params(("table" = String, Path, description = "Table name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`table_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_table(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    let engine = state.tables.clone();
    tokio::task::spawn_blocking(move || engine.delete(&name))
        .await
        .map_err(|_| ApiError::internal())??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RowParams {
    /// With `If-None-Match`: wait up to this many milliseconds (at most 60000) for the
    /// row to change. With `after`: how long to wait for the table to catch up
    /// (default 5000).
    #[param(minimum = 0, maximum = 60000)]
    wait_ms: Option<u64>,
    /// Read your writes: `partition:offset,...` as a produce answered; the query waits
    /// until the table has applied those records.
    #[param(pattern = "^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*$")]
    after: Option<String>,
}

fn etag(row: &serde_json::Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.to_string().hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// One row by key.
///
/// Carries the source offsets it reflects and an `ETag`; `If-None-Match` answers
/// 304 when the row is unchanged, and with `wait_ms` waits for it to change.
#[utoipa::path(get, path = "/v1/tables/{table}/rows/{key}", tag = "tables",
    params(
        ("table" = String, Path, description = "Table name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ("key" = String, Path, description = "Row key"),
        RowParams,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The row.", body = RowResponse),
        (status = 304, description = "Unchanged."),
        (status = 400, description = "`invalid_query`: a malformed `after`, or one naming a partition the source does not have.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`table_not_found`, `row_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "`offset_out_of_range`: `after` names an offset not written yet.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`table_lagging`: the table had not applied `after` in time; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_row(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, key)): Path<(String, String)>,
    Query(params): Query<RowParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(Object::Table(&name))?;
    let wait_ms = params
        .wait_ms
        .unwrap_or(if params.after.is_some() { 5_000 } else { 0 });
    if wait_ms > crate::stream::MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            "wait_ms may be at most 60000",
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let after = params.after.as_deref().map(parse_offsets).transpose()?;
    if let Some(after) = &after {
        check_after(&state, &name, after)?;
    }
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut changes = state.table_waiters.subscribe(&name);
    loop {
        changes.borrow_and_update();
        let (applied, _) = state.tables.progress(&name)?;
        let caught_up = after.as_ref().is_none_or(|want| {
            want.iter()
                .all(|(p, o)| applied.get(*p as usize).is_some_and(|a| a > o))
        });
        let now = tokio::time::Instant::now();
        if caught_up {
            let row = state.tables.get(&name, &key)?;
            let tag = row.as_ref().map(|(r, _)| etag(r));
            let unchanged = known.is_some() && tag == known;
            if !(unchanged && now < deadline) {
                return Ok(match row {
                    None => ApiError::new(
                        StatusCode::NOT_FOUND,
                        "row_not_found",
                        format!("table '{name}' has no row '{key}'"),
                    )
                    .into_response(),
                    Some(_) if unchanged => {
                        let mut r = StatusCode::NOT_MODIFIED.into_response();
                        r.headers_mut().insert(
                            header::ETAG,
                            HeaderValue::from_str(&tag.unwrap_or_default()).expect("etag is ascii"),
                        );
                        r
                    }
                    Some((row, offsets)) => {
                        let mut r = Json(RowResponse {
                            key,
                            row,
                            offsets: offsets
                                .iter()
                                .enumerate()
                                .map(|(p, o)| (p.to_string(), *o))
                                .collect::<BTreeMap<_, _>>(),
                        })
                        .into_response();
                        r.headers_mut().insert(
                            header::ETAG,
                            HeaderValue::from_str(&tag.unwrap_or_default()).expect("etag is ascii"),
                        );
                        r
                    }
                });
            }
        } else if now >= deadline {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "table_lagging",
                format!("table '{name}' has not applied the requested offsets yet"),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            // Time is up; the next round answers with what there is.
            continue;
        }
    }
}

/// Refuses `after` offsets the table can never reach: a partition its source does
/// not have (400), or an offset not yet written (416), instead of waiting for them.
fn check_after(state: &AppState, table: &str, after: &[(u32, u64)]) -> Result<(), ApiError> {
    let source = state.tables.status(table)?.def.source;
    let topic = crate::api::topic(state, &source)?;
    for &(p, o) in after {
        let info = topic.partition(p).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "after names partition {p}; the source topic '{source}' has {}",
                    topic.partition_count()
                ),
            )
        })?;
        // Written through another gateway a moment ago: the engine's own figure.
        let end = if o >= info.end_offset {
            tokio::task::block_in_place(|| state.log.end_offset(&topic, p))
        } else {
            info.end_offset
        };
        if o >= end {
            return Err(sluice_log::Error::OffsetOutOfRange {
                offset: o,
                start: info.start_offset,
                end,
            }
            .into());
        }
    }
    Ok(())
}

fn parse_offsets(s: &str) -> Result<Vec<(u32, u64)>, ApiError> {
    s.split(',')
        .map(|pair| {
            pair.split_once(':')
                .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad_request("invalid_query", "after is `partition:offset,...`"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScanParams {
    /// Only keys starting with this.
    prefix: Option<String>,
    /// Keys after this one (the previous page's `next`).
    after: Option<String>,
    /// Rows per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Rows by key prefix, in key order, a page at a time.
#[utoipa::path(get, path = "/v1/tables/{table}/rows", tag = "tables",
    params(
        ("table" = String, Path, description = "Table name", pattern = "^[A-Za-z0-9._-]{1,249}$"),
        ScanParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of rows.", body = RowPage),
        (status = 400, description = "`invalid_query`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`table_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn scan_rows(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<ScanParams>,
) -> Result<Json<RowPage>, ApiError> {
    principal.require(Object::Table(&name))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let (rows, more) = state.tables.scan(
        &name,
        params.prefix.as_deref().unwrap_or(""),
        params.after.as_deref(),
        limit,
    )?;
    let next = more.then(|| rows.last().map(|(k, _)| k.clone())).flatten();
    Ok(Json(RowPage {
        rows: rows
            .into_iter()
            .map(|(key, row)| Row { key, row })
            .collect(),
        next,
    }))
}
