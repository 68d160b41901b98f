//! From a [`Plan`] and what the cloud broker already holds ([`Published`]) to the publications that
//! make them agree: module chunks, signed assignments, withdrawals and chunk removals. Pure; the
//! cloud link (`cloud`) carries the actions out.
//!
//! **What is published is read back, not remembered.** Assignments and chunks are retained
//! messages; when the controller starts (or takes over leadership) it subscribes to them and
//! rebuilds [`Published`] from what the broker delivers. So a restart, a failover to the other
//! replica or a replayed watch plans against the real state: equal content is never published
//! again, and a broker that lost its retained messages is simply filled again.
//!
//! **Generations** strictly increase per (node, class): the next one is the larger of the
//! published generation + 1 and the current time in ms. The clock term keeps them increasing even
//! when the broker lost the published ones (an agent refuses a generation older than the one it
//! applied, and would otherwise refuse every assignment of a controller that starts counting from
//! one again).
//!
//! **Order on the wire**: chunks before the assignments that refer to them, removals last, all on
//! one MQTT connection, whose QoS 1 messages the broker delivers in order — so an agent never holds
//! an assignment whose chunks are not there yet, and chunks are removed only once no assignment
//! that needs them remains.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_protocol::{
    ClassId, HandlerSpec, KeyId, ModuleManifest, NodeId, Rollout, Sha256Digest,
};

use crate::fleet::Plan;

/// What the cloud broker holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// The retained assignment of each (node, class).
    pub assignments: BTreeMap<(NodeId, ClassId), PublishedAssignment>,
    /// For each module (by blob digest), the digest of each retained chunk's bytes by index.
    pub chunks: BTreeMap<Sha256Digest, BTreeMap<u32, Sha256Digest>>,
}

/// One retained assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedAssignment {
    /// Its generation.
    pub generation: u64,
    /// The key that signed it.
    pub key: KeyId,
    /// Its handler; `None` is a withdrawal.
    pub handler: Option<HandlerSpec>,
    /// Its shadow handler, if any.
    pub shadow: Option<HandlerSpec>,
}

/// One publication.
// Actions live for one round and most are assignments: boxing them would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish these chunks of the module (retained).
    PublishChunks {
        /// The module.
        manifest: ModuleManifest,
        /// The chunks missing or wrong on the broker.
        indices: Vec<u32>,
    },
    /// Sign and publish an assignment (retained); `handler: None` withdraws the class.
    Assign {
        /// The node.
        node: NodeId,
        /// The class.
        class: ClassId,
        /// Its generation.
        generation: u64,
        /// The handler, or `None`.
        handler: Option<HandlerSpec>,
        /// A shadow handler, if any.
        shadow: Option<HandlerSpec>,
        /// The rollout step it belongs to.
        rollout: Option<Rollout>,
    },
    /// Remove these retained chunks (empty retained publications).
    RemoveChunks {
        /// The module.
        module: Sha256Digest,
        /// The chunks.
        indices: Vec<u32>,
    },
}

/// The publications that bring `published` to `plan`, signed with `key`, at `now_ms`.
pub fn diff(plan: &Plan, published: &Published, key: KeyId, now_ms: u64) -> Vec<Action> {
    let mut assigns = Vec::new();
    // What each (node, class) holds once the actions are carried out.
    let mut after: BTreeMap<&(NodeId, ClassId), [Option<&HandlerSpec>; 2]> = BTreeMap::new();

    for (target, planned) in &plan.handlers {
        let current = published.assignments.get(target);
        let same = current.is_some_and(|p| {
            p.key == key
                && p.handler.as_ref() == Some(&planned.handler)
                && p.shadow == planned.shadow
        });
        if !same {
            assigns.push(assign(
                target,
                current,
                Some(planned.handler.clone()),
                planned.shadow.clone(),
                planned.rollout.clone(),
                now_ms,
            ));
        }
        after.insert(target, [Some(&planned.handler), planned.shadow.as_ref()]);
    }
    for (target, current) in &published.assignments {
        if plan.handlers.contains_key(target) {
            continue;
        }
        let (node, class) = target;
        let keep =
            plan.hold_withdrawals || plan.held.contains(class) || plan.cordoned.contains(node);
        let (handler, shadow) = if keep {
            (current.handler.clone(), current.shadow.clone())
        } else {
            (None, None)
        };
        if current.key != key || current.handler != handler || current.shadow != shadow {
            assigns.push(assign(target, Some(current), handler, shadow, None, now_ms));
        }
        let kept = if keep {
            [current.handler.as_ref(), current.shadow.as_ref()]
        } else {
            [None, None]
        };
        after.insert(target, kept);
    }

    let mut needed: BTreeMap<Sha256Digest, &ModuleManifest> = plan
        .retained
        .iter()
        .map(|(sha, manifest)| (*sha, manifest))
        .collect();
    for handler in after.values().flatten().flatten() {
        needed.insert(handler.module.sha256, &handler.module);
    }
    let mut actions = Vec::new();
    for (sha256, manifest) in &needed {
        let present = published.chunks.get(sha256);
        let indices: Vec<u32> = manifest
            .chunks
            .iter()
            .enumerate()
            .filter(|(i, digest)| present.and_then(|p| p.get(&(*i as u32))) != Some(*digest))
            .map(|(i, _)| i as u32)
            .collect();
        if !indices.is_empty() {
            actions.push(Action::PublishChunks {
                manifest: (*manifest).clone(),
                indices,
            });
        }
    }
    actions.extend(assigns);
    for (sha256, present) in &published.chunks {
        let keep = needed.get(sha256).map_or(0, |m| m.chunks.len() as u32);
        let indices: Vec<u32> = present.keys().copied().filter(|i| *i >= keep).collect();
        if !indices.is_empty() {
            actions.push(Action::RemoveChunks {
                module: *sha256,
                indices,
            });
        }
    }
    actions
}

