//! The three kinds an operator reads and writes: `HandlerModule`, `DeviceClass` and `EdgeNode`
//! (API group `edgefleet.dev`, version `v1alpha1`), as Rust types from which the CRDs in
//! `k3s/crds/` are generated (`edgefleet-controller crds`; a test fails when the files drift).
//!
//! All three are cluster-scoped: a class name and a node name are one level of the fleet-wide MQTT
//! topic namespace (`ef/v1/dev/<class>/…`, `ef/v1/node/<node>/…`), so they are unique across the
//! fleet, not per namespace; and an EdgeNode is owned by the cluster-scoped `Node` of its name.
//!
//! The schema refuses what the API server can check at `kubectl apply` time (name patterns, ranges,
//! the digest pin, immutability of a module version). The controller checks the same rules again
//! when it reconciles (`fleet`), because standalone mode has no API server to do it and because an
//! object may predate a stricter CRD.

// kube-derive's repeated `printcolumn(type_ = …)` arguments look like duplicated attributes to
// clippy; they are one column each.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the edgefleet kinds.
pub const GROUP: &str = "edgefleet.dev";
/// Their API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every edgefleet object.
pub const API_VERSION: &str = "edgefleet.dev/v1alpha1";

/// One immutable version of a handler module: a Wasm binary in an OCI registry pinned by digest
/// (or, in standalone mode, a file), which device classes run.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "HandlerModule",
    plural = "handlermodules",
    shortname = "hm",
    category = "edgefleet",
    status = "HandlerModuleStatus",
    printcolumn(name = "Module", type_ = "string", json_path = ".spec.module"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.sha256",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a HandlerModule is one immutable module version: create a new object for a new version"))]
#[x_kube(validation = Rule::new("has(self.image) != has(self.file)").message("set exactly one of image (an OCI reference pinned by digest) and file (standalone mode only)"))]
#[serde(rename_all = "camelCase")]
pub struct HandlerModuleSpec {
    /// The module's name, as agents report it (usually the handler: `thermostat`): 1–64
    /// characters, lower-case letters, digits, `-` and `_`, starting with a letter or digit.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub module: String,
    /// Its semantic version (`1.4.0`, `2.0.0-rc.1+build.7`).
    #[schemars(
        length(min = 1, max = 64),
        regex(
            pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
        )
    )]
    pub version: String,
    /// An OCI reference pinned by digest, `registry/repository@sha256:<64 hex>` (a Wasm OCI
    /// artifact: `edgefleet module push` makes one and prints this reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^[^@\s]+@sha256:[0-9a-f]{64}$"))]
    pub image: Option<String>,
    /// Standalone mode only: a `.wasm` file, relative to the objects folder or absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub file: Option<String>,
    /// The SHA-256 the Wasm binary must have (64 hex digits); required with `file`, optional with
    /// `image` (whose digest already pins it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// The guest ABI version the module is built for (docs/guest-abi.md).
    #[serde(default = "default_abi_version")]
    #[schemars(range(min = 1, max = 1))]
    pub abi_version: u32,
    /// Cases the module must pass before any node receives it (run by the controller in the
    /// sandbox; used by staged rollouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub test_vectors: Vec<TestVector>,
}

fn default_abi_version() -> u32 {
    edgefleet_protocol::GUEST_ABI_VERSION
}

/// One case a module must pass: given a class config, a device state and a message, the handler
/// must produce these commands, upstream messages and new state. Payloads are JSON, turned into
/// CBOR the way a class config is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestVector {
    /// A name for reports.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The class config (JSON, as in a DeviceClass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub config: Option<serde_json::Value>,
    /// The device's state before the message (JSON); none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub state: Option<serde_json::Value>,
    /// The channel the message arrives on (`telemetry`).
    pub channel: String,
    /// The device's message (JSON).
    #[schemars(schema_with = "free_form")]
    pub message: serde_json::Value,
    /// What the handler must produce.
    pub expect: TestExpectation,
}

