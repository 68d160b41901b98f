//! Which devices were heard from lately, per class, for the node status (`activeDevices`).
//!
//! Device ids come from the network, so the map is bounded: at most [`MAX_TRACKED`] devices, older
//! entries pruned on every count, and a device first heard while the map is full is counted in
//! `overflow` rather than tracked. Counting is one pass that also prunes, once per status, not a
//! scan per class.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_protocol::id::{ClassId, DeviceId};

/// Devices tracked at most.
pub const MAX_TRACKED: usize = 100_000;

/// See the module documentation.
#[derive(Debug)]
pub struct DeviceActivity {
    window: Duration,
    cap: usize,
    state: Mutex<ActivityState>,
}

#[derive(Debug, Default)]
struct ActivityState {
    seen: HashMap<(ClassId, DeviceId), Instant>,
    overflow: u64,
}

impl DeviceActivity {
    /// Devices heard from within `window` count as active.
    pub fn new(window: Duration) -> DeviceActivity {
        DeviceActivity::with_cap(window, MAX_TRACKED)
    }

    fn with_cap(window: Duration, cap: usize) -> DeviceActivity {
        DeviceActivity {
            window,
            cap,
            state: Mutex::new(ActivityState::default()),
        }
    }

    /// Records that `device` of `class` was heard from at `now`.
    pub fn seen(&self, class: &ClassId, device: &DeviceId, now: Instant) {
        let mut state = self.lock();
        if let Some(at) = state.seen.get_mut(&(class.clone(), device.clone())) {
            *at = now;
        } else if state.seen.len() < self.cap {
            state.seen.insert((class.clone(), device.clone()), now);
        } else {
            state.overflow += 1;
        }
    }

    /// Active devices per class at `now`, pruning the others.
    pub fn count(&self, now: Instant) -> HashMap<ClassId, u32> {
        let mut state = self.lock();
        let window = self.window;
        state
            .seen
            .retain(|_, at| now.saturating_duration_since(*at) <= window);
        let mut counts = HashMap::new();
        for (class, _) in state.seen.keys() {
            *counts.entry(class.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Devices tracked now, and first-heard devices not tracked because the map was full.
    pub fn size(&self) -> (usize, u64) {
        let state = self.lock();
        (state.seen.len(), state.overflow)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(class: &str, device: &str) -> (ClassId, DeviceId) {
        (ClassId::new(class).unwrap(), DeviceId::new(device).unwrap())
    }

    #[test]
    fn counts_recent_devices_per_class_and_prunes_the_rest() {
        let activity = DeviceActivity::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (a, d1) = ids("a", "d1");
        let (_, d2) = ids("a", "d2");
        let (b, d3) = ids("b", "d3");
        activity.seen(&a, &d1, t0);
        activity.seen(&a, &d2, t0 + Duration::from_secs(30));
        activity.seen(&b, &d3, t0 + Duration::from_secs(30));
        let counts = activity.count(t0 + Duration::from_secs(61));
        assert_eq!(counts.get(&a), Some(&1));
        assert_eq!(counts.get(&b), Some(&1));
        assert_eq!(activity.size(), (2, 0));
    }

    #[test]
    fn the_map_is_bounded_and_what_does_not_fit_is_counted() {
        let activity = DeviceActivity::with_cap(Duration::from_secs(60), 10);
        let now = Instant::now();
        let class = ClassId::new("c").unwrap();
        for i in 0..1000 {
            activity.seen(&class, &DeviceId::new(format!("d{i}")).unwrap(), now);
        }
        assert_eq!(activity.size(), (10, 990));
        assert_eq!(activity.count(now).get(&class), Some(&10));
    }
}
