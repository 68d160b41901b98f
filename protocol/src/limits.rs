//! Per-device-class limits that a handler module runs under (see docs/guest-abi.md).
//!
//! The controller sets them in the DeviceClass and validates them ([`ClassLimits::validate`]) before
//! signing an assignment; the agent validates them again and enforces them in the sandbox.

use serde::{Deserialize, Serialize};

use crate::topic::{TopicError, check_filter, filter_matches, is_class_topic};

/// What one interaction of a class's handler may use. Defaults are documented in docs/guest-abi.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassLimits {
    /// Linear memory cap in 64 KiB pages: a larger declared minimum refuses the module,
    /// `memory.grow` past it returns -1.
    pub max_memory_pages: u32,
    /// Wall time for instantiation + handler, in milliseconds. An overrun kills the worker running it.
    pub time_budget_ms: u32,
    /// Commands + upstream publishes per interaction.
    pub max_outputs: u32,
    /// Size of one command or upstream payload, in bytes.
    pub max_output_bytes: u32,
    /// Size of the device state a handler may store, in bytes.
    pub max_state_bytes: u32,
    /// Size of the module binary, in bytes.
    pub max_module_bytes: u32,
    /// Class-relative upstream topics the handler may publish to, as MQTT-style filters (`+`, `#`).
    pub allowed_topics: Vec<String>,
    /// Each device's sustained message budget, per second: the agent drops what a device sends beyond
    /// it (after the burst below is spent), so one chatty or hostile device cannot starve the others.
    pub device_rate_per_s: u32,
    /// Messages a device may send at once above its sustained rate (the budget's bucket size).
    pub device_burst: u32,
}

impl Default for ClassLimits {
    fn default() -> Self {
        ClassLimits {
            max_memory_pages: 16,
            time_budget_ms: 50,
            max_outputs: 16,
            max_output_bytes: 4096,
            max_state_bytes: 16 * 1024,
            max_module_bytes: 4 * 1024 * 1024,
            allowed_topics: vec!["telemetry".into(), "event/#".into()],
            device_rate_per_s: 20,
            device_burst: 100,
        }
    }
}

/// Most filters in [`ClassLimits::allowed_topics`].
pub const MAX_ALLOWED_TOPICS: usize = 64;

/// The range each numeric limit must lie in, as (field, min, max); see [`ClassLimits::validate`].
pub const LIMIT_RANGES: [(&str, u64, u64); 8] = [
    ("max_memory_pages", 1, 4096),
    ("time_budget_ms", 1, 60_000),
    ("max_outputs", 0, 1024),
    (
        "max_output_bytes",
        1,
        crate::wire::MAX_DEVICE_PAYLOAD_BYTES as u64,
    ),
    ("max_state_bytes", 0, 1024 * 1024),
    ("max_module_bytes", 1, crate::manifest::MAX_MODULE_BYTES),
    ("device_rate_per_s", 1, 100_000),
    ("device_burst", 1, 100_000),
];

/// Why a [`ClassLimits`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A numeric limit outside its range in [`LIMIT_RANGES`].
    #[error("{field} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// More than [`MAX_ALLOWED_TOPICS`] topic filters.
    #[error("{count} allowed topic filters; at most {MAX_ALLOWED_TOPICS} are allowed")]
    TooManyTopics {
        /// Filters given.
        count: usize,
    },
    /// A malformed topic filter.
    #[error("allowed topic filter {filter:?}: {source}")]
    BadTopicFilter {
        /// The filter (at most 200 characters of it).
        filter: String,
        /// Why it is malformed.
        #[source]
        source: TopicError,
    },
}

