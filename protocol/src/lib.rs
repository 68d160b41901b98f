//! The protocol shared by the edge agent, the cloud controller and the simulators.
//!
//! Everything two edgefleet components exchange is defined here, once: the MQTT topic namespace,
//! the CBOR messages, module manifests and their signatures, and the per-class limits a handler runs
//! under.

pub mod limits;

pub use limits::ClassLimits;
