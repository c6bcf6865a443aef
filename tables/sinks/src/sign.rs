//! Signing secrets: made, sealed for storage, and used to sign requests the way
//! the Standard Webhooks specification says.
//!
//! A secret is `whsec_` followed by the base64 of 24 random bytes. A request's
//! `webhook-signature` is `v1,` and the base64 of HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the secret's bytes; while
//! a rotated-out secret still co-signs, the header holds one signature per
//! secret, separated by spaces, as the specification allows.
//!
//! Secrets are stored sealed (XChaCha20-Poly1305, the key derived from the
//! gateway's configured passphrase, the sink's name as associated data), so the
//! stored definition never holds one in the clear, and a sealed secret copied to
//! another sink does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Before the base64 of a secret's bytes.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret, in its `whsec_` form.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret.
fn secret_bytes(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(b64)
        .map_err(|_| Error::Invalid("a signing secret is not base64".into()))
}

/// The `webhook-signature` header of a request, signed with each of `secrets`.
pub fn signature(secrets: &[String], id: &str, timestamp_s: u64, body: &[u8]) -> Result<String> {
    let mut out = String::new();
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret_bytes(secret)?)
            .map_err(|_| Error::Invalid("a signing secret has no bytes".into()))?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    Ok(out)
}

/// Seals and opens secrets with a key derived from a passphrase.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// A sealer whose key is the SHA-256 of `passphrase`.
    pub fn new(passphrase: &[u8]) -> Sealer {
        let key = Sha256::digest(passphrase);
        Sealer {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    /// `secret` sealed for sink `sink`: base64 of nonce and ciphertext.
    pub fn seal(&self, sink: &str, secret: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: sink.as_bytes(),
                },
            )
            .expect("encrypting in memory does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// The secret `sealed` holds, if it was sealed for `sink` with this key.
    pub fn open(&self, sink: &str, sealed: &str) -> Result<String> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| Error::Secret("not base64".into()))?;
        if bytes.len() < 24 {
            return Err(Error::Secret("too short".into()));
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: sink.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Secret("it does not open with the configured --sink-secret-key".into())
            })?;
        String::from_utf8(plain).map_err(|_| Error::Secret("not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries.
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let sig = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn sealed_secrets_open_only_for_their_sink_and_key() {
        let s = Sealer::new(b"passphrase");
        let sealed = s.seal("a", "whsec_x");
        assert_eq!(s.open("a", &sealed).unwrap(), "whsec_x");
        assert!(s.open("b", &sealed).is_err());
        assert!(Sealer::new(b"other").open("a", &sealed).is_err());
        assert_ne!(sealed, s.seal("a", "whsec_x"), "a fresh nonce each time");
    }
}
