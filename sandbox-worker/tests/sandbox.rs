//! The sandbox against real modules, real WasmEdge AOT code and real worker processes.
//!
//! Each test starts its own sandbox (two worker processes); the AOT artefact cache is shared by the
//! tests of this binary, as it would be by an agent's restarts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgefleet_device_modules::{hostile_wasm, probe_wasm};
use edgefleet_protocol::ClassLimits;
use edgefleet_sandbox::{
    CompileError, Interaction, InteractionError, LoadError, ModuleHandle, ModuleSpec, Sandbox,
    SandboxConfig, WorkerCommand,
};

fn artefact_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .to_path_buf()
}

fn sandbox() -> Sandbox {
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
    let mut config = SandboxConfig::new(worker, artefact_dir());
    config.breaker.threshold = 3;
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
        .unwrap_or_else(|e| panic!("{label} loads: {e}"))
}

fn message(device: &str, payload: &[u8], state: Option<Vec<u8>>) -> Interaction {
    Interaction {
        device: device.into(),
        channel: "telemetry".into(),
        payload: payload.to_vec(),
        state: state.map(Into::into),
        now_ms: 1_700_000_000_000,
    }
}

fn echo(sandbox: &Sandbox) -> ModuleHandle {
    load(sandbox, "echo", &probe_wasm("echo"), ClassLimits::default())
}

/// The well-behaved module still answers, and answers right.
fn assert_echo_answers(sandbox: &Sandbox, echo: &ModuleHandle) {
    let outcome = sandbox
        .run(echo, message("d1", b"still here", None))
        .expect("echo runs");
    assert_eq!(outcome.commands.len(), 1);
    assert_eq!(outcome.commands[0].as_slice(), b"still here");
}

#[test]
fn nothing_survives_from_one_interaction_to_the_next() {
    let sandbox = sandbox();
    let probe = load(
        &sandbox,
        "leak_probe",
        &probe_wasm("leak_probe"),
        ClassLimits::default(),
    );
    let batch: Vec<_> = (0..200)
        .map(|i| message(&format!("d{i}"), b"", None))
        .collect();
    for result in sandbox.run_batch(&probe, batch) {
        let outcome = result.expect("probe runs");
        assert_eq!(outcome.commands.len(), 1);
        let seen = &outcome.commands[0];
        let global = i32::from_le_bytes(seen[0..4].try_into().unwrap());
        let memory = i32::from_le_bytes(seen[4..8].try_into().unwrap());
        assert_eq!(
            (global, memory),
            (1, 1),
            "a fresh instance starts from zero every time"
        );
    }
}

#[test]
fn a_module_that_defines_its_memory_is_rewritten_and_runs() {
    let sandbox = sandbox();
    let module = load(
        &sandbox,
        "own_memory",
        &probe_wasm("own_memory"),
        ClassLimits::default(),
    );
    let outcome = sandbox
        .run(&module, message("d1", b"hello", None))
        .expect("runs");
    assert_eq!(outcome.commands.len(), 1);
    assert_eq!(outcome.commands[0].as_slice(), b"hello");
}

#[test]
fn device_state_persists_per_device_across_interactions_and_sandbox_restarts() {
    // The sandbox holds no state: the caller keeps each device's state (the agent keeps it in sled)
    // and hands it back with the next message. A new sandbox continues where the old one stopped.
    let mut states: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut counted = |sandbox: &Sandbox, module: &ModuleHandle, device: &'static str| {
        let outcome = sandbox
            .run(module, message(device, b"", states.get(device).cloned()))
            .expect("state_counter runs");
        let state = outcome
            .new_state
            .expect("the counter stores its state")
            .into_vec();
        states.insert(device, state.clone());
        u32::from_le_bytes(outcome.commands[0].as_slice().try_into().unwrap())
    };
    {
        let sandbox = sandbox();
        let module = load(
            &sandbox,
            "state_counter",
            &probe_wasm("state_counter"),
            ClassLimits::default(),
        );
        assert_eq!(counted(&sandbox, &module, "a"), 1);
        assert_eq!(counted(&sandbox, &module, "a"), 2);
        assert_eq!(counted(&sandbox, &module, "b"), 1);
        assert_eq!(counted(&sandbox, &module, "a"), 3);
    }
    let sandbox = sandbox();
    let module = load(
        &sandbox,
        "state_counter",
        &probe_wasm("state_counter"),
        ClassLimits::default(),
    );
    assert_eq!(
        sandbox.metrics().compilations.get(),
        0,
        "the artefact came from the cache"
    );
    assert_eq!(counted(&sandbox, &module, "a"), 4);
    assert_eq!(counted(&sandbox, &module, "b"), 2);
}

