//! What one interaction takes in and gives back.
//!
//! An interaction is a pure function of (module, class config, device state, message): it reads
//! nothing else and writes nothing itself. Its [`Outcome`] lists the effects — commands to the device,
//! upstream messages, the device's new state, log lines — and the caller commits them together, or not
//! at all when the interaction fails. That is what lets the sandbox run it in a worker process with no
//! disk, and re-run it on another worker when the one it was queued on dies.

use edgefleet_guest_abi::log_level;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One device message to handle, with the device state it is handled against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// Device id (one topic level).
    pub device: String,
    /// Channel the device published on, class-relative (`telemetry`, `event/door`).
    pub channel: String,
    /// The message payload as the device sent it.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The device's persisted state; `None` for a device seen for the first time.
    pub state: Option<serde_bytes::ByteBuf>,
    /// Wall-clock time of the interaction (ms since the UNIX epoch), what `now_ms` returns.
    pub now_ms: i64,
}

/// The effects of a successful interaction, to be committed together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Command payloads for the interaction's device, in the order the handler sent them.
    pub commands: Vec<serde_bytes::ByteBuf>,
    /// Messages for the cloud, in the order the handler published them.
    pub upstream: Vec<Upstream>,
    /// The device's new state, when the handler set one.
    pub new_state: Option<serde_bytes::ByteBuf>,
    /// Log lines the handler wrote.
    pub logs: Vec<LogLine>,
    /// Log lines dropped over the per-interaction log limit.
    pub dropped_logs: u32,
}

/// Longest topic a handler may publish to, in bytes (the longest class topic, three 64-byte
/// levels, is 194). A longer topic is a [`InteractionError::ForbiddenTopic`] whatever the class
/// allows, reported cut to this length: what a handler names never makes an answer unbounded.
pub const MAX_TOPIC_BYTES: usize = 256;

/// One upstream message: a class-relative topic and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub topic: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// One log line from a handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// Log levels of the guest ABI (`log(level, …)`: 0 error … 4 trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level for an ABI level number; out-of-range numbers clamp to the nearest level.
    pub fn from_abi(level: i32) -> LogLevel {
        match level {
            i32::MIN..=log_level::ERROR => LogLevel::Error,
            log_level::WARN => LogLevel::Warn,
            log_level::INFO => LogLevel::Info,
            log_level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }
}

/// Why an interaction produced no outcome. Every variant is counted by kind ([`Self::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum InteractionError {
    #[error("the handler rejected the message with code {code}")]
    Rejected { code: i32 },
    #[error("the module trapped: {message}")]
    Trap { message: String },
    #[error("the interaction ran past its time budget of {budget_ms} ms and its worker was killed")]
    Timeout { budget_ms: u32 },
    #[error("the sandbox worker died while running the interaction ({cause})")]
    WorkerCrashed { cause: String },
    #[error("the handler exceeded its output limit: {detail}")]
    OutputLimit { detail: String },
    #[error("the handler tried to store {size} bytes of state; the class allows {limit}")]
    StateLimit { size: u64, limit: u32 },
    /// `topic` is at most [`MAX_TOPIC_BYTES`] of what the handler named.
    #[error("the handler published to topic {topic:?}, which the class does not allow")]
    ForbiddenTopic { topic: String },
    #[error(
        "module {module} is quarantined after repeated failures; it runs again after {retry_in_ms} ms"
    )]
    Quarantined { module: String, retry_in_ms: u64 },
    #[error("the sandbox could not run the interaction: {detail}")]
    Unavailable { detail: String },
}

impl InteractionError {
    /// A short stable name for metrics labels and events.
    pub fn kind(&self) -> &'static str {
        match self {
            InteractionError::Rejected { .. } => "rejected",
            InteractionError::Trap { .. } => "trap",
            InteractionError::Timeout { .. } => "timeout",
            InteractionError::WorkerCrashed { .. } => "worker_crashed",
            InteractionError::OutputLimit { .. } => "output_limit",
            InteractionError::StateLimit { .. } => "state_limit",
            InteractionError::ForbiddenTopic { .. } => "forbidden_topic",
            InteractionError::Quarantined { .. } => "quarantined",
            InteractionError::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether this failure is the module's fault and counts towards its quarantine.
    /// A rejection is the handler's considered answer to a bad message, not a fault.
    pub fn is_module_fault(&self) -> bool {
        matches!(
            self,
            InteractionError::Trap { .. }
                | InteractionError::Timeout { .. }
                | InteractionError::WorkerCrashed { .. }
                | InteractionError::OutputLimit { .. }
                | InteractionError::StateLimit { .. }
                | InteractionError::ForbiddenTopic { .. }
        )
    }
}
