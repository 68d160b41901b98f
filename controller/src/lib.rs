//! The cloud controller (being built, issue 11).

pub mod crds;
mod oci;
pub mod resources;