/// The outputs a [`TestVector`] expects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestExpectation {
    /// Commands sent to the device, in order (JSON).
    #[serde(default)]
    #[schemars(schema_with = "free_form_list")]
    pub commands: Vec<serde_json::Value>,
    /// Upstream messages, in order.
    #[serde(default)]
    pub upstream: Vec<ExpectedUpstream>,
    /// The device state afterwards (JSON); unchecked if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub state: Option<serde_json::Value>,
}

/// One expected upstream message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ExpectedUpstream {
    /// The class-relative topic.
    pub topic: String,
    /// The payload (JSON).
    #[schemars(schema_with = "free_form")]
    pub payload: serde_json::Value,
}

/// What the controller found out about a module version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandlerModuleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// SHA-256 of the Wasm binary, once pulled and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// What admission found (functions, imports, memory), or why it refused the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// `Ready`: pulled, verified and admitted — device classes may run it. Its reason says why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A kind of device (thermostats, meters …): the handler module its messages run, the handler's
/// config and limits, and which edge nodes serve it.
///
/// Kubernetes 1.34+ has a `DeviceClass` of its own (`resource.k8s.io`, dynamic resource
/// allocation) that `kubectl get deviceclasses` resolves to first: use `kubectl get dc`,
/// `deviceclasses.edgefleet.dev`, or `kubectl get edgefleet` (all three kinds).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "DeviceClass",
    plural = "deviceclasses",
    shortname = "dc",
    shortname = "edc",
    category = "edgefleet",
    status = "DeviceClassStatus",
    printcolumn(name = "Module", type_ = "string", json_path = ".spec.module"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.targetVersion"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.selectedNodes"),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedNodes"
    ),
    printcolumn(
        name = "Failing",
        type_ = "integer",
        json_path = ".status.failingNodes"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase"
    ),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.rollout.step"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceClassSpec {
    /// The HandlerModule (its object name) the class runs.
    #[schemars(length(min = 1, max = 253))]
    pub module: String,
    /// The handler's config, any JSON; handed to the handler as CBOR (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub config: Option<serde_json::Value>,
    /// What one interaction may use; unset fields keep their defaults (docs/guest-abi.md).
    #[serde(default)]
    pub limits: Limits,
    /// The edge nodes that serve the class, by label (an EdgeNode's labels over those of the
    /// Kubernetes Node of the same name). An empty selector selects every node; no selector, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// How a new version reaches the selected nodes: in stages gated on their health (see
    /// docs/rollouts.md). Without it a new version goes to every node at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStrategy>,
}

/// The annotation through which an operator acts on a class's rollout once: `abort`, `undo`,
/// `promote` or `retry`, optionally followed by `:` and anything that makes the value new
/// (`edgefleet rollout` writes `promote:<time>`). The controller acts on each new value once.
pub const ROLLOUT_ACTION_ANNOTATION: &str = "edgefleet.dev/rollout-action";

/// A staged rollout: an optional shadow step, a canary, then waves that grow, each gated by the
/// health of the new version measured from node status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.progressDeadlineSeconds) || !has(self.gate) || !has(self.gate.bakeSeconds) || self.progressDeadlineSeconds > self.gate.bakeSeconds").message("progressDeadlineSeconds must be longer than gate.bakeSeconds, or no step could ever pass"))]
pub struct RolloutStrategy {
    /// Run the new version beside the stable one on the canary nodes first, acting only on the
    /// stable one's outputs, and compare them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStep>,
    /// The first nodes to run the new version (default: 1 node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<StepSize>,
    /// How the waves after the canary grow (default: base 1, factor 2, no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Waves>,
    /// What each step must show before the next one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// A step that has not passed its gate after this long ends the rollout as `onDeadline`
    /// says (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub progress_deadline_seconds: Option<u32>,
    /// `Rollback` (the default) or `Pause` when the progress deadline passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_deadline: Option<DeadlineAction>,
    /// Hold the rollout where it is: no new node gets the new version until this is false again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A number of nodes, or a share of the selected ones (rounded up, at least 1).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.nodes) != has(self.percent)").message("set exactly one of nodes and percent"))]
pub struct StepSize {
    /// Nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub nodes: Option<u32>,
    /// Percent of the selected nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u32>,
}

/// Waves of `base × factor^(i-1)` nodes (wave `i` from 1), each at most `cap`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Waves {
    /// Nodes in the first wave (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub base: Option<u32>,
    /// How much each wave grows over the one before (default 2; 1 keeps them equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub factor: Option<f64>,
    /// The largest wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<StepSize>,
}

