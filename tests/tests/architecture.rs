//! The crate boundaries ARCHITECTURE.md states, checked from `cargo metadata`:
//! the storage, table and wire-type crates never depend (even indirectly) on HTTP,
//! an async runtime or auth, and the gateway reaches storage only through
//! `sluice-log` (no redb of its own).

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;
use sluice_tests::workspace_root;

/// Crates that mean HTTP, an async runtime or auth.
const FORBIDDEN: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "h2",
    "tower",
    "tower-http",
    "reqwest",
    "tungstenite",
    "tokio-tungstenite",
    "tokio",
    "async-std",
    "smol",
    "jsonwebtoken",
];

/// Every crate `package` depends on for its build (normal and build dependencies,
/// transitively; not dev-dependencies), by name.
fn closure(meta: &Value, package: &str) -> BTreeSet<String> {
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = name_of
        .iter()
        .find(|(_, n)| **n == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no package {package}"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let kept = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            let dep_id = dep["pkg"].as_str().unwrap();
            if kept && seen.insert(name_of[dep_id].to_string()) {
                todo.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn crate_boundaries_hold() {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    for krate in [
        "sluice-log",
        "sluice-kafka",
        "sluice-tables",
        "sluice-sinks",
        "sluice-sources",
        "sluice-openapi",
    ] {
        let deps = closure(&meta, krate);
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(bad.is_empty(), "{krate} depends on {bad:?}");
    }
    let direct = direct_deps(&meta, "sluice-gateway");
    assert!(
        !direct.iter().any(|d| d == "redb"),
        "the gateway must reach storage through sluice-log only: {direct:?}"
    );
    for krate in ["sluice-tables", "sluice-sinks"] {
        let deps = direct_deps(&meta, krate);
        assert!(
            !deps.iter().any(|d| d == "redb" || d == "sluice-kafka"),
            "{krate} keeps its state through the storage seam only: {deps:?}"
        );
    }
    let deps = direct_deps(&meta, "sluice-sources");
    assert!(
        !deps.iter().any(|d| d.starts_with("sluice-")),
        "sluice-sources stands alone: {deps:?}"
    );
    // The check sees through to what the gateway does pull in.
    assert!(closure(&meta, "sluice-gateway").contains("tokio"));
}

/// The names of a package's direct dependencies.
fn direct_deps(meta: &Value, package: &str) -> Vec<String> {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"))["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// The target this runs on, so `cargo metadata` resolves only its dependencies
/// (and needs no download for other platforms' crates).
fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// The gateway holds its storage as `Arc<dyn Backend>`: only `engine.rs`, which
/// chooses and opens the engine, names an engine's own types.
#[test]
fn the_gateway_reaches_storage_only_through_the_seam() {
    let src = workspace_root().join("gateway/src");
    let mut files = vec![src.clone()];
    let mut offenders = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("engine.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if names_engine(line) {
                offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "only gateway/src/engine.rs may name a storage engine:\n{}",
        offenders.join("\n")
    );
}

/// Whether a line of source names the embedded engine's handle or options.
fn names_engine(line: &str) -> bool {
    let imported = line.trim_start().starts_with("use sluice_log::")
        && line
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|w| w == "Log" || w == "LogOptions");
    imported
        || line.contains("sluice_log::Log")
        || line.contains("Log::open(")
        || line.contains("sluice_kafka")
}

#[test]
fn the_engine_check_sees_each_way_of_naming_it() {
    for line in [
        "use sluice_log::{Backend, Log};",
        "use sluice_log::LogOptions;",
        "    let l: sluice_log::Log = todo!();",
        "    let l = Log::open(dir, o)?;",
        "    let k = sluice_kafka::Kafka::open(options)?;",
    ] {
        assert!(names_engine(line), "{line}");
    }
    for line in [
        "use sluice_log::{Backend, Topic};",
        "    state.log.read(&t)",
    ] {
        assert!(!names_engine(line), "{line}");
    }
}

/// Handlers share code through layers (`stream`, `session`, `records`, `views`),
/// never by importing from one another: no module under `gateway/src/api/` or
/// `gateway/src/ws/` names another handler module.
#[test]
fn handler_modules_do_not_import_from_one_another() {
    let src = workspace_root().join("gateway/src");
    let handlers: Vec<String> = std::fs::read_dir(src.join("api"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().is_some_and(|s| s != "mod"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        handlers.len() > 5,
        "found the handler modules: {handlers:?}"
    );
    let mut offenders = Vec::new();
    for dir in ["api", "ws"] {
        for e in std::fs::read_dir(src.join(dir)).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let named = handlers
                    .iter()
                    .any(|h| line.contains(&format!("crate::api::{h}::")))
                    || (dir == "api" && line.contains("crate::ws::"));
                if named {
                    offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "handler modules import from one another:\n{}",
        offenders.join("\n")
    );
}

/// Each library crate's `lib.rs` opens with what the crate owns and what it
/// must not depend on.
#[test]
fn each_crate_says_what_it_owns_and_what_it_must_not_depend_on() {
    for path in [
        "log/src/lib.rs",
        "log/kafka/src/lib.rs",
        "tables/src/lib.rs",
        "tables/sinks/src/lib.rs",
        "tables/sources/src/lib.rs",
        "openapi/src/lib.rs",
        "gateway/src/lib.rs",
    ] {
        let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(doc.len() > 200, "{path} opens with no crate docs");
        let lower = doc.to_lowercase();
        assert!(
            lower.contains("own"),
            "{path}'s docs do not say what it owns"
        );
        assert!(
            lower.contains("never") || lower.contains("must not") || lower.contains("no http"),
            "{path}'s docs do not say what it must not depend on"
        );
    }
}
