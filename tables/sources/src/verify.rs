//! Whether a request is its sender's: each scheme as its senders sign.
//!
//! - `standard-webhooks`: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature` (`v1,<base64>` entries separated by spaces), HMAC-SHA256
//!   over `<id>.<timestamp>.<body>` keyed with the bytes of the `whsec_` secret;
//! - `github`: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body keyed
//!   with the secret's text (no timestamp: GitHub signs none);
//! - `stripe`: `Stripe-Signature: t=<timestamp>,v1=<hex>[,v1=<hex>...]`, over
//!   `<timestamp>.<body>`;
//! - `slack`: `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex>`, over
//!   `v0:<timestamp>:<body>`;
//! - `hmac`: HMAC-SHA256 of the body in a header (`x-signature` unless named), as
//!   hex or base64, with or without a `sha256=` prefix;
//! - `token`: a shared token in a header (`authorization` unless named), as it is
//!   or after `Bearer `.
//!
//! Every secret given is tried (a rotated-out one keeps working for a while);
//! comparisons are constant-time. A timestamp further than the tolerance from now,
//! either way, is refused, so a captured request cannot be replayed later.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How a source's senders sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    StandardWebhooks,
    Github,
    Stripe,
    Slack,
    Hmac,
    Token,
}

impl Scheme {
    /// Whether the scheme signs a timestamp (and so has a tolerance).
    pub fn timed(self) -> bool {
        matches!(
            self,
            Scheme::StandardWebhooks | Scheme::Stripe | Scheme::Slack
        )
    }