/// Runs a hostile module once and returns its error and how long the caller waited.
fn run_hostile(sandbox: &Sandbox, name: &str, limits: ClassLimits) -> (InteractionError, Duration) {
    let module = load(sandbox, name, &hostile_wasm(name), limits);
    let started = Instant::now();
    let result = sandbox.run(&module, message("d1", &[1], None));
    let waited = started.elapsed();
    let error = result.expect_err(&format!("{name} must fail"));
    let counted = sandbox.metrics().interactions_of(name, error.kind());
    assert_eq!(
        counted,
        1,
        "{name}: the failure is counted as {}",
        error.kind()
    );
    (error, waited)
}

#[test]
fn an_endless_loop_is_stopped_at_its_budget_and_its_worker_replaced() {
    let sandbox = sandbox();
    let echo = echo(&sandbox);
    let limits = ClassLimits {
        time_budget_ms: 30,
        ..ClassLimits::default()
    };
    for name in ["infinite_loop", "start_loop"] {
        let restarts = sandbox.metrics().worker_restarts.get();
        let (error, waited) = run_hostile(&sandbox, name, limits.clone());
        assert_eq!(error, InteractionError::Timeout { budget_ms: 30 }, "{name}");
        // Bounded, not a speed check: the caller is not stalled by the module.
        assert!(
            waited < Duration::from_secs(10),
            "{name}: waited {waited:?}"
        );
        assert_eq!(sandbox.metrics().worker_restarts.get(), restarts + 1);
        assert_echo_answers(&sandbox, &echo);
    }
}

