//! Reading certificates back: what the CLI lists and what [`Authority::load`](crate::Authority::load)
//! checks.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::{PkiError, read_file};

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertUsage {
    /// A certificate authority (basic constraints `CA:TRUE`).
    Ca,
    /// A TLS server: a broker (extended key usage `serverAuth` only).
    Server,
    /// A TLS client: a node, device or the controller (`clientAuth` only).
    Client,
    /// Anything else (no extended key usage, or several).
    Other,
}

impl CertUsage {
    /// `ca`, `server`, `client` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertUsage::Ca => "ca",
            CertUsage::Server => "server",
            CertUsage::Client => "client",
            CertUsage::Other => "other",
        }
    }
}

/// The parts of a certificate an operator looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name (the whole subject if it has none).
    pub subject: String,
    /// The issuer's common name (the whole issuer if it has none).
    pub issuer: String,
    /// What the certificate is for.
    pub usage: CertUsage,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The DER SubjectPublicKeyInfo (to match a key file against).
    pub(crate) public_key_info: Vec<u8>,
}

impl CertInfo {
    /// Every certificate in a PEM text, in order; other kinds of PEM block are refused
    /// ([`PkiError::BadPem`]), and so is a text without any certificate.
    pub fn from_pem(text: &str) -> Result<Vec<CertInfo>, PkiError> {
        let mut infos = Vec::new();
        for pem in Pem::iter_from_buffer(text.as_bytes()) {
            let pem = pem.map_err(|e| PkiError::BadPem(e.to_string()))?;
            if pem.label != "CERTIFICATE" {
                return Err(PkiError::BadPem(format!(
                    "a {:?} block where a CERTIFICATE was expected",
                    pem.label
                )));
            }
            let cert = pem
                .parse_x509()
                .map_err(|e| PkiError::BadPem(e.to_string()))?;
            infos.push(CertInfo::of(&cert));
        }
        if infos.is_empty() {
            return Err(PkiError::BadPem("no CERTIFICATE block".into()));
        }
        Ok(infos)
    }

    /// The certificate `der` (one, DER-encoded).
    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::BadPem(e.to_string()))?;
        Ok(CertInfo::of(&cert))
    }

    /// Every certificate in the PEM file `path`.
    pub fn read(path: &Path) -> Result<Vec<CertInfo>, PkiError> {
        let text = String::from_utf8(read_file(path)?).map_err(|_| PkiError::BadFile {
            path: path.to_owned(),
            reason: "not a PEM text file".into(),
        })?;
        CertInfo::from_pem(&text).map_err(|e| match e {
            PkiError::BadPem(reason) => PkiError::BadFile {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> CertInfo {
        let name = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| name.to_string())
        };
        let usage = if cert.is_ca() {
            CertUsage::Ca
        } else {
            match cert.extended_key_usage() {
                Ok(Some(eku)) => match (eku.value.server_auth, eku.value.client_auth) {
                    (true, false) => CertUsage::Server,
                    (false, true) => CertUsage::Client,
                    _ => CertUsage::Other,
                },
                _ => CertUsage::Other,
            }
        };
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(sans)) = cert.subject_alternative_name() {
            for san in &sans.value.general_names {
                match san {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        CertInfo {
            subject: name(cert.subject()),
            issuer: name(cert.issuer()),
            usage,
            dns_names,
            ip_addresses,
            not_before: system_time(cert.validity().not_before.timestamp()),
            not_after: system_time(cert.validity().not_after.timestamp()),
            public_key_info: cert.public_key().raw.to_vec(),
        }
    }
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let offset = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}
