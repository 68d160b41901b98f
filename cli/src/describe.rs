//! `edgefleet describe node|class|module NAME`: one object as readable text: its spec, its
//! status, its conditions (type, status, reason, last transition, message) and, in a cluster, the
//! Kubernetes Events about it (events.k8s.io/v1, the controller's `Warning`s and `Normal`s).

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use edgefleet_controller::resources::{DeviceClass, EdgeNode, HandlerModule};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::Value;

use crate::Error;
use crate::get::{self, Kind, NONE, human_bytes, or_none, since};
use crate::output::{indent, table};
use crate::target::{Target, TargetArgs};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Why is a module not Ready? (its Ready condition's reason and message, and the Events)
  edgefleet describe module thermostat-1.0.0

  # A class's rollout: versions in use, nodes updated and failing
  edgefleet describe class thermo --server http://127.0.0.1:8080

  # What a node's agent last reported, class by class
  edgefleet describe node edge-1";

/// What to describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    /// An EdgeNode (also: nodes, edgenode, en).
    #[value(aliases = ["nodes", "edgenode", "edgenodes", "en"])]
    Node,
    /// A DeviceClass (also: classes, deviceclass, dc).
    #[value(aliases = ["classes", "deviceclass", "deviceclasses", "dc"])]
    Class,
    /// A HandlerModule (also: modules, handlermodule, hm).
    #[value(aliases = ["modules", "handlermodule", "handlermodules", "hm"])]
    Module,
}

/// Arguments of `edgefleet describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe: node, class or module.
    #[arg(value_enum)]
    kind: DescribeKind,
    /// Its name (metadata.name).
    name: String,
    #[command(flatten)]
    target: TargetArgs,
}

/// Runs `edgefleet describe`.
pub fn run(args: DescribeArgs) -> Result<(), Error> {
    crate::block_on(async {
        let target = Target::connect(&args.target).await?;
        let name = &args.name;
        let (text, meta, kind) = match args.kind {
            DescribeKind::Node => {
                let node = target
                    .get::<EdgeNode>(name)
                    .await?
                    .ok_or_else(|| get::not_found(&target, Kind::Nodes, name))?;
                (node_text(&node), node.metadata, "EdgeNode")
            }
            DescribeKind::Class => {
                let class = target
                    .get::<DeviceClass>(name)
                    .await?
                    .ok_or_else(|| get::not_found(&target, Kind::Classes, name))?;
                (class_text(&class), class.metadata, "DeviceClass")
            }
            DescribeKind::Module => {
                let module = target
                    .get::<HandlerModule>(name)
                    .await?
                    .ok_or_else(|| get::not_found(&target, Kind::Modules, name))?;
                let classes: Vec<String> = target
                    .list::<DeviceClass>()
                    .await?
                    .into_iter()
                    .filter(|c| c.spec.module == *name)
                    .filter_map(|c| c.meta().name.clone())
                    .collect();
                (
                    module_text(&module, &classes),
                    module.metadata,
                    "HandlerModule",
                )
            }
        };
        let mut out = header(kind, &meta);
        out.push_str(&text);
        if let Some(events) = target.events(kind, name, meta.uid.as_deref()).await {
            out.push_str(&events_text(events));
        }
        print!("{out}");
        Ok(())
    })
}

/// `Name:`, `Kind:`, labels and, when known, the creation time.
fn header(kind: &str, meta: &ObjectMeta) -> String {
    let mut rows = vec![
        ("Name", meta.name.clone().unwrap_or_default()),
        ("Kind", format!("{kind} (edgefleet.dev/v1alpha1)")),
        ("Labels", labels(meta)),
    ];
    if let Some(created) = &meta.creation_timestamp {
        rows.push(("Created", at(created.0)));
    }
    fields(&rows)
}

fn labels(meta: &ObjectMeta) -> String {
    match &meta.labels {
        Some(labels) if !labels.is_empty() => labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => NONE.into(),
    }
}

/// `label:  value` lines, values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{:<width$}  {value}\n", format!("{label}:")))
        .collect()
}

/// `2026-12-03T13:40:00Z (5m ago)`.
fn at(time: Timestamp) -> String {
    format!(
        "{} ({} ago)",
        time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        since(time)
    )
}

fn section(title: &str, body: &str) -> String {
    if body.is_empty() {
        format!("{title}:  {NONE}\n")
    } else {
        format!("{title}:\n{}", indent(body))
    }
}

