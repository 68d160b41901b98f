//! Module manifests: what the controller states, and signs, about a handler module blob; how the blob
//! is cut into chunks for distribution; and its reassembly and verification on the agent.
//!
//! A blob travels as retained raw-byte chunks on `ef/v1/module/<sha256>/chunk/<index>` (see the crate
//! documentation for why it is chunked). The manifest fixes the layout: chunk `i` is bytes
//! `i * chunk_size ..` of the blob, every chunk but the last is exactly `chunk_size` bytes, and
//! `chunks[i]` is chunk `i`'s SHA-256. Because the manifest reaches the agent signed (inside an
//! [`Assignment`](crate::Assignment)), every chunk is checked against a trusted digest the moment it
//! arrives, and the whole blob against `sha256` and `size` before it is used.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::id::{IdError, check_id};
use crate::signing::SignedKind;

/// Largest module blob edgefleet distributes, in bytes (a class may allow less, see
/// [`ClassLimits::max_module_bytes`](crate::ClassLimits::max_module_bytes)).
pub const MAX_MODULE_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest chunk size a manifest may declare, in bytes.
pub const MIN_CHUNK_SIZE: u32 = 16 * 1024;

/// Largest chunk size a manifest may declare, in bytes; with the topic, a chunk stays well within
/// [`MAX_UPLINK_PACKET_BYTES`](crate::wire::MAX_UPLINK_PACKET_BYTES).
pub const MAX_CHUNK_SIZE: u32 = 128 * 1024;

/// The chunk size the controller uses unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Most chunks a module can have ([`MAX_MODULE_BYTES`] in [`MIN_CHUNK_SIZE`] chunks).
pub const MAX_MODULE_CHUNKS: u32 = (MAX_MODULE_BYTES / MIN_CHUNK_SIZE as u64) as u32;

/// Longest module version string, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Why a manifest, a chunk or a blob is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The module name does not follow the identifier rule of [`crate::id`].
    #[error("bad module name: {0}")]
    BadName(#[source] IdError),
    /// The version is not 1–64 characters of `[A-Za-z0-9.+_-]` starting with a letter or digit.
    #[error(
        "bad module version {0:?}: expected 1-64 characters of A-Z a-z 0-9 . + _ - starting with a letter or digit"
    )]
    BadVersion(String),
    /// The manifest declares an empty module.
    #[error("module is empty")]
    Empty,
    /// The manifest declares a module larger than [`MAX_MODULE_BYTES`].
    #[error("module of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The chunk size is outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// The number of chunk digests does not fit the size and chunk size.
    #[error("manifest lists {found} chunk digests; its size and chunk size make {expected} chunks")]
    ChunkCount {
        /// Chunks the layout makes.
        expected: u64,
        /// Digests listed.
        found: usize,
    },
    /// A chunk index past the last chunk.
    #[error("chunk {index} does not exist; the module has {count} chunks")]
    NoSuchChunk {
        /// The index received.
        index: u32,
        /// Chunks in the module.
        count: u32,
    },
    /// A chunk of the wrong length.
    #[error("chunk {index} is {found} bytes long; the manifest makes it {expected}")]
    ChunkLength {
        /// The chunk's index.
        index: u32,
        /// Length the layout gives it.
        expected: usize,
        /// Length received.
        found: usize,
    },
    /// A chunk whose digest is not the manifest's.
    #[error("chunk {index} does not match its digest in the manifest")]
    ChunkDigest {
        /// The chunk's index.
        index: u32,
    },
    /// A blob of the wrong size.
    #[error("module is {found} bytes long; the manifest says {expected}")]
    Size {
        /// The manifest's size.
        expected: u64,
        /// The blob's size.
        found: u64,
    },
    /// A blob whose digest is not the manifest's.
    #[error("module digest {found} is not the manifest's {expected}")]
    Digest {
        /// The manifest's digest.
        expected: Sha256Digest,
        /// The blob's digest.
        found: Sha256Digest,
    },
    /// Reassembly finished before every chunk arrived.
    #[error("{missing} chunks have not arrived")]
    Incomplete {
        /// Chunks still missing.
        missing: u32,
    },
}

