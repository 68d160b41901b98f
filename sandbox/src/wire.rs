//! The pipe protocol between the supervisor and a sandbox worker process.
//!
//! Frames are a little-endian `u32` length followed by a CBOR body. The supervisor writes
//! [`Request`]s to the worker's stdin; the worker answers each with one [`Response`] on its stdout.
//! A batch of interactions of one module travels in one frame each way, so the cost of waking a
//! process on another CPU is paid once per batch, not once per interaction.
//!
//! A frame holds at most [`MAX_FRAME`] bytes, so the batches are sized to fit it: `result_bound` is
//! the most one interaction's answer can take under a class's limits (refused at load when even one
//! cannot fit), which caps how many results one `Ran` may carry, and `split` cuts a caller's batch
//! into `Run` requests that fit, by the size of the interactions themselves.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use edgefleet_guest_abi::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES};
use edgefleet_protocol::ClassLimits;
use serde::{Deserialize, Serialize};

use super::admission::MemoryLimits;
use super::interaction::{Interaction, InteractionError, MAX_TOPIC_BYTES, Outcome};

/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Bytes of a `Run` request or a `Ran` response besides its items: variant and field names, the
/// module id and the array header.
const RUN_ENVELOPE: usize = 64;

/// Bytes the items of one `Run` request, or the results of one `Ran` response, may take.
pub(crate) const MAX_ITEMS_BYTES: usize = MAX_FRAME - RUN_ENVELOPE;

/// An upper bound on the encoded size of `item` in a `Run` request.
pub(crate) fn interaction_bound(item: &Interaction) -> usize {
    // The map, five field names, four length headers of up to 9 bytes each, a 9-byte integer.
    const FIXED: usize = 96;
    FIXED
        + item.device.len()
        + item.channel.len()
        + item.payload.len()
        + item.state.as_ref().map_or(0, |state| state.len())
}

/// An upper bound on the encoded size of one result in a `Ran` response from a module under `limits`:
/// every output (commands and publishes together) at its largest with the longest topic, the largest
/// state, every log line at its longest (the worker cuts topics and log lines to their limits after
/// replacing invalid UTF-8). An error answer carries only the host's own short texts and a cut
/// topic, less than the log lines alone.
pub(crate) fn result_bound(limits: &ClassLimits) -> u64 {
    // The Ok wrapper, the outcome's map, field names, array and state headers, the dropped count.
    const FIXED: u64 = 256;
    // An upstream message's map, field names, length headers and topic.
    const PER_OUTPUT: u64 = 64 + MAX_TOPIC_BYTES as u64;
    // A log line's map, field names, level and length header.
    const PER_LOG_LINE: u64 = 64;
    let outputs = u64::from(limits.max_outputs) * (PER_OUTPUT + u64::from(limits.max_output_bytes));
    let logs = MAX_LOG_LINES as u64 * (PER_LOG_LINE + MAX_LOG_LINE_BYTES as u64);
    FIXED + outputs + u64::from(limits.max_state_bytes) + logs
}

/// How many results of a module under `limits` one `Ran` response can surely carry, at most
/// `max_batch`; `Err` with the [`result_bound`] when not even one can.
pub(crate) fn results_per_frame(limits: &ClassLimits, max_batch: usize) -> Result<usize, u64> {
    let bound = result_bound(limits);
    match MAX_ITEMS_BYTES as u64 / bound {
        0 => Err(bound),
        fit => Ok(usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .min(max_batch.max(1))),
    }
}

/// One part of a caller's batch, as [`split`] cuts it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Items for one `Run` request.
    Run(Vec<Interaction>),
    /// One interaction that does not fit a frame on its own (about `bytes` encoded).
    TooLarge { bytes: usize },
}

