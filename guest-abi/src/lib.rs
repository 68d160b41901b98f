//! Guest ABI v1 as data: the names, host-function signatures and fixed limits that a device-class
//! handler module and the sandbox running it must agree on (docs/guest-abi.md describes them).
//!
//! Defined once here so that the host (admission, the worker's engine) and the guest SDK cannot
//! drift apart. `no_std` and dependency-free: the guest SDK builds for `wasm32-unknown-unknown`
//! without an allocator. Two places cannot take a constant and spell the names out as literals —
//! the guest SDK's `#[link(wasm_import_module = "edgefleet_v1")]` and its
//! `#[link_section = "edgefleet_abi"]` — and the SDK's tests check those literals against this crate.
//! The C SDK's headers (`device-modules/c/include`) are checked against it through the modules they
//! build.
//!
//! The same ABI is described in WIT in `docs/guest-abi.wit`, for tools and documentation; with the
//! `wit` feature, the `wit` module embeds that file and reads it, and the tests here and in the
//! sandbox worker check that it agrees with [`HOST_FUNCTIONS`] and with the host functions the
//! worker registers.

#![no_std]

#[cfg(any(test, feature = "wit"))]
pub mod wit;

/// The guest ABI version: a module declares it in [`ABI_SECTION`] and imports [`HOST_MODULE`].
///
/// A new version is a new import module (`edgefleet_v2`) and a new value here: a module never mixes
/// two versions.
pub const ABI_VERSION: u32 = 1;

/// Custom section holding the ABI version a module was built for, as a little-endian `u32`.
pub const ABI_SECTION: &str = "edgefleet_abi";

/// Import module of the host functions of [`ABI_VERSION`].
pub const HOST_MODULE: &str = "edgefleet_v1";

/// Prefix of the host import module of every ABI version, followed by the version number.
pub const HOST_MODULE_PREFIX: &str = "edgefleet_v";

/// Import module of the guest's linear memory.
pub const MEMORY_MODULE: &str = "env";

/// Import name of the guest's linear memory.
pub const MEMORY_NAME: &str = "memory";

/// The handler entry point, a function `() -> i32`: `0` handled, nonzero rejected.
pub const HANDLE_EXPORT: &str = "edgefleet_handle";

/// Log lines kept per interaction; later `log` calls are dropped.
pub const MAX_LOG_LINES: usize = 32;

/// Bytes kept of one log line; the rest of a longer line is cut off.
pub const MAX_LOG_LINE_BYTES: usize = 512;

/// A WebAssembly value type used by a host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValType {
    I32,
    I64,
}

/// A host function of guest ABI v1, with the exact type a module must import it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFunction {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

/// The host functions of [`HOST_MODULE`], in the order docs/guest-abi.md lists them.
pub const HOST_FUNCTIONS: &[HostFunction] = {
    use ValType::{I32, I64};
    const fn f(
        name: &'static str,
        params: &'static [ValType],
        results: &'static [ValType],
    ) -> HostFunction {
        HostFunction {
            name,
            params,
            results,
        }
    }
    &[
        f("message", &[I32, I32], &[I32]),
        f("device_id", &[I32, I32], &[I32]),
        f("channel", &[I32, I32], &[I32]),
        f("config", &[I32, I32], &[I32]),
        f("state_get", &[I32, I32], &[I32]),
        f("state_set", &[I32, I32], &[]),
        f("command", &[I32, I32], &[]),
        f("publish", &[I32, I32, I32, I32], &[]),
        f("log", &[I32, I32, I32], &[]),
        f("now_ms", &[], &[I64]),
    ]
};

/// The `level` argument of the `log` host function. Numbers outside `0..=4` clamp to the nearest.
pub mod log_level {
    pub const ERROR: i32 = 0;
    pub const WARN: i32 = 1;
    pub const INFO: i32 = 2;
    pub const DEBUG: i32 = 3;
    pub const TRACE: i32 = 4;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn host_module_is_prefix_and_version() {
        assert_eq!(
            HOST_MODULE,
            std::format!("{HOST_MODULE_PREFIX}{ABI_VERSION}")
        );
    }

    #[test]
    fn host_function_names_are_unique() {
        for (i, a) in HOST_FUNCTIONS.iter().enumerate() {
            assert!(
                HOST_FUNCTIONS[i + 1..].iter().all(|b| b.name != a.name),
                "{} is listed twice",
                a.name
            );
        }
    }
}
