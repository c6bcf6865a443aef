//! Configuration: flags, `SLUICE_*` environment variables and an optional TOML
//! file (`--config`). A flag wins over its variable, a variable over the file, and
//! the file over the built-in default. The file's keys are the flags' long names
//! (`data-dir` or `data_dir`); its values are checked like the flags' at start-up.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Sluice: a durable partitioned log, consumer groups and tables over HTTP and
/// WebSocket, in one binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a signed token (HS256, from --jwt-secret) with the given permissions.
    Token(TokenArgs),
    /// Download a consistent backup of a running server's data to a file.
    Backup(BackupArgs),
    /// Make a data directory from a backup file (the server must not be running on it).
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The server's address.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin token, when the server has auth on.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The file to write (replaced only once the backup is complete and verified).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to fill.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// Overwrite the data the directory already holds.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The shared secret the server verifies with.
    #[arg(long, env = "SLUICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Subject (`sub`): who the token is for.
    #[arg(long, default_value = "cli")]
    pub sub: String,
    /// Topics (or `*` patterns) it may produce to; repeatable.
    #[arg(long)]
    pub produce: Vec<String>,
    /// Topics (or patterns) it may read; repeatable.
    #[arg(long)]
    pub consume: Vec<String>,
    /// Tables (or patterns) it may query; repeatable.
    #[arg(long)]
    pub tables: Vec<String>,
    /// Consumer groups (or patterns) it may use; repeatable. Default: any.
    #[arg(long)]
    pub groups: Vec<String>,
    /// Administer topics, tables and groups.
    #[arg(long)]
    pub admin: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// `iss` claim, when the server requires one.
    #[arg(long, env = "SLUICE_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim, when the server requires one.
    #[arg(long, env = "SLUICE_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

impl Cli {
    /// Reads the configuration of this process: its arguments, its environment and
    /// the file named by `--config` or `SLUICE_CONFIG`. Exits with a message on error.
    pub fn load() -> Cli {
        Self::load_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Reads the configuration from `args` (the program name first), the
    /// environment and the config file they name.
    pub fn load_from(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = args.into_iter().collect();
        let mut cmd = Cli::command();
        if let Some(path) = config_path(&args) {
            cmd = with_file_defaults(cmd, &path)?;
        }
        let matches = cmd.try_get_matches_from_mut(args)?;
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }
}

/// The config file named by `--config PATH`, `--config=PATH` or `SLUICE_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("SLUICE_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Makes each setting of the TOML file at `path` the default of its flag, after
/// checking that the flag exists and that the value parses as the flag would.
fn with_file_defaults(
    mut cmd: clap::Command,
    path: &std::path::Path,
) -> Result<clap::Command, clap::Error> {
    let fail = |cmd: &mut clap::Command, msg: String| {
        cmd.error(
            ErrorKind::InvalidValue,
            format!("config file {}: {msg}", path.display()),
        )
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut cmd, format!("cannot read it: {e}"))),
    };
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut cmd, e.to_string())),
    };
    for (key, value) in table {
        let wanted = key.replace('-', "_");
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| {
                a.get_long().is_some_and(|l| l.replace('-', "_") == wanted)
                    || a.get_id().as_str() == wanted
            })
            .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
            .cloned()
        else {
            let known: Vec<String> = cmd
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "config" | "help" | "version"))
                .map(str::to_string)
                .collect();
            return Err(fail(
                &mut cmd,
                format!(
                    "unknown setting '{key}'; settings are the flags' long names: {}",
                    known.join(", ")
                ),
            ));
        };
        let many = matches!(arg.get_action(), ArgAction::Append);
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        let values: Option<Vec<String>> = match &value {
            toml::Value::Array(items) if many => items.iter().map(scalar).collect(),
            v => scalar(v).map(|s| vec![s]),
        };
        let Some(values) = values else {
            let want = if many {
                "a string, number or boolean, or a list of them"
            } else {
                "a string, number or boolean"
            };
            return Err(fail(&mut cmd, format!("'{key}' must be {want}")));
        };
        for v in &values {
            if let Err(why) = check_value(&arg, v) {
                return Err(fail(&mut cmd, format!("'{key}' = {v:?}: {why}")));
            }
        }
        cmd = cmd.mut_arg(arg.get_id().clone(), |a| a.default_values(values));
    }
    Ok(cmd)
}

