//! The worker side of the edgefleet sandbox: the only code that links WasmEdge.
//!
//! * [`engine`] AOT-compiles modules and runs each interaction in a fresh instance.
//! * [`worker`] serves the supervisor's requests over the pipe protocol of `edgefleet_sandbox::wire`.
//!
//! The binary `edgefleet-sandbox-worker` is what the host-side `edgefleet_sandbox::Sandbox` starts;
//! the library is public for its integration tests and benchmarks, which drive the engine in-process.

pub mod engine;
pub mod worker;
