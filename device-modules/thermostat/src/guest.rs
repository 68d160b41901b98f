//! The `wasm32` glue: reads the interaction's inputs from the agent, runs [`crate::handle`], and
//! emits its outputs. Buffers live on the stack and are sized for the payloads this class uses.

use edgefleet_guest::{self as guest, Reject, cbor};

use crate::{State, TELEMETRY_TOPIC};

fn handle() -> Result<(), Reject> {
    let mut message = [0u8; 128];
    let mut config = [0u8; 128];
    let mut state = [0u8; 32];
    let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
    let config = guest::config(&mut config).map_err(|_| Reject::Config)?;
    let state = guest::state(&mut state).map_err(|_| Reject::State)?;
    let outcome = crate::handle(message, config, state)?;

    let mut out = [0u8; 64];
    guest::command(cbor::to_slice(&outcome.command, &mut out).map_err(|_| Reject::Output)?);
    if let Some(telemetry) = outcome.change {
        let state = State {
            mode: telemetry.mode,
        };
        guest::set_state(cbor::to_slice(&state, &mut out).map_err(|_| Reject::Output)?);
        guest::publish(
            TELEMETRY_TOPIC,
            cbor::to_slice(&telemetry, &mut out).map_err(|_| Reject::Output)?,
        );
    }
    Ok(())
}

guest::handler!(handle);