/// Parses `value` as `arg` would parse it on the command line.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err("expected true or false".to_string()),
        };
    }
    let long = arg.get_long().unwrap_or_default();
    let probe = clap::Command::new("sluice").no_binary_name(true).arg(
        arg.clone()
            .env(None::<&str>)
            .default_values(Vec::<String>::new()),
    );
    match probe.try_get_matches_from([format!("--{long}={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}

/// Which storage engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded redb log.
    Embedded,
    /// An Apache Kafka cluster.
    Kafka,
}

/// The server's options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// A TOML file of settings, keyed by the flags' long names (`data-dir = "/var/lib/sluice"`).
    /// Flags and environment variables win over it.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port. The bound address is printed
    /// as `listening on http://ADDR`. Without auth, only loopback addresses are
    /// allowed unless --insecure-no-auth is given.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the data (created if missing).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,

    /// The storage engine: `embedded` (the redb log in `--data-dir`, one machine)
    /// or `kafka` (an Apache Kafka cluster, `--kafka-bootstrap`).
    #[arg(long, env = "SLUICE_BACKEND", value_enum, default_value_t = BackendKind::Embedded)]
    pub backend: BackendKind,

    /// With `--backend kafka`: some brokers, `host:port,...`.
    #[arg(long, env = "SLUICE_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,

    /// With `--backend kafka`: a librdkafka client setting, `name=value`
    /// (repeatable; e.g. `security.protocol=SASL_PLAINTEXT`,
    /// `sasl.mechanism=SCRAM-SHA-512`, `sasl.username=...`).
    #[arg(
        long = "kafka-config",
        env = "SLUICE_KAFKA_CONFIG",
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    pub kafka_config: Vec<String>,

    /// With `--backend kafka`: the replication factor of new topics (default 3,
    /// or the number of brokers if smaller).
    #[arg(long, env = "SLUICE_KAFKA_REPLICATION")]
    pub kafka_replication: Option<u16>,

    /// With `--backend kafka`: put before the name of every Kafka topic the
    /// gateway makes or sees, its own catalog and dedupe topics too, so that
    /// deployments with different prefixes share a cluster without seeing each
    /// other's topics (e.g. `staging.`). Empty by default.
    #[arg(long, env = "SLUICE_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,

    /// With `--backend kafka`: the most shards a new state table is split into,
    /// each folded by one gateway in transactions of its own (by default one
    /// per source partition, so every gateway can share the work; 1 folds each
    /// table on one gateway, in one transaction a round, which is what a single
    /// gateway does fastest).
    #[arg(long, env = "SLUICE_KAFKA_TABLE_SHARDS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub kafka_table_shards: Option<u32>,

    /// Verify bearer tokens with this HS256 shared secret (at least 32 bytes).
    #[arg(
        long,
        env = "SLUICE_JWT_SECRET",
        hide_env_values = true,
        group = "jwt_key"
    )]
    pub jwt_secret: Option<String>,

    /// Verify bearer tokens with this PEM public key (RSA, EC P-256/P-384 or Ed25519).
    #[arg(long, env = "SLUICE_JWT_PUBLIC_KEY", group = "jwt_key")]
    pub jwt_public_key: Option<PathBuf>,

    /// Verify bearer tokens with the keys of this JWKS file, chosen by `kid`.
    #[arg(long, env = "SLUICE_JWKS_FILE", group = "jwt_key")]
    pub jwks_file: Option<PathBuf>,

    /// Require this `iss` claim.
    #[arg(long, env = "SLUICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Require this `aud` claim.
    #[arg(long, env = "SLUICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    #[arg(long, env = "SLUICE_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Serve without auth on a non-loopback address. Everyone who can reach the port
    /// can read, write and delete everything.
    #[arg(long, env = "SLUICE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Browser origins allowed to call the REST API (CORS); repeatable. `*` allows any.
    #[arg(
        long = "cors-origin",
        env = "SLUICE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Browser origins allowed to open a WebSocket, besides the server's own; repeatable.
    /// Default: any.
    #[arg(long = "ws-origin", env = "SLUICE_WS_ORIGINS", value_delimiter = ',')]
    pub ws_origins: Vec<String>,

    /// Largest WebSocket message a client may send, in bytes.
    #[arg(long, env = "SLUICE_WS_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Most subscriptions on one WebSocket.
    #[arg(long, env = "SLUICE_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub ws_max_subscriptions: usize,

    /// Seconds between the server's WebSocket pings.
    #[arg(long, env = "SLUICE_WS_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ws_ping_interval_secs: u64,

    /// Close a WebSocket the client has sent nothing on (not even a pong) for this
    /// many seconds.
    #[arg(long, env = "SLUICE_WS_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_idle_timeout_secs: u64,

    /// Memory for recently read records shared by subscribers, in MiB.
    #[arg(long, env = "SLUICE_TAIL_CACHE_MB", default_value_t = 8)]
    pub tail_cache_mb: usize,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Request bodies read or handled at once, in MiB, over all clients; further
    /// requests wait their turn. Bounds the memory bodies take under any load.
    #[arg(long, env = "SLUICE_MAX_INFLIGHT_BODY_MB", default_value_t = 32)]
    pub max_inflight_body_mb: usize,

    /// Requests per second allowed per principal (token subject, or client address
    /// without auth); 0 turns the limit off. Over it: 429 with Retry-After.
    /// Default 2000, and off for a server without auth on a loopback address
    /// (every local client is one principal there).
    #[arg(long, env = "SLUICE_RATE_LIMIT_REQUESTS")]
    pub rate_limit_requests: Option<u32>,

    /// Produced records per second allowed per principal; 0 turns the limit off.
    /// Default 200000, and off like `--rate-limit-requests`.
    #[arg(long, env = "SLUICE_RATE_LIMIT_RECORDS")]
    pub rate_limit_records: Option<u32>,

    /// Reverse proxies (addresses or CIDR ranges) whose `Forwarded` and
    /// `X-Forwarded-For` headers name the client, for per-address rate limits
    /// without auth; repeatable. Headers from any other peer are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "SLUICE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Loopback, private and link-local networks (CIDR ranges or addresses)
    /// that sinks may deliver to; repeatable. Public addresses are always
    /// allowed, cloud metadata addresses never. Checked when a sink is made and
    /// on the address each request actually connects to.
    #[arg(
        long = "sink-allow-net",
        env = "SLUICE_SINK_ALLOW_NETS",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub sink_allow_nets: Vec<ipnet::IpNet>,

    /// The passphrase whose SHA-256 seals sinks' signing secrets where they are
    /// stored. Gateways sharing a Kafka cluster must be given the same one;
    /// without it, the embedded engine keeps a random key in `sink-secret.key`
    /// in the data directory, and over Kafka signed sinks are refused.
    #[arg(long, env = "SLUICE_SINK_SECRET_KEY", hide_env_values = true)]
    pub sink_secret_key: Option<String>,

    /// Most connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Close a connection whose request headers take longer than this to arrive, in
    /// milliseconds (slow-client protection).
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Answer 408 to a request not finished in this many seconds (a slow body
    /// upload, say); long-polls are bounded below it.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT_SECS", default_value_t = 90)]
    pub request_timeout_secs: u64,

    /// After SIGTERM or Ctrl-C, keep serving this many milliseconds with /readyz
    /// answering 503, so load balancers stop sending traffic before connections close.
    #[arg(long, env = "SLUICE_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// Compacted topics: the longest a partition keeps records that a later record of
    /// the same key supersedes before a compaction pass removes them, in milliseconds
    /// (a pass runs sooner once half a partition's records are new).
    #[arg(long, env = "SLUICE_COMPACTION_MAX_DIRTY_MS", default_value_t = 60_000)]
    pub compaction_max_dirty_ms: u64,

    /// Session timeout of a consumer-group member that names none, in milliseconds:
    /// a member that does not poll for this long loses its partitions.
    #[arg(long, env = "SLUICE_GROUP_SESSION_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1_000..=300_000))]
    pub group_session_timeout_ms: u64,

    /// Bind each consumer id to the token subject that first polled with it, so one
    /// client cannot commit for, or evict, another's member.
    #[arg(long, env = "SLUICE_BIND_CONSUMERS_TO_SUBJECT")]
    pub bind_consumers_to_subject: bool,

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

    /// Appends are refused (507) while the data directory's disk has less free
    /// space than this, in MiB, so deletes, retention and compaction always have
    /// room to run; they resume on their own once space is back.
    #[arg(long, env = "SLUICE_MIN_FREE_DISK_MB", default_value_t = 64)]
    pub min_free_disk_mb: u64,

    /// Size of the storage page cache in MiB; most of the server's memory.
    #[arg(long, env = "SLUICE_CACHE_MB", default_value_t = 48)]
    pub cache_mb: usize,

    /// Threads serving requests (default: one per core).
    #[arg(long, env = "SLUICE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Log output format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// An address (a one-address range) or a CIDR range.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an IP address or a CIDR range"))
}