/// Names one module version, for status reports and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleRef {
    /// The module's name (usually its class or handler crate).
    pub name: String,
    /// Its version string.
    pub version: String,
    /// The blob's digest: what actually identifies the module.
    pub sha256: Sha256Digest,
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.name,
            self.version,
            self.sha256.short()
        )
    }
}

/// What the controller states about a module blob. Signed, inside an
/// [`Assignment`](crate::Assignment) or alone (`Signed<ModuleManifest>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleManifest {
    /// The module's name: 1–64 characters following the identifier rule of [`crate::id`].
    pub name: String,
    /// The module's version, semver-like (`1.4.0`, `2.0.0-rc.1+build.7`); informational, the
    /// digest is what identifies the module.
    pub version: String,
    /// SHA-256 of the whole blob.
    pub sha256: Sha256Digest,
    /// Size of the blob in bytes, 1..=[`MAX_MODULE_BYTES`].
    pub size: u64,
    /// The guest ABI the module declares in its `edgefleet_abi` section (see docs/guest-abi.md); the
    /// agent checks the blob's section against it and refuses ABIs it does not support.
    pub abi_version: u32,
    /// When the module was built, in ms since the UNIX epoch, if known.
    pub built_at_ms: Option<u64>,
    /// Size of every chunk but the last, in bytes.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<Sha256Digest>,
}

impl ModuleManifest {
    /// Describes `blob`, cut into `chunk_size`-byte chunks ([`DEFAULT_CHUNK_SIZE`] unless a
    /// deployment needs smaller packets). `built_at_ms` is left unset.
    pub fn for_blob(
        name: impl Into<String>,
        version: impl Into<String>,
        abi_version: u32,
        blob: &[u8],
        chunk_size: u32,
    ) -> Result<Self, ManifestError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ManifestError::ChunkSize(chunk_size));
        }
        let manifest = ModuleManifest {
            name: name.into(),
            version: version.into(),
            sha256: Sha256Digest::of(blob),
            size: blob.len() as u64,
            abi_version,
            built_at_ms: None,
            chunk_size,
            chunks: blob
                .chunks(chunk_size as usize)
                .map(Sha256Digest::of)
                .collect(),
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the manifest's own consistency: name, version, size bounds, chunk size, and that the
    /// chunk digests match the layout.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_id(&self.name).map_err(ManifestError::BadName)?;
        let version_ok = !self.version.is_empty()
            && self.version.len() <= MAX_VERSION_LEN
            && self
                .version
                .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '-'));
        if !version_ok {
            return Err(ManifestError::BadVersion(
                self.version.chars().take(MAX_VERSION_LEN).collect(),
            ));
        }
        if self.size == 0 {
            return Err(ManifestError::Empty);
        }
        if self.size > MAX_MODULE_BYTES {
            return Err(ManifestError::TooLarge {
                size: self.size,
                max: MAX_MODULE_BYTES,
            });
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        let expected = self.size.div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != expected {
            return Err(ManifestError::ChunkCount {
                expected,
                found: self.chunks.len(),
            });
        }
        Ok(())
    }

    /// The module's name, version and digest.
    pub fn reference(&self) -> ModuleRef {
        ModuleRef {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256,
        }
    }

    /// Number of chunks (the length of [`chunks`](Self::chunks), at most [`MAX_MODULE_CHUNKS`] in a
    /// valid manifest).
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.chunks.len()).unwrap_or(u32::MAX)
    }

    /// The length chunk `index` must have, or `None` past the last chunk.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        if index >= self.chunk_count() {
            return None;
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let len = (self.size - start.min(self.size)).min(u64::from(self.chunk_size));
        usize::try_from(len).ok()
    }

    /// Checks chunk `index` against the manifest: index in range, length, digest.
    pub fn verify_chunk(&self, index: u32, bytes: &[u8]) -> Result<(), ManifestError> {
        let expected = self.chunk_len(index).ok_or(ManifestError::NoSuchChunk {
            index,
            count: self.chunk_count(),
        })?;
        if bytes.len() != expected {
            return Err(ManifestError::ChunkLength {
                index,
                expected,
                found: bytes.len(),
            });
        }
        if Sha256Digest::of(bytes) != self.chunks[index as usize] {
            return Err(ManifestError::ChunkDigest { index });
        }
        Ok(())
    }

    /// Checks a whole blob against the manifest's size and digest.
    pub fn verify_blob(&self, blob: &[u8]) -> Result<(), ManifestError> {
        if blob.len() as u64 != self.size {
            return Err(ManifestError::Size {
                expected: self.size,
                found: blob.len() as u64,
            });
        }
        let found = Sha256Digest::of(blob);
        if found != self.sha256 {
            return Err(ManifestError::Digest {
                expected: self.sha256,
                found,
            });
        }
        Ok(())
    }
}

