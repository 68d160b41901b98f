//! Signatures: the controller's ed25519 signing key, the agents' trust anchor, their key files, and
//! the [`Signed`] envelope.
//!
//! # Keys and key files
//!
//! A key is identified by its [`KeyId`]: the first 8 bytes of SHA-256 over the 32-byte ed25519 public
//! key, written as 16 hex digits. Key files are the standard PEM encodings, so `openssl` and
//! cert-manager can produce and inspect them:
//!
//! | file | format | made by |
//! |---|---|---|
//! | signing key (controller) | PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----` | [`SigningKey::save`], `openssl genpkey -algorithm ed25519` |
//! | verifying key | SPKI PEM, `-----BEGIN PUBLIC KEY-----` | [`VerifyingKey::save`], `openssl pkey -pubout` |
//! | trust bundle (agent) | one or more `PUBLIC KEY` blocks, text between blocks ignored | [`TrustAnchor::to_pem_bundle`], `cat` |
//!
//! An agent trusting several keys is how the controller's key is rotated: ship a bundle holding the
//! old and the new key, switch the controller to the new key, then drop the old one.
//!
//! # The envelope
//!
//! [`Signed<T>`] carries `payload` (the CBOR encoding of a `T`), `key_id` and a 64-byte `signature`
//! over `b"edgefleet/v1/" ‖ T::KIND ‖ 0x00 ‖ payload`. The kind label makes a signature for one kind
//! of document (a module manifest) useless as another (an assignment) even if the bytes happened to
//! decode as both. [`Signed::verify`] returns the `T` only if the key is trusted and the signature
//! holds (strict ed25519 verification: no malleable or small-order signatures).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::codec::{self, CodecError};
use crate::digest::Sha256Digest;

/// Prefix of every signed message, before the document kind.
pub const SIGNATURE_DOMAIN: &[u8] = b"edgefleet/v1/";

/// Bytes a [`Signed`] envelope may add to its payload (CBOR map, key id, signature).
pub const ENVELOPE_OVERHEAD: usize = 256;

const PUBLIC_KEY_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PUBLIC_KEY_END: &str = "-----END PUBLIC KEY-----";

/// A document type that can be signed.
pub trait SignedKind {
    /// The document kind in the signed message: distinct for every type, without NUL bytes.
    const KIND: &'static str;
    /// Largest encoded document accepted, in bytes.
    const MAX_PAYLOAD_LEN: usize;
}

/// Identifies a key: the first 8 bytes of SHA-256 over the ed25519 public key; 16 hex digits as text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(#[serde(with = "crate::fixed_bytes")] [u8; 8]);

/// A string that is not 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 16 lowercase hex digits")]
pub struct KeyIdParseError;

