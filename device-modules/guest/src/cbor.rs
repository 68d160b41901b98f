//! CBOR for handler payloads: maps with short text keys, as devices send them.
//!
//! Devices and their firmware libraries differ in how they encode a number (`21`, `21.5` as a half,
//! single or double float), so [`number`] accepts every CBOR number. [`map_entries`] visits a text-keyed
//! map and skips the keys a handler does not know, so payloads can gain keys without breaking handlers
//! built earlier. Encoding and decoding never allocate.
//!
//! A handler describes its payload types with [`map!`] (structs as text-keyed maps: required,
//! optional and defaulted keys) and [`text_enum!`] (enums as text), which write the `Encode` and
//! `Decode` implementations over these helpers; [`Field`] is how each value of a map is read and
//! written. [`to_slice`], [`from_slice`] and [`config_or_default`] encode and decode whole payloads.

mod field;
mod macros;

#[doc(inline)]
pub use crate::{
    __cbor_map as map, __cbor_minicbor_impls as minicbor_impls, __cbor_text_enum as text_enum,
};
pub use field::Field;

use minicbor::data::Type;
use minicbor::decode::{self, Decoder};
use minicbor::encode::Encode;
use minicbor::encode::write::Cursor;

// The generic helpers are `#[inline]`, like the code `map!` generates: each payload's instance is then
// inlined into the handler whichever codegen unit holds it, as hand-written code happened to be.

/// The encoded value does not fit the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferFull;

/// Encodes `value` into `buf` and returns the encoded bytes.
#[inline]
pub fn to_slice<'a, T: Encode<()>>(value: &T, buf: &'a mut [u8]) -> Result<&'a [u8], BufferFull> {
    let mut cursor = Cursor::new(&mut *buf);
    minicbor::encode(value, &mut cursor).map_err(|_| BufferFull)?;
    let len = cursor.position();
    buf.get(..len).ok_or(BufferFull)
}

/// Decodes one value that must span all of `bytes` (trailing bytes are an error).
#[inline]
pub fn from_slice<'b, T: decode::Decode<'b, ()>>(bytes: &'b [u8]) -> Result<T, decode::Error> {
    let mut d = Decoder::new(bytes);
    let value = d.decode()?;
    if d.position() == bytes.len() {
        Ok(value)
    } else {
        Err(decode::Error::message("trailing bytes after the CBOR value").at(d.position()))
    }
}

/// Decodes a class config: an empty config (the class declares none) is `T::default()`, otherwise the
/// bytes must be one `T` (usually a map whose missing keys take their defaults).
#[inline]
pub fn config_or_default<'b, T: decode::Decode<'b, ()> + Default>(
    bytes: &'b [u8],
) -> Result<T, decode::Error> {
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        from_slice(bytes)
    }
}

/// Decodes any CBOR number (unsigned or negative integer, half, single or double float) as an `f64`.
pub fn number(d: &mut Decoder<'_>) -> Result<f64, decode::Error> {
    let at = d.position();
    match d.datatype()? {
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => Ok(i128::from(d.int()?) as f64),
        Type::F16 => {
            let input = d.input();
            let bits = input
                .get(at + 1..at + 3)
                .ok_or_else(decode::Error::end_of_input)?;
            d.set_position(at + 3);
            Ok(f16_to_f64(u16::from_be_bytes([bits[0], bits[1]])))
        }
        Type::F32 | Type::F64 => d.f64(),
        other => Err(decode::Error::type_mismatch(other)
            .with_message("expected a number")
            .at(at)),
    }
}

/// Decodes a finite CBOR number: NaN and infinities are rejected.
pub fn finite(d: &mut Decoder<'_>) -> Result<f64, decode::Error> {
    let at = d.position();
    let value = number(d)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(decode::Error::message("expected a finite number").at(at))
    }
}

/// Decodes a number that is finite as an `f32` (NaN, infinities and magnitudes beyond `f32` are rejected).
pub fn finite_f32(d: &mut Decoder<'_>) -> Result<f32, decode::Error> {
    let at = d.position();
    let value = number(d)? as f32;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(decode::Error::message("expected a finite f32").at(at))
    }
}

/// An IEEE 754 half-precision value (CBOR major type 7, additional info 25), widened exactly.
fn f16_to_f64(bits: u16) -> f64 {
    let negative = bits & 0x8000 != 0;
    let exponent = (bits >> 10) & 0x1f;
    let fraction = u64::from(bits & 0x03ff);
    let magnitude = match exponent {
        // Subnormal: fraction × 2^-24.
        0 => fraction as f64 / 16_777_216.0,
        0x1f if fraction == 0 => f64::INFINITY,
        0x1f => f64::NAN,
        // Normal: rebias the exponent (15 → 1023) and widen the fraction (10 → 52 bits).
        _ => f64::from_bits(((u64::from(exponent) + 1008) << 52) | (fraction << 42)),
    };
    if negative { -magnitude } else { magnitude }
}

/// The error for a required map key that is absent: `what` (e.g. "missing temp_c"), at the map's
/// position `at`.
pub fn missing(what: &'static str, at: usize) -> decode::Error {
    decode::Error::message(what).at(at)
}

