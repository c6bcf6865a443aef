//! Event sources: their definitions, kept as state stores `_source.<name>` (so
//! every gateway of a cluster has them) with their secrets sealed, and read
//! back into a cache the webhook endpoint looks sources up in. Checking a
//! request and what record it becomes is `sluice_sources`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sluice_log::{Backend, SOURCE_STORES, wait};
use sluice_openapi::{SourceCounts, SourceDefinition, SourceInfo, SourceSecret};
use sluice_sinks::StoredSecret;
use sluice_sinks::sign::Sealer;
use sluice_sources::{Pick, Scheme};

/// The default tolerance of a signed timestamp.
const TOLERANCE_S: u64 = 300;

/// How long a rotated-out secret is accepted by default.
pub(crate) const KEEP_OLD_S: u64 = 86_400;

/// What a source operation refused.
#[derive(Debug)]
pub(crate) enum Fault {
    Invalid(String),
    NotFound(String),
    Exists(String),
    NoTopic(String),
    Log(sluice_log::Error),
}

impl From<sluice_log::Error> for Fault {
    fn from(e: sluice_log::Error) -> Self {
        Fault::Log(e)
    }
}

/// A source as its store's definition keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The definition, without its secret.
    def: SourceDefinition,
    topic_id: u64,
    created_ms: u64,
    secrets: Vec<StoredSecret>,
}

/// A source ready to take requests.
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) topic_id: u64,
    pub(crate) scheme: Scheme,
    pub(crate) header: Option<String>,
    pub(crate) tolerance_s: u64,
    pub(crate) key: Option<Pick>,
    pub(crate) dedupe: Option<Pick>,
    pub(crate) headers: Vec<String>,
    /// Secrets in the clear, with when each stops being accepted.
    secrets: Vec<(String, Option<u64>)>,
    stored: Stored,
    raw: Vec<u8>,
}

impl Source {
    /// The secrets accepted at `now_ms`.
    pub(crate) fn secrets(&self, now_ms: u64) -> Vec<String> {
        self.secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| u > now_ms))
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// The sources, cached from their stores.
pub(crate) struct Sources {
    log: Arc<dyn Backend>,
    sealer: Option<Sealer>,
    dedupe_window_s: u64,
    cache: RwLock<HashMap<String, Arc<Source>>>,
    counts: RwLock<HashMap<String, Arc<(AtomicU64, AtomicU64)>>>,
}

fn store_of(name: &str) -> String {
    format!("{SOURCE_STORES}{name}")
}

/// The sealing's associated data of a source's secrets (apart from sinks').
fn aad(name: &str) -> String {
    format!("source:{name}")
}

