//! The edgefleet cloud controller: reconciles HandlerModules, DeviceClasses and EdgeNodes (from the
//! Kubernetes API, or a folder in standalone mode) into signed assignments and module chunks on the
//! cloud broker, and writes the fleet's state back. See docs/architecture.md.
//!
//! | module | owns |
//! |---|---|
//! | [`resources`] | the three kinds as Rust types (the CRDs are generated from them, [`crds`]) |
//! | [`objects`] | the declared objects, and reading them from a folder (standalone) |
//! | [`fleet`] | the plan: which handler each (node, class) runs (pure) |
//! | [`distribution`] | plan vs what the broker holds → publications (pure) |
//! | [`modules`] | module binaries: files, admission, the blob store |
//! | [`oci`] | modules as OCI artifacts: push, pull by digest, verification |
//! | [`ingest`] | node statuses and events → paced EdgeNode status writes (pure) |
//! | [`status`] | HandlerModule and DeviceClass status (pure) |
//! | [`vectors`] | modules' test vectors, run in the sandbox before they are ready |
//! | [`cloud`] | the cloud broker connection |
//! | [`control`] | the loop tying them together |
//! | [`kube`] | cluster mode: watches and status by server-side apply |
//! | [`bootstrap`] | cluster mode: node certificates for agents that prove their node with their ServiceAccount token |
//! | [`sink`] | where status goes (API server or local store) |
//! | [`http`] | health, metrics, the standalone fleet API |
//! | [`page`], [`history`] | the fleet page (both modes) and its interaction and fault rates |
//! | [`config`], [`run`], [`metrics`] | settings, wiring, Prometheus metrics |

pub mod bootstrap;
pub mod cloud;
pub mod config;
pub mod control;
pub mod crds;
pub mod distribution;
pub mod fleet;
pub mod history;
pub mod http;
pub mod ingest;
pub mod kube;
pub mod metrics;
pub mod modules;
pub mod objects;
pub mod oci;
pub mod page;
pub mod resources;
pub mod rollout;
pub mod run;
pub mod sink;
pub mod status;
pub mod vectors;
