//! The four handler modules, built from source and run end to end in the real sandbox (WasmEdge AOT,
//! worker processes, a fresh instance per interaction); the outputs are decoded with the handler
//! crates' own payload types and compared with the native logic. This checks the `wasm32` glue that
//! the handler crates' native unit tests do not compile.

mod support;

use edgefleet_device_modules::{Handler, handler_wasm};
use edgefleet_guest::cbor;
use edgefleet_guest::minicbor::Encode;
use edgefleet_protocol::ClassLimits;
use edgefleet_sandbox::{Interaction, InteractionError, ModuleSpec, admission};
use edgefleet_sandbox_worker::engine::{self, LoadedModule};
use support::sandbox;

/// One interaction's inputs.
#[derive(Clone, Default)]
struct Inputs {
    message: Vec<u8>,
    config: Vec<u8>,
    state: Option<Vec<u8>>,
    now_ms: i64,
}

/// One interaction's outputs, as the sandbox returned them.
#[derive(Debug, Default)]
struct Outputs {
    code: i32,
    commands: Vec<Vec<u8>>,
    published: Vec<(String, Vec<u8>)>,
    new_state: Option<Vec<u8>>,
}

/// Runs one interaction of `wasm` with `inputs.config` as the class config.
fn interact(wasm: &[u8], inputs: Inputs) -> Outputs {
    let sandbox = sandbox();
    let module = sandbox
        .load(ModuleSpec {
            label: "handler".into(),
            wasm,
            expected_sha256: None,
            limits: ClassLimits {
                allowed_topics: vec!["telemetry".into(), "event/#".into()],
                ..ClassLimits::default()
            },
            config: inputs.config,
        })
        .expect("the handler loads");
    let result = sandbox.run(
        &module,
        Interaction {
            device: "device-1".into(),
            channel: "telemetry".into(),
            payload: inputs.message,
            state: inputs.state.map(Into::into),
            now_ms: inputs.now_ms,
        },
    );
    match result {
        Ok(outcome) => Outputs {
            code: 0,
            commands: outcome.commands.into_iter().map(|c| c.into_vec()).collect(),
            published: outcome
                .upstream
                .into_iter()
                .map(|u| (u.topic, u.payload))
                .collect(),
            new_state: outcome.new_state.map(|s| s.into_vec()),
        },
        Err(InteractionError::Rejected { code }) => Outputs {
            code,
            ..Outputs::default()
        },
        Err(other) => panic!("the handler failed: {other}"),
    }
}

fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let len = cbor::to_slice(value, &mut buf).unwrap().len();
    buf.truncate(len);
    buf
}

fn module(handler: Handler) -> Vec<u8> {
    handler_wasm(handler).unwrap_or_else(|e| panic!("building {}: {e}", handler.name()))
}

#[test]
fn thermostat_commands_every_reading_and_persists_only_changes() {
    use edgefleet_thermostat::{Command, Config, Mode, Reading, State, Telemetry};
    let wasm = module(Handler::Thermostat);
    let config = encoded(&Config {
        setpoint_c: 20.0,
        hysteresis_c: 1.0,
    });
    let cold = Inputs {
        message: encoded(&Reading {
            temp_c: 17.5,
            setpoint_c: None,
        }),
        config: config.clone(),
        ..Inputs::default()
    };
    let first = interact(&wasm, cold);
    assert_eq!(first.code, 0);
    let [command] = &first.commands[..] else {
        panic!("{first:?}")
    };
    assert_eq!(
        cbor::from_slice::<Command>(command).unwrap(),
        Command {
            mode: Mode::Heat,
            setpoint_c: 20.0
        }
    );
    let state = first.new_state.clone().expect("the mode changed");
    assert_eq!(
        cbor::from_slice::<State>(&state).unwrap(),
        State { mode: Mode::Heat }
    );
    let [(topic, telemetry)] = &first.published[..] else {
        panic!("{first:?}")
    };
    assert_eq!(topic, "telemetry");
    assert_eq!(
        cbor::from_slice::<Telemetry>(telemetry).unwrap(),
        Telemetry {
            temp_c: 17.5,
            setpoint_c: 20.0,
            mode: Mode::Heat
        }
    );

    let still_cold = Inputs {
        message: encoded(&Reading {
            temp_c: 19.0,
            setpoint_c: None,
        }),
        config,
        state: Some(state),
        ..Inputs::default()
    };
    let second = interact(&wasm, still_cold);
    assert_eq!(second.code, 0);
    assert_eq!(second.commands.len(), 1, "commanded on every reading");
    assert_eq!(second.new_state, None, "the mode did not change");
    assert!(second.published.is_empty());
}