impl SignedKind for ModuleManifest {
    const KIND: &'static str = "module-manifest";
    const MAX_PAYLOAD_LEN: usize = 160 * 1024;
}

/// Reassembles a module from its chunks, in any order and with duplicates, checking each chunk on
/// arrival so a corrupt or forged chunk is refused at once (and can be fetched again).
#[derive(Debug, Clone)]
pub struct ModuleAssembly {
    manifest: ModuleManifest,
    chunks: Vec<Option<Vec<u8>>>,
    received: u32,
}

impl ModuleAssembly {
    /// Starts reassembling the module `manifest` describes (validated first).
    pub fn new(manifest: ModuleManifest) -> Result<Self, ManifestError> {
        manifest.validate()?;
        Ok(ModuleAssembly {
            chunks: vec![None; manifest.chunks.len()],
            manifest,
            received: 0,
        })
    }

    /// The manifest being assembled.
    pub fn manifest(&self) -> &ModuleManifest {
        &self.manifest
    }

    /// Takes chunk `index` after checking it; `Ok(false)` when that chunk was already held.
    pub fn accept(&mut self, index: u32, bytes: &[u8]) -> Result<bool, ManifestError> {
        self.manifest.verify_chunk(index, bytes)?;
        let slot = &mut self.chunks[index as usize];
        if slot.is_some() {
            return Ok(false);
        }
        *slot = Some(bytes.to_vec());
        self.received += 1;
        Ok(true)
    }

