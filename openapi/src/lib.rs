//! Sluice's wire types and its OpenAPI schemas.
//!
//! It owns every JSON body's type. Every JSON body the gateway reads or writes is defined here with serde and
//! `utoipa::ToSchema`, so the OpenAPI document is generated from the same types the
//! handlers use and cannot drift from them. This crate must not depend on axum, on
//! the storage crates or on anything async.

mod groups;
pub mod num;
mod processors;
mod produce;
mod sinks;
mod sources;
mod stats;
mod tables;
mod types;
mod ws;

pub use crate::groups::*;
pub use crate::processors::*;
pub use crate::produce::{
    HeaderList, MapOnly, ProduceBatch, ProduceBody, ProduceRecord, ProduceRecordSchema,
};
pub use crate::sinks::*;
pub use crate::sources::*;
pub use crate::stats::*;
pub use crate::tables::*;
pub use crate::types::*;
pub use crate::ws::*;
