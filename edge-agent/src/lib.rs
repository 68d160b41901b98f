//! The edgefleet edge agent.
//!
//! Today this crate holds the [`sandbox`]: fresh WasmEdge instances per device interaction, run in
//! supervised worker processes. The MQTT links, the durable store and the outbox come next.

pub mod assignments;
pub mod classes;
pub mod config;
pub mod interactions;
pub mod link;
pub mod metrics;
pub mod publisher;
pub mod sandbox;
pub mod store;
