//! Air-quality handler: moving averages of PM2.5 and CO₂, threshold alerts and ventilation.
//!
//! Each reading carries PM2.5 and/or CO₂. The handler keeps the last `window` values of each metric in
//! device state and compares the moving average with the metric's limit: when it rises above the limit
//! an alert is published on `event/alert`, when it falls back to the limit or below, on `event/clear`.
//! With `ventilation` on, the sensor's ventilation relay is commanded on when the first alert is raised
//! and off when the last one clears. The new state is persisted on every reading.
//!
//! | payload | keys |
//! |---|---|
//! | reading (device → handler) | `pm25`: number (µg/m³), `co2`: number (ppm); at least one |
//! | config | `window`: 1..=60 (default 10), `pm25_limit`: number (default 35.0), `co2_limit`: number (default 1000.0), `ventilation`: bool (default true) |
//! | state | `pm25`, `co2`: each `{window: array of numbers, oldest first, alert: bool}` |
//! | `event/alert`, `event/clear` | `metric`: `"pm25"` \| `"co2"`, `average`: number, `limit`: number |
//! | command (handler → device) | `vent`: `"on"` \| `"off"` |
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod guest;

use edgefleet_guest::Reject;
use edgefleet_guest::cbor;
use edgefleet_guest::minicbor::decode::{self, Decode, Decoder};
use edgefleet_guest::minicbor::encode::{self, Encode, Encoder, Write};
use edgefleet_guest::window::Window;

/// The largest window a class can configure.
pub const MAX_WINDOW: usize = 60;

/// Bytes the guest reserves for the encoded state: two full windows with their keys are 645.
pub const STATE_BYTES: usize = 1024;

/// A measured pollutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Fine particulate matter, µg/m³.
    Pm25,
    /// Carbon dioxide, ppm.
    Co2,
}

cbor::text_enum! {
    Metric { Pm25 => "pm25", Co2 => "co2" }
}

/// A reading from the sensor: at least one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub pm25: Option<f32>,
    pub co2: Option<f32>,
}

cbor::map! {
    Reading {
        "pm25" => pm25?,
        "co2" => co2?,
    }
    check Reading::check
}

impl Reading {
    fn check(&self) -> Result<(), &'static str> {
        if self.pm25.is_none() && self.co2.is_none() {
            return Err("missing pm25 and co2");
        }
        Ok(())
    }
}

/// The class config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Values averaged per metric, `1..=MAX_WINDOW`.
    pub window: u8,
    pub pm25_limit: f32,
    pub co2_limit: f32,
    /// Whether to command the ventilation relay.
    pub ventilation: bool,
}

cbor::map! {
    Config {
        "window" => window = 10,
        "pm25_limit" => pm25_limit = 35.0,
        "co2_limit" => co2_limit = 1000.0,
        "ventilation" => ventilation = true,
    }
    check Config::check
}

impl Config {
    fn check(&self) -> Result<(), &'static str> {
        if !(1..=MAX_WINDOW).contains(&usize::from(self.window)) {
            return Err("window out of range");
        }
        Ok(())
    }

    pub fn limit(&self, metric: Metric) -> f32 {
        match metric {
            Metric::Pm25 => self.pm25_limit,
            Metric::Co2 => self.co2_limit,
        }
    }
}

/// One metric's recent values and whether its alert is raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub window: Window<MAX_WINDOW>,
    pub alert: bool,
}

cbor::map! {
    Track {
        "window" => window = Window::new(),
        "alert" => alert = false,
    }
}

/// The device state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub pm25: Track,
    pub co2: Track,
}

cbor::map! {
    State {
        "pm25" => pm25 = Track::default(),
        "co2" => co2 = Track::default(),
    }
}

impl State {
    fn track(&mut self, metric: Metric) -> &mut Track {
        match metric {
            Metric::Pm25 => &mut self.pm25,
            Metric::Co2 => &mut self.co2,
        }
    }

    fn alerts(&self) -> bool {
        self.pm25.alert || self.co2.alert
    }
}

/// Whether an alert was raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Raised,
    Cleared,
}

impl Change {
    /// The topic the [`AlertEvent`] is published on.
    pub const fn topic(self) -> &'static str {
        match self {
            Change::Raised => "event/alert",
            Change::Cleared => "event/clear",
        }
    }
}

/// Published when a metric's alert is raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertEvent {
    pub metric: Metric,
    /// The moving average that crossed the limit.
    pub average: f32,
    pub limit: f32,
}

cbor::map! {
    AlertEvent {
        "metric" => metric,
        "average" => average,
        "limit" => limit,
    }
}

/// The ventilation relay command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ventilation {
    On,
    Off,
}

/// The outputs of one reading besides the new state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    /// At most one change per metric, PM2.5 first.
    pub changes: [Option<(Change, AlertEvent)>; 2],
    pub ventilation: Option<Ventilation>,
}

