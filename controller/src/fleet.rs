//! What the fleet should run: a pure function from the declared objects (device classes, handler
//! modules as far as they are resolved, edge nodes and their labels) to one handler per
//! (node, class) — the [`Plan`] that distribution turns into signed assignments.
//!
//! Level-triggered and deterministic: the same objects always give the same plan (maps are
//! ordered, the class config is encoded to CBOR canonically by field order), so a restarted or
//! failed-over controller plans exactly what is already published and publishes nothing.
//!
//! A class whose handler cannot be planned (its module is not pulled yet, refused, or the class
//! itself is invalid) is **held**: whatever was published for it stays, so nodes keep running the
//! version they have. Only a class that is gone, or a node the selector no longer selects, leads
//! to a withdrawal. This is what keeps a controller restart (modules not yet re-pulled) or a bad
//! new version from ever stopping devices.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_protocol::assignment::MAX_CONFIG_BYTES;
use edgefleet_protocol::{
    ClassId, ClassLimits, HandlerSpec, ModuleManifest, ModuleRef, NodeId, Rollout,
};
use kube::core::{Selector, SelectorExt};

use crate::resources::{DeviceClassSpec, HandlerModuleSpec, Limits};

/// Labels of a node, for selection.
pub type Labels = BTreeMap<String, String>;

/// Why something cannot be used, as a condition reason (CamelCase) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The condition reason, e.g. `ModuleNotReady`.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// A problem with `reason` and `message`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

/// A HandlerModule as far as the controller has resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// Its spec.
    pub spec: HandlerModuleSpec,
    /// Pulled and admitted, refused, or not yet known.
    pub resolution: Resolution,
}

/// Where the controller is with one module version.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Not pulled yet (or being pulled).
    Pending,
    /// Could not be fetched (a registry or file that cannot be read); tried again.
    Unavailable(Problem),
    /// Pulled, verified, admitted; its chunks can be published.
    Ready(ReadyModule),
    /// It must never reach a node.
    Refused(Problem),
}

/// A module that may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyModule {
    /// The manifest agents receive (name, version, digest, chunks).
    pub manifest: ModuleManifest,
    /// The linear memory the module declares it needs at least, in pages: a class whose
    /// `maxMemoryPages` is smaller cannot run it.
    pub min_memory_pages: u32,
}

/// A DeviceClass.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    /// Its spec.
    pub spec: DeviceClassSpec,
}

/// An edge node, as selection sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Its labels: those of the Kubernetes Node of the same name, overlaid by the EdgeNode's.
    pub labels: Labels,
    /// Cordoned: keeps what it has, gets nothing new.
    pub cordoned: bool,
}

/// The declared fleet: every object the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// HandlerModules by object name.
    pub modules: BTreeMap<String, Module>,
    /// DeviceClasses by object name (which is the class id).
    pub classes: BTreeMap<String, Class>,
    /// Edge nodes by name.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Some declared object could not be read (a broken file in standalone mode): what it
    /// declared is unknown, so nothing is withdrawn until it reads again.
    pub incomplete: bool,
}

/// What the fleet should run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// What each (node, class) runs.
    pub handlers: BTreeMap<(NodeId, ClassId), Planned>,
    /// Classes whose published assignments stay as they are (see the module documentation).
    pub held: BTreeSet<ClassId>,
    /// Cordoned nodes: their published assignments stay as they are.
    pub cordoned: BTreeSet<NodeId>,
    /// Nothing published is withdrawn (some declared object could not be read).
    pub hold_withdrawals: bool,
    /// Per class: its target and the nodes it selects, or why it is held.
    pub classes: BTreeMap<String, ClassPlan>,
    /// Modules whose chunks stay published though no assignment names them: a rollout's stable
    /// version, which every node may have to fall back to.
    pub retained: BTreeMap<edgefleet_protocol::Sha256Digest, ModuleManifest>,
}

/// What one node runs for one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The handler.
    pub handler: HandlerSpec,
    /// A version to run beside it without acting on it (a rollout's shadow step).
    pub shadow: Option<HandlerSpec>,
    /// The rollout step this belongs to (a label on the assignment; changing it alone publishes
    /// nothing).
    pub rollout: Option<Rollout>,
}

impl Planned {
    /// The handler alone, outside any rollout.
    pub fn handler(handler: HandlerSpec) -> Planned {
        Planned {
            handler,
            shadow: None,
            rollout: None,
        }
    }
}

