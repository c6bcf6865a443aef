//! The end-to-end harness: builds the real `sluice` binary once, starts it on a free
//! port with a temporary data directory, and hands tests its address. Tests and the
//! benchmark talk to it only over real HTTP.

pub mod conformance;
pub mod receiver;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the `sluice` binary, built on first use with the profile the tests run in
/// (or taken from `SLUICE_BIN`).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SLUICE_BIN") {
            return PathBuf::from(p);
        }
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "sluice-gateway",
            "--bin",
            "sluice",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building sluice failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("sluice")
    })
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A running `sluice` process. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh temporary data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with a fresh temporary data directory and extra flags.
    pub fn start_with(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(tmp.path().join("data"), args);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing (or new) data directory.
    pub fn start_in(data_dir: PathBuf, args: &[&str]) -> Server {
        Self::start_full(data_dir, args, &[])
    }

    /// Starts a server with a fresh temporary data directory, extra flags and
    /// environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_full(tmp.path().join("data"), args, env);
        s._tmp = Some(tmp);
        s
    }

    fn start_full(data_dir: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if engine() == Engine::Kafka && !args.iter().any(|a| a == "--backend") {
            args.extend(kafka_args(&data_dir));
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base) = spawn(&data_dir, &args, &env);
        Server {
            child,
            base,
            data_dir,
            args,
            env,
            _tmp: None,
        }
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL, then start again on the same data directory with the same flags.
    pub fn restart(&mut self) {
        self.kill();
        let (child, base) = spawn(&self.data_dir, &self.args, &self.env);
        self.child = child;
        self.base = base;
    }

    /// Changes the flags the next [`Server::restart`] starts with (the
    /// engine's flags stay).
    pub fn edit_args(&mut self, f: impl FnOnce(&mut Vec<String>)) {
        f(&mut self.args);
    }

    /// The lines of the server's log at WARN or above, for a failing test's message.
    pub fn warnings(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Process id, for signals and RSS readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited
    /// with success.
    pub fn terminate(&mut self) -> bool {
        self.send_term();
        self.wait()
    }

    /// Sends SIGTERM and returns at once.
    pub fn send_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit; returns whether it exited with success.
    pub fn wait(&mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what its server warned about.
        if std::thread::panicking() {
            let warnings = self.warnings();
            if !warnings.is_empty() {
                let tail: Vec<&str> = warnings.lines().rev().take(40).collect();
                eprintln!("server {} warned (last {} lines):", self.base, tail.len());
                for l in tail.into_iter().rev() {
                    eprintln!("  {l}");
                }
            }
        }
        // A server of its own temporary directory on the Kafka engine leaves its
        // topics behind in the shared cluster: delete them.
        if self._tmp.is_some()
            && let Some(i) = self.args.iter().position(|a| a == "--kafka-topic-prefix")
            && let Some(prefix) = self.args.get(i + 1)
            && let Ok(bootstrap) = std::env::var("SLUICE_KAFKA_BOOTSTRAP")
        {
            delete_kafka_topics(&bootstrap, prefix);
        }
    }
}

/// A test's WebSocket connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON: within 20 s however many pings come between,
/// else the test fails.
pub async fn next_json(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a text frame within 20 s")
            .expect("socket open")
            .expect("frame");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The storage engine the harness starts servers on: `SLUICE_TEST_ENGINE=kafka`
/// runs every server that does not choose its own `--backend` on the Kafka test
/// cluster (`SLUICE_KAFKA_BOOTSTRAP`), each under a topic prefix of its own so
/// that tests share the cluster without meeting; otherwise the embedded engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Kafka,
}

/// The engine this run starts servers on.
pub fn engine() -> Engine {
    match std::env::var("SLUICE_TEST_ENGINE").as_deref() {
        Ok("kafka") => Engine::Kafka,
        Ok("embedded") | Ok("") | Err(_) => Engine::Embedded,
        Ok(other) => panic!("SLUICE_TEST_ENGINE is embedded or kafka, not {other:?}"),
    }
}

/// The flags that put a server on the Kafka test cluster, with a topic prefix
/// derived from its data directory (so a restart on the same directory finds
/// its topics again).
fn kafka_args(data_dir: &Path) -> Vec<String> {
    let bootstrap = std::env::var("SLUICE_KAFKA_BOOTSTRAP")
        .ok()
        .filter(|b| !b.is_empty())
        .expect(
            "SLUICE_TEST_ENGINE=kafka needs the Kafka test cluster: tests/kafka/cluster \
             start, then export \
             SLUICE_KAFKA_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
        );
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(data_dir.as_os_str().as_encoded_bytes());
    let prefix = format!("t{:012x}.", h.finish() & 0xffff_ffff_ffff);
    vec![
        "--backend".into(),
        "kafka".into(),
        "--kafka-bootstrap".into(),
        bootstrap,
        "--kafka-topic-prefix".into(),
        prefix,
        "--sink-secret-key".into(),
        "sluice-test-cluster".into(),
    ]
}

/// Deletes every topic of the cluster at `bootstrap` whose name starts with
/// `prefix` (best effort).
fn delete_kafka_topics(bootstrap: &str, prefix: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let timeout = Duration::from_secs(10);
    let Ok(md) = admin.inner().fetch_metadata(None, timeout) else {
        return;
    };
    let names: Vec<&str> = md
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if !names.is_empty() {
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let _ = futures_executor::block_on(admin.delete_topics(&names, &options));
    }
}

fn spawn(data_dir: &Path, args: &[String], env: &[(String, String)]) -> (Child, String) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .expect("server log file");
    let mut child = Command::new(binary())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start sluice");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
            panic!("sluice did not report its address; its log:\n{log}");
        }
    }
}