/// Adds one reading to `state` and says what changed.
pub fn record(state: &mut State, reading: Reading, config: &Config) -> Outcome {
    let ventilating = state.alerts();
    let mut outcome = Outcome::default();
    for (slot, (metric, value)) in [(Metric::Pm25, reading.pm25), (Metric::Co2, reading.co2)]
        .into_iter()
        .enumerate()
    {
        let Some(value) = value else { continue };
        let limit = config.limit(metric);
        let track = state.track(metric);
        track.window.push(value, usize::from(config.window));
        let average = track.window.mean().unwrap_or(0.0) as f32;
        let change = match (track.alert, average > limit) {
            (false, true) => Change::Raised,
            (true, false) => Change::Cleared,
            _ => continue,
        };
        track.alert = change == Change::Raised;
        outcome.changes[slot] = Some((
            change,
            AlertEvent {
                metric,
                average,
                limit,
            },
        ));
    }
    if config.ventilation && ventilating != state.alerts() {
        outcome.ventilation = Some(if ventilating {
            Ventilation::Off
        } else {
            Ventilation::On
        });
    }
    outcome
}

/// One interaction on the CBOR inputs: the new state (to persist) and what changed.
pub fn handle(
    message: &[u8],
    config: &[u8],
    state: Option<&[u8]>,
) -> Result<(State, Outcome), Reject> {
    let reading: Reading = cbor::from_slice(message).map_err(|_| Reject::Message)?;
    let config: Config = cbor::config_or_default(config).map_err(|_| Reject::Config)?;
    let mut state: State = match state {
        Some(bytes) => cbor::from_slice(bytes).map_err(|_| Reject::State)?,
        None => State::default(),
    };
    let outcome = record(&mut state, reading, &config);
    Ok((state, outcome))
}

