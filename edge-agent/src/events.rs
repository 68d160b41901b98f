//! Agent events (`ef/v1/node/<node>/event`, through the outbox) and the throttle on those that
//! device traffic causes.
//!
//! A chatty device with a broken handler, or one that sends garbage, must not fill the outbox with
//! events and — under its drop-oldest policy — push real telemetry out. Events caused by device
//! traffic therefore pass [`EventThrottle`]: at most one per kind per window (10 s), and at most
//! [`GLOBAL_BURST`] of all kinds per window. The key is the event's kind alone, never a name taken
//! from the device (class or device id from the topic): a device that invents a new class name per
//! message neither bypasses the throttle nor grows its map. What is held back is counted in
//! `edgefleet_agent_events_suppressed_total`; the metrics keep every count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_protocol::event::{AgentEvent, EventKind};

use crate::context::Context;
use crate::store::OutboxEntry;

/// Events of all kinds let through per window, at most.
pub const GLOBAL_BURST: u32 = 8;

/// See the module documentation.
#[derive(Debug)]
pub struct EventThrottle {
    window: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    last: HashMap<EventKind, Instant>,
    window_start: Instant,
    in_window: u32,
}

impl EventThrottle {
    pub fn new(window: Duration) -> EventThrottle {
        EventThrottle {
            window,
            state: Mutex::new(ThrottleState {
                last: HashMap::new(),
                window_start: Instant::now(),
                in_window: 0,
            }),
        }
    }

    fn allows(&self, kind: EventKind, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.in_window = 0;
        }
        if state.in_window >= GLOBAL_BURST {
            return false;
        }
        match state.last.get(&kind) {
            Some(at) if now.saturating_duration_since(*at) < self.window => false,
            _ => {
                state.last.insert(kind, now);
                state.in_window += 1;
                true
            }
        }
    }
}

/// Reports an event caused by device traffic, subject to the context's [`EventThrottle`].
pub fn report_traffic(ctx: &Context, event: AgentEvent) {
    if ctx.throttle.allows(event.kind, Instant::now()) {
        report(ctx, event);
    } else {
        ctx.metrics.events_suppressed.inc();
    }
}

/// Appends an agent event to the outbox.
pub fn report(ctx: &Context, event: AgentEvent) {
    match ctx.store.outbox_append(&[OutboxEntry::Event(event)]) {
        Ok(appended) => {
            ctx.metrics.outbox_dropped.inc_by(appended.dropped);
            ctx.outbox_ready.notify_one();
        }
        Err(e) => tracing::error!("cannot store an agent event: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_kind_per_window_and_a_global_cap() {
        let throttle = EventThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(throttle.allows(EventKind::MalformedPayload, t0));
        assert!(!throttle.allows(EventKind::MalformedPayload, t0));
        assert!(throttle.allows(EventKind::UnknownClass, t0));
        assert!(!throttle.allows(EventKind::UnknownClass, t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert!(throttle.allows(EventKind::UnknownClass, t1));
        let instant = EventThrottle::new(Duration::ZERO);
        assert!(instant.allows(EventKind::MalformedPayload, t0));
        assert!(instant.allows(EventKind::MalformedPayload, t0));
    }

    #[test]
    fn the_global_cap_holds_whatever_the_kinds() {
        let throttle = EventThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let kinds = [
            EventKind::MalformedPayload,
            EventKind::UnknownClass,
            EventKind::BadTopic,
            EventKind::OversizedPayload,
            EventKind::InteractionFailed,
            EventKind::ModuleQuarantined,
        ];
        let mut allowed = 0;
        for round in 0..4 {
            for kind in kinds {
                if throttle.allows(kind, t0 + Duration::from_millis(round)) {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, kinds.len() as u32);
        assert!(allowed <= GLOBAL_BURST);
    }
}