/// Checks a definition; answers the scheme and the picks in effect.
fn check(
    def: &SourceDefinition,
    window_s: u64,
) -> Result<(Scheme, Option<Pick>, Option<Pick>), Fault> {
    let bad = |m: String| Fault::Invalid(m);
    if !sluice_log::valid_name(&def.name) {
        return Err(bad(
            "source names are 1 to 249 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    let scheme: Scheme = serde_json::from_value(serde_json::Value::String(
        def.verify.scheme.clone(),
    ))
    .map_err(|_| {
        bad(format!(
            "verify.scheme is standard-webhooks, github, stripe, slack, hmac or token, not '{}'",
            def.verify.scheme
        ))
    })?;
    if def.verify.header.is_some() && !matches!(scheme, Scheme::Hmac | Scheme::Token) {
        return Err(bad(format!(
            "verify.header is for hmac and token; {} names its own headers",
            def.verify.scheme
        )));
    }
    if let Some(h) = &def.verify.header
        && Pick::parse(&format!("header:{h}")).is_err()
    {
        return Err(bad(format!("verify.header '{h}' is not a header name")));
    }
    if def.verify.tolerance_s.is_some_and(|t| t == 0 || t > 86_400) {
        return Err(bad("verify.tolerance_s is 1 to 86400".into()));
    }
    let key = def
        .key
        .as_deref()
        .map(Pick::parse)
        .transpose()
        .map_err(|e| bad(format!("key: {e}")))?;
    let dedupe = match def.dedupe.as_deref() {
        Some("webhook-id") => Some(Pick::Header("webhook-id".into())),
        Some(d) => Some(Pick::parse(d).map_err(|e| bad(format!("dedupe: {e}")))?),
        None => sluice_sources::default_dedupe(scheme),
    };
    if def.dedupe_window_s.is_some_and(|w| w > window_s) {
        return Err(bad(format!(
            "dedupe_window_s is at most this gateway's dedupe window, {window_s} s \
             (--dedupe-window-secs)"
        )));
    }
    for h in def.headers.iter().flatten() {
        if Pick::parse(&format!("header:{h}")).is_err() {
            return Err(bad(format!("headers: '{h}' is not a header name")));
        }
    }
    Ok((scheme, key, dedupe))
}

impl Sources {
    pub(crate) fn new(
        log: Arc<dyn Backend>,
        sealer: Option<Sealer>,
        dedupe_window_s: u64,
    ) -> Sources {
        Sources {
            log,
            sealer,
            dedupe_window_s,
            cache: RwLock::default(),
            counts: RwLock::default(),
        }
    }

    /// A source of a stored definition, its secrets opened.
    fn load(&self, name: &str, raw: &[u8]) -> Option<Source> {
        let stored: Stored = serde_json::from_slice(raw).ok()?;
        let (scheme, key, dedupe) = check(&stored.def, u64::MAX).ok()?;
        let sealer = self.sealer.as_ref()?;
        let secrets = stored
            .secrets
            .iter()
            .filter_map(|s| Some((sealer.open(&aad(name), &s.sealed).ok()?, s.until_ms)))
            .collect();
        Some(Source {
            name: name.to_string(),
            topic: stored.def.topic.clone(),
            topic_id: stored.topic_id,
            scheme,
            header: stored
                .def
                .verify
                .header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            tolerance_s: stored.def.verify.tolerance_s.unwrap_or(TOLERANCE_S),
            key,
            dedupe,
            headers: stored
                .def
                .headers
                .iter()
                .flatten()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            secrets,
            stored,
            raw: raw.to_vec(),
        })
    }

    /// Reads the sources the engine has into the cache (blocking).
    pub(crate) fn refresh(&self) -> Result<(), Fault> {
        let stores = self.log.stores()?;
        let mut seen = HashMap::new();
        for (store, raw) in &stores {
            let Some(name) = store.strip_prefix(SOURCE_STORES) else {
                continue;
            };
            let cached = self.cache.read().expect("sources lock").get(name).cloned();
            let source = match cached {
                Some(s) if s.raw == *raw => s,
                _ => match self.load(name, raw) {
                    Some(s) => Arc::new(s),
                    None => {
                        tracing::warn!(source = %name, "a source's definition does not load (its secrets need the --sink-secret-key they were sealed with)");
                        continue;
                    }
                },
            };
            seen.insert(name.to_string(), source);
        }
        *self.cache.write().expect("sources lock") = seen;
        Ok(())
    }

    /// A source in the cache (does not block).
    pub(crate) fn cached(&self, name: &str) -> Option<Arc<Source>> {
        self.cache.read().expect("sources lock").get(name).cloned()
    }

    /// A source by name; one not cached yet is looked for in the engine once
    /// (made through another gateway a moment ago). Blocking.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Source>> {
        if let Some(s) = self.cached(name) {
            return Some(s);
        }
        if !sluice_log::valid_name(name) {
            return None;
        }
        let _ = self.refresh();
        self.cache.read().expect("sources lock").get(name).cloned()
    }

    fn counts(&self, name: &str) -> Arc<(AtomicU64, AtomicU64)> {
        if let Some(c) = self.counts.read().expect("counts lock").get(name) {
            return c.clone();
        }
        self.counts
            .write()
            .expect("counts lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Counts a request of a source: accepted or refused.
    pub(crate) fn count(&self, name: &str, accepted: bool) {
        let c = self.counts(name);
        let n = if accepted { &c.0 } else { &c.1 };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// A source's wire view.
    pub(crate) fn info(&self, s: &Source) -> SourceInfo {
        let c = self.counts(&s.name);
        let mut def = s.stored.def.clone();
        def.verify.secret = None;
        def.verify.tolerance_s = s.scheme.timed().then_some(s.tolerance_s);
        def.dedupe = s.dedupe.as_ref().map(ToString::to_string);
        def.dedupe_window_s = Some(def.dedupe_window_s.unwrap_or(self.dedupe_window_s));
        SourceInfo {
            name: s.name.clone(),
            definition: def,
            hook_path: format!("/v1/hooks/{}", s.name),
            secrets: s
                .stored
                .secrets
                .iter()
                .map(|x| SourceSecret {
                    added_ms: x.added_ms,
                    expires_ms: x.until_ms,
                })
                .collect(),
            created_ms: s.stored.created_ms,
            counts: SourceCounts {
                accepted: c.0.load(Ordering::Relaxed),
                refused: c.1.load(Ordering::Relaxed),
            },
        }
    }

    /// Every source, by name (blocking).
    pub(crate) fn list(&self) -> Result<Vec<SourceInfo>, Fault> {
        self.refresh()?;
        let mut all: Vec<Arc<Source>> = self
            .cache
            .read()
            .expect("sources lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all.iter().map(|s| self.info(s)).collect())
    }

    /// One source's view (blocking).
    pub(crate) fn describe(&self, name: &str) -> Result<SourceInfo, Fault> {
        let s = self
            .get(name)
            .ok_or_else(|| Fault::NotFound(name.to_string()))?;
        Ok(self.info(&s))
    }

    fn sealer(&self) -> Result<&Sealer, Fault> {
        self.sealer.as_ref().ok_or_else(|| {
            Fault::Invalid(
                "sources keep their secrets sealed: give this engine --sink-secret-key".into(),
            )
        })
    }

    /// Makes a source (blocking).
    pub(crate) fn create(&self, mut def: SourceDefinition) -> Result<SourceInfo, Fault> {
        check(&def, self.dedupe_window_s)?;
        let secret = def
            .verify
            .secret
            .take()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Fault::Invalid("verify.secret is required".into()))?;
        let sealer = self.sealer()?;
        let topic = self
            .log
            .topic(&def.topic)
            .or_else(|| self.log.find_topic(&def.topic))
            .ok_or_else(|| Fault::NoTopic(def.topic.clone()))?;
        let now = sluice_log::now_ms();
        let stored = Stored {
            secrets: vec![StoredSecret::new(
                sealer.seal(&aad(&def.name), &secret),
                now,
            )],
            topic_id: topic.id(),
            created_ms: now,
            def,
        };
        let name = stored.def.name.clone();
        let json = serde_json::to_vec(&stored).expect("a source serializes");
        wait(|r| {
            self.log
                .create_store(&store_of(&name), json, Vec::new(), 1, r)
        })
        .map_err(|e| match e {
            sluice_log::Error::StoreExists(_) => Fault::Exists(name.clone()),
            e => Fault::Log(e),
        })?;
        self.refresh()?;
        self.describe(&name)
    }

    /// A new current secret; the others stay accepted for `keep_old_s`
    /// (blocking).
    pub(crate) fn rotate(
        &self,
        name: &str,
        secret: String,
        keep_old_s: u64,
    ) -> Result<SourceInfo, Fault> {
        if secret.is_empty() {
            return Err(Fault::Invalid("secret is required".into()));
        }
        let sealer = self.sealer()?;
        let s = self
            .get(name)
            .ok_or_else(|| Fault::NotFound(name.to_string()))?;
        let now = sluice_log::now_ms();
        let until = now.saturating_add(keep_old_s.saturating_mul(1000));
        let mut stored = s.stored.clone();
        sluice_sinks::rotate(
            &mut stored.secrets,
            StoredSecret::new(sealer.seal(&aad(name), &secret), now),
            now,
            until,
        );
        let json = serde_json::to_vec(&stored).expect("a source serializes");
        wait(|r| self.log.update_store(&store_of(name), json, r)).map_err(|e| match e {
            sluice_log::Error::StoreNotFound(_) => Fault::NotFound(name.to_string()),
            e => Fault::Log(e),
        })?;
        self.refresh()?;
        self.describe(name)
    }

    /// Deletes a source; its topic and records stay (blocking).
    pub(crate) fn delete(&self, name: &str) -> Result<(), Fault> {
        if !sluice_log::valid_name(name) {
            return Err(Fault::NotFound(name.to_string()));
        }
        wait(|r| self.log.drop_store(&store_of(name), r)).map_err(|e| match e {
            sluice_log::Error::StoreNotFound(_) => Fault::NotFound(name.to_string()),
            e => Fault::Log(e),
        })?;
        self.cache.write().expect("sources lock").remove(name);
        Ok(())
    }
}
