//! Authentication and authorization: JWT verification and per-object permissions.
//!
//! The algorithms a token may use come from the configured key, never from the
//! token: an HMAC secret allows HS256; an RSA public key RS256/384/512; an EC key
//! ES256/384; an Ed25519 key EdDSA; a JWKS file, per key, the algorithm its `alg` or
//! key type names, chosen by the token's `kid`. `exp` is required, `nbf` honoured,
//! `iss` and `aud` checked when configured, and tokens whose header asks the
//! verifier to fetch or trust keys (`jku`, `x5u`, `jwk`, `x5c`) or to understand
//! extensions (`crit`) are refused.

use std::path::Path;

use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// What a token lets its holder do: lists of names or `*` glob patterns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Permissions {
    /// Topics it may produce to.
    pub produce: Vec<String>,
    /// Topics it may read (fetch, subscribe, consume in a group).
    pub consume: Vec<String>,
    /// Tables it may query.
    pub tables: Vec<String>,
    /// Consumer groups it may join and commit for; absent means any group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Topic and table definitions, group administration.
    pub admin: bool,
}

/// The object an operation touches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object<'a> {
    /// Write to a topic.
    Produce(&'a str),
    /// Read a topic.
    Consume(&'a str),
    /// Query a table.
    Table(&'a str),
    /// Join or commit for a group.
    Group(&'a str),
    /// Define or delete topics and tables, administer groups.
    Admin,
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The token's subject, if a token was given and names one.
    pub sub: Option<String>,
    /// The token's permissions; `None` when auth is off and everything is allowed.
    pub permissions: Option<Permissions>,
    /// The key rate limits are counted under: the subject, or the client address
    /// when auth is off.
    pub rate_key: String,
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob(p, name))
}

impl Principal {
    /// Whether the caller may touch `object`.
    pub(crate) fn may(&self, object: Object<'_>) -> bool {
        let Some(p) = &self.permissions else {
            return true;
        };
        p.admin
            || match object {
                Object::Produce(t) => any(&p.produce, t),
                Object::Consume(t) => any(&p.consume, t),
                Object::Table(t) => any(&p.tables, t),
                Object::Group(g) => p.groups.as_ref().is_none_or(|gs| any(gs, g)),
                Object::Admin => false,
            }
    }

    /// [`Principal::may`], answering 403 when not.
    pub(crate) fn require(&self, object: Object<'_>) -> Result<(), ApiError> {
        if self.may(object) {
            return Ok(());
        }
        let what = match object {
            Object::Produce(t) => format!("produce to topic '{t}'"),
            Object::Consume(t) => format!("read topic '{t}'"),
            Object::Table(t) => format!("query table '{t}'"),
            Object::Group(g) => format!("use consumer group '{g}'"),
            Object::Admin => "administer topics, tables and groups".to_string(),
        };
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token does not allow you to {what}"),
        ))
    }
}