impl Config {
    /// The request and record rate limits in effect: off by default for a server
    /// without auth on a loopback address, where every client is the same one.
    pub fn rate_limits(&self) -> (u32, u32) {
        let open_local = !self.auth_configured() && self.listen.ip().is_loopback();
        let default = |on: u32| if open_local { 0 } else { on };
        (
            self.rate_limit_requests.unwrap_or(default(2_000)),
            self.rate_limit_records.unwrap_or(default(200_000)),
        )
    }

    /// Whether any token verification key is configured.
    pub fn auth_configured(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.jwks_file.is_some()
    }

    /// Refuses settings that would expose an unprotected server.
    pub fn check(&self) -> Result<(), String> {
        if self.backend == BackendKind::Kafka && self.bind_consumers_to_subject {
            return Err(
                "--bind-consumers-to-subject is not offered with --backend kafka (the group \
                 lives in the cluster, which keeps no subjects)"
                    .into(),
            );
        }
        if self.backend == BackendKind::Kafka && self.kafka_bootstrap.is_none() {
            return Err("--backend kafka needs --kafka-bootstrap HOST:PORT,...".into());
        }
        if !self.kafka_topic_prefix.is_empty()
            && (self.kafka_topic_prefix.len() > 100
                || !sluice_log::valid_name(&self.kafka_topic_prefix))
        {
            return Err("--kafka-topic-prefix is at most 100 characters of [A-Za-z0-9._-]".into());
        }
        if let Some(bad) = self.kafka_config.iter().find(|kv| !kv.contains('=')) {
            return Err(format!("--kafka-config takes NAME=VALUE, not '{bad}'"));
        }
        if !self.auth_configured() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(format!(
                "refusing to listen on {} without auth: configure --jwt-secret, --jwt-public-key \
                 or --jwks-file, or pass --insecure-no-auth to serve everyone everything",
                self.listen
            ));
        }
        if self.request_timeout_secs * 1000 <= crate::stream::MAX_WAIT_MS {
            return Err(format!(
                "--request-timeout-secs must exceed the longest long-poll ({} s)",
                crate::stream::MAX_WAIT_MS / 1000
            ));
        }
        Ok(())
    }
}
