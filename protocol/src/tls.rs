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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_pem_is_refused_with_the_input_named() {
        let error = client_config_from_pem(b"not pem", b"", b"").unwrap_err();
        assert!(error.to_string().contains("CA certificate"), "{error}");
    }
}
