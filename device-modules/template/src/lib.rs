//! A device-class handler: an alarm with hysteresis on one reading.
//!
//! Each reading carries a `value`. The alarm goes on when a value rises above the config's `high`,
//! and off when one falls to `low` or below; in between it stays as it was (so a value hovering
//! around one limit does not flap). On each change the handler commands the device's alarm, persists
//! the new state and publishes an event; a reading that changes nothing sends nothing.
//!
//! | payload | keys |
//! |---|---|
//! | reading (device → handler) | `value`: number |
//! | config | `high`: number (default 80.0), `low`: number below `high` (default 70.0) |
//! | state | `alarm`: `"on"` \| `"off"` (no state: off) |
//! | command (handler → device), on a change | `alarm`: `"on"` \| `"off"` |
//! | `event/alarm`, on a change | `alarm`: `"on"` \| `"off"`, `value`: the reading's |
//!
//! This file is the pure logic and the payload types, which native tests (and simulators) use;
//! `guest.rs` is the `wasm32` glue that reads the inputs from the agent and emits the outputs.
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod guest;

use edgefleet_guest::{Reject, cbor};

/// The device's alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    Off,
    On,
}

cbor::text_enum! {
    Alarm { Off => "off", On => "on" }
}

/// A reading from the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f32,
}

cbor::map! {
    Reading { "value" => value }
}

/// The class config: missing keys take their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The alarm goes on above this.
    pub high: f32,
    /// The alarm goes off at this or below; below `high`.
    pub low: f32,
}

cbor::map! {
    Config {
        "high" => high = 80.0,
        "low" => low = 70.0,
    }
    check Config::check
}

impl Config {
    fn check(&self) -> Result<(), &'static str> {
        if self.low >= self.high {
            return Err("low must be below high");
        }
        Ok(())
    }
}

/// The device state: the alarm as last commanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub alarm: Alarm,
}

cbor::map! {
    State { "alarm" => alarm = Alarm::Off }
}

/// The command sent to the device on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub alarm: Alarm,
}

cbor::map! {
    Command { "alarm" => alarm }
}

/// Published on [`EVENT_TOPIC`] on a change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub alarm: Alarm,
    /// The reading that changed it.
    pub value: f32,
}

cbor::map! {
    Event {
        "alarm" => alarm,
        "value" => value,
    }
}

/// The topic of [`Event`]s.
pub const EVENT_TOPIC: &str = "event/alarm";

/// The alarm after a reading of `value`, given the `current` one (see the crate docs).
pub fn next_alarm(current: Alarm, value: f32, config: &Config) -> Alarm {
    match current {
        Alarm::Off if value > config.high => Alarm::On,
        Alarm::On if value <= config.low => Alarm::Off,
        kept => kept,
    }
}

/// One interaction on the CBOR inputs: `Some` event when the alarm changes (command it, persist
/// `State { alarm: event.alarm }` and publish the event), `None` when nothing changes.
pub fn handle(
    message: &[u8],
    config: &[u8],
    state: Option<&[u8]>,
) -> Result<Option<Event>, Reject> {
    let reading: Reading = cbor::from_slice(message).map_err(|_| Reject::Message)?;
    let config: Config = cbor::config_or_default(config).map_err(|_| Reject::Config)?;
    let state: State = match state {
        Some(bytes) => cbor::from_slice(bytes).map_err(|_| Reject::State)?,
        None => State::default(),
    };
    let alarm = next_alarm(state.alarm, reading.value, &config);
    Ok((alarm != state.alarm).then_some(Event {
        alarm,
        value: reading.value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_guest::minicbor::Encode;
    use std::vec::Vec;

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 64];
        cbor::to_slice(value, &mut buf).unwrap().to_vec()
    }

    /// Feeds `values` through `handle` with the default config, carrying the state as the agent
    /// does, and returns the alarm after each.
    fn run(values: &[f32]) -> Vec<Alarm> {
        let mut state: Option<Vec<u8>> = None;
        values
            .iter()
            .map(|&value| {
                let change = handle(&encoded(&Reading { value }), &[], state.as_deref()).unwrap();
                if let Some(event) = change {
                    state = Some(encoded(&State { alarm: event.alarm }));
                }
                cbor::from_slice::<State>(state.as_deref().unwrap_or(&[0xa0]))
                    .unwrap()
                    .alarm
            })
            .collect()
    }

    #[test]
    fn the_alarm_goes_on_above_high_and_off_at_low() {
        use Alarm::*;
        assert_eq!(
            run(&[50.0, 80.0, 80.5, 75.0, 70.1, 70.0, 79.0]),
            [Off, Off, On, On, On, Off, Off]
        );
    }

    #[test]
    fn a_change_is_an_event_and_no_change_is_nothing() {
        let on = encoded(&State { alarm: Alarm::On });
        assert_eq!(
            handle(&encoded(&Reading { value: 90.0 }), &[], None),
            Ok(Some(Event {
                alarm: Alarm::On,
                value: 90.0
            }))
        );
        assert_eq!(
            handle(&encoded(&Reading { value: 90.0 }), &[], Some(&on)),
            Ok(None)
        );
    }

    #[test]
    fn a_config_may_give_some_keys() {
        // {"high": 10} is refused: low (default 70) would not be below it.
        assert_eq!(
            handle(&encoded(&Reading { value: 1.0 }), b"\xa1\x64high\x0a", None),
            Err(Reject::Config)
        );
        let config = encoded(&Config {
            high: 10.0,
            low: 5.0,
        });
        assert_eq!(
            handle(&encoded(&Reading { value: 11.0 }), &config, None)
                .unwrap()
                .map(|e| e.alarm),
            Some(Alarm::On)
        );
    }

    #[test]
    fn malformed_inputs_are_rejected_with_their_code() {
        // {} and {"value": "high"}
        assert_eq!(handle(&[0xa0], &[], None), Err(Reject::Message));
        assert_eq!(
            handle(b"\xa1\x65value\x64high", &[], None),
            Err(Reject::Message)
        );
        // {"alarm": "maybe"}
        let reading = encoded(&Reading { value: 1.0 });
        assert_eq!(
            handle(&reading, &[], Some(b"\xa1\x65alarm\x65maybe")),
            Err(Reject::State)
        );
    }
}
