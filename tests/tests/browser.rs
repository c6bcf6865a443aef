//! Pages in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! from `tests/browser`). `.ci/run` installs both; on a machine without them the
//! tests say so and pass, except under CI, where they fail.

use std::path::Path;
use std::process::Command;

use sluice_tests::{Server, workspace_root};

fn browser_missing() -> bool {
    let dir = workspace_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = if !Path::new(&chromium).exists() {
        Some(format!(
            "Chromium is not installed at {chromium} (apt-get install chromium)"
        ))
    } else if !dir.join("node_modules/playwright-core").exists() {
        Some("playwright-core is not installed (cd tests/browser && npm ci)".to_string())
    } else {
        None
    };
    if let Some(why) = &missing {
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; .ci/run installs it"
        );
        eprintln!("SKIPPED: {why}");
    }
    missing.is_some()
}

#[test]
fn docs_page_renders_offline() {
    if browser_missing() {
        return;
    }
    let s = Server::start();
    let shots = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg("docs.mjs")
        .arg(&s.base)
        .arg(shots.join("docs.png"))
        .current_dir(workspace_root().join("tests/browser"))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the docs page failed in Chromium:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
