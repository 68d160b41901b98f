//! The pipe protocol between the supervisor and a sandbox worker process.
//!
//! Frames are a little-endian `u32` length followed by a CBOR body. The supervisor writes
//! [`Request`]s to the worker's stdin; the worker answers each with one [`Response`] on its stdout.
//! A batch of interactions of one module travels in one frame each way, so the cost of waking a
//! process on another CPU is paid once per batch, not once per interaction.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use edgefleet_protocol::ClassLimits;
use serde::{Deserialize, Serialize};

use super::admission::MemoryLimits;
use super::interaction::{Interaction, InteractionError, Outcome};

/// Largest frame either side accepts: a batch of interactions with their outputs fits many times over.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Supervisor → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Load a compiled module under `module` (the supervisor's id for a module + class config).
    Load {
        module: u64,
        artefact: PathBuf,
        memory: MemoryLimits,
        limits: ClassLimits,
        #[serde(with = "serde_bytes")]
        config: Vec<u8>,
    },
    /// Forget a module.
    Unload { module: u64 },
    /// Run each interaction in a fresh instance of `module`, in order.
    Run {
        module: u64,
        items: Cow<'a, [Interaction]>,
    },
}

/// Worker → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Loaded,
    LoadFailed {
        error: String,
    },
    Unloaded,
    /// One result per item of the `Run`, in the same order.
    Ran {
        results: Vec<Result<Outcome, InteractionError>>,
    },
    /// The request named a module this worker has not loaded.
    UnknownModule {
        module: u64,
    },
}

/// One frame: the body's length as a little-endian `u32`, then the CBOR body.
pub fn frame(message: &impl Serialize) -> Vec<u8> {
    let body = edgefleet_protocol::codec::encode(message);
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Writes one frame, refusing one larger than [`MAX_FRAME`] (the reader would refuse it).
pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let frame = frame(message);
    if frame.len() - 4 > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {} bytes exceeds {MAX_FRAME}", frame.len() - 4),
        ));
    }
    out.write_all(&frame)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: serde::de::DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// Decodes a frame body.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    edgefleet_protocol::codec::decode(body, MAX_FRAME)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}
