//! The MQTT topic namespace: typed builders and parsers for every edgefleet topic, class-relative
//! topics, topic filters, and MQTT filter matching.
//!
//! The namespace itself (which topic carries what, retained or not, who publishes) is tabled in the
//! crate documentation. Every identifier is exactly one level (see [`crate::id`]); a class-relative
//! topic ([`ClassTopic`]: a device's channel, or the topic a handler publishes upstream on) is 1 to
//! [`MAX_CLASS_TOPIC_LEVELS`] levels that follow the same rule. [`Topic::parse`] accepts exactly the
//! strings [`Topic`]'s `Display` produces, so a parsed topic has one canonical spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::{DigestParseError, Sha256Digest};
use crate::id::{ClassId, DeviceId, IdError, NodeId, check_id};

/// The first two levels of every edgefleet topic; the second is the protocol version.
pub const TOPIC_PREFIX: &str = "ef/v1";

/// Most levels a class-relative topic ([`ClassTopic`]) may have.
pub const MAX_CLASS_TOPIC_LEVELS: usize = 3;

/// Every device's messages on a device broker (the agent of that broker subscribes to it).
pub const ALL_DEVICES_UP_FILTER: &str = "ef/v1/dev/+/+/up/#";

/// Every node's retained status (controller subscription).
pub const NODE_STATUS_FILTER: &str = "ef/v1/node/+/status";

/// Every node's agent events (controller subscription).
pub const NODE_EVENT_FILTER: &str = "ef/v1/node/+/event";

/// Every node's upstream telemetry and events (controller or data-pipeline subscription).
pub const NODE_UPSTREAM_FILTER: &str = "ef/v1/node/+/up/#";

/// Which kind of identifier a topic level holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A [`NodeId`].
    Node,
    /// A [`ClassId`].
    Class,
    /// A [`DeviceId`].
    Device,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Node => "node",
            IdKind::Class => "class",
            IdKind::Device => "device",
        })
    }
}

/// Why a string is not a valid topic, class-relative topic or topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not start with `ef/`.
    #[error("not an edgefleet topic (edgefleet topics start with \"ef/\")")]
    Foreign,
    /// The topic starts with `ef/` but its version level is not `v1`.
    #[error("edgefleet topic version {found:?} is not supported; this side speaks v1")]
    UnsupportedVersion {
        /// The version level found (at most 16 characters of it).
        found: String,
    },
    /// The topic starts with [`TOPIC_PREFIX`] but matches no layout of the namespace.
    #[error("no edgefleet topic has this layout")]
    UnknownLayout,
    /// A level that must hold an identifier does not.
    #[error("bad {kind} id in topic: {source}")]
    BadId {
        /// Which identifier.
        kind: IdKind,
        /// Why it is invalid.
        #[source]
        source: IdError,
    },
    /// A level of a class-relative topic or filter is invalid.
    #[error("bad level {level} of class topic: {source}")]
    BadLevel {
        /// Index of the level, from 0.
        level: usize,
        /// Why it is invalid.
        #[source]
        source: IdError,
    },
    /// A class-relative topic, or a filter (not counting a trailing `#`), has too many levels.
    #[error("class topic has {levels} levels; 1 to {MAX_CLASS_TOPIC_LEVELS} are allowed")]
    Depth {
        /// Number of levels found.
        levels: usize,
    },
    /// The module level is not a canonical digest.
    #[error("bad module digest in topic: {0}")]
    BadDigest(#[from] DigestParseError),
    /// The chunk level is not a canonical decimal `u32` (no sign, no leading zero).
    #[error("bad chunk index in topic")]
    BadChunkIndex,
    /// A filter has `#` other than as its whole last level, or `+` other than as a whole level.
    #[error("filter level {level}: '#' must be the whole last level and '+' a whole level")]
    MisplacedWildcard {
        /// Index of the level, from 0.
        level: usize,
    },
}

/// A class-relative topic: the channel a device publishes on below `up/` (`telemetry`,
/// `event/door`), or the topic a handler publishes upstream on. 1 to [`MAX_CLASS_TOPIC_LEVELS`]
/// levels, each following the identifier rule of [`crate::id`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClassTopic(String);

