//! The `sluice backup` and `sluice restore` commands.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use axum::body::Body;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;

use crate::config::{BackupArgs, RestoreArgs};

/// Downloads `GET /v1/backup` into `--out`: to a temporary file beside it, synced,
/// checked to open as a Sluice database, then renamed into place.
pub async fn backup(args: &BackupArgs) -> anyhow::Result<sluice_log::Summary> {
    let uri: axum::http::Uri = args.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://HOST:PORT (for https, download /v1/backup with curl)");
    }
    let authority = uri.authority().context("--url has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = axum::http::Request::get("/v1/backup").header("host", authority.as_str());
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = sender.send_request(req.body(Body::empty())?).await?;
    let status = res.status();
    let mut body = Body::new(res.into_body()).into_data_stream();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk?);
        }
        bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let tmp = partial(&args.out);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = async {
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?)?;
        }
        file.sync_all()?;
        anyhow::Ok(())
    }
    .await;
    let checked = written.and_then(|()| Ok(sluice_log::inspect(&tmp)?));
    match checked {
        Ok(summary) => {
            std::fs::rename(&tmp, &args.out)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context("the backup is incomplete or damaged; nothing was written"))
        }
    }
}

fn partial(out: &Path) -> std::path::PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Fills `--data-dir` from `--from`.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<sluice_log::Summary> {
    Ok(sluice_log::restore(
        &args.from,
        &args.data_dir,
        args.replace,
    )?)
}

/// One line describing what a backup holds.
pub fn describe(summary: &sluice_log::Summary) -> String {
    format!(
        "{} topics, {} records, {} bytes of records, epoch {}",
        summary.topics, summary.records, summary.bytes, summary.epoch
    )
}
