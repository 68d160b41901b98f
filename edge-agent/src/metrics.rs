//! The agent's Prometheus metrics (served on `/metrics`, under the `edgefleet_agent` prefix), next to
//! the sandbox's own. [`METRIC_NAMES`] lists every family as `/metrics` shows it, and a test checks
//! that each one is registered: a counter that is counted but never registered is invisible.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An interaction's class, module version and outcome (`ok` or an error kind).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InteractionLabels {
    pub class: String,
    pub version: String,
    pub outcome: String,
}

/// Why: a refused message or module, a shed message, a host fault, an unready condition. Always one
/// of a fixed set of names chosen by the agent, never a name taken from the network.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

impl ReasonLabels {
    pub fn new(reason: &str) -> ReasonLabels {
        ReasonLabels {
            reason: reason.to_string(),
        }
    }
}

/// A shadow interaction's outcome: `agreed`, `diverged` or `skipped`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

impl OutcomeLabels {
    pub fn new(outcome: &str) -> OutcomeLabels {
        OutcomeLabels {
            outcome: outcome.to_string(),
        }
    }
}

/// A link: `device` or `uplink`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub link: String,
}

/// Every metric family of the agent, as `/metrics` names it.
pub const METRIC_NAMES: &[&str] = &[
    "edgefleet_agent_interactions_total",
    "edgefleet_agent_interaction_latency_seconds",
    "edgefleet_agent_refused_messages_total",
    "edgefleet_agent_shed_messages_total",
    "edgefleet_agent_host_faults_total",
    "edgefleet_agent_commands_dropped_total",
    "edgefleet_agent_refused_assignments_total",
    "edgefleet_agent_queue_depth",
    "edgefleet_agent_queue_bytes",
    "edgefleet_agent_queue_devices",
    "edgefleet_agent_active_devices_tracked",
    "edgefleet_agent_active_devices_overflow_total",
    "edgefleet_agent_outbox_depth",
    "edgefleet_agent_outbox_dropped_total",
    "edgefleet_agent_outbox_corrupt_total",
    "edgefleet_agent_reconnects_total",
    "edgefleet_agent_redeliveries_total",
    "edgefleet_agent_redelivered_done_total",
    "edgefleet_agent_device_reads_paused_total",
    "edgefleet_agent_module_swaps_total",
    "edgefleet_agent_events_suppressed_total",
    "edgefleet_agent_ready",
    "edgefleet_agent_unready",
    "edgefleet_agent_garbage_collected_total",
    "edgefleet_agent_fallbacks_total",
    "edgefleet_agent_shadow_interactions_total",
    "edgefleet_agent_certificate_requests_total",
    "edgefleet_agent_certificate_expiry_timestamp_seconds",
];

/// The reasons of `shed_messages` (see `intake::Shed::label`).
const SHED_REASONS: [&str; 6] = [
    "over_budget",
    "backlog",
    "best_effort",
    "full",
    "held",
    "overload",
];
/// The reasons of `host_faults` (see `interactions`).
const HOST_FAULT_REASONS: [&str; 5] = [
    "unavailable",
    "class_unavailable",
    "state_read",
    "commit",
    "flush",
];
/// The reasons of `refused_messages`.
const REFUSED_MESSAGE_REASONS: [&str; 3] = ["bad_topic", "oversized", "unknown_class"];
/// The kinds of `garbage_collected`.
const GARBAGE_KINDS: [&str; 2] = ["blob", "artefact"];

