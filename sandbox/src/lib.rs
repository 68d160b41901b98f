//! The host side of the sandbox: runs every device interaction in a fresh WasmEdge instance, in
//! worker processes (the `edgefleet-sandbox-worker` crate), without linking WasmEdge itself.
//!
//! ```text
//!  caller (agent, controller, CLI)        worker processes (WasmEdge, AOT)
//!  ─────────────                          ────────────────────────────────
//!  Sandbox::load ── admission ── AOT compile (short-lived process, cached on disk)
//!  Sandbox::run_batch ── queue ── driver thread ══ pipe ══ worker: fresh instance per interaction
//!                                      └─ watchdog on the shared progress slot: kill on overrun
//! ```
//!
//! * [`admission`] checks a module before anything runs it (ABI version, imports, memory, tables)
//!   and rewrites a module that defines its memory into one that imports it.
//! * `artefacts` compiles admitted modules ahead of time and caches the native code.
//! * the worker's `engine` (in `edgefleet-sandbox-worker`) instantiates the module afresh for each
//!   interaction; [`wire`] and [`progress`] are the protocol both sides share.
//! * `supervisor` runs the worker processes, enforces time budgets and replaces dead workers.
//! * `breaker` quarantines a module that keeps failing.
//!
//! Public are what callers use: [`Sandbox`] and its types, and what the worker crate, its tests and
//! the fuzz targets share with it ([`admission`], [`interaction`], [`wire`], [`progress`],
//! [`metrics`]); `artefacts`, `supervisor` and `breaker` are the sandbox's own.
//!
//! The caller's process never loads WasmEdge: a module (or a WasmEdge bug) can kill a worker, never
//! the caller. See docs/architecture.md for the design and the measurements behind it.

pub mod admission;
mod artefacts;
mod breaker;
pub mod interaction;
pub mod metrics;
pub mod progress;
mod supervisor;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgefleet_protocol::ClassLimits;
use sha2::{Digest, Sha256};

pub use admission::{AdmissionError, MemoryLimits};
pub use artefacts::CompileError;
pub use breaker::BreakerConfig;
pub use interaction::{
    Interaction, InteractionError, LogLevel, LogLine, MAX_TOPIC_BYTES, Outcome, Upstream,
};
pub use metrics::SandboxMetrics;
pub use supervisor::WorkerCommand;

use artefacts::ArtefactCache;
use breaker::Breaker;
use supervisor::{Driver, Job, LoadFailure};

/// The fault-handler pin module the worker parks a thread in (see the worker's `engine::pin_fault_handlers`), as bytes:
/// `(module (import "edgefleet_pin" "park" (func $park)) (func (export "pin") (call $park)))`.
pub const PIN_MODULE: &[u8] = &[
    0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 2, 22, 1, 13, 101, 100, 103, 101, 102, 108,
    101, 101, 116, 95, 112, 105, 110, 4, 112, 97, 114, 107, 0, 0, 3, 2, 1, 0, 7, 7, 1, 3, 112, 105,
    110, 0, 1, 10, 6, 1, 4, 0, 16, 0, 11,
];

/// How a sandbox runs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Number of worker processes (interactions of all classes share them).
    pub workers: usize,
    /// How to start a worker.
    pub worker: WorkerCommand,
    /// Where AOT artefacts are cached.
    pub artefact_dir: PathBuf,
    /// A module whose compilation takes longer is refused.
    pub compile_timeout: Duration,
    /// Address-space cap of a compile process, in bytes.
    pub compile_memory_cap: u64,
    /// Data-segment cap of each worker process (heap + writable private mappings), in bytes.
    pub worker_memory_cap: u64,
    /// Interactions sent to one worker in one message; larger batches are split across workers.
    /// A module whose class limits allow answers so large that this many would not fit a worker
    /// frame gets smaller messages (see `wire`).
    pub max_batch: usize,
    /// When a failing module is quarantined.
    pub breaker: BreakerConfig,
}

