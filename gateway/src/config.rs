//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Sluice: a durable partitioned log, consumer groups and tables over HTTP and
/// WebSocket, in one binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port. The bound address is printed
    /// as `listening on http://ADDR`.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the data (created if missing).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long an `Idempotency-Key` or a CloudEvent's `source`+`id` is remembered, in
    /// seconds.
    #[arg(long, env = "SLUICE_DEDUPE_WINDOW_SECS", default_value_t = 3600)]
    pub dedupe_window_secs: u64,

    /// Commit in two phases: two fsyncs per group commit instead of one, so that even
    /// a deliberately crafted torn write can never pass for a valid commit. Off, a
    /// commit is still durable before it is acknowledged and a torn one is detected
    /// by its checksum and rolled back; on, small-record produce is slower.
    #[arg(long, env = "SLUICE_TWO_PHASE_COMMIT", default_value_t = false, action = clap::ArgAction::Set)]
    pub two_phase_commit: bool,

    /// Size of the storage page cache in MiB; most of the server's memory.
    #[arg(long, env = "SLUICE_CACHE_MB", default_value_t = 64)]
    pub cache_mb: usize,

    /// Close a connection whose request headers take longer than this to arrive, in
    /// milliseconds (slow-client protection).
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Log output format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// The limits request handlers check, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
        }
    }
}
