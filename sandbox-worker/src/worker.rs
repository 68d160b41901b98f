//! The sandbox worker process: the only place where WasmEdge runs module code.
//!
//! `edgefleet-sandbox-worker serve` reads [`Request`]s on stdin and answers on stdout, running each
//! interaction in a fresh instance ([`engine::LoadedModule`]) and keeping the [`Progress`] slot
//! current. It holds no disk state and trusts nothing it runs: if a module kills it (native stack
//! overflow in AOT code, a runtime bug) or overruns its budget, the supervisor replaces the process.
//! `edgefleet-sandbox-worker compile` AOT-compiles one module and exits, so that LLVM never lives in a
//! long-running process.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};

use edgefleet_sandbox::progress::Progress;
use edgefleet_sandbox::wire::{Request, Response, read_frame, write_frame};

use crate::engine::{self, LoadedModule};
/// How long the worker spins on its pipe before it sleeps. Shorter than the driver's: on a small
/// machine spinning workers take CPU from the other workers (measured on 2 vCPUs: 15 µs halves the
/// idle round trip and costs a fifth of batched throughput; 50 µs cost a third).
const WORKER_SPIN: Duration = Duration::from_micros(15);

/// Serves requests until stdin closes. Returns an error only when the pipe itself fails.
pub fn serve(progress: Progress) -> io::Result<()> {
    engine::quiet_logs();
    let stdin = io::stdin().lock();
    rustix::io::ioctl_fionbio(&stdin, true)?;
    let mut input = BufReader::with_capacity(256 * 1024, SpinningReader { input: stdin });
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

/// Reads a non-blocking pipe, spinning for [`WORKER_SPIN`] before sleeping in `poll`: under load the next
/// request arrives within microseconds, and waking from sleep costs tens of them.
struct SpinningReader<R> {
    input: R,
}

impl<R: Read + AsFd> Read for SpinningReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            match self.input.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if started.elapsed() < WORKER_SPIN {
                        std::hint::spin_loop();
                    } else {
                        let mut fds = [PollFd::new(&self.input, PollFlags::IN)];
                        match poll(&mut fds, None) {
                            Ok(_) | Err(rustix::io::Errno::INTR) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}

/// Compiles the wasm file `input` to a native artefact at `output`.
pub fn compile(input: &Path, output: &Path) -> Result<(), String> {
    engine::quiet_logs();
    let wasm = std::fs::read(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    engine::compile(&wasm, output).map_err(|e| e.to_string())
}
