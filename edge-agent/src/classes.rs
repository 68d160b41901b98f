//! The classes this node serves and the module version each one runs now.
//!
//! Hot swap is a pointer swap: an interaction takes the class's current [`ActiveClass`] when its
//! batch is formed and keeps it to the end, so interactions already running finish on the old
//! version and later ones use the new one. Nothing is queued per version, so the swap itself can
//! neither drop nor repeat a message.
//!
//! Every switch of a class's version — an assignment's swap, a fallback after a quarantine — holds
//! the table's switch lock across its store write and its table change, so the store and the table
//! name the same active and previous versions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use edgefleet_protocol::ClassLimits;
use edgefleet_protocol::assignment::Rollout;
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::id::ClassId;
use edgefleet_protocol::manifest::ModuleRef;
use edgefleet_protocol::status::{ErrorReport, PendingModule};

use edgefleet_sandbox::{Interaction, InteractionError, ModuleHandle, Outcome, Sandbox};

use crate::shadow::ShadowRun;

/// A class with its running module version.
#[derive(Debug)]
pub struct ActiveClass {
    pub class: ClassId,
    /// `name@version` of the module, as in the signed manifest.
    pub version: String,
    pub sha256: Sha256Digest,
    /// Name, version and digest, as the status reports them.
    pub reference: ModuleRef,
    /// The assignment generation this version came with.
    pub generation: u64,
    /// The rollout step of that assignment, reported in the status.
    pub rollout: Option<Rollout>,
    pub limits: ClassLimits,
    pub handler: ClassHandler,
    /// What this version did, for the node status.
    pub counters: ModuleCounters,
    /// Set once the agent fell back from this version after its quarantine: it is reported
    /// quarantined from then on (the breaker's cooldown ends, but the version no longer runs) and
    /// never fallen back to.
    pub retired: AtomicBool,
}

impl ActiveClass {
    /// Whether this version is quarantined now, or was when the agent fell back from it.
    pub fn is_quarantined(&self, sandbox: &Sandbox) -> bool {
        self.retired.load(Ordering::Relaxed)
            || match &self.handler {
                ClassHandler::Wasm(module) => sandbox.is_quarantined(module),
                ClassHandler::Native(_) => false,
            }
    }
}

/// What runs a class's interactions.
#[derive(Debug, Clone)]
pub enum ClassHandler {
    /// The class's Wasm module, a fresh sandbox instance per interaction: what assignments install.
    Wasm(ModuleHandle),
    /// A handler compiled into the process. Only the end-to-end benchmark uses it, as the baseline
    /// the Wasm path is compared against; it has no isolation at all.
    Native(fn(&Interaction) -> Result<Outcome, InteractionError>),
}

/// Interactions of one module version, by outcome.
#[derive(Debug, Default)]
pub struct ModuleCounters {
    pub interactions: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub rejections: AtomicU64,
}

