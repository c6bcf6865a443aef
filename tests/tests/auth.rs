//! JWT auth and per-object permissions, secure defaults and resource limits,
//! against the real binary.

use std::io::{Read, Write};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_tests::{Server, binary, client, fixture, now_secs, sign};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn claims(perms: Value) -> Value {
    json!({"sub": "alice", "exp": now_secs() + 600, "sluice": perms})
}

fn admin() -> String {
    sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &claims(json!({"admin": true})),
    )
}

async fn status(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = r.send().await.unwrap();
    let s = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (s, body)
}

/// Base64url without padding, as JWT segments are.
fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with an arbitrary header, signed HS256 with `secret`.
fn with_header(header: Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::Mac;
    let msg = format!("{}.{}", b64(&header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg.as_bytes());
    use base64::Engine;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{msg}.{sig}")
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401() {
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    let url = s.url("/v1/topics");
    let good = claims(json!({"admin": true}));
    let now = now_secs();
    let mut bad: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
        (
            "expired",
            sign(
                Algorithm::HS256,
                None,
                SECRET.as_bytes(),
                &json!({"exp": now - 3600, "sluice": {"admin": true}}),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                None,
                SECRET.as_bytes(),
                &json!({"exp": now + 7200, "nbf": now + 3600, "sluice": {"admin": true}}),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                None,
                SECRET.as_bytes(),
                &json!({"sluice": {"admin": true}}),
            ),
        ),
        (
            "exp as a string",
            with_header(
                json!({"alg": "HS256", "typ": "JWT"}),
                &json!({"exp": (now + 600).to_string(), "sluice": {"admin": true}}),
                SECRET.as_bytes(),
            ),
        ),
        (
            "wrong signature",
            sign(
                Algorithm::HS256,
                None,
                b"another-secret-that-is-also-long-enough!!",
                &good,
            ),
        ),
        (
            "wrong algorithm",
            sign(Algorithm::HS384, None, SECRET.as_bytes(), &good),
        ),
        (
            "crit header",
            with_header(
                json!({"alg": "HS256", "crit": ["exp"]}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
        (
            "jku header",
            with_header(
                json!({"alg": "HS256", "jku": "https://example.com/keys"}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
        (
            "jwk header",
            with_header(
                json!({"alg": "HS256", "jwk": {"kty": "oct", "k": "AA"}}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
        (
            "x5u header",
            with_header(
                json!({"alg": "HS256", "x5u": "https://example.com/cert"}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
        (
            "odd typ",
            with_header(
                json!({"alg": "HS256", "typ": "secevent+jwt"}),
                &good,
                SECRET.as_bytes(),
            ),
        ),
    ];
    // alg none: no signature at all.
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&good)
        ),
    ));
    for (what, token) in bad {
        let (st, body) = status(c.get(&url).bearer_auth(&token)).await;
        assert_eq!(st, 401, "{what}: {body}");
        assert_eq!(body["code"], "unauthorized", "{what}");
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    assert!(r.headers().contains_key("www-authenticate"));
    let (st, _) = status(
        c.get(&url)
            .header("authorization", format!("Basic {SECRET}")),
    )
    .await;
    assert_eq!(st, 401, "basic auth");
    // A good token passes; the explicit header typ is fine.
    let (st, _) = status(c.get(&url).bearer_auth(admin())).await;
    assert_eq!(st, 200);
    let (st, _) = status(c.get(&url).bearer_auth(with_header(
        json!({"alg": "HS256", "typ": "JWT"}),
        &good,
        SECRET.as_bytes(),
    )))
    .await;
    assert_eq!(st, 200);
    // Unprotected operational endpoints.
    assert_eq!(
        c.get(s.url("/openapi.json")).send().await.unwrap().status(),
        200
    );
    assert_eq!(c.get(s.url("/livez")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn permissions_cover_each_object() {
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    let admin = admin();
    for t in ["orders", "clicks.eu", "secret"] {
        let (st, _) = status(
            c.post(s.url("/v1/topics"))
                .bearer_auth(&admin)
                .json(&json!({"name": t})),
        )
        .await;
        assert_eq!(st, 201);
    }
    let user = sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &claims(json!({"produce": ["orders"], "consume": ["clicks.*"]})),
    );
    let produce = |t: &str| {
        c.post(s.url(&format!("/v1/topics/{t}/records")))
            .bearer_auth(&user)
            .json(&json!({"value": 1}))
    };
    assert_eq!(status(produce("orders")).await.0, 200);
    let (st, body) = status(produce("clicks.eu")).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(status(produce("secret")).await.0, 403);
    // A forbidden topic that does not exist is 403 too: existence is not revealed.
    assert_eq!(status(produce("nope")).await.0, 403);
    let fetch = |t: &str| {
        c.get(s.url(&format!("/v1/topics/{t}/partitions/0/records")))
            .bearer_auth(&user)
    };
    assert_eq!(status(fetch("clicks.eu")).await.0, 200);
    assert_eq!(status(fetch("orders")).await.0, 403);
    assert_eq!(status(fetch("secret")).await.0, 403);
    assert_eq!(
        status(c.get(s.url("/v1/topics/secret")).bearer_auth(&user))
            .await
            .0,
        403
    );
    assert_eq!(
        status(c.get(s.url("/v1/topics/orders")).bearer_auth(&user))
            .await
            .0,
        200
    );
    // Topic administration needs admin.
    assert_eq!(
        status(
            c.post(s.url("/v1/topics"))
                .bearer_auth(&user)
                .json(&json!({"name": "mine"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        status(c.delete(s.url("/v1/topics/orders")).bearer_auth(&user))
            .await
            .0,
        403
    );
    // The list shows only what the token may touch.
    // So does the dashboard's summary, which needs a token like everything else.
    for path in ["/v1/topics", "/v1/stats"] {
        let (_, list) = status(c.get(s.url(path)).bearer_auth(&user)).await;
        let names: Vec<_> = list["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["clicks.eu", "orders"], "{path}");
    }
    assert_eq!(status(c.get(s.url("/v1/stats"))).await.0, 401);
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let s = Server::start_with(&[
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "sluice",
    ]);
    let c = client();
    let url = s.url("/v1/topics");
    let tok = |extra: Value| {
        let mut cl = claims(json!({"admin": true}));
        cl.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(Algorithm::HS256, None, SECRET.as_bytes(), &cl)
    };
    assert_eq!(
        status(
            c.get(&url)
                .bearer_auth(tok(json!({"iss": "https://id.example", "aud": "sluice"})))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        status(c.get(&url).bearer_auth(tok(
            json!({"iss": "https://id.example", "aud": ["other", "sluice"]})
        )))
        .await
        .0,
        200
    );
    for (what, extra) in [
        (
            "wrong iss",
            json!({"iss": "https://evil.example", "aud": "sluice"}),
        ),
        (
            "wrong aud",
            json!({"iss": "https://id.example", "aud": "other"}),
        ),
        ("no iss", json!({"aud": "sluice"})),
        ("no aud", json!({"iss": "https://id.example"})),
        ("iss not a string", json!({"iss": 5, "aud": "sluice"})),
    ] {
        assert_eq!(
            status(c.get(&url).bearer_auth(tok(extra))).await.0,
            401,
            "{what}"
        );
    }
}

#[tokio::test]
async fn public_keys_and_algorithm_confusion() {
    let c = client();
    let perms = claims(json!({"admin": true}));
    for (name, alg) in [
        ("rsa", Algorithm::RS256),
        ("ec", Algorithm::ES256),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let pub_pem = fixture(&format!("{name}.pub.pem"));
        let s = Server::start_with(&["--jwt-public-key", pub_pem.to_str().unwrap()]);
        let key = std::fs::read(fixture(&format!("{name}.key.pem"))).unwrap();
        let url = s.url("/v1/topics");
        assert_eq!(
            status(c.get(&url).bearer_auth(sign(alg, None, &key, &perms)))
                .await
                .0,
            200,
            "{name}"
        );
        // HS256 signed with the public key's bytes as the secret: the classic confusion.
        let public_bytes = std::fs::read(&pub_pem).unwrap();
        let forged = sign(Algorithm::HS256, None, &public_bytes, &perms);
        assert_eq!(
            status(c.get(&url).bearer_auth(forged)).await.0,
            401,
            "{name}: HS/asymmetric confusion"
        );
        // Another key of the same kind does not verify.
        let other = match name {
            "rsa" => None,
            _ => Some(sign(
                Algorithm::RS256,
                None,
                &std::fs::read(fixture("rsa.key.pem")).unwrap(),
                &perms,
            )),
        };
        if let Some(t) = other {
            assert_eq!(
                status(c.get(&url).bearer_auth(t)).await.0,
                401,
                "{name}: foreign key"
            );
        }
    }
}

#[tokio::test]
async fn jwks_selects_keys_by_kid() {
    let s = Server::start_with(&["--jwks-file", fixture("jwks.json").to_str().unwrap()]);
    let c = client();
    let url = s.url("/v1/topics");
    let perms = claims(json!({"admin": true}));
    let rsa = std::fs::read(fixture("rsa.key.pem")).unwrap();
    let ec = std::fs::read(fixture("ec.key.pem")).unwrap();
    assert_eq!(
        status(
            c.get(&url)
                .bearer_auth(sign(Algorithm::RS256, Some("rsa-1"), &rsa, &perms))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        status(
            c.get(&url)
                .bearer_auth(sign(Algorithm::ES256, Some("ec-1"), &ec, &perms))
        )
        .await
        .0,
        200
    );
    for (what, token) in [
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("nope"), &rsa, &perms),
        ),
        ("no kid", sign(Algorithm::RS256, None, &rsa, &perms)),
        (
            "kid of another key",
            sign(Algorithm::ES256, Some("rsa-1"), &ec, &perms),
        ),
        (
            "alg not the key's",
            sign(Algorithm::RS384, Some("rsa-1"), &rsa, &perms),
        ),
    ] {
        assert_eq!(
            status(c.get(&url).bearer_auth(token)).await.0,
            401,
            "{what}"
        );
    }
}

#[tokio::test]
async fn token_subcommand_mints_what_the_server_accepts() {
    let out = std::process::Command::new(binary())
        .args([
            "token",
            "--jwt-secret",
            SECRET,
            "--sub",
            "bob",
            "--produce",
            "orders",
            "--consume",
            "orders",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    c.post(s.url("/v1/topics"))
        .bearer_auth(admin())
        .json(&json!({"name": "orders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(
            c.post(s.url("/v1/topics/orders/records"))
                .bearer_auth(&token)
                .json(&json!({"value": 1}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        status(
            c.post(s.url("/v1/topics"))
                .bearer_auth(&token)
                .json(&json!({"name": "x"}))
        )
        .await
        .0,
        403
    );
}

#[test]
fn non_loopback_without_auth_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without auth") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // A short secret is refused too.
    let out = std::process::Command::new(binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "short",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 bytes"));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let s = Server::start_with(&["--rate-limit-requests", "5", "--rate-limit-records", "20"]);
    let c = client();
    let mut limited = None;
    for _ in 0..50 {
        let r = c.get(s.url("/v1/topics")).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the request limit never answered 429");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");

    let s = Server::start_with(&["--rate-limit-records", "20"]);
    c.post(s.url("/v1/topics"))
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = (0..21).map(|i| json!({"value": i})).collect();
    let r = c
        .post(s.url("/v1/topics/t/records"))
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let t: Value = c
        .get(s.url("/v1/topics/t"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["records"], 0, "a refused batch writes nothing");
}

/// Without auth on a loopback address every client is the same principal, so the
/// rate limits are off by default there: a burst over the limit's default gets no
/// 429. With auth, each token subject has a limit of its own.
#[tokio::test]
async fn rate_limits_are_off_by_default_for_an_open_loopback_server() {
    let s = Server::start();
    let c = client();
    let mut limited = 0;
    for _ in 0..3_000 {
        if c.get(s.url("/livez")).send().await.unwrap().status() == 429
            || c.get(s.url("/v1/topics")).send().await.unwrap().status() == 429
        {
            limited += 1;
        }
    }
    assert_eq!(limited, 0);
    // With auth, limits are per token subject.
    let s = Server::start_with(&["--jwt-secret", SECRET, "--rate-limit-requests", "5"]);
    let token = |sub: &str| {
        sign(
            Algorithm::HS256,
            None,
            SECRET.as_bytes(),
            &json!({"sub": sub, "exp": now_secs() + 600, "sluice": {"admin": true}}),
        )
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let mut limited = false;
    for _ in 0..50 {
        let r = c
            .get(s.url("/v1/topics"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "alice's limit never answered 429");
    let r = c
        .get(s.url("/v1/topics"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bob has a limit of his own");
}

/// Behind a trusted proxy each client named by its forwarding headers has its own
/// limit; from any other peer, the headers are ignored (a client cannot escape its
/// limit by making them up).
#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_told_apart() {
    let c = client();
    let xff = |ip: &str| ("x-forwarded-for", format!("198.51.100.1, {ip}"));
    let forwarded = |v: &str| ("forwarded", v.to_string());
    let s = Server::start_with(&[
        "--rate-limit-requests",
        "5",
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    assert!(
        limited(&c, &s, xff("203.0.113.1")).await,
        "one client is limited"
    );
    assert_eq!(
        get_with(&c, &s, xff("203.0.113.2")).await,
        200,
        "another behind the proxy is not"
    );
    let named = forwarded("for=203.0.113.3;proto=https");
    assert_eq!(
        get_with(&c, &s, named).await,
        200,
        "nor one named by Forwarded"
    );
    assert!(limited(&c, &s, forwarded("for=\"[2001:db8::7]:443\"")).await);

    // Without --trusted-proxy every made-up header is the same (loopback) client.
    let s = Server::start_with(&["--rate-limit-requests", "5"]);
    assert!(limited(&c, &s, xff("203.0.113.1")).await);
    let status = get_with(&c, &s, xff("203.0.113.2")).await;
    assert_eq!(
        status, 429,
        "the header is not believed from an untrusted peer"
    );
}

/// The status of `GET /v1/topics` with `header`.
async fn get_with(c: &reqwest::Client, s: &Server, header: (&str, String)) -> u16 {
    let r = c
        .get(s.url("/v1/topics"))
        .header(header.0, header.1)
        .send()
        .await;
    r.unwrap().status().as_u16()
}

/// Whether requests with `header` run into the request limit within 50 tries.
async fn limited(c: &reqwest::Client, s: &Server, header: (&str, String)) -> bool {
    for _ in 0..50 {
        if get_with(c, s, header.clone()).await == 429 {
            return true;
        }
    }
    false
}

#[test]
fn slow_header_clients_are_cut_off() {
    let s = Server::start_with(&["--header-timeout-ms", "300"]);
    let addr = s.base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock.write_all(b"GET /v1/topics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Never finish the headers; the server must close the connection on its own.
    let mut buf = Vec::new();
    let r = sock.read_to_end(&mut buf);
    assert!(r.is_ok(), "the server did not close the connection: {r:?}");
    // The server still serves others.
    let mut ok = std::net::TcpStream::connect(addr).unwrap();
    ok.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn cors_allow_list() {
    let s = Server::start_with(&["--cors-origin", "https://app.example"]);
    let c = client();
    let r = c
        .get(s.url("/v1/topics"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = c
        .get(s.url("/v1/topics"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // A preflight names the headers asked for: `*` would not cover Authorization.
    let r = c
        .request(reqwest::Method::OPTIONS, s.url("/v1/topics/t/records"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key,ce-id",
        )
        .send()
        .await
        .unwrap();
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "idempotency-key", "ce-id"] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
}

#[tokio::test]
async fn groups_are_covered_and_members_bound_to_subjects() {
    let s = Server::start_with(&["--jwt-secret", SECRET, "--bind-consumers-to-subject"]);
    let c = client();
    for t in ["orders", "secret"] {
        c.post(s.url("/v1/topics"))
            .bearer_auth(admin())
            .json(&json!({"name": t}))
            .send()
            .await
            .unwrap();
    }
    let token = |sub: &str| {
        sign(
            Algorithm::HS256,
            None,
            SECRET.as_bytes(),
            &json!({"sub": sub, "exp": now_secs() + 600, "sluice": {"consume": ["orders"], "groups": ["billing-*"]}}),
        )
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let poll = |g: &str, t: &str, tok: &str| {
        c.get(s.url(&format!("/v1/groups/{g}/topics/{t}/records?consumer=w1")))
            .bearer_auth(tok.to_string())
    };
    assert_eq!(status(poll("billing-eu", "orders", &alice)).await.0, 200);
    assert_eq!(
        status(poll("billing-eu", "secret", &alice)).await.0,
        403,
        "topic not covered"
    );
    assert_eq!(
        status(poll("shipping", "orders", &alice)).await.0,
        403,
        "group not covered"
    );
    // Bob may use the group, but not Alice's consumer id.
    let (st, body) = status(poll("billing-eu", "orders", &bob)).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let commit = json!({"consumer": "w1", "generation": 1, "offsets": [{"topic": "orders", "partition": 0, "offset": 0}]});
    assert_eq!(
        status(
            c.post(s.url("/v1/groups/billing-eu/offsets"))
                .bearer_auth(&bob)
                .json(&commit)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        status(
            c.delete(s.url("/v1/groups/billing-eu/consumers/w1"))
                .bearer_auth(&bob)
        )
        .await
        .0,
        403
    );
    // Group administration needs admin.
    let reset = json!({"topic": "orders", "to": "earliest"});
    assert_eq!(
        status(
            c.post(s.url("/v1/groups/billing-eu/offsets/reset"))
                .bearer_auth(&alice)
                .json(&reset)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        status(c.delete(s.url("/v1/groups/billing-eu")).bearer_auth(&alice))
            .await
            .0,
        403
    );
    assert_eq!(
        status(c.get(s.url("/v1/groups/shipping")).bearer_auth(&alice))
            .await
            .0,
        403
    );
    let (_, list) = status(c.get(s.url("/v1/groups")).bearer_auth(&alice)).await;
    assert_eq!(list["groups"].as_array().unwrap().len(), 1);
    // A token with no permissions at all may name any group (no `groups` claim),
    // but neither reads offsets and lag of topics it may not read nor evicts
    // members.
    let nothing = sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &json!({"sub": "mallory", "exp": now_secs() + 600, "sluice": {}}),
    );
    let (st, body) = status(c.get(s.url("/v1/groups/billing-eu")).bearer_auth(&nothing)).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (st, _) = status(
        c.delete(s.url("/v1/groups/billing-eu/consumers/w1"))
            .bearer_auth(&nothing),
    )
    .await;
    assert_eq!(st, 403);
    let (_, stats) = status(c.get(s.url("/v1/stats")).bearer_auth(&nothing)).await;
    assert_eq!(stats["groups"], json!([]), "no lag of unreadable topics");
    let (st, group) = status(c.get(s.url("/v1/groups/billing-eu")).bearer_auth(&alice)).await;
    assert_eq!(st, 200);
    assert_eq!(group["members"][0]["consumer"], "w1", "w1 was not evicted");
    assert_eq!(
        status(
            c.delete(s.url("/v1/groups/billing-eu/consumers/w1"))
                .bearer_auth(&alice)
        )
        .await
        .0,
        204
    );
}

#[tokio::test]
async fn websocket_and_sse_check_each_topic() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    for t in ["orders", "secret"] {
        c.post(s.url("/v1/topics"))
            .bearer_auth(admin())
            .json(&json!({"name": t}))
            .send()
            .await
            .unwrap();
    }
    let user = sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &claims(json!({"consume": ["orders"]})),
    );
    let ws_url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
    // No token: the upgrade is refused with 401.
    let err = tokio_tungstenite::connect_async(ws_url.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?access_token={user}"))
        .await
        .unwrap();
    for (topic, want) in [("secret", "error"), ("orders", "subscribed")] {
        ws.send(Message::Text(
            json!({"op": "subscribe", "id": topic, "topic": topic})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        let f: Value = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                break serde_json::from_str(&t).unwrap();
            }
        };
        assert_eq!(f["type"], want, "{topic}: {f}");
        if want == "error" {
            assert_eq!(f["code"], "forbidden");
        }
    }
    ws.send(Message::Text(
        json!({"op": "produce", "ref": 1, "topic": "orders", "records": [{"value": 1}]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let f: Value = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            break serde_json::from_str(&t).unwrap();
        }
    };
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    // SSE: the query token works there too; a forbidden topic is 403.
    let r = c
        .get(s.url(&format!("/v1/topics/secret/events?access_token={user}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(s.url(&format!("/v1/topics/orders/events?access_token={user}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A query token is not accepted on ordinary endpoints.
    let r = c
        .get(s.url(&format!("/v1/topics?access_token={user}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn tables_are_covered() {
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    c.post(s.url("/v1/topics"))
        .bearer_auth(admin())
        .json(&json!({"name": "ev"}))
        .send()
        .await
        .unwrap();
    for name in ["open_t", "hidden_t"] {
        let r = c
            .post(s.url("/v1/tables"))
            .bearer_auth(admin())
            .json(&json!({"name": name, "source": "ev", "key": "key"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let user = sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &claims(json!({"tables": ["open_*"]})),
    );
    assert_eq!(
        status(c.get(s.url("/v1/tables/open_t")).bearer_auth(&user))
            .await
            .0,
        200
    );
    assert_eq!(
        status(c.get(s.url("/v1/tables/hidden_t")).bearer_auth(&user))
            .await
            .0,
        403
    );
    assert_eq!(
        status(
            c.get(s.url("/v1/tables/hidden_t/rows/k"))
                .bearer_auth(&user)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        status(c.get(s.url("/v1/tables/hidden_t/rows")).bearer_auth(&user))
            .await
            .0,
        403
    );
    assert_eq!(
        status(
            c.post(s.url("/v1/tables"))
                .bearer_auth(&user)
                .json(&json!({"name": "x", "source": "ev", "key": "key"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        status(c.delete(s.url("/v1/tables/open_t")).bearer_auth(&user))
            .await
            .0,
        403
    );
    let (_, list) = status(c.get(s.url("/v1/tables")).bearer_auth(&user)).await;
    assert_eq!(list["tables"].as_array().unwrap().len(), 1);
}

/// Reads a raw HTTP answer's status line.
fn status_line(sock: &mut std::net::TcpStream) -> String {
    let mut buf = [0u8; 512];
    let n = sock.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let s = Server::start_with(&["--max-body-bytes", "1048576"]);
    let addr = s.base.trim_start_matches("http://");
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            sock,
            "POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1073741824\r\n{expect}\r\n"
        )
        .unwrap();
        // No byte of the body is sent: the answer comes from the headers alone, and
        // it is not an invitation to send.
        let line = status_line(&mut sock);
        assert!(line.starts_with("HTTP/1.1 413"), "{expect:?}: {line}");
    }
}

/// Clients that declare bodies and send nothing hold none of the in-flight body
/// budget: a produce from another client goes through while they idle.
#[tokio::test]
async fn idle_declared_bodies_hold_no_body_budget() {
    let s = Server::start_with(&["--max-body-bytes", "1048576", "--max-inflight-body-mb", "2"]);
    let c = client();
    c.post(s.url("/v1/topics"))
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            sock,
            "POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1048576\r\nExpect: 100-continue\r\n\r\n"
        )
        .unwrap();
        idle.push(sock);
    }
    // Each idle client was invited (100 Continue) and sends nothing more.
    for sock in &mut idle {
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
    }
    let big = "x".repeat(900_000);
    let r = c
        .post(s.url("/v1/topics/t/records"))
        .timeout(Duration::from_secs(30))
        .json(&json!({"value": big}))
        .send()
        .await
        .expect("the produce was not stalled by the idle clients");
    assert_eq!(r.status(), 200);
    drop(idle);
}

/// Processors and sources are made and deleted by admins; a processor is
/// read by those who may read its output; a webhook needs no token (its
/// signature is its credential).
#[tokio::test]
async fn processors_and_sources_need_their_permissions() {
    let s = Server::start_with(&["--jwt-secret", SECRET]);
    let c = client();
    let admin = admin();
    let reader = sign(
        Algorithm::HS256,
        None,
        SECRET.as_bytes(),
        &claims(json!({"consume": ["big"], "produce": ["orders"]})),
    );
    let (st, _) = status(
        c.post(s.url("/v1/topics"))
            .bearer_auth(&admin)
            .json(&json!({"name": "orders"})),
    )
    .await;
    assert_eq!(st, 201);
    let def = json!({"name": "big", "source": "orders", "filter": "amount > 10"});
    let (st, p) = status(
        c.post(s.url("/v1/processors"))
            .bearer_auth(&reader)
            .json(&def),
    )
    .await;
    assert_eq!(
        (st, &p["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (st, _) = status(
        c.post(s.url("/v1/processors"))
            .bearer_auth(&admin)
            .json(&def),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = status(c.get(s.url("/v1/processors/big")).bearer_auth(&reader)).await;
    assert_eq!(st, 200);
    let (st, list) = status(c.get(s.url("/v1/processors")).bearer_auth(&reader)).await;
    assert_eq!(
        (st, list["processors"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let (st, _) = status(c.delete(s.url("/v1/processors/big")).bearer_auth(&reader)).await;
    assert_eq!(st, 403);
    let (st, _) = status(c.get(s.url("/v1/processors/big"))).await;
    assert_eq!(st, 401);

    let source =
        json!({"name": "hook", "topic": "orders", "verify": {"scheme": "token", "secret": "t0k"}});
    let (st, _) = status(
        c.post(s.url("/v1/sources"))
            .bearer_auth(&reader)
            .json(&source),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = status(c.get(s.url("/v1/sources")).bearer_auth(&reader)).await;
    assert_eq!(st, 403);
    let (st, _) = status(
        c.post(s.url("/v1/sources"))
            .bearer_auth(&admin)
            .json(&source),
    )
    .await;
    assert_eq!(st, 201);
    // The sender has no JWT: its token is the source's secret.
    let (st, answer) = status(
        c.post(s.url("/v1/hooks/hook"))
            .header("authorization", "Bearer t0k")
            .json(&json!({"amount": 12})),
    )
    .await;
    assert_eq!(st, 200, "{answer}");
    let (st, p) = status(c.post(s.url("/v1/hooks/hook")).json(&json!({}))).await;
    assert_eq!(
        (st, &p["code"]),
        (StatusCode::UNAUTHORIZED, &json!("signature_missing"))
    );
}