impl KeyId {
    /// The id of the ed25519 public key `public_key`.
    pub fn of_public_key(public_key: &[u8; 32]) -> KeyId {
        let digest = Sha256Digest::of(public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_bytes()[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyIdParseError;

    fn from_str(s: &str) -> Result<KeyId, KeyIdParseError> {
        crate::fixed_bytes::parse_hex(s)
            .map(KeyId)
            .ok_or(KeyIdParseError)
    }
}

/// Why a key or trust bundle could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The text is not a PKCS#8 PEM ed25519 private key.
    #[error("not a PKCS#8 PEM ed25519 private key: {0}")]
    PrivateKey(String),
    /// The text or bytes are not an ed25519 public key.
    #[error("not an SPKI PEM ed25519 public key: {0}")]
    PublicKey(String),
    /// The public key is a small-order point, which would accept forged signatures.
    #[error("weak ed25519 public key {0}")]
    WeakKey(KeyId),
    /// A trust bundle holds a PEM block other than `PUBLIC KEY` (a private key, a certificate).
    #[error("trust bundle holds a {0:?} PEM block; only PUBLIC KEY blocks are allowed")]
    UnexpectedBlock(String),
    /// A trust bundle has a `BEGIN` line without its `END` line.
    #[error("trust bundle has a PEM block without its END line")]
    UnterminatedBlock,
    /// A trust bundle holds no key.
    #[error("trust bundle holds no public key")]
    EmptyBundle,
    /// The system's random number generator failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Why a signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signer's key is not in the trust anchor.
    #[error("signed by untrusted key {0}")]
    UnknownKey(KeyId),
    /// The signature does not verify under the named key (tampered payload, another document kind,
    /// or a forged key id).
    #[error("bad signature for key {0}")]
    BadSignature(KeyId),
    /// The signature holds but the payload is not a valid document, or is too large.
    #[error("signed payload is malformed: {0}")]
    Malformed(#[from] CodecError),
}

/// The controller's ed25519 signing key.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: KeyId,
}

impl SigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SigningKey::from_dalek(
            ed25519_dalek::SigningKey::from_bytes(&seed),
        ))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> SigningKey {
        let id = KeyId::of_public_key(key.verifying_key().as_bytes());
        SigningKey { key, id }
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(SigningKey::from_dalek)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))
    }

    /// The key as PKCS#8 PEM, public key included.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = Zeroizing::new(fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?);
        SigningKey::from_pkcs8_pem(&pem)
    }

    /// Writes the key as a new PKCS#8 PEM file, readable by its owner only; an existing file is
    /// never overwritten.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.to_pkcs8_pem()?;
        let io_error = |source| KeyError::Io {
            path: path.into(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io_error)?;
        file.write_all(pem.as_bytes()).map_err(io_error)?;
        file.sync_all().map_err(io_error)
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    /// Signs `document` as a `T::KIND` document.
    pub fn sign<T: SignedKind + Serialize>(&self, document: &T) -> Signed<T> {
        let payload = codec::encode(document);
        let signature = self.key.sign(&signed_message(T::KIND, &payload)).to_bytes();
        Signed {
            payload,
            key_id: self.id,
            signature,
            kind: PhantomData,
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

/// An ed25519 public key the agents verify signatures with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    id: KeyId,
}

impl VerifyingKey {
    /// A key from its 32 raw bytes; refuses bytes that are not a point and small-order points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|e| KeyError::PublicKey(e.to_string()))
            .and_then(VerifyingKey::from_dalek)
    }

    fn from_dalek(key: ed25519_dalek::VerifyingKey) -> Result<VerifyingKey, KeyError> {
        let id = KeyId::of_public_key(key.as_bytes());
        if key.is_weak() {
            return Err(KeyError::WeakKey(id));
        }
        Ok(VerifyingKey { key, id })
    }

    /// The key's 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_public_key_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| KeyError::PublicKey(e.to_string()))
            .and_then(VerifyingKey::from_dalek)
    }

    /// The key as SPKI PEM.
    pub fn to_public_key_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::PublicKey(e.to_string()))
    }

    /// Reads an SPKI PEM key file.
    pub fn load(path: &Path) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_public_key_pem(&read_text(path)?)
    }

    /// Writes the key as an SPKI PEM file, replacing any file there.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        fs::write(path, self.to_public_key_pem()?).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })
    }

    /// The key's id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })
}

