//! The AOT artefact cache: one native shared object per admitted module, on disk.
//!
//! An artefact is keyed by the sha256 of the wasm that was compiled, the WasmEdge version, and the
//! CPU features of this machine (WasmEdge's AOT code uses the build host's CPU features, so an
//! artefact from another CPU must not be loaded). Compilation runs in a separate, short-lived worker
//! process with a memory cap and a deadline: a module built to make LLVM take forever or eat the
//! machine is refused, and the compiler's memory never stays in a long-lived process.
//!
//! An artefact is fsynced before it is renamed into place and the directory after, so that its name
//! never points at a partial file after a power loss; `Sandbox::load` still has a worker load every
//! artefact it hands out and [`ArtefactCache::discard`]s one that does not load, to compile it again.
//! Nothing expires by itself: `Sandbox::remove_unused_artefacts` removes what no loaded module uses
//! ([`ArtefactCache::remove_unused`]), so that disk use stays flat across module versions.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::WorkerCommand;

/// Name prefix of the temporary directory of one compilation, in the cache directory.
const COMPILE_PREFIX: &str = ".compile-";

/// Where artefacts live and how they are made.
#[derive(Debug, Clone)]
pub(crate) struct ArtefactCache {
    dir: PathBuf,
    /// `<wasmedge version>-<cpu features hash>`, the part of the key that is the same for every module.
    platform: String,
}

/// Why a module could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("compiling took longer than {0:?}; the module is refused (is it unusually large?)")]
    Timeout(Duration),
    #[error("the compiler failed: {0}")]
    Failed(String),
    #[error("artefact cache I/O in {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error(
        "the freshly compiled artefact does not load in a sandbox worker: {0}; check the disk \
         and that the worker runs the WasmEdge version that compiled it"
    )]
    Unloadable(String),
}

impl ArtefactCache {
    /// A cache in `dir` for artefacts made by `wasmedge_version` on this CPU.
    pub(crate) fn open(dir: &Path, wasmedge_version: &str) -> io::Result<ArtefactCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ArtefactCache {
            dir: dir.to_path_buf(),
            platform: format!("wasmedge{wasmedge_version}-{}", cpu_features_hash()),
        })
    }

    /// The artefact path for a module's compiled wasm.
    pub(crate) fn path_for(&self, wasm: &[u8]) -> PathBuf {
        let sha = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!("{sha}-{}.so", self.platform))
    }

    /// Returns the artefact for `wasm`, compiling it first when the cache has none.
    pub(crate) fn ensure(
        &self,
        wasm: &[u8],
        compiler: &WorkerCommand,
        timeout: Duration,
        memory_cap: u64,
    ) -> Result<PathBuf, CompileError> {
        let path = self.path_for(wasm);
        if path.exists() {
            return Ok(path);
        }
        let io_err = |source| CompileError::Io {
            dir: self.dir.clone(),
            source,
        };
        let work = tempfile::Builder::new()
            .prefix(COMPILE_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(io_err)?;
        let input = work.path().join("module.wasm");
        let output = work.path().join("module.so");
        std::fs::write(&input, wasm).map_err(io_err)?;
        let mut command = compiler.command(Some((rustix::process::Resource::As, memory_cap)));
        command
            .arg("compile")
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(io_err)?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io_err)? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CompileError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Err(CompileError::Failed(format!("{status}: {}", stderr.trim())));
        }
        // Rename is atomic: a reader sees no artefact or a whole one, never a partial file. The
        // contents reach the disk before the name does, and the rename before this returns, so that
        // after a power loss the name never points at a truncated file.
        std::fs::File::open(&output)
            .and_then(|file| file.sync_all())
            .map_err(io_err)?;
        std::fs::rename(&output, &path).map_err(io_err)?;
        sync_dir(&self.dir).map_err(io_err)?;
        Ok(path)
    }

    /// Removes an artefact that turned out not to load, so that the next `ensure` compiles again.
    pub(crate) fn discard(&self, artefact: &Path) -> Result<(), CompileError> {
        match std::fs::remove_file(artefact) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CompileError::Io {
                dir: self.dir.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes every artefact (`*.so`) of the cache directory but those in `keep`, and every
    /// compile directory last modified more than `stale_after` ago; returns how many entries went.
    /// Other files are not the cache's and stay.
    pub(crate) fn remove_unused(
        &self,
        keep: &HashSet<PathBuf>,
        stale_after: Duration,
    ) -> io::Result<usize> {
        let keep: HashSet<&OsStr> = keep.iter().filter_map(|path| path.file_name()).collect();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = entry.path();
            let result = if name.to_string_lossy().ends_with(".so") {
                if keep.contains(name.as_os_str()) {
                    continue;
                }
                std::fs::remove_file(&path)
            } else if name.to_string_lossy().starts_with(COMPILE_PREFIX) {
                let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
                if age <= stale_after {
                    continue;
                }
                std::fs::remove_dir_all(&path)
            } else {
                continue;
            };
            match result {
                Ok(()) => removed += 1,
                // Gone meanwhile (another remover): not ours to count.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Makes the directory entries of `dir` (a rename, a removal) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A short hash of this CPU's feature flags (from /proc/cpuinfo).
fn cpu_features_hash() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .unwrap_or("unknown");
    hex::encode(&Sha256::digest(flags.as_bytes())[..6])
}
