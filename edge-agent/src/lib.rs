//! The edgefleet edge agent.
//!
//! Device messages arrive on the device [`link`], run through the [`interactions`] pipeline in the
//! [`sandbox`] (a fresh WasmEdge instance per interaction, in supervised worker processes), and
//! their effects are committed to the [`store`]; the [`publisher`] drains the outbox to the cloud,
//! [`assignments`] switch module versions in, and [`status`] reports the node. [`agent`] wires it.

pub mod agent;
pub mod assignments;
pub mod classes;
pub mod config;
pub mod http;
pub mod interactions;
pub mod link;
pub mod metrics;
pub mod publisher;
pub mod status;
pub mod store;
