//! Pre-flight test vectors: a HandlerModule's own cases (`spec.testVectors`), run in the real
//! sandbox before any node receives the module, and compared with what they expect.
//!
//! The controller runs them after admission and before the module is ready (`modules::admit`), so
//! a version whose cases fail is refused and never distributed; `edgefleet module test` runs the
//! same code locally. Both go through [`Runner`], which starts its sandbox (one worker process)
//! only when a module first declares vectors: a controller whose modules declare none never starts
//! a worker.
//!
//! Payloads are JSON in the spec and CBOR on the wire, encoded as a class config is
//! (`fleet::config_cbor`). What the handler produced is decoded back to JSON and compared by value
//! (`compare`, pure): objects by keys, lists in order, numbers by value (`21` equals `21.0`), and
//! a float the handler wrote in single precision by its shortest decimal (an `f32` 19.3 equals the
//! vector's 19.3).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgefleet_protocol::manifest::MAX_MODULE_BYTES;
use edgefleet_protocol::{ClassLimits, Sha256Digest, codec};
use edgefleet_sandbox::{
    BreakerConfig, Interaction, InteractionError, LoadError, ModuleHandle, ModuleSpec, Outcome,
    Sandbox, SandboxConfig, StartError, WorkerCommand,
};
use serde_json::Value;

use crate::resources::{TestExpectation, TestVector};

/// The device id every vector runs as.
const DEVICE: &str = "test-vector";

/// The clock every vector sees (`now_ms`): 2026-01-01T00:00:00Z, fixed so that a case gives the
/// same answer every time it runs.
const NOW_MS: i64 = 1_767_225_600_000;

/// Longest failure message a [`Report`] gives (a condition message, an Event note).
const MAX_FAILURE_CHARS: usize = 4000;

/// Verdicts remembered (a file module is resolved again on every folder change).
const MAX_VERDICTS: usize = 64;

/// Why vectors could not be run at all (as opposed to a case failing).
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The sandbox did not start (no worker binary, no WasmEdge, an unusable artefact folder).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The sandbox could not run them now (no worker could load or run the module).
    #[error("the sandbox could not run the test vectors now: {0}")]
    Unavailable(String),
}

/// One case's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What differed from the expectation, or why the handler produced nothing; `None`: passed.
    pub difference: Option<String>,
}

/// The verdicts of a module's vectors, in the order declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One per vector.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.difference.is_none()).count()
    }

    /// `None` if every case passed; else, for people, what failed:
    /// `1 of 3 test vectors failed: case "heats": commands: expected [..], got []`.
    pub fn failure(&self) -> Option<String> {
        let failed: Vec<String> = self
            .cases
            .iter()
            .filter_map(|c| Some(format!("case {:?}: {}", c.name, c.difference.as_ref()?)))
            .collect();
        if failed.is_empty() {
            return None;
        }
        let text = format!(
            "{} of {} test vectors failed: {}",
            failed.len(),
            self.cases.len(),
            failed.join("; ")
        );
        Some(cut(text, MAX_FAILURE_CHARS))
    }
}

