//! The handlers written in C (`device-modules/c`), built with clang by the catalog and run end to end
//! in the real sandbox (admission, WasmEdge AOT, worker processes, a fresh instance per
//! interaction), as `handlers.rs` runs the Rust ones. Outputs are decoded with serde_cbor, a CBOR
//! implementation independent of the C SDK's writer, and compared with a Rust model of the
//! handler's alarm law.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use edgefleet_device_modules::{CHandler, c_handler_wasm};
use edgefleet_guest::Reject;
use edgefleet_protocol::ClassLimits;
use edgefleet_sandbox::{Interaction, InteractionError, LogLevel, ModuleSpec, admission};
use serde_cbor::Value;
use support::sandbox;

fn pressure() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        c_handler_wasm(CHandler::Pressure).unwrap_or_else(|e| panic!("building pressure: {e}"))
    })
}

/// One interaction's inputs.
#[derive(Clone)]
struct Inputs {
    channel: &'static str,
    message: Vec<u8>,
    config: Vec<u8>,
    state: Option<Vec<u8>>,
    now_ms: i64,
}

impl Inputs {
    fn reading(message: Vec<u8>) -> Inputs {
        Inputs {
            channel: "telemetry",
            message,
            config: Vec::new(),
            state: None,
            now_ms: 0,
        }
    }
}

const DEVICE: &str = "pump-7";

/// Runs one interaction of the pressure module; `Err(code)` when the handler rejects it.
fn interact(inputs: Inputs) -> Result<edgefleet_sandbox::Outcome, i32> {
    let sandbox = sandbox();
    let module = sandbox
        .load(ModuleSpec {
            label: "pressure".into(),
            wasm: pressure(),
            expected_sha256: None,
            limits: ClassLimits::default(),
            config: inputs.config,
        })
        .expect("the pressure module loads");
    let result = sandbox.run(
        &module,
        Interaction {
            device: DEVICE.into(),
            channel: inputs.channel.into(),
            payload: inputs.message,
            state: inputs.state.map(Into::into),
            now_ms: inputs.now_ms,
        },
    );
    match result {
        Ok(outcome) => Ok(outcome),
        Err(InteractionError::Rejected { code }) => Err(code),
        Err(other) => panic!("the handler failed: {other}"),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A CBOR map with text keys.
fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn cbor(value: &Value) -> Vec<u8> {
    serde_cbor::to_vec(value).unwrap()
}

fn decoded(bytes: &[u8]) -> Value {
    serde_cbor::from_slice(bytes).unwrap_or_else(|e| panic!("not CBOR ({e}): {bytes:02x?}"))
}

/// `{"kpa": <number>}` with the number encoded as `number` (a CBOR item, any width).
fn reading_encoded(number: &[u8]) -> Vec<u8> {
    [&[0xa1, 0x63, b'k', b'p', b'a'][..], number].concat()
}

fn reading(kpa: f64) -> Vec<u8> {
    cbor(&map([("kpa", Value::Float(kpa))]))
}

/// The class config, as the handler's header comment specifies it.
struct Config {
    high_kpa: f64,
    low_kpa: Option<f64>,
    hysteresis_kpa: f64,
}

impl Config {
    fn encoded(&self) -> Vec<u8> {
        let mut entries = BTreeMap::from([
            (text("high_kpa"), Value::Float(self.high_kpa)),
            (text("hysteresis_kpa"), Value::Float(self.hysteresis_kpa)),
        ]);
        if let Some(low) = self.low_kpa {
            entries.insert(text("low_kpa"), Value::Float(low));
        }
        cbor(&Value::Map(entries))
    }

    /// The model: raised above `high_kpa` or below `low_kpa`; cleared only inside the band narrowed
    /// by the hysteresis; kept in between.
    fn next_alarm(&self, alarm: bool, kpa: f64) -> bool {
        let below = self.low_kpa.is_some_and(|low| kpa < low);
        if kpa > self.high_kpa || below {
            return true;
        }
        let clear = kpa <= self.high_kpa - self.hysteresis_kpa
            && self
                .low_kpa
                .is_none_or(|low| kpa >= low + self.hysteresis_kpa);
        alarm && !clear
    }
}

/// Feeds `readings` through the module with `config`, carrying the state as the agent does, checks
/// every interaction's outputs against the model, and returns the alarm after each reading.
fn run(config: &Config, readings: &[f64]) -> Vec<bool> {
    let mut state: Option<Vec<u8>> = None;
    let (mut alarm, mut since_ms) = (false, 0i64);
    let mut alarms = Vec::new();
    for (i, &kpa) in readings.iter().enumerate() {
        let now_ms = 1_700_000_000_000 + 1_000 * i as i64;
        let outcome = interact(Inputs {
            config: config.encoded(),
            state: state.clone(),
            now_ms,
            ..Inputs::reading(reading(kpa))
        })
        .unwrap_or_else(|code| panic!("reading {i} ({kpa} kPa) rejected: {code}"));
        let next = config.next_alarm(alarm, kpa);
        if next == alarm {
            assert_eq!(
                outcome.commands.len(),
                0,
                "reading {i}: no change, no command"
            );
            assert_eq!(
                outcome.new_state, None,
                "reading {i}: no change, state kept"
            );
            assert!(outcome.logs.is_empty(), "reading {i}");
        } else {
            since_ms = now_ms;
            let [command] = &outcome.commands[..] else {
                panic!("reading {i}: one command on a change, got {outcome:?}")
            };
            assert_eq!(
                decoded(command),
                map([("alarm", Value::Bool(next)), ("kpa", Value::Float(kpa))]),
                "reading {i}"
            );
            let new_state = outcome.new_state.clone().expect("the change is persisted");
            assert_eq!(
                decoded(&new_state),
                map([
                    ("alarm", Value::Bool(next)),
                    ("since_ms", Value::Integer(now_ms.into()))
                ]),
                "reading {i}"
            );
            state = Some(new_state.into_vec());
            let [log] = &outcome.logs[..] else {
                panic!("reading {i}: one log line, got {:?}", outcome.logs)
            };
            assert_eq!(log.level, LogLevel::Info);
            let expected = if next { "raised" } else { "cleared" };
            assert_eq!(log.text, format!("pressure alarm {expected}"));
        }
        alarm = next;
        let [upstream] = &outcome.upstream[..] else {
            panic!("reading {i}: telemetry on every reading, got {outcome:?}")
        };
        assert_eq!(upstream.topic, "telemetry");
        assert_eq!(
            decoded(&upstream.payload),
            map([
                ("device", text(DEVICE)),
                ("kpa", Value::Float(kpa)),
                ("alarm", Value::Bool(alarm)),
                ("since_ms", Value::Integer(since_ms.into())),
            ]),
            "reading {i}"
        );
        alarms.push(alarm);
    }
    alarms
}

#[test]
fn the_pressure_module_passes_admission_as_built() {
    let admitted = admission::admit(pressure(), &ClassLimits::default()).expect("admitted");
    assert!(!admitted.rewritten_memory, "it imports env.memory");
    assert_eq!(admitted.memory.min_pages, 1);
}

#[test]
fn the_alarm_rises_above_and_below_the_thresholds_and_clears_past_the_hysteresis() {
    let config = Config {
        high_kpa: 600.0,
        low_kpa: Some(100.0),
        hysteresis_kpa: 20.0,
    };
    let readings = [
        300.0, 599.5, 600.5, 590.0, 600.0, 580.0, 99.0, 110.0, 120.0, 601.0,
    ];
    assert_eq!(
        run(&config, &readings),
        [
            false, false, true, true, true, false, true, true, false, true
        ]
    );
}

#[test]
fn the_module_agrees_with_the_model_over_a_random_walk() {
    let config = Config {
        high_kpa: 450.0,
        low_kpa: Some(150.0),
        hysteresis_kpa: 15.0,
    };
    let mut seed = 0x2545_f491_u32;
    let mut kpa = 300.0f64;
    let readings: Vec<f64> = (0..150)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            kpa = (kpa + f64::from(seed >> 24) - 127.5).clamp(0.0, 700.0);
            kpa
        })
        .collect();
    let alarms = run(&config, &readings);
    let changes = alarms.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes >= 4,
        "the walk crosses the thresholds: {changes} changes"
    );
}