    /// Chunks held so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Indices of the chunks still missing, ascending.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.manifest.chunk_count()).filter(|&i| self.chunks[i as usize].is_none())
    }

    /// Whether every chunk has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.manifest.chunk_count()
    }

    /// The blob, once every chunk has arrived and the whole matches the manifest's size and digest.
    pub fn finish(self) -> Result<Vec<u8>, ManifestError> {
        if !self.is_complete() {
            return Err(ManifestError::Incomplete {
                missing: self.manifest.chunk_count() - self.received,
            });
        }
        let blob: Vec<u8> = self.chunks.into_iter().flatten().flatten().collect();
        self.manifest.verify_blob(&blob)?;
        Ok(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn manifest_for(blob: &[u8]) -> ModuleManifest {
        ModuleManifest::for_blob("thermo", "1.2.0-rc.1+b7", 1, blob, MIN_CHUNK_SIZE).unwrap()
    }

    #[test]
    fn layout_follows_size_and_chunk_size() {
        let chunk = MIN_CHUNK_SIZE as usize;
        for (len, count, last) in [
            (1, 1, 1),
            (chunk, 1, chunk),
            (chunk + 1, 2, 1),
            (3 * chunk, 3, chunk),
            (3 * chunk - 5, 3, chunk - 5),
        ] {
            let m = manifest_for(&blob(len));
            assert_eq!(m.chunk_count(), count, "len {len}");
            assert_eq!(m.chunk_len(count - 1), Some(last), "len {len}");
            assert_eq!(m.chunk_len(0), Some(chunk.min(len)));
            assert_eq!(m.chunk_len(count), None);
            assert_eq!(m.size, len as u64);
        }
        assert_eq!(MAX_MODULE_CHUNKS, 4096);
    }

    #[test]
    fn validation() {
        let good = manifest_for(&blob(40_000));
        assert_eq!(good.validate(), Ok(()));
        let mut m = good.clone();
        m.name = "a/b".into();
        assert!(matches!(m.validate(), Err(ManifestError::BadName(_))));
        for bad in ["", "-1", "1 0", "1/0", &"1".repeat(65)] {
            let mut m = good.clone();
            m.version = bad.into();
            assert!(
                matches!(m.validate(), Err(ManifestError::BadVersion(_))),
                "{bad:?}"
            );
        }
        let mut m = good.clone();
        m.size = 0;
        assert_eq!(m.validate(), Err(ManifestError::Empty));
        let mut m = good.clone();
        m.size = MAX_MODULE_BYTES + 1;
        assert!(matches!(m.validate(), Err(ManifestError::TooLarge { .. })));
        let mut m = good.clone();
        m.chunk_size = MIN_CHUNK_SIZE - 1;
        assert_eq!(
            m.validate(),
            Err(ManifestError::ChunkSize(MIN_CHUNK_SIZE - 1))
        );
        let mut m = good.clone();
        m.chunks.pop();
        assert_eq!(
            m.validate(),
            Err(ManifestError::ChunkCount {
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            ModuleManifest::for_blob("x", "1", 1, &[], DEFAULT_CHUNK_SIZE),
            Err(ManifestError::Empty)
        );
        assert_eq!(
            ModuleManifest::for_blob("x", "1", 1, &[1], MAX_CHUNK_SIZE + 1),
            Err(ManifestError::ChunkSize(MAX_CHUNK_SIZE + 1))
        );
    }

    #[test]
    fn reassembles_in_any_order_and_refuses_bad_chunks() {
        let data = blob(2 * MIN_CHUNK_SIZE as usize + 100);
        let m = manifest_for(&data);
        let chunks: Vec<&[u8]> = data.chunks(m.chunk_size as usize).collect();
        let mut assembly = ModuleAssembly::new(m.clone()).unwrap();
        assert_eq!(assembly.missing().collect::<Vec<_>>(), [0, 1, 2]);

        assert_eq!(assembly.accept(2, chunks[2]), Ok(true));
        let mut forged = chunks[0].to_vec();
        forged[7] ^= 1;
        assert_eq!(
            assembly.accept(0, &forged),
            Err(ManifestError::ChunkDigest { index: 0 })
        );
        assert_eq!(
            assembly.accept(1, chunks[2]),
            Err(ManifestError::ChunkLength {
                index: 1,
                expected: MIN_CHUNK_SIZE as usize,
                found: 100
            })
        );
        assert_eq!(
            assembly.accept(3, chunks[2]),
            Err(ManifestError::NoSuchChunk { index: 3, count: 3 })
        );
        assert_eq!(assembly.accept(0, chunks[0]), Ok(true));
        assert_eq!(assembly.accept(0, chunks[0]), Ok(false));
        assert_eq!(assembly.received(), 2);
        assert!(!assembly.is_complete());
        assert_eq!(assembly.missing().collect::<Vec<_>>(), [1]);
        assert_eq!(
            assembly.clone().finish(),
            Err(ManifestError::Incomplete { missing: 1 })
        );
        assert_eq!(assembly.accept(1, chunks[1]), Ok(true));
        assert!(assembly.is_complete());
        assert_eq!(assembly.finish(), Ok(data));
    }

    #[test]
    fn blob_verification() {
        let data = blob(1000);
        let m = manifest_for(&data);
        assert_eq!(m.verify_blob(&data), Ok(()));
        assert_eq!(
            m.verify_blob(&data[..999]),
            Err(ManifestError::Size {
                expected: 1000,
                found: 999
            })
        );
        let mut tampered = data.clone();
        tampered[0] ^= 0x80;
        assert!(matches!(
            m.verify_blob(&tampered),
            Err(ManifestError::Digest { .. })
        ));
        // Chunk digests that agree with each other but not with the blob digest.
        let mut lying = m.clone();
        lying.sha256 = Sha256Digest::of(b"something else");
        let mut assembly = ModuleAssembly::new(lying).unwrap();
        assert_eq!(assembly.accept(0, &data), Ok(true));
        assert!(matches!(
            assembly.finish(),
            Err(ManifestError::Digest { .. })
        ));
    }

    #[test]
    fn reference_and_display() {
        let m = manifest_for(b"abc");
        let r = m.reference();
        assert_eq!(r.sha256, Sha256Digest::of(b"abc"));
        assert_eq!(r.to_string(), "thermo 1.2.0-rc.1+b7 (ba7816bf8f01)");
    }
}
