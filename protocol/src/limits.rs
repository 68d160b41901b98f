//! Per-device-class limits that a handler module runs under (see docs/guest-abi.md).
//!
//! The controller sets them in the DeviceClass; the agent enforces them in the sandbox.

use serde::{Deserialize, Serialize};

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
        }
    }
}
