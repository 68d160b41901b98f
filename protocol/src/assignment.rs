//! Assignments: the controller's signed statement of what one node runs for one device class.
//!
//! The controller publishes a `Signed<Assignment>` retained on `ef/v1/node/<node>/assign/<class>`, so
//! an agent gets its current assignments whenever it (re)subscribes. An agent applies one only if:
//!
//! 1. it decodes ([`Signed::decode`](crate::Signed::decode)) and verifies against the agent's trust
//!    anchor ([`Signed::verify`](crate::Signed::verify));
//! 2. it names this node and the class of the topic it arrived on ([`Assignment::check_target`]):
//!    an assignment signed for another node (a canary's) cannot be replayed to this one;
//! 3. it is valid ([`Assignment::validate`]);
//! 4. its generation is newer than the one applied ([`Assignment::freshness`]): an older, validly
//!    signed assignment replayed by the broker or an attacker is refused, the same one again
//!    (a retained redelivery) is a no-op.
//!
//! Generations are strictly increasing per class, across every node and across the class being
//! deleted and recreated (a Kubernetes `metadata.generation` restarts at 1 then): the controller keeps
//! a counter per class, never lower than the last one it issued, e.g. `max(last + 1, now_ms)`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{ClassId, NodeId};
use crate::limits::{ClassLimits, LimitsError};
use crate::manifest::{ManifestError, ModuleManifest};
use crate::signing::SignedKind;
use crate::topic::Topic;

/// Largest class config, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Longest rollout id, in bytes.
pub const MAX_ROLLOUT_ID_LEN: usize = 128;

/// What one node runs for one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node this assignment is for.
    pub node: NodeId,
    /// The class assigned.
    pub class: ClassId,
    /// Strictly increasing per class (see the module documentation).
    pub generation: u64,
    /// When the controller issued it, in ms since the UNIX epoch.
    pub issued_at_ms: u64,
    /// The rollout this assignment is a step of; `None` outside a staged rollout (a withdrawal).
    pub rollout: Option<Rollout>,
    /// The handler to run; `None` withdraws the class from the node: the agent stops handling the
    /// class's devices and unsubscribes. A withdrawal is signed and retained like any assignment, so
    /// an agent that was offline still learns of it, and no unsigned message can stop a class.
    pub handler: Option<HandlerSpec>,
    /// A version to try beside `handler` without acting on it (a rollout's shadow step): the agent
    /// runs it on the same interactions, compares its outputs with the handler's, commits and sends
    /// nothing of it, and reports the agreement in its status ([`crate::status::ShadowReport`]).
    #[serde(default)]
    pub shadow: Option<HandlerSpec>,
}

/// The handler a class runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerSpec {
    /// The module; its blob is fetched by chunks (see [`crate::manifest`]).
    pub module: ModuleManifest,
    /// The class config handed to the handler (`config` host function), CBOR as declared in the
    /// DeviceClass; at most [`MAX_CONFIG_BYTES`].
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
    /// The limits the handler runs under.
    pub limits: ClassLimits,
}

/// Which rollout, and which step of it, an assignment belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rollout {
    /// The controller's id for the rollout (e.g. `thermo-7`): 1–128 bytes, unique per class.
    pub id: String,
    /// The step.
    pub stage: RolloutStage,
}

/// A step of a staged rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStage {
    /// The first nodes run the new module beside the current one, as a shadow (see
    /// [`Assignment::shadow`]); nothing it produces is acted upon.
    Shadow,
    /// The first nodes to get the new module; their health decides whether the rollout goes on.
    Canary,
    /// Wave `n` (from 1) after the canaries.
    Wave(u32),
    /// Every selected node has the new module.
    Complete,
    /// The rollout failed; this assignment brings back the previous module.
    Rollback,
}

impl fmt::Display for RolloutStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutStage::Shadow => f.write_str("shadow"),
            RolloutStage::Canary => f.write_str("canary"),
            RolloutStage::Wave(n) => write!(f, "wave {n}"),
            RolloutStage::Complete => f.write_str("complete"),
            RolloutStage::Rollback => f.write_str("rollback"),
        }
    }
}

/// How an assignment's generation compares with the one a node applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Newer than the applied one (or nothing applied yet): apply it.
    Newer,
    /// The applied one again (a retained redelivery): nothing to do.
    Current,
    /// Older than the applied one: a replay, refuse it.
    Stale,
}

