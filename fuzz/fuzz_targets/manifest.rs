//! Fuzzes module manifests as they arrive (inside an assignment, or as `Signed<ModuleManifest>`):
//! the CBOR decoder for `ModuleManifest`, `ModuleManifest::validate`, the chunk layout
//! (`chunk_count`, `chunk_len`), chunk and blob checks on arbitrary bytes, and
//! `ModuleAssembly::new`.
//!
//! Properties: nothing panics; a decoded manifest round-trips through CBOR; a valid manifest lays
//! out chunks of `chunk_size` bytes (the last one 1 to `chunk_size`) whose lengths add up to `size`,
//! has no chunk past the last, and starts an assembly that misses every chunk and refuses to finish;
//! `ModuleAssembly::new` accepts exactly the valid manifests; chunk and blob checks refuse a wrong
//! length before looking at the digest.

#![no_main]

use edgefleet_protocol::codec;
use edgefleet_protocol::manifest::{MAX_MODULE_CHUNKS, ManifestError};
use edgefleet_protocol::{ModuleAssembly, ModuleManifest, SignedKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = codec::decode::<ModuleManifest>(data, ModuleManifest::MAX_PAYLOAD_LEN)
    else {
        return;
    };
    let again: ModuleManifest =
        codec::decode(&codec::encode(&manifest), usize::MAX).expect("round trip");
    assert_eq!(again, manifest);

    // Whatever the manifest says, checking a chunk or a blob never panics.
    let probe = &data[..data.len().min(64)];
    for index in [0, 1, manifest.chunk_count().saturating_sub(1), u32::MAX] {
        if let Err(ManifestError::ChunkLength {
            expected, found, ..
        }) = manifest.verify_chunk(index, probe)
        {
            assert_ne!(expected, found);
        }
    }
    if probe.len() as u64 != manifest.size {
        assert!(matches!(
            manifest.verify_blob(probe),
            Err(ManifestError::Size { .. })
        ));
    }

    let valid = manifest.validate().is_ok();
    let assembly = ModuleAssembly::new(manifest.clone());
    assert_eq!(assembly.is_ok(), valid);
    let Ok(assembly) = assembly else {
        return;
    };
    let count = manifest.chunk_count();
    assert!((1..=MAX_MODULE_CHUNKS).contains(&count));
    let chunk_size = manifest.chunk_size as usize;
    let mut total = 0u64;
    for index in 0..count {
        let len = manifest.chunk_len(index).expect("a chunk within the count");
        if index + 1 < count {
            assert_eq!(len, chunk_size, "chunk {index} of {count}");
        } else {
            assert!((1..=chunk_size).contains(&len), "last chunk of {len} bytes");
        }
        total += len as u64;
    }
    assert_eq!(total, manifest.size);
    assert_eq!(manifest.chunk_len(count), None);
    assert_eq!(assembly.received(), 0);
    assert!(assembly.missing().eq(0..count));
    assert_eq!(
        assembly.finish(),
        Err(ManifestError::Incomplete { missing: count })
    );
});
