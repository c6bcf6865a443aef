//! The `sluice` binary: parse the configuration, open the data directory, serve.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_gateway::config::LogFormat;
use sluice_gateway::state::Waiters;
use sluice_gateway::{Config, app, open_log, server};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let waiters = Arc::new(Waiters::default());
    let log = open_log(&config, waiters.clone())
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data_dir = %config.data_dir.display(), log_epoch = log.epoch(), "data directory open");
    println!("listening on http://{addr}");
    let router = app(&config, log.clone(), waiters);
    server::run(
        listener,
        router,
        Duration::from_millis(config.header_timeout_ms),
        Duration::from_secs(10),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped serving; closing the log");
    drop(log);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