/// The health a step must show: enough interactions on the new version, a fault rate not worse
/// than the stable version's over the same window by more than allowed, and a bake time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Interactions the new version must have run in the step, over its nodes (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interactions: Option<u64>,
    /// How much the new version's fault rate (traps, timeouts, crashes, limit violations per
    /// interaction) may exceed the stable version's, as a fraction (default 0.01: one point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_fault_rate_increase: Option<f64>,
    /// How long a step runs at least, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub bake_seconds: Option<u32>,
}

/// The shadow step: the canary nodes run the new version beside the stable one, acting only on
/// the stable one's outputs, until enough interactions were compared.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStep {
    /// Interactions to compare (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_compared: Option<u64>,
    /// The share of them on which both versions must agree (default 1.0: all). A version that
    /// changes behaviour on purpose needs a lower bar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_agreement: Option<f64>,
}

/// What a rollout does when a step misses its progress deadline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeadlineAction {
    /// Give every node the stable version back.
    #[default]
    Rollback,
    /// Hold where it is until an operator acts.
    Pause,
}

/// Per-class limits; each unset field keeps the default of `edgefleet_protocol::ClassLimits`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Linear memory, in 64 KiB pages (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_memory_pages: Option<u32>,
    /// Wall time of one interaction, in ms (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub time_budget_ms: Option<u32>,
    /// Commands + upstream messages per interaction (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1024))]
    pub max_outputs: Option<u32>,
    /// Bytes of one command or upstream payload (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub max_output_bytes: Option<u32>,
    /// Bytes of device state (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1048576))]
    pub max_state_bytes: Option<u32>,
    /// Bytes of the module binary (default 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_module_bytes: Option<u32>,
    /// Class-relative upstream topics the handler may publish to, MQTT filters (default
    /// `telemetry`, `event/#`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub allowed_topics: Option<Vec<String>>,
    /// Each device's sustained messages per second (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub device_rate_per_s: Option<u32>,
    /// Messages a device may send at once above that rate (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub device_burst: Option<u32>,
}

/// Where a device class stands across the fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceClassStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The module version being distributed (`name version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_sha256: Option<String>,
    /// Nodes the selector selects.
    #[serde(default)]
    pub selected_nodes: u32,
    /// Nodes holding a signed assignment of the target version.
    #[serde(default)]
    pub assigned_nodes: u32,
    /// Nodes that report the target version active.
    #[serde(default)]
    pub updated_nodes: u32,
    /// Nodes that report an error for the class, or quarantined the target version.
    #[serde(default)]
    pub failing_nodes: u32,
    /// What each version in use does across the fleet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    /// The latest rollout of the class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// `Ready`: every selected node runs the target version. `Degraded`: some node fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where a class's latest rollout stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The rollout's id (the target version and a digest of its handler).
    pub id: String,
    /// `Progressing`, `Paused`, `Completed`, `RolledBack` or `Failed`.
    pub phase: String,
    /// The step, `i/n name` (`2/4 wave 1`).
    pub step: String,
    /// The version the fleet falls back to (`name version`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// The version being rolled out.
    pub target_version: String,
    /// Selected nodes assigned the target version.
    pub updated_nodes: u32,
    /// Of those, nodes that report it active and healthy.
    pub healthy_nodes: u32,
    /// Of those, nodes that quarantined it or fell back from it.
    pub failing_nodes: u32,
    /// Selected nodes still to be updated (or to be rolled back).
    pub pending_nodes: u32,
    /// The gate's latest measurement and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The shadow step's comparison and examples of divergence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Why the rollout is where it is.
    pub message: String,
    /// When the current step started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,
    /// The last operator action carried out (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
}

