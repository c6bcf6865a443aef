//! README's quickstart, run as a user would paste it: every `sh` block from
//! "Quickstart" up to "Running", in order, against the real binary, each command
//! taking what the ones before it made and answered. Any answer of 400 or more
//! fails the run (curl `--fail-with-body`).

use std::process::Command;

use sluice_tests::{Server, workspace_root};

/// The quickstart's shell blocks, in order.
fn quickstart() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("## Quickstart")
        .expect("README has a Quickstart");
    let end = readme[start..]
        .find("\n## Running")
        .map_or(readme.len(), |e| start + e);
    let mut blocks = Vec::new();
    let mut rest = &readme[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("an sh block ends");
        blocks.push(body[..close].to_string());
        rest = &body[close..][3..];
    }
    blocks
}

#[test]
fn the_quickstart_works_pasted_top_to_bottom() {
    let blocks = quickstart();
    assert!(blocks.len() >= 3, "found {} sh blocks", blocks.len());
    let s = Server::start();
    let host = s.base.trim_start_matches("http://");
    let script = format!(
        "set -euo pipefail\n\
         curl() {{ command curl --fail-with-body --show-error \"$@\"; echo; }}\n{}",
        blocks.join("\n").replace("localhost:8080", host)
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What a reader is told to expect, in the answers.
    for expected in [
        r#""name":"orders""#,
        r#""generation":"#,
        r#""name":"Ada""#,
        r#""tier":"gold""#,
        r#""rows":["#,
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
}