fn conditions_text(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return section("Conditions", "");
    }
    let rows = conditions.iter().map(|c| {
        vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            since(c.last_transition_time.0) + " ago",
            c.message.clone(),
        ]
    });
    section(
        "Conditions",
        &table(
            &["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"],
            rows,
        ),
    )
}

fn module_text(module: &HandlerModule, classes: &[String]) -> String {
    let spec = &module.spec;
    let mut spec_rows = vec![
        ("Module", spec.module.clone()),
        ("Version", spec.version.clone()),
        ("Guest ABI", format!("v{}", spec.abi_version)),
    ];
    if let Some(image) = &spec.image {
        spec_rows.push(("Image", image.clone()));
    }
    if let Some(file) = &spec.file {
        spec_rows.push((
            "File",
            format!("{file} (read by the standalone controller)"),
        ));
    }
    if let Some(sha) = &spec.sha256 {
        spec_rows.push(("SHA-256", sha.clone()));
    }
    if !spec.test_vectors.is_empty() {
        let names: Vec<&str> = spec.test_vectors.iter().map(|t| t.name.as_str()).collect();
        spec_rows.push(("Test vectors", names.join(", ")));
    }
    let status = module.status.clone().unwrap_or_default();
    let mut status_rows = Vec::new();
    if let Some(sha) = &status.sha256 {
        status_rows.push(("SHA-256", sha.clone()));
    }
    if let Some(size) = status.size {
        status_rows.push(("Size", format!("{size} bytes ({})", human_bytes(size))));
    }
    if let Some(admission) = &status.admission {
        status_rows.push(("Admission", admission.clone()));
    }
    let mut out = section("Spec", &fields(&spec_rows));
    out.push_str(&section("Status", &fields(&status_rows)));
    out.push_str(&conditions_text(&status.conditions));
    let used = if classes.is_empty() {
        NONE.to_owned()
    } else {
        classes.join(", ")
    };
    let _ = writeln!(out, "Used by classes:  {used}");
    out
}

fn class_text(class: &DeviceClass) -> String {
    let spec = &class.spec;
    let mut spec_rows = vec![("Module", spec.module.clone())];
    spec_rows.push((
        "Config",
        spec.config
            .as_ref()
            .map_or_else(|| NONE.to_owned(), Value::to_string),
    ));
    let limits = serde_json::to_value(&spec.limits).unwrap_or_default();
    let limits = limits.as_object().filter(|l| !l.is_empty()).map_or_else(
        || "defaults".to_owned(),
        |l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    spec_rows.push(("Limits", limits));
    spec_rows.push(("Node selector", selector(spec.node_selector.as_ref())));
    let status = class.status.clone().unwrap_or_default();
    let mut status_rows = Vec::new();
    if class.status.is_some() {
        status_rows.push(("Target version", or_none(status.target_version.clone())));
        status_rows.push(("Target SHA-256", or_none(status.target_sha256.clone())));
        status_rows.push((
            "Nodes",
            format!(
                "{} selected, {} assigned, {} updated, {} failing",
                status.selected_nodes,
                status.assigned_nodes,
                status.updated_nodes,
                status.failing_nodes
            ),
        ));
    }
    let mut out = section("Spec", &fields(&spec_rows));
    out.push_str(&section("Status", &fields(&status_rows)));
    if !status.versions.is_empty() {
        let rows = status.versions.iter().map(|v| {
            vec![
                v.version.clone(),
                get::short_digest(&v.sha256),
                v.nodes.to_string(),
                v.interactions.to_string(),
                v.errors.to_string(),
                v.traps.to_string(),
            ]
        });
        out.push_str(&section(
            "Versions",
            &table(
                &[
                    "VERSION",
                    "SHA256",
                    "NODES",
                    "INTERACTIONS",
                    "ERRORS",
                    "TRAPS",
                ],
                rows,
            ),
        ));
    }
    if let Some(r) = &status.rollout {
        let mut rows = vec![
            ("Id", r.id.clone()),
            ("Phase", r.phase.clone()),
            ("Step", r.step.clone()),
            ("Versions", crate::rollout::versions(r)),
            (
                "Nodes",
                format!(
                    "{} updated, {} healthy, {} failing, {} pending",
                    r.updated_nodes, r.healthy_nodes, r.failing_nodes, r.pending_nodes
                ),
            ),
        ];
        if let Some(gate) = &r.gate {
            rows.push(("Gate", gate.clone()));
        }
        if let Some(shadow) = &r.shadow {
            rows.push(("Shadow", shadow.clone()));
        }
        rows.push(("Why", r.message.clone()));
        if let Some(action) = &r.last_action {
            rows.push(("Last action", action.clone()));
        }
        out.push_str(&section("Rollout", &fields(&rows)));
    }
    out.push_str(&conditions_text(&status.conditions));
    out
}

/// A label selector as text: `site=a, tier in (1,2)`; none selects no node, an empty one every
/// node.
fn selector(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "<none>: selects no node".into();
    };
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {} ({values})", e.key, op.to_lowercase()),
        });
    }
    if terms.is_empty() {
        "<empty>: selects every node".into()
    } else {
        terms.join(", ")
    }
}

