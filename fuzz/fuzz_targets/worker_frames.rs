//! Fuzzes the frame decoder of the sandbox's worker pipe (`edgefleet_sandbox::wire::read_frame`,
//! `wire::decode`): the input is a byte stream, read frame by frame as the worker reads requests
//! (`Request`) and, separately, as the supervisor reads responses (`Response`, which carry what
//! module code produced: commands, upstream messages, state, logs, errors).
//!
//! Properties: nothing panics, whatever a length prefix claims; a stream yields `Ok(None)` only
//! when no whole length prefix is left (a stream cut inside the 4-byte prefix also reads as a
//! clean end), and an error when it ends inside a body; a length over `MAX_FRAME` is refused as
//! invalid data, whatever follows; every decoded message re-frames (`wire::frame`, and `write_frame`
//! alike) to a frame that decodes to the same encoding again.

#![no_main]

use std::fmt::Debug;
use std::io::{Cursor, ErrorKind};

use edgefleet_sandbox::wire::{self, MAX_FRAME, Request, Response};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Frames read from one stream at most; every frame takes 4 bytes, so this is never the limit for
/// inputs of libFuzzer's usual sizes.
const MAX_FRAMES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    read_stream::<Request>(data);
    read_stream::<Response>(data);
});

fn read_stream<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) {
    let mut stream = Cursor::new(data);
    for _ in 0..MAX_FRAMES {
        let start = stream.position() as usize;
        let rest = &data[start..];
        match wire::read_frame::<T>(&mut stream) {
            Ok(None) => {
                assert!(rest.len() < 4, "{} bytes left, yet no frame", rest.len());
                return;
            }
            Ok(Some(message)) => check_message(&message, rest),
            Err(e) => {
                check_refusal(rest, e.kind());
                return;
            }
        }
    }
}

fn check_message<T: Serialize + DeserializeOwned + Debug>(message: &T, rest: &[u8]) {
    let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
    assert!(len <= MAX_FRAME && 4 + len <= rest.len());
    let framed = wire::frame(message);
    let mut written = Vec::new();
    wire::write_frame(&mut written, message).expect("a decoded message is small enough to write");
    assert_eq!(written, framed);
    let again: T = wire::read_frame(&mut Cursor::new(&framed))
        .expect("a re-framed message reads")
        .expect("a frame, not the end");
    assert_eq!(
        wire::frame(&again),
        framed,
        "{message:?} changed on a round trip"
    );
}

/// Why a stream starting with `rest` was refused: a length over the limit, a body cut short, or a
/// body that is not a message.
fn check_refusal(rest: &[u8], kind: ErrorKind) {
    if rest.len() < 4 {
        panic!(
            "an error instead of the end of the stream, with {} bytes left",
            rest.len()
        );
    }
    let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
    let expected = if len > MAX_FRAME {
        ErrorKind::InvalidData
    } else if 4 + len > rest.len() {
        ErrorKind::UnexpectedEof
    } else {
        ErrorKind::InvalidData
    };
    assert_eq!(
        kind,
        expected,
        "frame of {len} bytes with {} bytes left",
        rest.len() - 4
    );
}
