//! Smart-meter handler: a rolling window of consumption samples, anomaly events and summaries.
//!
//! Each reading carries the energy consumed since the previous one. The handler keeps the last `window`
//! samples (up to [`MAX_WINDOW`]) in device state. A sample deviating from the window's mean by more
//! than `sigma` standard deviations (population standard deviation of the window *before* the sample,
//! once the window holds `min_samples`) is published on `event/anomaly`. The sample then joins the
//! window either way, so a lasting change of consumption becomes the new normal. Every
//! `summary_every` samples the window's statistics are published on `telemetry`. A window whose
//! samples are all equal has no spread to measure deviations against: no anomaly is reported.
//!
//! | payload | keys |
//! |---|---|
//! | reading (device → handler) | `wh`: number, energy consumed since the previous reading |
//! | config | `window`: 2..=1000 (default 100), `sigma`: number > 0 (default 3.0), `min_samples`: 2..=`window` (default 10), `summary_every`: samples between summaries, 0 = never (default 10) |
//! | state | `window`: array of numbers, oldest first; `seen`: samples received in total |
//! | `event/anomaly` | `wh`: number, `mean`, `stddev`: the window's, `sigmas`: the deviation in standard deviations |
//! | `telemetry` (summary) | `samples`: window length, `mean`, `stddev`, `last`: the newest sample, `seen` |
//!
//! The meter sends no commands.
//!
//! # Compute benchmark
//!
//! [`stats`] is the statistics over a window: one pass for the mean, one for the variance, in `f64`,
//! and a correctly rounded square root (`libm`: `core` has none on stable Rust).
//! [`bench_stats`] runs it over the deterministic 1,000-sample [`bench_window`], and the wasm module
//! exports the same computation as `edgefleet_bench_stats(rounds: i32) -> f64` (a negative `rounds` is
//! 0), outside the handler ABI, so a benchmark can compare native code with the module run by the
//! agent's runtime. Both use the same IEEE operations in the same order, so they return the same value
//! bit for bit.
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod guest;

use edgefleet_guest::Reject;
use edgefleet_guest::cbor::{self, Field};
use edgefleet_guest::minicbor::Decoder;
use edgefleet_guest::window::Window;

/// The largest window a meter class can configure.
pub const MAX_WINDOW: usize = 1000;

/// Bytes the guest reserves for the encoded state: a full window of `f32` samples (5 bytes each in
/// CBOR) with its keys and headers is 5,025.
pub const STATE_BYTES: usize = 5120;

/// The topic of [`Anomaly`] events.
pub const ANOMALY_TOPIC: &str = "event/anomaly";

/// The topic of [`Summary`] telemetry.
pub const SUMMARY_TOPIC: &str = "telemetry";

/// A reading from the meter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Energy consumed since the previous reading, in watt-hours.
    pub wh: f32,
}

cbor::map! {
    Reading { "wh" => wh }
}

/// The class config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Samples kept, `2..=MAX_WINDOW`.
    pub window: u16,
    /// Deviation, in standard deviations, beyond which a sample is an anomaly (> 0).
    pub sigma: f32,
    /// Samples the window needs before anomalies are detected, `2..=window`.
    pub min_samples: u16,
    /// A summary every this many samples; 0 = never.
    pub summary_every: u32,
}

cbor::map! {
    Config {
        "window" => window = 100,
        "sigma" => sigma = 3.0,
        "min_samples" => min_samples = 10,
        "summary_every" => summary_every = 10,
    }
    check Config::check
}

impl Config {
    fn check(&self) -> Result<(), &'static str> {
        let windows = 2..=MAX_WINDOW as u16;
        if !windows.contains(&self.window) || !windows.contains(&self.min_samples) {
            return Err("value out of range");
        }
        if self.sigma <= 0.0 {
            return Err("sigma must be positive");
        }
        if self.min_samples > self.window {
            return Err("min_samples exceeds window");
        }
        Ok(())
    }
}

/// The device state.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The latest samples, oldest first.
    pub window: Window<MAX_WINDOW>,
    /// Samples received in total.
    pub seen: u64,
}

cbor::map! {
    State {
        "window" => window = Window::new(),
        "seen" => seen = 0,
    }
}

