//! Test and simulation harness for edgefleet.
//!
//! Today: [`pki`], a certificate authority made at test time (broker and client certificates, PEM
//! files, rustls client configurations), and [`broker`], a real mosquitto per test on a free
//! loopback port, plain or with mutual TLS, that can be stopped and started again with its
//! persistent sessions, and can run the broker configurations shipped in `brokers/` (their access
//! rules and limits). Tests of the agent, the controller and the simulators use them.
//!
//! Next (see the open issues): simulated MQTT devices of the device-module classes, thousands at a
//! time, for tests, demos and benchmarks.

pub mod broker;
pub mod pki;

pub use broker::{Broker, BrokerError, BrokerOptions, Shipped};
pub use pki::{Authority, Identity, PkiError, TlsFiles};
pub mod devices;
pub mod nodes;