#[test]
fn an_empty_config_is_the_defaults() {
    // high_kpa 500, hysteresis_kpa 10, no low_kpa.
    let mut state = None;
    let mut alarms = Vec::new();
    for kpa in [505.0, 495.0, 490.0, -40.0] {
        let outcome = interact(Inputs {
            state: state.clone(),
            ..Inputs::reading(reading(kpa))
        })
        .unwrap();
        if let Some(new_state) = outcome.new_state {
            state = Some(new_state.into_vec());
        }
        let alarm = decoded(&outcome.upstream[0].payload);
        let Value::Map(alarm) = alarm else { panic!() };
        alarms.push(alarm[&text("alarm")].clone());
    }
    let expected: Vec<Value> = [true, true, false, false].map(Value::Bool).into();
    assert_eq!(alarms, expected);
}

#[test]
fn readings_decode_in_every_cbor_width_with_unknown_keys_skipped() {
    let cases: Vec<(Vec<u8>, f64)> = vec![
        (reading_encoded(&[0x18, 0xc8]), 200.0),
        (reading_encoded(&[0x19, 0x02, 0x8a]), 650.0),
        (reading_encoded(&[0x1a, 0, 0, 0x02, 0x8a]), 650.0),
        (
            reading_encoded(&[0x1b, 0, 0, 0, 0, 0, 0, 0x02, 0x8a]),
            650.0,
        ),
        (reading_encoded(&[0x38, 0x63]), -100.0),
        (reading_encoded(&[0xf9, 0x61, 0x14]), 650.0),
        (reading_encoded(&[0xf9, 0x56, 0x38]), 99.5),
        (
            reading_encoded(&[&[0xfa][..], &650.25f32.to_be_bytes()].concat()),
            650.25,
        ),
        (
            reading_encoded(&[&[0xfb][..], &600.1f64.to_be_bytes()].concat()),
            600.1,
        ),
        // {_ "unit": "kPa", "kpa": 12, "meta": {"fw": [1, 2, h'00'], "t": 1(1700000000)}, "ok": true}
        (
            [
                &[0xbf, 0x64, b'u', b'n', b'i', b't', 0x63, b'k', b'P', b'a'][..],
                &[0x63, b'k', b'p', b'a', 0x0c],
                &[
                    0x64, b'm', b'e', b't', b'a', 0xa2, 0x62, b'f', b'w', 0x83, 0x01, 0x02,
                ],
                &[0x41, 0x00, 0x61, b't', 0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00],
                &[0x62, b'o', b'k', 0xf5, 0xff],
            ]
            .concat(),
            12.0,
        ),
    ];
    for (message, kpa) in cases {
        let outcome = interact(Inputs::reading(message.clone()))
            .unwrap_or_else(|code| panic!("{message:02x?} rejected: {code}"));
        let Value::Map(telemetry) = decoded(&outcome.upstream[0].payload) else {
            panic!("a map")
        };
        assert_eq!(telemetry[&text("kpa")], Value::Float(kpa), "{message:02x?}");
        assert_eq!(
            telemetry[&text("alarm")],
            Value::Bool(kpa > 500.0),
            "{message:02x?}"
        );
    }
}