#[test]
fn malformed_or_oversized_messages_are_rejected_without_outputs() {
    let thermostat = module(Handler::Thermostat);
    for (message, why) in [
        (b"not cbor".to_vec(), "not CBOR"),
        (vec![0xa0], "no temp_c"),
        (
            encoded(&"x".repeat(200).as_str()),
            "larger than the handler's buffer",
        ),
    ] {
        let outputs = interact(
            &thermostat,
            Inputs {
                message,
                ..Inputs::default()
            },
        );
        assert_eq!(
            outputs.code,
            edgefleet_guest::Reject::Message.code(),
            "{why}"
        );
        assert!(
            outputs.commands.is_empty() && outputs.new_state.is_none(),
            "{why}"
        );
    }
    let lock = module(Handler::Lock);
    let bad_config = Inputs {
        message: encoded(&edgefleet_lock::Attempt { credential: "x" }),
        config: b"\xa1\x65allow\x82\x61a\x01".to_vec(),
        ..Inputs::default()
    };
    assert_eq!(
        interact(&lock, bad_config).code,
        edgefleet_guest::Reject::Config.code()
    );
}

#[test]
fn meter_module_agrees_with_the_native_logic_over_a_day_of_readings() {
    use edgefleet_meter::{Anomaly, Config, Reading, State, Summary};
    let wasm = module(Handler::Meter);
    let config = Config {
        window: 48,
        sigma: 3.0,
        min_samples: 8,
        summary_every: 12,
    };
    let config_bytes = encoded(&config);
    let mut native = State::default();
    let mut persisted: Option<Vec<u8>> = None;
    let (mut anomalies, mut summaries) = (0, 0);
    for i in 0..96u32 {
        let wh = if i == 70 {
            2500.0
        } else {
            400.0 + (i % 7) as f32 * 10.0
        };
        let outputs = interact(
            &wasm,
            Inputs {
                message: encoded(&Reading { wh }),
                config: config_bytes.clone(),
                state: persisted.take(),
                ..Inputs::default()
            },
        );
        assert_eq!(outputs.code, 0);
        assert!(outputs.commands.is_empty());
        let expected = edgefleet_meter::record(&mut native, Reading { wh }, &config);
        let state = outputs
            .new_state
            .expect("the window is persisted every time");
        let mut loaded = State::default();
        loaded.load(Some(&state)).unwrap();
        assert_eq!(loaded, native, "reading {i}");
        persisted = Some(state);

        let mut published = outputs.published.iter();
        if let Some(anomaly) = expected.anomaly {
            let (topic, payload) = published.next().expect("an anomaly event");
            assert_eq!(topic, "event/anomaly");
            assert_eq!(cbor::from_slice::<Anomaly>(payload).unwrap(), anomaly);
            anomalies += 1;
        }
        if let Some(summary) = expected.summary {
            let (topic, payload) = published.next().expect("a summary");
            assert_eq!(topic, "telemetry");
            assert_eq!(cbor::from_slice::<Summary>(payload).unwrap(), summary);
            summaries += 1;
        }
        assert_eq!(published.next(), None, "reading {i}");
    }
    assert_eq!((anomalies, summaries), (1, 8));
}