/// Why an assignment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// It is for another node.
    #[error("assignment is for node {found}, not {expected}")]
    WrongNode {
        /// This node.
        expected: NodeId,
        /// The node it names.
        found: NodeId,
    },
    /// It names another class than its topic.
    #[error("assignment is for class {found}, but arrived on the topic of class {expected}")]
    WrongClass {
        /// The class of the topic.
        expected: ClassId,
        /// The class it names.
        found: ClassId,
    },
    /// With its shadow it is larger than an assignment may be.
    #[error(
        "assignment with its shadow is {len} bytes, over the {} allowed: use larger chunks",
        Assignment::MAX_PAYLOAD_LEN
    )]
    TooLarge {
        /// Its encoded length.
        len: usize,
    },
    /// It has a shadow but no handler: a shadow only runs beside a handler.
    #[error("assignment has a shadow module but no handler to run it beside")]
    ShadowWithoutHandler,
    /// Its rollout id is empty or longer than [`MAX_ROLLOUT_ID_LEN`].
    #[error("rollout id is {len} bytes long; 1 to {MAX_ROLLOUT_ID_LEN} are allowed")]
    BadRolloutId {
        /// Length of the id.
        len: usize,
    },
    /// Its config is larger than [`MAX_CONFIG_BYTES`].
    #[error("class config of {len} bytes exceeds the limit of {MAX_CONFIG_BYTES}")]
    ConfigTooLarge {
        /// Length of the config.
        len: usize,
    },
    /// Its module is larger than its own limits allow.
    #[error("module of {size} bytes exceeds the class limit of {max}")]
    ModuleTooLarge {
        /// The module's size.
        size: u64,
        /// The class's `max_module_bytes`.
        max: u32,
    },
    /// Its manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Its limits are invalid.
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

impl Assignment {
    /// The topic the assignment is published on.
    pub fn topic(&self) -> Topic {
        Topic::Assignment {
            node: self.node.clone(),
            class: self.class.clone(),
        }
    }

    /// Checks that the assignment is for `node` and for `class` (the class of the topic it arrived
    /// on).
    pub fn check_target(&self, node: &NodeId, class: &ClassId) -> Result<(), AssignmentError> {
        if self.node != *node {
            return Err(AssignmentError::WrongNode {
                expected: node.clone(),
                found: self.node.clone(),
            });
        }
        if self.class != *class {
            return Err(AssignmentError::WrongClass {
                expected: class.clone(),
                found: self.class.clone(),
            });
        }
        Ok(())
    }

    /// Checks the rollout id and the handler (and shadow): manifest, limits, config size, and that
    /// the module fits the limits' `max_module_bytes`.
    pub fn validate(&self) -> Result<(), AssignmentError> {
        if let Some(rollout) = &self.rollout
            && (rollout.id.is_empty() || rollout.id.len() > MAX_ROLLOUT_ID_LEN)
        {
            return Err(AssignmentError::BadRolloutId {
                len: rollout.id.len(),
            });
        }
        match (&self.handler, &self.shadow) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(AssignmentError::ShadowWithoutHandler),
            (Some(handler), None) => handler.validate(),
            (Some(handler), Some(shadow)) => {
                handler.validate()?;
                shadow.validate()?;
                // One largest handler fits by construction, two need not (a module of thousands
                // of minimum-size chunks): the whole payload must still fit.
                let len = crate::codec::encode(self).len();
                if len > Self::MAX_PAYLOAD_LEN {
                    return Err(AssignmentError::TooLarge { len });
                }
                Ok(())
            }
        }
    }

    /// How this assignment's generation compares with `applied`, the generation the node applied
    /// last for this class (`None` if none).
    pub fn freshness(&self, applied: Option<u64>) -> Freshness {
        match applied {
            Some(applied) if self.generation < applied => Freshness::Stale,
            Some(applied) if self.generation == applied => Freshness::Current,
            _ => Freshness::Newer,
        }
    }
}

impl HandlerSpec {
    /// Checks the manifest, the limits, the config size, and that the module fits the limits'
    /// `max_module_bytes`.
    fn validate(&self) -> Result<(), AssignmentError> {
        let handler = self;
        handler.module.validate()?;
        handler.limits.validate()?;
        if handler.config.len() > MAX_CONFIG_BYTES {
            return Err(AssignmentError::ConfigTooLarge {
                len: handler.config.len(),
            });
        }
        if handler.module.size > u64::from(handler.limits.max_module_bytes) {
            return Err(AssignmentError::ModuleTooLarge {
                size: handler.module.size,
                max: handler.limits.max_module_bytes,
            });
        }
        Ok(())
    }
}

