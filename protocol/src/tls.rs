//! Mutual-TLS client configuration for MQTT connections, the same for every side (agent links,
//! simulators, controller): trust one CA bundle, present one client certificate.
//!
//! Only the ring crypto provider is compiled in (see the workspace Cargo.toml): processes call
//! [`install_crypto_provider`] (idempotent) before building configurations.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM text held no usable certificate or key.
    #[error(
        "bad PEM for the {what}: {reason} (expected PEM as written by openssl or cert-manager)"
    )]
    Pem {
        /// Which input: `"CA certificate"`, `"client certificate"`, `"client key"`.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("rustls refused the {what}: {source}")]
    Rustls {
        /// Which input was refused.
        what: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// Installs ring as the process-wide default rustls crypto provider, if none is installed yet.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (this one, from another thread): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration that trusts only the CAs in `ca_pem` and authenticates with the
/// certificate chain `cert_pem` and its key `key_pem` (PKCS#8, SEC1 or PKCS#1).
pub fn client_config_from_pem(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(ca_pem, "CA certificate")? {
        roots.add(ca).map_err(|source| TlsError::Rustls {
            what: "CA certificate",
            source,
        })?;
    }
    let chain = certificates(cert_pem, "client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        what: "client key",
        reason: e.to_string(),
    })?;
    rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: "client certificate or key",
            source,
        })
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

/// A broker to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtts://host[:port]` (default port 8883) or `mqtt://host[:port]` (1883).
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let bad = |why: &str| BrokerUrlError {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(bad(
                "it must start with mqtts:// (TLS) or mqtt:// (plain TCP)",
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// A broker URL that is not `mqtts://host[:port]` or `mqtt://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker URL {url:?} is not valid: {why}")]
pub struct BrokerUrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_refused_with_the_input_named() {
        let error = client_config_from_pem(b"not pem", b"", b"").unwrap_err();
        assert!(error.to_string().contains("CA certificate"), "{error}");
    }
}
