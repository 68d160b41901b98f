//! The status the controller writes on HandlerModules and DeviceClasses: pure functions of what it
//! knows (a module's resolution; a class's plan, what is published and what nodes report).
//!
//! A condition keeps its `lastTransitionTime` while its status stays the same, so the same inputs
//! give the same status and an unchanged object is never written again.

use std::collections::BTreeMap;

use edgefleet_protocol::{ClassId, NodeId, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::distribution::Published;
use crate::fleet::{ClassPlan, Resolution};
use crate::resources::{DeviceClassStatus, HandlerModuleStatus, VersionStatus};

/// How recent a class error on a node must be for the node to count as failing the class.
pub const RECENT_ERROR_MS: u64 = 120_000;

/// A condition; its transition time is `previous`'s when the status is unchanged, else `now_ms`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    previous: &[Condition],
    now_ms: u64,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now_ms));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// A Kubernetes time from ms since the UNIX epoch (whole seconds, as the API server keeps them).
pub fn time(ms: u64) -> Time {
    let seconds = (ms / 1000) as i64;
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A HandlerModule's status from its resolution.
pub fn module_status(
    resolution: &Resolution,
    admission: Option<&str>,
    generation: Option<i64>,
    previous: Option<&HandlerModuleStatus>,
    now_ms: u64,
) -> HandlerModuleStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let (ready, reason, message) = match resolution {
        Resolution::Ready(ready) => (
            true,
            "Admitted",
            format!(
                "pulled, verified and admitted ({} bytes, {} chunks)",
                ready.manifest.size,
                ready.manifest.chunks.len()
            ),
        ),
        Resolution::Pending => (false, "Pulling", "being fetched".to_string()),
        Resolution::Unavailable(p) | Resolution::Refused(p) => (false, p.reason, p.message.clone()),
    };
    let manifest = match resolution {
        Resolution::Ready(ready) => Some(&ready.manifest),
        _ => None,
    };
    HandlerModuleStatus {
        observed_generation: generation,
        sha256: manifest.map(|m| m.sha256.to_string()),
        size: manifest.map(|m| m.size),
        admission: admission.map(str::to_string),
        conditions: vec![condition(
            "Ready",
            ready,
            reason,
            message,
            generation,
            previous_conditions,
            now_ms,
        )],
    }
}

/// A DeviceClass's status: its plan, what is published for it and what its nodes report.
pub fn class_status(
    class: &ClassId,
    plan: &ClassPlan,
    published: &Published,
    reports: &BTreeMap<&NodeId, &NodeStatus>,
    generation: Option<i64>,
    previous: Option<&DeviceClassStatus>,
    now_ms: u64,
) -> DeviceClassStatus {
    let target = plan.target.as_ref();
    let target_sha = target.map(|t| t.sha256);
    let mut status = DeviceClassStatus {
        observed_generation: generation,
        target_version: target.map(|t| format!("{} {}", t.name, t.version)),
        target_sha256: target_sha.map(|s| s.to_string()),
        selected_nodes: plan.selected.len() as u32,
        ..DeviceClassStatus::default()
    };
    for node in &plan.selected {
        let assigned = published
            .assignments
            .get(&(node.clone(), class.clone()))
            .and_then(|a| a.handler.as_ref())
            .map(|h| h.module.sha256);
        if assigned.is_some() && assigned == target_sha {
            status.assigned_nodes += 1;
        }
        let Some(on_node) = reports
            .get(node)
            .and_then(|r| r.class(class).map(|c| (r, c)))
        else {
            continue;
        };
        let (report, class_on_node) = on_node;
        let active = class_on_node.active.as_ref().map(|m| m.sha256);
        if active.is_some() && active == target_sha {
            status.updated_nodes += 1;
        }
        let recent_error = class_on_node
            .last_error
            .as_ref()
            .is_some_and(|e| report.updated_at_ms.saturating_sub(e.at_ms) < RECENT_ERROR_MS);
        let quarantined = class_on_node.modules.iter().any(|m| m.quarantined);
        if recent_error || quarantined {
            status.failing_nodes += 1;
        }
    }
    let mut versions: BTreeMap<String, VersionStatus> = BTreeMap::new();
    for report in reports.values() {
        let Some(class_on_node) = report.class(class) else {
            continue;
        };
        let Some(active) = &class_on_node.active else {
            continue;
        };
        let entry = versions
            .entry(active.sha256.to_string())
            .or_insert_with(|| VersionStatus {
                version: format!("{} {}", active.name, active.version),
                sha256: active.sha256.to_string(),
                ..VersionStatus::default()
            });
        entry.nodes += 1;
        if let Some(stats) = class_on_node.module(&active.sha256) {
            entry.interactions += stats.interactions;
            entry.errors += stats.errors;
            entry.traps += stats.traps;
        }
    }
    status.versions = versions.into_values().collect();

    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let (ready, reason, message) = match &plan.problem {
        Some(problem) => (false, problem.reason, problem.message.clone()),
        None if status.updated_nodes == status.selected_nodes => (
            true,
            "AllNodesUpdated",
            format!(
                "{} of {} selected nodes run {}",
                status.updated_nodes,
                status.selected_nodes,
                status.target_version.as_deref().unwrap_or("-")
            ),
        ),
        None => (
            false,
            "Progressing",
            format!(
                "{} of {} selected nodes run {} ({} assigned)",
                status.updated_nodes,
                status.selected_nodes,
                status.target_version.as_deref().unwrap_or("-"),
                status.assigned_nodes
            ),
        ),
    };
    let degraded = status.failing_nodes > 0;
    status.conditions = vec![
        condition(
            "Ready",
            ready,
            reason,
            message,
            generation,
            previous_conditions,
            now_ms,
        ),
        condition(
            "Degraded",
            degraded,
            if degraded {
                "NodesFailing"
            } else {
                "NoFailures"
            },
            if degraded {
                format!(
                    "{} nodes report recent errors or a quarantined version",
                    status.failing_nodes
                )
            } else {
                String::new()
            },
            generation,
            previous_conditions,
            now_ms,
        ),
    ];
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Problem;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let first = condition("Ready", false, "Pulling", "", Some(1), &[], 10_000);
        let same = condition(
            "Ready",
            false,
            "Pulling",
            "",
            Some(1),
            std::slice::from_ref(&first),
            99_000,
        );
        assert_eq!(same, first);
        let flipped = condition("Ready", true, "Admitted", "", Some(1), &[first], 99_000);
        assert_eq!(flipped.last_transition_time, time(99_000));
    }

    #[test]
    fn a_refused_module_says_why() {
        let status = module_status(
            &Resolution::Refused(Problem::new("DigestMismatch", "expected a, found b")),
            None,
            Some(1),
            None,
            0,
        );
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DigestMismatch")
        );
        assert!(ready.message.contains("expected a"));
        assert_eq!(status.sha256, None);
    }
}
