//! SHA-256 digests: how edgefleet names a module blob and its chunks.
//!
//! Text form (Display, FromStr, topic level, JSON): 64 lowercase hex digits, the form `sha256sum`
//! prints; there is exactly one text form per digest, so one module has exactly one topic. CBOR form:
//! a 32-byte byte string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sha256Digest(#[serde(with = "crate::fixed_bytes")] [u8; 32]);

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 digest is 64 lowercase hex digits")]
pub struct DigestParseError;

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Digest(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for humans (`kubectl get` columns, log lines); never for matching.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, DigestParseError> {
        crate::fixed_bytes::parse_hex(s)
            .map(Sha256Digest)
            .ok_or(DigestParseError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn digests_known_vector() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(d.to_string(), ABC);
        assert_eq!(d.short(), &ABC[..12]);
        assert_eq!(ABC.parse::<Sha256Digest>(), Ok(d));
        assert_eq!(format!("{d:?}"), format!("Sha256Digest({ABC})"));
    }

    #[test]
    fn parses_only_the_canonical_form() {
        for bad in [
            "",
            &ABC[..63],
            &format!("{ABC}0"),
            &ABC.to_uppercase(),
            &format!("g{}", &ABC[1..]),
            &format!("+{}", &ABC[1..]),
        ] {
            assert_eq!(
                bad.parse::<Sha256Digest>(),
                Err(DigestParseError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cbor_is_a_32_byte_string() {
        let d = Sha256Digest::of(b"abc");
        let bytes = codec::encode(&d);
        assert_eq!(bytes.len(), 2 + 32);
        assert_eq!(&bytes[..2], &[0x58, 32]);
        assert_eq!(codec::decode::<Sha256Digest>(&bytes, 64), Ok(d));
        let short = codec::encode(serde_bytes::Bytes::new(&[0u8; 31]));
        assert!(matches!(
            codec::decode::<Sha256Digest>(&short, 64),
            Err(codec::CodecError::Invalid { .. })
        ));
    }
}