/// The keys an agent accepts signatures from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustAnchor {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl TrustAnchor {
    /// An anchor trusting nothing.
    pub fn new() -> TrustAnchor {
        TrustAnchor::default()
    }

    /// Trusts `key`; `false` if it was already trusted.
    pub fn insert(&mut self, key: VerifyingKey) -> bool {
        self.keys.insert(key.key_id(), key).is_none()
    }

    /// The trusted key with id `id`.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// Ids of the trusted keys, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a trust bundle: one or more SPKI PEM public keys; text outside the blocks is ignored,
    /// any other kind of PEM block is refused.
    pub fn from_pem_bundle(text: &str) -> Result<TrustAnchor, KeyError> {
        let mut anchor = TrustAnchor::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block = &rest[start..];
            if !block.starts_with(PUBLIC_KEY_BEGIN) {
                let label = block["-----BEGIN ".len()..]
                    .split("-----")
                    .next()
                    .unwrap_or_default();
                return Err(KeyError::UnexpectedBlock(label.chars().take(32).collect()));
            }
            let end = block
                .find(PUBLIC_KEY_END)
                .ok_or(KeyError::UnterminatedBlock)?
                + PUBLIC_KEY_END.len();
            anchor.insert(VerifyingKey::from_public_key_pem(&format!(
                "{}\n",
                &block[..end]
            ))?);
            rest = &block[end..];
        }
        if anchor.is_empty() {
            return Err(KeyError::EmptyBundle);
        }
        Ok(anchor)
    }

    /// The anchor as a trust bundle, keys in id order.
    pub fn to_pem_bundle(&self) -> Result<String, KeyError> {
        self.keys
            .values()
            .map(VerifyingKey::to_public_key_pem)
            .collect()
    }

    /// Reads a trust bundle file.
    pub fn load(path: &Path) -> Result<TrustAnchor, KeyError> {
        TrustAnchor::from_pem_bundle(&read_text(path)?)
    }
}

impl FromIterator<VerifyingKey> for TrustAnchor {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(keys: I) -> TrustAnchor {
        TrustAnchor {
            keys: keys.into_iter().map(|k| (k.key_id(), k)).collect(),
        }
    }
}

fn signed_message(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + kind.len() + 1 + payload.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(kind.as_bytes());
    message.push(0);
    message.extend_from_slice(payload);
    message
}