impl ClassTopic {
    /// Validates `topic`.
    pub fn new(topic: impl Into<String>) -> Result<Self, TopicError> {
        let topic = topic.into();
        check_class_topic(&topic)?;
        Ok(ClassTopic(topic))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic's levels, first to last.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl TryFrom<String> for ClassTopic {
    type Error = TopicError;

    fn try_from(topic: String) -> Result<Self, TopicError> {
        ClassTopic::new(topic)
    }
}

impl FromStr for ClassTopic {
    type Err = TopicError;

    fn from_str(topic: &str) -> Result<Self, TopicError> {
        ClassTopic::new(topic)
    }
}

impl From<ClassTopic> for String {
    fn from(topic: ClassTopic) -> String {
        topic.0
    }
}

impl AsRef<str> for ClassTopic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClassTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_class_topic(topic: &str) -> Result<(), TopicError> {
    let levels = topic.split('/').count();
    if levels > MAX_CLASS_TOPIC_LEVELS {
        return Err(TopicError::Depth { levels });
    }
    for (level, text) in topic.split('/').enumerate() {
        check_id(text).map_err(|source| TopicError::BadLevel { level, source })?;
    }
    Ok(())
}

/// Whether `topic` is a valid class-relative topic (see [`ClassTopic`]).
pub fn is_class_topic(topic: &str) -> bool {
    check_class_topic(topic).is_ok()
}

/// A validated MQTT-style filter over class-relative topics (as in
/// [`ClassLimits::allowed_topics`](crate::ClassLimits::allowed_topics)): levels are `+` (any one
/// level), a final `#` (this level and everything below it, including nothing: `event/#` matches
/// `event`), or literal levels following the identifier rule. A filter that could never match a
/// [`ClassTopic`] (more than [`MAX_CLASS_TOPIC_LEVELS`] levels before a trailing `#`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates `filter`.
    pub fn new(filter: impl Into<String>) -> Result<Self, TopicError> {
        let filter = filter.into();
        check_filter(&filter)?;
        Ok(TopicFilter(filter))
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches this filter.
    pub fn matches(&self, topic: &ClassTopic) -> bool {
        filter_matches(&self.0, topic.as_str())
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;

    fn try_from(filter: String) -> Result<Self, TopicError> {
        TopicFilter::new(filter)
    }
}

impl FromStr for TopicFilter {
    type Err = TopicError;

    fn from_str(filter: &str) -> Result<Self, TopicError> {
        TopicFilter::new(filter)
    }
}

impl From<TopicFilter> for String {
    fn from(filter: TopicFilter) -> String {
        filter.0
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `filter` against the rules of [`TopicFilter`].
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    let levels = filter.split('/').count();
    for (level, text) in filter.split('/').enumerate() {
        match text {
            "+" => {}
            "#" if level + 1 == levels => {}
            _ if text.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard { level }),
            _ => check_id(text).map_err(|source| TopicError::BadLevel { level, source })?,
        }
    }
    let literal_depth = if filter == "#" || filter.ends_with("/#") {
        levels - 1
    } else {
        levels
    };
    if literal_depth > MAX_CLASS_TOPIC_LEVELS {
        return Err(TopicError::Depth {
            levels: literal_depth,
        });
    }
    Ok(())
}

/// Whether MQTT topic `topic` matches MQTT filter `filter`, with the semantics of MQTT 3.1.1 §4.7 /
/// 5.0 §4.7: `+` matches exactly one level (possibly empty), a final `#` matches the parent level and
/// any number of levels below it, and a filter starting with a wildcard does not match a topic
/// starting with `$`. A malformed filter (a `#` that is not the whole last level, a `+` that is not a
/// whole level) or a topic holding a wildcard matches nothing.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    if topic.contains(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return filter_levels.next().is_none(),
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Every edgefleet topic, typed. `Display` builds the topic string; [`Topic::parse`] is its inverse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topic {
    /// Device broker, `ef/v1/dev/<class>/<device>/up/<channel>`: a device's message to the agent.
    DeviceUp {
        /// The device's class.
        class: ClassId,
        /// The device.
        device: DeviceId,
        /// The channel the device published on (1–3 levels: `telemetry`, `event/door`).
        channel: ClassTopic,
    },
    /// Device broker, `ef/v1/dev/<class>/<device>/down/cmd`: a handler's command to a device.
    DeviceCommand {
        /// The device's class.
        class: ClassId,
        /// The device.
        device: DeviceId,
    },
    /// Cloud broker, `ef/v1/node/<node>/status` (retained): the node's
    /// [`NodeStatus`](crate::NodeStatus), also its last will.
    Status {
        /// The publishing node.
        node: NodeId,
    },
    /// Cloud broker, `ef/v1/node/<node>/event`: an [`AgentEvent`](crate::AgentEvent).
    Event {
        /// The publishing node.
        node: NodeId,
    },
    /// Cloud broker, `ef/v1/node/<node>/assign/<class>` (retained): the signed
    /// [`Assignment`](crate::Assignment) of a class to a node.
    Assignment {
        /// The node the assignment is for.
        node: NodeId,
        /// The class assigned.
        class: ClassId,
    },
    /// Cloud broker, `ef/v1/node/<node>/up/<class>/<device>/<topic>`: an
    /// [`UpstreamMessage`](crate::UpstreamMessage) a handler published.
    Upstream {
        /// The publishing node.
        node: NodeId,
        /// The handler's class.
        class: ClassId,
        /// The device whose interaction produced it.
        device: DeviceId,
        /// The class-relative topic the handler published on.
        topic: ClassTopic,
    },
    /// Cloud broker, `ef/v1/module/<sha256>/chunk/<index>` (retained): chunk `index` (from 0) of a
    /// module blob, as raw bytes (see [`crate::manifest`]).
    ModuleChunk {
        /// The digest of the whole blob.
        module: Sha256Digest,
        /// The chunk's index.
        index: u32,
    },
}

impl Topic {
    /// Parses an edgefleet topic. Only the canonical spelling (the one `Display` writes) is accepted.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let rest = topic.strip_prefix("ef/").ok_or(TopicError::Foreign)?;
        let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if version != "v1" {
            return Err(TopicError::UnsupportedVersion {
                found: version.chars().take(16).collect(),
            });
        }
        let levels: Vec<&str> = rest.split('/').collect();
        Ok(match levels.as_slice() {
            ["dev", class, device, "up", channel @ ..] => Topic::DeviceUp {
                class: class_id(class)?,
                device: device_id(device)?,
                channel: ClassTopic::new(channel.join("/"))?,
            },
            ["dev", class, device, "down", "cmd"] => Topic::DeviceCommand {
                class: class_id(class)?,
                device: device_id(device)?,
            },
            ["node", node, "status"] => Topic::Status {
                node: node_id(node)?,
            },
            ["node", node, "event"] => Topic::Event {
                node: node_id(node)?,
            },
            ["node", node, "assign", class] => Topic::Assignment {
                node: node_id(node)?,
                class: class_id(class)?,
            },
            ["node", node, "up", class, device, topic @ ..] => Topic::Upstream {
                node: node_id(node)?,
                class: class_id(class)?,
                device: device_id(device)?,
                topic: ClassTopic::new(topic.join("/"))?,
            },
            ["module", module, "chunk", index] => Topic::ModuleChunk {
                module: module.parse()?,
                index: chunk_index(index)?,
            },
            _ => return Err(TopicError::UnknownLayout),
        })
    }

    /// Whether messages on this topic are published retained (status, assignments, module chunks):
    /// a subscriber gets the current value as soon as it subscribes.
    pub fn retained(&self) -> bool {
        matches!(
            self,
            Topic::Status { .. } | Topic::Assignment { .. } | Topic::ModuleChunk { .. }
        )
    }
}

fn node_id(level: &str) -> Result<NodeId, TopicError> {
    NodeId::new(level).map_err(|source| TopicError::BadId {
        kind: IdKind::Node,
        source,
    })
}

fn class_id(level: &str) -> Result<ClassId, TopicError> {
    ClassId::new(level).map_err(|source| TopicError::BadId {
        kind: IdKind::Class,
        source,
    })
}

fn device_id(level: &str) -> Result<DeviceId, TopicError> {
    DeviceId::new(level).map_err(|source| TopicError::BadId {
        kind: IdKind::Device,
        source,
    })
}

fn chunk_index(level: &str) -> Result<u32, TopicError> {
    let canonical =
        level.bytes().all(|b| b.is_ascii_digit()) && (level == "0" || !level.starts_with('0'));
    if !canonical {
        return Err(TopicError::BadChunkIndex);
    }
    level.parse().map_err(|_| TopicError::BadChunkIndex)
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(topic: &str) -> Result<Topic, TopicError> {
        Topic::parse(topic)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::DeviceUp {
                class,
                device,
                channel,
            } => write!(f, "{TOPIC_PREFIX}/dev/{class}/{device}/up/{channel}"),
            Topic::DeviceCommand { class, device } => {
                write!(f, "{TOPIC_PREFIX}/dev/{class}/{device}/down/cmd")
            }
            Topic::Status { node } => write!(f, "{TOPIC_PREFIX}/node/{node}/status"),
            Topic::Event { node } => write!(f, "{TOPIC_PREFIX}/node/{node}/event"),
            Topic::Assignment { node, class } => {
                write!(f, "{TOPIC_PREFIX}/node/{node}/assign/{class}")
            }
            Topic::Upstream {
                node,
                class,
                device,
                topic,
            } => write!(f, "{TOPIC_PREFIX}/node/{node}/up/{class}/{device}/{topic}"),
            Topic::ModuleChunk { module, index } => {
                write!(f, "{TOPIC_PREFIX}/module/{module}/chunk/{index}")
            }
        }
    }
}