impl SandboxConfig {
    /// Defaults for a worker binary and a cache directory.
    pub fn new(worker: WorkerCommand, artefact_dir: impl Into<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            workers: 2,
            worker,
            artefact_dir: artefact_dir.into(),
            compile_timeout: Duration::from_secs(60),
            compile_memory_cap: 4 << 30,
            worker_memory_cap: 1 << 30,
            max_batch: 64,
            breaker: BreakerConfig::default(),
        }
    }
}

/// A module to load for a device class.
#[derive(Debug, Clone)]
pub struct ModuleSpec<'a> {
    /// A name for logs and metrics, e.g. `thermostat@1.2.0`.
    pub label: String,
    /// The module as received.
    pub wasm: &'a [u8],
    /// The sha256 the module must have (from its signed manifest); `None` skips the check.
    pub expected_sha256: Option<[u8; 32]>,
    /// The class's limits.
    pub limits: ClassLimits,
    /// The class config handed to the handler (`config` host function).
    pub config: Vec<u8>,
}

/// Why a module was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "module {label}: sha256 is {actual}, but its manifest says {expected}; the blob was altered or corrupted in transit — it is refused"
    )]
    DigestMismatch {
        label: String,
        expected: String,
        actual: String,
    },
    #[error("module {label} refused: {source}")]
    Refused {
        label: String,
        #[source]
        source: AdmissionError,
    },
    #[error(
        "module {label} refused: under its class limits one interaction may answer with up to \
         {worst_case} bytes (max_outputs = {max_outputs} outputs of up to max_output_bytes = \
         {max_output_bytes} bytes, max_state_bytes = {max_state_bytes} and the log lines), more \
         than the {frame} bytes a sandbox worker frame holds: lower max_outputs or \
         max_output_bytes (or max_state_bytes) so that max_outputs × max_output_bytes + \
         max_state_bytes stays under {frame}"
    )]
    AnswerExceedsFrame {
        label: String,
        worst_case: u64,
        max_outputs: u32,
        max_output_bytes: u32,
        max_state_bytes: u32,
        frame: usize,
    },
    #[error("module {label} could not be compiled: {source}")]
    Compile {
        label: String,
        #[source]
        source: CompileError,
    },
    #[error(
        "module {label} could not be loaded now: {detail}; no sandbox worker could try it (check \
         the worker binary and the log), load it again later"
    )]
    Unavailable { label: String, detail: String },
}

impl LoadError {
    /// A short stable name for metrics labels and events.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::DigestMismatch { .. } => "digest_mismatch",
            LoadError::Refused { .. } => "refused",
            LoadError::AnswerExceedsFrame { .. } => "answer_exceeds_frame",
            LoadError::Compile { .. } => "compile",
            LoadError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot run the sandbox worker {program:?}: {detail}. Build it (cargo build -p edgefleet-sandbox-worker, in the same profile as its caller) and check that WasmEdge 0.17 is installed (scripts/setup.sh)"
    )]
    Worker { program: PathBuf, detail: String },
    #[error("cannot use the artefact directory {dir:?}: {source}")]
    ArtefactDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// A loaded module (a module + class config + limits). Cheap to clone; the workers forget the
/// module once every handle is dropped. Swapping the handle a class uses is how a new version takes
/// over: interactions already submitted finish on the old one.
#[derive(Debug, Clone)]
pub struct ModuleHandle(Arc<ModuleEntry>);

/// What the sandbox knows of a loaded module.
#[derive(Debug)]
pub(crate) struct ModuleEntry {
    id: u64,
    label: String,
    artefact: PathBuf,
    memory: MemoryLimits,
    limits: ClassLimits,
    config: Vec<u8>,
    /// Interactions per message to a worker: `max_batch`, or fewer if their answers would not fit.
    batch_items: usize,
    breaker: Mutex<Breaker>,
}

