//! [`Field`]: how a value is read and written as the value of a key in a [`map!`](crate::cbor::map)
//! payload, and its implementations for the SDK's own value types (numbers, `bool`, text, [`Window`]).
//!
//! Numbers follow the payload rules: an `f32` or `f64` field accepts every CBOR number encoding
//! (integers, half, single or double floats) but no NaN or infinity, an integer field every integer
//! encoding whose value fits. The macros implement `Field` for the maps and text enums they describe,
//! so payloads nest.

use minicbor::decode::{self, Decode, Decoder};
use minicbor::encode::{self, Encode, Encoder, Write};

use crate::window::Window;

/// A value that can be the value of a key in a CBOR payload.
///
/// [`map!`](crate::cbor::map) and [`text_enum!`](crate::cbor::text_enum) implement it for the types
/// they describe; implement it by hand for a value of another shape (say, an array kept as its CBOR
/// bytes), then [`minicbor_impls!`](crate::cbor::minicbor_impls) gives the type minicbor's `Encode`
/// and `Decode` (and so [`to_slice`](crate::cbor::to_slice) and
/// [`from_slice`](crate::cbor::from_slice)) through it.
pub trait Field<'b>: Sized {
    /// Decodes one value.
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error>;

    /// Decodes one value into `self`, reusing its storage where the type can (a [`Window`] of a
    /// thousand samples is not worth a copy on a 16 KiB stack). The default replaces `self` with
    /// [`Field::decode_field`]'s value; a map with defaults replaces the fields of the keys it holds
    /// and keeps the others.
    #[inline]
    fn decode_field_in_place(&mut self, d: &mut Decoder<'b>) -> Result<(), decode::Error> {
        *self = Self::decode_field(d)?;
        Ok(())
    }

    /// Encodes the value.
    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>>;
}

impl<'b> Field<'b> for f32 {
    /// Any CBOR number that is finite as an `f32` ([`finite_f32`](crate::cbor::finite_f32)).
    #[inline]
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
        crate::cbor::finite_f32(d)
    }

    #[inline]
    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        e.f32(*self)?;
        Ok(())
    }
}

impl<'b> Field<'b> for f64 {
    /// Any finite CBOR number ([`finite`](crate::cbor::finite)).
    #[inline]
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
        crate::cbor::finite(d)
    }

    #[inline]
    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        e.f64(*self)?;
        Ok(())
    }
}

/// Integers and `bool`: minicbor's decoder accepts every integer encoding whose value fits the type.
macro_rules! primitive_fields {
    ($($ty:ty: $method:ident),+ $(,)?) => {$(
        impl<'b> Field<'b> for $ty {
            #[inline]
            fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
                d.$method()
            }

            #[inline]
            fn encode_field<W: Write>(
                &self,
                e: &mut Encoder<W>,
            ) -> Result<(), encode::Error<W::Error>> {
                e.$method(*self)?;
                Ok(())
            }
        }
    )+};
}

primitive_fields!(
    u8: u8, u16: u16, u32: u32, u64: u64, i8: i8, i16: i16, i32: i32, i64: i64, bool: bool,
);

/// Text, borrowed from the payload (no allocator).
impl<'b: 'a, 'a> Field<'b> for &'a str {
    #[inline]
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
        d.str()
    }

    #[inline]
    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        e.str(self)?;
        Ok(())
    }
}

/// An array of finite numbers, oldest first; decoded in place by
/// [`Window::decode_in_place`].
impl<'b, const CAP: usize> Field<'b> for Window<CAP> {
    #[inline]
    fn decode_field(d: &mut Decoder<'b>) -> Result<Self, decode::Error> {
        Window::decode(d, &mut ())
    }

    #[inline]
    fn decode_field_in_place(&mut self, d: &mut Decoder<'b>) -> Result<(), decode::Error> {
        self.decode_in_place(d)
    }

    #[inline]
    fn encode_field<W: Write>(&self, e: &mut Encoder<W>) -> Result<(), encode::Error<W::Error>> {
        self.encode(e, &mut ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use minicbor::encode::write::Cursor;
    use std::vec::Vec;

    fn decode<'b, T: Field<'b>>(bytes: &'b [u8]) -> Result<T, decode::Error> {
        T::decode_field(&mut Decoder::new(bytes))
    }

    fn encoded<'b, T: Field<'b>>(value: T) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(Cursor::new(&mut buf[..]));
        value.encode_field(&mut e).unwrap();
        let len = e.writer().position();
        buf[..len].to_vec()
    }

    #[test]
    fn floats_accept_every_number_encoding_and_reject_non_finite_values() {
        assert_eq!(decode::<f32>(&[0x15]).unwrap(), 21.0);
        assert_eq!(decode::<f32>(&[0xf9, 0x4d, 0x60]).unwrap(), 21.5);
        assert_eq!(decode::<f64>(&[0x38, 0x13]).unwrap(), -20.0);
        assert!(decode::<f32>(&[0xf9, 0x7e, 0x00]).is_err(), "NaN");
        assert!(decode::<f64>(&[0xf9, 0x7c, 0x00]).is_err(), "infinity");
        assert!(decode::<f32>(&[0x61, b'x']).is_err());
        assert_eq!(encoded(1.5f32), [0xfa, 0x3f, 0xc0, 0, 0]);
    }

    #[test]
    fn integers_accept_every_width_that_fits() {
        // 5 as a u64 (0x1b and eight bytes).
        assert_eq!(decode::<u8>(&[0x1b, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap(), 5);
        assert_eq!(decode::<u16>(&[0x19, 0x03, 0xe8]).unwrap(), 1000);
        assert!(decode::<u8>(&[0x19, 0x03, 0xe8]).is_err(), "1000 > u8");
        assert!(decode::<u32>(&[0x20]).is_err(), "-1 is not unsigned");
        assert_eq!(decode::<i64>(&[0x20]).unwrap(), -1);
        assert!(
            decode::<u32>(&[0xf9, 0x3c, 0x00]).is_err(),
            "1.0 is not an integer"
        );
        assert!(decode::<bool>(&[0xf5]).unwrap());
        assert_eq!(encoded(1000u64), [0x19, 0x03, 0xe8]);
        assert_eq!(encoded(-1i32), [0x20]);
    }

    #[test]
    fn text_is_borrowed_from_the_payload() {
        let bytes = [0x62, b'h', b'i'];
        let text: &str = decode(&bytes).unwrap();
        assert_eq!(text, "hi");
        assert!(
            decode::<&str>(&[0x42, b'h', b'i']).is_err(),
            "bytes, not text"
        );
        assert_eq!(encoded("hi"), bytes);
    }

    #[test]
    fn a_window_decodes_in_place() {
        let mut window = Window::<4>::new();
        window.push(9.0, 4);
        window
            .decode_field_in_place(&mut Decoder::new(&[0x82, 0x01, 0xf9, 0x41, 0x00]))
            .unwrap();
        assert_eq!(window.samples(), &[1.0, 2.5]);
        assert_eq!(
            encoded(window),
            [0x82, 0xfa, 0x3f, 0x80, 0, 0, 0xfa, 0x40, 0x20, 0, 0]
        );
    }
}
