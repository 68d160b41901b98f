//! The `wasm32` glue: reads the interaction's inputs from the agent, runs [`crate::handle`], persists
//! the window and publishes the events; plus the `edgefleet_bench_stats` export.

use edgefleet_guest::{self as guest, Reject, cbor};

use crate::{ANOMALY_TOPIC, STATE_BYTES, SUMMARY_TOPIC, State};

fn handle() -> Result<(), Reject> {
    let mut message = [0u8; 128];
    let mut config = [0u8; 256];
    let mut state_bytes = [0u8; STATE_BYTES];
    let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
    let config = guest::config(&mut config).map_err(|_| Reject::Config)?;
    let mut state = State::default();
    state.load(guest::state(&mut state_bytes).map_err(|_| Reject::State)?)?;
    let outcome = crate::handle(message, config, &mut state)?;

    guest::set_state(cbor::to_slice(&state, &mut state_bytes).map_err(|_| Reject::Output)?);
    let mut out = [0u8; 128];
    if let Some(anomaly) = outcome.anomaly {
        guest::publish(
            ANOMALY_TOPIC,
            cbor::to_slice(&anomaly, &mut out).map_err(|_| Reject::Output)?,
        );
    }
    if let Some(summary) = outcome.summary {
        guest::publish(
            SUMMARY_TOPIC,
            cbor::to_slice(&summary, &mut out).map_err(|_| Reject::Output)?,
        );
    }
    Ok(())
}

guest::handler!(handle);

/// The compute benchmark, [`crate::bench_stats`] (a negative `rounds` is 0). Not part of the handler
/// ABI: the agent ignores this export.
#[unsafe(no_mangle)]
pub extern "C" fn edgefleet_bench_stats(rounds: i32) -> f64 {
    crate::bench_stats(u32::try_from(rounds).unwrap_or(0))
}
