//! How long certificates are valid.

use std::time::{Duration, SystemTime};

use rcgen::CertificateParams;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::PkiError;

/// The period a certificate is valid for.
///
/// Made with [`Validity::days`] (or its defaults [`Validity::ca`] and [`Validity::leaf`]), it starts
/// [`Validity::BACKDATE`] before now: a node or broker whose clock is a little behind the machine
/// that issued the certificate would otherwise refuse it as "not yet valid" for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    /// How far before "now" a certificate starts to be valid.
    pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
    /// Default lifetime of a CA, in days (10 years).
    pub const CA_DAYS: u32 = 3650;
    /// Default lifetime of a broker or client certificate, in days (1 year).
    pub const LEAF_DAYS: u32 = 365;

    /// From [`Validity::BACKDATE`] before now until `days` days from now.
    pub fn days(days: u32) -> Validity {
        Validity::lasting(Duration::from_secs(u64::from(days) * 86_400))
    }

    /// From [`Validity::BACKDATE`] before now until `duration` from now (short-lived certificates:
    /// hours rather than days).
    pub fn lasting(duration: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Validity::BACKDATE,
            not_after: now + duration,
        }
    }

    /// [`Validity::CA_DAYS`] from now.
    pub fn ca() -> Validity {
        Validity::days(Validity::CA_DAYS)
    }

    /// [`Validity::LEAF_DAYS`] from now.
    pub fn leaf() -> Validity {
        Validity::days(Validity::LEAF_DAYS)
    }

    /// An explicit period (e.g. one already over, to test that expired certificates are refused).
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::EmptyValidity);
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// Start of the period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn apply(&self, params: &mut CertificateParams) {
        params.not_before = OffsetDateTime::from(self.not_before);
        params.not_after = OffsetDateTime::from(self.not_after);
    }
}

/// `time` as RFC 3339 in UTC, to the second (`2026-05-01T12:00:00Z`): how certificate times are
/// shown.
pub fn rfc3339(time: SystemTime) -> String {
    let time = OffsetDateTime::from(time);
    let time = time.replace_nanosecond(0).unwrap_or(time);
    time.format(&Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}