/// The agent's device-broker subscription for one class: every device's every channel,
/// `ef/v1/dev/<class>/+/up/#`.
pub fn device_up_filter(class: &ClassId) -> String {
    format!("{TOPIC_PREFIX}/dev/{class}/+/up/#")
}

/// Commands to every device of a class, `ef/v1/dev/<class>/+/down/cmd` (a simulator playing many
/// devices on one connection).
pub fn device_command_filter(class: &ClassId) -> String {
    format!("{TOPIC_PREFIX}/dev/{class}/+/down/cmd")
}

/// The agent's uplink subscription to its assignments, `ef/v1/node/<node>/assign/+`.
pub fn node_assignment_filter(node: &NodeId) -> String {
    format!("{TOPIC_PREFIX}/node/{node}/assign/+")
}

/// Every chunk of a module blob, `ef/v1/module/<sha256>/chunk/+` (an agent resuming a download
/// subscribes to the missing chunks' topics one by one instead).
pub fn module_chunk_filter(module: &Sha256Digest) -> String {
    format!("{TOPIC_PREFIX}/module/{module}/chunk/+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> ClassId {
        ClassId::new("thermo").unwrap()
    }

    fn device() -> DeviceId {
        DeviceId::new("dev-0042").unwrap()
    }

    fn node() -> NodeId {
        NodeId::new("edge-1").unwrap()
    }

    fn all_topics() -> Vec<(Topic, String)> {
        let module = Sha256Digest::of(b"module");
        let topics = vec![
            (
                Topic::DeviceUp {
                    class: class(),
                    device: device(),
                    channel: ClassTopic::new("event/door").unwrap(),
                },
                "ef/v1/dev/thermo/dev-0042/up/event/door",
            ),
            (
                Topic::DeviceCommand {
                    class: class(),
                    device: device(),
                },
                "ef/v1/dev/thermo/dev-0042/down/cmd",
            ),
            (Topic::Status { node: node() }, "ef/v1/node/edge-1/status"),
            (Topic::Event { node: node() }, "ef/v1/node/edge-1/event"),
            (
                Topic::Assignment {
                    node: node(),
                    class: class(),
                },
                "ef/v1/node/edge-1/assign/thermo",
            ),
            (
                Topic::Upstream {
                    node: node(),
                    class: class(),
                    device: device(),
                    topic: ClassTopic::new("telemetry").unwrap(),
                },
                "ef/v1/node/edge-1/up/thermo/dev-0042/telemetry",
            ),
            (
                Topic::ModuleChunk { module, index: 17 },
                "ef/v1/module/120970d812836f19888625587a4606a5ad23cef31c8684e601771552548fc6b9/chunk/17",
            ),
        ];
        topics
            .into_iter()
            .map(|(t, s)| (t, s.to_string()))
            .collect()
    }

    #[test]
    fn builds_and_parses_every_topic() {
        for (topic, text) in all_topics() {
            assert_eq!(topic.to_string(), text);
            assert_eq!(Topic::parse(&text), Ok(topic.clone()), "{text}");
            assert!(text.starts_with(TOPIC_PREFIX));
        }
    }

    #[test]
    fn retained_topics() {
        let retained: Vec<bool> = all_topics().iter().map(|(t, _)| t.retained()).collect();
        assert_eq!(retained, [false, false, true, false, true, false, true]);
    }

    #[test]
    fn refuses_foreign_and_unknown_topics() {
        assert_eq!(Topic::parse("sensors/x"), Err(TopicError::Foreign));
        assert_eq!(Topic::parse("ef"), Err(TopicError::Foreign));
        assert_eq!(Topic::parse(""), Err(TopicError::Foreign));
        assert_eq!(
            Topic::parse("ef/v2/node/a/status"),
            Err(TopicError::UnsupportedVersion { found: "v2".into() })
        );
        assert_eq!(Topic::parse("ef/v1"), Err(TopicError::UnknownLayout));
        for unknown in [
            "ef/v1/",
            "ef/v1/node/a",
            "ef/v1/node/a/status/extra",
            "ef/v1/node/a/assign",
            "ef/v1/node/a/assign/b/c",
            "ef/v1/dev/c/d/down/other",
            "ef/v1/dev/c/d/sideways/x",
            "ef/v1/fleet/anything",
            "ef/v1/module/x",
        ] {
            assert_eq!(
                Topic::parse(unknown),
                Err(TopicError::UnknownLayout),
                "{unknown}"
            );
        }
    }

    #[test]
    fn refuses_bad_levels() {
        assert!(matches!(
            Topic::parse("ef/v1/node/+/status"),
            Err(TopicError::BadId {
                kind: IdKind::Node,
                ..
            })
        ));
        assert!(matches!(
            Topic::parse("ef/v1/dev/.x/d/up/telemetry"),
            Err(TopicError::BadId {
                kind: IdKind::Class,
                source: IdError::LeadingDot
            })
        ));
        assert!(matches!(
            Topic::parse("ef/v1/dev/c//up/telemetry"),
            Err(TopicError::BadId {
                kind: IdKind::Device,
                source: IdError::Empty
            })
        ));
        assert_eq!(
            Topic::parse("ef/v1/dev/c/d/up"),
            Err(TopicError::BadLevel {
                level: 0,
                source: IdError::Empty
            })
        );
        assert_eq!(
            Topic::parse("ef/v1/dev/c/d/up/a/b/c/d"),
            Err(TopicError::Depth { levels: 4 })
        );
        assert_eq!(
            Topic::parse("ef/v1/node/n/up/c/d/event/"),
            Err(TopicError::BadLevel {
                level: 1,
                source: IdError::Empty
            })
        );
        assert!(matches!(
            Topic::parse("ef/v1/module/ABCD/chunk/0"),
            Err(TopicError::BadDigest(_))
        ));
        let module = Sha256Digest::of(b"m");
        for index in ["", "01", "+1", "-1", "4294967296", "1e3", " 1"] {
            assert_eq!(
                Topic::parse(&format!("ef/v1/module/{module}/chunk/{index}")),
                Err(TopicError::BadChunkIndex),
                "{index:?}"
            );
        }
        assert_eq!(
            Topic::parse(&format!("ef/v1/module/{module}/chunk/4294967295")),
            Ok(Topic::ModuleChunk {
                module,
                index: u32::MAX
            })
        );
    }

    #[test]
    fn class_topics() {
        for ok in ["telemetry", "event/door", "a/b/c", "x.y_z-1/2"] {
            assert!(is_class_topic(ok), "{ok}");
            assert_eq!(
                ClassTopic::new(ok)
                    .unwrap()
                    .levels()
                    .collect::<Vec<_>>()
                    .join("/"),
                ok
            );
        }
        assert_eq!(
            ClassTopic::new("a/b/c/d"),
            Err(TopicError::Depth { levels: 4 })
        );
        assert_eq!(
            ClassTopic::new(""),
            Err(TopicError::BadLevel {
                level: 0,
                source: IdError::Empty
            })
        );
        for bad in [
            "/a", "a/", "a//b", "a/+", "#", "a/#", "$SYS/x", "a b", "a/\0", "a/.b",
        ] {
            assert!(!is_class_topic(bad), "{bad:?}");
        }
    }

    #[test]
    fn filters_validate() {
        for ok in [
            "telemetry",
            "event/#",
            "#",
            "+",
            "+/+/+",
            "a/+/c/#",
            "a/b/c/#",
            "+/door",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
            assert_eq!(TopicFilter::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            check_filter("a/#/b"),
            Err(TopicError::MisplacedWildcard { level: 1 })
        );
        assert_eq!(
            check_filter("a#"),
            Err(TopicError::MisplacedWildcard { level: 0 })
        );
        assert_eq!(
            check_filter("a/b+"),
            Err(TopicError::MisplacedWildcard { level: 1 })
        );
        assert_eq!(
            check_filter("#/#"),
            Err(TopicError::MisplacedWildcard { level: 0 })
        );
        assert_eq!(
            check_filter("a/b/c/d"),
            Err(TopicError::Depth { levels: 4 })
        );
        assert_eq!(
            check_filter("+/+/+/+/#"),
            Err(TopicError::Depth { levels: 4 })
        );
        assert_eq!(
            check_filter(""),
            Err(TopicError::BadLevel {
                level: 0,
                source: IdError::Empty
            })
        );
        assert_eq!(
            check_filter("event/"),
            Err(TopicError::BadLevel {
                level: 1,
                source: IdError::Empty
            })
        );
        assert!(matches!(
            check_filter("event/*"),
            Err(TopicError::BadLevel { level: 1, .. })
        ));
    }

    #[test]
    fn filter_matching_edge_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("telemetry", "telemetry", true),
            ("telemetry", "telemetry/x", false),
            ("telemetry", "telemetr", false),
            ("telemetry/x", "telemetry", false),
            // '#' matches the parent level too, and any depth below it.
            ("event/#", "event", true),
            ("event/#", "event/door", true),
            ("event/#", "event/door/open", true),
            ("event/#", "events", false),
            ("event/#", "telemetry", false),
            ("#", "anything/at/all", true),
            ("#", "a", true),
            // '+' matches exactly one level.
            ("+", "telemetry", true),
            ("+", "event/door", false),
            ("event/+", "event/door", true),
            ("event/+", "event", false),
            ("event/+", "event/door/open", false),
            ("+/door", "event/door", true),
            ("+/+", "a/b", true),
            ("+/#", "a", true),
            ("a/+/#", "a", false),
            ("a/+/#", "a/b", true),
            // MQTT: '+' matches an empty level (never in a valid class topic, but raw topics may).
            ("+/+", "/finance", true),
            ("a/+", "a/", true),
            // Malformed filters match nothing.
            ("a/#/b", "a/x/b", false),
            ("a#", "a#", false),
            ("a+", "a+", false),
            ("ev+nt", "ev+nt", false),
            // Topics holding wildcards are not topics.
            ("+", "+", false),
            ("#", "a/#", false),
            // '$' topics are not matched by a leading wildcard.
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            // Case-sensitive.
            ("Telemetry", "telemetry", false),
        ];
        for &(filter, topic, expected) in cases {
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "{filter:?} vs {topic:?}"
            );
        }
        let filter = TopicFilter::new("event/+").unwrap();
        assert!(filter.matches(&ClassTopic::new("event/door").unwrap()));
        assert!(!filter.matches(&ClassTopic::new("telemetry").unwrap()));
    }

    #[test]
    fn subscription_filters_match_their_topics() {
        let class = class();
        let up = Topic::DeviceUp {
            class: class.clone(),
            device: device(),
            channel: ClassTopic::new("a/b/c").unwrap(),
        }
        .to_string();
        assert!(filter_matches(&device_up_filter(&class), &up));
        assert!(!filter_matches(
            &device_up_filter(&ClassId::new("other").unwrap()),
            &up
        ));
        let cmd = Topic::DeviceCommand {
            class: class.clone(),
            device: device(),
        }
        .to_string();
        assert!(filter_matches(&device_command_filter(&class), &cmd));
        assert!(!filter_matches(&device_up_filter(&class), &cmd));
        let assign = Topic::Assignment {
            node: node(),
            class,
        }
        .to_string();
        assert!(filter_matches(&node_assignment_filter(&node()), &assign));
        assert!(!filter_matches(
            &node_assignment_filter(&NodeId::new("edge-2").unwrap()),
            &assign
        ));
        let module = Sha256Digest::of(b"m");
        let chunk = Topic::ModuleChunk { module, index: 3 }.to_string();
        assert!(filter_matches(&module_chunk_filter(&module), &chunk));
        assert!(!filter_matches(
            &module_chunk_filter(&Sha256Digest::of(b"n")),
            &chunk
        ));
        for (topic, _) in all_topics() {
            let text = topic.to_string();
            assert_eq!(
                filter_matches(NODE_STATUS_FILTER, &text),
                matches!(topic, Topic::Status { .. })
            );
            assert_eq!(
                filter_matches(NODE_EVENT_FILTER, &text),
                matches!(topic, Topic::Event { .. })
            );
            assert_eq!(
                filter_matches(NODE_UPSTREAM_FILTER, &text),
                matches!(topic, Topic::Upstream { .. })
            );
        }
    }
}