/// The sandbox. See the module documentation.
pub struct Sandbox {
    config: SandboxConfig,
    cache: ArtefactCache,
    wasmedge_version: String,
    jobs: Option<crossbeam_channel::Sender<Job>>,
    drivers: Vec<JoinHandle<()>>,
    worker_pids: Vec<Arc<AtomicU32>>,
    next_id: AtomicU64,
    /// Batch parts sent to the drivers and not answered yet (running or queued).
    in_flight: AtomicUsize,
    metrics: Arc<SandboxMetrics>,
    /// The compiled fault-handler pin, if it compiled (its artefact is never removed).
    pin: Option<PathBuf>,
    /// Every module loaded, while a handle to it lives: their artefacts are in use.
    modules: Mutex<Vec<Weak<ModuleEntry>>>,
    /// Held shared by a load from compiling to registering its module, exclusively by
    /// [`Sandbox::remove_unused_artefacts`]: an artefact just compiled is never taken for unused.
    artefact_use: RwLock<()>,
}

impl Sandbox {
    /// Starts the worker processes.
    pub fn start(config: SandboxConfig) -> Result<Sandbox, StartError> {
        let wasmedge_version = worker_version(&config.worker)?;
        let cache =
            ArtefactCache::open(&config.artefact_dir, &wasmedge_version).map_err(|source| {
                StartError::ArtefactDir {
                    dir: config.artefact_dir.clone(),
                    source,
                }
            })?;
        // Without the pin every call into AOT code costs six rt_sigaction syscalls; a worker runs
        // unpinned (slower, not less safe) if it cannot be compiled.
        let pin = cache
            .ensure(
                PIN_MODULE,
                &config.worker,
                config.compile_timeout,
                config.compile_memory_cap,
            )
            .inspect_err(|e| tracing::warn!("fault-handler pin unavailable: {e}"))
            .ok();
        let metrics = Arc::new(SandboxMetrics::default());
        // A short queue: when every worker is busy, callers wait here (backpressure), they are not
        // queued without bound.
        let pin_artefact = pin.clone();
        let (tx, rx) = crossbeam_channel::bounded::<Job>(config.workers.max(1) * 2);
        let mut drivers = Vec::new();
        let mut worker_pids = Vec::new();
        for index in 0..config.workers.max(1) {
            let pid = Arc::new(AtomicU32::new(0));
            let (command, cap, metrics, slot, pin) = (
                config.worker.clone(),
                config.worker_memory_cap,
                metrics.clone(),
                pid.clone(),
                pin.clone(),
            );
            let jobs = rx.clone();
            let (started, start) = crossbeam_channel::bounded(1);
            // The driver thread spawns its worker itself: PR_SET_PDEATHSIG fires when the *thread*
            // that spawned a process exits, so a worker spawned here would be killed as soon as the
            // caller's thread ends (a test thread, a runtime's blocking-pool thread).
            let handle = std::thread::Builder::new()
                .name(format!("sandbox-worker-{index}"))
                .spawn(
                    move || match Driver::start(command, cap, metrics, slot, pin) {
                        Ok(driver) => {
                            let _ = started.send(Ok(()));
                            driver.run(jobs);
                        }
                        Err(e) => {
                            let _ = started.send(Err(e.to_string()));
                        }
                    },
                )
                .map_err(|e| StartError::Worker {
                    program: config.worker.program.clone(),
                    detail: format!("cannot start its driver thread: {e}"),
                })?;
            start
                .recv()
                .unwrap_or_else(|_| Err("its driver thread ended".into()))
                .map_err(|detail| StartError::Worker {
                    program: config.worker.program.clone(),
                    detail,
                })?;
            drivers.push(handle);
            worker_pids.push(pid);
        }
        Ok(Sandbox {
            config,
            cache,
            wasmedge_version,
            jobs: Some(tx),
            drivers,
            worker_pids,
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            metrics,
            pin: pin_artefact,
            modules: Mutex::new(Vec::new()),
            artefact_use: RwLock::new(()),
        })
    }