#[test]
fn meter_bench_export_matches_the_native_computation_bit_for_bit() {
    // In this process, through the engine, as the benchmark runs it: AOT-compiled, one warm instance.
    let wasm = module(Handler::Meter);
    let limits = ClassLimits::default();
    engine::quiet_logs();
    let admitted = admission::admit(&wasm, &limits).expect("admitted");
    let dir = tempfile::tempdir().unwrap();
    let artefact = dir.path().join("meter.so");
    engine::compile(&admitted.wasm, &artefact).expect("compiles");
    let mut loaded =
        LoadedModule::load(&artefact, admitted.memory, limits, Vec::new()).expect("loads");
    let mut warm = loaded.warm_instance().expect("instantiates");
    for rounds in [0, 1, 25] {
        let guest = warm.call_f64("edgefleet_bench_stats", rounds).unwrap();
        let native = edgefleet_meter::bench_stats(rounds as u32);
        assert_eq!(guest.to_bits(), native.to_bits(), "{rounds} rounds");
    }
    assert_eq!(warm.call_f64("edgefleet_bench_stats", -5).unwrap(), 0.0);
}

#[test]
fn lock_module_locks_out_after_the_configured_failures() {
    use edgefleet_lock::{Attempt, Command, Config, Credentials, LockoutEvent};
    let wasm = module(Handler::Lock);
    let config = encoded(&Config {
        allow: Credentials::List(&["card-1"]),
        max_failed_attempts: 2,
        lockout_ms: 60_000,
    });
    let attempt = |credential: &str, state: Option<Vec<u8>>, now_ms: i64| {
        interact(
            &wasm,
            Inputs {
                message: encoded(&Attempt { credential }),
                config: config.clone(),
                state,
                now_ms,
            },
        )
    };
    let command = |outputs: &Outputs| cbor::from_slice::<Command>(&outputs.commands[0]).unwrap();

    let unlocked = attempt("card-1", None, 1_000);
    assert_eq!(command(&unlocked), Command::Unlock);
    let first = attempt("card-9", None, 2_000);
    assert_eq!(
        command(&first),
        Command::Deny {
            remaining_attempts: 1
        }
    );
    let second = attempt("card-9", first.new_state.clone(), 3_000);
    assert_eq!(command(&second), Command::Lockout { until_ms: 63_000 });
    let [(topic, event)] = &second.published[..] else {
        panic!("{second:?}")
    };
    assert_eq!(topic, "event/lockout");
    assert_eq!(
        cbor::from_slice::<LockoutEvent<'_>>(event).unwrap(),
        LockoutEvent {
            credential: "card-9",
            failed_attempts: 2,
            until_ms: 63_000
        }
    );
    let during = attempt("card-1", second.new_state.clone(), 62_000);
    assert_eq!(command(&during), Command::Lockout { until_ms: 63_000 });
    let after = attempt("card-1", second.new_state, 63_000);
    assert_eq!(command(&after), Command::Unlock);
}

#[test]
fn air_quality_module_alerts_ventilates_and_clears() {
    use edgefleet_air_quality::{AlertEvent, Config, Metric, Reading, Ventilation};
    let wasm = module(Handler::AirQuality);
    let config = encoded(&Config {
        window: 2,
        ..Config::default()
    });
    let mut state = None;
    let mut send = |co2: f32| {
        let outputs = interact(
            &wasm,
            Inputs {
                message: encoded(&Reading {
                    pm25: None,
                    co2: Some(co2),
                }),
                config: config.clone(),
                state: state.take(),
                ..Inputs::default()
            },
        );
        assert_eq!(outputs.code, 0);
        state = outputs.new_state.clone();
        outputs
    };
    assert!(send(900.0).published.is_empty());
    let raised = send(1300.0);
    let [(topic, event)] = &raised.published[..] else {
        panic!("{raised:?}")
    };
    assert_eq!(topic, "event/alert");
    assert_eq!(
        cbor::from_slice::<AlertEvent>(event).unwrap(),
        AlertEvent {
            metric: Metric::Co2,
            average: 1100.0,
            limit: 1000.0
        }
    );
    assert_eq!(
        cbor::from_slice::<Ventilation>(&raised.commands[0]).unwrap(),
        Ventilation::On
    );
    let cleared = send(600.0);
    assert_eq!(cleared.published[0].0, "event/clear");
    assert_eq!(
        cbor::from_slice::<Ventilation>(&cleared.commands[0]).unwrap(),
        Ventilation::Off
    );
}