/// Every counter and gauge of the agent.
#[derive(Debug)]
pub struct AgentMetrics {
    pub interactions: Family<InteractionLabels, Counter>,
    /// From message arrival to commands sent, in seconds.
    pub latency: Histogram,
    pub refused_messages: Family<ReasonLabels, Counter>,
    pub shed_messages: Family<ReasonLabels, Counter>,
    pub host_faults: Family<ReasonLabels, Counter>,
    pub commands_dropped: Counter,
    pub refused_assignments: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    pub queue_bytes: Gauge,
    pub queue_devices: Gauge,
    pub activity_tracked: Gauge,
    pub activity_overflow: Counter,
    pub outbox_depth: Gauge,
    pub outbox_dropped: Counter,
    pub outbox_corrupt: Counter,
    pub reconnects: Family<LinkLabels, Counter>,
    pub redeliveries: Counter,
    /// Redelivered copies of messages already done: acknowledged again, not run.
    pub redelivered_done: Counter,
    /// Times the device link stopped reading because the intake was half full.
    pub reads_paused: Counter,
    pub swaps: Counter,
    pub events_suppressed: Counter,
    pub ready: Gauge,
    pub unready: Family<ReasonLabels, Gauge>,
    pub garbage_collected: Family<ReasonLabels, Counter>,
    pub fallbacks: Counter,
    pub shadow_interactions: Family<OutcomeLabels, Counter>,
    /// Node certificate requests to the controller (`--bootstrap-url`), by outcome.
    pub certificate_requests: Family<OutcomeLabels, Counter>,
    /// When the node certificate in use expires (Unix seconds; 0 without `--bootstrap-url`).
    pub certificate_expiry: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            interactions: Family::default(),
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            refused_messages: Family::default(),
            shed_messages: Family::default(),
            host_faults: Family::default(),
            commands_dropped: Counter::default(),
            refused_assignments: Family::default(),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_devices: Gauge::default(),
            activity_tracked: Gauge::default(),
            activity_overflow: Counter::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Counter::default(),
            outbox_corrupt: Counter::default(),
            reconnects: Family::default(),
            redeliveries: Counter::default(),
            redelivered_done: Counter::default(),
            reads_paused: Counter::default(),
            swaps: Counter::default(),
            events_suppressed: Counter::default(),
            ready: Gauge::default(),
            unready: Family::default(),
            garbage_collected: Family::default(),
            fallbacks: Counter::default(),
            shadow_interactions: Family::default(),
            certificate_requests: Family::default(),
            certificate_expiry: Gauge::default(),
        }
    }
}

