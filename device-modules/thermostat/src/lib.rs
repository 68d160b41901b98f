//! Thermostat handler: hysteresis control of a heating/cooling unit.
//!
//! Each reading from the thermostat carries the room temperature (and the setpoint when the user set
//! one on the device). The handler decides the unit's mode and commands it on every reading, so a lost
//! command is repaired by the next reading; it persists the mode and publishes `telemetry` only when
//! the mode changes. A steady interaction is four host calls (`message`, `config`, `state_get`,
//! `command`), a change six (`state_set`, `publish`). This is the benchmark module: it fits in one page
//! of memory and does no work beyond that.
//!
//! Control law ([`next_mode`]), with setpoint `s` and hysteresis `h`:
//! - below `s − h` the unit heats, above `s + h` it cools;
//! - heating stops (idle) once the temperature reaches `s`, cooling once it falls back to `s`;
//! - in between, the mode is kept.
//!
//! The crate splits into the pure logic and payload types here, used natively by tests and
//! simulators, and the `wasm32` glue in `guest.rs` that talks to the agent.
//!
//! | payload | keys |
//! |---|---|
//! | reading (device → handler) | `temp_c`: number, `setpoint_c`: number (optional, overrides the config's) |
//! | config | `setpoint_c`: number (default 21.0), `hysteresis_c`: number ≥ 0 (default 0.5) |
//! | state | `mode`: `"idle"` \| `"heat"` \| `"cool"` (no state: idle) |
//! | command (handler → device) | `mode`: text, `setpoint_c`: number |
//! | `telemetry` (on a mode change) | `temp_c`, `setpoint_c`: number, `mode`: text |
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod guest;

use edgefleet_guest::Reject;
use edgefleet_guest::cbor;

/// What the heating/cooling unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Idle,
    Heat,
    Cool,
}

cbor::text_enum! {
    Mode { Idle => "idle", Heat => "heat", Cool => "cool" }
}

/// A reading from the thermostat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub temp_c: f32,
    /// The setpoint set on the device, overriding the class config's.
    pub setpoint_c: Option<f32>,
}

cbor::map! {
    Reading {
        "temp_c" => temp_c,
        "setpoint_c" => setpoint_c?,
    }
}

/// The class config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub setpoint_c: f32,
    /// Half-width of the dead band around the setpoint, ≥ 0.
    pub hysteresis_c: f32,
}

cbor::map! {
    Config {
        "setpoint_c" => setpoint_c = 21.0,
        "hysteresis_c" => hysteresis_c = 0.5,
    }
    check Config::check
}

impl Config {
    fn check(&self) -> Result<(), &'static str> {
        if self.hysteresis_c < 0.0 {
            return Err("negative hysteresis_c");
        }
        Ok(())
    }
}

/// The device state: the mode the unit was last commanded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub mode: Mode,
}

cbor::map! {
    State { "mode" => mode }
}

/// The command sent to the unit on every reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Command {
    pub mode: Mode,
    pub setpoint_c: f32,
}

cbor::map! {
    Command {
        "mode" => mode,
        "setpoint_c" => setpoint_c,
    }
}

/// Published on `telemetry` when the mode changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    pub temp_c: f32,
    pub setpoint_c: f32,
    pub mode: Mode,
}

cbor::map! {
    Telemetry {
        "temp_c" => temp_c,
        "setpoint_c" => setpoint_c,
        "mode" => mode,
    }
}

/// The topic [`Telemetry`] is published on.
pub const TELEMETRY_TOPIC: &str = "telemetry";

/// The mode after a reading of `temp_c`, given the `current` mode (see the crate docs).
pub fn next_mode(current: Mode, temp_c: f32, setpoint_c: f32, hysteresis_c: f32) -> Mode {
    if temp_c < setpoint_c - hysteresis_c {
        Mode::Heat
    } else if temp_c > setpoint_c + hysteresis_c {
        Mode::Cool
    } else {
        match current {
            Mode::Heat if temp_c >= setpoint_c => Mode::Idle,
            Mode::Cool if temp_c <= setpoint_c => Mode::Idle,
            kept => kept,
        }
    }
}

