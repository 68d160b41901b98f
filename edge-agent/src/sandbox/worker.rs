//! The sandbox worker process: the only place where WasmEdge runs module code.
//!
//! `edgefleet-sandbox-worker serve` reads [`Request`]s on stdin and answers on stdout, running each
//! interaction in a fresh instance ([`engine::LoadedModule`]) and keeping the [`Progress`] slot
//! current. It holds no disk state and trusts nothing it runs: if a module kills it (native stack
//! overflow in AOT code, a runtime bug) or overruns its budget, the supervisor replaces the process.
//! `edgefleet-sandbox-worker compile` AOT-compiles one module and exits, so that LLVM never lives in a
//! long-running process.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::path::Path;

use super::engine::{self, LoadedModule};
use super::progress::Progress;
use super::wire::{Request, Response, read_frame, write_frame};

/// Serves requests until stdin closes. Returns an error only when the pipe itself fails.
pub fn serve(progress: Progress) -> io::Result<()> {
    engine::quiet_logs();
    let mut input = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut modules: HashMap<u64, LoadedModule> = HashMap::new();
    while let Some(request) = read_frame::<Request<'static>>(&mut input)? {
        let response = match request {
            Request::Load {
                module,
                artefact,
                memory,
                limits,
                config,
            } => match LoadedModule::load(&artefact, memory, limits, config) {
                Ok(loaded) => {
                    modules.insert(module, loaded);
                    Response::Loaded
                }
                Err(e) => Response::LoadFailed {
                    error: e.to_string(),
                },
            },
            Request::Unload { module } => {
                modules.remove(&module);
                Response::Unloaded
            }
            Request::Run { module, items } => match modules.get_mut(&module) {
                Some(loaded) => {
                    let mut results = Vec::with_capacity(items.len());
                    for (index, item) in items.iter().enumerate() {
                        progress.start(index as u32);
                        results.push(loaded.run(item));
                        progress.idle();
                    }
                    Response::Ran { results }
                }
                None => Response::UnknownModule { module },
            },
        };
        write_frame(&mut output, &response)?;
    }
    Ok(())
}

/// Compiles the wasm file `input` to a native artefact at `output`.
pub fn compile(input: &Path, output: &Path) -> Result<(), String> {
    engine::quiet_logs();
    let wasm = std::fs::read(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    engine::compile(&wasm, output).map_err(|e| e.to_string())
}
