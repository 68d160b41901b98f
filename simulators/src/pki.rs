//! The PKI of tests and simulators — test-time CAs, broker and client certificates, PEM files,
//! rustls client configurations — is the `edgefleet-pki` crate, re-exported here so that tests
//! keep naming it `edgefleet_simulators::pki`.
pub use edgefleet_pki::*;
