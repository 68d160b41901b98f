//! The sandbox's Prometheus metrics: what ran, what failed and why, what was refused.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of an interaction: the module (as labelled at load) and the outcome kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InteractionLabels {
    pub module: String,
    pub outcome: String,
}

/// Labels of a refused module load.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: String,
}

/// Labels naming a module.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub module: String,
}

/// Counters of one sandbox.
#[derive(Debug, Default)]
pub struct SandboxMetrics {
    /// Interactions by module and outcome (`ok` or an [`InteractionError::kind`](super::InteractionError::kind)).
    pub interactions: Family<InteractionLabels, Counter>,
    /// Module loads refused, by reason.
    pub refused_modules: Family<RefusalLabels, Counter>,
    /// Times a module was quarantined.
    pub quarantines: Family<ModuleLabels, Counter>,
    /// Worker processes replaced after dying or being killed.
    pub worker_restarts: Counter,
    /// AOT compilations done (cache misses).
    pub compilations: Counter,
}

impl SandboxMetrics {
    /// Registers every metric under the `sandbox` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("sandbox");
        registry.register(
            "interactions",
            "Interactions run, by module and outcome",
            self.interactions.clone(),
        );
        registry.register(
            "refused_modules",
            "Module loads refused, by reason",
            self.refused_modules.clone(),
        );
        registry.register(
            "quarantines",
            "Times a module was quarantined",
            self.quarantines.clone(),
        );
        registry.register(
            "worker_restarts",
            "Sandbox worker processes replaced after dying or being killed",
            self.worker_restarts.clone(),
        );
        registry.register(
            "compilations",
            "AOT compilations (artefact cache misses)",
            self.compilations.clone(),
        );
    }

    /// The count of interactions of `module` with `outcome`.
    pub fn interactions_of(&self, module: &str, outcome: &str) -> u64 {
        self.interactions
            .get_or_create(&InteractionLabels {
                module: module.into(),
                outcome: outcome.into(),
            })
            .get()
    }
}
