//! Pages in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! from `tests/browser`). `tests/run` installs both; without them these tests fail
//! with the install hint (or, with `SLUICE_TEST_SKIP=browser`, are listed as
//! skipped at the end of the run).

use sluice_tests::{Server, workspace_root};

fn browser(test: &str) -> bool {
    sluice_tests::chromium_available(test)
}

/// Runs a script of `tests/browser` with `args` against `server`; panics with its
/// output and the server's warnings on failure.
fn node(server: &Server, script: &str, args: &[&str]) {
    let all: Vec<&str> = std::iter::once(script)
        .chain(args.iter().copied())
        .collect();
    sluice_tests::run_node("tests/browser", &all, &[], server);
}

/// Where screenshots go: `target/screenshots`.
fn shots() -> String {
    let dir = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn docs_page_renders_offline() {
    if !browser("docs_page_renders_offline") {
        return;
    }
    let s = Server::start();
    node(&s, "docs.mjs", &[&s.base, &format!("{}/docs.png", shots())]);
}

/// The overview lists what the API made; the topic page tails live and produces;
/// the group page shows lag; the table page looks up a row and shows changes; a
/// sink made with its form delivers, pauses, resumes and sends a test; the
/// layout fits a phone; no console errors, no request to another host.
#[test]
fn dashboard_pages_work_in_a_browser() {
    if !browser("dashboard_pages_work_in_a_browser") {
        return;
    }
    let s = Server::start_with(&["--sink-allow-net", "127.0.0.0/8"]);
    node(&s, "dashboard.mjs", &[&s.base, &shots()]);
}

/// With auth on, the page asks for a token, shows only what the token covers and
/// explains a refusal.
#[test]
fn dashboard_works_with_auth_on() {
    if !browser("dashboard_works_with_auth_on") {
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
    node(&s, "dashboard.mjs", &[&s.base, &shots(), &admin, &narrow]);
}

/// A page of another origin calls the API with a bearer token, a JSON body, an
/// idempotency key and a CloudEvents header; each needs a CORS preflight that names
/// those headers. A page of an origin not allowed is blocked.
#[test]
fn another_origin_calls_the_api_with_a_token() {
    if !browser("another_origin_calls_the_api_with_a_token") {
        return;
    }
    const SECRET: &str = "a-cors-test-secret-that-is-long-enough-for-hs256";
    // The page's port: free now, served by the script.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let origin = format!("http://localhost:{port}");
    let s = Server::start_with(&["--jwt-secret", SECRET, "--cors-origin", &origin]);
    let token = sluice_tests::sign(
        jsonwebtoken::Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &serde_json::json!({"sub": "app", "exp": sluice_tests::now_secs() + 600, "sluice": {"admin": true}}),
    );
    node(&s, "cors.mjs", &[&s.base, &token, &port]);
}
