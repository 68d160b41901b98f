//! Handler module binaries: where the controller gets them (a file, or an OCI registry by digest),
//! how it checks them (digest, then the sandbox's pure-Rust admission, the same the agent runs),
//! and where it keeps them (a content-addressed folder, `<data>/blobs/sha256/<hex>`).
//!
//! A binary reaches the blob store only after its digest and admission passed, so anything in the
//! store may be chunked and published; a module that fails either is [`Resolution::Refused`] and
//! its HandlerModule's `Ready` condition says why. A registry that cannot be reached is not a
//! refusal: the module stays [`Resolution::Unavailable`] and is tried again.
//!
//! A module that declares test vectors must also pass them (`vectors`, in the sandbox) before it is
//! stored: one that fails a case is refused (`TestVectorFailed`, with the difference); one this
//! controller cannot run (no sandbox worker) is unavailable until it can.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgefleet_protocol::manifest::{DEFAULT_CHUNK_SIZE, MAX_MODULE_BYTES};
use edgefleet_protocol::{ClassLimits, GUEST_ABI_VERSION, ModuleManifest, Sha256Digest};

use crate::fleet::{Problem, ReadyModule, Resolution};
use crate::resources::HandlerModuleSpec;
use crate::vectors::{Runner, VectorError};

/// The content-addressed store of admitted module binaries.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> std::io::Result<Blobs> {
        let dir = data_dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir)?;
        Ok(Blobs { dir })
    }

    fn path(&self, sha256: &Sha256Digest) -> PathBuf {
        self.dir.join(sha256.to_string())
    }

    /// Stores `bytes` under their digest: written to a temporary file, fsynced, renamed, so a
    /// name never points at a partial file.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<Sha256Digest> {
        let sha256 = Sha256Digest::of(bytes);
        let path = self.path(&sha256);
        if !path.exists() {
            let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
            file.write_all(bytes)?;
            file.as_file().sync_all()?;
            file.persist(&path).map_err(|e| e.error)?;
        }
        Ok(sha256)
    }

    /// The binary with digest `sha256`, re-hashed: a file damaged on disk is removed and reported
    /// as absent.
    pub fn get(&self, sha256: &Sha256Digest) -> Option<Vec<u8>> {
        let path = self.path(sha256);
        let bytes = std::fs::read(&path).ok()?;
        if Sha256Digest::of(&bytes) != *sha256 {
            tracing::warn!(path = %path.display(), "damaged module blob removed");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Removes every binary not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<Sha256Digest>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let known = name
                .to_str()
                .and_then(|n| n.parse::<Sha256Digest>().ok())
                .is_some_and(|sha| keep.contains(&sha));
            if !known {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The most generous limits a class can set: a module is admitted once under these; each class
/// then checks its own size and memory limits against the result (`fleet`).
fn widest_limits() -> ClassLimits {
    ClassLimits {
        max_memory_pages: 4096,
        max_module_bytes: MAX_MODULE_BYTES as u32,
        ..ClassLimits::default()
    }
}

/// Checks a binary against the spec, admission and its test vectors, stores it, and describes
/// it. Blocks (the vectors run in worker processes): call it off the async threads.
pub fn admit(
    spec: &HandlerModuleSpec,
    bytes: &[u8],
    blobs: &Blobs,
    vectors: &Runner,
) -> Result<(ReadyModule, String), Problem> {
    let sha256 = Sha256Digest::of(bytes);
    if let Some(expected) = &spec.sha256
        && *expected != sha256.to_string()
    {
        return Err(Problem::new(
            "DigestMismatch",
            format!("the binary's SHA-256 is {sha256}, the spec says {expected}"),
        ));
    }
    if spec.abi_version != GUEST_ABI_VERSION {
        return Err(Problem::new(
            "UnsupportedAbi",
            format!(
                "spec.abiVersion is {}; this controller and its agents speak guest ABI v{GUEST_ABI_VERSION}",
                spec.abi_version
            ),
        ));
    }
    let admitted = edgefleet_sandbox::admission::admit(bytes, &widest_limits())
        .map_err(|e| Problem::new("AdmissionRefused", e.to_string()))?;
    let manifest = ModuleManifest::for_blob(
        spec.module.as_str(),
        spec.version.as_str(),
        spec.abi_version,
        bytes,
        DEFAULT_CHUNK_SIZE,
    )
    .map_err(|e| Problem::new("InvalidManifest", e.to_string()))?;
    let passed = run_vectors(spec, bytes, vectors)?;
    blobs.put(bytes).map_err(|e| {
        Problem::new(
            "StoreFailed",
            format!("cannot store the module binary: {e} (is the data folder writable?)"),
        )
    })?;
    let summary = format!(
        "admitted: guest ABI v{}, memory at least {} pages{}{}",
        spec.abi_version,
        admitted.memory.min_pages,
        if admitted.rewritten_memory {
            ", own memory rewritten to an import"
        } else {
            ""
        },
        match passed {
            0 => String::new(),
            1 => "; 1 test vector passed".to_string(),
            n => format!("; {n} test vectors passed"),
        }
    );
    Ok((
        ReadyModule {
            manifest,
            min_memory_pages: admitted.memory.min_pages,
        },
        summary,
    ))
}

/// Runs the spec's test vectors, if any; how many passed, or why the module cannot be ready.
fn run_vectors(spec: &HandlerModuleSpec, bytes: &[u8], vectors: &Runner) -> Result<usize, Problem> {
    if spec.test_vectors.is_empty() {
        return Ok(0);
    }
    let label = format!("{}@{}", spec.module, spec.version);
    let count = spec.test_vectors.len();
    let report = vectors
        .run(&label, bytes, &spec.test_vectors)
        .map_err(|e| match e {
            VectorError::Start(e) => Problem::new(
                "SandboxUnavailable",
                format!(
                    "the module declares {count} test vectors, and this controller has no sandbox \
                     to run them in: {e}. Install edgefleet-sandbox-worker beside \
                     edgefleet-controller, or give its path with --worker-binary \
                     (EDGEFLEET_WORKER_BINARY, worker_binary in the config file); the module is \
                     tried again"
                ),
            ),
            VectorError::Unavailable(_) => Problem::new(
                "SandboxUnavailable",
                format!("{e} (the module declares {count} test vectors); it is tried again"),
            ),
        })?;
    match report.failure() {
        Some(failure) => Err(Problem::new("TestVectorFailed", failure)),
        None => Ok(report.passed()),
    }
}

/// What a failed [`admit`] means: the module is refused, unless the store could not take it (a
/// full or failing disk is not the module's fault) or no sandbox could run its test vectors: then
/// it is tried again.
pub fn refused(problem: Problem) -> (Resolution, Option<String>) {
    let message = problem.message.clone();
    if matches!(problem.reason, "StoreFailed" | "SandboxUnavailable") {
        (Resolution::Unavailable(problem), Some(message))
    } else {
        (Resolution::Refused(problem), Some(message))
    }
}

/// Resolves a module whose spec names a file (standalone mode), relative to `base_dir`.
pub fn resolve_file(
    spec: &HandlerModuleSpec,
    file: &str,
    base_dir: &Path,
    blobs: &Blobs,
    vectors: &Runner,
) -> (Resolution, Option<String>) {
    let path = base_dir.join(file);
    let bytes = match read_capped(&path) {
        Ok(bytes) => bytes,
        // Too large is the module's fault; unreadable may pass (the file is being written).
        Err(problem) if problem.reason == "TooLarge" => {
            return (Resolution::Refused(problem), None);
        }
        Err(problem) => return (Resolution::Unavailable(problem), None),
    };
    match admit(spec, &bytes, blobs, vectors) {
        Ok((ready, summary)) => (Resolution::Ready(ready), Some(summary)),
        Err(problem) => refused(problem),
    }
}

/// The file's bytes, unless it cannot be read or is larger than any module may be.
fn read_capped(path: &Path) -> Result<Vec<u8>, Problem> {
    let unreadable = |e: std::io::Error| {
        Problem::new(
            "FileUnreadable",
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let len = std::fs::metadata(path).map_err(unreadable)?.len();
    if len > MAX_MODULE_BYTES {
        return Err(Problem::new(
            "TooLarge",
            format!("{} is {len} bytes, over {MAX_MODULE_BYTES}", path.display()),
        ));
    }
    std::fs::read(path).map_err(unreadable)
}
