//! The agent's Prometheus metrics (served on `/metrics`), next to the sandbox's own.

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

/// A refused device message or module: why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A link: `device` or `uplink`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub link: String,
}

/// Every counter and gauge of the agent.
#[derive(Debug)]
pub struct AgentMetrics {
    pub interactions: Family<InteractionLabels, Counter>,
    /// From message arrival to commands sent, in seconds.
    pub latency: Histogram,
    pub refused_messages: Family<ReasonLabels, Counter>,
    pub refused_assignments: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    pub outbox_depth: Gauge,
    pub outbox_dropped: Counter,
    pub reconnects: Family<LinkLabels, Counter>,
    pub swaps: Counter,
    pub events_suppressed: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            interactions: Family::default(),
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            refused_messages: Family::default(),
            refused_assignments: Family::default(),
            queue_depth: Gauge::default(),
            outbox_depth: Gauge::default(),
            outbox_dropped: Counter::default(),
            reconnects: Family::default(),
            swaps: Counter::default(),
            events_suppressed: Counter::default(),
        }
    }
}

impl AgentMetrics {
    /// Registers every metric under the `edgefleet_agent` prefix.
    pub fn register(&self, registry: &mut Registry) {
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
            "Device messages refused before any handler ran, by reason",
            self.refused_messages.clone(),
        );
        r.register(
            "refused_assignments",
            "Assignments or modules refused, by reason",
            self.refused_assignments.clone(),
        );
        r.register(
            "queue_depth",
            "Device messages waiting for a sandbox",
            self.queue_depth.clone(),
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
            "reconnects",
            "MQTT reconnection attempts by link",
            self.reconnects.clone(),
        );
        r.register(
            "module_swaps",
            "Module versions switched in",
            self.swaps.clone(),
        );
    }

    /// Counts one refused device message.
    pub fn refuse_message(&self, reason: &str) {
        self.refused_messages
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}
