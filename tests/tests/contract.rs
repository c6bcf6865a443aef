//! The OpenAPI document against independent tools: an OpenAPI 3.1 validator, and a
//! property-based contract test (schemathesis) of the running binary with auth on.
//! Both are Python tools that `tests/run` installs; without them these tests fail
//! with the install hint (or, with `SLUICE_TEST_SKIP=contract`, are listed as
//! skipped at the end of the run).

use std::process::Command;

use sluice_tests::{Server, client, tool_available, workspace_root};

/// Whether the validator or schemathesis is there; see [`tool_available`].
fn tool(what: &str, test: &str) -> bool {
    let ok = match what {
        "validator" => Command::new("python3")
            .args(["-c", "import openapi_spec_validator"])
            .status()
            .is_ok_and(|s| s.success()),
        _ => Command::new("st")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
    };
    tool_available(
        "contract",
        test,
        (!ok).then(|| format!("{what} is not installed")),
        "pip install -r tests/requirements.txt",
    )
}

#[test]
fn committed_document_is_valid_openapi_3_1() {
    if !tool("validator", "committed_document_is_valid_openapi_3_1") {
        return;
    }
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator", "openapi/openapi.json"])
        .current_dir(workspace_root())
        .output()
        .expect("run the validator");
    assert!(
        out.status.success(),
        "openapi.json is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn served_document_is_the_committed_one_and_docs_work_offline() {
    let s = Server::start();
    let c = client();
    let served: serde_json::Value = c
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("openapi/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    let r = c.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Every asset the page names is served by this server.
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap();
            assert!(
                !url.contains("://") && !url.starts_with("//"),
                "external asset {url}"
            );
            let r = c
                .get(s.url(&format!("/docs/{}", url.trim_start_matches("./"))))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "asset {url}");
        }
    }
    let init = sluice_tests::get_text(&c, &s, "/docs/swagger-initializer.js").await;
    assert!(init.contains("/openapi.json"), "{init}");
}

#[tokio::test]
async fn schemathesis_finds_no_contract_violation() {
    if !tool("schemathesis", "schemathesis_finds_no_contract_violation") {
        return;
    }
    let secret = "contract-test-secret-long-enough-for-hs256";
    let s = Server::start_with(&["--jwt-secret", secret, "--rate-limit-requests", "0"]);
    let claims = serde_json::json!({
        "sub": "contract",
        "exp": sluice_tests::now_secs() + 3600,
        "sluice": {"admin": true},
    });
    let token = sluice_tests::sign(
        jsonwebtoken::Algorithm::HS256,
        None,
        secret.as_bytes(),
        &claims,
    );
    // The topic whose event stream schemathesis reads (tests/schemathesis.toml),
    // with a record of each kind: JSON, keyed with headers, tombstone, binary.
    let c = client();
    let r = c
        .post(s.url("/v1/topics"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "sse", "partitions": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let records = serde_json::json!({"records": [
        {"value": 1},
        {"key": "a", "value": {"x": [2]}, "headers": {"h": "v"}},
        {"key": "a", "value": null},
        {"value_base64": "AAE="},
    ]});
    let r = c
        .post(s.url("/v1/topics/sse/records"))
        .bearer_auth(&token)
        .json(&records)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = Command::new("st")
        .args(["run", &s.url("/openapi.json"), "--checks", "all"])
        .args(["--max-examples", "60", "--seed", "7"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // The WebSocket is tested by tests/tests/ws.rs instead.
        .args(["--exclude-path", "/v1/ws"])
        // schemathesis reads tests/schemathesis.toml from its working directory.
        .current_dir(workspace_root().join("tests"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
