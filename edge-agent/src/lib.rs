//! The edgefleet edge agent.
//!
//! Device messages arrive on the device [`link`], wait fairly in the [`intake`], and run through the
//! [`interactions`] lanes in the sandbox (`edgefleet_sandbox`: a fresh WasmEdge instance per
//! interaction, in supervised worker processes); their effects are committed to the [`store`]. The
//! `publisher` drains the outbox to the cloud, `assignments` switch module versions in (and
//! `fallback` back out when one is quarantined), `shadow` runs a version beside another, `status`
//! reports the node and `health` says whether it makes progress; `identity` gets and renews the
//! node's certificate from the controller (`--bootstrap-url`). [`agent`] wires it. Modules are
//! public where the benchmarks and tests drive them directly.

pub mod activity;
pub mod agent;
mod assignments;
pub mod classes;
mod clock;
pub mod config;
pub mod context;
pub mod events;
mod fallback;
mod health;
mod http;
mod identity;
pub mod intake;
pub mod interactions;
pub mod link;
pub mod metrics;
mod publisher;
mod shadow;
mod status;
pub mod store;