fn node_text(node: &EdgeNode) -> String {
    let cordoned = if node.spec.cordoned {
        "yes: no new classes are assigned"
    } else {
        "no"
    };
    let mut out = section("Spec", &fields(&[("Cordoned", cordoned.to_owned())]));
    let Some(status) = &node.status else {
        out.push_str("Status:  <none>: its agent has not reported yet\n");
        return out;
    };
    let mut rows = vec![
        ("State", or_none(status.state.clone())),
        (
            "Last seen",
            or_none(
                status
                    .last_seen
                    .as_deref()
                    .and_then(get::parse_time)
                    .map(at),
            ),
        ),
        ("Agent", or_none(status.agent_version.clone())),
        ("WasmEdge", or_none(status.wasmedge_version.clone())),
        (
            "Guest ABI",
            or_none(status.guest_abi_version.map(|v| format!("v{v}"))),
        ),
        ("Uplink", or_none(status.uplink.clone())),
        ("Device link", or_none(status.device_link.clone())),
        (
            "Devices",
            format!(
                "{} active (last minute), {} seen",
                status.active_devices, status.seen_devices
            ),
        ),
        ("Rate", or_none(status.rate.clone())),
        (
            "Errors",
            format!("{} (of which {} traps)", status.errors, status.traps),
        ),
        ("Outbox", format!("{} messages", status.outbox_depth)),
    ];
    if let Some(summary) = &status.summary {
        rows.push(("Summary", summary.clone()));
    }
    out.push_str(&section("Status", &fields(&rows)));
    if !status.classes.is_empty() {
        let rows = status.classes.iter().map(|c| {
            let quarantined: Vec<&str> = c
                .modules
                .iter()
                .filter(|m| m.quarantined)
                .map(|m| m.version.as_str())
                .collect();
            let mut last_error = c.last_error.clone().unwrap_or_default();
            if !quarantined.is_empty() {
                last_error = format!("quarantined {}; {last_error}", quarantined.join(", "));
            }
            vec![
                c.class.clone(),
                or_none(c.active.clone()),
                or_none(c.pending.clone()),
                c.active_devices.to_string(),
                format!("{:.1}/s", c.interactions_per_sec),
                c.modules.iter().map(|m| m.errors).sum::<u64>().to_string(),
                last_error,
            ]
        });
        out.push_str(&section(
            "Classes",
            &table(
                &[
                    "CLASS",
                    "ACTIVE",
                    "PENDING",
                    "DEVICES",
                    "RATE",
                    "ERRORS",
                    "LAST ERROR",
                ],
                rows,
            ),
        ));
    }
    out.push_str(&conditions_text(&status.conditions));
    out
}

/// When an Event last happened: its series' last observation, its event time, its deprecated
/// last timestamp, its creation, whichever is known first.
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn events_text(events: Result<Vec<Event>, String>) -> String {
    match events {
        Err(reason) => format!("Events:  <cannot list them: {reason}>\n"),
        Ok(events) if events.is_empty() => format!("Events:  {NONE}\n"),
        Ok(events) => {
            let rows = events.iter().map(|e| {
                let count = e
                    .series
                    .as_ref()
                    .map(|s| s.count)
                    .or(e.deprecated_count)
                    .filter(|&c| c > 1);
                let age = event_time(e).map_or_else(|| "<unknown>".to_owned(), since);
                let age = match (count, e.event_time.as_ref().map(|t| t.0)) {
                    (Some(count), Some(first)) => format!("{age} (x{count} over {})", since(first)),
                    (Some(count), None) => format!("{age} (x{count})"),
                    _ => age,
                };
                vec![
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    age,
                    e.reporting_controller.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                ]
            });
            section(
                "Events",
                &table(&["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows),
            )
        }
    }
}
