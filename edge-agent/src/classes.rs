//! The classes this node serves and the module version each one runs now.
//!
//! Hot swap is a pointer swap: an interaction takes the class's current [`ActiveClass`] when its
//! batch is formed and keeps it to the end, so interactions already running finish on the old
//! version and later ones use the new one. Nothing is queued per version, so the swap itself can
//! neither drop nor repeat a message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use edgefleet_protocol::ClassLimits;
use edgefleet_protocol::digest::Sha256Digest;
use edgefleet_protocol::id::ClassId;

use crate::sandbox::ModuleHandle;

/// A class with its running module version.
#[derive(Debug)]
pub struct ActiveClass {
    pub class: ClassId,
    /// `name@version` of the module, as in the signed manifest.
    pub version: String,
    pub sha256: Sha256Digest,
    /// The assignment generation this version came with.
    pub generation: u64,
    pub limits: ClassLimits,
    pub module: ModuleHandle,
}

/// The table of active classes, shared by the interaction lanes and the assignment handler.
#[derive(Debug, Clone, Default)]
pub struct ClassTable {
    inner: Arc<RwLock<HashMap<ClassId, Arc<ActiveClass>>>>,
}

impl ClassTable {
    /// The class's current version, if the node serves it.
    pub fn get(&self, class: &ClassId) -> Option<Arc<ActiveClass>> {
        self.read().get(class).cloned()
    }

    /// Makes `active` the class's version; returns the one it replaces.
    pub fn swap(&self, active: ActiveClass) -> Option<Arc<ActiveClass>> {
        let mut table = self.inner.write().unwrap_or_else(|p| p.into_inner());
        table.insert(active.class.clone(), Arc::new(active))
    }

    /// Stops serving a class.
    pub fn remove(&self, class: &ClassId) -> Option<Arc<ActiveClass>> {
        let mut table = self.inner.write().unwrap_or_else(|p| p.into_inner());
        table.remove(class)
    }

    /// Every active class.
    pub fn all(&self) -> Vec<Arc<ActiveClass>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClassId, Arc<ActiveClass>>> {
        // The map is replaced entry by entry, so a panic elsewhere cannot leave it half-written.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}
