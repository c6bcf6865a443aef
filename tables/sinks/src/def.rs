//! A sink's definition: checked, with its defaults filled in, and stored with
//! what changes over its life (pause, a replay, secrets, a 410).

use serde::{Deserialize, Serialize};
use sluice_openapi::{
    SinkBatch, SinkDefinition, SinkFormat, SinkOrdering, SinkRate, SinkRetry, SinkStart,
    SinkStartName,
};
use sluice_tables::Filter;

use crate::{Error, Result};

/// Longest sink name: its store and dead-letter topic names add to it.
const MAX_NAME: usize = 200;

/// How a sink delivers, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub ordering: SinkOrdering,
    pub format: SinkFormat,
    pub max_records: usize,
    pub max_bytes: usize,
    pub linger_ms: u64,
    pub signed: bool,
    pub timeout_ms: u64,
    pub max_rps: Option<u32>,
    pub max_in_flight: usize,
    pub record_attempts: u32,
    pub initial_ms: u64,
    pub max_ms: u64,
    pub max_age_ms: u64,
}

/// The longest wait a `Retry-After` answer is obeyed for.
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    v: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T> {
    let v = v.unwrap_or(default);
    if v < min || v > max {
        return Err(Error::Invalid(format!(
            "{what} must be between {min} and {max}, not {v}"
        )));
    }
    Ok(v)
}

/// Checks a definition and answers its policy and compiled filter.
pub fn check(def: &SinkDefinition) -> Result<(Policy, Option<Filter>)> {
    if !name_ok(&def.name) {
        return Err(Error::Invalid(format!(
            "sink name '{}' must be 1 to {MAX_NAME} of A-Z a-z 0-9 . _ -",
            def.name
        )));
    }
    match (&def.source.topic, &def.source.table) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(Error::Invalid(
                "source names one of a topic ({\"topic\": ...}) and a table ({\"table\": ...})"
                    .into(),
            ));
        }
    }
    let url = def.url.to_ascii_lowercase();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Invalid(format!(
            "url '{}' must start with http:// or https://",
            def.url
        )));
    }
    let filter = match &def.filter {
        Some(sql) => Some(Filter::parse(sql).map_err(|e| Error::Invalid(format!("filter: {e}")))?),
        None => None,
    };
    let format = def.format.unwrap_or(SinkFormat::Record);
    let batch = def.batch.clone().unwrap_or_default();
    let SinkBatch {
        max_records,
        max_bytes,
        linger_ms,
    } = batch;
    let max_records = range("batch.max_records", max_records, 1, 1, 10_000)? as usize;
    if format == SinkFormat::CloudeventsBinary && max_records > 1 {
        return Err(Error::Invalid(
            "format cloudevents-binary carries one record per request: batch.max_records must be 1"
                .into(),
        ));
    }
    let max_bytes = range("batch.max_bytes", max_bytes, 1 << 20, 1, 16 << 20)? as usize;
    let linger_ms = range("batch.linger_ms", linger_ms, 0, 0, 60_000)?;
    let signed = match def.signing.as_ref().map(|s| s.scheme.as_str()) {
        None | Some("standard-webhooks") => true,
        Some("none") => false,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "signing scheme '{other}': use standard-webhooks or none"
            )));
        }
    };
    if let Some(headers) = &def.headers {
        for (k, v) in headers {
            let lower = k.to_ascii_lowercase();
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                || v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
            {
                return Err(Error::Invalid(format!(
                    "header '{k}' is not a valid header"
                )));
            }
            if lower.starts_with("webhook-")
                || lower.starts_with("sluice-")
                || lower.starts_with("ce-")
                || matches!(
                    lower.as_str(),
                    "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
                )
            {
                return Err(Error::Invalid(format!("header '{k}' is set by the sink")));
            }
        }
    }
    let timeout_ms = range("timeout_ms", def.timeout_ms, 10_000, 1, 120_000)?;
    let SinkRate {
        max_rps,
        max_in_flight,
    } = def.rate.clone().unwrap_or_default();
    if max_rps == Some(0) {
        return Err(Error::Invalid("rate.max_rps must be at least 1".into()));
    }
    let max_in_flight = range("rate.max_in_flight", max_in_flight, 8, 1, 256)? as usize;
    let SinkRetry {
        record_attempts,
        initial_ms,
        max_ms,
        max_age_ms,
    } = def.retry.clone().unwrap_or_default();
    let record_attempts = range("retry.record_attempts", record_attempts, 3, 1, 100)?;
    let initial_ms = range("retry.initial_ms", initial_ms, 1_000, 1, 3_600_000)?;
    let max_ms = range("retry.max_ms", max_ms, 600_000, initial_ms, 86_400_000)?;
    let max_age_ms = range(
        "retry.max_age_ms",
        max_age_ms,
        72 * 3_600_000,
        1,
        30 * 86_400_000,
    )?;
    Ok((
        Policy {
            ordering: def.ordering.unwrap_or(SinkOrdering::Key),
            format,
            max_records,
            max_bytes,
            linger_ms,
            signed,
            timeout_ms,
            max_rps,
            max_in_flight,
            record_attempts,
            initial_ms,
            max_ms,
            max_age_ms,
        },
        filter,
    ))
}