/// Visits the entries of a map with text keys (definite or indefinite length).
///
/// `visit` is called with each key and the decoder positioned at its value; it decodes the values it
/// knows and returns `Ok(true)`, or returns `Ok(false)` to have the value skipped.
#[inline]
pub fn map_entries<'b>(
    d: &mut Decoder<'b>,
    mut visit: impl FnMut(&'b str, &mut Decoder<'b>) -> Result<bool, decode::Error>,
) -> Result<(), decode::Error> {
    let mut remaining = d.map()?;
    loop {
        match remaining {
            Some(0) => return Ok(()),
            Some(n) => remaining = Some(n - 1),
            None if d.datatype()? == Type::Break => {
                d.set_position(d.position() + 1);
                return Ok(());
            }
            None => {}
        }
        let key = d.str()?;
        if !visit(key, d)? {
            d.skip()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minicbor::Encoder;

    fn decode_number(bytes: &[u8]) -> Result<f64, decode::Error> {
        let mut d = Decoder::new(bytes);
        let value = number(&mut d)?;
        assert_eq!(
            d.position(),
            bytes.len(),
            "number() consumes exactly the value"
        );
        Ok(value)
    }

    #[test]
    fn numbers_of_every_cbor_width_decode() {
        assert_eq!(decode_number(&[0x15]).unwrap(), 21.0);
        assert_eq!(decode_number(&[0x19, 0x03, 0xe8]).unwrap(), 1000.0);
        assert_eq!(decode_number(&[0x38, 0x13]).unwrap(), -20.0);
        // 21.5 as half, single and double.
        assert_eq!(decode_number(&[0xf9, 0x4d, 0x60]).unwrap(), 21.5);
        assert_eq!(
            decode_number(&[0xfa, 0x41, 0xac, 0x00, 0x00]).unwrap(),
            21.5
        );
        assert_eq!(
            decode_number(&[0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0]).unwrap(),
            21.5
        );
        assert!(decode_number(&[0x63, b'a', b'b', b'c']).is_err());
        assert!(
            decode_number(&[0xf9, 0x4d]).is_err(),
            "a truncated half is an error"
        );
    }

    #[test]
    fn finite_f32_rejects_what_an_f32_cannot_hold() {
        assert_eq!(
            finite_f32(&mut Decoder::new(&[0xf9, 0x4d, 0x60])).unwrap(),
            21.5
        );
        // 1e300 as a double.
        assert!(
            finite_f32(&mut Decoder::new(&[
                0xfb, 0x7e, 0x37, 0xe4, 0x3c, 0x88, 0x00, 0x75, 0x9c
            ]))
            .is_err()
        );
    }

    #[test]
    fn an_empty_config_is_the_default() {
        assert_eq!(config_or_default::<u32>(&[]).unwrap(), 0);
        assert_eq!(config_or_default::<u32>(&[0x07]).unwrap(), 7);
        assert!(config_or_default::<u32>(&[0x61, b'x']).is_err());
    }

    #[test]
    fn halves_widen_exactly() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x0001), 1.0 / 16_777_216.0, "2^-24");
        assert_eq!(f16_to_f64(0x0400), 1.0 / 16_384.0, "2^-14");
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
    }

    #[test]
    fn finite_rejects_nan_and_infinity() {
        assert!(finite(&mut Decoder::new(&[0xf9, 0x7e, 0x00])).is_err());
        assert!(finite(&mut Decoder::new(&[0xf9, 0x7c, 0x00])).is_err());
        assert_eq!(finite(&mut Decoder::new(&[0x07])).unwrap(), 7.0);
    }

    fn entries(bytes: &[u8]) -> Result<(Option<f64>, Option<bool>, usize), decode::Error> {
        let (mut a, mut b) = (None, None);
        let mut d = Decoder::new(bytes);
        map_entries(&mut d, |key, d| {
            match key {
                "a" => a = Some(number(d)?),
                "b" => b = Some(d.bool()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok((a, b, d.position()))
    }

    #[test]
    fn map_entries_visits_known_keys_and_skips_the_rest() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf[..]);
        e.map(3).unwrap();
        e.str("x")
            .unwrap()
            .array(2)
            .unwrap()
            .u8(1)
            .unwrap()
            .str("nested")
            .unwrap();
        e.str("b").unwrap().bool(true).unwrap();
        e.str("a").unwrap().f32(2.5).unwrap();
        let len = 64 - e.writer().len();
        assert_eq!(entries(&buf[..len]).unwrap(), (Some(2.5), Some(true), len));
    }

    #[test]
    fn map_entries_reads_indefinite_maps() {
        // {_ "a": 1, "zz": null} followed by a byte that is not part of the map.
        let bytes = [0xbf, 0x61, b'a', 0x01, 0x62, b'z', b'z', 0xf6, 0xff, 0x00];
        assert_eq!(entries(&bytes).unwrap(), (Some(1.0), None, 9));
    }

    #[test]
    fn map_entries_rejects_non_maps_and_non_text_keys() {
        assert!(entries(&[0x80]).is_err());
        assert!(entries(&[0xa1, 0x01, 0x01]).is_err());
        assert!(entries(&[0xa2, 0x61, b'a', 0x01]).is_err(), "truncated map");
    }

    #[test]
    fn to_slice_reports_a_full_buffer() {
        let mut small = [0u8; 4];
        assert_eq!(to_slice(&"hello", &mut small), Err(BufferFull));
        let mut buf = [0u8; 8];
        assert_eq!(to_slice(&"hello", &mut buf).unwrap(), b"\x65hello");
    }

    #[test]
    fn from_slice_rejects_trailing_bytes() {
        assert_eq!(from_slice::<u8>(&[0x05]).unwrap(), 5);
        assert!(from_slice::<u8>(&[0x05, 0x06]).is_err());
    }
}