fn cut(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Runs test vectors in a sandbox of its own, started on first use.
pub struct Runner {
    config: SandboxConfig,
    sandbox: Mutex<Option<Arc<Sandbox>>>,
    /// Reports by (module binary, vectors): the same module is not run again.
    verdicts: Mutex<HashMap<Sha256Digest, Report>>,
}

impl Runner {
    /// A runner whose sandbox starts `worker` (one process) and caches artefacts in
    /// `artefact_dir`.
    pub fn new(worker: WorkerCommand, artefact_dir: impl Into<PathBuf>) -> Runner {
        let mut config = SandboxConfig::new(worker, artefact_dir);
        // One worker: vectors are few and rare, the controller stays light.
        config.workers = 1;
        // Every case must run, even after others trapped: no quarantine.
        config.breaker = BreakerConfig {
            threshold: u32::MAX,
            ..BreakerConfig::default()
        };
        Runner {
            config,
            sandbox: Mutex::new(None),
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `vectors` against the module `wasm` (already admitted) and says how each case went.
    /// Blocks: call it off the async threads.
    pub fn run(
        &self,
        label: &str,
        wasm: &[u8],
        vectors: &[TestVector],
    ) -> Result<Report, VectorError> {
        let key = verdict_key(wasm, vectors);
        if let Some(report) = lock(&self.verdicts).get(&key) {
            return Ok(report.clone());
        }
        let sandbox = self.sandbox()?;
        let mut handles: HashMap<Vec<u8>, Result<ModuleHandle, String>> = HashMap::new();
        let mut report = Report::default();
        for vector in vectors {
            let difference = run_case(&sandbox, &mut handles, label, wasm, vector)?;
            report.cases.push(CaseResult {
                name: vector.name.clone(),
                difference,
            });
        }
        drop(handles);
        // The controller keeps no module loaded: its artefacts need not stay on disk.
        if let Err(e) = sandbox.remove_unused_artefacts() {
            tracing::warn!(error = %e, "cannot remove test vector artefacts");
        }
        let mut verdicts = lock(&self.verdicts);
        if verdicts.len() >= MAX_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key, report.clone());
        Ok(report)
    }

    fn sandbox(&self) -> Result<Arc<Sandbox>, VectorError> {
        let mut sandbox = lock(&self.sandbox);
        if let Some(sandbox) = &*sandbox {
            return Ok(sandbox.clone());
        }
        // Not remembered when it fails: the next module tries again (the binary may be installed
        // by then).
        let started = Arc::new(Sandbox::start(self.config.clone())?);
        tracing::info!(
            worker = %self.config.worker.program.display(),
            wasmedge = started.wasmedge_version(),
            "sandbox for test vectors started"
        );
        *sandbox = Some(started.clone());
        Ok(started)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn verdict_key(wasm: &[u8], vectors: &[TestVector]) -> Sha256Digest {
    let mut input = Sha256Digest::of(wasm).to_string().into_bytes();
    input.extend(serde_json::to_vec(vectors).unwrap_or_default());
    Sha256Digest::of(&input)
}

/// The limits vectors run under: the widest a class can set (the module is admitted under them),
/// every topic allowed (the vector says which it expects), a generous time budget for a cold worker.
fn limits() -> ClassLimits {
    ClassLimits {
        max_memory_pages: 4096,
        max_module_bytes: MAX_MODULE_BYTES as u32,
        time_budget_ms: 1000,
        allowed_topics: vec!["#".into()],
        ..ClassLimits::default()
    }
}

/// One case: `Ok(None)` passed, `Ok(Some(difference))` failed, `Err` could not be run.
fn run_case(
    sandbox: &Sandbox,
    handles: &mut HashMap<Vec<u8>, Result<ModuleHandle, String>>,
    label: &str,
    wasm: &[u8],
    vector: &TestVector,
) -> Result<Option<String>, VectorError> {
    let config = match crate::fleet::config_cbor(vector.config.as_ref()) {
        Ok(config) => config,
        Err(problem) => return Ok(Some(format!("config: {}", problem.message))),
    };
    // One load per distinct config (the config is part of a loaded module).
    let handle = match handles.get(&config) {
        Some(handle) => handle.clone(),
        None => {
            let loaded = match sandbox.load(ModuleSpec {
                label: label.to_string(),
                wasm,
                expected_sha256: None,
                limits: limits(),
                config: config.clone(),
            }) {
                Ok(handle) => Ok(handle),
                Err(e @ LoadError::Unavailable { .. }) => {
                    return Err(VectorError::Unavailable(e.to_string()));
                }
                Err(e) => Err(format!("the module did not load: {e}")),
            };
            handles.insert(config, loaded.clone());
            loaded
        }
    };
    let handle = match handle {
        Ok(handle) => handle,
        Err(why) => return Ok(Some(why)),
    };
    let state = vector.state.as_ref().map(codec::encode);
    let interaction = Interaction {
        device: DEVICE.to_string(),
        channel: vector.channel.clone(),
        payload: codec::encode(&vector.message),
        state: state.clone().map(Into::into),
        now_ms: NOW_MS,
    };
    match sandbox.run(&handle, interaction) {
        Ok(outcome) => Ok(compare(&vector.expect, state.as_deref(), &outcome)),
        Err(InteractionError::Unavailable { detail }) => Err(VectorError::Unavailable(detail)),
        Err(e) => Ok(Some(e.to_string())),
    }
}

/// What differs between `expect` and an interaction's `outcome` (`None`: nothing), for people:
/// `commands: expected [{"heat":true}], got []`. The state is checked only when expected; a handler
/// that set none leaves `state_before`.
fn compare(
    expect: &TestExpectation,
    state_before: Option<&[u8]>,
    outcome: &Outcome,
) -> Option<String> {
    let mut differences = Vec::new();
    let commands: Vec<Got> = outcome.commands.iter().map(|c| Got::decode(c)).collect();
    let same_commands = expect.commands.len() == commands.len()
        && expect.commands.iter().zip(&commands).all(|(e, g)| g.is(e));
    if !same_commands {
        differences.push(format!(
            "commands: expected {}, got {}",
            list(expect.commands.iter().map(compact)),
            list(commands.iter().map(Got::to_string))
        ));
    }
    let upstream: Vec<(&str, Got)> = outcome
        .upstream
        .iter()
        .map(|u| (u.topic.as_str(), Got::decode(&u.payload)))
        .collect();
    let same_upstream = expect.upstream.len() == upstream.len()
        && expect
            .upstream
            .iter()
            .zip(&upstream)
            .all(|(e, (topic, payload))| e.topic == *topic && payload.is(&e.payload));
    if !same_upstream {
        differences.push(format!(
            "upstream: expected {}, got {}",
            list(
                expect
                    .upstream
                    .iter()
                    .map(|e| message(&e.topic, &compact(&e.payload)))
            ),
            list(upstream.iter().map(|(t, p)| message(t, &p.to_string())))
        ));
    }
    if let Some(expected) = &expect.state {
        let after = outcome.new_state.as_ref().map(|s| &s[..]).or(state_before);
        let got = after.map(Got::decode);
        if !got.as_ref().is_some_and(|g| g.is(expected)) {
            differences.push(format!(
                "state: expected {}, got {}",
                compact(expected),
                got.map_or_else(|| "none".to_string(), |g| g.to_string())
            ));
        }
    }
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// A payload the handler produced, decoded.
enum Got {
    Json(Value),
    /// Not CBOR that JSON can hold (or not CBOR at all): a description.
    Raw(String),
}

impl Got {
    fn decode(bytes: &[u8]) -> Got {
        match codec::decode::<Value>(bytes, usize::MAX) {
            Ok(value) => Got::Json(single_precision_as_written(value)),
            Err(e) => Got::Raw(format!(
                "<{} bytes that are not JSON-like CBOR ({e}): {}{}>",
                bytes.len(),
                hex::encode(&bytes[..bytes.len().min(32)]),
                if bytes.len() > 32 { "…" } else { "" }
            )),
        }
    }

    fn is(&self, expected: &Value) -> bool {
        matches!(self, Got::Json(got) if same(expected, got))
    }
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Got::Json(value) => f.write_str(&compact(value)),
            Got::Raw(description) => f.write_str(description),
        }
    }
}

/// Floats that are exactly an `f32` (what a handler wrote in single precision, widened on
/// decoding: 19.3 comes back as 19.299999237060547) as the shortest decimal of that `f32`, the
/// number the handler's author meant; other values unchanged.
fn single_precision_as_written(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let single = x as f32;
            if single.is_finite() && f64::from(single) == x {
                let shortest = single.to_string().parse::<f64>().unwrap_or(x);
                serde_json::Number::from_f64(shortest).map_or(Value::Number(n), Value::Number)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(single_precision_as_written).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, single_precision_as_written(v)))
                .collect(),
        ),
        other => other,
    }
}