    /// The WasmEdge version the workers run.
    pub fn wasmedge_version(&self) -> &str {
        &self.wasmedge_version
    }

    /// The sandbox's metrics.
    pub fn metrics(&self) -> &SandboxMetrics {
        &self.metrics
    }

    /// Process ids of the current worker processes (0 for a slot whose worker is not running).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.worker_pids
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }

    /// Checks, compiles (or finds in the cache) and registers a module, and has a worker load it (a
    /// cached artefact that does not load is compiled again).
    pub fn load(&self, spec: ModuleSpec<'_>) -> Result<ModuleHandle, LoadError> {
        let result = {
            let _in_use = self
                .artefact_use
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.admit_and_compile(&spec)
        };
        if let Err(e) = &result {
            self.metrics
                .refused_modules
                .get_or_create(&metrics::RefusalLabels {
                    reason: e.kind().into(),
                })
                .inc();
        }
        result
    }

    fn admit_and_compile(&self, spec: &ModuleSpec<'_>) -> Result<ModuleHandle, LoadError> {
        let label = spec.label.clone();
        if let Some(expected) = spec.expected_sha256 {
            let actual: [u8; 32] = Sha256::digest(spec.wasm).into();
            if actual != expected {
                return Err(LoadError::DigestMismatch {
                    label,
                    expected: hex::encode(expected),
                    actual: hex::encode(actual),
                });
            }
        }
        // Before admission and compilation: nothing else matters if the answers cannot travel.
        let limits = &spec.limits;
        let batch_items =
            wire::results_per_frame(limits, self.config.max_batch).map_err(|worst_case| {
                LoadError::AnswerExceedsFrame {
                    label: label.clone(),
                    worst_case,
                    max_outputs: limits.max_outputs,
                    max_output_bytes: limits.max_output_bytes,
                    max_state_bytes: limits.max_state_bytes,
                    frame: wire::MAX_FRAME,
                }
            })?;
        let admitted =
            admission::admit(spec.wasm, &spec.limits).map_err(|source| LoadError::Refused {
                label: label.clone(),
                source,
            })?;
        let (artefact, compiled) = self.compile(&label, &admitted.wasm)?;
        let entry = Arc::new(ModuleEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            label,
            artefact,
            memory: admitted.memory,
            limits: spec.limits.clone(),
            config: spec.config.clone(),
            batch_items,
            breaker: Mutex::new(Breaker::new(self.config.breaker)),
        });
        {
            let mut modules = lock(&self.modules);
            modules.retain(|module| module.strong_count() > 0);
            modules.push(Arc::downgrade(&entry));
        }
        // A worker loads the artefact now, so that one that does not load is found here: a cached
        // artefact may be truncated or corrupt (a power loss, a full disk), and is then compiled
        // again, once, instead of being trusted forever.
        match self.load_in_worker(&entry) {
            Err(LoadFailure::Unloadable(detail)) if !compiled => {
                tracing::warn!(
                    module = %entry.label,
                    artefact = %entry.artefact.display(),
                    "the cached artefact does not load ({detail}); compiling the module again"
                );
                self.cache
                    .discard(&entry.artefact)
                    .map_err(|source| LoadError::Compile {
                        label: entry.label.clone(),
                        source,
                    })?;
                self.compile(&entry.label, &admitted.wasm)?;
                self.load_in_worker(&entry)
            }
            checked => checked,
        }
        .map_err(|failure| match failure {
            LoadFailure::Unloadable(detail) => LoadError::Compile {
                label: entry.label.clone(),
                source: CompileError::Unloadable(detail),
            },
            LoadFailure::Unavailable(detail) => LoadError::Unavailable {
                label: entry.label.clone(),
                detail,
            },
        })?;
        Ok(ModuleHandle(entry))
    }

    /// The artefact for `wasm`, and whether it was compiled now (rather than found in the cache).
    fn compile(&self, label: &str, wasm: &[u8]) -> Result<(PathBuf, bool), LoadError> {
        let cached = self.cache.path_for(wasm).exists();
        let artefact = self
            .cache
            .ensure(
                wasm,
                &self.config.worker,
                self.config.compile_timeout,
                self.config.compile_memory_cap,
            )
            .map_err(|source| LoadError::Compile {
                label: label.to_string(),
                source,
            })?;
        if !cached {
            self.metrics.compilations.inc();
        }
        Ok((artefact, !cached))
    }

    /// Has a worker load `entry` (it keeps it loaded for the module's interactions).
    fn load_in_worker(&self, entry: &Arc<ModuleEntry>) -> Result<(), LoadFailure> {
        let shut_down = || LoadFailure::Unavailable("the sandbox is shut down".into());
        let jobs = self.jobs.as_ref().ok_or_else(shut_down)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        jobs.send(Job::Load {
            module: entry.clone(),
            reply,
        })
        .map_err(|_| shut_down())?;
        answer.recv().map_err(|_| shut_down())?
    }

    /// Removes every cached artefact that neither a loaded module (one with a live [`ModuleHandle`])
    /// nor the fault-handler pin uses — those of replaced module versions, of another WasmEdge
    /// version or CPU — and compile directories left behind by a killed process; returns how many
    /// it removed. Call it after a module swap, so that the cache does not grow with every version.
    /// The artefact directory must belong to this sandbox alone: another sandbox's artefacts in it
    /// count as unused.
    pub fn remove_unused_artefacts(&self) -> io::Result<usize> {
        let _exclusive = self
            .artefact_use
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut keep: HashSet<PathBuf> = self.pin.iter().cloned().collect();
        lock(&self.modules).retain(|module| match module.upgrade() {
            Some(entry) => {
                keep.insert(entry.artefact.clone());
                true
            }
            None => false,
        });
        // A compile lasts at most `compile_timeout`; a directory twice as old is a dead one's.
        self.cache
            .remove_unused(&keep, self.config.compile_timeout * 2)
    }

    /// Runs one interaction.
    pub fn run(
        &self,
        module: &ModuleHandle,
        interaction: Interaction,
    ) -> Result<Outcome, InteractionError> {
        self.run_batch(module, vec![interaction])
            .pop()
            .unwrap_or_else(|| {
                Err(InteractionError::Unavailable {
                    detail: "no result".into(),
                })
            })
    }

    /// Runs interactions of one module, each in a fresh instance; one result per interaction, in
    /// order. Batches larger than `max_batch` (or than fit a worker frame) are split across the
    /// workers; an interaction too large for a frame on its own fails `Unavailable` without running.
    /// Interactions of the same device must not be in flight twice if their order matters: the
    /// caller keeps per-device order.
    pub fn run_batch(
        &self,
        module: &ModuleHandle,
        items: Vec<Interaction>,
    ) -> Vec<Result<Outcome, InteractionError>> {
        let entry = &module.0;
        if let Err(retry_in) = lock(&entry.breaker).check(Instant::now()) {
            let error = InteractionError::Quarantined {
                module: entry.label.clone(),
                retry_in_ms: retry_in.as_millis() as u64,
            };
            self.count(entry, std::iter::repeat_n(Err(&error), items.len()));
            return items.iter().map(|_| Err(error.clone())).collect();
        }
        let Some(jobs) = &self.jobs else {
            return unavailable(items.len(), "the sandbox is shut down");
        };
        /// A part of the batch: sent to a driver (its answer, its length) or failed up front.
        enum Pending {
            Sent(
                Option<crossbeam_channel::Receiver<Vec<Result<Outcome, InteractionError>>>>,
                usize,
            ),
            TooLarge(usize),
        }
        let mut pending = Vec::new();
        for part in wire::split(items, entry.batch_items) {
            let items = match part {
                wire::Part::Run(items) => items,
                wire::Part::TooLarge { bytes } => {
                    pending.push(Pending::TooLarge(bytes));
                    continue;
                }
            };
            let (reply, answer) = crossbeam_channel::bounded(1);
            let len = items.len();
            let job = Job::Run {
                module: entry.clone(),
                items,
                reply,
            };
            let answer = jobs.send(job).ok().map(|()| answer);
            if answer.is_some() {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            pending.push(Pending::Sent(answer, len));
        }
        let mut results = Vec::new();
        for part in pending {
            match part {
                Pending::Sent(answer, len) => {
                    let batch = answer.map(|a| {
                        let batch = a.recv().ok();
                        self.in_flight.fetch_sub(1, Ordering::Relaxed);
                        batch
                    });
                    match batch.flatten() {
                        Some(batch) => results.extend(batch),
                        None => {
                            results.extend(unavailable(len, "the sandbox worker thread stopped"))
                        }
                    }
                }
                Pending::TooLarge(bytes) => results.extend(unavailable(
                    1,
                    &format!(
                        "the interaction takes about {bytes} bytes, more than a sandbox worker \
                         frame holds ({} bytes)",
                        wire::MAX_FRAME
                    ),
                )),
            }
        }
        self.count(entry, results.iter().map(|r| r.as_ref()));
        self.record_faults(entry, &results);
        results
    }

    fn count<'a>(
        &self,
        entry: &ModuleEntry,
        results: impl Iterator<Item = Result<&'a Outcome, &'a InteractionError>>,
    ) {
        let mut by_kind: HashMap<&'static str, u64> = HashMap::new();
        for result in results {
            *by_kind
                .entry(result.map_or_else(|e| e.kind(), |_| "ok"))
                .or_default() += 1;
        }
        for (outcome, n) in by_kind {
            self.metrics
                .interactions
                .get_or_create(&metrics::InteractionLabels {
                    module: entry.label.clone(),
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
    }

    fn record_faults(&self, entry: &ModuleEntry, results: &[Result<Outcome, InteractionError>]) {
        let faults = results
            .iter()
            .filter(|r| r.as_ref().is_err_and(|e| e.is_module_fault()))
            .count() as u32;
        let ended_with_success = results
            .iter()
            .rev()
            .find(|r| r.as_ref().map_or_else(|e| e.is_module_fault(), |_| true))
            .is_some_and(|r| r.is_ok());
        if lock(&entry.breaker).record(faults, ended_with_success, Instant::now()) {
            self.metrics
                .quarantines
                .get_or_create(&metrics::ModuleLabels {
                    module: entry.label.clone(),
                })
                .inc();
            tracing::warn!(module = %entry.label, "module quarantined after repeated failures");
        }
    }

    /// Whether a worker is free now (fewer batches in flight than workers): a caller with work that
    /// may be skipped (a shadow run) runs it only then, so that it does not queue before device
    /// traffic.
    pub fn has_idle_worker(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.config.workers.max(1)
    }

    /// Whether a module is quarantined now.
    pub fn is_quarantined(&self, module: &ModuleHandle) -> bool {
        lock(&module.0.breaker).is_open(Instant::now())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Closing the queue ends the driver threads; each kills its worker on the way out.
        self.jobs = None;
        for driver in self.drivers.drain(..) {
            let _ = driver.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a breaker lock leaves consistent data (plain counters): keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unavailable(n: usize, detail: &str) -> Vec<Result<Outcome, InteractionError>> {
    (0..n)
        .map(|_| {
            Err(InteractionError::Unavailable {
                detail: detail.into(),
            })
        })
        .collect()
}

/// Asks a worker binary for its WasmEdge version (and so checks that it runs at all).
fn worker_version(worker: &WorkerCommand) -> Result<String, StartError> {
    let fail = |detail: String| StartError::Worker {
        program: worker.program.clone(),
        detail,
    };
    let output = worker
        .command(None)
        .arg("version")
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        return Err(fail(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
