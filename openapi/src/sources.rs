//! Event source bodies: signed webhooks from other systems into a topic.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RecordOffset;

/// How a source's senders are verified.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceVerify {
    /// `standard-webhooks`, `github`, `stripe`, `slack`, `hmac` (HMAC-SHA256 of the
    /// body, hex or base64) or `token` (a shared token in a header).
    #[schema(pattern = "^(standard-webhooks|github|stripe|slack|hmac|token)$")]
    pub scheme: String,
    /// The secret the sender signs with (the `whsec_...` of a Standard Webhooks
    /// sender, GitHub's webhook secret, Stripe's endpoint secret, Slack's signing
    /// secret, the HMAC key or the token). Write-only: never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How far a signed timestamp may be from now, in seconds (default 300).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub tolerance_s: Option<u64>,
    /// For `hmac` and `token`: the header the signature or token is in
    /// (default `x-signature`, `authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// A source defined.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "github", "topic": "repo-events",
    "verify": {"scheme": "github", "secret": "It's a Secret to Everybody"},
    "key": "$.repository.full_name"}))]
pub struct SourceDefinition {
    /// Source name, `[A-Za-z0-9._-]{1,249}`; senders post to `/v1/hooks/<name>`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$")]
    pub name: String,
    /// The topic its requests are appended to.
    pub topic: String,
    pub verify: SourceVerify,
    /// The record key: `$.path` of a JSON body or `header:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The delivery id redeliveries are recognised by: `webhook-id`,
    /// `header:<name>` or `$.path`. Default per scheme: `webhook-id`,
    /// `header:x-github-delivery`, `$.id` (Stripe), `$.event_id` (Slack); none for
    /// `hmac` and `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<String>,
    /// How long a delivery id must be remembered, in seconds. Ids are remembered
    /// for the gateway's `--dedupe-window-secs` (the default here), so a source
    /// may not ask for longer; a shorter value still dedupes for the whole
    /// gateway window.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub dedupe_window_s: Option<u64>,
    /// Request headers kept on the record besides the content type and the known
    /// senders' event and delivery headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// A secret a source accepts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceSecret {
    /// When it was added, ms since the Unix epoch.
    pub added_ms: u64,
    /// When it stops being accepted (a rotated-out secret); absent: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// What this gateway did with a source's requests since it started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct SourceCounts {
    /// Requests verified and appended (a redelivery included: it wrote nothing).
    pub accepted: u64,
    /// Requests refused: no or a bad signature, a stale timestamp.
    pub refused: u64,
}

/// A source and its status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceInfo {
    pub name: String,
    /// The definition, without secrets, with the defaults in effect.
    pub definition: SourceDefinition,
    /// Where senders post: `/v1/hooks/<name>`.
    pub hook_path: String,
    /// The secrets it accepts.
    pub secrets: Vec<SourceSecret>,
    pub created_ms: u64,
    /// This gateway's counts.
    pub counts: SourceCounts,
}

/// Sources.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceList {
    pub sources: Vec<SourceInfo>,
}

/// A new secret for a source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRotate {
    /// The new secret.
    pub secret: String,
    /// How long the previous secret is still accepted, in seconds (default 86400).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_u64"
    )]
    pub keep_old_s: Option<u64>,
}

/// A request a source took: where its record is (the first write's offsets for a
/// redelivery, which writes nothing).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookAccepted {
    pub offsets: Vec<RecordOffset>,
}
