//! Falling back at once when the sandbox quarantines a class's active version.
//!
//! The lane that finds its class's active version quarantined (`InteractionError::Quarantined`)
//! calls [`fall_back`]: the class switches to the previous version the agent keeps loaded
//! (`ClassTable::previous`, restored from the store after a restart), in the store
//! (`Store::rollback_class`, flushed) and in the class table, under the table's switch lock; an
//! `EventKind::RolledBack` event names both versions and `edgefleet_agent_fallbacks_total` counts
//! it. The version left is *retired*: the status lists it with `quarantined: true` from then on
//! (what the controller's rollout gate reads), and the agent never falls back to it — so a class
//! falls back at most once per assignment and two bad versions cannot take turns.
//!
//! Without a previous version (or when it is retired or quarantined too) nothing changes: the
//! messages are module faults, as before. The store keeps the generation of the assignment left, so
//! its redelivery (the same retained message, after a reconnect) is not newer and does not switch
//! the class back; a newer generation — the controller's rollback, or even the same module again —
//! is applied as usual (see `assignments`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edgefleet_protocol::event::{AgentEvent, EventKind};

use crate::classes::ActiveClass;
use crate::clock::now_ms;
use crate::context::Context;
use crate::events::report;

/// Switches `from`'s class back to its previous version, if it has one that may run; returns the
/// version that runs the class now (also when another lane or an assignment switched it first).
pub async fn fall_back(ctx: &Context, from: &Arc<ActiveClass>) -> Option<Arc<ActiveClass>> {
    let _switching = ctx.classes.switch_lock().await;
    let current = ctx.classes.get(&from.class)?;
    if !Arc::ptr_eq(&current, from) {
        return (!current.is_quarantined(&ctx.sandbox)).then_some(current);
    }
    let previous = ctx.classes.previous(&from.class)?;
    if previous.is_quarantined(&ctx.sandbox) {
        return None;
    }
    let store = ctx.store.clone();
    let (class, sha) = (from.class.clone(), from.sha256);
    let stored = tokio::task::spawn_blocking(move || {
        store.rollback_class(&class, &sha)?;
        store.flush()
    })
    .await;
    // The devices are served by the previous version either way; a store that did not take the
    // switch only means that a restart runs the quarantined version (and falls back) again.
    match stored {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(class = %from.class, "cannot record the fallback: {e}"),
        Err(e) => tracing::error!(class = %from.class, "fallback store task failed: {e}"),
    }
    let back = ctx.classes.fall_back(from)?;
    from.retired.store(true, Ordering::Relaxed);
    ctx.metrics.fallbacks.inc();
    let detail = format!(
        "{} is quarantined: fell back to {} (generation {})",
        from.version, back.version, back.generation
    );
    tracing::warn!(class = %from.class, "{detail}");
    report(
        ctx,
        AgentEvent::new(now_ms(), ctx.node.clone(), EventKind::RolledBack, detail)
            .with_class(from.class.clone())
            .with_module(back.sha256)
            .with_generation(back.generation),
    );
    Some(back)
}