impl State {
    /// Replaces this state with the one persisted for a device (no state: an empty window), decoded in
    /// place.
    pub fn load(&mut self, bytes: Option<&[u8]>) -> Result<(), Reject> {
        *self = State::default();
        let Some(bytes) = bytes else {
            return Ok(());
        };
        let mut d = Decoder::new(bytes);
        match self.decode_field_in_place(&mut d) {
            Ok(()) if d.position() == bytes.len() => Ok(()),
            _ => Err(Reject::State),
        }
    }
}

/// Count, mean and population standard deviation of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub mean: f64,
    pub stddev: f64,
}

/// Published on [`ANOMALY_TOPIC`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anomaly {
    pub wh: f32,
    pub mean: f64,
    pub stddev: f64,
    /// `|wh − mean| / stddev`.
    pub sigmas: f64,
}

cbor::map! {
    Anomaly {
        "wh" => wh,
        "mean" => mean,
        "stddev" => stddev,
        "sigmas" => sigmas,
    }
}

/// Published on [`SUMMARY_TOPIC`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub samples: u32,
    pub mean: f64,
    pub stddev: f64,
    pub last: f32,
    pub seen: u64,
}

cbor::map! {
    Summary {
        "samples" => samples,
        "mean" => mean,
        "stddev" => stddev,
        "last" => last,
        "seen" => seen,
    }
}

/// What one reading produces besides the new state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    pub anomaly: Option<Anomaly>,
    pub summary: Option<Summary>,
}