impl ClassLimits {
    /// Checks every limit against [`LIMIT_RANGES`] (ranges no handler sanely needs to leave; the
    /// output size is also what fits a device payload and an uplink packet) and every allowed topic
    /// filter against the rules of [`TopicFilter`](crate::topic::TopicFilter).
    pub fn validate(&self) -> Result<(), LimitsError> {
        let values = [
            u64::from(self.max_memory_pages),
            u64::from(self.time_budget_ms),
            u64::from(self.max_outputs),
            u64::from(self.max_output_bytes),
            u64::from(self.max_state_bytes),
            u64::from(self.max_module_bytes),
            u64::from(self.device_rate_per_s),
            u64::from(self.device_burst),
        ];
        for ((field, min, max), value) in LIMIT_RANGES.into_iter().zip(values) {
            if !(min..=max).contains(&value) {
                return Err(LimitsError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        if self.allowed_topics.len() > MAX_ALLOWED_TOPICS {
            return Err(LimitsError::TooManyTopics {
                count: self.allowed_topics.len(),
            });
        }
        for filter in &self.allowed_topics {
            check_filter(filter).map_err(|source| LimitsError::BadTopicFilter {
                filter: filter.chars().take(200).collect(),
                source,
            })?;
        }
        Ok(())
    }

    /// Whether a handler may publish upstream on `topic`: a valid class-relative topic matched by
    /// one of [`allowed_topics`](Self::allowed_topics).
    pub fn allows_topic(&self, topic: &str) -> bool {
        is_class_topic(topic)
            && self
                .allowed_topics
                .iter()
                .any(|filter| filter_matches(filter, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn defaults_are_valid_and_documented() {
        let limits = ClassLimits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert_eq!(limits.max_memory_pages, 16);
        assert_eq!(limits.time_budget_ms, 50);
        assert_eq!(limits.max_outputs, 16);
        assert_eq!(limits.max_output_bytes, 4096);
        assert_eq!(limits.max_state_bytes, 16384);
        assert_eq!(limits.max_module_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.allowed_topics, ["telemetry", "event/#"]);
        assert_eq!((limits.device_rate_per_s, limits.device_burst), (20, 100));
    }

    #[test]
    fn refuses_out_of_range_limits() {
        let d = ClassLimits::default;
        let cases = [
            (
                ClassLimits {
                    max_memory_pages: 0,
                    ..d()
                },
                "max_memory_pages",
                0,
            ),
            (
                ClassLimits {
                    time_budget_ms: 60_001,
                    ..d()
                },
                "time_budget_ms",
                60_001,
            ),
            (
                ClassLimits {
                    max_outputs: 1025,
                    ..d()
                },
                "max_outputs",
                1025,
            ),
            (
                ClassLimits {
                    max_output_bytes: 0,
                    ..d()
                },
                "max_output_bytes",
                0,
            ),
            (
                ClassLimits {
                    max_state_bytes: (1 << 20) + 1,
                    ..d()
                },
                "max_state_bytes",
                (1 << 20) + 1,
            ),
            (
                ClassLimits {
                    max_module_bytes: u32::MAX,
                    ..d()
                },
                "max_module_bytes",
                u64::from(u32::MAX),
            ),
        ];
        for (limits, field, value) in cases {
            assert!(
                matches!(limits.validate(), Err(LimitsError::OutOfRange { field: f, value: v, .. }) if f == field && v == value),
                "{field}: {:?}",
                limits.validate()
            );
        }
        let lowest = ClassLimits {
            max_outputs: 0,
            max_state_bytes: 0,
            ..d()
        };
        assert_eq!(lowest.validate(), Ok(()));
    }

    #[test]
    fn refuses_bad_topic_filters() {
        let mut limits = ClassLimits::default();
        limits.allowed_topics.push("event/#/x".into());
        assert!(matches!(
            limits.validate(),
            Err(LimitsError::BadTopicFilter {
                source: TopicError::MisplacedWildcard { level: 1 },
                ..
            })
        ));
        limits.allowed_topics = vec!["telemetry".into(); MAX_ALLOWED_TOPICS + 1];
        assert_eq!(
            limits.validate(),
            Err(LimitsError::TooManyTopics {
                count: MAX_ALLOWED_TOPICS + 1
            })
        );
    }

    #[test]
    fn allows_only_matching_class_topics() {
        let limits = ClassLimits::default();
        for ok in ["telemetry", "event", "event/anomaly", "event/a/b"] {
            assert!(limits.allows_topic(ok), "{ok}");
        }
        for refused in [
            "telemetry/x",
            "status",
            "event/",
            "event//x",
            "event/a/b/c",
            "",
            "event/+",
        ] {
            assert!(!limits.allows_topic(refused), "{refused:?}");
        }
        let none = ClassLimits {
            allowed_topics: vec![],
            ..ClassLimits::default()
        };
        assert!(!none.allows_topic("telemetry"));
    }

    #[test]
    fn missing_fields_take_defaults() {
        #[derive(serde::Serialize)]
        struct Partial {
            time_budget_ms: u32,
        }
        let limits: ClassLimits =
            codec::decode(&codec::encode(&Partial { time_budget_ms: 7 }), 1024).unwrap();
        assert_eq!(
            limits,
            ClassLimits {
                time_budget_ms: 7,
                ..ClassLimits::default()
            }
        );
    }
}
