//! The supervisor side of the worker processes: spawning them, talking to them, and replacing them.
//!
//! Each worker process has one driver thread in the caller's process. The driver takes a job (a batch
//! of interactions of one module) from the shared queue, makes sure its worker has the module loaded,
//! sends the batch and waits for the answer while watching the [`Progress`] slot. If the running
//! interaction overruns its module's time budget the worker is killed with SIGKILL; if the worker
//! dies (SIGSEGV from native stack overflow in AOT code, OOM, a runtime bug) its pipe closes. Either
//! way the interaction that was running gets a typed error, the interactions after it in the batch
//! are run again on a fresh worker (interactions are pure, so that is safe), and the worker is
//! replaced. Nothing a module does can stall or kill the caller's process.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::{FdFlags, fcntl_setfd};
use rustix::process::{Resource, Rlimit, Signal, set_parent_process_death_signal, setrlimit};

use super::ModuleEntry;
use super::interaction::{Interaction, InteractionError, Outcome};
use super::metrics::SandboxMetrics;
use super::progress::Progress;
use super::wire::{self, MAX_FRAME, Request, Response};

/// How loading a module into a worker may take at most (the artefact is our own compiler's output).
const LOAD_DEADLINE: Duration = Duration::from_secs(10);
/// How often the watchdog looks at the progress slot while nothing arrives.
const WATCH_INTERVAL: Duration = Duration::from_millis(2);
/// How long a driver spins on its worker's pipe before it sleeps (see `call`).
const SPIN: Duration = Duration::from_micros(50);
/// How long a worker whose pipe closed may take to exit before it is killed.
const REAP_WAIT: Duration = Duration::from_millis(100);
/// Consecutive worker deaths with no interaction finished before a batch is given up.
const MAX_FRUITLESS_RESPAWNS: u32 = 3;

/// How to start a sandbox worker process.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The `edgefleet-sandbox-worker` binary.
    pub program: PathBuf,
    /// A loader command to run the program through, e.g. a private glibc's `ld.so --library-path …`
    /// (set from `EDGEFLEET_SANDBOX_LOADER` by [`WorkerCommand::new`]; see scripts/wasmedge-run).
    pub loader: Vec<OsString>,
}

/// The file name of the worker binary.
const WORKER_BINARY: &str = "edgefleet-sandbox-worker";

impl WorkerCommand {
    /// The worker installed beside the running executable: in its directory, or in the parent
    /// directory, which is where cargo puts binaries for the tests and benchmarks it runs from
    /// `target/<profile>/deps/`. The executable is `argv[0]` when that names a file (a program run
    /// through a loader, as `scripts/wasmedge-run` does, sees the loader as its `current_exe`), else
    /// `current_exe`. When no candidate exists, the first one (so that the start error names where the
    /// worker was expected).
    pub fn beside_current_exe() -> WorkerCommand {
        let argv0 = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .filter(|path| path.is_file());
        let exe = argv0
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_default();
        let candidates: Vec<PathBuf> = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(WORKER_BINARY))
            .collect();
        let program = candidates
            .iter()
            .find(|path| path.is_file())
            .or(candidates.first())
            .cloned()
            .unwrap_or_else(|| PathBuf::from(WORKER_BINARY));
        WorkerCommand::new(program)
    }

    /// The worker at `program`, run through `$EDGEFLEET_SANDBOX_LOADER` when that is set.
    pub fn new(program: impl Into<PathBuf>) -> WorkerCommand {
        let loader = std::env::var_os("EDGEFLEET_SANDBOX_LOADER")
            .map(|l| {
                l.to_string_lossy()
                    .split_whitespace()
                    .map(OsString::from)
                    .collect()
            })
            .unwrap_or_default();
        WorkerCommand {
            program: program.into(),
            loader,
        }
    }

    /// A command for the worker that dies with its parent and, when `cap` is given, has that
    /// resource limit (bytes) set.
    pub(crate) fn command(&self, cap: Option<(Resource, u64)>) -> Command {
        let mut command = match self.loader.split_first() {
            Some((loader, args)) => {
                let mut c = Command::new(loader);
                c.args(args).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                set_parent_process_death_signal(Some(Signal::KILL))?;
                // A crashing module must not make the kernel write a multi-GiB core file.
                setrlimit(
                    Resource::Core,
                    Rlimit {
                        current: Some(0),
                        maximum: Some(0),
                    },
                )?;
                if let Some((resource, bytes)) = cap {
                    let limit = Rlimit {
                        current: Some(bytes),
                        maximum: Some(bytes),
                    };
                    setrlimit(resource, limit)?;
                }
                Ok(())
            });
        }
        command
    }
}