/// JSON equality with numbers compared by value: integers exactly, otherwise as `f64`.
fn same(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(a), Value::Number(b)) => {
            match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => a.as_f64() == b.as_f64(),
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| same(x, y)))
        }
        (a, b) => a == b,
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn message(topic: &str, payload: &str) -> String {
    format!(
        "{{\"topic\":{},\"payload\":{payload}}}",
        compact(&topic.into())
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_sandbox::Upstream;
    use serde_json::json;

    fn expect(value: Value) -> TestExpectation {
        serde_json::from_value(value).unwrap()
    }

    fn outcome(commands: &[Value], upstream: &[(&str, Value)], state: Option<Value>) -> Outcome {
        Outcome {
            commands: commands.iter().map(|c| codec::encode(c).into()).collect(),
            upstream: upstream
                .iter()
                .map(|(topic, payload)| Upstream {
                    topic: topic.to_string(),
                    payload: codec::encode(payload),
                })
                .collect(),
            new_state: state.map(|s| codec::encode(&s).into()),
            ..Outcome::default()
        }
    }

    #[test]
    fn equal_outputs_pass_and_numbers_compare_by_value() {
        let expected = expect(json!({
            "commands": [{"mode": "heat", "setpoint_c": 21}],
            "upstream": [{"topic": "telemetry", "payload": {"temp_c": 19.3, "n": [1, 2.5]}}],
            "state": {"mode": "heat"}
        }));
        let got = outcome(
            &[json!({"setpoint_c": 21.0, "mode": "heat"})],
            &[("telemetry", json!({"n": [1.0, 2.5], "temp_c": 19.3}))],
            Some(json!({"mode": "heat"})),
        );
        assert_eq!(compare(&expected, None, &got), None);
    }

    #[test]
    fn a_single_precision_float_matches_the_decimal_it_was_written_as() {
        // What the thermostat's f32 encoding of 19.3 is.
        let mut buf = Vec::new();
        buf.extend([0xa1, 0x66]);
        buf.extend(b"temp_c");
        buf.push(0xfa);
        buf.extend(19.3f32.to_be_bytes());
        let got = Outcome {
            commands: vec![buf.into()],
            ..Outcome::default()
        };
        assert_eq!(
            compare(&expect(json!({"commands": [{"temp_c": 19.3}]})), None, &got),
            None
        );
        assert_eq!(
            compare(&expect(json!({"commands": [{"temp_c": 19.4}]})), None, &got).unwrap(),
            r#"commands: expected [{"temp_c":19.4}], got [{"temp_c":19.3}]"#
        );
        // A double that is not an f32 is compared as it is.
        let double = outcome(&[json!(0.1)], &[], None);
        assert!(compare(&expect(json!({"commands": [0.1]})), None, &double).is_none());
        assert!(compare(&expect(json!({"commands": [0.10000001]})), None, &double).is_some());
    }

    #[test]
    fn each_difference_is_said_with_what_was_expected_and_what_came() {
        let expected = expect(json!({"commands": [{"heat": true}]}));
        assert_eq!(
            compare(&expected, None, &outcome(&[], &[], None)).unwrap(),
            r#"commands: expected [{"heat":true}], got []"#
        );
        // Order matters; extra keys matter; a missing upstream message and a wrong state too.
        let expected = expect(json!({
            "commands": [1, 2],
            "upstream": [{"topic": "telemetry", "payload": {"a": 1}}],
            "state": {"mode": "cool"}
        }));
        let got = outcome(
            &[json!(2), json!(1)],
            &[("event/x", json!({"a": 1}))],
            Some(json!({"mode": "cool", "extra": 1})),
        );
        assert_eq!(
            compare(&expected, None, &got).unwrap(),
            "commands: expected [1,2], got [2,1]; \
             upstream: expected [{\"topic\":\"telemetry\",\"payload\":{\"a\":1}}], \
             got [{\"topic\":\"event/x\",\"payload\":{\"a\":1}}]; \
             state: expected {\"mode\":\"cool\"}, got {\"extra\":1,\"mode\":\"cool\"}"
        );
    }

    #[test]
    fn the_state_is_checked_only_when_expected_and_defaults_to_the_state_before() {
        let before = codec::encode(&json!({"mode": "idle"}));
        let unchanged = outcome(&[], &[], None);
        let idle = expect(json!({"state": {"mode": "idle"}}));
        assert_eq!(compare(&idle, Some(&before), &unchanged), None);
        assert_eq!(
            compare(&idle, None, &unchanged).unwrap(),
            r#"state: expected {"mode":"idle"}, got none"#
        );
        // No expectation on the state: whatever it became passes.
        let anything = outcome(&[], &[], Some(json!({"x": 1})));
        assert_eq!(compare(&expect(json!({})), None, &anything), None);
    }

    #[test]
    fn a_payload_that_is_not_cbor_is_shown_as_bytes() {
        let got = Outcome {
            commands: vec![vec![0xff, 0x00].into()],
            ..Outcome::default()
        };
        let difference = compare(&expect(json!({"commands": ["on"]})), None, &got).unwrap();
        assert!(
            difference.starts_with(
                r#"commands: expected ["on"], got [<2 bytes that are not JSON-like CBOR ("#
            ) && difference.ends_with("): ff00>]"),
            "{difference}"
        );
    }

    #[test]
    fn a_report_names_each_failed_case_and_is_cut_for_a_condition() {
        let report = Report {
            cases: vec![
                CaseResult {
                    name: "idle".into(),
                    difference: None,
                },
                CaseResult {
                    name: "heats below setpoint".into(),
                    difference: Some(r#"commands: expected [{"heat":true}], got []"#.into()),
                },
            ],
        };
        assert_eq!(report.passed(), 1);
        assert_eq!(
            report.failure().unwrap(),
            r#"1 of 2 test vectors failed: case "heats below setpoint": commands: expected [{"heat":true}], got []"#
        );
        let long = Report {
            cases: vec![CaseResult {
                name: "long".into(),
                difference: Some("é".repeat(10_000)),
            }],
        };
        let failure = long.failure().unwrap();
        assert_eq!(failure.chars().count(), MAX_FAILURE_CHARS + 1);
        assert!(failure.ends_with('…'));
        assert_eq!(
            Report {
                cases: vec![report.cases[0].clone()]
            }
            .failure(),
            None
        );
    }
}