/// The outputs of one interaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Sent on every reading.
    pub command: Command,
    /// `Some` when the mode changed: publish it, and persist `State { mode: command.mode }`.
    pub change: Option<Telemetry>,
}

/// One interaction on the CBOR inputs: decodes them, applies [`next_mode`], and says what to send.
pub fn handle(message: &[u8], config: &[u8], state: Option<&[u8]>) -> Result<Outcome, Reject> {
    let reading: Reading = cbor::from_slice(message).map_err(|_| Reject::Message)?;
    let config: Config = cbor::config_or_default(config).map_err(|_| Reject::Config)?;
    let state: State = match state {
        Some(bytes) => cbor::from_slice(bytes).map_err(|_| Reject::State)?,
        None => State::default(),
    };
    let setpoint_c = reading.setpoint_c.unwrap_or(config.setpoint_c);
    let mode = next_mode(state.mode, reading.temp_c, setpoint_c, config.hysteresis_c);
    Ok(Outcome {
        command: Command { mode, setpoint_c },
        change: (mode != state.mode).then_some(Telemetry {
            temp_c: reading.temp_c,
            setpoint_c,
            mode,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_guest::minicbor::Encode;
    use std::vec::Vec;

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 128];
        cbor::to_slice(value, &mut buf).unwrap().to_vec()
    }

    fn reading(temp_c: f32) -> Vec<u8> {
        encoded(&Reading {
            temp_c,
            setpoint_c: None,
        })
    }

    /// Feeds `temps` through `handle` with the given config, carrying the state the way the agent
    /// does, and returns the mode commanded after each reading.
    fn run(config: &Config, temps: &[f32]) -> Vec<Mode> {
        let config = encoded(config);
        let mut state: Option<Vec<u8>> = None;
        temps
            .iter()
            .map(|&t| {
                let outcome = handle(&reading(t), &config, state.as_deref()).unwrap();
                if outcome.change.is_some() {
                    state = Some(encoded(&State {
                        mode: outcome.command.mode,
                    }));
                }
                outcome.command.mode
            })
            .collect()
    }

    #[test]
    fn heats_below_the_band_and_stops_at_the_setpoint() {
        use Mode::*;
        let config = Config {
            setpoint_c: 20.0,
            hysteresis_c: 1.0,
        };
        assert_eq!(
            run(&config, &[20.0, 19.5, 18.9, 19.5, 19.99, 20.0, 19.5]),
            [Idle, Idle, Heat, Heat, Heat, Idle, Idle]
        );
    }

    #[test]
    fn cools_above_the_band_and_stops_at_the_setpoint() {
        use Mode::*;
        let config = Config {
            setpoint_c: 20.0,
            hysteresis_c: 1.0,
        };
        assert_eq!(
            run(&config, &[21.0, 21.2, 20.5, 20.0, 20.8, 25.0, 15.0]),
            [Idle, Cool, Cool, Idle, Idle, Cool, Heat]
        );
    }

    #[test]
    fn zero_hysteresis_switches_at_the_setpoint() {
        assert_eq!(next_mode(Mode::Idle, 19.9, 20.0, 0.0), Mode::Heat);
        assert_eq!(next_mode(Mode::Heat, 20.0, 20.0, 0.0), Mode::Idle);
        assert_eq!(next_mode(Mode::Idle, 20.1, 20.0, 0.0), Mode::Cool);
    }

    #[test]
    fn a_change_is_published_and_a_steady_mode_is_not() {
        let config = encoded(&Config::default());
        let first = handle(&reading(17.0), &config, None).unwrap();
        assert_eq!(
            first,
            Outcome {
                command: Command {
                    mode: Mode::Heat,
                    setpoint_c: 21.0
                },
                change: Some(Telemetry {
                    temp_c: 17.0,
                    setpoint_c: 21.0,
                    mode: Mode::Heat
                }),
            }
        );
        let heating = encoded(&State { mode: Mode::Heat });
        let second = handle(&reading(18.0), &config, Some(&heating)).unwrap();
        assert_eq!(second.command.mode, Mode::Heat);
        assert_eq!(second.change, None);
    }

    #[test]
    fn an_empty_config_uses_the_defaults_and_the_device_setpoint_wins() {
        let outcome = handle(&reading(20.6), &[], None).unwrap();
        assert_eq!(outcome.command.mode, Mode::Idle, "within 21 ± 0.5");
        let with_setpoint = encoded(&Reading {
            temp_c: 20.6,
            setpoint_c: Some(23.0),
        });
        let outcome = handle(&with_setpoint, &[], None).unwrap();
        assert_eq!(
            outcome.command,
            Command {
                mode: Mode::Heat,
                setpoint_c: 23.0
            }
        );
    }

    #[test]
    fn partial_config_keeps_the_other_default() {
        // {"hysteresis_c": 2}
        let config = [
            0xa1, 0x6c, b'h', b'y', b's', b't', b'e', b'r', b'e', b's', b'i', b's', b'_', b'c',
            0x02,
        ];
        let decoded: Config = cbor::config_or_default(&config).unwrap();
        assert_eq!(
            decoded,
            Config {
                setpoint_c: 21.0,
                hysteresis_c: 2.0
            }
        );
        assert_eq!(
            handle(&reading(19.5), &config, None).unwrap().command.mode,
            Mode::Idle
        );
    }

    #[test]
    fn a_reading_with_integer_temperature_and_unknown_keys_decodes() {
        // {"id": "t1", "temp_c": 30}
        let message = [
            0xa2, 0x62, b'i', b'd', 0x62, b't', b'1', 0x66, b't', b'e', b'm', b'p', b'_', b'c',
            0x18, 30,
        ];
        assert_eq!(
            handle(&message, &[], None).unwrap().command.mode,
            Mode::Cool
        );
    }

    #[test]
    fn malformed_inputs_are_rejected_with_their_code() {
        let good = reading(20.0);
        assert_eq!(handle(b"not cbor", &[], None), Err(Reject::Message));
        assert_eq!(handle(&[], &[], None), Err(Reject::Message));
        // {} (no temp_c)
        assert_eq!(handle(&[0xa0], &[], None), Err(Reject::Message));
        // {"temp_c": NaN}
        let nan = [
            0xa1, 0x66, b't', b'e', b'm', b'p', b'_', b'c', 0xf9, 0x7e, 0x00,
        ];
        assert_eq!(handle(&nan, &[], None), Err(Reject::Message));
        let negative_band = encoded(&Config {
            setpoint_c: 20.0,
            hysteresis_c: -1.0,
        });
        assert_eq!(handle(&good, &negative_band, None), Err(Reject::Config));
        // {"mode": "defrost"}
        let state = [
            0xa1, 0x64, b'm', b'o', b'd', b'e', 0x67, b'd', b'e', b'f', b'r', b'o', b's', b't',
        ];
        assert_eq!(handle(&good, &[], Some(&state)), Err(Reject::State));
    }

    #[test]
    fn payloads_round_trip() {
        let command = Command {
            mode: Mode::Cool,
            setpoint_c: 22.5,
        };
        assert_eq!(
            cbor::from_slice::<Command>(&encoded(&command)).unwrap(),
            command
        );
        let telemetry = Telemetry {
            temp_c: 25.25,
            setpoint_c: 22.5,
            mode: Mode::Cool,
        };
        assert_eq!(
            cbor::from_slice::<Telemetry>(&encoded(&telemetry)).unwrap(),
            telemetry
        );
        let state = State { mode: Mode::Heat };
        assert_eq!(cbor::from_slice::<State>(&encoded(&state)).unwrap(), state);
        assert_eq!(
            encoded(&State { mode: Mode::Heat }),
            [
                0xa1, 0x64, b'm', b'o', b'd', b'e', 0x64, b'h', b'e', b'a', b't'
            ]
        );
    }
}
