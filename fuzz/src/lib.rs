//! What the fuzz targets and the seed generator (`examples/make_seeds.rs`) share: a fixed signing
//! key, so that seeds signed with it verify in the targets and the fuzzer reaches the code behind
//! signature verification.

use std::sync::OnceLock;

use edgefleet_protocol::{SigningKey, TrustAnchor};

/// An ed25519 key made for fuzzing only (`openssl genpkey -algorithm ed25519`); nothing trusts it.
const FUZZ_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILEls4GhSyycSwd6oGP3XohWtGKD0L9NaC0Zp7Ja8WYO
-----END PRIVATE KEY-----
";

/// The fuzzing key, parsed once.
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_pkcs8_pem(FUZZ_KEY_PEM).expect("the fuzzing key parses"))
}

/// A trust anchor holding only the fuzzing key's public half.
pub fn trust_anchor() -> &'static TrustAnchor {
    static ANCHOR: OnceLock<TrustAnchor> = OnceLock::new();
    ANCHOR.get_or_init(|| std::iter::once(signing_key().verifying_key()).collect())
}
