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

/// Runs a script of `tests/browser` with `args`; panics with its output on failure.
fn node(script: &str, args: &[&str]) {
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(workspace_root().join("tests/browser"))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{script} failed in Chromium:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where screenshots go: `target/screenshots`.
fn shots() -> String {
    let dir = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn docs_page_renders_offline() {
    if browser_missing() {
        return;
    }
    let s = Server::start();
    node("docs.mjs", &[&s.base, &format!("{}/docs.png", shots())]);
}

/// The overview lists what the API made; the topic page tails live and produces;
/// the group page shows lag; the table page looks up a row and shows changes; the
/// layout fits a phone; no console errors, no request to another host.
#[test]
fn dashboard_pages_work_in_a_browser() {
    if browser_missing() {
        return;
    }
    let s = Server::start();
    node("dashboard.mjs", &[&s.base, &shots()]);
}

/// With auth on, the page asks for a token, shows only what the token covers and
/// explains a refusal.
#[test]
fn dashboard_works_with_auth_on() {
    if browser_missing() {
        return;
    }
    const SECRET: &str = "a-dashboard-test-secret-long-enough-for-hs256";
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let exp = sluice_tests::now_secs() + 600;
    let token = |perms: serde_json::Value| {
        sluice_tests::sign(
            jsonwebtoken::Algorithm::HS256,
            None,
            SECRET.as_bytes(),
            &serde_json::json!({"sub": "dash", "exp": exp, "sluice": perms}),
        )
    };
    let admin = token(serde_json::json!({"admin": true}));
    let narrow = token(serde_json::json!({"produce": ["secured"], "consume": ["secured"]}));
    node("dashboard.mjs", &[&s.base, &shots(), &admin, &narrow]);
}