/// One module version of a class across the fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// `name version`.
    pub version: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Nodes running it.
    pub nodes: u32,
    /// Interactions, errors and traps summed over those nodes (since each agent started).
    pub interactions: u64,
    /// See `interactions`.
    pub errors: u64,
    /// See `interactions`.
    pub traps: u64,
}

/// One edge node: created by the controller when its agent first reports; the status mirrors what
/// the agent reports. Its labels (over those of the Kubernetes Node of the same name) are what
/// device classes select.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "EdgeNode",
    plural = "edgenodes",
    shortname = "en",
    category = "edgefleet",
    status = "EdgeNodeStatus",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Classes", type_ = "string", json_path = ".status.summary"),
    printcolumn(
        name = "Devices",
        type_ = "integer",
        json_path = ".status.activeDevices"
    ),
    printcolumn(name = "Rate", type_ = "string", json_path = ".status.rate"),
    printcolumn(name = "Errors", type_ = "integer", json_path = ".status.errors"),
    printcolumn(name = "Outbox", type_ = "integer", json_path = ".status.outboxDepth"),
    printcolumn(name = "Last Seen", type_ = "date", json_path = ".status.lastSeen"),
    printcolumn(
        name = "Agent",
        type_ = "string",
        json_path = ".status.agentVersion",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNodeSpec {
    /// Stop assigning classes to this node (a drained node keeps what it has).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
}

/// What the node's agent last reported, and the controller's view of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNodeStatus {
    /// `Online`, or `Offline` (its last will, a clean shutdown, or no status for too long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the controller last heard from the agent (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The WasmEdge version its sandbox runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasmedge_version: Option<String>,
    /// The guest ABI its sandbox supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_abi_version: Option<u32>,
    /// `class=version` for every class, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Devices heard from in the last minute.
    #[serde(default)]
    pub active_devices: u32,
    /// Distinct devices heard from since the agent started.
    #[serde(default)]
    pub seen_devices: u32,
    /// Interactions per second, as text (`12.5/s`) for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Interactions that committed nothing, over every module version (since the agent started).
    #[serde(default)]
    pub errors: u64,
    /// Of which traps.
    #[serde(default)]
    pub traps: u64,
    /// Messages waiting in the agent's outbox for the uplink.
    #[serde(default)]
    pub outbox_depth: u64,
    /// `connected`, `connecting` or `disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// The agent's link to its device broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_link: Option<String>,
    /// One entry per class the agent runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<NodeClassStatus>,
    /// `Ready`: online and serving every class. `Degraded`: online, but a class fails or a link is
    /// down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One class on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassStatus {
    /// The class.
    pub class: String,
    /// The generation of the assignment applied last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The module version active (`name version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sha256: Option<String>,
    /// A newer version being fetched (`name version (received/total chunks)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// The last error for the class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Devices of the class heard from in the last minute.
    #[serde(default)]
    pub active_devices: u32,
    /// Interactions per second.
    #[serde(default)]
    pub interactions_per_sec: f64,
    /// Counters per module version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<NodeModuleStatus>,
}

/// How one module version fares on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeModuleStatus {
    /// `name version`.
    pub version: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Interactions run.
    pub interactions: u64,
    /// Interactions that committed nothing.
    pub errors: u64,
    /// Traps.
    pub traps: u64,
    /// Time-budget overruns.
    pub timeouts: u64,
    /// Whether the agent quarantined the version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Labels an object carries, for selection.
pub type Labels = BTreeMap<String, String>;