/// A secret, sealed (see [`crate::sign::Sealer`]): a sink's signing secret, or
/// an event source's verifying one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredSecret {
    pub sealed: String,
    /// When it was made.
    #[serde(default)]
    pub added_ms: u64,
    /// When it stops being used, for a secret rotated out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl StoredSecret {
    /// A secret made at `now_ms`, used until it is rotated out.
    pub fn new(sealed: String, now_ms: u64) -> Self {
        StoredSecret {
            sealed,
            added_ms: now_ms,
            until_ms: None,
        }
    }

    /// Whether it is still used at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| u > now_ms)
    }
}

/// A rotation: `new` goes first, the secrets no longer used at `now_ms` are
/// dropped, and the others stay in use until `old_until_ms` at the latest.
pub fn rotate(secrets: &mut Vec<StoredSecret>, new: StoredSecret, now_ms: u64, old_until_ms: u64) {
    secrets.retain(|s| s.live(now_ms));
    for old in secrets.iter_mut() {
        old.until_ms = Some(old.until_ms.map_or(old_until_ms, |u| u.min(old_until_ms)));
    }
    secrets.insert(0, new);
}

/// What a sink's store keeps as its definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    pub sink: SinkDefinition,
    /// The topic it follows: its source topic, or its table's.
    pub topic: String,
    /// Id of that topic when the sink was made; a topic re-created under the
    /// name is another topic.
    pub topic_id: u64,
    pub created_ms: u64,
    /// Goes up with every replay; partitions at an older one start over from
    /// `start`.
    pub generation: u64,
    /// Where the current generation starts.
    pub start: SinkStart,
    #[serde(default)]
    pub paused: bool,
    /// When an operator last resumed it: every gateway delivering it retries
    /// at once when this changes.
    #[serde(default)]
    pub resumed_ms: u64,
    /// Why it is disabled (the endpoint answered 410), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    /// Newest first.
    #[serde(default)]
    pub secrets: Vec<StoredSecret>,
    /// Its store's shards (see `Backend::shards`): source partition `p` is
    /// delivered by the writer of shard `p % shards`.
    pub shards: u32,
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Stored> {
        serde_json::from_slice(bytes).ok()
    }

    /// The secrets that sign now, newest first.
    pub fn live_secrets(&self, now_ms: u64) -> impl Iterator<Item = &StoredSecret> {
        self.secrets.iter().filter(move |s| s.live(now_ms))
    }
}

/// The start of a new sink: `latest` unless it says otherwise.
pub fn start_of(def: &SinkDefinition) -> SinkStart {
    def.start.unwrap_or(SinkStart::Named(SinkStartName::Latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(v: serde_json::Value) -> SinkDefinition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_refusals() {
        let base = serde_json::json!({"name":"s","source":{"topic":"t"},"url":"http://x/"});
        let (p, f) = check(&def(base.clone())).unwrap();
        assert_eq!(
            (
                p.ordering,
                p.format,
                p.max_records,
                p.max_in_flight,
                p.signed
            ),
            (SinkOrdering::Key, SinkFormat::Record, 1, 8, true)
        );
        assert!(f.is_none());
        for (patch, why) in [
            (serde_json::json!({"url":"ftp://x"}), "http"),
            (serde_json::json!({"name":"a b"}), "name"),
            (
                serde_json::json!({"batch":{"max_records":0}}),
                "max_records",
            ),
            (
                serde_json::json!({"format":"cloudevents-binary","batch":{"max_records":2}}),
                "one record",
            ),
            (serde_json::json!({"signing":{"scheme":"md5"}}), "scheme"),
            (
                serde_json::json!({"headers":{"webhook-id":"x"}}),
                "set by the sink",
            ),
            (serde_json::json!({"filter":"amount >"}), "filter"),
            (serde_json::json!({"rate":{"max_rps":0}}), "max_rps"),
            (
                serde_json::json!({"source":{"topic":"t","table":"x"}}),
                "one of",
            ),
            (serde_json::json!({"source":{}}), "one of"),
        ] {
            let mut v = base.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = check(&def(v)).unwrap_err().to_string();
            assert!(e.contains(why), "{e} should mention {why}");
        }
    }

    #[test]
    fn a_rotation_puts_the_new_secret_first_and_ends_the_old_ones() {
        let old = |until_ms| StoredSecret {
            sealed: format!("{until_ms:?}"),
            added_ms: 0,
            until_ms,
        };
        let mut secrets = vec![old(None), old(Some(50)), old(Some(500)), old(Some(5000))];
        rotate(
            &mut secrets,
            StoredSecret::new("new".into(), 100),
            100,
            1000,
        );
        let seen: Vec<(&str, Option<u64>)> = secrets
            .iter()
            .map(|s| (s.sealed.as_str(), s.until_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("new", None),
                ("None", Some(1000)),
                ("Some(500)", Some(500)),
                ("Some(5000)", Some(1000)),
            ]
        );
        assert_eq!(secrets[0].added_ms, 100);
        assert!(secrets[1].live(999) && !secrets[1].live(1000));
    }
}