impl<C> Encode<C> for Ventilation {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _: &mut C,
    ) -> Result<(), encode::Error<W::Error>> {
        let vent = match self {
            Ventilation::On => "on",
            Ventilation::Off => "off",
        };
        e.map(1)?.str("vent")?.str(vent)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Ventilation {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, decode::Error> {
        let at = d.position();
        let mut vent = None;
        cbor::map_entries(d, |key, d| {
            if key != "vent" {
                return Ok(false);
            }
            vent = Some(d.str()?);
            Ok(true)
        })?;
        match vent {
            Some("on") => Ok(Ventilation::On),
            Some("off") => Ok(Ventilation::Off),
            Some(_) => Err(decode::Error::message("unknown vent").at(at)),
            None => Err(cbor::missing("missing vent", at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        cbor::to_slice(value, &mut buf).unwrap().to_vec()
    }

    fn pm25(value: f32) -> Reading {
        Reading {
            pm25: Some(value),
            co2: None,
        }
    }

    fn config(window: u8, ventilation: bool) -> Config {
        Config {
            window,
            ventilation,
            ..Config::default()
        }
    }

    #[test]
    fn an_alert_is_raised_when_the_average_crosses_the_limit_and_cleared_when_it_falls_back() {
        let config = config(3, true);
        let mut state = State::default();
        assert_eq!(record(&mut state, pm25(20.0), &config), Outcome::default());
        assert_eq!(record(&mut state, pm25(30.0), &config), Outcome::default());
        // (20 + 30 + 60) / 3 = 36.67 > 35
        let raised = record(&mut state, pm25(60.0), &config);
        let (change, event) = raised.changes[0].unwrap();
        assert_eq!(change, Change::Raised);
        assert_eq!(event.metric, Metric::Pm25);
        assert!(
            (event.average - 36.666_668).abs() < 1e-4,
            "{}",
            event.average
        );
        assert_eq!(event.limit, 35.0);
        assert_eq!(raised.ventilation, Some(Ventilation::On));
        assert!(state.pm25.alert);

        // (30 + 60 + 40) / 3 = 43.3: still raised, nothing new.
        assert_eq!(record(&mut state, pm25(40.0), &config), Outcome::default());
        // (60 + 40 + 5) / 3 = 35: at the limit, cleared.
        let cleared = record(&mut state, pm25(5.0), &config);
        assert_eq!(
            cleared.changes[0],
            Some((
                Change::Cleared,
                AlertEvent {
                    metric: Metric::Pm25,
                    average: 35.0,
                    limit: 35.0
                }
            ))
        );
        assert_eq!(cleared.ventilation, Some(Ventilation::Off));
        assert_eq!(state.pm25.window.samples(), &[60.0, 40.0, 5.0]);
    }

    #[test]
    fn ventilation_follows_the_first_and_the_last_alert() {
        let config = config(1, true);
        let mut state = State::default();
        let both = Reading {
            pm25: Some(50.0),
            co2: Some(800.0),
        };
        assert_eq!(
            record(&mut state, both, &config).ventilation,
            Some(Ventilation::On)
        );
        let co2_high = Reading {
            pm25: None,
            co2: Some(1500.0),
        };
        let outcome = record(&mut state, co2_high, &config);
        assert_eq!(outcome.changes[1].map(|(c, _)| c), Some(Change::Raised));
        assert_eq!(outcome.ventilation, None, "already ventilating");
        let pm25_clear = record(&mut state, pm25(10.0), &config);
        assert_eq!(pm25_clear.changes[0].map(|(c, _)| c), Some(Change::Cleared));
        assert_eq!(pm25_clear.ventilation, None, "CO₂ still high");
        let co2_clear = Reading {
            pm25: None,
            co2: Some(400.0),
        };
        assert_eq!(
            record(&mut state, co2_clear, &config).ventilation,
            Some(Ventilation::Off)
        );
    }

    #[test]
    fn no_ventilation_commands_when_disabled() {
        let mut state = State::default();
        let outcome = record(&mut state, pm25(500.0), &config(1, false));
        assert!(outcome.changes[0].is_some());
        assert_eq!(outcome.ventilation, None);
    }

    #[test]
    fn a_metric_absent_from_a_reading_keeps_its_window() {
        let config = config(5, true);
        let mut state = State::default();
        record(&mut state, pm25(1.0), &config);
        record(
            &mut state,
            Reading {
                pm25: None,
                co2: Some(600.0),
            },
            &config,
        );
        assert_eq!(state.pm25.window.samples(), &[1.0]);
        assert_eq!(state.co2.window.samples(), &[600.0]);
    }

    #[test]
    fn handle_persists_state_through_cbor() {
        let config = encoded(&config(2, true));
        let (state, outcome) = handle(&encoded(&pm25(30.0)), &config, None).unwrap();
        assert_eq!(outcome, Outcome::default());
        let persisted = encoded(&state);
        let (state, outcome) = handle(&encoded(&pm25(50.0)), &config, Some(&persisted)).unwrap();
        assert_eq!(outcome.changes[0].unwrap().1.average, 40.0);
        assert_eq!(state.pm25.window.samples(), &[30.0, 50.0]);
        assert!(state.pm25.alert);
        assert_eq!(cbor::from_slice::<State>(&encoded(&state)).unwrap(), state);
    }

    #[test]
    fn a_full_state_fits_the_guest_buffer() {
        let mut state = State::default();
        for i in 0..MAX_WINDOW {
            state.pm25.window.push(i as f32 + 0.5, MAX_WINDOW);
            state.co2.window.push(i as f32 + 400.5, MAX_WINDOW);
        }
        assert!(encoded(&state).len() <= STATE_BYTES);
    }

    #[test]
    fn empty_config_defaults_and_malformed_inputs() {
        let (_, outcome) = handle(&encoded(&pm25(36.0)), &[], None).unwrap();
        assert_eq!(
            outcome.changes[0].unwrap().0,
            Change::Raised,
            "default limit 35"
        );
        assert_eq!(
            handle(&[0xa0], &[], None),
            Err(Reject::Message),
            "no metric"
        );
        // {"pm25": "high"}
        assert_eq!(
            handle(b"\xa1\x64pm25\x64high", &[], None),
            Err(Reject::Message)
        );
        // {"window": 0}
        assert_eq!(
            handle(&encoded(&pm25(1.0)), b"\xa1\x66window\x00", None),
            Err(Reject::Config)
        );
        // {"window": 61}
        assert_eq!(
            handle(&encoded(&pm25(1.0)), b"\xa1\x66window\x18\x3d", None),
            Err(Reject::Config)
        );
        // {"pm25": {"alert": 1}}
        assert_eq!(
            handle(
                &encoded(&pm25(1.0)),
                &[],
                Some(b"\xa1\x64pm25\xa1\x65alert\x01")
            ),
            Err(Reject::State)
        );
    }

    #[test]
    fn payloads_round_trip() {
        let event = AlertEvent {
            metric: Metric::Co2,
            average: 1234.5,
            limit: 1000.0,
        };
        assert_eq!(
            cbor::from_slice::<AlertEvent>(&encoded(&event)).unwrap(),
            event
        );
        assert_eq!(encoded(&Ventilation::On), b"\xa1\x64vent\x62on".to_vec());
        for vent in [Ventilation::On, Ventilation::Off] {
            assert_eq!(
                cbor::from_slice::<Ventilation>(&encoded(&vent)).unwrap(),
                vent
            );
        }
        let reading = Reading {
            pm25: Some(12.5),
            co2: Some(640.0),
        };
        assert_eq!(
            cbor::from_slice::<Reading>(&encoded(&reading)).unwrap(),
            reading
        );
    }
}