/// A job for a driver.
pub(crate) enum Job {
    /// Run `items` in fresh instances of `module`, answer on `reply`.
    Run {
        module: Arc<ModuleEntry>,
        items: Vec<Interaction>,
        reply: crossbeam_channel::Sender<Vec<Result<Outcome, InteractionError>>>,
    },
    /// Load `module` into the driver's worker, answer on `reply`: how `Sandbox::load` learns that
    /// the artefact actually loads (a cached one may be truncated, e.g. after a power loss).
    Load {
        module: Arc<ModuleEntry>,
        reply: crossbeam_channel::Sender<Result<(), LoadFailure>>,
    },
}

/// Why a [`Job::Load`] did not load the module.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    /// The worker could not load the artefact, or died trying.
    Unloadable(String),
    /// No worker could be started to try.
    Unavailable(String),
}

/// How a worker ended while it was answering a request.
#[derive(Debug)]
enum Death {
    /// The item at `index` ran past `budget`; the worker was killed.
    Timeout { index: u32, budget: Duration },
    /// The worker died on its own, while running item `index` if any.
    Died { index: Option<u32>, cause: String },
}

/// One running worker process.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    progress: Progress,
    buffer: Vec<u8>,
    /// Modules loaded in this process, by id; the weak reference tells when the caller dropped one.
    loaded: HashMap<u64, Weak<ModuleEntry>>,
}

impl WorkerProcess {
    fn spawn(
        command: &WorkerCommand,
        memory_cap: u64,
        pin: Option<&Path>,
    ) -> io::Result<WorkerProcess> {
        let (progress, fd) = Progress::create()?;
        // The data limit caps heap and writable private mappings, but not WasmEdge's PROT_NONE
        // memory reservations, which an address-space limit would break.
        let mut cmd = command.command(Some((Resource::Data, memory_cap)));
        let raw = fd.as_raw_fd();
        let inherited: OwnedFd = fd;
        // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec in the child's copy.
        unsafe {
            cmd.pre_exec(move || {
                fcntl_setfd(std::os::fd::BorrowedFd::borrow_raw(raw), FdFlags::empty())?;
                Ok(())
            });
        }
        cmd.arg("serve").arg("--progress-fd").arg(raw.to_string());
        if let Some(pin) = pin {
            cmd.arg("--pin").arg(pin);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        drop(inherited);
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        rustix::io::ioctl_fionbio(&stdout, true)?;
        Ok(WorkerProcess {
            child,
            stdin,
            stdout,
            progress,
            buffer: Vec::with_capacity(64 * 1024),
            loaded: HashMap::new(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one request and waits for its response. `budget` is the per-item time budget of a
    /// `Run`; `deadline` bounds the whole request when nothing is running (e.g. a `Load`).
    fn call(
        &mut self,
        request: &Request<'_>,
        budget: Duration,
        deadline: Option<Instant>,
    ) -> Result<Response, Death> {
        if let Err(e) = self.stdin.write_all(&wire::frame(request)) {
            return Err(self.died(None, format!("writing to it failed: {e}")));
        }
        // Most answers come within microseconds: spin briefly before sleeping in poll, because
        // waking a sleeping thread (an idle vCPU) costs tens of microseconds here.
        let spin_until = Instant::now() + SPIN;
        while Instant::now() < spin_until {
            if !self.fill()? {
                break;
            }
            if let Some(response) = self.take_frame()? {
                return Ok(response);
            }
            std::hint::spin_loop();
        }
        loop {
            if let Some(response) = self.take_frame()? {
                return Ok(response);
            }
            let running = self.progress.running();
            let wait = match running {
                Some(r) if r.elapsed >= budget => {
                    self.kill();
                    return Err(Death::Timeout {
                        index: r.index,
                        budget,
                    });
                }
                Some(r) => (budget - r.elapsed).min(WATCH_INTERVAL),
                None => WATCH_INTERVAL,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill();
                return Err(Death::Died {
                    index: None,
                    cause: "it did not answer in time".into(),
                });
            }
            let mut fds = [PollFd::new(&self.stdout, PollFlags::IN)];
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: wait.as_nanos().max(100_000) as _,
            };
            if let Err(e) = poll(&mut fds, Some(&timeout))
                && e != rustix::io::Errno::INTR
            {
                return Err(self.died(None, format!("poll failed: {e}")));
            }
            if !self.fill()? {
                let index = self.progress.running().map(|r| r.index);
                return Err(self.died(index, String::new()));
            }
        }
    }

    /// Reads what the pipe has. `Ok(false)` at end of stream (the worker is gone).
    fn fill(&mut self) -> Result<bool, Death> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stdout.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.died(None, format!("reading from it failed: {e}"))),
            }
        }
    }