impl SignedKind for Assignment {
    const KIND: &'static str = "assignment";
    const MAX_PAYLOAD_LEN: usize = 240 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DEFAULT_CHUNK_SIZE, MAX_MODULE_BYTES};

    fn assignment() -> Assignment {
        Assignment {
            node: NodeId::new("edge-1").unwrap(),
            class: ClassId::new("thermo").unwrap(),
            generation: 7,
            issued_at_ms: 1_700_000_000_000,
            shadow: None,
            rollout: Some(Rollout {
                id: "thermo-3".into(),
                stage: RolloutStage::Wave(2),
            }),
            handler: Some(HandlerSpec {
                module: ModuleManifest::for_blob(
                    "thermo",
                    "1.0.0",
                    1,
                    b"\0asm",
                    DEFAULT_CHUNK_SIZE,
                )
                .unwrap(),
                config: vec![0xa0],
                limits: ClassLimits::default(),
            }),
        }
    }

    #[test]
    fn targets() {
        let a = assignment();
        let node = a.node.clone();
        let class = a.class.clone();
        assert_eq!(a.check_target(&node, &class), Ok(()));
        let other_node = NodeId::new("edge-2").unwrap();
        assert_eq!(
            a.check_target(&other_node, &class),
            Err(AssignmentError::WrongNode {
                expected: other_node,
                found: node.clone()
            })
        );
        let other_class = ClassId::new("door").unwrap();
        assert_eq!(
            a.check_target(&node, &other_class),
            Err(AssignmentError::WrongClass {
                expected: other_class,
                found: class
            })
        );
        assert_eq!(a.topic().to_string(), "ef/v1/node/edge-1/assign/thermo");
    }

    #[test]
    fn freshness() {
        let a = assignment();
        assert_eq!(a.freshness(None), Freshness::Newer);
        assert_eq!(a.freshness(Some(6)), Freshness::Newer);
        assert_eq!(a.freshness(Some(7)), Freshness::Current);
        assert_eq!(a.freshness(Some(8)), Freshness::Stale);
    }

    #[test]
    fn validation() {
        assert_eq!(assignment().validate(), Ok(()));

        let withdrawal = Assignment {
            rollout: None,
            handler: None,
            ..assignment()
        };
        assert_eq!(withdrawal.validate(), Ok(()));

        let mut a = assignment();
        a.rollout.as_mut().unwrap().id.clear();
        assert_eq!(a.validate(), Err(AssignmentError::BadRolloutId { len: 0 }));

        let mut a = assignment();
        a.handler.as_mut().unwrap().config = vec![0; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            a.validate(),
            Err(AssignmentError::ConfigTooLarge {
                len: MAX_CONFIG_BYTES + 1
            })
        );

        let mut a = assignment();
        a.handler.as_mut().unwrap().limits.max_module_bytes = 3;
        assert_eq!(
            a.validate(),
            Err(AssignmentError::ModuleTooLarge { size: 4, max: 3 })
        );

        let mut a = assignment();
        a.handler.as_mut().unwrap().limits.time_budget_ms = 0;
        assert!(matches!(a.validate(), Err(AssignmentError::Limits(_))));

        let mut a = assignment();
        a.handler.as_mut().unwrap().module.chunks.clear();
        assert!(matches!(a.validate(), Err(AssignmentError::Manifest(_))));

        // A shadow is checked like the handler, and only runs beside one.
        let mut a = assignment();
        a.shadow = a.handler.clone();
        assert_eq!(a.validate(), Ok(()));
        a.shadow.as_mut().unwrap().config = vec![0; MAX_CONFIG_BYTES + 1];
        assert_eq!(
            a.validate(),
            Err(AssignmentError::ConfigTooLarge {
                len: MAX_CONFIG_BYTES + 1
            })
        );
        let mut a = assignment();
        a.shadow = a.handler.take();
        assert_eq!(a.validate(), Err(AssignmentError::ShadowWithoutHandler));
    }

    #[test]
    fn largest_assignment_fits_its_bounds() {
        use crate::manifest::MIN_CHUNK_SIZE;
        use crate::signing::{Signed, SigningKey};

        let mut a = assignment();
        a.rollout.as_mut().unwrap().id = "r".repeat(MAX_ROLLOUT_ID_LEN);
        let handler = a.handler.as_mut().unwrap();
        handler.config = vec![0xff; MAX_CONFIG_BYTES];
        handler.limits.max_module_bytes = MAX_MODULE_BYTES as u32;
        handler.limits.allowed_topics = vec!["a234567890123456789012345678901234567890123456789012345678901234/b234567890123456789012345678901234567890123456789012345678901234/#".into(); crate::limits::MAX_ALLOWED_TOPICS];
        handler.module.name = "n".repeat(64);
        handler.module.version = "1".repeat(64);
        handler.module.built_at_ms = Some(u64::MAX);
        handler.module.size = MAX_MODULE_BYTES;
        handler.module.chunk_size = MIN_CHUNK_SIZE;
        handler.module.chunks =
            vec![crate::Sha256Digest::of(b""); crate::manifest::MAX_MODULE_CHUNKS as usize];
        a.generation = u64::MAX;
        a.issued_at_ms = u64::MAX;
        assert_eq!(a.validate(), Ok(()));
        let mut twice = a.clone();
        twice.shadow = twice.handler.clone();
        assert!(matches!(
            twice.validate(),
            Err(AssignmentError::TooLarge { len }) if len > Assignment::MAX_PAYLOAD_LEN
        ));

        let signed = SigningKey::generate().unwrap().sign(&a);
        assert!(
            signed.payload().len() <= Assignment::MAX_PAYLOAD_LEN,
            "{}",
            signed.payload().len()
        );
        let envelope = signed.encode();
        assert!(envelope.len() <= Signed::<Assignment>::MAX_LEN);
        assert_eq!(Signed::<Assignment>::decode(&envelope), Ok(signed));
    }

    #[test]
    fn stage_names() {
        let stages = [
            RolloutStage::Canary,
            RolloutStage::Wave(3),
            RolloutStage::Complete,
            RolloutStage::Rollback,
        ];
        let shown: Vec<String> = stages.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["canary", "wave 3", "complete", "rollback"]);
    }
}
