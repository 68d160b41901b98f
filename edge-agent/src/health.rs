//! Readiness that tells the truth: `/readyz` answers 503, with the reasons in its body and in
//! `edgefleet_agent_unready{reason}`, whenever device messages are not making progress.
//!
//! A watchdog task looks once per [`WATCH_INTERVAL`] at what the agent is doing ([`Observations`])
//! and [`assess`]es it — a pure function, unit-tested apart from any I/O. The node is unready when:
//!
//! | reason | condition |
//! |---|---|
//! | `device_link_down` | the device link is not connected |
//! | `intake_stalled` | the oldest message waiting in the intake is older than `stall_after` |
//! | `lane_stuck` | a message has been in a lane (sandbox, commit, flush) longer than `stall_after` |
//! | `flush_failing` | the last flush of the store failed |
//! | `host_fault` | a host-side fault left devices held (unacknowledged, waiting for redelivery) longer than `stall_after` |
//!
//! Each transition is logged with what is stuck. An orchestrator that stops routing to (or restarts)
//! an unready node is the intended reaction; the agent itself keeps retrying.

use std::sync::Mutex;
use std::time::Duration;

use crate::metrics::{AgentMetrics, ReasonLabels};

/// How often the watchdog looks.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Every reason, for the metric (each is 0 or 1).
const REASONS: [&str; 5] = [
    "device_link_down",
    "intake_stalled",
    "lane_stuck",
    "flush_failing",
    "host_fault",
];

/// What the watchdog sees, once per look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    pub device_link_connected: bool,
    /// Age of the oldest message waiting in the intake.
    pub oldest_waiting: Option<Duration>,
    /// Longest time a message has been in a lane.
    pub longest_in_lane: Option<Duration>,
    /// Since when flushes fail (none when the last one succeeded).
    pub flush_failing_for: Option<Duration>,
    /// Since when some device is held after a host fault.
    pub held_for: Option<Duration>,
}

/// One reason for being unready, with what the watchdog saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unready {
    pub reason: &'static str,
    pub detail: String,
}

/// The reasons the node is unready now; empty when ready.
pub fn assess(seen: &Observations, stall_after: Duration) -> Vec<Unready> {
    let mut unready = Vec::new();
    let mut push = |reason, detail: String| unready.push(Unready { reason, detail });
    if !seen.device_link_connected {
        push(
            "device_link_down",
            "the device link is not connected to the device broker".into(),
        );
    }
    if let Some(age) = seen.oldest_waiting.filter(|age| *age > stall_after) {
        push(
            "intake_stalled",
            format!("a device message has waited {age:.1?} for a lane (bound {stall_after:?})"),
        );
    }
    if let Some(age) = seen.longest_in_lane.filter(|age| *age > stall_after) {
        push(
            "lane_stuck",
            format!(
                "a device message has been in a lane (sandbox, commit or flush) for {age:.1?} (bound {stall_after:?})"
            ),
        );
    }
    if let Some(age) = seen.flush_failing_for {
        push(
            "flush_failing",
            format!("flushing the store has failed for {age:.1?}; messages stay unacknowledged"),
        );
    }
    if let Some(age) = seen.held_for.filter(|age| *age > stall_after) {
        push(
            "host_fault",
            format!(
                "host-side faults have kept device messages unacknowledged for {age:.1?}; see the host_faults metric and the log"
            ),
        );
    }
    unready
}

/// The latest assessment, read by `/readyz`.
#[derive(Debug)]
pub struct Health {
    state: Mutex<Vec<Unready>>,
}

impl Default for Health {
    /// Unready until the watchdog first looks.
    fn default() -> Self {
        Health {
            state: Mutex::new(vec![Unready {
                reason: "starting",
                detail: "the agent is starting".into(),
            }]),
        }
    }
}

impl Health {
    /// The reasons for being unready now (empty: ready).
    pub fn unready(&self) -> Vec<Unready> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records an assessment: metrics, and a log line when the verdict changes.
    pub fn record(&self, unready: Vec<Unready>, metrics: &AgentMetrics) {
        metrics.ready.set(i64::from(unready.is_empty()));
        for reason in REASONS {
            let on = unready.iter().any(|u| u.reason == reason);
            metrics
                .unready
                .get_or_create(&ReasonLabels::new(reason))
                .set(i64::from(on));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let reasons = |list: &[Unready]| list.iter().map(|u| u.reason).collect::<Vec<_>>();
        if reasons(&state) != reasons(&unready) {
            if unready.is_empty() {
                tracing::info!("ready");
            }
            for u in &unready {
                tracing::warn!(reason = u.reason, "unready: {}", u.detail);
            }
        }
        *state = unready;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(30);

    fn healthy() -> Observations {
        Observations {
            device_link_connected: true,
            oldest_waiting: Some(Duration::from_secs(1)),
            longest_in_lane: Some(Duration::from_millis(5)),
            ..Observations::default()
        }
    }

    fn reasons(seen: &Observations) -> Vec<&'static str> {
        assess(seen, BOUND).into_iter().map(|u| u.reason).collect()
    }

    #[test]
    fn a_busy_node_that_moves_is_ready() {
        assert!(reasons(&healthy()).is_empty());
        assert!(
            reasons(&Observations {
                oldest_waiting: Some(BOUND),
                held_for: Some(BOUND),
                ..healthy()
            })
            .is_empty()
        );
    }

    #[test]
    fn each_stall_is_its_own_reason() {
        let cases = [
            (
                Observations {
                    device_link_connected: false,
                    ..healthy()
                },
                "device_link_down",
            ),
            (
                Observations {
                    oldest_waiting: Some(BOUND + Duration::from_secs(1)),
                    ..healthy()
                },
                "intake_stalled",
            ),
            (
                Observations {
                    longest_in_lane: Some(BOUND * 2),
                    ..healthy()
                },
                "lane_stuck",
            ),
            (
                Observations {
                    flush_failing_for: Some(Duration::ZERO),
                    ..healthy()
                },
                "flush_failing",
            ),
            (
                Observations {
                    held_for: Some(BOUND * 3),
                    ..healthy()
                },
                "host_fault",
            ),
        ];
        for (seen, reason) in cases {
            assert_eq!(reasons(&seen), [reason], "{seen:?}");
        }
    }

    #[test]
    fn the_metric_follows_the_verdict() {
        let metrics = AgentMetrics::default();
        let health = Health::default();
        assert!(
            !health.unready().is_empty(),
            "unready before the first look"
        );
        let stalled = Observations {
            flush_failing_for: Some(Duration::ZERO),
            ..healthy()
        };
        health.record(assess(&stalled, BOUND), &metrics);
        assert_eq!(metrics.ready.get(), 0);
        let flag = |r: &str| metrics.unready.get_or_create(&ReasonLabels::new(r)).get();
        assert_eq!(flag("flush_failing"), 1);
        health.record(assess(&healthy(), BOUND), &metrics);
        assert_eq!(metrics.ready.get(), 1);
        assert_eq!(flag("flush_failing"), 0);
        assert!(health.unready().is_empty());
    }
}
