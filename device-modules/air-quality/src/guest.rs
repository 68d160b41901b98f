//! The `wasm32` glue: reads the interaction's inputs from the agent, runs [`crate::handle`], persists
//! the windows, publishes alert changes and commands the ventilation.

use edgefleet_guest::{self as guest, Reject, cbor};

use crate::STATE_BYTES;

fn handle() -> Result<(), Reject> {
    let mut message = [0u8; 128];
    let mut config = [0u8; 256];
    let mut state = [0u8; STATE_BYTES];
    let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
    let config = guest::config(&mut config).map_err(|_| Reject::Config)?;
    let old_state = guest::state(&mut state).map_err(|_| Reject::State)?;
    let (new_state, outcome) = crate::handle(message, config, old_state)?;

    guest::set_state(cbor::to_slice(&new_state, &mut state).map_err(|_| Reject::Output)?);
    let mut out = [0u8; 64];
    for (change, event) in outcome.changes.into_iter().flatten() {
        guest::publish(
            change.topic(),
            cbor::to_slice(&event, &mut out).map_err(|_| Reject::Output)?,
        );
    }
    if let Some(ventilation) = outcome.ventilation {
        guest::command(cbor::to_slice(&ventilation, &mut out).map_err(|_| Reject::Output)?);
    }
    Ok(())
}

guest::handler!(handle);
