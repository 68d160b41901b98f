//! The controller's Prometheus metrics (`/metrics`, prefix `edgefleet_controller`). [`METRIC_NAMES`]
//! lists every family and a test checks each is registered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label of a fixed set of values chosen by the controller (never taken from the network).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

impl From<&str> for KindLabel {
    fn from(kind: &str) -> KindLabel {
        KindLabel {
            kind: kind.to_string(),
        }
    }
}

impl From<bool> for KindLabel {
    /// A status write: `significant` or `steady`.
    fn from(significant: bool) -> KindLabel {
        (if significant { "significant" } else { "steady" }).into()
    }
}

/// The outcome of a node certificate request: `issued` or why it was refused
/// (`bootstrap::OUTCOMES`, a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

impl From<&str> for OutcomeLabel {
    fn from(outcome: &str) -> OutcomeLabel {
        OutcomeLabel {
            outcome: outcome.to_string(),
        }
    }
}

/// Every metric family, as `/metrics` names it.
pub const METRIC_NAMES: &[&str] = &[
    "edgefleet_controller_rounds_total",
    "edgefleet_controller_round_duration_seconds",
    "edgefleet_controller_publish_lag_seconds",
    "edgefleet_controller_actions_total",
    "edgefleet_controller_assignments_published_total",
    "edgefleet_controller_chunks_published_total",
    "edgefleet_controller_status_writes_total",
    "edgefleet_controller_status_write_failures_total",
    "edgefleet_controller_statuses_total",
    "edgefleet_controller_node_events_total",
    "edgefleet_controller_refused_messages_total",
    "edgefleet_controller_nodes",
    "edgefleet_controller_leader",
    "edgefleet_controller_rollouts",
    "edgefleet_controller_rollout_events_total",
    "edgefleet_controller_bootstrap_requests_total",
];

/// The metrics.
#[derive(Default)]
pub struct Metrics {
    /// Planning rounds.
    pub rounds: Counter,
    /// How long a round took (plan, diff, publish).
    pub round_duration: RoundDuration,
    /// From a change of the declared state (an object, a module resolved) to the round that
    /// published it.
    pub publish_lag: RoundDuration,
    /// Publications made by rounds.
    pub actions: Counter,
    /// Assignments published, by kind (`assign`, `withdraw`).
    pub assignments_published: Family<KindLabel, Counter>,
    /// Module chunks published.
    pub chunks_published: Counter,
    /// Status writes to the API server (or the local store), by kind (`significant`, `steady`,
    /// `module`, `class`).
    pub status_writes: Family<KindLabel, Counter>,
    /// Status writes that failed, by the error's kind.
    pub status_write_failures: Family<KindLabel, Counter>,
    /// Node statuses received, by kind (`taken`; `ignored`: a duplicate, a redelivery, a
    /// reordered older one).
    pub statuses: Family<KindLabel, Counter>,
    /// Node events received.
    pub node_events: Counter,
    /// Messages from the cloud broker that could not be decoded.
    pub refused_messages: Counter,
    /// Nodes by state (`online`, `offline`).
    pub nodes: Family<KindLabel, Gauge>,
    /// 1 while this replica leads (always 1 in standalone mode).
    pub leader: Gauge,
    /// Classes by the phase of their latest rollout.
    pub rollouts: Family<KindLabel, Gauge>,
    /// Rollout events by reason (`RolloutStepPassed`, `RolloutFailed`, …).
    pub rollout_events: Family<KindLabel, Counter>,
    /// Node certificate requests (`POST /v1/node-certificate`), by outcome.
    pub bootstrap_requests: Family<OutcomeLabel, Counter>,
}

/// A histogram with buckets from 1 ms to about 30 s.
pub struct RoundDuration(pub Histogram);

impl Default for RoundDuration {
    fn default() -> Self {
        RoundDuration(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

impl Metrics {
    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("edgefleet_controller");
        r.register("rounds", "Planning rounds", self.rounds.clone());
        r.register(
            "round_duration_seconds",
            "Duration of a planning round (plan, diff, publish)",
            self.round_duration.0.clone(),
        );
        r.register(
            "publish_lag_seconds",
            "From a change of the declared state to its publication",
            self.publish_lag.0.clone(),
        );
        r.register(
            "actions",
            "Publications made by rounds",
            self.actions.clone(),
        );
        r.register(
            "assignments_published",
            "Signed assignments published, by kind",
            self.assignments_published.clone(),
        );
        r.register(
            "chunks_published",
            "Module chunks published",
            self.chunks_published.clone(),
        );
        r.register(
            "status_writes",
            "Status writes, by kind",
            self.status_writes.clone(),
        );
        r.register(
            "status_write_failures",
            "Status writes that failed, by kind",
            self.status_write_failures.clone(),
        );
        r.register(
            "statuses",
            "Node statuses received, by kind (taken, ignored)",
            self.statuses.clone(),
        );
        r.register(
            "node_events",
            "Node events received",
            self.node_events.clone(),
        );
        r.register(
            "refused_messages",
            "Undecodable messages from the cloud broker",
            self.refused_messages.clone(),
        );
        r.register("nodes", "Nodes by state", self.nodes.clone());
        r.register("leader", "1 while this replica leads", self.leader.clone());
        r.register(
            "rollouts",
            "Classes by the phase of their latest rollout",
            self.rollouts.clone(),
        );
        r.register(
            "rollout_events",
            "Rollout events, by reason",
            self.rollout_events.clone(),
        );
        r.register(
            "bootstrap_requests",
            "Node certificate requests, by outcome (issued, or why refused)",
            self.bootstrap_requests.clone(),
        );
        for outcome in crate::bootstrap::OUTCOMES {
            let _ = self.bootstrap_requests.get_or_create(&outcome.into());
        }
        for phase in ["Progressing", "Paused", "Completed", "RolledBack", "Failed"] {
            let _ = self.rollouts.get_or_create(&phase.into());
        }
        for reason in ["RolloutStepPassed", "RolloutCompleted", "RolloutFailed"] {
            let _ = self.rollout_events.get_or_create(&reason.into());
        }
        for kind in ["significant", "steady", "module", "class"] {
            let _ = self.status_writes.get_or_create(&kind.into());
        }
        for kind in ["taken", "ignored"] {
            let _ = self.statuses.get_or_create(&kind.into());
        }
        for kind in ["assign", "withdraw"] {
            let _ = self.assignments_published.get_or_create(&kind.into());
        }
        for kind in ["online", "offline"] {
            let _ = self.nodes.get_or_create(&kind.into());
        }
    }

    /// Counts one round.
    pub fn observe_round(&self, duration: std::time::Duration, actions: usize) {
        self.rounds.inc();
        self.round_duration.0.observe(duration.as_secs_f64());
        self.actions.inc_by(actions as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let _ = metrics
            .status_write_failures
            .get_or_create(&"conflict".into());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in METRIC_NAMES {
            let family = name.trim_end_matches("_total");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} is not registered"
            );
        }
    }
}