impl AgentMetrics {
    /// Registers every metric under the `edgefleet_agent` prefix. Label sets known in advance are
    /// created at zero, so that each family is listed before anything happens.
    pub fn register(&self, registry: &mut Registry) {
        for (family, reasons) in [
            (&self.shed_messages, &SHED_REASONS[..]),
            (&self.host_faults, &HOST_FAULT_REASONS[..]),
            (&self.refused_messages, &REFUSED_MESSAGE_REASONS[..]),
            (&self.garbage_collected, &GARBAGE_KINDS[..]),
        ] {
            for reason in reasons {
                drop(family.get_or_create(&ReasonLabels::new(reason)));
            }
        }
        for outcome in ["agreed", "diverged", "skipped"] {
            drop(
                self.shadow_interactions
                    .get_or_create(&OutcomeLabels::new(outcome)),
            );
        }
        for link in ["device", "uplink"] {
            drop(
                self.reconnects
                    .get_or_create(&LinkLabels { link: link.into() }),
            );
        }
        let r = registry.sub_registry_with_prefix("edgefleet_agent");
        r.register(
            "interactions",
            "Device interactions by class, module version and outcome",
            self.interactions.clone(),
        );
        r.register(
            "interaction_latency_seconds",
            "From a device message's arrival to its commands being sent",
            self.latency.clone(),
        );
        r.register(
            "refused_messages",
            "Device messages refused before any handler ran (bad topic, oversized, unknown class), by reason; acknowledged",
            self.refused_messages.clone(),
        );
        r.register(
            "shed_messages",
            "Device messages not taken by the intake, by reason: over_budget and backlog (the device's fault: acknowledged and dropped), best_effort (QoS 0), full and held (left for redelivery)",
            self.shed_messages.clone(),
        );
        r.register(
            "host_faults",
            "Device messages left unacknowledged because of a fault of the node (unavailable, class_unavailable, state_read, commit, flush)",
            self.host_faults.clone(),
        );
        r.register(
            "commands_dropped",
            "Commands to devices that could not be queued on the device link",
            self.commands_dropped.clone(),
        );
        r.register(
            "refused_assignments",
            "Assignments or modules refused, by reason",
            self.refused_assignments.clone(),
        );
        r.register(
            "queue_depth",
            "Device messages in the intake (waiting or in a lane)",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_bytes",
            "Payload bytes in the intake",
            self.queue_bytes.clone(),
        );
        r.register(
            "queue_devices",
            "Devices the intake tracks (queues and rate budgets)",
            self.queue_devices.clone(),
        );
        r.register(
            "active_devices_tracked",
            "Devices tracked for the status' active-device counts",
            self.activity_tracked.clone(),
        );
        r.register(
            "active_devices_overflow",
            "Device sightings not tracked because the activity map was full",
            self.activity_overflow.clone(),
        );
        r.register(
            "outbox_depth",
            "Upstream messages waiting in the outbox",
            self.outbox_depth.clone(),
        );
        r.register(
            "outbox_dropped",
            "Upstream messages dropped because the outbox was full (oldest first)",
            self.outbox_dropped.clone(),
        );
        r.register(
            "outbox_corrupt",
            "Outbox records that did not decode and were removed",
            self.outbox_corrupt.clone(),
        );
        r.register(
            "reconnects",
            "MQTT reconnection attempts by link",
            self.reconnects.clone(),
        );
        r.register(
            "redeliveries",
            "Device link reconnects made so that the broker delivers unacknowledged messages again",
            self.redeliveries.clone(),
        );
        r.register(
            "redelivered_done",
            "Redelivered copies of device messages already done (the broker had not seen the ack): acknowledged again, not run twice",
            self.redelivered_done.clone(),
        );
        r.register(
            "device_reads_paused",
            "Times the device link stopped reading from the broker because the intake was half full (the broker keeps the messages meanwhile)",
            self.reads_paused.clone(),
        );
        r.register(
            "module_swaps",
            "Module versions switched in",
            self.swaps.clone(),
        );
        r.register(
            "events_suppressed",
            "Agent events caused by device traffic held back by the event throttle",
            self.events_suppressed.clone(),
        );
        r.register(
            "ready",
            "1 when /readyz answers ready, else 0",
            self.ready.clone(),
        );
        r.register(
            "unready",
            "1 for each reason /readyz gives now for being unready",
            self.unready.clone(),
        );
        r.register(
            "garbage_collected",
            "Module blobs and compiled artefacts removed because no class references them, by kind",
            self.garbage_collected.clone(),
        );
        r.register(
            "fallbacks",
            "Switches of a class back to its previous version because the active one was quarantined",
            self.fallbacks.clone(),
        );
        r.register(
            "shadow_interactions",
            "Interactions a shadow version ran beside the active one, by outcome: agreed, diverged, or skipped (not loaded, quarantined, or the sandbox busy)",
            self.shadow_interactions.clone(),
        );
        for outcome in crate::identity::OUTCOMES {
            drop(
                self.certificate_requests
                    .get_or_create(&OutcomeLabels::new(outcome)),
            );
        }
        r.register(
            "certificate_requests",
            "Node certificate requests to the controller, by outcome: issued, or why not (token, unreachable, refused, busy, bad_answer, key, store)",
            self.certificate_requests.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the node certificate in use expires, in Unix seconds (0 without --bootstrap-url)",
            self.certificate_expiry.clone(),
        );
    }

    /// Counts one refused device message.
    pub fn refuse_message(&self, reason: &str) {
        self.refused_messages
            .get_or_create(&ReasonLabels::new(reason))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family in [`METRIC_NAMES`] appears in the exposition, and nothing appears that is not
    /// listed (families with labels show up once a label set is used, so each is touched here).
    #[test]
    fn every_listed_metric_is_registered() {
        let metrics = AgentMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics
            .interactions
            .get_or_create(&InteractionLabels {
                class: "c".into(),
                version: "v".into(),
                outcome: "ok".into(),
            })
            .inc();
        for family in [
            &metrics.refused_messages,
            &metrics.shed_messages,
            &metrics.host_faults,
            &metrics.refused_assignments,
            &metrics.garbage_collected,
        ] {
            family.get_or_create(&ReasonLabels::new("x")).inc();
        }
        metrics
            .unready
            .get_or_create(&ReasonLabels::new("x"))
            .set(1);
        metrics
            .reconnects
            .get_or_create(&LinkLabels {
                link: "device".into(),
            })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let exposed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|name| name.strip_suffix("_total").unwrap_or(name))
            .collect();
        let listed: std::collections::BTreeSet<&str> = METRIC_NAMES
            .iter()
            .map(|name| name.strip_suffix("_total").unwrap_or(name))
            .collect();
        assert_eq!(exposed, listed);
    }
}
