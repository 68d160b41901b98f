//! The `wasm32` glue: reads the attempt, config, state and time from the agent, runs
//! [`crate::handle`], and emits the command, the new state and the lockout event.

use edgefleet_guest::{self as guest, Reject, cbor};

use crate::LOCKOUT_TOPIC;

/// Credential ids are short; an allow-list of a hundred fits the config buffer.
const CONFIG_BYTES: usize = 4096;
const MESSAGE_BYTES: usize = 256;

fn handle() -> Result<(), Reject> {
    let mut message = [0u8; MESSAGE_BYTES];
    let mut config = [0u8; CONFIG_BYTES];
    let mut state = [0u8; 64];
    let message = guest::message(&mut message).map_err(|_| Reject::Message)?;
    let config = guest::config(&mut config).map_err(|_| Reject::Config)?;
    let state = guest::state(&mut state).map_err(|_| Reject::State)?;
    let outcome = crate::handle(message, config, state, guest::now_ms())?;

    // The lockout event repeats the credential, which is at most the message's size.
    let mut out = [0u8; MESSAGE_BYTES + 64];
    guest::command(cbor::to_slice(&outcome.command, &mut out).map_err(|_| Reject::Output)?);
    if let Some(state) = outcome.state {
        guest::set_state(cbor::to_slice(&state, &mut out).map_err(|_| Reject::Output)?);
    }
    if let Some(lockout) = outcome.lockout {
        guest::publish(
            LOCKOUT_TOPIC,
            cbor::to_slice(&lockout, &mut out).map_err(|_| Reject::Output)?,
        );
    }
    Ok(())
}

guest::handler!(handle);
