//! The cloud controller (being built, issue 11).

pub mod cloud;
pub mod crds;
pub mod distribution;
pub mod fleet;
pub mod ingest;
pub mod modules;
pub mod objects;
pub mod oci;
pub mod resources;
pub mod status;