    /// A complete response frame from the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<Response>, Death> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len > MAX_FRAME {
            return Err(self.died(None, format!("it sent a frame of {len} bytes")));
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let decoded = wire::decode(&self.buffer[4..4 + len]);
        self.buffer.drain(..4 + len);
        decoded
            .map(Some)
            .map_err(|e| self.died(None, format!("it sent an unreadable frame: {e}")))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills (if still alive) and reaps the worker, describing how it ended.
    fn died(&mut self, index: Option<u32>, context: String) -> Death {
        // Its pipe closed: it is exiting. Give it a moment to be reaped with its real cause.
        let until = Instant::now() + REAP_WAIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_micros(100))
                }
                _ => {
                    self.kill();
                    break None;
                }
            }
        };
        let mut cause = status.map(describe_exit).unwrap_or_else(|| "killed".into());
        if !context.is_empty() {
            cause = format!("{cause}; {context}");
        }
        Death::Died { index, cause }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => match Signal::from_named_raw(signal) {
            Some(s) => format!("killed by signal {s:?}"),
            None => format!("killed by signal {signal}"),
        },
        (Some(code), _) => format!("exited with status {code}"),
        _ => status.to_string(),
    }
}

/// The driver of one worker slot: owns the worker process (replacing it when it dies) and runs jobs.
pub(crate) struct Driver {
    command: WorkerCommand,
    memory_cap: u64,
    metrics: Arc<SandboxMetrics>,
    pid: Arc<std::sync::atomic::AtomicU32>,
    /// The compiled fault-handler pin module handed to each worker (see `engine::pin_fault_handlers`).
    pin: Option<PathBuf>,
    worker: Option<WorkerProcess>,
}

impl Driver {
    /// A driver with its worker process started.
    pub(crate) fn start(
        command: WorkerCommand,
        memory_cap: u64,
        metrics: Arc<SandboxMetrics>,
        pid: Arc<std::sync::atomic::AtomicU32>,
        pin: Option<PathBuf>,
    ) -> io::Result<Driver> {
        let mut driver = Driver {
            command,
            memory_cap,
            metrics,
            pid,
            pin,
            worker: None,
        };
        driver.worker()?;
        Ok(driver)
    }

    /// Runs jobs until the queue closes.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Run {
                    module,
                    items,
                    reply,
                } => {
                    let _ = reply.send(self.run_job(&module, &items));
                }
                Job::Load { module, reply } => {
                    let _ = reply.send(self.load_job(&module));
                }
            }
            // A worker that died is replaced after the answer went out, not before, and before the
            // next job arrives.
            let _ = self.worker();
        }
    }

    fn worker(&mut self) -> io::Result<&mut WorkerProcess> {
        if self.worker.is_none() {
            let worker = WorkerProcess::spawn(&self.command, self.memory_cap, self.pin.as_deref())?;
            self.pid
                .store(worker.pid(), std::sync::atomic::Ordering::Relaxed);
            self.worker = Some(worker);
        }
        self.worker
            .as_mut()
            .ok_or_else(|| io::Error::other("no sandbox worker"))
    }

    /// Drops (kills and reaps) the current worker; the next use starts a replacement.
    fn replace_worker(&mut self) {
        self.worker = None;
        self.metrics.worker_restarts.inc();
    }

    fn load_job(&mut self, module: &Arc<ModuleEntry>) -> Result<(), LoadFailure> {
        // A worker may have died before the request for reasons of its own (killed, out of
        // memory): only a replacement dying too blames the artefact.
        let mut cause = String::new();
        for _ in 0..2 {
            match self.ensure_loaded(module) {
                Ok(()) => return Ok(()),
                Err(Attempt::Unloadable(detail)) => return Err(LoadFailure::Unloadable(detail)),
                Err(Attempt::Unavailable(detail)) => return Err(LoadFailure::Unavailable(detail)),
                Err(Attempt::Died(death)) => {
                    self.replace_worker();
                    cause = match death {
                        Death::Died { cause, .. } => cause,
                        Death::Timeout { budget, .. } => format!("it ran past {budget:?}"),
                    };
                }
            }
        }
        Err(LoadFailure::Unloadable(format!(
            "the worker died loading it: {cause}"
        )))
    }

    fn run_job(
        &mut self,
        module: &Arc<ModuleEntry>,
        items: &[Interaction],
    ) -> Vec<Result<Outcome, InteractionError>> {
        let mut results: Vec<Option<Result<Outcome, InteractionError>>> = vec![None; items.len()];
        // Indices still to run, in order. After a worker death the items it had not finished are run
        // again on its replacement; the one it was running when it died gets the error instead.
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut fruitless = 0;
        while !pending.is_empty() {
            let batch: std::borrow::Cow<'_, [Interaction]> = if pending.len() == items.len() {
                std::borrow::Cow::Borrowed(items)
            } else {
                pending.iter().map(|&i| items[i].clone()).collect()
            };
            let failed = match self.run_on_worker(module, &batch) {
                Ok(batch_results) => {
                    for (&i, result) in pending.iter().zip(batch_results) {
                        results[i] = Some(result);
                    }
                    pending.clear();
                    continue;
                }
                Err(Attempt::Unavailable(detail) | Attempt::Unloadable(detail)) => {
                    let error = InteractionError::Unavailable { detail };
                    for &i in &pending {
                        results[i] = Some(Err(error.clone()));
                    }
                    pending.clear();
                    continue;
                }
                Err(Attempt::Died(death)) => {
                    self.replace_worker();
                    match death {
                        Death::Timeout { index, budget } => Some((
                            index,
                            InteractionError::Timeout {
                                budget_ms: budget.as_millis() as u32,
                            },
                        )),
                        Death::Died {
                            index: Some(index),
                            cause,
                        } => Some((index, InteractionError::WorkerCrashed { cause })),
                        Death::Died { index: None, cause } => {
                            fruitless += 1;
                            if fruitless >= MAX_FRUITLESS_RESPAWNS {
                                let error = InteractionError::Unavailable {
                                    detail: format!("sandbox workers keep dying ({cause})"),
                                };
                                for &i in &pending {
                                    results[i] = Some(Err(error.clone()));
                                }
                                pending.clear();
                            }
                            None
                        }
                    }
                }
            };
            if let Some((index, error)) = failed {
                fruitless = 0;
                let at = (index as usize).min(pending.len() - 1);
                results[pending.remove(at)] = Some(Err(error));
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(InteractionError::Unavailable {
                        detail: "no result".into(),
                    })
                })
            })
            .collect()
    }
}

