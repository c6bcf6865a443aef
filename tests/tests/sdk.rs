//! The JavaScript client (`web/sdk/`) against the real binary: its Node test
//! suites (`tests/sdk/*.test.mjs`, Node's test runner; one checks its types
//! against the OpenAPI document), a page in headless
//! Chromium that keeps a live subscription across a server restart, its types
//! under `tsc --noEmit`, and its size.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use sluice_tests::{RoundRobin, Server, tool_available, workspace_root};

fn node(test: &str) -> bool {
    let missing = Command::new("node")
        .arg("--version")
        .output()
        .map_or(Some("node is not installed".to_string()), |o| {
            (!o.status.success()).then(|| "node does not run".to_string())
        });
    tool_available(
        "sdk",
        test,
        missing,
        "apt-get install nodejs (Node 20 or later)",
    )
}

/// Runs Node's test runner over one suite with `env`; panics with its output.
fn node_suite(suite: &str, env: &[(&str, &str)], server: &Server) {
    // Node 20 has WebSocket behind this flag (later versions by default).
    let args = [
        "--experimental-websocket",
        "--test",
        "--test-reporter=spec",
        suite,
    ];
    sluice_tests::run_node(".", &args, env, server);
}

#[test]
fn node_suites_pass_against_the_binary() {
    if !node("node_suites_pass_against_the_binary") {
        return;
    }
    let s = Server::start();
    node_suite("tests/sdk/openapi.test.mjs", &[], &s);
    node_suite("tests/sdk/client.test.mjs", &[("SLUICE_URL", &s.base)], &s);
    let secret = "sdk-test-secret-of-enough-length-for-hs256";
    let authed = Server::start_with(&["--jwt-secret", secret]);
    node_suite(
        "tests/sdk/auth.test.mjs",
        &[("SLUICE_URL", &authed.base), ("SLUICE_JWT_SECRET", secret)],
        &authed,
    );
}

/// A page importing `/sdk/sluice.js` follows a topic while the server is killed
/// and started again: it sees every record once, in order, and a produce made
/// while the server was down lands once.
#[test]
fn a_page_keeps_its_subscription_across_a_restart() {
    if !sluice_tests::chromium_available("a_page_keeps_its_subscription_across_a_restart") {
        return;
    }
    let mut s = Server::start();
    let proxy = RoundRobin::start(&[&s.base]);
    let mut child = Command::new("node")
        .args(["sdk-restart.mjs", &proxy.base])
        .current_dir(workspace_root().join("tests/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        said.push(line.clone());
        if line == "restart now" {
            s.kill();
            std::thread::sleep(std::time::Duration::from_millis(700));
            s.restart();
            proxy.retarget(&[&s.base]);
            writeln!(stdin, "restarted").expect("tell the page");
        }
    }
    let out = child.wait_with_output().expect("node exits");
    assert!(
        out.status.success(),
        "the page failed:\n{}\n{}\nthe server's warnings:\n{}",
        said.join("\n"),
        String::from_utf8_lossy(&out.stderr),
        s.warnings()
    );
}

/// `tsc --noEmit --strict` over the declarations and a typed usage file; and the
/// client's size, minified and gzipped, under its 15 KB budget.
#[test]
fn types_check_and_the_client_stays_small() {
    let tsc = workspace_root().join("tests/sdk/node_modules/.bin/tsc");
    let esbuild = workspace_root().join("tests/sdk/node_modules/.bin/esbuild");
    let missing = [&tsc, &esbuild]
        .iter()
        .find(|p| !p.exists())
        .map(|p| format!("{} is not installed", p.display()));
    if !tool_available(
        "sdk",
        "types_check_and_the_client_stays_small",
        missing,
        "(cd tests/sdk && npm ci)",
    ) {
        return;
    }
    let out = Command::new(&tsc)
        .args(["--noEmit", "-p", "tsconfig.json"])
        .current_dir(workspace_root().join("tests/sdk"))
        .output()
        .expect("run tsc");
    assert!(
        out.status.success(),
        "tsc:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&esbuild)
        .args(["../../web/sdk/sluice.js", "--minify", "--format=esm"])
        .current_dir(workspace_root().join("tests/sdk"))
        .output()
        .expect("run esbuild");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&out.stdout).unwrap();
    let gzipped = gz.finish().unwrap().len();
    println!(
        "sluice.js: {} bytes minified, {gzipped} bytes minified and gzipped",
        out.stdout.len()
    );
    assert!(gzipped < 15 * 1024, "the client is {gzipped} bytes gzipped");
    // It packs for npm with its module and types.
    let out = Command::new("npm")
        .args(["pack", "--dry-run", "--json"])
        .current_dir(workspace_root().join("web/sdk"))
        .output()
        .expect("run npm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("npm's JSON");
    let files: Vec<&str> = packed[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    for f in ["sluice.js", "sluice.d.ts", "package.json"] {
        assert!(files.contains(&f), "the package lacks {f}: {files:?}");
    }
}
