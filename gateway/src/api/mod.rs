//! The HTTP routes, each annotated for the OpenAPI document.

pub(crate) mod backup;
pub(crate) mod events;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod processors;
pub(crate) mod produce;
pub(crate) mod sinks;
pub(crate) mod sources;
pub(crate) mod stats;
pub(crate) mod tables;
pub(crate) mod topics;

use std::sync::Arc;

use sluice_log::Topic;
use tokio::sync::oneshot;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::ApiError;

/// Base64 as producers send it: the standard alphabet, padding optional, and unused
/// bits of the last character not required to be zero.
pub(crate) const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
use crate::state::AppState;

/// Runs a callback-style log call and awaits its answer.
pub(crate) async fn call<T: Send + 'static>(
    f: impl FnOnce(sluice_log::Reply<T>),
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    f(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    match rx.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::from(sluice_log::Error::Closed)),
    }
}

pub(crate) fn topic(state: &AppState, name: &str) -> Result<Arc<Topic>, ApiError> {
    state
        .log
        .topic(name)
        // Made through another gateway a moment ago? The engine looks (a call
        // to its cluster: the runtime moves other tasks off this thread).
        .or_else(|| tokio::task::block_in_place(|| state.log.find_topic(name)))
        .ok_or_else(|| ApiError::topic_not_found(name))
}