/// Why one attempt at a batch on the current worker did not give results.
enum Attempt {
    Died(Death),
    Unavailable(String),
    /// The worker answered that it could not load the module.
    Unloadable(String),
}

impl Driver {
    /// Makes sure the current worker has `module` loaded (and has forgotten dropped modules).
    fn ensure_loaded(&mut self, module: &Arc<ModuleEntry>) -> Result<(), Attempt> {
        let worker = self
            .worker()
            .map_err(|e| Attempt::Unavailable(format!("cannot start a sandbox worker: {e}")))?;
        let dropped: Vec<u64> = worker
            .loaded
            .iter()
            .filter(|(_, entry)| entry.strong_count() == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in dropped {
            worker.loaded.remove(&id);
            worker
                .call(
                    &Request::Unload { module: id },
                    LOAD_DEADLINE,
                    Some(Instant::now() + LOAD_DEADLINE),
                )
                .map_err(Attempt::Died)?;
        }
        if !worker.loaded.contains_key(&module.id) {
            let request = Request::Load {
                module: module.id,
                artefact: module.artefact.clone(),
                memory: module.memory,
                limits: module.limits.clone(),
                config: module.config.clone(),
            };
            match worker
                .call(
                    &request,
                    LOAD_DEADLINE,
                    Some(Instant::now() + LOAD_DEADLINE),
                )
                .map_err(Attempt::Died)?
            {
                Response::Loaded => {
                    worker.loaded.insert(module.id, Arc::downgrade(module));
                }
                Response::LoadFailed { error } => {
                    return Err(Attempt::Unloadable(format!(
                        "the worker could not load the module: {error}"
                    )));
                }
                other => {
                    return Err(Attempt::Unavailable(format!(
                        "unexpected answer to Load: {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs `items` on the current worker, loading `module` into it first if needed.
    fn run_on_worker(
        &mut self,
        module: &Arc<ModuleEntry>,
        items: &[Interaction],
    ) -> Result<Vec<Result<Outcome, InteractionError>>, Attempt> {
        self.ensure_loaded(module)?;
        let worker = self
            .worker()
            .map_err(|e| Attempt::Unavailable(format!("cannot start a sandbox worker: {e}")))?;
        let budget = Duration::from_millis(u64::from(module.limits.time_budget_ms));
        let request = Request::Run {
            module: module.id,
            items: std::borrow::Cow::Borrowed(items),
        };
        match worker.call(&request, budget, None).map_err(Attempt::Died)? {
            Response::Ran { results } if results.len() == items.len() => Ok(results),
            other => Err(Attempt::Unavailable(format!(
                "unexpected answer to Run: {other:?}"
            ))),
        }
    }
}