impl ModuleCounters {
    /// Counts one interaction with its outcome (`ok` or an `InteractionError::kind`).
    pub fn count(&self, outcome: &str) {
        self.interactions.fetch_add(1, Ordering::Relaxed);
        let specific = match outcome {
            "ok" => return,
            "trap" | "worker_crashed" => Some(&self.traps),
            "timeout" => Some(&self.timeouts),
            "rejected" => Some(&self.rejections),
            _ => None,
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = specific {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the status says of a class besides its versions: a module being fetched, the last error.
#[derive(Debug, Clone, Default)]
pub struct ClassReport {
    pub pending: Option<PendingModule>,
    pub last_error: Option<ErrorReport>,
}

/// The table of active classes (and the version each replaced, and their reports, for the status),
/// shared by the interaction lanes, the assignment handler and the status reporter.
#[derive(Debug, Clone, Default)]
pub struct ClassTable {
    inner: Arc<RwLock<HashMap<ClassId, Arc<ActiveClass>>>>,
    /// Classes applied on this node (in the store) that do not run yet: restoring, or retrying a
    /// failed restore. Their devices' messages are left for redelivery, not refused.
    expected: Arc<RwLock<std::collections::HashSet<ClassId>>>,
    previous: Arc<RwLock<HashMap<ClassId, Arc<ActiveClass>>>>,
    reports: Arc<RwLock<HashMap<ClassId, ClassReport>>>,
    switching: Arc<tokio::sync::Mutex<()>>,
    shadows: Arc<RwLock<HashMap<ClassId, Arc<ShadowRun>>>>,
}

impl ClassTable {
    /// The class's current version, if the node serves it.
    pub fn get(&self, class: &ClassId) -> Option<Arc<ActiveClass>> {
        self.read().get(class).cloned()
    }

    /// Makes `active` the class's version; returns the one it replaces.
    pub fn swap(&self, active: ActiveClass) -> Option<Arc<ActiveClass>> {
        let class = active.class.clone();
        self.expected
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&class);
        let mut table = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let replaced = table.insert(class.clone(), Arc::new(active));
        if let Some(old) = &replaced {
            let mut previous = self.previous.write().unwrap_or_else(|p| p.into_inner());
            previous.insert(class, old.clone());
        }
        replaced
    }

    /// Held by whoever switches a class's version, from its store write to its table change.
    pub async fn switch_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.switching.lock().await
    }

    /// Makes `previous` the version the class ran before its current one (a restore: the store
    /// remembers it).
    pub fn set_previous(&self, previous: ActiveClass) {
        let mut table = self.previous.write().unwrap_or_else(|p| p.into_inner());
        table.insert(previous.class.clone(), Arc::new(previous));
    }

    /// Switches the class from `from`, its active version, back to its previous one, which becomes
    /// active while `from` becomes previous; returns the version now active. `None` (nothing
    /// changed) when `from` is no longer active or there is no previous version.
    pub fn fall_back(&self, from: &Arc<ActiveClass>) -> Option<Arc<ActiveClass>> {
        let mut table = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let mut previous = self.previous.write().unwrap_or_else(|p| p.into_inner());
        let current = table.get(&from.class)?;
        if !Arc::ptr_eq(current, from) {
            return None;
        }
        let back = previous.get(&from.class)?.clone();
        previous.insert(from.class.clone(), from.clone());
        table.insert(from.class.clone(), back.clone());
        Some(back)
    }

    /// The version a class ran before its current one (loaded: a fallback needs no load), if it
    /// was replaced while the agent ran or the store remembers one.
    pub fn previous(&self, class: &ClassId) -> Option<Arc<ActiveClass>> {
        let previous = self.previous.read().unwrap_or_else(|p| p.into_inner());
        previous.get(class).cloned()
    }

    /// Marks a class as applied here but not running yet (see `expected`).
    pub fn expect(&self, class: ClassId) {
        if self.get(&class).is_none() {
            let mut expected = self.expected.write().unwrap_or_else(|p| p.into_inner());
            expected.insert(class);
        }
    }

    /// Whether the class is applied here but not running yet.
    pub fn is_expected(&self, class: &ClassId) -> bool {
        let expected = self.expected.read().unwrap_or_else(|p| p.into_inner());
        expected.contains(class)
    }

    /// The class's shadow version, if its assignment names one.
    pub fn shadow(&self, class: &ClassId) -> Option<Arc<ShadowRun>> {
        let shadows = self.shadows.read().unwrap_or_else(|p| p.into_inner());
        shadows.get(class).cloned()
    }

    /// Sets (or, with `None`, drops) the class's shadow version.
    pub fn set_shadow(&self, class: &ClassId, shadow: Option<Arc<ShadowRun>>) {
        let mut shadows = self.shadows.write().unwrap_or_else(|p| p.into_inner());
        match shadow {
            Some(shadow) => shadows.insert(class.clone(), shadow),
            None => shadows.remove(class),
        };
    }

    /// Stops serving a class; its report and shadow go too (status leaves withdrawn classes out).
    pub fn remove(&self, class: &ClassId) -> Option<Arc<ActiveClass>> {
        self.set_shadow(class, None);
        self.expected
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(class);
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(class);
        let mut table = self.inner.write().unwrap_or_else(|p| p.into_inner());
        table.remove(class)
    }

    /// Every active class.
    pub fn all(&self) -> Vec<Arc<ActiveClass>> {
        self.read().values().cloned().collect()
    }

    /// Changes a class's report.
    pub fn update_report(&self, class: &ClassId, change: impl FnOnce(&mut ClassReport)) {
        let mut reports = self.reports.write().unwrap_or_else(|p| p.into_inner());
        change(reports.entry(class.clone()).or_default());
    }

    /// Every class with a report, and its report.
    pub fn reports(&self) -> Vec<(ClassId, ClassReport)> {
        let reports = self.reports.read().unwrap_or_else(|p| p.into_inner());
        reports
            .iter()
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClassId, Arc<ActiveClass>>> {
        // The map is replaced entry by entry, so a panic elsewhere cannot leave it half-written.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}
