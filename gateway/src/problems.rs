//! Every problem `code` the API answers with, once, with its status and what it
//! means; served as the page `GET /problems` that each problem's `type`
//! (`/problems#<code>`) points at.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// `(code, status, meaning)`, grouped by status.
pub(crate) const CODES: &[(&str, u16, &str)] = &[
    (
        "invalid_json",
        400,
        "The body is not valid JSON; the detail says where.",
    ),
    (
        "invalid_body",
        400,
        "The body is JSON of the wrong shape: a missing, unknown, repeated or mistyped field; the detail names it.",
    ),
    (
        "invalid_query",
        400,
        "A query parameter is malformed or out of its range; the detail gives the range.",
    ),
    (
        "invalid_path",
        400,
        "A path segment does not parse (for example a partition that is not a number).",
    ),
    (
        "invalid_request",
        400,
        "The request is well formed but asks for something the server cannot do as asked (for example a topic setting out of range).",
    ),
    (
        "invalid_record",
        400,
        "A record is malformed: no value, both `value` and `value_base64`, bad base64 or an out-of-range timestamp.",
    ),
    (
        "invalid_cloudevent",
        400,
        "A CloudEvent misses a required attribute or has one of the wrong type.",
    ),
    (
        "invalid_idempotency_key",
        400,
        "The `Idempotency-Key` header is empty, too long or not visible ASCII.",
    ),
    (
        "invalid_group",
        400,
        "A group name is not 1 to 249 characters of `[A-Za-z0-9._-]`.",
    ),
    (
        "invalid_consumer",
        400,
        "A consumer id is not 1 to 249 characters of `[A-Za-z0-9._-]`.",
    ),
    (
        "invalid_last_event_id",
        400,
        "`Last-Event-ID` is not `partition:offset`.",
    ),
    (
        "invalid_frame",
        400,
        "A WebSocket message is not a frame the protocol knows.",
    ),
    (
        "duplicate_subscription",
        400,
        "A WebSocket subscription id is already in use on this socket.",
    ),
    (
        "unknown_subscription",
        400,
        "A WebSocket frame names a subscription id this socket does not have.",
    ),
    (
        "too_many_subscriptions",
        400,
        "The socket has as many subscriptions as `--ws-max-subscriptions` allows.",
    ),
    (
        "unauthorized",
        401,
        "No valid bearer token: missing, malformed, expired, badly signed or for another issuer or audience.",
    ),
    (
        "signature_missing",
        401,
        "A webhook to a source lacks a header its scheme signs with, or has it malformed; nothing was written.",
    ),
    (
        "signature_stale",
        401,
        "A webhook's signed timestamp is further from now than the source's tolerance (a replay, or a clock off); nothing was written.",
    ),
    (
        "signature_invalid",
        401,
        "No secret of the source signs the webhook as it came (a wrong secret, or the body changed); nothing was written.",
    ),
    (
        "forbidden",
        403,
        "The token does not cover the topic, group or table, or the consumer id belongs to another token subject.",
    ),
    ("not_found", 404, "No such route or file."),
    ("topic_not_found", 404, "The topic does not exist."),
    (
        "partition_not_found",
        404,
        "The topic has no such partition.",
    ),
    (
        "group_not_found",
        404,
        "The group has no members and no committed offsets.",
    ),
    (
        "member_not_found",
        404,
        "The group has no live member with that consumer id.",
    ),
    ("table_not_found", 404, "The table does not exist."),
    ("row_not_found", 404, "The table has no row with that key."),
    ("sink_not_found", 404, "The sink does not exist."),
    ("processor_not_found", 404, "The processor does not exist."),
    ("source_not_found", 404, "The event source does not exist."),
    (
        "method_not_allowed",
        405,
        "The route exists, but not for this method.",
    ),
    (
        "request_timeout",
        408,
        "The request took longer than `--request-timeout-secs` to arrive or to answer.",
    ),
    ("topic_exists", 409, "A topic of that name exists."),
    ("table_exists", 409, "A table of that name exists."),
    ("sink_exists", 409, "A sink of that name exists."),
    ("processor_exists", 409, "A processor of that name exists."),
    ("source_exists", 409, "An event source of that name exists."),
    (
        "topic_is_derived",
        409,
        "The topic is a processor's output or a table's changelog: only the processor or table writes it; produce to its source.",
    ),
    (
        "stale_generation",
        409,
        "The commit names a generation that is not the group's current one, or a partition not assigned to the consumer: poll again and commit with the new generation.",
    ),
    (
        "group_active",
        409,
        "The group has live members: a reset is refused until they leave or expire; a delete needs `force=true`.",
    ),
    (
        "backup_in_progress",
        409,
        "A backup is being taken; one runs at a time.",
    ),
    (
        "payload_too_large",
        413,
        "The body is larger than `--max-body-bytes` (refused before it is read when its length is declared).",
    ),
    (
        "unsupported_media_type",
        415,
        "The body's `Content-Type` is not one the route reads; the detail lists those it does.",
    ),
    (
        "offset_out_of_range",
        416,
        "The offset is outside the partition's retained range; `start_offset` and `end_offset` give the range.",
    ),
    (
        "invalid_table",
        422,
        "A table definition is well formed but cannot be kept: a bad path, filter or unsupported SQL; the detail says where.",
    ),
    (
        "invalid_sink",
        422,
        "A sink definition is well formed but cannot be kept: a bad URL, filter, batch, rate or retry setting; the detail says which.",
    ),
    (
        "invalid_source",
        422,
        "An event source definition cannot be kept: an unknown scheme, a bad key, dedupe path or header name, a missing secret; the detail says which.",
    ),
    (
        "invalid_processor",
        422,
        "A processor definition is well formed but cannot be kept: a bad expression or unsupported SQL, an output topic that exists, or a source derived from its own output; the detail says which.",
    ),
    (
        "sink_destination_not_allowed",
        422,
        "The sink's URL resolves to an address sinks may not reach: loopback, private and link-local networks need `--sink-allow-net`, and cloud metadata addresses are never allowed.",
    ),
    (
        "key_required",
        422,
        "The topic is compacted, and every record written to it needs a key. Nothing of the request was written.",
    ),
    (
        "upgrade_required",
        426,
        "`/v1/ws` needs a WebSocket upgrade.",
    ),
    (
        "rate_limited",
        429,
        "Too many requests or records per second for this principal; retry after `Retry-After` seconds.",
    ),
    (
        "overloaded",
        429,
        "Too many request bodies are being received at once (`--max-inflight-body-mb`); retry after `Retry-After` seconds.",
    ),
    (
        "internal",
        500,
        "The server failed to handle the request; its log has the cause, under the request's `x-request-id`.",
    ),
    (
        "not_implemented",
        501,
        "The storage engine in use does not offer this yet (groups, tables and backups over Kafka); the detail says which.",
    ),
    (
        "unavailable",
        503,
        "The store cannot take the request right now (a failed commit, or a Kafka cluster electing a leader or out of reach); nothing was written. See `Retry-After`.",
    ),
    (
        "not_ready",
        503,
        "The store does not accept writes, or the server is shutting down.",
    ),
    (
        "table_lagging",
        503,
        "The table had not applied the `after` offsets in time; retry after `Retry-After` seconds.",
    ),
    (
        "insufficient_storage",
        507,
        "Free disk space is below `--min-free-disk-mb`: appends are refused until space is freed (reads, deletes, retention and compaction go on).",
    ),
];

