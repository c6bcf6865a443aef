//! The committed `openapi/openapi.json` must be what the code generates.

use std::path::PathBuf;

#[test]
fn committed_openapi_json_is_current() {
    let generated = serde_json::to_string_pretty(&sluice_gateway::api_doc())
        .expect("document serializes")
        + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date; regenerate it with\n  UPDATE_OPENAPI=1 cargo test -p sluice-gateway --test openapi"
    );
}
