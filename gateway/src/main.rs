//! The `sluice` binary: parse the configuration, open the data directory, serve;
//! or mint a token (`sluice token`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_gateway::auth::Permissions;
use sluice_gateway::config::{Cli, Command, LogFormat, TokenArgs};
use sluice_gateway::server::{self, ServeLimits};
use sluice_gateway::state::Waiters;
use sluice_gateway::{Config, app, build_state, cli, open_log};
use tokio::net::TcpListener;

/// jemalloc: measured faster than the system allocator on the request path, with a
/// lower peak RSS under the benchmark's load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::load();
    match &cli.command {
        Some(Command::Token(args)) => {
            println!("{}", mint(args)?);
            return Ok(());
        }
        Some(Command::Backup(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let summary = runtime.block_on(cli::backup(args))?;
            println!(
                "backup written to {}: {}",
                args.out.display(),
                cli::describe(&summary)
            );
            return Ok(());
        }
        Some(Command::Restore(args)) => {
            let summary = cli::restore(args)?;
            println!(
                "restored into {}: {} (a new epoch: clients' stored offsets reset)",
                args.data_dir.display(),
                cli::describe(&summary)
            );
            return Ok(());
        }
        None => {}
    }
    let config = cli.serve;
    init_tracing(config.log_format);
    if let Err(e) = config.check() {
        anyhow::bail!(e);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder
        .enable_all()
        // Reads run on blocking threads; a bounded pool keeps a burst of subscribers
        // from growing hundreds of threads.
        .max_blocking_threads(64)
        .build()?;
    runtime.block_on(serve(config))
}

fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        iat: u64,
        exp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<&'a str>,
        sluice: Permissions,
    }
    let now = sluice_log::now_ms() / 1000;
    let claims = Claims {
        sub: &args.sub,
        iat: now,
        exp: now + args.ttl_secs,
        iss: args.issuer.as_deref(),
        aud: args.audience.as_deref(),
        sluice: Permissions {
            produce: args.produce.clone(),
            consume: args.consume.clone(),
            tables: args.tables.clone(),
            groups: (!args.groups.is_empty()).then(|| args.groups.clone()),
            admin: args.admin,
        },
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(args.jwt_secret.as_bytes()),
    )?)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = sluice_gateway::telemetry::install()?;
    let upkeep = metrics.clone();
    every(Duration::from_secs(5), move || upkeep.run_upkeep());
    let waiters = Arc::new(Waiters::default());
    let log = open_log(&config, waiters.clone())
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let (stopping, shutdown) = tokio::sync::watch::channel(false);
    let state = build_state(&config, log.clone(), waiters, shutdown, Some(metrics))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data_dir = %config.data_dir.display(), log_epoch = log.epoch(), "data directory open");
    if state.auth.is_none() {
        tracing::warn!(
            "auth is off: anyone who can reach {addr} can read, write and delete everything"
        );
    }
    // Sessions end on time even when nobody polls the group.
    let groups = state.groups.clone();
    every(Duration::from_millis(250), move || groups.expire_all());
    let limits = state.limits.clone();
    every(Duration::from_secs(60), move || limits.forget_idle());
    println!("listening on http://{addr}");
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let router = app(&config, state);
    server::run(
        listener,
        router,
        ServeLimits {
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            drain: Duration::from_secs(10),
            max_connections: config.max_connections,
        },
        async move {
            shutdown_signal().await;
            // /readyz answers 503 from here on; WebSockets and event streams close
            // themselves.
            let _ = stopping.send(true);
            if !delay.is_zero() {
                tracing::info!(?delay, "shutting down: not ready, still serving");
                tokio::time::sleep(delay).await;
            }
        },
    )
    .await?;
    tracing::info!("stopped serving; closing the log");
    drop(log);
    Ok(())
}

/// Runs `f` every `period` in the background.
fn every(period: Duration, f: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            f();
        }
    });
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