/// The `type` of a problem with `code`: the anchor on the `/problems` page.
pub(crate) fn type_uri(code: &str) -> String {
    format!("/problems#{code}")
}

/// `GET /problems`: the page of every code.
pub(crate) async fn page() -> Response {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Sluice problem codes</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         td,th{text-align:left;vertical-align:top;padding:.3rem .6rem}code{font-size:.95em}\
         tr:target{background:#fff3c4}</style></head><body>\
         <h1>Problem codes</h1><p>Every error is an RFC 9457 <code>application/problem+json</code> \
         body whose <code>code</code> is one of these, and whose <code>type</code> links here.</p>\
         <table><tr><th>code</th><th>status</th><th>meaning</th></tr>",
    );
    for (code, status, meaning) in CODES {
        html.push_str(&format!(
            "<tr id=\"{code}\"><td><code>{code}</code></td><td>{status}</td><td>{}</td></tr>",
            inline_code(meaning)
        ));
    }
    html.push_str("</table></body></html>");
    let mut res = html.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// Turns `backticked` words into `<code>` (the meanings hold no markup of their own).
fn inline_code(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        let part = part.replace('&', "&amp;").replace('<', "&lt;");
        if i % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
        } else {
            out.push_str(&part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::CODES;

    /// The codes the gateway's source passes to an error, found by the calls that
    /// take one.
    fn codes_in_source() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.clone()];
        let mut out = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("problems.rs") {
                continue;
            }
            let text: String = std::fs::read_to_string(&p)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            for marker in ["ApiError::new(", "bad_request(", "code: \"", "check_name("] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let rest = match marker {
                        "ApiError::new(" => rest.split_once(", ").map_or("", |(_, r)| r),
                        "code: \"" => &text[at + marker.len() - 1..],
                        _ => rest,
                    };
                    let Some(lit) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let code: String = lit.chars().take_while(|c| *c != '"').collect();
                    out.push((code, p.display().to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_code_in_use_is_listed_once() {
        let found = codes_in_source();
        assert!(found.len() > 40, "the scan found too little: {found:?}");
        for (code, file) in &found {
            assert!(
                CODES.iter().any(|(c, _, _)| c == code),
                "{code} (in {file}) is not in problems::CODES"
            );
        }
        let mut names: Vec<&str> = CODES.iter().map(|c| c.0).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a code is listed twice");
    }
}
