//! Fuzzes identifier validation (`check_id`, `NodeId`/`ClassId`/`DeviceId::new`, `FromStr` and their
//! CBOR form) and the fixed-size binary values named in topics and envelopes: `Sha256Digest` and
//! `KeyId` from text (`FromStr`) and from CBOR.
//!
//! Properties: nothing panics; an id is accepted exactly when a model of the rule accepts it (1 to
//! 64 bytes of `[A-Za-z0-9._-]`, not starting with `.`), by every constructor and by the CBOR
//! decoder alike; an accepted id re-renders to the same string and survives a CBOR round trip; a
//! digest or key id is parsed exactly from 64 or 16 lowercase hex digits and renders back to them;
//! one decoded from CBOR round-trips.

#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;

use edgefleet_protocol::codec;
use edgefleet_protocol::id::{MAX_ID_LEN, check_id};
use edgefleet_protocol::{ClassId, DeviceId, KeyId, NodeId, Sha256Digest};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    cbor_round_trip::<Sha256Digest>(data);
    cbor_round_trip::<KeyId>(data);
    cbor_round_trip::<NodeId>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let valid = model_valid(text);
    assert_eq!(check_id(text).is_ok(), valid, "{text:?}");
    check_id_type::<NodeId>(text, valid, NodeId::new);
    check_id_type::<ClassId>(text, valid, ClassId::new);
    check_id_type::<DeviceId>(text, valid, DeviceId::new);
    check_hex::<Sha256Digest>(text, 32);
    check_hex::<KeyId>(text, 8);
});

/// The identifier rule, written out independently of `check_id`.
fn model_valid(text: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&text.len())
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_id_type<T>(
    text: &str,
    valid: bool,
    new: fn(String) -> Result<T, edgefleet_protocol::id::IdError>,
) where
    T: FromStr + Display + AsRef<str> + Serialize + DeserializeOwned + PartialEq + Debug,
{
    let made = new(text.to_owned());
    assert_eq!(made.is_ok(), valid, "{text:?}");
    assert_eq!(text.parse::<T>().is_ok(), valid);
    // The CBOR form is the text string; decoding validates it the same way.
    let decoded = codec::decode::<T>(&codec::encode(text), usize::MAX);
    assert_eq!(decoded.is_ok(), valid, "{text:?} from CBOR");
    if let Ok(id) = made {
        assert_eq!(id.as_ref(), text);
        assert_eq!(id.to_string(), text);
        assert_eq!(decoded.ok().as_ref(), Some(&id));
    }
}

fn check_hex<T: FromStr + Display>(text: &str, bytes: usize) {
    let lowercase_hex = text.len() == 2 * bytes
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let parsed = text.parse::<T>();
    assert_eq!(parsed.is_ok(), lowercase_hex, "{text:?}");
    if let Ok(value) = parsed {
        assert_eq!(value.to_string(), text);
    }
}

fn cbor_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    if let Ok(value) = codec::decode::<T>(data, data.len()) {
        let again: T = codec::decode(&codec::encode(&value), usize::MAX).expect("round trip");
        assert_eq!(again, value);
    }
}
