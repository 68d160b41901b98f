//! Fuzzes the CBOR codec (`protocol::codec::decode`) and `TopicPayload::decode_on` with the messages
//! a controller receives from nodes: `NodeStatus`, `AgentEvent` and `UpstreamMessage`. Every input
//! is tried as each of them.
//!
//! Properties: decoding never panics (nor overflows the stack, nor allocates more than the input
//! justifies); a decoded message re-encodes to bytes that decode to an equal message whose encoding
//! is the same bytes again (a fixed point after one round); a message decoded from bytes is also
//! accepted by `decode_on` on its own topic, and that topic re-renders and parses back to itself.

#![no_main]

use std::fmt::Debug;

use edgefleet_protocol::codec;
use edgefleet_protocol::{AgentEvent, NodeStatus, Topic, TopicPayload, UpstreamMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NodeStatus holds f64s (NaN != NaN): its round trip is compared on the encoded bytes only.
    round_trip::<NodeStatus>(data);
    if let Some((event, again)) = round_trip::<AgentEvent>(data) {
        assert_eq!(again, event);
    }
    if let Some((message, again)) = round_trip::<UpstreamMessage>(data) {
        assert_eq!(again, message);
    }
});

/// Decodes `data` as a `T` within `T::MAX_LEN` and checks the byte-level round trip and the topic;
/// returns the message and its decoded re-encoding.
fn round_trip<T: TopicPayload + Debug>(data: &[u8]) -> Option<(T, T)> {
    let message: T = codec::decode(data, T::MAX_LEN).ok()?;
    let encoded = codec::encode(&message);
    let again: T = codec::decode(&encoded, usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded {message:?} does not decode: {e}"));
    assert_eq!(
        codec::encode(&again),
        encoded,
        "encoding is not a fixed point"
    );

    let topic = message.topic();
    let text = topic.to_string();
    assert_eq!(Topic::parse(&text).as_ref(), Ok(&topic), "{text}");
    if let Err(e) = T::decode_on(&topic, data) {
        panic!("decoded {message:?} but decode_on its own topic {text} refused it: {e}");
    }
    Some((message, again))
}
