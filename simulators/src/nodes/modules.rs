//! The module blobs hollow nodes fetch, held once per process: every hollow node receives and
//! checks every chunk of its modules itself (against the digests of its own signed manifest), but
//! the bytes go into one shared assembly per module, and the whole blob is checked against the
//! manifest's sha256 and size once. So 10,000 nodes that fetch a module hold one copy of it, and
//! hash each chunk once each (as 10,000 agents would) but the whole blob only once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use edgefleet_protocol::Sha256Digest;
use edgefleet_protocol::manifest::{ManifestError, ModuleManifest};

/// One module as this process knows it.
enum Entry {
    /// Chunks verified by some node so far.
    Assembling(Vec<Option<Box<[u8]>>>),
    /// Every chunk arrived and the blob matches its manifest.
    Verified(Arc<[u8]>),
    /// Every chunk arrived, each matching its digest, but the whole does not match the manifest.
    Refused(ManifestError),
}

/// The process's modules, keyed by blob digest and chunk size (the layout a manifest fixes).
#[derive(Default)]
pub(super) struct Modules {
    entries: Mutex<HashMap<(Sha256Digest, u32), Entry>>,
}

impl Modules {
    /// Takes chunk `index` of `manifest`'s module, which the caller has checked against the
    /// manifest (`ModuleManifest::verify_chunk`); a chunk already held is not copied again.
    pub(super) fn offer(&self, manifest: &ModuleManifest, index: u32, bytes: &[u8]) {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries
            .entry((manifest.sha256, manifest.chunk_size))
            .or_insert_with(|| Entry::Assembling(vec![None; manifest.chunks.len()]));
        if let Entry::Assembling(chunks) = entry
            && let Some(slot @ None) = chunks.get_mut(index as usize)
        {
            *slot = Some(bytes.into());
        }
    }

    /// Whether `manifest`'s module is complete and matches it, once a node has offered every
    /// chunk: the first such call checks the whole blob (size, sha256), later ones read the verdict.
    pub(super) fn finish(&self, manifest: &ModuleManifest) -> Result<(), ManifestError> {
        let mut entries = self.entries.lock().unwrap();
        let Some(entry) = entries.get_mut(&(manifest.sha256, manifest.chunk_size)) else {
            return Err(ManifestError::Incomplete {
                missing: manifest.chunk_count(),
            });
        };
        let chunks = match entry {
            Entry::Verified(_) => return Ok(()),
            Entry::Refused(e) => return Err(e.clone()),
            Entry::Assembling(chunks) => chunks,
        };
        let missing = chunks.iter().filter(|c| c.is_none()).count();
        if missing > 0 {
            return Err(ManifestError::Incomplete {
                missing: missing as u32,
            });
        }
        let blob: Vec<u8> = chunks
            .iter()
            .flatten()
            .flat_map(|c| c.iter().copied())
            .collect();
        *entry = match manifest.verify_blob(&blob) {
            Ok(()) => Entry::Verified(blob.into()),
            Err(e) => Entry::Refused(e),
        };
        match entry {
            Entry::Refused(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Modules verified, and the bytes they hold.
    pub(super) fn verified(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap();
        entries.values().fold((0, 0), |(n, bytes), e| match e {
            Entry::Verified(blob) => (n + 1, bytes + blob.len()),
            _ => (n, bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::manifest::MIN_CHUNK_SIZE;

    #[test]
    fn a_module_is_held_once_and_checked_whole_once() {
        let blob: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let manifest = ModuleManifest::for_blob("m", "1.0.0", 1, &blob, MIN_CHUNK_SIZE).unwrap();
        let modules = Modules::default();
        let chunks: Vec<&[u8]> = blob.chunks(MIN_CHUNK_SIZE as usize).collect();
        modules.offer(&manifest, 0, chunks[0]);
        assert!(matches!(
            modules.finish(&manifest),
            Err(ManifestError::Incomplete { missing: 2 })
        ));
        for (i, chunk) in chunks.iter().enumerate() {
            modules.offer(&manifest, i as u32, chunk);
        }
        assert_eq!(modules.finish(&manifest), Ok(()));
        assert_eq!(modules.finish(&manifest), Ok(()));
        assert_eq!(modules.verified(), (1, blob.len()));

        // A manifest whose chunk digests hold but whose whole digest does not: refused, for good.
        let mut lying = manifest.clone();
        lying.sha256 = Sha256Digest::of(b"another blob");
        for (i, chunk) in chunks.iter().enumerate() {
            modules.offer(&lying, i as u32, chunk);
        }
        assert!(matches!(
            modules.finish(&lying),
            Err(ManifestError::Digest { .. })
        ));
        assert!(matches!(
            modules.finish(&lying),
            Err(ManifestError::Digest { .. })
        ));
        assert_eq!(modules.verified(), (1, blob.len()));
    }
}
