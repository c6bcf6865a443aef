//! Processors over HTTP: make (admin; JSON or SQL), list and describe (those
//! whose output the token may read), delete (admin).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sluice_openapi::{
    Problem, ProcessorCounts, ProcessorDefinition, ProcessorInfo, ProcessorList,
    ProcessorPartition, ProcessorSql,
};
use sluice_tables::{Error as TableError, ProcessorStatus, StreamDef};

use crate::auth::{Object, Principal};
use crate::error::{ApiError, Body, Path, parse_json, reject_duplicate_keys};
use crate::state::AppState;

/// A processor engine error as a problem.
fn problem(e: TableError) -> ApiError {
    match e {
        TableError::Invalid(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_processor", m)
        }
        TableError::NotFound(n) => ApiError::new(
            StatusCode::NOT_FOUND,
            "processor_not_found",
            format!("processor '{n}' does not exist"),
        ),
        TableError::Exists(n) => ApiError::new(
            StatusCode::CONFLICT,
            "processor_exists",
            format!("processor '{n}' already exists"),
        ),
        TableError::NoTable(t) => ApiError::new(
            StatusCode::NOT_FOUND,
            "table_not_found",
            format!("table '{t}' does not exist"),
        ),
        other => other.into(),
    }
}

/// A definition (or a part of one) in the other crate's type: the wire types and
/// the engine's have the same JSON shape.
fn same_shape<A: serde::Serialize, B: serde::de::DeserializeOwned>(
    a: &A,
) -> Result<B, serde_json::Error> {
    serde_json::to_value(a).and_then(serde_json::from_value)
}

/// The wire form of a processor's status.
fn info(s: ProcessorStatus) -> ProcessorInfo {
    let partitions: Vec<ProcessorPartition> = s
        .partitions
        .iter()
        .map(|&(partition, processed, end)| ProcessorPartition {
            partition,
            processed_offset: processed,
            end_offset: end,
            lag: end.saturating_sub(processed),
            processed_here: s.processed_here.as_ref().map(|ps| ps.contains(&partition)),
        })
        .collect();
    let c = s.counts;
    ProcessorInfo {
        name: s.def.name.clone(),
        definition: same_shape(&s.def).expect("a stream definition is a wire definition"),
        sql: s.sql,
        state: match s.state {
            sluice_tables::ProcessorState::Running => "running".into(),
            sluice_tables::ProcessorState::Failed => "failed".into(),
        },
        reason: s.reason,
        created_ms: s.created_ms,
        lag: partitions.iter().map(|p| p.lag).sum(),
        counts: ProcessorCounts {
            read: c.read,
            written: c.written,
            filtered: c.filtered,
            dead_lettered: c.dead_lettered,
            skipped: c.skipped,
        },
        partitions,
    }
}

/// Make a processor (admin), in JSON or SQL: it makes its output topic and
/// derives it from the source's first retained record on, exactly once. Or
/// replace one's definition (`CREATE OR REPLACE STREAM`, `replace: true`).
#[utoipa::path(post, path = "/v1/processors", tag = "processors",
    request_body(content(
        (ProcessorDefinition = "application/json"),
        (ProcessorSql = "application/json"),
    )),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced (`CREATE OR REPLACE`, or `replace: true`): it goes on from its committed offsets.", body = ProcessorInfo),
        (status = 201, description = "Made.", body = ProcessorInfo),
        (status = 400, description = "`invalid_json`, `invalid_body`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`topic_not_found`: the source topic; `table_not_found`: the joined table.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`processor_exists`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_processor`: a bad expression or unsupported SQL, an output topic that exists, a source derived from the processor's own output; the detail says which.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_processor(
    State(state): State<AppState>,
    principal: Principal,
    Body(body, _in_flight): Body,
) -> Result<(StatusCode, Json<ProcessorInfo>), ApiError> {
    principal.require(Object::Admin)?;
    reject_duplicate_keys(&body)?;
    let value: serde_json::Value = parse_json(&body)?;
    let bad = |e: serde_json::Error| ApiError::bad_request("invalid_body", e.to_string());
    let (def, sql, replace) = if value.get("sql").is_some() {
        let ProcessorSql {
            sql,
            partitions,
            on_error: oe,
            wait_ms,
        } = serde_json::from_value(value).map_err(bad)?;
        let (mut def, replace) = StreamDef::from_sql_replacing(&sql).map_err(problem)?;
        def.partitions = partitions;
        if let Some(oe) = oe {
            def.on_error = same_shape(&oe).map_err(bad)?;
        }
        match (&mut def.join, wait_ms) {
            (Some(j), w) => j.wait_ms = w,
            (None, Some(_)) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_processor",
                    "wait_ms is for a join, and the SQL has none",
                ));
            }
            (None, None) => {}
        }
        (def, Some(sql), replace)
    } else {
        let mut d: ProcessorDefinition = serde_json::from_value(value).map_err(bad)?;
        let replace = d.replace.take() == Some(true);
        let def: StreamDef = same_shape(&d).map_err(bad)?;
        (def, None, replace)
    };
    let engine = state.processors.clone();
    let (status, replaced) = tokio::task::spawn_blocking(move || {
        if replace {
            engine.create_or_replace(def, sql)
        } else {
            engine.create(def, sql).map(|s| (s, false))
        }
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(problem)?;
    let code = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(info(status))))
}

/// List processors: those whose output topic the token may read.
#[utoipa::path(get, path = "/v1/processors", tag = "processors",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The processors.", body = ProcessorList),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_processors(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ProcessorList>, ApiError> {
    let engine = state.processors.clone();
    let all = tokio::task::spawn_blocking(move || {
        engine
            .names()
            .into_iter()
            .filter_map(|n| engine.status(&n).ok())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let processors = all
        .into_iter()
        .filter(|s| principal.may(Object::Consume(&s.def.name)))
        .map(info)
        .collect();
    Ok(Json(ProcessorList { processors }))
}

/// Describe a processor: definition, state, counters, progress per source
/// partition (needs read access to its output topic).
#[utoipa::path(get, path = "/v1/processors/{processor}", tag = "processors",
    params(("processor" = String, Path, description = "Processor name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The processor.", body = ProcessorInfo),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`processor_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_processor(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<ProcessorInfo>, ApiError> {
    principal.require(Object::Consume(&name))?;
    let engine = state.processors.clone();
    let status = tokio::task::spawn_blocking(move || engine.status(&name))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(problem)?;
    Ok(Json(info(status)))
}

/// Delete a processor (admin). Its output and dead-letter topics stay, as
/// ordinary topics that clients may then write.
#[utoipa::path(delete, path = "/v1/processors/{processor}", tag = "processors",
    params(("processor" = String, Path, description = "Processor name", pattern = "^[A-Za-z0-9._-]{1,249}$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`processor_not_found`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete_processor(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Object::Admin)?;
    let engine = state.processors.clone();
    tokio::task::spawn_blocking(move || engine.delete(&name))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}