/// Cuts `items` into parts, in order: `Run` requests of at most `max_items` items whose encoding
/// fits a frame, and the interactions too large for any frame on their own.
pub(crate) fn split(items: Vec<Interaction>, max_items: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = interaction_bound(&item);
        let full = run.len() >= max_items.max(1) || bytes + size > MAX_ITEMS_BYTES;
        if (full || size > MAX_ITEMS_BYTES) && !run.is_empty() {
            parts.push(Part::Run(std::mem::take(&mut run)));
            bytes = 0;
        }
        if size > MAX_ITEMS_BYTES {
            parts.push(Part::TooLarge { bytes: size });
            continue;
        }
        bytes += size;
        run.push(item);
    }
    if !run.is_empty() {
        parts.push(Part::Run(run));
    }
    parts
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interaction::{LogLevel, LogLine, Upstream};

    fn interaction(
        device: usize,
        channel: usize,
        payload: usize,
        state: Option<usize>,
    ) -> Interaction {
        Interaction {
            device: "d".repeat(device),
            channel: "c".repeat(channel),
            payload: vec![0xa5; payload],
            state: state.map(|n| vec![0x5a; n].into()),
            now_ms: i64::MIN,
        }
    }

    /// The largest answer a module under `limits` can give (see `result_bound`).
    fn largest_outcome(limits: &ClassLimits) -> Result<Outcome, InteractionError> {
        let payload = vec![0xff; limits.max_output_bytes as usize];
        let outputs = limits.max_outputs as usize;
        Ok(Outcome {
            commands: vec![payload.clone().into(); outputs / 2],
            upstream: vec![
                Upstream {
                    topic: "t".repeat(MAX_TOPIC_BYTES),
                    payload,
                };
                outputs - outputs / 2
            ],
            new_state: Some(vec![0; limits.max_state_bytes as usize].into()),
            logs: vec![
                LogLine {
                    level: LogLevel::Trace,
                    text: "\u{fffd}".repeat(MAX_LOG_LINE_BYTES / 3),
                };
                MAX_LOG_LINES
            ],
            dropped_logs: u32::MAX,
        })
    }

    fn encoded_len(value: &impl Serialize) -> u64 {
        edgefleet_protocol::codec::encode(value).len() as u64
    }

    #[test]
    fn the_interaction_bound_holds() {
        for item in [
            interaction(0, 0, 0, None),
            interaction(64, 194, 0, Some(0)),
            interaction(300, 70_000, 128 * 1024, Some(1 << 20)),
            interaction(1, 1, 1 << 24, Some(1 << 17)),
        ] {
            let bound = interaction_bound(&item) as u64;
            assert!(
                encoded_len(&item) <= bound,
                "{} > {bound}",
                encoded_len(&item)
            );
        }
    }

    #[test]
    fn the_result_bound_holds_for_the_largest_answers() {
        let default = ClassLimits::default();
        let many_small = ClassLimits {
            max_outputs: 1024,
            max_output_bytes: 1,
            max_state_bytes: 0,
            ..ClassLimits::default()
        };
        let few_large = ClassLimits {
            max_outputs: 3,
            max_output_bytes: 128 * 1024,
            max_state_bytes: 1 << 20,
            ..ClassLimits::default()
        };
        let none = ClassLimits {
            max_outputs: 0,
            max_state_bytes: 0,
            ..ClassLimits::default()
        };
        for limits in [default, many_small, few_large, none] {
            let bound = result_bound(&limits);
            let largest = largest_outcome(&limits);
            assert!(encoded_len(&largest) <= bound, "{limits:?}");
            for error in [
                InteractionError::ForbiddenTopic {
                    topic: "\u{fffd}".repeat(MAX_TOPIC_BYTES / 3),
                },
                InteractionError::Trap {
                    message: "x".repeat(1024),
                },
                InteractionError::Quarantined {
                    module: "m".repeat(512),
                    retry_in_ms: u64::MAX,
                },
            ] {
                let error: Result<Outcome, _> = Err(error);
                assert!(encoded_len(&error) <= bound, "{error:?}");
            }
            // The envelope holds around any number of results.
            for n in [0, 1, 3] {
                let response = Response::Ran {
                    results: vec![largest.clone(); n],
                };
                assert!(
                    encoded_len(&response) <= RUN_ENVELOPE as u64 + n as u64 * bound,
                    "{n} results"
                );
            }
        }
        let run = Request::Run {
            module: u64::MAX,
            items: Cow::Owned(vec![interaction(64, 194, 4096, Some(100)); 3]),
        };
        let items: u64 = 3 * interaction_bound(&interaction(64, 194, 4096, Some(100))) as u64;
        assert!(encoded_len(&run) <= RUN_ENVELOPE as u64 + items);
    }

    #[test]
    fn the_default_limits_keep_the_configured_batch() {
        assert_eq!(results_per_frame(&ClassLimits::default(), 64), Ok(64));
        // 16 outputs of 128 KiB: about 2 MiB per answer, 31 answers per frame.
        let large = ClassLimits {
            max_outputs: 16,
            max_output_bytes: 128 * 1024,
            ..ClassLimits::default()
        };
        let fit = results_per_frame(&large, 64).unwrap();
        assert_eq!(fit as u64, MAX_ITEMS_BYTES as u64 / result_bound(&large));
        assert!((16..64).contains(&fit), "{fit}");
        // 1024 outputs of 128 KiB: one answer alone could be 128 MiB.
        let too_large = ClassLimits {
            max_outputs: 1024,
            max_output_bytes: 128 * 1024,
            ..ClassLimits::default()
        };
        let bound = results_per_frame(&too_large, 64).unwrap_err();
        assert!(bound > MAX_FRAME as u64, "{bound}");
    }

    #[test]
    fn split_keeps_order_and_fits_every_request_in_a_frame() {
        let sizes = |parts: &[Part]| -> Vec<Result<usize, usize>> {
            parts
                .iter()
                .map(|part| match part {
                    Part::Run(items) => Ok(items.len()),
                    Part::TooLarge { bytes } => Err(*bytes),
                })
                .collect()
        };
        let small: Vec<_> = (0..10).map(|i| interaction(i, 9, 32, None)).collect();
        let parts = split(small.clone(), 4);
        assert_eq!(sizes(&parts), [Ok(4), Ok(4), Ok(2)]);
        let rejoined: Vec<Interaction> = parts
            .into_iter()
            .flat_map(|part| match part {
                Part::Run(items) => items,
                Part::TooLarge { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(rejoined, small);

        // 20 MiB payloads: three per request at most; a 65 MiB one goes alone as too large.
        let big = || interaction(1, 1, 20 << 20, None);
        let huge = interaction(1, 1, 65 << 20, None);
        let huge_bytes = interaction_bound(&huge);
        let items = vec![big(), big(), big(), big(), huge, big()];
        let parts = split(items, 64);
        assert_eq!(
            sizes(&parts),
            [Ok(3), Ok(1), Err(huge_bytes), Ok(1)],
            "in order, the too-large one in its place"
        );
        for part in &parts {
            if let Part::Run(items) = part {
                let bytes: usize = items.iter().map(interaction_bound).sum();
                assert!(bytes <= MAX_ITEMS_BYTES);
            }
        }
        assert_eq!(split(Vec::new(), 4), []);
    }
}