/// A `T` signed by the controller: the CBOR payload, the signer's key id and the signature. Made by
/// [`SigningKey::sign`], opened by [`Signed::verify`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    key_id: KeyId,
    #[serde(with = "crate::fixed_bytes")]
    signature: [u8; 64],
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T: SignedKind> Signed<T> {
    /// Largest encoded envelope accepted.
    pub const MAX_LEN: usize = T::MAX_PAYLOAD_LEN + ENVELOPE_OVERHEAD;

    /// Decodes an envelope (not yet verified), refusing more than [`Self::MAX_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Signed<T>, CodecError> {
        codec::decode(bytes, Self::MAX_LEN)
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The id of the key that claims to have signed.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signed bytes (CBOR of a `T`), unverified.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The document, if `anchor` trusts the signer and the signature holds.
    pub fn verify(&self, anchor: &TrustAnchor) -> Result<T, SignatureError>
    where
        T: DeserializeOwned,
    {
        if self.payload.len() > T::MAX_PAYLOAD_LEN {
            return Err(SignatureError::Malformed(CodecError::TooLarge {
                len: self.payload.len(),
                max: T::MAX_PAYLOAD_LEN,
            }));
        }
        let key = anchor
            .get(&self.key_id)
            .ok_or(SignatureError::UnknownKey(self.key_id))?;
        key.key
            .verify_strict(
                &signed_message(T::KIND, &self.payload),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| SignatureError::BadSignature(self.key_id))?;
        Ok(codec::decode(&self.payload, T::MAX_PAYLOAD_LEN)?)
    }
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Signed {
            payload: self.payload.clone(),
            key_id: self.key_id,
            signature: self.signature,
            kind: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
            && self.key_id == other.key_id
            && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("kind", &std::any::type_name::<T>())
            .field("payload_len", &self.payload.len())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated with `openssl genpkey -algorithm ed25519` (a test key, trusted nowhere).
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIKUCmIRrYk4OIB8yFRJIw8Sf+m0ZRRnPuOqUCDTEG3n
-----END PRIVATE KEY-----
";
    /// `openssl pkey -pubout` of the key above.
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAIH6C7BQYQgu3THRDBaJYhU7nF0h0TnnS1Tm4L69c3b4=
-----END PUBLIC KEY-----
";
    /// `openssl pkey -pubout -outform DER | tail -c 32 | sha256sum | cut -c1-16`.
    const OPENSSL_KEY_ID: &str = "6018d377b4609712";

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        what: String,
        amount: u32,
    }

    impl SignedKind for Order {
        const KIND: &'static str = "test-order";
        const MAX_PAYLOAD_LEN: usize = 1024;
    }

    /// Same shape as `Order`, another kind.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Refund {
        what: String,
        amount: u32,
    }

    impl SignedKind for Refund {
        const KIND: &'static str = "test-refund";
        const MAX_PAYLOAD_LEN: usize = 1024;
    }

    fn order() -> Order {
        Order {
            what: "valve".into(),
            amount: 3,
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_pkcs8_pem(OPENSSL_PRIVATE).unwrap()
    }

    fn anchor() -> TrustAnchor {
        [key().verifying_key()].into_iter().collect()
    }

    #[test]
    fn reads_openssl_keys_and_derives_the_key_id() {
        let signing = key();
        let verifying = VerifyingKey::from_public_key_pem(OPENSSL_PUBLIC).unwrap();
        assert_eq!(signing.verifying_key(), verifying);
        assert_eq!(signing.key_id().to_string(), OPENSSL_KEY_ID);
        assert_eq!(OPENSSL_KEY_ID.parse::<KeyId>(), Ok(verifying.key_id()));
        assert_eq!(verifying.to_public_key_pem().unwrap(), OPENSSL_PUBLIC);
        assert_eq!(
            VerifyingKey::from_bytes(&verifying.to_bytes()).unwrap(),
            verifying
        );
        let pem = signing.to_pkcs8_pem().unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_pem(&pem).unwrap().key_id(),
            signing.key_id()
        );
    }

    #[test]
    fn key_ids_parse_strictly() {
        for bad in [
            "",
            "6018d377b460971",
            "6018D377B4609712",
            "6018d377b46097120",
            "xx18d377b4609712",
        ] {
            assert_eq!(bad.parse::<KeyId>(), Err(KeyIdParseError), "{bad:?}");
        }
    }

    #[test]
    fn signs_and_verifies() {
        let signed = key().sign(&order());
        assert_eq!(signed.key_id(), key().key_id());
        assert_eq!(signed.verify(&anchor()), Ok(order()));
        let decoded = Signed::<Order>::decode(&signed.encode()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.verify(&anchor()), Ok(order()));
    }

    #[test]
    fn refuses_any_tampered_payload_byte() {
        let signed = key().sign(&order());
        for at in 0..signed.payload.len() {
            let mut tampered = signed.clone();
            tampered.payload[at] ^= 0x01;
            assert_eq!(
                tampered.verify(&anchor()),
                Err(SignatureError::BadSignature(key().key_id())),
                "byte {at}"
            );
        }
        let mut tampered = signed.clone();
        tampered.signature[10] ^= 0x40;
        assert_eq!(
            tampered.verify(&anchor()),
            Err(SignatureError::BadSignature(key().key_id()))
        );
    }

    #[test]
    fn refuses_wrong_keys() {
        let other = SigningKey::generate().unwrap();
        assert_ne!(other.key_id(), key().key_id());
        let by_other = other.sign(&order());
        assert_eq!(
            by_other.verify(&anchor()),
            Err(SignatureError::UnknownKey(other.key_id()))
        );
        // Signed by another key but claiming the trusted key's id.
        let mut forged = by_other.clone();
        forged.key_id = key().key_id();
        assert_eq!(
            forged.verify(&anchor()),
            Err(SignatureError::BadSignature(key().key_id()))
        );
        assert_eq!(
            key().sign(&order()).verify(&TrustAnchor::new()),
            Err(SignatureError::UnknownKey(key().key_id()))
        );
    }

    #[test]
    fn refuses_kind_confusion() {
        let signed = key().sign(&order());
        let as_refund: Signed<Refund> = Signed::decode(&signed.encode()).unwrap();
        // The payload decodes as a Refund; only the kind in the signed message tells them apart.
        assert!(codec::decode::<Refund>(as_refund.payload(), 1024).is_ok());
        assert_eq!(
            as_refund.verify(&anchor()),
            Err(SignatureError::BadSignature(key().key_id()))
        );
    }

    #[test]
    fn refuses_oversized_and_malformed_payloads() {
        let big = Order {
            what: "x".repeat(2000),
            amount: 1,
        };
        assert!(matches!(
            key().sign(&big).verify(&anchor()),
            Err(SignatureError::Malformed(CodecError::TooLarge { .. }))
        ));
        let not_an_order = key().sign(&Refund {
            what: "valve".into(),
            amount: 3,
        });
        let mut wrong_shape: Signed<Order> = Signed::decode(&not_an_order.encode()).unwrap();
        wrong_shape.payload = codec::encode(&"a string");
        wrong_shape.signature = key()
            .key
            .sign(&signed_message(Order::KIND, &wrong_shape.payload))
            .to_bytes();
        assert!(matches!(
            wrong_shape.verify(&anchor()),
            Err(SignatureError::Malformed(CodecError::Invalid { .. }))
        ));
        assert!(matches!(
            Signed::<Order>::decode(&vec![0u8; Signed::<Order>::MAX_LEN + 1]),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn signed_message_layout() {
        assert_eq!(
            signed_message("k", b"\x01\x02"),
            b"edgefleet/v1/k\0\x01\x02"
        );
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let path = dir.path().join("signing.pem");
        key.save(&path).unwrap();
        assert!(
            matches!(key.save(&path), Err(KeyError::Io { .. })),
            "overwrote a key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(SigningKey::load(&path).unwrap().key_id(), key.key_id());

        let public = dir.path().join("signing.pub.pem");
        key.verifying_key().save(&public).unwrap();
        assert_eq!(VerifyingKey::load(&public).unwrap(), key.verifying_key());
        assert!(matches!(
            SigningKey::load(&dir.path().join("missing.pem")),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            SigningKey::load(&public),
            Err(KeyError::PrivateKey(_))
        ));
        assert!(matches!(
            VerifyingKey::load(&path),
            Err(KeyError::PublicKey(_))
        ));
    }

    #[test]
    fn trust_bundles() {
        let second = SigningKey::generate().unwrap();
        let anchor: TrustAnchor = [key().verifying_key(), second.verifying_key()]
            .into_iter()
            .collect();
        let bundle = anchor.to_pem_bundle().unwrap();
        assert_eq!(TrustAnchor::from_pem_bundle(&bundle).unwrap(), anchor);

        let commented = format!(
            "# current key\n{OPENSSL_PUBLIC}\n# next key\n{}",
            second.verifying_key().to_public_key_pem().unwrap()
        );
        let parsed = TrustAnchor::from_pem_bundle(&commented).unwrap();
        assert_eq!(parsed, anchor);
        assert_eq!(parsed.len(), 2);
        assert!(parsed.get(&second.key_id()).is_some());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.pem");
        fs::write(&path, &commented).unwrap();
        assert_eq!(TrustAnchor::load(&path).unwrap(), anchor);

        assert!(matches!(
            TrustAnchor::from_pem_bundle(""),
            Err(KeyError::EmptyBundle)
        ));
        assert!(matches!(
            TrustAnchor::from_pem_bundle(&format!("{OPENSSL_PUBLIC}{OPENSSL_PRIVATE}")),
            Err(KeyError::UnexpectedBlock(label)) if label == "PRIVATE KEY"
        ));
        assert!(matches!(
            TrustAnchor::from_pem_bundle(&OPENSSL_PUBLIC[..60]),
            Err(KeyError::UnterminatedBlock)
        ));
        let corrupt = OPENSSL_PUBLIC.replace("MCow", "MCox");
        assert!(matches!(
            TrustAnchor::from_pem_bundle(&corrupt),
            Err(KeyError::PublicKey(_))
        ));
    }

    #[test]
    fn refuses_weak_public_keys() {
        // The identity point: a small-order key under which forged signatures verify.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::from_bytes(&identity),
            Err(KeyError::WeakKey(_))
        ));
    }
}
