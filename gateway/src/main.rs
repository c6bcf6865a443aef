//! The `sluice` binary: parse the configuration, set up logging and metrics, bind
//! the address and hand over to [`sluice_gateway::run`]; or run one of the other
//! commands (token, backup, restore).

use anyhow::Context;
use sluice_gateway::{Cli, Command, Config, LogFormat, Permissions, TokenArgs, cli};
use tokio::net::TcpListener;

/// jemalloc: measured faster than the system allocator on the request path, with a
/// lower peak RSS under the benchmark's load. It also serves the C libraries'
/// `malloc` (librdkafka allocates and frees on different threads for every record
/// it reads, which glibc's allocator does slowly): 6% less CPU per record read over
/// Kafka.
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
    let metrics = sluice_gateway::install_metrics()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    sluice_gateway::run(config, listener, Some(metrics), shutdown_signal()).await
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