/// How tokens are checked.
pub(crate) struct Auth {
    keys: Vec<(Option<String>, DecodingKey, Vec<Algorithm>)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

/// Where the verification key comes from.
pub(crate) enum KeyConfig<'a> {
    /// A shared HMAC secret (HS256).
    Secret(&'a [u8]),
    /// A PEM public key file (RSA, EC or Ed25519).
    PublicKeyPem(&'a Path),
    /// A JWKS file; tokens pick a key by `kid`.
    Jwks(&'a Path),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sluice: Permissions,
}

fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

impl Auth {
    /// Loads the verification keys.
    pub(crate) fn new(
        key: KeyConfig<'_>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway_secs: u64,
    ) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let keys = match key {
            KeyConfig::Secret(s) => {
                anyhow::ensure!(
                    s.len() >= 32,
                    "the JWT secret must be at least 32 bytes (256 bits) for HS256"
                );
                vec![(None, DecodingKey::from_secret(s), vec![Algorithm::HS256])]
            }
            KeyConfig::PublicKeyPem(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading JWT public key {}", path.display()))?;
                let (key, algs) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (
                        k,
                        vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                    )
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    (k, vec![Algorithm::ES256, Algorithm::ES384])
                } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                    (k, vec![Algorithm::EdDSA])
                } else {
                    anyhow::bail!(
                        "{} is not an RSA, EC or Ed25519 public key in PEM form",
                        path.display()
                    );
                };
                vec![(None, key, algs)]
            }
            KeyConfig::Jwks(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading JWKS {}", path.display()))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JWKS document", path.display()))?;
                let mut keys = Vec::new();
                for jwk in &set.keys {
                    let kid = jwk
                        .common
                        .key_id
                        .clone()
                        .context("every key of the JWKS needs a `kid`")?;
                    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                        (Some(a), _) => format!("{a:?}").parse::<Algorithm>().map_err(|_| {
                            anyhow::anyhow!("key '{kid}' of the JWKS has algorithm {a:?}, which is not supported")
                        })?,
                        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                        (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                            EllipticCurve::P384 => Algorithm::ES384,
                            _ => Algorithm::ES256,
                        },
                        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
                        (None, _) => anyhow::bail!("key '{kid}' of the JWKS has no usable type"),
                    };
                    anyhow::ensure!(
                        !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512),
                        "key '{kid}': symmetric keys do not belong in a JWKS file"
                    );
                    let key = DecodingKey::from_jwk(jwk)
                        .with_context(|| format!("key '{kid}' of the JWKS"))?;
                    keys.push((Some(kid), key, vec![alg]));
                }
                anyhow::ensure!(!keys.is_empty(), "{} holds no keys", path.display());
                keys
            }
        };
        Ok(Auth {
            keys,
            issuer,
            audience,
            leeway_secs,
        })
    }

    /// Verifies a token and returns its subject and permissions.
    pub(crate) fn verify(&self, token: &str) -> Result<(Option<String>, Permissions), ApiError> {
        let raw_header = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|h| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok()
            })
            .ok_or_else(|| unauthorized("the token is not a JWT"))?;
        for refused in ["crit", "jku", "x5u", "jwk", "x5c"] {
            if raw_header.contains_key(refused) {
                return Err(unauthorized(format!(
                    "tokens with a `{refused}` header are not accepted"
                )));
            }
        }
        if let Some(typ) = raw_header.get("typ").and_then(|t| t.as_str())
            && !typ.eq_ignore_ascii_case("JWT")
            && !typ.eq_ignore_ascii_case("at+jwt")
        {
            return Err(unauthorized("the token's `typ` is not JWT"));
        }
        let header =
            decode_header(token).map_err(|e| unauthorized(format!("bad token header: {e}")))?;
        let (key, algs) = match &header.kid {
            Some(kid) if self.keys.iter().any(|(k, _, _)| k.is_some()) => self
                .keys
                .iter()
                .find(|(k, _, _)| k.as_deref() == Some(kid))
                .map(|(_, key, algs)| (key, algs))
                .ok_or_else(|| unauthorized(format!("no key with kid '{kid}'")))?,
            None if self.keys.iter().any(|(k, _, _)| k.is_some()) => {
                return Err(unauthorized("the token names no `kid`"));
            }
            _ => {
                let (_, key, algs) = &self.keys[0];
                (key, algs)
            }
        };
        if !algs.contains(&header.alg) {
            return Err(unauthorized(format!(
                "the token's algorithm {:?} is not accepted for this key",
                header.alg
            )));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = algs.clone();
        v.leeway = self.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            unauthorized(match e.kind() {
                K::ExpiredSignature => "the token has expired".to_string(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                K::InvalidSignature => "the token's signature does not verify".to_string(),
                K::InvalidIssuer => "the token's issuer is not accepted".to_string(),
                K::InvalidAudience => "the token's audience is not accepted".to_string(),
                K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                _ => format!("the token is not valid: {e}"),
            })
        })?;
        Ok((data.claims.sub, data.claims.sluice))
    }
}

#[derive(Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = match &state.auth {
            None => {
                // The key is only worth building when a rate limit will read it.
                let peer = parts
                    .extensions
                    .get::<PeerAddr>()
                    .filter(|_| state.limits.rate_limited())
                    .map(|p| state.limits.client_ip(p.0.ip(), &parts.headers));
                Principal {
                    sub: None,
                    permissions: None,
                    rate_key: peer.map(|ip| format!("ip:{ip}")).unwrap_or_default(),
                }
            }
            Some(auth) => {
                let (sub, permissions) = auth.verify(&bearer_token(parts)?)?;
                Principal {
                    rate_key: format!("sub:{}", sub.as_deref().unwrap_or("")),
                    sub,
                    permissions: Some(permissions),
                }
            }
        };
        state.limits.check_requests(&principal.rate_key)?;
        Ok(principal)
    }
}

/// The client's address, set on each request by the server loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub std::net::SocketAddr);

/// The token of a request: `Authorization: Bearer`, or for WebSocket and SSE (which
/// browsers cannot give headers) the `access_token` query parameter.
fn bearer_token(parts: &Parts) -> Result<String, ApiError> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        return v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"));
    }
    let path = parts.uri.path();
    if (path == "/v1/ws" || path.ends_with("/events"))
        && let Some(t) = Query::<AccessToken>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.access_token)
    {
        return Ok(t);
    }
    Err(unauthorized("this endpoint needs a bearer token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("clicks.*", "clicks.eu"));
        assert!(!glob("clicks.*", "clicks"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("orders", "orders"));
        assert!(!glob("orders", "orders2"));
        assert!(glob("*-eu", "x-eu"));
        assert!(!glob("", "x"));
    }

    #[test]
    fn permissions() {
        let p = Principal {
            sub: None,
            permissions: Some(Permissions {
                produce: vec!["orders".into()],
                consume: vec!["clicks.*".into()],
                groups: Some(vec!["g1".into()]),
                ..Permissions::default()
            }),
            rate_key: String::new(),
        };
        assert!(p.may(Object::Produce("orders")));
        assert!(!p.may(Object::Consume("orders")));
        assert!(p.may(Object::Consume("clicks.eu")));
        assert!(p.may(Object::Group("g1")));
        assert!(!p.may(Object::Group("g2")));
        assert!(!p.may(Object::Admin));
        let open = Principal {
            sub: None,
            permissions: None,
            rate_key: String::new(),
        };
        assert!(open.may(Object::Admin));
    }
}