/// A reqwest client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

/// Creates a topic and returns its JSON.
pub async fn create_topic(c: &reqwest::Client, s: &Server, name: &str, partitions: u32) -> Value {
    let r = c
        .post(s.url("/v1/topics"))
        .json(&serde_json::json!({"name": name, "partitions": partitions}))
        .send()
        .await
        .expect("create topic");
    assert_eq!(r.status(), 201, "create topic {name}");
    r.json().await.expect("topic json")
}

/// `GET path` and its JSON body.
pub async fn get_json(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    c.get(s.url(path))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json body")
}

/// `GET path` and its body as text.
pub async fn get_text(c: &reqwest::Client, s: &Server, path: &str) -> String {
    c.get(s.url(path))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text body")
}

/// Waits (bounded) until a table is live and has applied everything its topic
/// holds; returns its description. Over Kafka a server restarted after
/// `kill -9` writes its tables again once the killed process's leases expire
/// (the cluster's session timeout, 30 s), so the bound is longer than that.
pub async fn table_caught_up(c: &reqwest::Client, s: &Server, table: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1800 {
        last = get_json(c, s, &format!("/v1/tables/{table}")).await;
        if last["lag"] == 0 && last["state"] == "live" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("table {table} never caught up: {last}");
}

/// Produces `records` to `topic` in one request, which must succeed; returns the
/// answer.
pub async fn produce_records(
    c: &reqwest::Client,
    s: &Server,
    topic: &str,
    records: Vec<Value>,
) -> Value {
    let r = c
        .post(s.url(&format!("/v1/topics/{topic}/records")))
        .json(&serde_json::json!({ "records": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A WebSocket connection to a server with a row subscription of `table` (id
/// `t`) for keys starting with `key_prefix`, once the server said it subscribed.
pub async fn subscribe_rows(s: &Server, table: &str, key_prefix: &str) -> Ws {
    use futures_util::SinkExt;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/v1/ws", s.base.replace("http://", "ws://")))
            .await
            .unwrap();
    let subscribe =
        serde_json::json!({"op": "subscribe", "id": "t", "table": table, "key_prefix": key_prefix});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        subscribe.to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    ws
}

/// Waits (bounded, 120 s) until a gateway's answer about a table satisfies
/// `done` (given its status and body), `what` saying what is awaited; returns the
/// body.
pub async fn table_until(
    c: &reqwest::Client,
    s: &Server,
    table: &str,
    what: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c
            .get(s.url(&format!("/v1/tables/{table}")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "table {table} on {} never {what}: {status} {body}",
            s.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until a gateway knows a table.
pub async fn table_known(c: &reqwest::Client, s: &Server, table: &str) {
    table_until(c, s, table, "was listed", |status, _| status == 200).await;
}

/// The table shards whose lease `s` holds over Kafka, as its log last told of
/// each, as `table/shard`.
pub fn leases_held(s: &Server) -> std::collections::BTreeSet<String> {
    let log = std::fs::read_to_string(s.data_dir.with_extension("log")).unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))?;
        Some(
            line[at + name.len() + 2..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect(),
        )
    };
    let mut held = std::collections::BTreeSet::new();
    for line in log.lines() {
        let Some(table) = field(line, "table") else {
            continue;
        };
        let shard = field(line, "shard").unwrap_or_else(|| "0".into());
        if line.contains("this gateway holds the table's lease") {
            held.insert(format!("{table}/{shard}"));
        } else if line.contains("the table's lease went to another gateway") {
            held.remove(&format!("{table}/{shard}"));
        } else if line.contains("handed the table over") {
            held.retain(|h| !h.starts_with(&format!("{table}/")));
        }
    }
    held
}

/// How many shards of `table` a set of leases (see [`leases_held`]) holds.
pub fn shards_of(held: &std::collections::BTreeSet<String>, table: &str) -> usize {
    held.iter()
        .filter(|h| h.strip_prefix(table).is_some_and(|r| r.starts_with('/')))
        .count()
}

/// Waits (bounded) until the table leases the gateways' logs tell of are held as
/// `split` says (given what each gateway holds); answers them.
pub async fn leases_until(
    gateways: &[&Server],
    what: &str,
    split: impl Fn(&[std::collections::BTreeSet<String>]) -> bool,
) -> Vec<std::collections::BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held: Vec<_> = gateways.iter().map(|s| leases_held(s)).collect();
        if split(&held) {
            return held;
        }
        assert!(Instant::now() < deadline, "leases never {what}: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Flags for gateways on the Kafka test cluster that share one topic prefix (so
/// the same topics, groups and tables), with sessions of 6 s for members and
/// table leases.
pub fn shared_kafka_args(bootstrap: &str, prefix: &str) -> Vec<String> {
    [
        "--backend",
        "kafka",
        "--kafka-bootstrap",
        bootstrap,
        "--kafka-topic-prefix",
        prefix,
        "--group-session-timeout-ms",
        "6000",
        "--sink-secret-key",
        "sluice-test-cluster",
    ]
    .map(String::from)
    .to_vec()
}

/// Every row of a table, by key.
pub async fn all_rows(c: &reqwest::Client, s: &Server, table: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/tables/{table}/rows?limit=1000");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get_json(c, s, &path).await;
        for r in page["rows"].as_array().unwrap() {
            out.insert(r["key"].as_str().unwrap().to_string(), r["row"].clone());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
}

/// Fetches records of one partition from an offset.
pub async fn fetch(
    c: &reqwest::Client,
    s: &Server,
    topic: &str,
    partition: u32,
    offset: u64,
    limit: usize,
) -> Value {
    let r = c
        .get(s.url(&format!(
            "/v1/topics/{topic}/partitions/{partition}/records?offset={offset}&limit={limit}"
        )))
        .send()
        .await
        .expect("fetch");
    assert_eq!(r.status(), 200, "fetch {topic}/{partition}@{offset}");
    r.json().await.expect("fetch json")
}

/// Reads a whole partition from `from` to its end.
pub async fn fetch_all(c: &reqwest::Client, s: &Server, topic: &str, partition: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let body = fetch(c, s, topic, partition, offset, 10_000).await;
        let records = body["records"].as_array().expect("records").clone();
        offset = body["next_offset"].as_u64().expect("next_offset");
        let done = records.is_empty() || offset >= body["high_watermark"].as_u64().unwrap();
        out.extend(records);
        if done {
            return out;
        }
    }
}

/// Resident set size of a process in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of a process in bytes (Linux).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A test fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `alg` and the key in `key` (a secret, or a private key PEM).
pub fn sign(alg: jsonwebtoken::Algorithm, kid: Option<&str>, key: &[u8], claims: &Value) -> String {
    use jsonwebtoken::{Algorithm as A, EncodingKey, Header};
    let k = match alg {
        A::HS256 | A::HS384 | A::HS512 => EncodingKey::from_secret(key),
        A::RS256 | A::RS384 | A::RS512 => EncodingKey::from_rsa_pem(key).expect("rsa key"),
        A::ES256 | A::ES384 => EncodingKey::from_ec_pem(key).expect("ec key"),
        A::EdDSA => EncodingKey::from_ed_pem(key).expect("ed key"),
        other => panic!("unsupported {other:?}"),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &k).expect("sign")
}

/// Whether a test that needs an outside tool may run. A missing tool fails the test
/// with `install`'s hint, unless `SLUICE_TEST_SKIP` names `group` (a comma-separated
/// list, e.g. `browser,contract`): then the test is recorded in
/// `target/skipped-tests.txt`, which `tests/run` prints at the end of the run, and
/// `false` is returned.
pub fn tool_available(group: &str, test: &str, missing: Option<String>, install: &str) -> bool {
    let Some(why) = missing else {
        return true;
    };
    let opted_out = std::env::var("SLUICE_TEST_SKIP")
        .is_ok_and(|v| v.split(',').any(|g| g.trim() == group || g.trim() == "all"));
    assert!(
        opted_out,
        "{why}. Install it with: {install} (or run `bash tests/run`, which installs \
         every tool the tests need). To skip these tests instead, set \
         SLUICE_TEST_SKIP={group}."
    );
    let line = format!("{test}: {why} (SLUICE_TEST_SKIP={group})\n");
    eprintln!("SKIPPED {line}");
    let path = workspace_root().join("target/skipped-tests.txt");
    let _ = std::fs::create_dir_all(path.parent().expect("target dir"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
    }
    false
}

/// Whether Debian's Chromium and playwright-core (in `tests/browser`) are there
/// for a browser test; see [`tool_available`].
pub fn chromium_available(test: &str) -> bool {
    let dir = workspace_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Path::new(&chromium).exists() {
        Some(format!("Chromium is not installed at {chromium}"))
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some("playwright-core is not installed in tests/browser".to_string())
    } else {
        None
    };
    tool_available(
        "browser",
        test,
        missing,
        "apt-get install chromium && (cd tests/browser && npm ci)",
    )
}

/// Runs `node` with `args` in `dir` (relative to the workspace) and `env`;
/// panics with its output and `server`'s warnings when it fails.
pub fn run_node(dir: &str, args: &[&str], env: &[(&str, &str)], server: &Server) {
    let out = Command::new("node")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root().join(dir))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node {} failed:\n{}{}\nthe server's warnings:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.warnings()
    );
}

/// The test Kafka cluster's bootstrap servers (`SLUICE_KAFKA_BOOTSTRAP`, which
/// `bash tests/run` sets after starting the cluster); `None` only when
/// `SLUICE_TEST_SKIP` names `kafka`, else the test fails with how to start one.
pub fn kafka_bootstrap(test: &str) -> Option<String> {
    let bootstrap = std::env::var("SLUICE_KAFKA_BOOTSTRAP")
        .ok()
        .filter(|b| !b.is_empty());
    let missing = bootstrap
        .is_none()
        .then(|| "no Kafka cluster: SLUICE_KAFKA_BOOTSTRAP is not set".to_string());
    if tool_available(
        "kafka",
        test,
        missing,
        "tests/kafka/cluster start, then export \
         SLUICE_KAFKA_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
    ) {
        bootstrap
    } else {
        None
    }
}

/// A small tmpfs mounted for one test, so that it can fill a disk; unmounted when
/// dropped. Mounting needs root (as CI runs); without it the test fails with that
/// hint, or is skipped with `SLUICE_TEST_SKIP=disk`.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB for `test`, or `None` when it was opted out of.
    pub fn mount(test: &str, mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "sluice-test"])
            .arg(dir.path())
            .output();
        let missing = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "could not mount a tmpfs: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("could not run mount: {e}")),
        };
        tool_available("disk", test, missing, "run the tests as root").then_some(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A round-robin TCP proxy in front of several gateways, as a load balancer
/// would stand: each new connection goes to the next backend that accepts it
/// (a dead one is passed over). With a client that opens a connection per
/// request ([`one_shot_client`]), every request alternates between instances.
pub struct RoundRobin {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    targets: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

impl RoundRobin {
    /// Starts a proxy to the `http://host:port` bases of `backends`.
    pub fn start(backends: &[&str]) -> RoundRobin {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let base = format!("http://{}", listener.local_addr().expect("proxy address"));
        let targets = std::sync::Arc::new(std::sync::RwLock::new(Self::addresses(backends)));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let shared = targets.clone();
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for inbound in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let first = next.fetch_add(1, Ordering::Relaxed);
                let targets = shared.read().expect("targets lock").clone();
                let outbound = (0..targets.len()).find_map(|i| {
                    let t = &targets[(first + i) % targets.len()];
                    std::net::TcpStream::connect(t).ok()
                });
                let Some(outbound) = outbound else { continue };
                for (mut from, mut to) in [
                    (
                        inbound.try_clone().expect("clone"),
                        outbound.try_clone().expect("clone"),
                    ),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        RoundRobin {
            base,
            stop,
            targets,
        }
    }

    fn addresses(backends: &[&str]) -> Vec<String> {
        backends
            .iter()
            .map(|b| b.trim_start_matches("http://").to_string())
            .collect()
    }

    /// Sends new connections to these backends from now on (a gateway restarted
    /// on another port, as a load balancer would be told).
    pub fn retarget(&self, backends: &[&str]) {
        *self.targets.write().expect("targets lock") = Self::addresses(backends);
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::net::TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

/// An HTTP client that keeps no idle connection: every request opens its own,
/// so a [`RoundRobin`] proxy sends each to the next instance.
pub fn one_shot_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client")
}

/// The churn run of a consumer group: two producers write to `topic` (made
/// already, 6 partitions) while consumers of `group` join, poll, commit after
/// processing, and leave or just stop (dying, as far as the group can tell),
/// over every request sent to `base`. In the end a steady consumer drains what is
/// left; every produced record was processed, and within a generation each
/// member saw each partition's offsets in increasing order.
pub async fn churn(c: reqwest::Client, base: &str, topic: &str, group: &str) {
    use rand::Rng;
    use serde_json::json;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let names: (Arc<str>, Arc<str>, Arc<str>) = (base.into(), topic.into(), group.into());
    let stop = Arc::new(AtomicBool::new(false));
    let produced: Arc<Mutex<BTreeSet<(u64, u64)>>> = Arc::default();
    let processed: Arc<Mutex<BTreeSet<(u64, u64)>>> = Arc::default();

    let mut producers = Vec::new();
    for _ in 0..2 {
        let (c, base, topic) = (c.clone(), names.0.clone(), names.1.clone());
        let (stop, produced) = (stop.clone(), produced.clone());
        producers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let records: Vec<Value> = (0..5).map(|i| json!({"value": i})).collect();
                let r: Value = c
                    .post(format!("{base}/v1/topics/{topic}/records"))
                    .json(&json!({"records": records}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                {
                    let mut p = produced.lock().unwrap();
                    for o in r["offsets"].as_array().unwrap() {
                        p.insert((
                            o["partition"].as_u64().unwrap(),
                            o["offset"].as_u64().unwrap(),
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    #[allow(clippy::too_many_arguments)]
    async fn consume(
        c: reqwest::Client,
        (base, topic, group): (Arc<str>, Arc<str>, Arc<str>),
        id: String,
        polls: usize,
        processed: Arc<Mutex<BTreeSet<(u64, u64)>>>,
        leave: bool,
    ) {
        let (base, topic, group) = (&*base, &*topic, &*group);
        // (generation, partition) -> last offset seen, for the ordering check.
        let mut last: HashMap<(u64, u64), u64> = HashMap::new();
        for _ in 0..polls {
            let v: Value = c
                .get(format!("{base}/v1/groups/{group}/topics/{topic}/records?consumer={id}&limit=20&session_timeout_ms=1000&wait_ms=100"))
                .send().await.unwrap().json().await.unwrap();
            let generation = v["generation"].as_u64().unwrap();
            let mut next: HashMap<u64, u64> = HashMap::new();
            for r in v["records"].as_array().unwrap() {
                let (p, o) = (
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                );
                if let Some(prev) = last.insert((generation, p), o) {
                    assert!(
                        o > prev,
                        "{id}: partition {p} went from {prev} to {o} in generation {generation}"
                    );
                }
                processed.lock().unwrap().insert((p, o));
                next.insert(p, o + 1);
            }
            if !next.is_empty() {
                let offsets: Vec<Value> = next
                    .iter()
                    .map(|(p, o)| json!({"topic": &*topic, "partition": p, "offset": o}))
                    .collect();
                let r = c
                    .post(format!("{base}/v1/groups/{group}/offsets"))
                    .json(&json!({"consumer": id, "generation": generation, "offsets": offsets}))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status() == 204 || r.status() == 409,
                    "commit: {}",
                    r.status()
                );
            }
        }
        if leave {
            c.delete(format!("{base}/v1/groups/{group}/consumers/{id}"))
                .send()
                .await
                .unwrap();
        }
        // Otherwise it just stops: killed, as far as the group can tell.
    }

    let mut consumers = Vec::new();
    for round in 0..6 {
        for k in 0..3 {
            let id = format!("c{round}-{k}");
            let polls = rand::rng().random_range(3..15);
            let leave = rand::rng().random_bool(0.5);
            consumers.push(tokio::spawn(consume(
                c.clone(),
                names.clone(),
                id,
                polls,
                processed.clone(),
                leave,
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Enough written to mean something, however slowly the engine acknowledges
    // (a cluster that has just started can take a while).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while produced.lock().unwrap().len() <= 100 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    for t in consumers {
        t.await.unwrap();
    }
    // A last, steady consumer drains what is left once the dead sessions expire.
    for _ in 0..200 {
        consume(
            c.clone(),
            names.clone(),
            "final".into(),
            1,
            processed.clone(),
            false,
        )
        .await;
        let d: Value = c
            .get(format!("{base}/v1/groups/{group}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let lag = d["topics"][0]["lag"].as_u64().unwrap();
        if lag == 0 && d["members"].as_array().unwrap().len() == 1 {
            break;
        }
    }
    let produced = produced.lock().unwrap();
    let processed = processed.lock().unwrap();
    assert!(
        produced.len() > 100,
        "too little was produced to mean anything"
    );
    let missing: Vec<_> = produced.difference(&processed).collect();
    assert!(
        missing.is_empty(),
        "never processed: {:?}",
        &missing[..missing.len().min(10)]
    );
}

/// The body of a group commit of what a poll `answer` of `consumer` returned:
/// per partition, the offset after the last record read, at the answer's
/// generation; `None` when it returned nothing.
pub fn commit_body(consumer: &str, topic: &str, answer: &Value) -> Option<Value> {
    let mut next: std::collections::BTreeMap<u64, u64> = Default::default();
    for r in answer["records"].as_array()? {
        let (p, o) = (r["partition"].as_u64()?, r["offset"].as_u64()?);
        let n = next.entry(p).or_default();
        *n = (*n).max(o + 1);
    }
    if next.is_empty() {
        return None;
    }
    let offsets: Vec<Value> = next
        .iter()
        .map(|(p, o)| serde_json::json!({"topic": topic, "partition": p, "offset": o}))
        .collect();
    Some(serde_json::json!({
        "consumer": consumer,
        "generation": answer["generation"],
        "offsets": offsets,
    }))
}

/// The value of the first sample of metric `name` whose labels contain
/// `labels`, in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
