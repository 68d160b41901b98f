//! The cloud controller (being built, issue 11).

pub mod crds;
pub mod distribution;
pub mod fleet;
mod oci;
pub mod resources;
