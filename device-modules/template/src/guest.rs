//! The `wasm32` glue: reads the interaction's inputs from the agent, runs [`crate::handle`], and
//! emits its outputs. Buffers live on the stack (16 KiB) and are sized for this class's payloads: a
//! larger input is rejected, never truncated.

use edgefleet_guest::{self as guest, Level, Reject, cbor};

use crate::{Command, EVENT_TOPIC, State};

fn handle() -> Result<(), Reject> {
    let mut message = [0u8; 128];
    let mut config = [0u8; 128];
    let mut state = [0u8; 32];
    let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
    let config = guest::config(&mut config).map_err(|_| Reject::Config)?;
    let state = guest::state(&mut state).map_err(|_| Reject::State)?;
    let Some(event) = crate::handle(message, config, state)? else {
        return Ok(());
    };

    let mut out = [0u8; 64];
    let alarm = event.alarm;
    guest::command(cbor::to_slice(&Command { alarm }, &mut out).map_err(|_| Reject::Output)?);
    guest::set_state(cbor::to_slice(&State { alarm }, &mut out).map_err(|_| Reject::Output)?);
    guest::publish(
        EVENT_TOPIC,
        cbor::to_slice(&event, &mut out).map_err(|_| Reject::Output)?,
    );
    guest::log(Level::Info, alarm.as_str());
    Ok(())
}

guest::handler!(handle);