fn assign(
    (node, class): &(NodeId, ClassId),
    current: Option<&PublishedAssignment>,
    handler: Option<HandlerSpec>,
    shadow: Option<HandlerSpec>,
    rollout: Option<Rollout>,
    now_ms: u64,
) -> Action {
    let generation = current
        .map_or(0, |p| p.generation.saturating_add(1))
        .max(now_ms);
    Action::Assign {
        node: node.clone(),
        class: class.clone(),
        generation,
        handler,
        shadow,
        rollout,
    }
}

/// Applies carried-out actions to `published`, as the broker now holds them.
pub fn record(published: &mut Published, action: &Action, key: KeyId) {
    match action {
        Action::PublishChunks { manifest, indices } => {
            let chunks = published.chunks.entry(manifest.sha256).or_default();
            for &i in indices {
                chunks.insert(i, manifest.chunks[i as usize]);
            }
        }
        Action::Assign {
            node,
            class,
            generation,
            handler,
            shadow,
            ..
        } => {
            published.assignments.insert(
                (node.clone(), class.clone()),
                PublishedAssignment {
                    generation: *generation,
                    key,
                    handler: handler.clone(),
                    shadow: shadow.clone(),
                },
            );
        }
        Action::RemoveChunks { module, indices } => {
            if let Some(chunks) = published.chunks.get_mut(module) {
                for i in indices {
                    chunks.remove(i);
                }
                if chunks.is_empty() {
                    published.chunks.remove(module);
                }
            }
        }
    }
}