    /// The header a scheme's signature or token is in when the definition
    /// names none.
    pub fn default_header(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "webhook-signature",
            Scheme::Github => "x-hub-signature-256",
            Scheme::Stripe => "stripe-signature",
            Scheme::Slack => "x-slack-signature",
            Scheme::Hmac => "x-signature",
            Scheme::Token => "authorization",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A header the scheme needs is missing or malformed.
    Missing(String),
    /// The signed timestamp is too far from now.
    Stale(String),
    /// No secret signs the request as it came.
    BadSignature,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing(m) | Refusal::Stale(m) => f.write_str(m),
            Refusal::BadSignature => f.write_str("the signature does not match the body"),
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// Whether any of `secrets` keys a MAC over `parts` equal to `given`.
fn any_signs(secrets: &[Vec<u8>], parts: &[&[u8]], given: &[Vec<u8>]) -> bool {
    secrets.iter().any(|key| {
        let expected = mac(key, parts).finalize().into_bytes();
        given
            .iter()
            .any(|g| bool::from(expected.as_slice().ct_eq(g.as_slice())))
    })
}

fn missing(what: &str) -> Refusal {
    Refusal::Missing(format!("missing or malformed {what}"))
}

/// Checks a timestamp (seconds) against now and the tolerance.
fn fresh(ts: &str, now_s: u64, tolerance_s: u64, what: &str) -> Result<(), Refusal> {
    let t: u64 = ts.trim().parse().map_err(|_| missing(what))?;
    if t.abs_diff(now_s) > tolerance_s {
        return Err(Refusal::Stale(format!(
            "{what} {t} is more than {tolerance_s} s from now ({now_s})"
        )));
    }
    Ok(())
}

/// A `whsec_` secret's key bytes (Standard Webhooks); another secret is used
/// as its text.
fn whsec_bytes(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// Hex or base64 bytes, after an optional `sha256=` prefix.
fn digest_bytes(v: &str) -> Vec<Vec<u8>> {
    let v = v.trim();
    let v = v.strip_prefix("sha256=").unwrap_or(v);
    let mut out = Vec::new();
    if let Ok(b) = hex::decode(v) {
        out.push(b);
    }
    if let Ok(b) = STANDARD.decode(v) {
        out.push(b);
    }
    out
}

/// Whether a request (`header` looks a header up by its lowercase name) is
/// signed by one of `secrets` the way `scheme` signs; `header_name` overrides
/// the header of the signature or token (for `hmac` and `token`).
pub fn verify<'a>(
    scheme: Scheme,
    secrets: &[String],
    header_name: Option<&str>,
    tolerance_s: u64,
    header: &dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now_s: u64,
) -> Result<(), Refusal> {
    let named = header_name.unwrap_or(scheme.default_header());
    let text_keys: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    let ok = match scheme {
        Scheme::StandardWebhooks => {
            let id = header("webhook-id").ok_or_else(|| missing("webhook-id"))?;
            let ts = header("webhook-timestamp").ok_or_else(|| missing("webhook-timestamp"))?;
            fresh(ts, now_s, tolerance_s, "webhook-timestamp")?;
            let sigs: Vec<Vec<u8>> = header(named)
                .ok_or_else(|| missing(named))?
                .split(' ')
                .filter_map(|e| e.strip_prefix("v1,"))
                .filter_map(|b| STANDARD.decode(b).ok())
                .collect();
            if sigs.is_empty() {
                return Err(missing(named));
            }
            let keys: Vec<Vec<u8>> = secrets.iter().map(|s| whsec_bytes(s)).collect();
            any_signs(
                &keys,
                &[id.as_bytes(), b".", ts.trim().as_bytes(), b".", body],
                &sigs,
            )
        }
        Scheme::Github => {
            let sig = header(named)
                .and_then(|v| v.trim().strip_prefix("sha256="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| missing(named))?;
            any_signs(&text_keys, &[body], &[sig])
        }
        Scheme::Stripe => {
            let v = header(named).ok_or_else(|| missing(named))?;
            let mut t = None;
            let mut sigs = Vec::new();
            for part in v.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", ts)) => t = Some(ts),
                    Some(("v1", h)) => sigs.extend(hex::decode(h).ok()),
                    _ => {}
                }
            }
            let t = t.ok_or_else(|| missing("timestamp (t=) in stripe-signature"))?;
            if sigs.is_empty() {
                return Err(missing("v1 signature in stripe-signature"));
            }
            fresh(t, now_s, tolerance_s, "the signature's timestamp")?;
            any_signs(&text_keys, &[t.as_bytes(), b".", body], &sigs)
        }
        Scheme::Slack => {
            let ts = header("x-slack-request-timestamp")
                .ok_or_else(|| missing("x-slack-request-timestamp"))?;
            fresh(ts, now_s, tolerance_s, "x-slack-request-timestamp")?;
            let sig = header(named)
                .and_then(|v| v.trim().strip_prefix("v0="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| missing(named))?;
            any_signs(
                &text_keys,
                &[b"v0:", ts.trim().as_bytes(), b":", body],
                &[sig],
            )
        }
        Scheme::Hmac => {
            let sigs = digest_bytes(header(named).ok_or_else(|| missing(named))?);
            any_signs(&text_keys, &[body], &sigs)
        }
        Scheme::Token => {
            let v = header(named).ok_or_else(|| missing(named))?.trim();
            let token = v.strip_prefix("Bearer ").unwrap_or(v);
            secrets
                .iter()
                .any(|s| bool::from(s.as_bytes().ct_eq(token.as_bytes())))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(hs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |n: &str| hs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    fn check(
        scheme: Scheme,
        secrets: &[&str],
        hs: &[(&str, &str)],
        body: &[u8],
        now: u64,
    ) -> Result<(), Refusal> {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        verify(scheme, &secrets, None, 300, &headers(hs), body, now)
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn standard_webhooks_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let hs = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert_eq!(
            check(Scheme::StandardWebhooks, &[secret], &hs, body, 1614265330),
            Ok(())
        );
        // Rotated: the old secret's signature among several, or the secret among several.
        let multi = [
            hs[0],
            hs[1],
            (
                "webhook-signature",
                "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert_eq!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &multi,
                body,
                1614265330
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Scheme::StandardWebhooks,
                &["whsec_AAAA", secret],
                &hs,
                body,
                1614265330
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &hs,
                br#"{"test": 2432232315}"#,
                1614265330
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(
                Scheme::StandardWebhooks,
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"],
                &hs,
                body,
                1614265330
            ),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &hs,
                body,
                1614265330 + 301
            ),
            Err(Refusal::Stale(_))
        ));
        assert!(matches!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &hs,
                body,
                1614265330 - 301
            ),
            Err(Refusal::Stale(_))
        ));
        assert_eq!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &hs,
                body,
                1614265330 + 300
            ),
            Ok(())
        );
        assert!(matches!(
            check(
                Scheme::StandardWebhooks,
                &[secret],
                &hs[..2],
                body,
                1614265330
            ),
            Err(Refusal::Missing(_))
        ));
    }

