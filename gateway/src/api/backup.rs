//! `GET /v1/backup`: a consistent copy of the database, streamed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use sluice_openapi::Problem;
use tokio::io::AsyncReadExt;

use crate::api::call;
use crate::auth::{Object, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Download a backup (admin): the whole database as of the last commit, taken
/// while the server serves. Writes wait while the server copies the file locally;
/// the download itself holds nothing up. `sluice restore` turns the file into a
/// data directory.
#[utoipa::path(get, path = "/v1/backup", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The database file (`Content-Length` is exact).", body = sluice_openapi::BackupFile, content_type = "application/octet-stream"),
        (status = 401, description = "`unauthorized`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: needs admin.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`backup_in_progress`: one backup at a time.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store refuses writes after a failed commit.", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn backup(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(Object::Admin)?;
    // Each backup holds a copy of the database on the server's disk until it is
    // downloaded: one at a time.
    let Ok(permit) = state.stats.backups.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_in_progress",
            "another backup is being taken or downloaded; try again when it is done",
        ));
    };
    let log = state.log.clone();
    let (file, len) = call(|r| log.snapshot(r)).await?;
    let file = tokio::fs::File::from_std(file);
    let chunks = futures_util::stream::unfold((file, permit), |(mut file, permit)| async move {
        let mut buf = BytesMut::with_capacity(256 * 1024);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok::<_, std::io::Error>(buf.freeze()), (file, permit))),
            Err(e) => Some((Err(e), (file, permit))),
        }
    });
    let name = format!(
        "attachment; filename=\"sluice-{}-{}.redb\"",
        state.log.epoch(),
        sluice_log::now_ms()
    );
    let mut response = Body::from_stream(chunks).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