#[test]
fn deep_recursion_kills_at_most_a_worker() {
    let sandbox = sandbox();
    let echo = echo(&sandbox);
    let (error, _) = run_hostile(&sandbox, "deep_recursion", ClassLimits::default());
    match &error {
        // Native stack overflow in AOT code: the worker dies of SIGSEGV.
        InteractionError::WorkerCrashed { cause } => assert!(cause.contains("signal"), "{cause}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_echo_answers(&sandbox, &echo);
}

#[test]
fn traps_and_limit_violations_are_typed_and_the_worker_stays() {
    let sandbox = sandbox();
    let echo = echo(&sandbox);
    let pids = sandbox.worker_pids();
    let limits = ClassLimits::default();
    let (error, _) = run_hostile(&sandbox, "trap", limits.clone());
    assert!(matches!(error, InteractionError::Trap { .. }), "{error:?}");
    let (error, _) = run_hostile(&sandbox, "oversized_output", limits.clone());
    assert!(
        matches!(error, InteractionError::OutputLimit { .. }),
        "{error:?}"
    );
    let (error, _) = run_hostile(&sandbox, "too_many_outputs", limits.clone());
    assert!(
        matches!(error, InteractionError::OutputLimit { .. }),
        "{error:?}"
    );
    let (error, _) = run_hostile(&sandbox, "forbidden_topic", limits.clone());
    assert_eq!(
        error,
        InteractionError::ForbiddenTopic {
            topic: "control/reboot".into()
        }
    );
    let (error, _) = run_hostile(&sandbox, "state_bomb", limits.clone());
    assert!(
        matches!(error, InteractionError::StateLimit { limit: 16384, .. }),
        "{error:?}"
    );
    assert_eq!(sandbox.worker_pids(), pids, "no worker was replaced");
    assert_echo_answers(&sandbox, &echo);
}

#[test]
fn every_host_call_with_a_range_outside_memory_traps_before_any_other_check() {
    // The cases of device-modules/hostile/out_of_bounds_host_calls.wat (its header lists them), and
    // the host function each one's trap must name.
    let traps = [
        "log",
        "log",
        "log",
        "log",
        "command",
        "command",
        "command",
        "command",
        "publish topic",
        "publish",
        "publish",
        "publish topic",
        "publish",
        "state_set",
        "state_set",
        "state_set",
        "message",
        "message",
        "message",
        "device_id",
        "channel",
        "config",
        "state_get",
    ];
    let sandbox = sandbox();
    let pids = sandbox.worker_pids();
    let name = "out_of_bounds_host_calls";
    let module = load(&sandbox, name, &hostile_wasm(name), ClassLimits::default());
    let cases: Vec<_> = (0..=traps.len() as u8)
        .map(|case| message("d1", &[case], None))
        .collect();
    let results = sandbox.run_batch(&module, cases);

    let inside = results[0].as_ref().expect("case 0 stays inside memory");
    let texts: Vec<&str> = inside.logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["\u{fffd}".repeat(170).as_str(), ""]);
    assert_eq!(
        inside
            .commands
            .iter()
            .map(|c| c.as_slice())
            .collect::<Vec<_>>(),
        [&[0u8; 4][..]]
    );
    for (case, (result, function)) in results[1..].iter().zip(traps).enumerate() {
        let case = case + 1;
        match result {
            Err(InteractionError::Trap { message }) => assert!(
                message.starts_with(&format!("{function}: ")),
                "case {case}: the trap names {function}: {message}"
            ),
            other => panic!("case {case} ({function}) must trap, got {other:?}"),
        }
    }
    assert_eq!(sandbox.worker_pids(), pids, "a trap costs no worker");
}

#[test]
fn batches_whose_answers_would_overflow_a_worker_frame_are_split_to_fit() {
    // 16 outputs of 128 KiB: each answer is 2 MiB, 40 of them 80 MiB, over the 64 MiB frame.
    let sandbox = sandbox();
    let pids = sandbox.worker_pids();
    let limits = ClassLimits {
        max_outputs: 16,
        max_output_bytes: 128 * 1024,
        time_budget_ms: 2_000,
        ..ClassLimits::default()
    };
    let module = load(&sandbox, "bulk_output", &probe_wasm("bulk_output"), limits);
    let request = [16u32.to_le_bytes(), (128u32 * 1024).to_le_bytes()].concat();
    let results = sandbox.run_batch(
        &module,
        (0..40).map(|_| message("d1", &request, None)).collect(),
    );
    assert_eq!(results.len(), 40);
    for result in results {
        let outcome = result.expect("every answer comes back");
        assert_eq!(outcome.commands.len(), 16);
        assert!(
            outcome
                .commands
                .iter()
                .all(|c| c.len() == 128 * 1024 && c.iter().all(|&b| b == 0xa5))
        );
    }
    assert_eq!(
        sandbox.worker_pids(),
        pids,
        "no worker died of an oversized frame"
    );

    // An interaction that cannot fit a frame on its own fails alone, without reaching a worker.
    let echo = echo(&sandbox);
    let huge = vec![0u8; 65 << 20];
    let results = sandbox.run_batch(
        &echo,
        vec![
            message("d1", b"a", None),
            message("d1", &huge, None),
            message("d1", b"b", None),
        ],
    );
    assert_eq!(results[0].as_ref().unwrap().commands[0].as_slice(), b"a");
    assert!(
        matches!(&results[1], Err(InteractionError::Unavailable { detail }) if detail.contains("frame")),
        "{:?}",
        results[1].as_ref().map(|_| ())
    );
    assert_eq!(results[2].as_ref().unwrap().commands[0].as_slice(), b"b");
    assert_eq!(sandbox.worker_pids(), pids);
}

#[test]
fn limits_whose_answer_cannot_fit_a_worker_frame_are_refused_at_load() {
    let sandbox = sandbox();
    let wasm = probe_wasm("bulk_output");
    let limits = ClassLimits {
        max_outputs: 1024,
        max_output_bytes: 128 * 1024,
        ..ClassLimits::default()
    };
    let error = sandbox
        .load(ModuleSpec {
            label: "bulk_output".into(),
            wasm: &wasm,
            expected_sha256: None,
            limits: limits.clone(),
            config: Vec::new(),
        })
        .expect_err("one answer could be 128 MiB");
    assert!(
        matches!(
            error,
            LoadError::AnswerExceedsFrame {
                max_outputs: 1024,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.kind(), "answer_exceeds_frame");
    let text = error.to_string();
    assert!(
        text.contains("lower max_outputs or max_output_bytes"),
        "{text}"
    );
    // Lowering one of them is enough.
    sandbox
        .load(ModuleSpec {
            label: "bulk_output".into(),
            wasm: &wasm,
            expected_sha256: None,
            limits: ClassLimits {
                max_outputs: 256,
                ..limits
            },
            config: Vec::new(),
        })
        .expect("256 outputs of 128 KiB fit a frame");
}

#[test]
fn a_memory_bomb_gets_no_more_than_its_class_allows() {
    let sandbox = sandbox();
    let limits = ClassLimits {
        max_memory_pages: 8,
        ..ClassLimits::default()
    };
    let module = load(
        &sandbox,
        "memory_bomb",
        &hostile_wasm("memory_bomb"),
        limits,
    );
    for _ in 0..3 {
        let outcome = sandbox
            .run(&module, message("d1", b"", None))
            .expect("the bomb fizzles");
        let pages = u32::from_le_bytes(outcome.commands[0].as_slice().try_into().unwrap());
        assert_eq!(
            pages, 8,
            "memory.grow stops at the class limit, and a grown memory is replaced"
        );
    }
}

#[test]
fn modules_are_refused_at_load_with_a_clear_error() {
    let sandbox = sandbox();
    let refuse = |name: &str| {
        let wasm = hostile_wasm(name);
        let error = sandbox
            .load(ModuleSpec {
                label: name.into(),
                wasm: &wasm,
                expected_sha256: None,
                limits: ClassLimits::default(),
                config: Vec::new(),
            })
            .expect_err(&format!("{name} is refused"));
        assert!(
            matches!(error, LoadError::Refused { .. }),
            "{name}: {error}"
        );
        error.to_string()
    };
    assert!(refuse("unknown_import").contains("launch_missiles"));
    assert!(refuse("wrong_abi").contains('2'));
    refuse("no_abi_section");
    refuse("big_memory");
    refuse("huge_table");
    assert_eq!(
        sandbox.metrics().compilations.get(),
        0,
        "nothing refused reached the compiler"
    );
}

#[test]
fn a_tampered_module_is_refused_before_anything_else() {
    let sandbox = sandbox();
    let wasm = probe_wasm("echo");
    let expected: [u8; 32] = sha2_of(&wasm);
    let mut tampered = wasm.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let error = sandbox
        .load(ModuleSpec {
            label: "echo".into(),
            wasm: &tampered,
            expected_sha256: Some(expected),
            limits: ClassLimits::default(),
            config: Vec::new(),
        })
        .expect_err("tampered module is refused");
    assert!(matches!(error, LoadError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains(&hex(&expected)), "{error}");
    let fine = sandbox.load(ModuleSpec {
        label: "echo".into(),
        wasm: &wasm,
        expected_sha256: Some(expected),
        limits: ClassLimits::default(),
        config: Vec::new(),
    });
    assert!(fine.is_ok());
}

#[test]
fn a_module_that_keeps_failing_is_quarantined_and_others_go_on() {
    let sandbox = sandbox();
    let echo = echo(&sandbox);
    let trap = load(
        &sandbox,
        "trap",
        &hostile_wasm("trap"),
        ClassLimits::default(),
    );
    for _ in 0..3 {
        let error = sandbox.run(&trap, message("d1", b"", None)).unwrap_err();
        assert!(matches!(error, InteractionError::Trap { .. }));
    }
    assert!(sandbox.is_quarantined(&trap));
    let error = sandbox.run(&trap, message("d1", b"", None)).unwrap_err();
    assert!(
        matches!(error, InteractionError::Quarantined { .. }),
        "{error:?}"
    );
    assert_eq!(
        sandbox.metrics().interactions_of("trap", "trap"),
        3,
        "quarantined runs never reach a worker"
    );
    assert_echo_answers(&sandbox, &echo);
}

fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_crash_in_the_middle_of_a_batch_costs_only_that_interaction() {
    // The items before the crashing one lost their results with the worker and the items after it
    // never ran: all are run on the replacement worker, and only the crashing one fails.
    let sandbox = sandbox();
    let module = load(
        &sandbox,
        "crash_on_marker",
        &probe_wasm("crash_on_marker"),
        ClassLimits::default(),
    );
    let payloads: Vec<u8> = vec![1, 2, 3, 0xFF, 5, 6, 0xFF, 8];
    let results = sandbox.run_batch(
        &module,
        payloads.iter().map(|&p| message("d", &[p], None)).collect(),
    );
    assert_eq!(results.len(), payloads.len());
    for (payload, result) in payloads.iter().zip(&results) {
        if *payload == 0xFF {
            assert!(
                matches!(
                    result,
                    Err(InteractionError::WorkerCrashed { .. })
                        | Err(InteractionError::Trap { .. })
                ),
                "{result:?}"
            );
        } else {
            let outcome = result.as_ref().expect("the others succeed");
            assert_eq!(outcome.commands[0].as_slice(), &[*payload]);
        }
    }
}

#[test]
fn a_truncated_cached_artefact_is_compiled_again_when_loaded() {
    // As after a power loss between two runs of the agent: the cache holds a partial artefact.
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
        let mut config = SandboxConfig::new(worker, dir.path());
        config.workers = 1;
        Sandbox::start(config).expect("sandbox starts")
    };
    let wasm = probe_wasm("echo");
    let artefact = {
        let sandbox = start();
        let before = artefacts(dir.path());
        echo(&sandbox);
        let after = artefacts(dir.path());
        let new: Vec<_> = after.difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "one artefact for the echo module: {new:?}");
        new[0].clone()
    };
    let whole = std::fs::read(&artefact).unwrap();
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(&artefact)
        .unwrap();
    truncated.set_len(whole.len() as u64 / 2).unwrap();
    drop(truncated);

    let sandbox = start();
    let module = load(&sandbox, "echo", &wasm, ClassLimits::default());
    assert_eq!(
        sandbox.metrics().compilations.get(),
        1,
        "the truncated artefact was compiled again"
    );
    assert_eq!(
        std::fs::read(&artefact).unwrap().len(),
        whole.len(),
        "and rewritten whole"
    );
    assert_echo_answers(&sandbox, &module);
    // The rewritten artefact is trusted again: a third sandbox compiles nothing.
    drop(sandbox);
    let sandbox = start();
    let module = echo(&sandbox);
    assert_eq!(sandbox.metrics().compilations.get(), 0);
    assert_echo_answers(&sandbox, &module);
}

#[test]
fn unused_artefacts_are_removed_and_those_in_use_stay() {
    let dir = tempfile::tempdir().unwrap();
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
    let mut config = SandboxConfig::new(worker, dir.path());
    config.workers = 1;
    let sandbox = Sandbox::start(config).expect("sandbox starts");
    let pin = artefacts(dir.path());
    assert_eq!(pin.len(), 1, "the fault-handler pin: {pin:?}");
    let v1 = echo(&sandbox);
    let v1_artefacts: Vec<_> = artefacts(dir.path()).difference(&pin).cloned().collect();
    let v2 = load(
        &sandbox,
        "state_counter",
        &probe_wasm("state_counter"),
        ClassLimits::default(),
    );
    let in_use = artefacts(dir.path());
    assert_eq!(in_use.len(), 3);
    // Left over: an artefact of another WasmEdge version, and compile directories of a process
    // killed long ago and of one compiling now.
    let other_version = dir.path().join("00ff-wasmedge0.9.0-abcdef.so");
    std::fs::write(&other_version, b"old").unwrap();
    let stale = dir.path().join(".compile-stale");
    let running = dir.path().join(".compile-running");
    for compile_dir in [&stale, &running] {
        std::fs::create_dir(compile_dir).unwrap();
        std::fs::write(compile_dir.join("module.wasm"), b"\0asm").unwrap();
    }
    let a_day_ago = std::time::SystemTime::now() - Duration::from_secs(24 * 3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(a_day_ago)
        .unwrap();
    let not_ours = dir.path().join("README");
    std::fs::write(&not_ours, b"keep me").unwrap();

    assert_eq!(sandbox.remove_unused_artefacts().unwrap(), 2);
    assert_eq!(
        artefacts(dir.path()),
        in_use,
        "every loaded module keeps its artefact"
    );
    assert!(!stale.exists() && !other_version.exists());
    assert!(running.exists() && not_ours.exists());

    drop(v1);
    assert_eq!(sandbox.remove_unused_artefacts().unwrap(), 1);
    let left = artefacts(dir.path());
    assert!(left.is_disjoint(&v1_artefacts.iter().cloned().collect()));
    assert_eq!(
        left,
        in_use
            .difference(&v1_artefacts.iter().cloned().collect())
            .cloned()
            .collect()
    );
    assert!(left.is_superset(&pin), "the pin stays");
    assert_eq!(sandbox.remove_unused_artefacts().unwrap(), 0);
    // v2 runs, also on a new worker, which loads its artefact from disk again.
    let outcome = sandbox
        .run(&v2, message("d1", b"", None))
        .expect("v2 still runs");
    assert_eq!(outcome.commands[0].as_slice(), 1u32.to_le_bytes());
    let [pid] = sandbox.worker_pids()[..] else {
        panic!("one worker");
    };
    // SAFETY: signals this test's own worker process, by its id.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_until_dead(pid);
    let outcome = sandbox
        .run(&v2, message("d1", b"", None))
        .expect("v2 runs on the replacement worker");
    assert_eq!(sandbox.metrics().worker_restarts.get(), 1);
    assert_eq!(outcome.commands[0].as_slice(), 1u32.to_le_bytes());
}

/// Waits until process `pid` has died (a zombie or gone).
fn wait_until_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat)
                if !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') => {}
            _ => return,
        }
        assert!(Instant::now() < deadline, "worker {pid} did not die");
        std::thread::yield_now();
    }
}