/// The plan of one class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassPlan {
    /// The module version it distributes, if it can.
    pub target: Option<ModuleRef>,
    /// The handler it distributes, if it can.
    pub handler: Option<HandlerSpec>,
    /// The nodes it selects.
    pub selected: BTreeSet<NodeId>,
    /// Why it is held, if it is.
    pub problem: Option<Problem>,
}

/// Plans the whole fleet.
pub fn plan(declared: &Fleet) -> Plan {
    let mut plan = Plan {
        cordoned: declared
            .nodes
            .iter()
            .filter(|(_, node)| node.cordoned)
            .map(|(name, _)| name.clone())
            .collect(),
        hold_withdrawals: declared.incomplete,
        ..Plan::default()
    };
    for (name, class) in &declared.classes {
        let selected = selected_nodes(&class.spec, &declared.nodes);
        let class_plan = match class_handler(name, &class.spec, &declared.modules) {
            Ok((class_id, handler)) => {
                for node in &selected {
                    if !plan.cordoned.contains(node) {
                        plan.handlers.insert(
                            (node.clone(), class_id.clone()),
                            Planned::handler(handler.clone()),
                        );
                    }
                }
                ClassPlan {
                    target: Some(handler.module.reference()),
                    handler: Some(handler),
                    selected,
                    problem: None,
                }
            }
            Err(problem) => {
                if let Ok(class_id) = ClassId::new(name.as_str()) {
                    plan.held.insert(class_id);
                }
                ClassPlan {
                    target: None,
                    handler: None,
                    selected,
                    problem: Some(problem),
                }
            }
        };
        plan.classes.insert(name.clone(), class_plan);
    }
    plan
}

