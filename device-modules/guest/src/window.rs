//! A rolling window of recent `f32` samples with a fixed capacity, kept in device state between
//! interactions (there is no allocator, and every interaction starts from a fresh instance).
//!
//! The samples are stored oldest first and contiguous, so statistics run over one slice. In CBOR the
//! window is an array of numbers, oldest first.

use core::fmt;

use minicbor::decode::{self, Decode, Decoder};
use minicbor::encode::{self, Encode, Encoder, Write};

use crate::cbor;

/// Up to `CAP` samples, oldest first.
#[derive(Clone)]
pub struct Window<const CAP: usize> {
    buf: [f32; CAP],
    len: usize,
}

impl<const CAP: usize> Window<CAP> {
    /// An empty window.
    pub const fn new() -> Self {
        const { assert!(CAP > 0, "a window holds at least one sample") };
        Self {
            buf: [0.0; CAP],
            len: 0,
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &[f32] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `sample` as the newest, first dropping the oldest samples so that at most `limit`
    /// remain (`limit` is clamped to `1..=CAP`; a window kept under a larger limit shrinks here).
    pub fn push(&mut self, sample: f32, limit: usize) {
        let limit = limit.clamp(1, CAP);
        if self.len >= limit {
            let drop = self.len + 1 - limit;
            self.buf.copy_within(drop..self.len, 0);
            self.len = limit - 1;
        }
        self.buf[self.len] = sample;
        self.len += 1;
    }

    /// The arithmetic mean of the samples, `None` for an empty window.
    pub fn mean(&self) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let sum: f64 = self.samples().iter().map(|&x| f64::from(x)).sum();
        Some(sum / self.len as f64)
    }
}

impl<const CAP: usize> Default for Window<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> PartialEq for Window<CAP> {
    fn eq(&self, other: &Self) -> bool {
        self.samples() == other.samples()
    }
}

impl<const CAP: usize> fmt::Debug for Window<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.samples()).finish()
    }
}

impl<C, const CAP: usize> Encode<C> for Window<CAP> {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        e.array(self.len as u64)?;
        for &sample in self.samples() {
            e.f32(sample)?;
        }
        Ok(())
    }
}

impl<const CAP: usize> Window<CAP> {
    /// Replaces the samples with an array of at most `CAP` finite numbers (definite or indefinite
    /// length), decoded in place: a window of a thousand samples is not worth a copy on a 16 KiB stack.
    pub fn decode_in_place(&mut self, d: &mut Decoder<'_>) -> Result<(), decode::Error> {
        let at = d.position();
        self.len = 0;
        let len = d.array()?;
        loop {
            match len {
                Some(n) if self.len as u64 == n => return Ok(()),
                None if d.datatype()? == minicbor::data::Type::Break => {
                    d.set_position(d.position() + 1);
                    return Ok(());
                }
                _ => {}
            }
            if self.len == CAP {
                return Err(decode::Error::message("window longer than its capacity").at(at));
            }
            self.buf[self.len] = cbor::finite_f32(d)?;
            self.len += 1;
        }
    }
}

impl<'b, C, const CAP: usize> Decode<'b, C> for Window<CAP> {
    /// See [`Window::decode_in_place`].
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let mut window = Self::new();
        window.decode_in_place(d)?;
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_keeps_the_newest_samples_up_to_the_limit() {
        let mut w = Window::<4>::new();
        for x in 1..=6 {
            w.push(x as f32, 3);
        }
        assert_eq!(w.samples(), &[4.0, 5.0, 6.0]);
        w.push(7.0, 10);
        assert_eq!(
            w.samples(),
            &[4.0, 5.0, 6.0, 7.0],
            "limit clamped to the capacity"
        );
        w.push(8.0, 10);
        assert_eq!(w.samples(), &[5.0, 6.0, 7.0, 8.0]);
    }

    #[test]
    fn a_smaller_limit_shrinks_the_window_from_its_oldest_end() {
        let mut w = Window::<8>::new();
        for x in 1..=6 {
            w.push(x as f32, 8);
        }
        w.push(7.0, 2);
        assert_eq!(w.samples(), &[6.0, 7.0]);
        w.push(8.0, 0);
        assert_eq!(w.samples(), &[8.0], "a zero limit keeps the newest sample");
    }

    #[test]
    fn mean_of_samples() {
        let mut w = Window::<4>::new();
        assert_eq!(w.mean(), None);
        for x in [2.0, 4.0, 9.0] {
            w.push(x, 4);
        }
        assert_eq!(w.mean(), Some(5.0));
    }

    #[test]
    fn cbor_round_trip_oldest_first() {
        let mut w = Window::<4>::new();
        for x in [1.5, -2.0, 3.25] {
            w.push(x, 4);
        }
        let mut buf = [0u8; 32];
        let bytes = cbor::to_slice(&w, &mut buf).unwrap();
        assert_eq!(bytes[0], 0x83, "array of 3");
        assert_eq!(cbor::from_slice::<Window<4>>(bytes).unwrap(), w);
    }

    #[test]
    fn decode_accepts_any_numbers_and_indefinite_arrays() {
        // [_ 1, 2.5 (half), -3]
        let w: Window<4> = cbor::from_slice(&[0x9f, 0x01, 0xf9, 0x41, 0x00, 0x22, 0xff]).unwrap();
        assert_eq!(w.samples(), &[1.0, 2.5, -3.0]);
    }

    #[test]
    fn decode_in_place_replaces_the_samples() {
        let mut w = Window::<4>::new();
        for x in [9.0, 9.0, 9.0] {
            w.push(x, 4);
        }
        w.decode_in_place(&mut Decoder::new(&[0x82, 0x01, 0x02]))
            .unwrap();
        assert_eq!(w.samples(), &[1.0, 2.0]);
    }

    #[test]
    fn decode_rejects_overlong_and_non_numeric_windows() {
        assert!(cbor::from_slice::<Window<2>>(&[0x83, 0x01, 0x02, 0x03]).is_err());
        assert!(cbor::from_slice::<Window<2>>(&[0x9f, 0x01, 0x02, 0x03, 0xff]).is_err());
        assert!(cbor::from_slice::<Window<2>>(&[0x81, 0x61, b'x']).is_err());
        assert!(
            cbor::from_slice::<Window<2>>(&[0x81, 0xf9, 0x7e, 0x00]).is_err(),
            "NaN"
        );
        assert!(
            cbor::from_slice::<Window<2>>(&[0x82, 0x01]).is_err(),
            "truncated"
        );
    }
}
