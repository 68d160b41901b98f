//! Fuzzes signed assignments, what an agent takes from `ef/v1/node/<node>/assign/<class>`:
//! `Signed::<Assignment>::decode`, `Signed::verify` against a trust anchor, then the checks an agent
//! makes on a verified assignment (`check_target`, `validate`, `freshness`) and, for its module,
//! `ModuleAssembly::new`.
//!
//! The first input byte picks a mode. Even: the rest is an envelope, as it arrives. Odd: the rest is
//! an assignment payload that the target signs with the fuzzing key itself, so the fuzzer reaches
//! what lies behind a valid signature (mutated envelopes almost never verify): two bytes (big-endian)
//! name a bit of the encoded envelope to flip, the rest is the payload.
//!
//! Properties: nothing panics; a decoded envelope re-encodes to an equal envelope; an untrusted key
//! is refused as such; a verified envelope never also verifies as a module manifest (domain
//! separation); an envelope signed here verifies to exactly the payload's assignment, and with any
//! bit flipped it either does not decode, decodes equal, or is refused; a verified, valid
//! assignment's module can be reassembled (`ModuleAssembly::new` accepts its manifest) and fits
//! its limits.

#![no_main]

use edgefleet_fuzz::{signing_key, trust_anchor};
use edgefleet_protocol::codec;
use edgefleet_protocol::signing::SignatureError;
use edgefleet_protocol::{
    Assignment, Freshness, ModuleAssembly, ModuleManifest, Signed, SignedKind, TrustAnchor,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_envelope(rest);
    } else {
        let Some((position, payload)) = rest.split_first_chunk::<2>() else {
            return;
        };
        check_signed_here(usize::from(u16::from_be_bytes(*position)), payload);
    }
});

fn check_envelope(bytes: &[u8]) {
    let Ok(envelope) = Signed::<Assignment>::decode(bytes) else {
        return;
    };
    assert_eq!(
        Signed::<Assignment>::decode(&envelope.encode()).as_ref(),
        Ok(&envelope)
    );
    let small_enough = envelope.payload().len() <= Assignment::MAX_PAYLOAD_LEN;
    if small_enough {
        assert_eq!(
            envelope.verify(&TrustAnchor::new()),
            Err(SignatureError::UnknownKey(envelope.key_id()))
        );
    }
    if let Ok(assignment) = envelope.verify(trust_anchor()) {
        assert!(small_enough);
        assert_not_a_manifest(bytes);
        check_assignment(&assignment);
    }
}

fn check_signed_here(position: usize, payload: &[u8]) {
    let Ok(assignment) = codec::decode::<Assignment>(payload, Assignment::MAX_PAYLOAD_LEN) else {
        return;
    };
    let envelope = signing_key().sign(&assignment);
    let bytes = envelope.encode();
    let decoded = Signed::<Assignment>::decode(&bytes).expect("a fresh envelope decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.verify(trust_anchor()).as_ref(), Ok(&assignment));
    assert_not_a_manifest(&bytes);
    check_assignment(&assignment);

    let bit = position % (bytes.len() * 8);
    let mut tampered = bytes.clone();
    tampered[bit / 8] ^= 1 << (bit % 8);
    if let Ok(forged) = Signed::<Assignment>::decode(&tampered)
        && forged != envelope
    {
        assert!(
            forged.verify(trust_anchor()).is_err(),
            "bit {bit} of the envelope flipped and it still verifies"
        );
    }
}

/// The same envelope read as a signed module manifest must not verify: the signature covers the
/// document kind.
fn assert_not_a_manifest(envelope: &[u8]) {
    if let Ok(as_manifest) = Signed::<ModuleManifest>::decode(envelope) {
        assert!(
            as_manifest.verify(trust_anchor()).is_err(),
            "an assignment's signature verified as a module manifest's"
        );
    }
}

fn check_assignment(assignment: &Assignment) {
    assert_eq!(
        assignment.check_target(&assignment.node, &assignment.class),
        Ok(())
    );
    let generation = assignment.generation;
    assert_eq!(assignment.freshness(None), Freshness::Newer);
    assert_eq!(assignment.freshness(Some(generation)), Freshness::Current);
    if let Some(older) = generation.checked_sub(1) {
        assert_eq!(assignment.freshness(Some(older)), Freshness::Newer);
    }
    if let Some(newer) = generation.checked_add(1) {
        assert_eq!(assignment.freshness(Some(newer)), Freshness::Stale);
    }
    if assignment.validate().is_err() {
        return;
    }
    if let Some(handler) = &assignment.handler {
        assert!(handler.limits.validate().is_ok());
        assert!(handler.module.size <= u64::from(handler.limits.max_module_bytes));
        let assembly = ModuleAssembly::new(handler.module.clone()).expect("a valid manifest");
        assert_eq!(assembly.missing().count(), handler.module.chunks.len());
    }
}