/// The nodes a class's selector selects: none without a selector, every node with an empty one.
/// A selector the API server would refuse (a bad operator) selects nothing.
fn selected_nodes(spec: &DeviceClassSpec, nodes: &BTreeMap<NodeId, Node>) -> BTreeSet<NodeId> {
    let Some(selector) = &spec.node_selector else {
        return BTreeSet::new();
    };
    let Ok(selector) = Selector::try_from(selector.clone()) else {
        return BTreeSet::new();
    };
    nodes
        .iter()
        .filter(|(_, node)| selector.matches(&node.labels))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The handler a class runs, or why it cannot run one now.
fn class_handler(
    name: &str,
    spec: &DeviceClassSpec,
    modules: &BTreeMap<String, Module>,
) -> Result<(ClassId, HandlerSpec), Problem> {
    let class_id = ClassId::new(name).map_err(|e| {
        Problem::new(
            "InvalidName",
            format!("the class name is one MQTT topic level: {e}"),
        )
    })?;
    if let Some(strategy) = &spec.rollout {
        crate::rollout::check(strategy).map_err(|e| Problem::new("InvalidRollout", e))?;
    }
    let limits = class_limits(&spec.limits);
    limits
        .validate()
        .map_err(|e| Problem::new("InvalidLimits", e.to_string()))?;
    let config = config_cbor(spec.config.as_ref())?;
    let module = modules.get(&spec.module).ok_or_else(|| {
        Problem::new(
            "ModuleNotFound",
            format!(
                "no HandlerModule named {:?}: create it, or name an existing one in spec.module",
                spec.module
            ),
        )
    })?;
    let ready = match &module.resolution {
        Resolution::Ready(ready) => ready,
        Resolution::Pending => {
            return Err(Problem::new(
                "ModuleNotReady",
                format!("HandlerModule {} is being pulled", spec.module),
            ));
        }
        Resolution::Unavailable(problem) => {
            return Err(Problem::new(
                "ModuleUnavailable",
                format!(
                    "HandlerModule {} cannot be fetched: {}",
                    spec.module, problem.message
                ),
            ));
        }
        Resolution::Refused(problem) => {
            return Err(Problem::new(
                "ModuleRefused",
                format!(
                    "HandlerModule {} is refused: {}",
                    spec.module, problem.message
                ),
            ));
        }
    };
    if ready.manifest.size > u64::from(limits.max_module_bytes) {
        return Err(Problem::new(
            "ModuleTooLarge",
            format!(
                "module {} is {} bytes, over the class's maxModuleBytes of {}",
                spec.module, ready.manifest.size, limits.max_module_bytes
            ),
        ));
    }
    if ready.min_memory_pages > limits.max_memory_pages {
        return Err(Problem::new(
            "ModuleNeedsMoreMemory",
            format!(
                "module {} declares {} memory pages, over the class's maxMemoryPages of {}",
                spec.module, ready.min_memory_pages, limits.max_memory_pages
            ),
        ));
    }
    Ok((
        class_id,
        HandlerSpec {
            module: ready.manifest.clone(),
            config,
            limits,
        },
    ))
}

/// The protocol's limits from a class's, each unset field at its default.
pub fn class_limits(limits: &Limits) -> ClassLimits {
    let d = ClassLimits::default();
    ClassLimits {
        max_memory_pages: limits.max_memory_pages.unwrap_or(d.max_memory_pages),
        time_budget_ms: limits.time_budget_ms.unwrap_or(d.time_budget_ms),
        max_outputs: limits.max_outputs.unwrap_or(d.max_outputs),
        max_output_bytes: limits.max_output_bytes.unwrap_or(d.max_output_bytes),
        max_state_bytes: limits.max_state_bytes.unwrap_or(d.max_state_bytes),
        max_module_bytes: limits.max_module_bytes.unwrap_or(d.max_module_bytes),
        allowed_topics: limits.allowed_topics.clone().unwrap_or(d.allowed_topics),
        device_rate_per_s: limits.device_rate_per_s.unwrap_or(d.device_rate_per_s),
        device_burst: limits.device_burst.unwrap_or(d.device_burst),
    }
}

/// A class config (any JSON) as the CBOR the handler reads; no config is an empty map.
pub fn config_cbor(config: Option<&serde_json::Value>) -> Result<Vec<u8>, Problem> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let bytes = edgefleet_protocol::codec::encode(config.unwrap_or(&empty));
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(Problem::new(
            "ConfigTooLarge",
            format!(
                "the config is {} bytes as CBOR, over the limit of {MAX_CONFIG_BYTES}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn manifest(version: &str, blob: &[u8]) -> ModuleManifest {
        ModuleManifest::for_blob("thermostat", version, 1, blob, 16 * 1024).unwrap()
    }

    fn module(object: &str, version: &str, resolution: Resolution) -> (String, Module) {
        (
            object.to_string(),
            Module {
                spec: HandlerModuleSpec {
                    module: "thermostat".into(),
                    version: version.into(),
                    image: Some(format!(
                        "registry.local/thermostat@sha256:{}",
                        "a".repeat(64)
                    )),
                    file: None,
                    sha256: None,
                    abi_version: 1,
                    test_vectors: Vec::new(),
                },
                resolution,
            },
        )
    }

    fn ready(version: &str) -> Resolution {
        Resolution::Ready(ReadyModule {
            manifest: manifest(version, version.as_bytes()),
            min_memory_pages: 1,
        })
    }

    fn selector(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        })
    }

    fn class(module: &str, selector: Option<LabelSelector>) -> Class {
        Class {
            spec: DeviceClassSpec {
                module: module.into(),
                config: Some(serde_json::json!({"setpoint_c": 21.0})),
                limits: Limits::default(),
                node_selector: selector,
                rollout: None,
            },
        }
    }

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cordoned: false,
        }
    }

    fn fleet() -> Fleet {
        let mut d = Fleet::default();
        d.modules
            .extend([module("thermostat-1", "1.0.0", ready("1.0.0"))]);
        d.classes.insert(
            "thermo".into(),
            class("thermostat-1", selector(&[("site", "a")])),
        );
        d.nodes
            .insert(NodeId::new("edge-a").unwrap(), node(&[("site", "a")]));
        d.nodes
            .insert(NodeId::new("edge-b").unwrap(), node(&[("site", "b")]));
        d
    }

    fn key(node: &str, class: &str) -> (NodeId, ClassId) {
        (NodeId::new(node).unwrap(), ClassId::new(class).unwrap())
    }

    #[test]
    fn a_class_runs_on_the_nodes_its_selector_selects() {
        let plan = plan(&fleet());
        assert_eq!(
            plan.handlers.keys().cloned().collect::<Vec<_>>(),
            vec![key("edge-a", "thermo")]
        );
        let handler = &plan.handlers[&key("edge-a", "thermo")].handler;
        assert_eq!(handler.module.version, "1.0.0");
        assert_eq!(handler.limits, ClassLimits::default());
        let config: BTreeMap<String, f64> =
            edgefleet_protocol::codec::decode(&handler.config, 1024).unwrap();
        assert_eq!(config["setpoint_c"], 21.0);
        assert_eq!(plan.classes["thermo"].selected.len(), 1);
        assert!(plan.held.is_empty());
    }

    #[test]
    fn no_selector_selects_nothing_and_an_empty_one_everything() {
        let mut d = fleet();
        d.classes.get_mut("thermo").unwrap().spec.node_selector = None;
        assert!(plan(&d).handlers.is_empty());
        d.classes.get_mut("thermo").unwrap().spec.node_selector = Some(LabelSelector::default());
        assert_eq!(plan(&d).handlers.len(), 2);
    }

    #[test]
    fn a_class_whose_module_cannot_run_is_held_with_a_reason() {
        for (resolution, reason) in [
            (Resolution::Pending, "ModuleNotReady"),
            (
                Resolution::Refused(Problem::new("DigestMismatch", "tampered")),
                "ModuleRefused",
            ),
        ] {
            let mut d = fleet();
            d.modules.get_mut("thermostat-1").unwrap().resolution = resolution;
            let plan = plan(&d);
            assert!(plan.handlers.is_empty());
            assert!(plan.held.contains(&ClassId::new("thermo").unwrap()));
            assert_eq!(
                plan.classes["thermo"].problem.as_ref().unwrap().reason,
                reason
            );
        }
        let mut d = fleet();
        d.classes.get_mut("thermo").unwrap().spec.module = "missing".into();
        assert_eq!(
            plan(&d).classes["thermo"].problem.as_ref().unwrap().reason,
            "ModuleNotFound"
        );
    }

    #[test]
    fn class_limits_are_checked_against_the_module() {
        let mut d = fleet();
        d.classes
            .get_mut("thermo")
            .unwrap()
            .spec
            .limits
            .max_module_bytes = Some(1);
        assert_eq!(
            plan(&d).classes["thermo"].problem.as_ref().unwrap().reason,
            "ModuleTooLarge"
        );
        let mut d = fleet();
        d.classes
            .get_mut("thermo")
            .unwrap()
            .spec
            .limits
            .time_budget_ms = Some(0);
        assert_eq!(
            plan(&d).classes["thermo"].problem.as_ref().unwrap().reason,
            "InvalidLimits"
        );
        let mut d = fleet();
        if let Resolution::Ready(ready) = &mut d.modules.get_mut("thermostat-1").unwrap().resolution
        {
            ready.min_memory_pages = 17;
        }
        assert_eq!(
            plan(&d).classes["thermo"].problem.as_ref().unwrap().reason,
            "ModuleNeedsMoreMemory"
        );
    }

    #[test]
    fn a_config_too_large_or_a_bad_class_name_is_refused() {
        let mut d = fleet();
        d.classes.get_mut("thermo").unwrap().spec.config =
            Some(serde_json::json!({"blob": "x".repeat(MAX_CONFIG_BYTES)}));
        assert_eq!(
            plan(&d).classes["thermo"].problem.as_ref().unwrap().reason,
            "ConfigTooLarge"
        );
        let mut d = fleet();
        let c = d.classes.remove("thermo").unwrap();
        d.classes.insert("a/b".into(), c);
        let plan = plan(&d);
        assert_eq!(
            plan.classes["a/b"].problem.as_ref().unwrap().reason,
            "InvalidName"
        );
        assert!(plan.handlers.is_empty());
    }

    #[test]
    fn cordoned_nodes_get_nothing_new() {
        let mut d = fleet();
        d.nodes
            .get_mut(&NodeId::new("edge-a").unwrap())
            .unwrap()
            .cordoned = true;
        let plan = plan(&d);
        assert!(plan.handlers.is_empty());
        assert!(plan.cordoned.contains(&NodeId::new("edge-a").unwrap()));
    }

    #[test]
    fn the_same_objects_give_the_same_plan() {
        assert_eq!(plan(&fleet()), plan(&fleet()));
        let mut d = fleet();
        // Map key order in the JSON config does not change the CBOR.
        d.classes.get_mut("thermo").unwrap().spec.config =
            serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
        let one = plan(&d);
        d.classes.get_mut("thermo").unwrap().spec.config =
            serde_json::from_str(r#"{"a": 2, "b": 1}"#).unwrap();
        assert_eq!(one, plan(&d));
    }
}
