//! The edgefleet edge agent.
//!
//! Device messages arrive on the device [`link`], wait fairly in the [`intake`], and run through the
//! [`interactions`] lanes in the sandbox (`edgefleet_sandbox`: a fresh WasmEdge instance per
//! interaction, in supervised worker processes); their effects are committed to the [`store`]. The
//! [`publisher`] drains the outbox to the cloud, [`assignments`] switch module versions in, [`status`]
//! reports the node and [`health`] says whether it makes progress. [`agent`] wires it.

pub mod activity;
pub mod agent;
pub mod assignments;
pub mod classes;
pub mod clock;
pub mod config;
pub mod context;
pub mod events;
pub mod health;
pub mod http;
pub mod intake;
pub mod interactions;
pub mod link;
pub mod metrics;
pub mod publisher;
pub mod status;
pub mod store;
