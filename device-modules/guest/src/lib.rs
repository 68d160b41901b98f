//! Guest SDK for edgefleet device-class handlers: safe Rust over guest ABI v1 (`docs/guest-abi.md`).
//!
//! A handler module is a `cdylib` built for `wasm32-unknown-unknown`. For each device message the edge
//! agent instantiates it afresh and calls its `edgefleet_handle` export; the handler reads its inputs
//! (message, class config, device state) through host functions and emits its outputs (commands to the
//! device, upstream publications, the new device state). This crate owns that boundary:
//!
//! - the host functions, wrapped in safe functions at the crate root ([`message`], [`config`],
//!   [`state`], [`set_state`], [`command`], [`publish`], [`log`], [`now_ms`], ...). They exist only
//!   on `wasm32`: on the host, handler crates compile their pure logic for native unit tests and
//!   simulators, and leave the glue that talks to the agent out;
//! - [`handler!`], which exports `edgefleet_handle` and declares the ABI version in the
//!   `edgefleet_abi` custom section;
//! - [`Reject`], the codes a handler returns when it refuses a message;
//! - [`cbor`], the CBOR payloads: [`cbor::map!`] (a struct as a text-keyed map: required, optional
//!   and defaulted keys, unknown keys skipped, numbers of any CBOR width), [`cbor::text_enum!`], the
//!   helpers underneath, and [`minicbor`] itself;
//! - [`window`], a fixed-capacity rolling window of samples for handlers that keep recent readings in
//!   device state;
//! - on `wasm32`, the panic handler (a panic becomes a wasm trap, which the agent contains).
//!
//! The crate is `no_std` and has no allocator: values are read into caller buffers (usually arrays on
//! the 16 KiB stack) and encoded into them. `README.md` beside this crate walks through writing,
//! testing and building a new handler (`edgefleet module new` writes one to start from).
//!
//! ```ignore
//! use edgefleet_guest::{self as guest, Reject};
//!
//! fn handle() -> Result<(), Reject> {
//!     let mut message = [0u8; 256];
//!     let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
//!     guest::command(message);
//!     Ok(())
//! }
//!
//! guest::handler!(handle);
//! ```
#![no_std]

pub mod cbor;
mod host;
pub mod window;

pub use host::{Level, ReadError};
#[cfg(any(target_arch = "wasm32", doc))]
pub use host::{
    channel, command, config, device_id, log, message, now_ms, publish, set_state, state,
};
pub use minicbor;

/// The guest ABI this SDK implements (version 1), as defined once for host and guest.
///
/// [`handler!`] writes [`ABI_VERSION`] into the module's [`ABI_SECTION`] custom section (4 bytes,
/// little-endian `u32`), and the host functions are imported from [`HOST_MODULE`]. An agent refuses a
/// module built for another version at load time.
pub use edgefleet_guest_abi::{ABI_SECTION, ABI_VERSION, HANDLE_EXPORT, HOST_MODULE};

/// Why a handler refuses an interaction: the agent discards its outputs and reports the code.
///
/// `edgefleet_handle` returns `0` for a handled message and [`Reject::code`] otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Reject {
    /// The device message is malformed: not the CBOR the class expects, a missing key, a value out of
    /// range, or larger than the handler reads.
    Message = 1,
    /// The class config is malformed.
    Config = 2,
    /// The device state is malformed (written by another version of the handler, or corrupted).
    State = 3,
    /// An output did not fit the handler's buffer.
    Output = 4,
}

impl Reject {
    /// The nonzero code `edgefleet_handle` returns.
    pub const fn code(self) -> i32 {
        self as i32
    }
}

/// Exports `edgefleet_handle` calling `$handle: fn() -> Result<(), Reject>`, and declares guest ABI v1 in
/// the `edgefleet_abi` custom section. Use it once per module, in the `wasm32` glue.
///
/// ```ignore
/// fn handle() -> Result<(), edgefleet_guest::Reject> { Ok(()) }
/// edgefleet_guest::handler!(handle);
/// ```
#[macro_export]
macro_rules! handler {
    ($handle:path) => {
        /// The interaction entry point of guest ABI v1: `0` handled, nonzero rejected.
        #[unsafe(no_mangle)]
        pub extern "C" fn edgefleet_handle() -> i32 {
            let handle: fn() -> ::core::result::Result<(), $crate::Reject> = $handle;
            match handle() {
                ::core::result::Result::Ok(()) => 0,
                ::core::result::Result::Err(reject) => reject.code(),
            }
        }

        #[unsafe(link_section = "edgefleet_abi")]
        #[used]
        static EDGEFLEET_ABI: [u8; 4] = $crate::ABI_VERSION.to_le_bytes();
    };
}

/// A panic in a guest traps the instance: the agent reports the interaction as `Trap` and commits
/// nothing. Handlers avoid panics on untrusted input and return a [`Reject`] instead.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn reject_codes_are_distinct_and_nonzero() {
        let codes = [
            Reject::Message,
            Reject::Config,
            Reject::State,
            Reject::Output,
        ]
        .map(Reject::code);
        assert_eq!(codes, [1, 2, 3, 4]);
    }

    /// `#[link_section]` and `#[link(wasm_import_module)]` take literals only: they must spell the
    /// names of the shared ABI definition.
    #[test]
    fn literal_names_match_the_abi() {
        let lib = include_str!("lib.rs");
        let host = include_str!("host.rs");
        assert!(lib.contains(&format!("link_section = \"{ABI_SECTION}\"")));
        assert!(lib.contains(&format!("pub extern \"C\" fn {HANDLE_EXPORT}()")));
        assert!(host.contains(&format!("wasm_import_module = \"{HOST_MODULE}\"")));
        assert_eq!(ABI_VERSION.to_le_bytes(), [1, 0, 0, 0]);
    }
}
