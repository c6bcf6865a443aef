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
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    for krate in ["sluice-log", "sluice-tables", "sluice-openapi"] {
        let deps = closure(&meta, krate);
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(bad.is_empty(), "{krate} depends on {bad:?}");
    }
    let direct: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sluice-gateway")
        .unwrap()["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !direct.iter().any(|d| d == "redb"),
        "the gateway must reach storage through sluice-log only: {direct:?}"
    );
    // The check sees through to what the gateway does pull in.
    assert!(closure(&meta, "sluice-gateway").contains("tokio"));
}