/// Statistics over `samples` (zeros for an empty window), in `f64`: the mean, then the population
/// variance around it.
pub fn stats(samples: &[f32]) -> Stats {
    let count = samples.len();
    if count == 0 {
        return Stats {
            count,
            mean: 0.0,
            stddev: 0.0,
        };
    }
    let n = count as f64;
    let mean = samples.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let variance = samples
        .iter()
        .map(|&x| {
            let d = f64::from(x) - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    Stats {
        count,
        mean,
        stddev: libm::sqrt(variance),
    }
}

/// The anomaly `wh` is against a window with statistics `before`, if it is one under `config`.
pub fn anomaly(before: &Stats, wh: f32, config: &Config) -> Option<Anomaly> {
    if before.count < usize::from(config.min_samples) || before.stddev == 0.0 {
        return None;
    }
    let sigmas = (f64::from(wh) - before.mean).abs() / before.stddev;
    (sigmas > f64::from(config.sigma)).then_some(Anomaly {
        wh,
        mean: before.mean,
        stddev: before.stddev,
        sigmas,
    })
}

/// Adds one reading to `state` and says what to publish.
pub fn record(state: &mut State, reading: Reading, config: &Config) -> Outcome {
    let anomaly = anomaly(&stats(state.window.samples()), reading.wh, config);
    state.window.push(reading.wh, usize::from(config.window));
    state.seen += 1;
    let summary_due =
        config.summary_every != 0 && state.seen.is_multiple_of(u64::from(config.summary_every));
    let summary = summary_due.then(|| {
        let now = stats(state.window.samples());
        Summary {
            samples: state.window.len() as u32,
            mean: now.mean,
            stddev: now.stddev,
            last: reading.wh,
            seen: state.seen,
        }
    });
    Outcome { anomaly, summary }
}

/// One interaction on the CBOR message and config: updates `state` (read with [`State::load`], to be
/// persisted afterwards) and says what to publish.
pub fn handle(message: &[u8], config: &[u8], state: &mut State) -> Result<Outcome, Reject> {
    let reading: Reading = cbor::from_slice(message).map_err(|_| Reject::Message)?;
    let config: Config = cbor::config_or_default(config).map_err(|_| Reject::Config)?;
    Ok(record(state, reading, &config))
}

/// Samples in [`bench_window`].
pub const BENCH_SAMPLES: usize = 1000;

/// The benchmark window: 1,000 consumption samples between 500 and 700 Wh from a fixed linear
/// congruential generator.
pub fn bench_window() -> [f32; BENCH_SAMPLES] {
    let mut x: u64 = 0x5eed;
    core::array::from_fn(|_| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        500.0 + ((x >> 40) % 2000) as f32 / 10.0
    })
}

/// The compute benchmark: `rounds` times, adds 1 Wh to one sample of [`bench_window`] (sample
/// `round % 1000`, so no round repeats another) and computes [`stats`]; returns the sum of
/// `mean + stddev` over the rounds.
pub fn bench_stats(rounds: u32) -> f64 {
    let mut window = bench_window();
    let mut total = 0.0;
    for round in 0..rounds as usize {
        window[round % BENCH_SAMPLES] += 1.0;
        let s = stats(&window);
        total += s.mean + s.stddev;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_guest::minicbor::Encode;
    use std::vec::Vec;

    fn encoded<T: Encode<()>>(value: &T) -> Vec<u8> {
        let mut buf = std::vec![0u8; 8192];
        let len = cbor::to_slice(value, &mut buf).unwrap().len();
        buf.truncate(len);
        buf
    }

    fn config(window: u16, sigma: f32, min_samples: u16, summary_every: u32) -> Config {
        Config {
            window,
            sigma,
            min_samples,
            summary_every,
        }
    }

    #[test]
    fn stats_are_the_mean_and_population_standard_deviation() {
        let s = stats(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(
            s,
            Stats {
                count: 8,
                mean: 5.0,
                stddev: 2.0
            }
        );
        assert_eq!(stats(&[]).count, 0);
        assert_eq!(stats(&[3.5]).stddev, 0.0);
    }

    #[test]
    fn stats_stay_accurate_for_large_values_with_small_spread() {
        // A naive sum-of-squares formula loses the spread of values around 1e6 in cancellation.
        let samples: Vec<f32> = (0..1000).map(|i| 1_000_000.0 + (i % 2) as f32).collect();
        let s = stats(&samples);
        assert_eq!(s.mean, 1_000_000.5);
        assert_eq!(s.stddev, 0.5);
    }

    #[test]
    fn bench_window_is_deterministic_and_in_range() {
        let w = bench_window();
        assert_eq!(w, bench_window());
        assert!(w.iter().all(|&x| (500.0..700.0).contains(&x)));
        let s = stats(&w);
        assert!((590.0..610.0).contains(&s.mean), "mean {}", s.mean);
        assert!(
            (50.0..65.0).contains(&s.stddev),
            "uniform spread ≈ 200/√12 ≈ 57.7: {}",
            s.stddev
        );
    }

    #[test]
    fn bench_stats_accumulates_one_perturbed_window_per_round() {
        assert_eq!(bench_stats(0), 0.0);
        let mut w = bench_window();
        w[0] += 1.0;
        let first = stats(&w);
        assert_eq!(bench_stats(1), first.mean + first.stddev);
        w[1] += 1.0;
        let second = stats(&w);
        assert_eq!(
            bench_stats(2),
            first.mean + first.stddev + second.mean + second.stddev
        );
    }

    #[test]
    fn a_sample_beyond_sigma_is_an_anomaly_against_the_window_before_it() {
        let config = config(100, 3.0, 4, 0);
        let mut state = State::default();
        for wh in [100.0, 110.0, 90.0, 100.0] {
            assert_eq!(record(&mut state, Reading { wh }, &config).anomaly, None);
        }
        // Window mean 100, stddev √50 ≈ 7.07: 3σ ≈ 21.2.
        assert_eq!(
            record(&mut state, Reading { wh: 121.0 }, &config).anomaly,
            None
        );
        let before = stats(state.window.samples());
        let outcome = record(&mut state, Reading { wh: 200.0 }, &config);
        let anomaly = outcome.anomaly.expect("200 Wh is far beyond 3σ");
        assert_eq!(anomaly.mean, before.mean);
        assert_eq!(anomaly.stddev, before.stddev);
        assert!((anomaly.sigmas - (200.0 - before.mean) / before.stddev).abs() < 1e-12);
        assert_eq!(
            state.window.samples(),
            &[100.0, 110.0, 90.0, 100.0, 121.0, 200.0]
        );
        assert_eq!(state.seen, 6);
    }

    #[test]
    fn no_anomaly_before_min_samples_or_without_spread() {
        let config = config(100, 3.0, 5, 0);
        let mut state = State::default();
        for wh in [100.0, 100.0, 100.0, 100.0] {
            record(&mut state, Reading { wh }, &config);
        }
        assert_eq!(
            record(&mut state, Reading { wh: 900.0 }, &config).anomaly,
            None,
            "4 < 5 samples"
        );
        let mut flat = State::default();
        for _ in 0..10 {
            record(&mut flat, Reading { wh: 50.0 }, &config);
        }
        assert_eq!(
            record(&mut flat, Reading { wh: 51.0 }, &config).anomaly,
            None
        );
    }

    #[test]
    fn the_window_keeps_the_configured_number_of_samples() {
        let mut state = State::default();
        for i in 0..1500 {
            record(
                &mut state,
                Reading { wh: i as f32 },
                &config(1000, 3.0, 10, 0),
            );
        }
        assert_eq!(state.window.len(), 1000);
        assert_eq!(state.window.samples()[0], 500.0);
        record(&mut state, Reading { wh: 1.0 }, &config(3, 3.0, 2, 0));
        assert_eq!(state.window.samples(), &[1498.0, 1499.0, 1.0]);
    }

    #[test]
    fn a_summary_every_n_samples() {
        let config = config(4, 3.0, 2, 3);
        let mut state = State::default();
        let summaries: Vec<Option<Summary>> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            .into_iter()
            .map(|wh| record(&mut state, Reading { wh }, &config).summary)
            .collect();
        assert_eq!(summaries.iter().filter(|s| s.is_some()).count(), 2);
        assert_eq!(
            summaries[5],
            Some(Summary {
                samples: 4,
                mean: 4.5,
                stddev: stats(&[3.0, 4.0, 5.0, 6.0]).stddev,
                last: 6.0,
                seen: 6
            })
        );
    }

    #[test]
    fn handle_through_cbor_with_state_round_trips() {
        let mut state = State::default();
        state.load(None).unwrap();
        let config = encoded(&config(10, 2.0, 3, 0));
        for wh in [10.0, 11.0, 9.0, 10.0] {
            let outcome = handle(&encoded(&Reading { wh }), &config, &mut state).unwrap();
            assert_eq!(outcome, Outcome::default());
            let persisted = encoded(&state);
            state.load(Some(&persisted)).unwrap();
        }
        let outcome = handle(&encoded(&Reading { wh: 30.0 }), &config, &mut state).unwrap();
        assert!(outcome.anomaly.is_some());
        let event = encoded(&outcome.anomaly.unwrap());
        assert_eq!(
            cbor::from_slice::<Anomaly>(&event).unwrap(),
            outcome.anomaly.unwrap()
        );
        assert_eq!(state.seen, 5);
    }

    #[test]
    fn a_full_window_state_fits_the_guest_buffer() {
        let mut state = State::default();
        for i in 0..MAX_WINDOW {
            state.window.push(i as f32 + 0.5, MAX_WINDOW);
        }
        state.seen = u64::MAX;
        let bytes = encoded(&state);
        assert!(bytes.len() <= STATE_BYTES, "{} bytes", bytes.len());
        let mut loaded = State::default();
        loaded.load(Some(&bytes)).unwrap();
        assert_eq!(loaded, state);
    }

    #[test]
    fn empty_config_is_the_default_and_bad_configs_are_rejected() {
        let reading = encoded(&Reading { wh: 1.0 });
        let mut state = State::default();
        assert!(handle(&reading, &[], &mut state).is_ok());
        for bad in [
            config(1, 3.0, 2, 0),
            config(1001, 3.0, 2, 0),
            config(10, 0.0, 2, 0),
            config(10, 3.0, 11, 0),
        ] {
            assert_eq!(
                handle(&reading, &encoded(&bad), &mut state),
                Err(Reject::Config),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn malformed_messages_and_states_are_rejected() {
        let mut state = State::default();
        assert_eq!(handle(&[0xa0], &[], &mut state), Err(Reject::Message));
        // {"wh": "12"}
        assert_eq!(
            handle(&[0xa1, 0x62, b'w', b'h', 0x62, b'1', b'2'], &[], &mut state),
            Err(Reject::Message)
        );
        let mut state = State::default();
        assert_eq!(state.load(Some(b"\xa1\x66window\x01")), Err(Reject::State));
        assert_eq!(state.load(Some(&[])), Err(Reject::State));
        assert_eq!(
            state.load(Some(&[0xa0, 0x00])),
            Err(Reject::State),
            "trailing bytes"
        );
        assert_eq!(state.load(Some(&[0xa0])), Ok(()));
    }
}
