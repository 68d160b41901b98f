//! Fuzzes chunked module download reassembly (`ModuleAssembly`): a module blob cut by
//! `ModuleManifest::for_blob`, then a sequence of chunk arrivals (right, duplicated, out of order,
//! out of range, truncated, extended, corrupted, or another chunk's bytes), then `finish`.
//! The input is structured (`arbitrary`): blob length and content, chunk size, arrivals.
//!
//! Properties: nothing panics; `for_blob` accepts exactly the chunk sizes in range and its manifest
//! is valid; `accept` takes a chunk exactly when its bytes are that chunk of the blob, returning
//! `true` the first time only; a refused chunk changes nothing; `received`, `missing` and
//! `is_complete` always agree with a model of what arrived; `finish` returns the original blob
//! exactly when every chunk arrived, and says how many are missing otherwise.

#![no_main]

use edgefleet_protocol::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ManifestError};
use edgefleet_protocol::{ModuleAssembly, ModuleManifest};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Largest blob tried: up to six chunks of the smallest size, so every arrival is cheap to hash.
const MAX_BLOB: u32 = 6 * MIN_CHUNK_SIZE;

#[derive(Debug, Arbitrary)]
struct Input {
    blob_len: u32,
    seed: u8,
    chunk_size: ChunkSize,
    arrivals: Vec<Arrival>,
}

#[derive(Debug, Arbitrary)]
enum ChunkSize {
    Smallest,
    Default,
    Largest,
    /// Any value: mostly out of range.
    Raw(u32),
}

#[derive(Debug, Arbitrary)]
enum Arrival {
    /// Chunk `index`'s bytes, as `index` (the index may be past the last chunk).
    Right(u16),
    /// Chunk `from`'s bytes, as chunk `to`.
    Other { from: u16, to: u16 },
    /// Chunk `index` without its last `cut` bytes.
    Truncated { index: u16, cut: u16 },
    /// Chunk `index` with one more byte.
    Extended { index: u16, byte: u8 },
    /// Chunk `index` with byte `at` xor-ed with `mask`.
    Corrupted { index: u16, at: u16, mask: u8 },
}

fuzz_target!(|input: Input| {
    let blob = blob(1 + input.blob_len % MAX_BLOB, input.seed);
    let chunk_size = match input.chunk_size {
        ChunkSize::Smallest => MIN_CHUNK_SIZE,
        ChunkSize::Default => edgefleet_protocol::manifest::DEFAULT_CHUNK_SIZE,
        ChunkSize::Largest => MAX_CHUNK_SIZE,
        ChunkSize::Raw(size) => size,
    };
    let manifest = ModuleManifest::for_blob("fuzzed", "1.0.0", 1, &blob, chunk_size);
    assert_eq!(
        manifest.is_ok(),
        (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size),
        "chunk size {chunk_size}"
    );
    let Ok(manifest) = manifest else {
        return;
    };
    assert_eq!(manifest.validate(), Ok(()));
    let chunks: Vec<&[u8]> = blob.chunks(chunk_size as usize).collect();
    assert_eq!(manifest.chunk_count() as usize, chunks.len());

    let mut assembly = ModuleAssembly::new(manifest).expect("for_blob's manifest is valid");
    let mut held = vec![false; chunks.len()];
    for arrival in input.arrivals {
        let (index, bytes) = arrive(&arrival, &chunks);
        let expected_ok = chunks.get(index as usize) == Some(&bytes.as_slice());
        match assembly.accept(index, &bytes) {
            Ok(fresh) => {
                assert!(expected_ok, "{arrival:?} was accepted");
                assert_eq!(fresh, !held[index as usize], "{arrival:?}");
                held[index as usize] = true;
            }
            Err(e) => assert!(!expected_ok, "{arrival:?} was refused: {e}"),
        }
        let missing: Vec<u32> = (0..chunks.len() as u32)
            .filter(|&i| !held[i as usize])
            .collect();
        assert!(assembly.missing().eq(missing.iter().copied()));
        assert_eq!(assembly.received() as usize, chunks.len() - missing.len());
        assert_eq!(assembly.is_complete(), missing.is_empty());
    }
    let missing = held.iter().filter(|&&h| !h).count() as u32;
    match assembly.finish() {
        Ok(reassembled) => {
            assert_eq!(missing, 0);
            assert!(reassembled == blob, "reassembled blob differs");
        }
        Err(e) => assert_eq!(e, ManifestError::Incomplete { missing }),
    }
});

/// A blob whose chunks all differ: each byte depends on its position.
fn blob(len: u32, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 24) as u8 ^ seed ^ (i >> 14) as u8)
        .collect()
}

/// The index and bytes an arrival delivers.
fn arrive(arrival: &Arrival, chunks: &[&[u8]]) -> (u32, Vec<u8>) {
    // Indices reach one past the last chunk, so out-of-range arrivals are tried too.
    let pick = |index: u16| u32::from(index) % (chunks.len() as u32 + 1);
    let bytes_of = |index: u32| {
        chunks
            .get(index as usize)
            .map_or(Vec::new(), |c| c.to_vec())
    };
    match *arrival {
        Arrival::Right(index) => (pick(index), bytes_of(pick(index))),
        Arrival::Other { from, to } => (pick(to), bytes_of(pick(from))),
        Arrival::Truncated { index, cut } => {
            let mut bytes = bytes_of(pick(index));
            bytes.truncate(bytes.len().saturating_sub(usize::from(cut)));
            (pick(index), bytes)
        }
        Arrival::Extended { index, byte } => {
            let mut bytes = bytes_of(pick(index));
            bytes.push(byte);
            (pick(index), bytes)
        }
        Arrival::Corrupted { index, at, mask } => {
            let mut bytes = bytes_of(pick(index));
            if let Some(len) = std::num::NonZeroUsize::new(bytes.len()) {
                bytes[usize::from(at) % len] ^= mask;
            }
            (pick(index), bytes)
        }
    }
}
