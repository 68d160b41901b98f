//! The sandbox benchmark: prints one table comparing, in one run, the thermostat handler as native
//! Rust, on a warm WasmEdge instance, on a fresh instance per interaction (in-process and through the
//! sandbox's worker processes), and on wasmtime's pooling allocator (the anchor, in its own process);
//! a compute-bound kernel native vs. AOT; how fast hostile modules are stopped and workers replaced;
//! and what an idle worker costs in memory.
//!
//! Run it with `scripts/bench.sh` (which builds the wasmtime anchor first), or
//! `cargo bench -p edge-agent --bench sandbox` for everything but the anchor.
//! `EDGEFLEET_BENCH_SECONDS` scales the measuring time (default 2 s per row).

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_device_modules::{Handler, handler_wasm, hostile_wasm, probe_wasm};
use edgefleet_guest::cbor;
use edgefleet_protocol::ClassLimits;
use edgefleet_sandbox::{
    Interaction, InteractionError, ModuleHandle, ModuleSpec, Outcome, Sandbox, SandboxConfig,
    WorkerCommand, admission,
};
use edgefleet_sandbox_worker::engine::{self, LoadedModule};
use edgefleet_thermostat::{Mode, Reading, State};

/// One row of the table.
struct Row {
    name: String,
    median_ns: f64,
    p99_ns: f64,
    note: String,
}

/// Times `f` call by call for about `time`, after a warm-up; returns (median, p99) in ns.
fn per_call(time: Duration, mut f: impl FnMut()) -> (f64, f64) {
    let warm_until = Instant::now() + time / 10;
    while Instant::now() < warm_until {
        f();
    }
    let mut samples = Vec::with_capacity(1 << 20);
    let until = Instant::now() + time;
    while Instant::now() < until && samples.len() < 5_000_000 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_nanos() as f64);
    }
    percentiles(&mut samples)
}

fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn seconds() -> Duration {
    let s: f64 = std::env::var("EDGEFLEET_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

fn encode<T: edgefleet_guest::minicbor::Encode<()>>(value: &T) -> Vec<u8> {
    let mut buf = [0u8; 256];
    cbor::to_slice(value, &mut buf).expect("fits").to_vec()
}

/// The benchmark's thermostat interaction: a steady reading in heating mode (the common case: one
/// command, no state change, no telemetry).
struct Thermostat {
    message: Vec<u8>,
    state: Vec<u8>,
    expected_command: Vec<u8>,
}

impl Thermostat {
    fn new() -> Thermostat {
        let message = encode(&Reading {
            temp_c: 19.0,
            setpoint_c: None,
        });
        let state = encode(&State { mode: Mode::Heat });
        let expected_command = native_thermostat(&message, &state);
        Thermostat {
            message,
            state,
            expected_command,
        }
    }

    fn interaction(&self) -> Interaction {
        Interaction {
            device: "t-1".into(),
            channel: "telemetry".into(),
            payload: self.message.clone(),
            state: Some(self.state.clone().into()),
            now_ms: 1_700_000_000_000,
        }
    }

    fn check(&self, result: &Result<Outcome, InteractionError>) {
        let outcome = result.as_ref().expect("the thermostat runs");
        assert_eq!(outcome.commands.len(), 1);
        assert_eq!(
            outcome.commands[0].as_slice(),
            self.expected_command.as_slice()
        );
    }
}

/// (a) The same logic as the module's glue, natively: decode the inputs, decide, encode the command.
fn native_thermostat(message: &[u8], state: &[u8]) -> Vec<u8> {
    let outcome = edgefleet_thermostat::handle(message, &[], Some(state)).expect("valid inputs");
    let mut out = [0u8; 64];
    let command = cbor::to_slice(&outcome.command, &mut out).expect("fits");
    command.to_vec()
}

fn compile_in_process(wasm: &[u8], dir: &std::path::Path, name: &str) -> LoadedModule {
    let limits = ClassLimits::default();
    let admitted = admission::admit(wasm, &limits).expect("admitted");
    let artefact = dir.join(format!("{name}.so"));
    engine::compile(&admitted.wasm, &artefact).expect("compiles");
    LoadedModule::load(&artefact, admitted.memory, limits, Vec::new()).expect("loads")
}

fn start_sandbox(workers: usize, dir: &std::path::Path) -> Sandbox {
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
    let mut config = SandboxConfig::new(worker, dir);
    config.workers = workers;
    Sandbox::start(config).expect("sandbox starts")
}

fn load(sandbox: &Sandbox, label: &str, wasm: &[u8], limits: ClassLimits) -> ModuleHandle {
    sandbox
        .load(ModuleSpec {
            label: label.into(),
            wasm,
            expected_sha256: None,
            limits,
            config: Vec::new(),
        })
        .expect("loads")
}

/// Interactions per second through `run_batch` with `callers` threads submitting batches of `batch`.
fn throughput(
    sandbox: &Arc<Sandbox>,
    module: &ModuleHandle,
    t: &Arc<Thermostat>,
    callers: usize,
    batch: usize,
    time: Duration,
) -> f64 {
    let started = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (sandbox, module, t) = (sandbox.clone(), module.clone(), t.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while started.elapsed() < time {
                    let items = (0..batch).map(|_| t.interaction()).collect();
                    for result in sandbox.run_batch(&module, items) {
                        t.check(&result);
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let done: u64 = threads
        .into_iter()
        .map(|h| h.join().expect("caller thread"))
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    engine::quiet_logs();
    let time = seconds();
    let dir = tempfile::tempdir().expect("temp dir");
    let thermostat_wasm = handler_wasm(Handler::Thermostat).expect("thermostat builds");
    let meter_wasm = handler_wasm(Handler::Meter).expect("meter builds");
    let t = Arc::new(Thermostat::new());
    let mut rows = Vec::new();
    eprintln!("measuring ~{time:?} per row");

    // (a) native
    let (m, p) = per_call(time, || {
        black_box(native_thermostat(
            black_box(&t.message),
            black_box(&t.state),
        ));
    });
    rows.push(Row {
        name: "(a) thermostat, native Rust".into(),
        median_ns: m,
        p99_ns: p,
        note: "decode + decide + encode".into(),
    });
    let native_median = m;

    // (b) warm instance and (c) fresh instance per interaction, in this process: first as WasmEdge
    // behaves out of the box, then with the fault-handler pin that every worker applies.
    let mut module = compile_in_process(&thermostat_wasm, dir.path(), "thermostat");
    let interaction = t.interaction();
    let mut fresh_m = 0.0;
    for pinned in [false, true] {
        if pinned {
            let pin = dir.path().join("pin.so");
            engine::compile(edgefleet_sandbox::PIN_MODULE, &pin).expect("pin compiles");
            engine::pin_fault_handlers(&pin).expect("pin holds");
        }
        let how = if pinned {
            "pinned, as in a worker"
        } else {
            "unpinned"
        };
        {
            let mut warm = module.warm_instance().expect("instantiates");
            t.check(&warm.run(&interaction));
            let (m, p) = per_call(time, || {
                black_box(warm.run(black_box(&interaction))).ok();
            });
            rows.push(Row {
                name: format!("(b) WasmEdge AOT, one warm instance reused, {how}"),
                median_ns: m,
                p99_ns: p,
                note: "not isolated: the baseline".into(),
            });
        }
        t.check(&module.run(&interaction));
        let (m, p) = per_call(time, || {
            black_box(module.run(black_box(&interaction))).ok();
        });
        rows.push(Row {
            name: format!("(c) fresh instance per interaction, {how}"),
            median_ns: m,
            p99_ns: p,
            note: "zero memory + instantiate + call + delete".into(),
        });
        fresh_m = m;
    }
    drop(module);

    // (c) through the sandbox API
    let sandbox = Arc::new(start_sandbox(2, dir.path()));
    let handle = load(
        &sandbox,
        "thermostat",
        &thermostat_wasm,
        ClassLimits::default(),
    );
    t.check(&sandbox.run(&handle, t.interaction()));
    let (m, p) = per_call(time, || {
        t.check(&sandbox.run(&handle, t.interaction()));
    });
    rows.push(Row {
        name: "(c) sandbox API, one interaction at a time (round trip)".into(),
        median_ns: m,
        p99_ns: p,
        note: "2 workers, 1 caller".into(),
    });
    let mut throughputs = Vec::new();
    for (callers, batch) in [(1, 1), (2, 1), (2, 64), (4, 64)] {
        let per_sec = throughput(&sandbox, &handle, &t, callers, batch, time);
        throughputs.push((callers, batch, per_sec));
    }

    // (d) the wasmtime anchor, in its own process
    let anchor = run_anchor(&thermostat_wasm, &t, dir.path());

    // (e) compute-bound: meter statistics over a 1,000-sample window
    let mut meter = compile_in_process(&meter_wasm, dir.path(), "meter");
    let rounds = 100;
    let (native_m, native_p) = per_call(time, || {
        black_box(edgefleet_meter::bench_stats(black_box(rounds)));
    });
    let (aot_m, aot_p) = {
        let mut warm = meter.warm_instance().expect("instantiates");
        let expected = edgefleet_meter::bench_stats(rounds);
        assert_eq!(
            warm.call_f64("edgefleet_bench_stats", rounds as i32)
                .unwrap()
                .to_bits(),
            expected.to_bits()
        );
        per_call(time, || {
            black_box(warm.call_f64("edgefleet_bench_stats", black_box(rounds as i32))).ok();
        })
    };
    drop(meter);

    let containment = measure_containment(dir.path());
    let memory = measure_memory(dir.path());

    print_report(
        &rows,
        native_median,
        fresh_m,
        &throughputs,
        anchor.as_deref(),
        (native_m, native_p, aot_m, aot_p, rounds),
        &containment,
        &memory,
    );
}

/// Runs the wasmtime anchor binary named by `WASMTIME_ANCHOR`, returning its JSON line.
fn run_anchor(wasm: &[u8], t: &Thermostat, dir: &std::path::Path) -> Option<String> {
    let program = std::env::var_os("WASMTIME_ANCHOR")?;
    let module = dir.join("thermostat.wasm");
    std::fs::write(&module, wasm).expect("write module");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    eprintln!("running the wasmtime anchor {program:?}");
    let output = Command::new(program)
        .arg("--module")
        .arg(&module)
        .args(["--message-hex", &hex(&t.message)])
        .args(["--config-hex", ""])
        .args(["--state-hex", &hex(&t.state)])
        .args(["--expect-command-hex", &hex(&t.expected_command)])
        .args(["--iterations", "300000", "--warmup", "30000"])
        .output()
        .expect("the anchor runs");
    assert!(
        output.status.success(),
        "anchor failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// How long hostile modules run past their budget, and how soon a replaced worker answers.
struct Containment {
    /// (module, budget ms, median overshoot ms, max overshoot ms)
    overruns: Vec<(String, u32, f64, f64)>,
    /// Deep recursion: crash detected → result, and → the replacement worker answering.
    crash_to_result_ms: f64,
    crash_to_next_answer_ms: f64,
}

fn measure_containment(dir: &std::path::Path) -> Containment {
    eprintln!("measuring containment");
    // One worker, so that "the next answer" comes from the replacement.
    let sandbox = start_sandbox(1, dir);
    let echo = load(
        &sandbox,
        "echo",
        &probe_wasm("echo"),
        ClassLimits::default(),
    );
    let msg = || Interaction {
        device: "d".into(),
        channel: "telemetry".into(),
        payload: b"x".to_vec(),
        state: None,
        now_ms: 0,
    };
    let mut overruns = Vec::new();
    for (name, budget) in [
        ("infinite_loop", 20),
        ("start_loop", 20),
        ("infinite_loop", 100),
    ] {
        let limits = ClassLimits {
            time_budget_ms: budget,
            ..ClassLimits::default()
        };
        let module = load(&sandbox, name, &hostile_wasm(name), limits);
        let mut over = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let result = sandbox.run(&module, msg());
            assert!(
                matches!(result, Err(InteractionError::Timeout { .. })),
                "{result:?}"
            );
            over.push(started.elapsed().as_secs_f64() * 1e3 - f64::from(budget));
            assert!(sandbox.run(&echo, msg()).is_ok());
        }
        let max = over.iter().cloned().fold(f64::MIN, f64::max);
        let (median, _) = percentiles(&mut over);
        overruns.push((name.to_string(), budget, median, max));
    }
    let crash = load(
        &sandbox,
        "deep_recursion",
        &hostile_wasm("deep_recursion"),
        ClassLimits::default(),
    );
    let mut to_result = Vec::new();
    let mut to_answer = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let result = sandbox.run(&crash, msg());
        assert!(
            matches!(result, Err(InteractionError::WorkerCrashed { .. })),
            "{result:?}"
        );
        to_result.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(sandbox.run(&echo, msg()).is_ok());
        to_answer.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Containment {
        overruns,
        crash_to_result_ms: percentiles(&mut to_result).0,
        crash_to_next_answer_ms: percentiles(&mut to_answer).0,
    }
}

/// Memory of one idle worker with the four handler modules loaded, from /proc/<pid>/smaps_rollup.
fn measure_memory(dir: &std::path::Path) -> Vec<(String, u64)> {
    eprintln!("measuring worker memory");
    let sandbox = start_sandbox(1, dir);
    let mut handles = Vec::new();
    for handler in Handler::all() {
        let wasm = handler_wasm(handler).expect("builds");
        let handle = load(&sandbox, handler.name(), &wasm, ClassLimits::default());
        // Any answer (a handler may reject this payload) means the worker loaded the module.
        let _ = sandbox.run(
            &handle,
            Interaction {
                device: "d".into(),
                channel: "telemetry".into(),
                payload: vec![0xa0],
                state: None,
                now_ms: 0,
            },
        );
        handles.push(handle);
    }
    std::thread::sleep(Duration::from_millis(100));
    let pid = sandbox.worker_pids()[0];
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    [
        "Rss",
        "Pss",
        "Private_Dirty",
        "Shared_Clean",
        "Private_Clean",
    ]
    .iter()
    .filter_map(|key| {
        rollup
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse().ok())
                    .map(|kb| (key.to_string(), kb))
            })
    })
    .collect()
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    rows: &[Row],
    native_median: f64,
    fresh_median: f64,
    throughputs: &[(usize, usize, f64)],
    anchor: Option<&str>,
    (native_m, native_p, aot_m, aot_p, rounds): (f64, f64, f64, f64, u32),
    containment: &Containment,
    memory: &[(String, u64)],
) {
    println!("\n### Thermostat interaction (steady reading: decode, decide, one command)\n");
    println!("| variant | median | p99 | × native | note |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0}× | {} |",
            r.name,
            fmt_ns(r.median_ns),
            fmt_ns(r.p99_ns),
            r.median_ns / native_median,
            r.note
        );
    }
    match anchor.and_then(parse_anchor) {
        Some(Anchor { engine, variants }) => {
            for (name, median, p99) in &variants {
                println!(
                    "| (d) {engine}, {name} | {} | {} | {:.0}× | own process |",
                    fmt_ns(*median),
                    fmt_ns(*p99),
                    median / native_median
                );
            }
            let pooled = variants
                .iter()
                .find(|(n, _, _)| n.contains("keep_resident"));
            if let Some((_, median, _)) = pooled {
                println!(
                    "\nfresh instance as in a worker vs. the wasmtime anchor (pooling + keep_resident): {:.2}×",
                    fresh_median / median
                );
            }
        }
        None => println!(
            "| (d) wasmtime anchor | — | — | — | not run: scripts/bench.sh builds and runs it |"
        ),
    }
    println!(
        "\n### Throughput through the sandbox API (fresh instance per interaction, 2 workers)\n"
    );
    println!("| callers | batch | interactions/s |");
    println!("|---:|---:|---:|");
    for (callers, batch, per_sec) in throughputs {
        println!("| {callers} | {batch} | {per_sec:.0} |");
    }
    println!("\n### Compute-bound: meter statistics over 1,000 samples × {rounds} rounds\n");
    println!("| variant | median | p99 | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| (e) native Rust | {} | {} | 1.00 |",
        fmt_ns(native_m),
        fmt_ns(native_p)
    );
    println!(
        "| (e) WasmEdge AOT, warm instance | {} | {} | {:.2} |",
        fmt_ns(aot_m),
        fmt_ns(aot_p),
        aot_m / native_m
    );
    println!("\n### Containment (one worker)\n");
    println!("| hostile module | budget | median past budget | max past budget |");
    println!("|---|---:|---:|---:|");
    for (name, budget, median, max) in &containment.overruns {
        println!("| {name} | {budget} ms | {median:.1} ms | {max:.1} ms |");
    }
    println!(
        "\ndeep_recursion (worker dies of SIGSEGV): result after {:.1} ms; the replacement worker answered {:.1} ms after the crashing call started (medians of 5)",
        containment.crash_to_result_ms, containment.crash_to_next_answer_ms
    );
    println!("\n### Idle worker with the four handler modules loaded (/proc/<pid>/smaps_rollup)\n");
    println!(
        "| {} |",
        memory
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|{}", "---:|".repeat(memory.len()));
    println!(
        "| {} |",
        memory
            .iter()
            .map(|(_, kb)| format!("{:.1} MB", *kb as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1000.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{:.2} µs", ns / 1000.0)
    }
}

/// What the anchor reported: its engine and (variant, median ns, p99 ns) per variant.
struct Anchor {
    engine: String,
    variants: Vec<(String, f64, f64)>,
}

fn parse_anchor(json: &str) -> Option<Anchor> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let engine = value.get("engine")?.as_str()?.to_string();
    let variants = value
        .get("variants")?
        .as_array()?
        .iter()
        .filter_map(|v| {
            Some((
                v.get("name")?.as_str()?.to_string(),
                v.get("median_ns")?.as_f64()?,
                v.get("p99_ns")?.as_f64()?,
            ))
        })
        .collect();
    Some(Anchor { engine, variants })
}
