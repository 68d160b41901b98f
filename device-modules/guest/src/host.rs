//! The host functions of guest ABI v1 (import module `edgefleet_v1`), wrapped in safe Rust.
//!
//! Inputs are copied into caller buffers: the host returns the full length of the value and copies it
//! only when it fits, so a value larger than the buffer is reported as [`ReadError::TooLarge`] (with
//! both lengths) rather than truncated. Pointers and lengths cross the boundary as `i32`, as the ABI
//! specifies; the host checks every range against the module's memory.

use edgefleet_guest_abi::log_level;

/// An input could not be read into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The value is `len` bytes, more than the `cap` bytes of the buffer; nothing was copied.
    TooLarge { len: usize, cap: usize },
    /// A text value (device id, channel) is not UTF-8.
    NotUtf8,
}

/// Interprets a copy function's result `len` for `buf`: the copied bytes, `None` when the host reports
/// the value absent (a negative length: `-1` from `state_get`), or [`ReadError::TooLarge`].
#[cfg(any(target_arch = "wasm32", doc, test))]
fn copied(len: i32, buf: &[u8]) -> Result<Option<&[u8]>, ReadError> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    buf.get(..len).map(Some).ok_or(ReadError::TooLarge {
        len,
        cap: buf.len(),
    })
}

#[cfg(any(target_arch = "wasm32", doc, test))]
fn text(bytes: &[u8]) -> Result<&str, ReadError> {
    core::str::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// The severity of a log line, as the ABI numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    Error = log_level::ERROR,
    Warn = log_level::WARN,
    Info = log_level::INFO,
    Debug = log_level::DEBUG,
    Trace = log_level::TRACE,
}

#[cfg(any(target_arch = "wasm32", doc))]
pub use guest::*;

/// The safe functions, on the guest side only (and in the documentation).
#[cfg(any(target_arch = "wasm32", doc))]
mod guest {
    use super::{Level, ReadError, copied, text};

    /// The imports, typed exactly as `docs/guest-abi.md` lists them.
    mod ffi {
        #[link(wasm_import_module = "edgefleet_v1")]
        unsafe extern "C" {
            pub fn message(ptr: *mut u8, cap: i32) -> i32;
            pub fn device_id(ptr: *mut u8, cap: i32) -> i32;
            pub fn channel(ptr: *mut u8, cap: i32) -> i32;
            pub fn config(ptr: *mut u8, cap: i32) -> i32;
            pub fn state_get(ptr: *mut u8, cap: i32) -> i32;
            pub fn state_set(ptr: *const u8, len: i32);
            pub fn command(ptr: *const u8, len: i32);
            pub fn publish(topic_ptr: *const u8, topic_len: i32, ptr: *const u8, len: i32);
            pub fn log(level: i32, ptr: *const u8, len: i32);
            pub safe fn now_ms() -> i64;
        }
    }

    /// Calls the copy function `$import` for `$buf` (`&mut [u8]`) and interprets its result.
    macro_rules! copy_into {
        ($import:ident, $buf:expr) => {{
            let buf: &mut [u8] = $buf;
            // SAFETY: the host writes at most `cap(buf)` bytes at `buf`, which is valid for that many.
            let len = unsafe { ffi::$import(buf.as_mut_ptr(), cap(buf)) };
            copied(len, buf)
        }};
    }

    /// A buffer's capacity as the ABI's `i32` (a buffer over 2 GiB offers 2 GiB).
    fn cap(buf: &[u8]) -> i32 {
        i32::try_from(buf.len()).unwrap_or(i32::MAX)
    }

    /// An output's length as the ABI's `i32`: wasm32 lengths are 32-bit, passed as their bit pattern.
    fn len(bytes: &[u8]) -> i32 {
        bytes.len() as i32
    }

    /// The device message payload of this interaction.
    pub fn message(buf: &mut [u8]) -> Result<&[u8], ReadError> {
        copy_into!(message, buf).map(Option::unwrap_or_default)
    }

    /// The id of the device that sent the message.
    pub fn device_id(buf: &mut [u8]) -> Result<&str, ReadError> {
        copy_into!(device_id, buf).and_then(|id| text(id.unwrap_or_default()))
    }

    /// The channel the device published the message on (e.g. `telemetry`, `event/door`).
    pub fn channel(buf: &mut [u8]) -> Result<&str, ReadError> {
        copy_into!(channel, buf).and_then(|channel| text(channel.unwrap_or_default()))
    }

    /// The class config, as declared in the DeviceClass (empty when the class declares none).
    pub fn config(buf: &mut [u8]) -> Result<&[u8], ReadError> {
        copy_into!(config, buf).map(Option::unwrap_or_default)
    }

    /// This device's persisted state; `None` when the device has none yet.
    pub fn state(buf: &mut [u8]) -> Result<Option<&[u8]>, ReadError> {
        copy_into!(state_get, buf)
    }

    /// Replaces this device's state (committed only if the interaction succeeds).
    pub fn set_state(state: &[u8]) {
        // SAFETY: the host reads `state.len()` bytes at `state`, which is valid for that many.
        unsafe { ffi::state_set(state.as_ptr(), len(state)) }
    }

    /// Sends a command payload to this interaction's device.
    pub fn command(payload: &[u8]) {
        // SAFETY: as in `set_state`.
        unsafe { ffi::command(payload.as_ptr(), len(payload)) }
    }

    /// Sends `payload` upstream on the class-relative `topic` (e.g. `telemetry`, `event/anomaly`); the
    /// topic must match the class's allowed topics, or the interaction fails with `ForbiddenTopic`.
    pub fn publish(topic: &str, payload: &[u8]) {
        // SAFETY: as in `set_state`, for both ranges.
        unsafe {
            ffi::publish(
                topic.as_ptr(),
                len(topic.as_bytes()),
                payload.as_ptr(),
                len(payload),
            )
        }
    }

    /// Writes a log line at `level` (the agent keeps 32 lines of up to 512 bytes per interaction).
    pub fn log(level: Level, line: &str) {
        // SAFETY: as in `set_state`.
        unsafe { ffi::log(level as i32, line.as_ptr(), len(line.as_bytes())) }
    }

    /// The interaction's wall-clock time in ms since the UNIX epoch (fixed for the interaction).
    pub fn now_ms() -> i64 {
        ffi::now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_fits_is_the_copied_prefix() {
        let buf = [1, 2, 3, 4, 5];
        assert_eq!(copied(3, &buf), Ok(Some(&buf[..3])));
        assert_eq!(copied(5, &buf), Ok(Some(&buf[..])));
        assert_eq!(copied(0, &buf), Ok(Some(&[][..])));
    }

    #[test]
    fn a_value_longer_than_the_buffer_reports_both_lengths() {
        assert_eq!(
            copied(6, &[0; 5]),
            Err(ReadError::TooLarge { len: 6, cap: 5 })
        );
        assert_eq!(
            copied(i32::MAX, &[]),
            Err(ReadError::TooLarge {
                len: i32::MAX as usize,
                cap: 0
            })
        );
    }

    #[test]
    fn a_negative_length_is_an_absent_value() {
        assert_eq!(copied(-1, &[0; 4]), Ok(None));
    }

    #[test]
    fn text_must_be_utf8() {
        assert_eq!(text(b"door-7"), Ok("door-7"));
        assert_eq!(text(&[0xff, 0xfe]), Err(ReadError::NotUtf8));
    }
}
