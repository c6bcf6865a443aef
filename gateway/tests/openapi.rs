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

/// Every `$ref` of the AsyncAPI document points at something it defines.
#[test]
fn asyncapi_references_resolve() {
    let doc = sluice_gateway::asyncapi_doc();
    fn walk(v: &serde_json::Value, doc: &serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    let path = r.trim_start_matches('#');
                    assert!(doc.pointer(path).is_some(), "dangling $ref {r}");
                }
                m.values().for_each(|v| walk(v, doc));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, doc)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc.pointer("/components/schemas/ServerFrame").is_some());
}
