//! The node's status for the controller (`kubectl get` shows it): built from the running agent and
//! published retained on `ef/v1/node/<node>/status` every interval, with an offline last will.
//!
//! Published with QoS 0: a lost status is replaced by the next one, and keeping QoS 1 packet ids
//! for the outbox alone lets the publisher map acknowledgements to outbox entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_protocol::PROTOCOL_VERSION;
use edgefleet_protocol::codec;
use edgefleet_protocol::status::{
    ClassStatus, LinkState as StatusLinkState, LinkStatus, ModuleStats, NodeState, NodeStatus,
    OutboxStatus,
};
use edgefleet_protocol::topic::Topic;
use tokio::sync::watch;

use crate::classes::ActiveClass;
use crate::clock::now_ms;
use crate::context::Context;
use crate::link::{Link, LinkState};

/// Builds and publishes the status.
pub struct StatusReporter {
    pub ctx: Arc<Context>,
    pub uplink: Link,
    pub device_link: Link,
    pub started_at_ms: u64,
    pub agent_version: String,
    pub wasmedge_version: String,
    last_total: u64,
    last_per_class: std::collections::HashMap<edgefleet_protocol::id::ClassId, u64>,
    last_at: Instant,
}

impl StatusReporter {
    pub fn new(
        ctx: Arc<Context>,
        uplink: Link,
        device_link: Link,
        started_at_ms: u64,
        agent_version: String,
        wasmedge_version: String,
    ) -> StatusReporter {
        StatusReporter {
            ctx,
            uplink,
            device_link,
            started_at_ms,
            agent_version,
            wasmedge_version,
            last_total: 0,
            last_per_class: std::collections::HashMap::new(),
            last_at: Instant::now(),
        }
    }

    /// The status now.
    pub fn build(&mut self) -> NodeStatus {
        let p = &self.ctx;
        let active_now = p.activity.count(Instant::now());
        let (tracked, overflow) = p.activity.size();
        p.metrics.activity_tracked.set(tracked as i64);
        let counted = p.metrics.activity_overflow.get();
        p.metrics
            .activity_overflow
            .inc_by(overflow.saturating_sub(counted));
        let elapsed = self.last_at.elapsed().as_secs_f64().max(0.001);
        let mut total = 0;
        let mut classes = Vec::new();
        let (mut active_devices, mut seen_devices) = (0, 0);
        let reports: std::collections::HashMap<_, _> = p.classes.reports().into_iter().collect();
        for active in p.classes.all() {
            let interactions = active
                .counters
                .interactions
                .load(std::sync::atomic::Ordering::Relaxed);
            total += interactions;
            let before = self
                .last_per_class
                .insert(active.class.clone(), interactions)
                .unwrap_or(0);
            let class_rate = interactions.saturating_sub(before) as f64 / elapsed;
            let seen = p.store.device_count(&active.class).unwrap_or(0) as u32;
            let recent = active_now.get(&active.class).copied().unwrap_or(0);
            active_devices += recent;
            seen_devices += seen;
            let previous = p.classes.previous(&active.class);
            let mut modules = vec![self.module_stats(&active)];
            if let Some(previous) = &previous {
                modules.push(self.module_stats(previous));
            }
            classes.push(ClassStatus {
                class: active.class.clone(),
                generation: Some(active.generation),
                rollout: active.rollout.clone(),
                active: Some(active.reference.clone()),
                previous: previous.map(|p| p.reference.clone()),
                pending: reports.get(&active.class).and_then(|r| r.pending.clone()),
                last_error: reports
                    .get(&active.class)
                    .and_then(|r| r.last_error.clone()),
                active_devices: recent,
                seen_devices: seen,
                interactions_per_sec: class_rate,
                modules,
                shadow: p.classes.shadow(&active.class).map(|run| run.report()),
            });
        }
        // Classes not (yet) running: a first module still downloading, or refused.
        for (class, report) in reports {
            if classes.iter().any(|c: &ClassStatus| c.class == class) {
                continue;
            }
            classes.push(ClassStatus {
                class,
                generation: report.pending.as_ref().map(|p| p.generation),
                rollout: None,
                active: None,
                previous: None,
                pending: report.pending,
                last_error: report.last_error,
                active_devices: 0,
                seen_devices: 0,
                interactions_per_sec: 0.0,
                modules: Vec::new(),
                shadow: None,
            });
        }
        let depth = p.store.outbox_depth().map(|d| d.entries).unwrap_or(0);
        let rate = total.saturating_sub(self.last_total) as f64 / elapsed;
        self.last_total = total;
        self.last_at = Instant::now();
        NodeStatus {
            node: p.node.clone(),
            state: NodeState::Online,
            protocol_version: PROTOCOL_VERSION,
            agent_version: self.agent_version.clone(),
            wasmedge_version: self.wasmedge_version.clone(),
            guest_abi_version: edgefleet_guest_abi::ABI_VERSION,
            started_at_ms: self.started_at_ms,
            updated_at_ms: now_ms(),
            uplink: link_status(&self.uplink),
            device_link: link_status(&self.device_link),
            outbox: OutboxStatus {
                depth,
                capacity: p.store.outbox_limits().max_entries,
                dropped: p.metrics.outbox_dropped.get(),
                oldest_at_ms: None,
            },
            active_devices,
            seen_devices,
            interactions_per_sec: rate,
            classes,
        }
    }

    fn module_stats(&self, active: &ActiveClass) -> ModuleStats {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        ModuleStats {
            module: active.reference.clone(),
            interactions: load(&active.counters.interactions),
            errors: load(&active.counters.errors),
            traps: load(&active.counters.traps),
            timeouts: load(&active.counters.timeouts),
            rejections: load(&active.counters.rejections),
            quarantined: active.is_quarantined(&self.ctx.sandbox),
        }
    }

    /// Publishes the status every `interval` until `stop` turns true.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let topic = Topic::Status {
            node: self.ctx.node.clone(),
        }
        .to_string();
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            // Built off the async threads: it counts devices in the store.
            let (status, back) = match tokio::task::spawn_blocking(move || {
                let status = self.build();
                (status, self)
            })
            .await
            {
                Ok(built) => built,
                Err(e) => {
                    tracing::error!("status task failed: {e}");
                    return;
                }
            };
            self = back;
            if self.uplink.is_connected()
                && let Err(e) = self
                    .uplink
                    .publish_status(topic.clone(), codec::encode(&status))
                    .await
            {
                tracing::debug!("status not published: {e}");
            }
        }
    }
}

fn link_status(link: &Link) -> LinkStatus {
    let condition = link.condition();
    LinkStatus {
        state: match condition.state {
            LinkState::Connected => StatusLinkState::Connected,
            LinkState::Connecting => StatusLinkState::Connecting,
            LinkState::Down => StatusLinkState::Disconnected,
        },
        since_ms: condition.since_ms,
        reconnects: link.reconnects(),
        last_error: condition.last_error,
    }
}
