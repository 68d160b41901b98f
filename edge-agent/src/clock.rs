//! Wall-clock time as the protocol carries it: milliseconds since the UNIX epoch. One place, so that
//! every timestamp the agent writes (events, status, link conditions) is read the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