/// The modules an assignment in `published` refers to.
pub fn referenced_modules(published: &Published) -> BTreeSet<Sha256Digest> {
    published
        .assignments
        .values()
        .flat_map(|a| [a.handler.as_ref(), a.shadow.as_ref()])
        .flatten()
        .map(|h| h.module.sha256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::{ClassLimits, SigningKey};

    const NOW: u64 = 1_000_000;

    fn handler(version: &str, size: usize) -> HandlerSpec {
        let blob = vec![version.as_bytes()[0]; size];
        HandlerSpec {
            module: ModuleManifest::for_blob("thermostat", version, 1, &blob, 16 * 1024).unwrap(),
            config: vec![0xa0],
            limits: ClassLimits::default(),
        }
    }

    fn target(node: &str) -> (NodeId, ClassId) {
        (NodeId::new(node).unwrap(), ClassId::new("thermo").unwrap())
    }

    fn key() -> KeyId {
        SigningKey::generate().unwrap().key_id()
    }

    /// Carries out `actions` on `published`, as the cloud link does.
    fn apply(published: &mut Published, actions: &[Action], key: KeyId) {
        for action in actions {
            record(published, action, key);
        }
    }

    /// Plans and carries out one round.
    fn step(published: &mut Published, plan: &Plan, key: KeyId, now_ms: u64) {
        let actions = diff(plan, published, key, now_ms);
        apply(published, &actions, key);
    }

    fn plan_of(entries: &[(&str, &HandlerSpec)]) -> Plan {
        let mut plan = Plan::default();
        for (node, h) in entries {
            plan.handlers
                .insert(target(node), crate::fleet::Planned::handler((*h).clone()));
        }
        plan
    }

    #[test]
    fn chunks_then_the_assignment_then_nothing_more() {
        let (key, v1) = (key(), handler("1.0.0", 40_000));
        let plan = plan_of(&[("edge-a", &v1)]);
        let mut published = Published::default();
        let actions = diff(&plan, &published, key, NOW);
        assert!(
            matches!(&actions[0], Action::PublishChunks { indices, .. } if indices == &[0, 1, 2])
        );
        assert!(matches!(
            &actions[1],
            Action::Assign {
                generation: NOW,
                handler: Some(_),
                ..
            }
        ));
        assert_eq!(actions.len(), 2);
        apply(&mut published, &actions, key);
        assert!(
            diff(&plan, &published, key, NOW + 5).is_empty(),
            "converged"
        );
    }

    #[test]
    fn a_new_version_gets_a_higher_generation_and_the_old_chunks_go() {
        let (key, v1, v2) = (key(), handler("1.0.0", 20_000), handler("2.0.0", 20_000));
        let mut published = Published::default();
        step(&mut published, &plan_of(&[("edge-a", &v1)]), key, NOW);
        // The clock went backwards: the generation still increases.
        let actions = diff(&plan_of(&[("edge-a", &v2)]), &published, key, NOW - 500);
        assert!(
            matches!(&actions[0], Action::PublishChunks { manifest, .. } if manifest.version == "2.0.0")
        );
        assert!(matches!(&actions[1], Action::Assign { generation, .. } if *generation == NOW + 1));
        assert!(
            matches!(&actions[2], Action::RemoveChunks { module, indices } if *module == v1.module.sha256 && indices == &[0, 1])
        );
        apply(&mut published, &actions, key);
        assert_eq!(
            published.chunks.keys().collect::<Vec<_>>(),
            vec![&v2.module.sha256]
        );
    }

    #[test]
    fn an_unselected_node_is_withdrawn_but_a_held_class_or_cordoned_node_keeps_its_handler() {
        let (key, v1) = (key(), handler("1.0.0", 100));
        let mut published = Published::default();
        step(
            &mut published,
            &plan_of(&[("edge-a", &v1), ("edge-b", &v1)]),
            key,
            NOW,
        );
        let mut plan = plan_of(&[("edge-a", &v1)]);
        plan.cordoned.insert(NodeId::new("edge-b").unwrap());
        assert!(
            diff(&plan, &published, key, NOW).is_empty(),
            "cordoned keeps"
        );

        let mut held = Plan::default();
        held.held.insert(ClassId::new("thermo").unwrap());
        assert!(diff(&held, &published, key, NOW).is_empty(), "held keeps");
        let incomplete = Plan {
            hold_withdrawals: true,
            ..Plan::default()
        };
        assert!(
            diff(&incomplete, &published, key, NOW).is_empty(),
            "incomplete keeps"
        );

        let actions = diff(&plan_of(&[("edge-a", &v1)]), &published, key, NOW);
        assert_eq!(actions.len(), 1);
        assert!(
            matches!(&actions[0], Action::Assign { node, handler: None, .. } if node.as_str() == "edge-b")
        );
        apply(&mut published, &actions, key);
        assert!(diff(&plan_of(&[("edge-a", &v1)]), &published, key, NOW).is_empty());

        let actions = diff(&Plan::default(), &published, key, NOW);
        assert!(
            matches!(&actions[0], Action::Assign { node, handler: None, .. } if node.as_str() == "edge-a")
        );
        assert!(matches!(&actions[1], Action::RemoveChunks { .. }));
    }

    #[test]
    fn a_new_key_re_signs_everything_without_changing_content() {
        let (old, new, v1) = (key(), key(), handler("1.0.0", 100));
        let mut published = Published::default();
        let plan = plan_of(&[("edge-a", &v1)]);
        step(&mut published, &plan, old, NOW);
        published.assignments.insert(
            target("edge-z"),
            PublishedAssignment {
                generation: 3,
                key: old,
                handler: None,
                shadow: None,
            },
        );
        let actions = diff(&plan, &published, new, NOW + 1);
        let assigns: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Assign { node, handler, .. } => Some((node.as_str(), handler.is_some())),
                _ => None,
            })
            .collect();
        assert_eq!(assigns, vec![("edge-a", true), ("edge-z", false)]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::PublishChunks { .. }))
        );
    }

    #[test]
    fn missing_or_damaged_chunks_are_published_again() {
        let (key, v1) = (key(), handler("1.0.0", 40_000));
        let plan = plan_of(&[("edge-a", &v1)]);
        let mut published = Published::default();
        step(&mut published, &plan, key, NOW);
        let chunks = published.chunks.get_mut(&v1.module.sha256).unwrap();
        chunks.remove(&0);
        chunks.insert(2, Sha256Digest::of(b"garbage"));
        chunks.insert(9, Sha256Digest::of(b"stray"));
        let actions = diff(&plan, &published, key, NOW);
        assert!(matches!(&actions[0], Action::PublishChunks { indices, .. } if indices == &[0, 2]));
        assert!(matches!(&actions[1], Action::RemoveChunks { indices, .. } if indices == &[9]));
        assert_eq!(actions.len(), 2);
    }
}
