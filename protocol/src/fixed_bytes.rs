//! Serde representation of fixed-size binary values (digests, key ids, signatures): a byte string
//! in binary formats such as CBOR, lowercase hex in human-readable ones such as JSON or YAML (what
//! the controller writes into Kubernetes objects).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

pub(crate) fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(FixedBytes::<N>(PhantomData))
    } else {
        deserializer.deserialize_bytes(FixedBytes::<N>(PhantomData))
    }
}

/// Parses exactly `2 * N` lowercase hex digits.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || s.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

struct FixedBytes<const N: usize>(PhantomData<[u8; N]>);

impl<const N: usize> Visitor<'_> for FixedBytes<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes, or {} lowercase hex digits", 2 * N)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; N], E> {
        parse_hex(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}