    /// GitHub's documented example ("Validating webhook deliveries").
    #[test]
    fn github_vector() {
        let hs = [(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )];
        let secret = "It's a Secret to Everybody";
        assert_eq!(
            check(Scheme::Github, &[secret], &hs, b"Hello, World!", 0),
            Ok(())
        );
        assert_eq!(
            check(Scheme::Github, &[secret], &hs, b"Hello, World?", 0),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(Scheme::Github, &["It's a secret"], &hs, b"Hello, World!", 0),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            check(Scheme::Github, &[secret], &[], b"Hello, World!", 0),
            Err(Refusal::Missing(_))
        ));
    }

    /// Slack's documented example ("Verifying requests from Slack").
    #[test]
    fn slack_vector() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let hs = [
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ];
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        assert_eq!(
            check(Scheme::Slack, &[secret], &hs, body, 1531420618),
            Ok(())
        );
        assert_eq!(
            check(Scheme::Slack, &[secret], &hs, &body[1..], 1531420618),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            check(Scheme::Slack, &[secret], &hs, body, 1531420618 + 600),
            Err(Refusal::Stale(_))
        ));
    }

    /// Stripe signs `<t>.<body>`; several `v1` entries while a secret rolls.
    #[test]
    fn stripe_signatures() {
        let secret = "whsec_test_secret";
        let body = br#"{"id": "evt_1", "object": "event"}"#;
        let t = "1700000000";
        let sig = hex::encode(
            mac(secret.as_bytes(), &[t.as_bytes(), b".", body])
                .finalize()
                .into_bytes(),
        );
        let header = format!("t={t},v1={},v1={sig},v0=ignored", "00".repeat(32));
        let hs = [("stripe-signature", header.as_str())];
        assert_eq!(
            check(Scheme::Stripe, &[secret], &hs, body, 1700000000),
            Ok(())
        );
        assert_eq!(
            check(Scheme::Stripe, &["whsec_other"], &hs, body, 1700000000),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            check(Scheme::Stripe, &[secret], &hs, body, 1700000400),
            Err(Refusal::Stale(_))
        ));
        let no_t = format!("v1={sig}");
        assert!(matches!(
            check(
                Scheme::Stripe,
                &[secret],
                &[("stripe-signature", no_t.as_str())],
                body,
                1700000000
            ),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn hmac_and_token() {
        let body = b"{}";
        let digest = mac(b"k", &[body]).finalize().into_bytes();
        for given in [
            hex::encode(digest),
            format!("sha256={}", hex::encode(digest)),
            STANDARD.encode(digest),
        ] {
            let hs = [("x-signature", given.as_str())];
            assert_eq!(check(Scheme::Hmac, &["k"], &hs, body, 0), Ok(()), "{given}");
            assert_eq!(
                check(Scheme::Hmac, &["j"], &hs, body, 0),
                Err(Refusal::BadSignature)
            );
        }
        assert_eq!(
            check(
                Scheme::Token,
                &["t0k"],
                &[("authorization", "Bearer t0k")],
                body,
                0
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Scheme::Token,
                &["t0k"],
                &[("authorization", "t0k")],
                body,
                0
            ),
            Ok(())
        );
        assert_eq!(
            check(
                Scheme::Token,
                &["t0k"],
                &[("authorization", "Bearer t0")],
                body,
                0
            ),
            Err(Refusal::BadSignature)
        );
        let secrets = vec!["t0k".to_string()];
        assert_eq!(
            verify(
                Scheme::Token,
                &secrets,
                Some("x-token"),
                0,
                &headers(&[("x-token", "t0k")]),
                body,
                0
            ),
            Ok(())
        );
    }
}