/// The artefacts (`*.so`) in `dir`.
fn artefacts(dir: &std::path::Path) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
        .collect()
}

#[test]
fn workers_outlive_the_thread_that_started_the_sandbox() {
    // PR_SET_PDEATHSIG is sent when the thread that spawned a process exits: workers spawned by a
    // short-lived caller thread (a test thread, a runtime's blocking pool) would die with it.
    let sandbox = std::thread::spawn(sandbox).join().unwrap();
    let pids = sandbox.worker_pids();
    let module = echo(&sandbox);
    for _ in 0..3 {
        assert_echo_answers(&sandbox, &module);
    }
    assert_eq!(sandbox.metrics().worker_restarts.get(), 0);
    assert_eq!(sandbox.worker_pids(), pids);
}

#[test]
fn a_module_that_cannot_be_compiled_in_time_is_refused() {
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
    let dir = tempfile::tempdir().unwrap();
    let mut config = SandboxConfig::new(worker, dir.path());
    config.workers = 1;
    config.compile_timeout = Duration::from_micros(1);
    let sandbox = Sandbox::start(config).expect("sandbox starts");
    let wasm = probe_wasm("echo");
    let error = sandbox
        .load(ModuleSpec {
            label: "echo".into(),
            wasm: &wasm,
            expected_sha256: None,
            limits: ClassLimits::default(),
            config: Vec::new(),
        })
        .expect_err("compilation cannot finish in 1 µs");
    assert!(
        matches!(
            error,
            LoadError::Compile {
                source: CompileError::Timeout(_),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(sandbox.metrics().interactions_of("echo", "ok"), 0);
}

#[test]
fn the_worker_memory_cap_holds_when_a_class_allows_more() {
    // A class that allows 4000 pages (250 MiB) on workers capped at 64 MiB of data: the bomb gets
    // less than it asked for (or its worker dies); either way the caller and other modules go on.
    let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
    let mut config = SandboxConfig::new(worker, artefact_dir());
    config.workers = 1;
    config.worker_memory_cap = 64 << 20;
    let sandbox = Sandbox::start(config).expect("sandbox starts");
    let echo = echo(&sandbox);
    let limits = ClassLimits {
        max_memory_pages: 4000,
        ..ClassLimits::default()
    };
    let bomb = load(
        &sandbox,
        "memory_bomb",
        &hostile_wasm("memory_bomb"),
        limits,
    );
    match sandbox.run(&bomb, message("d1", b"", None)) {
        Ok(outcome) => {
            let pages = u32::from_le_bytes(outcome.commands[0].as_slice().try_into().unwrap());
            assert!(
                pages < 1024,
                "the worker's cap stopped growth at {pages} pages"
            );
        }
        Err(InteractionError::WorkerCrashed { .. } | InteractionError::Trap { .. }) => {}
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert_echo_answers(&sandbox, &echo);
}
