//! Quarantine of a module that keeps failing (a circuit breaker per loaded module).
//!
//! After `threshold` consecutive module faults (traps, timeouts, crashes, limit violations — see
//! [`InteractionError::is_module_fault`](super::InteractionError::is_module_fault)) the module is
//! quarantined: its interactions are refused at once, without touching a worker, for `cooldown`.
//! Then one batch is let through; a fault quarantines it again for twice as long (up to
//! `max_cooldown`), a success closes the breaker. Other modules are not affected.

use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(15 * 60),
        }
    }
}

/// The state of one module's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    consecutive_faults: u32,
    open_until: Option<Instant>,
    next_cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            consecutive_faults: 0,
            open_until: None,
            next_cooldown: config.cooldown,
        }
    }

    /// `Err(time left)` while the module is quarantined.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            Some(until) if now < until => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a batch's results: the number of module faults and whether any interaction succeeded
    /// after the last fault. Returns true when this trips the breaker.
    pub(crate) fn record(&mut self, faults: u32, ended_with_success: bool, now: Instant) -> bool {
        if ended_with_success {
            self.consecutive_faults = 0;
            self.open_until = None;
            self.next_cooldown = self.config.cooldown;
            return false;
        }
        if faults == 0 {
            return false;
        }
        self.consecutive_faults = self.consecutive_faults.saturating_add(faults);
        let half_open = self.open_until.is_some();
        if self.consecutive_faults >= self.config.threshold || half_open {
            self.open_until = Some(now + self.next_cooldown);
            self.next_cooldown = (self.next_cooldown * 2).min(self.config.max_cooldown);
            return true;
        }
        false
    }

    /// Whether the module is quarantined now.
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.check(now).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        }
    }

    #[test]
    fn trips_after_threshold_consecutive_faults_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert!(!b.record(2, false, t0));
        assert!(!b.record(0, true, t0));
        assert!(b.check(t0).is_ok());
        assert!(!b.record(1, false, t0));
        assert!(!b.record(1, false, t0));
        assert!(b.record(1, false, t0));
        assert_eq!(
            b.check(t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(9))
        );
    }

    #[test]
    fn half_open_fault_reopens_with_doubled_capped_cooldown_and_success_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert!(b.record(3, false, t0));
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.check(t1).is_ok(), "cooldown over: one batch may try");
        assert!(
            b.record(1, false, t1),
            "a fault while half-open trips at once"
        );
        assert_eq!(b.check(t1), Err(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        assert!(b.record(1, false, t2));
        assert_eq!(
            b.check(t2),
            Err(Duration::from_secs(25)),
            "capped at max_cooldown"
        );
        let t3 = t2 + Duration::from_secs(25);
        assert!(!b.record(0, true, t3));
        assert!(!b.is_open(t3));
        assert!(!b.record(2, false, t3), "closed again: counts from zero");
    }
}