#[test]
fn malformed_inputs_are_rejected_with_the_rust_sdks_codes() {
    let good = reading(300.0);
    let long_key = "x".repeat(300);
    let message_cases: Vec<(&str, Inputs)> = vec![
        ("not CBOR", Inputs::reading(b"not cbor".to_vec())),
        ("no kpa", Inputs::reading(vec![0xa0])),
        (
            "kpa is NaN",
            Inputs::reading(reading_encoded(&[0xf9, 0x7e, 0x00])),
        ),
        (
            "kpa is infinite",
            Inputs::reading(reading_encoded(&[0xf9, 0x7c, 0x00])),
        ),
        (
            "kpa is text",
            Inputs::reading(cbor(&map([("kpa", text("300"))]))),
        ),
        (
            "trailing bytes",
            Inputs::reading([&good[..], &[0x00]].concat()),
        ),
        ("not a map", Inputs::reading(cbor(&Value::Array(vec![])))),
        (
            "larger than the handler's 256-byte buffer",
            Inputs::reading(cbor(&map([
                (long_key.as_str(), Value::Null),
                ("kpa", Value::Float(1.0)),
            ]))),
        ),
        (
            "another channel",
            Inputs {
                channel: "event/door",
                ..Inputs::reading(good.clone())
            },
        ),
    ];
    let config = |value: Value| Inputs {
        config: cbor(&value),
        ..Inputs::reading(good.clone())
    };
    let config_cases = vec![
        (
            "negative hysteresis",
            config(map([("hysteresis_kpa", Value::Float(-1.0))])),
        ),
        (
            "an empty clear band",
            config(map([
                ("high_kpa", Value::Float(200.0)),
                ("low_kpa", Value::Float(100.0)),
                ("hysteresis_kpa", Value::Float(60.0)),
            ])),
        ),
        (
            "high_kpa is text",
            config(map([("high_kpa", text("high"))])),
        ),
        ("not a map", config(Value::Integer(7))),
    ];
    let state = |bytes: Vec<u8>| Inputs {
        state: Some(bytes),
        ..Inputs::reading(good.clone())
    };
    let state_cases = vec![
        (
            "no alarm",
            state(cbor(&map([("since_ms", Value::Integer(5))]))),
        ),
        (
            "alarm is not a bool",
            state(cbor(&map([("alarm", Value::Integer(1))]))),
        ),
        (
            "larger than the handler's 64-byte buffer",
            state(cbor(&map([
                ("alarm", Value::Bool(true)),
                ("note", text(&"n".repeat(64))),
            ]))),
        ),
        ("empty", state(Vec::new())),
    ];
    for (cases, reject) in [
        (message_cases, Reject::Message),
        (config_cases, Reject::Config),
        (state_cases, Reject::State),
    ] {
        for (why, inputs) in cases {
            assert_eq!(interact(inputs).err(), Some(reject.code()), "{why}");
        }
    }
    // The same inputs, well-formed, are handled: the cases above fail for the reason they name.
    let handled = interact(Inputs {
        config: cbor(&map([
            ("high_kpa", Value::Float(200.0)),
            ("low_kpa", Value::Float(100.0)),
            ("hysteresis_kpa", Value::Float(50.0)),
        ])),
        state: Some(cbor(&map([
            ("alarm", Value::Bool(true)),
            ("since_ms", Value::Integer(5)),
            ("note", text("kept")),
        ]))),
        ..Inputs::reading(reading(150.0))
    })
    .expect("handled");
    assert_eq!(
        handled.commands.len(),
        1,
        "150 is inside [150, 150]: cleared"
    );
}
