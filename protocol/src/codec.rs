//! The CBOR (RFC 8949) encoding of every edgefleet message.
//!
//! This is the only module that touches the CBOR library. `serde_cbor` is unmaintained
//! (RUSTSEC-2021-0127); keeping it behind [`encode`] and [`decode`] lets it be replaced by ciborium
//! or minicbor without touching a message type. What the rest of the crate relies on:
//!
//! - structs are encoded as maps keyed by field name, unit enum variants as their name, byte fields
//!   (`serde_bytes`) as CBOR byte strings, and `Option::None` as `null`;
//! - unknown map keys are ignored, which lets a newer peer add fields (see the crate's compatibility
//!   rules);
//! - decoding refuses input longer than the caller's bound before parsing it, refuses trailing bytes,
//!   limits nesting (128 levels), caps what a declared length can make it reserve (a byte or text
//!   string longer than the rest of the input is refused before any copy; an array reserves at most
//!   1 MiB up front), and reports every failure as a [`CodecError`] rather than a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the bound the caller gave; it was not parsed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The caller's bound.
        max: usize,
    },
    /// The input ends inside a value.
    #[error("truncated CBOR: {detail}")]
    Truncated {
        /// What the decoder was reading.
        detail: String,
    },
    /// The input is not well-formed CBOR, has trailing bytes, or nests too deeply.
    #[error("malformed CBOR: {detail}")]
    Syntax {
        /// The decoder's description, with the byte offset.
        detail: String,
    },
    /// The input is CBOR but not a valid value of the expected type (a missing field, a wrong type,
    /// an invalid identifier, ...).
    #[error("invalid message: {detail}")]
    Invalid {
        /// The decoder's description.
        detail: String,
    },
}

/// Encodes `value` as CBOR.
///
/// # Panics
///
/// Only if `value`'s `Serialize` implementation itself returns an error; derived implementations,
/// and so every type of this crate, never do.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_cbor::to_vec(&value)
        .unwrap_or_else(|e| panic!("a Serialize implementation failed while encoding CBOR: {e}"))
}

/// Decodes one CBOR value of type `T` that must span all of `bytes`, refusing input longer than
/// `max_len` bytes before parsing it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, CodecError> {
    if bytes.len() > max_len {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    serde_cbor::from_slice(bytes).map_err(|e| {
        let detail = e.to_string();
        match e.classify() {
            serde_cbor::error::Category::Eof => CodecError::Truncated { detail },
            serde_cbor::error::Category::Data => CodecError::Invalid { detail },
            serde_cbor::error::Category::Syntax | serde_cbor::error::Category::Io => {
                CodecError::Syntax { detail }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde::de::IgnoredAny;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u64,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        tags: Vec<String>,
        extra: Option<BTreeMap<String, i64>>,
    }

    fn sample() -> Sample {
        Sample {
            name: "thermo".into(),
            count: 42,
            blob: vec![0, 1, 2, 0xff],
            tags: vec!["a".into(), "b".into()],
            extra: Some(BTreeMap::from([("k".into(), -7)])),
        }
    }

    /// xorshift64*: deterministic, so a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample());
        assert_eq!(decode::<Sample>(&bytes, bytes.len()), Ok(sample()));
    }

    #[test]
    fn refuses_oversized_input_before_parsing() {
        let bytes = encode(&sample());
        assert_eq!(
            decode::<Sample>(&bytes, bytes.len() - 1),
            Err(CodecError::TooLarge {
                len: bytes.len(),
                max: bytes.len() - 1
            })
        );
        // Not even CBOR: refused on length alone.
        assert!(matches!(
            decode::<IgnoredAny>(&[0xff; 10], 9),
            Err(CodecError::TooLarge { len: 10, max: 9 })
        ));
    }

    #[test]
    fn classifies_errors() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode::<Sample>(&bytes[..cut], usize::MAX),
                    Err(CodecError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing, usize::MAX),
            Err(CodecError::Syntax { .. })
        ));
        assert!(matches!(
            decode::<Sample>(&encode(&"not a sample"), usize::MAX),
            Err(CodecError::Invalid { .. })
        ));
        // 0x1c is a reserved additional-information value.
        assert!(matches!(
            decode::<IgnoredAny>(&[0x1c], usize::MAX),
            Err(CodecError::Syntax { .. })
        ));
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        // Runs on a test thread (2 MiB stack), like an async runtime's worker.
        for opener in [0x81u8, 0xa1, 0xc6, 0x9f] {
            let mut bytes = vec![opener; 100_000];
            bytes.push(0);
            let result = decode::<IgnoredAny>(&bytes, usize::MAX);
            assert!(
                matches!(result, Err(CodecError::Syntax { .. })),
                "opener {opener:#x}: {result:?}"
            );
        }
    }

    #[test]
    fn refuses_lengths_the_input_cannot_hold() {
        // A byte string, a text string and an array each claiming 2^63 elements.
        for header in [0x5bu8, 0x7b, 0x9b] {
            let mut bytes = vec![header, 0x80, 0, 0, 0, 0, 0, 0, 0];
            bytes.extend_from_slice(&[0; 16]);
            assert!(
                decode::<IgnoredAny>(&bytes, usize::MAX).is_err(),
                "{header:#x}"
            );
        }
    }

    #[test]
    fn survives_random_and_mutated_input() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let valid = encode(&sample());
        let mut decoded = 0;
        for round in 0..20_000 {
            let bytes = if round % 2 == 0 {
                let len = (rng.next() % 64) as usize;
                rng.bytes(len)
            } else {
                let mut bytes = valid.clone();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % bytes.len();
                    bytes[at] = rng.next() as u8;
                }
                bytes.truncate(1 + (rng.next() as usize) % bytes.len());
                bytes
            };
            if decode::<Sample>(&bytes, 4096).is_ok() {
                decoded += 1;
            }
            let _ = decode::<IgnoredAny>(&bytes, 4096);
        }
        // Almost every mutation must be refused; a few may still be valid samples.
        assert!(decoded < 2_000, "{decoded} mutated inputs decoded");
    }
}
