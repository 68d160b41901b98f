//! What the agent's tasks share: the node's name, the sandbox, the store, the class table, metrics,
//! the outbox wake-up, device activity and the event throttle. Built once by [`crate::agent`].

use std::sync::Arc;

use edgefleet_protocol::id::NodeId;
use edgefleet_sandbox::Sandbox;
use tokio::sync::Notify;

use crate::activity::DeviceActivity;
use crate::classes::ClassTable;
use crate::events::EventThrottle;
use crate::metrics::AgentMetrics;
use crate::store::Store;

/// The agent's shared state.
pub struct Context {
    pub node: NodeId,
    pub sandbox: Arc<Sandbox>,
    pub store: Store,
    pub classes: ClassTable,
    pub metrics: Arc<AgentMetrics>,
    /// Woken whenever something was appended to the outbox.
    pub outbox_ready: Arc<Notify>,
    /// When devices were last heard from.
    pub activity: DeviceActivity,
    /// Limits events caused by device traffic.
    pub throttle: EventThrottle,
}
