//! The `modules` and `manifests` trees: handler module blobs keyed by their SHA-256, and the signed
//! manifest bytes that vouch for them, kept as received so the agent can verify them again after a
//! restart.
//!
//! A blob is content-addressed: [`Store::put_module`] computes the key itself, and
//! [`Store::module`] hashes the blob again on every read, so damaged bytes are reported, never
//! returned. A module is garbage once no [`ClassRecord`](super::ClassRecord) names it as active or
//! previous; [`Store::remove_module`] deletes it with its manifest.

use edgefleet_protocol::Sha256Digest;

use sled::Transactional;

use super::tree::MODULES;
use super::{Store, StoreError, transaction_result};

impl Store {
    /// Stores a module blob under its SHA-256 and returns the digest. Idempotent: a blob already
    /// stored intact is not written again; a damaged copy is replaced.
    pub fn put_module(&self, blob: &[u8]) -> Result<Sha256Digest, StoreError> {
        let sha256 = Sha256Digest::of(blob);
        let key = sha256.as_bytes();
        let intact = self
            .modules
            .get(key)?
            .is_some_and(|stored| Sha256Digest::of(&stored) == sha256);
        if !intact {
            self.modules.insert(key, blob)?;
        }
        Ok(sha256)
    }

    /// The module blob with this digest, verified against it; `None` if it is not stored.
    pub fn module(&self, sha256: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(blob) = self.modules.get(sha256.as_bytes())? else {
            return Ok(None);
        };
        let found = Sha256Digest::of(&blob);
        if found != *sha256 {
            return Err(StoreError::Corrupt {
                tree: MODULES,
                key: sha256.to_string(),
                detail: format!(
                    "the stored blob hashes to {found}; remove it (Store::remove_module) and fetch the module again"
                ),
            });
        }
        Ok(Some(blob.to_vec()))
    }

    /// Whether a blob is stored under this digest (not verified: see [`Store::module`]).
    pub fn has_module(&self, sha256: &Sha256Digest) -> Result<bool, StoreError> {
        Ok(self.modules.contains_key(sha256.as_bytes())?)
    }

    /// The digests of every stored module, in byte order.
    pub fn module_digests(&self) -> Result<Vec<Sha256Digest>, StoreError> {
        self.modules
            .iter()
            .keys()
            .map(|key| {
                let key = key?;
                <[u8; 32]>::try_from(key.as_ref())
                    .map(Sha256Digest::from_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: MODULES,
                        key: hex::encode(&key),
                        detail: format!(
                            "a {}-byte key where a 32-byte SHA-256 belongs: not written by an agent; move the store directory aside to start afresh",
                            key.len()
                        ),
                    })
            })
            .collect()
    }

    /// Removes a module blob and its manifest; returns whether the blob was stored.
    pub fn remove_module(&self, sha256: &Sha256Digest) -> Result<bool, StoreError> {
        let key = sha256.as_bytes();
        transaction_result(
            (&self.modules, &self.manifests).transaction(|(modules, manifests)| {
                manifests.remove(key)?;
                Ok(modules.remove(key)?.is_some())
            }),
        )
    }

    /// Stores the signed manifest bytes of the module with this digest, as received.
    pub fn put_manifest(&self, sha256: &Sha256Digest, signed: &[u8]) -> Result<(), StoreError> {
        self.manifests.insert(sha256.as_bytes(), signed)?;
        Ok(())
    }

    /// The signed manifest bytes stored for this module (verify them before use).
    pub fn manifest(&self, sha256: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .manifests
            .get(sha256.as_bytes())?
            .map(|bytes| bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn modules_are_stored_under_their_digest_and_read_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let small = blob(1, 1000);
        let large = blob(2, 3 * 1024 * 1024);
        let small_sha = store.put_module(&small).unwrap();
        let large_sha = store.put_module(&large).unwrap();
        assert_eq!(small_sha, Sha256Digest::of(&small));
        assert_eq!(store.put_module(&small).unwrap(), small_sha, "idempotent");
        assert_eq!(store.module(&small_sha).unwrap(), Some(small.clone()));
        assert_eq!(store.module(&large_sha).unwrap(), Some(large.clone()));
        assert!(store.has_module(&large_sha).unwrap());
        let mut digests = vec![small_sha, large_sha];
        digests.sort();
        assert_eq!(store.module_digests().unwrap(), digests);
        assert_eq!(store.module(&Sha256Digest::of(b"absent")).unwrap(), None);

        store.put_manifest(&small_sha, b"signed manifest").unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.module(&large_sha).unwrap(), Some(large));
        assert_eq!(
            store.manifest(&small_sha).unwrap().as_deref(),
            Some(b"signed manifest".as_slice())
        );

        assert!(store.remove_module(&small_sha).unwrap());
        assert!(!store.remove_module(&small_sha).unwrap());
        assert_eq!(store.module(&small_sha).unwrap(), None);
        assert_eq!(store.manifest(&small_sha).unwrap(), None);
        assert_eq!(store.module_digests().unwrap(), vec![large_sha]);
    }

    #[test]
    fn a_damaged_blob_is_reported_naming_its_digest_and_repaired_by_a_new_put() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let module = blob(3, 5000);
        let sha256 = store.put_module(&module).unwrap();
        let mut damaged = module.clone();
        damaged[4321] ^= 0x10;
        store.modules.insert(sha256.as_bytes(), damaged).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let error = store.module(&sha256).unwrap_err();
        match &error {
            StoreError::Corrupt { tree, key, .. } => {
                assert_eq!(
                    (*tree, key.as_str()),
                    (MODULES, sha256.to_string().as_str())
                )
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(
            error.to_string().contains("fetch the module again"),
            "{error}"
        );

        assert_eq!(store.put_module(&module).unwrap(), sha256);
        assert_eq!(store.module(&sha256).unwrap(), Some(module));
    }

    #[test]
    fn a_key_that_is_not_a_digest_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.modules.insert(b"short", b"x".as_slice()).unwrap();
        assert!(matches!(
            store.module_digests(),
            Err(StoreError::Corrupt { tree: MODULES, key, .. }) if key == hex::encode(b"short")
        ));
    }
}
