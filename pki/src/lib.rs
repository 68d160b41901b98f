//! A throw-away PKI for tests and simulators: certificate authorities made at test time, broker and
//! client certificates signed by them, PEM files on disk and rustls client configurations.
//!
//! Every [`Authority`] is a fresh self-signed CA with its own ECDSA P-256 key (rcgen with ring, the
//! only crypto backend of the workspace). A broker trusts exactly one authority (its `cafile`); a
//! certificate from any other authority — e.g. one made with `Authority::new("rogue")` — is refused
//! during the TLS handshake, which is how tests check that a client without a valid certificate
//! cannot connect.
//!
//! Client certificates carry the node's or device's id as their common name: mosquitto with
//! `use_identity_as_username true` turns it into the MQTT username that ACL patterns (`%u`) fence.
//!
//! The agent builds its TLS configuration from its own config files; [`client_config`] and
//! [`TlsFiles::client_config`] are the test-side equivalent.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// Why a certificate, a PEM file or a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters (typically a host name that is not a valid DNS name or IP).
    #[error("cannot generate certificate for {subject}: {source}")]
    Generate {
        /// What was being generated.
        subject: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// Writing or reading a PEM file failed.
    #[error("{action} {path}: {source} (is the directory writable and still there?)")]
    Io {
        /// `"cannot write"` or `"cannot read"`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built from the PEMs.
    #[error(transparent)]
    Tls(#[from] edgefleet_protocol::tls::TlsError),
}

pub use edgefleet_protocol::tls::install_crypto_provider;

/// A certificate authority made at test time.
///
/// `Authority` is `Send + Sync`; share it with `Arc` (brokers and simulators of one test usually
/// use the same authority).
#[derive(Debug)]
pub struct Authority {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key (PEM), issued by an [`Authority`].
#[derive(Clone, Debug)]
pub struct Identity {
    common_name: String,
    cert_pem: String,
    key_pem: String,
}

/// PEM files of one identity, as a broker or the agent's config expects them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate the peer must chain to (mosquitto's `cafile`; the agent's trust anchor).
    pub ca_file: PathBuf,
    /// The identity's certificate.
    pub cert_file: PathBuf,
    /// The identity's private key (PKCS#8, mode 0600).
    pub key_file: PathBuf,
}

impl Authority {
    /// Makes a new CA whose common name is `edgefleet test CA <name>`.
    ///
    /// Distinct names keep authorities apart in logs and in OpenSSL's issuer lookup (a CA with the same
    /// subject as the trusted one would still be refused, by its signature, but the log would be
    /// confusing).
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let subject = format!("edgefleet test CA {name}");
        let generate = |source| PkiError::Generate {
            subject: subject.clone(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&subject);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(generate)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(generate)?;
        Ok(Self {
            name: name.to_owned(),
            issuer,
        })
    }

    /// The name given to [`Authority::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate valid for `hosts` (DNS names or IP addresses, e.g. `["localhost",
    /// "127.0.0.1"]`); the first host is also the common name.
    ///
    /// Clients check the address they dial against these names: rumqttc connecting to `127.0.0.1`
    /// needs an IP SAN `127.0.0.1`, not just `localhost`.
    pub fn server_cert(&self, hosts: &[&str]) -> Result<Identity, PkiError> {
        let common_name = hosts.first().copied().unwrap_or("server");
        let sans: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let params = CertificateParams::new(sans).map_err(|source| PkiError::Generate {
            subject: format!("server {hosts:?}"),
            source,
        })?;
        self.issue(params, common_name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject common name is `common_name` (a node or device id: the
    /// broker's username with `use_identity_as_username`).
    pub fn client_cert(&self, common_name: &str) -> Result<Identity, PkiError> {
        self.issue(
            CertificateParams::default(),
            common_name,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Identity, PkiError> {
        let generate = |source| PkiError::Generate {
            subject: common_name.to_owned(),
            source,
        };
        params.distinguished_name = distinguished_name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        // Lets OpenSSL (mosquitto) pick the issuer by key id rather than by name alone.
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(Identity {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Identity {
    /// The subject common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl TlsFiles {
    /// Writes `<stem>.crt`, `<stem>.key` (mode 0600) and `<stem>-ca.crt` (the certificate of `trust`,
    /// the authority the peer's certificate must come from) into `dir`, replacing existing files.
    ///
    /// The CA file is per stem because a test may write identities that trust different authorities
    /// into one directory.
    pub fn write(
        dir: &Path,
        stem: &str,
        trust: &Authority,
        identity: &Identity,
    ) -> Result<Self, PkiError> {
        let files = Self {
            ca_file: dir.join(format!("{stem}-ca.crt")),
            cert_file: dir.join(format!("{stem}.crt")),
            key_file: dir.join(format!("{stem}.key")),
        };
        write_file(&files.ca_file, &trust.ca_pem(), 0o644)?;
        write_file(&files.cert_file, identity.cert_pem(), 0o644)?;
        write_file(&files.key_file, identity.key_pem(), 0o600)?;
        Ok(files)
    }

    /// A rustls client configuration from these files: trusts only `ca_file`, authenticates with
    /// `cert_file` and `key_file`.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, PkiError> {
        edgefleet_protocol::tls::client_config_from_pem(
            &read_file(&self.ca_file)?,
            &read_file(&self.cert_file)?,
            &read_file(&self.key_file)?,
        )
        .map_err(PkiError::from)
    }
}

/// A rustls client configuration that trusts only `trust`'s certificate and authenticates with
/// `identity`. Installs the ring provider ([`install_crypto_provider`]) if none is installed.
pub fn client_config(
    trust: &Authority,
    identity: &Identity,
) -> Result<rustls::ClientConfig, PkiError> {
    edgefleet_protocol::tls::client_config_from_pem(
        trust.ca_pem().as_bytes(),
        identity.cert_pem().as_bytes(),
        identity.key_pem().as_bytes(),
    )
    .map_err(PkiError::from)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    // Remove first: `mode` only applies when the file is created.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(io)
}

fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_from_files_and_from_memory() {
        let ca = Authority::new("unit").unwrap();
        let node = ca.client_cert("node-1").unwrap();
        assert_eq!(node.common_name(), "node-1");
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::write(dir.path(), "node-1", &ca, &node).unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
        };
        assert_eq!(mode(&files.key_file), 0o600);
        assert_eq!(fs::read_to_string(&files.ca_file).unwrap(), ca.ca_pem());
        assert!(
            files
                .client_config()
                .unwrap()
                .client_auth_cert_resolver
                .has_certs()
        );
        assert!(
            client_config(&ca, &node)
                .unwrap()
                .client_auth_cert_resolver
                .has_certs()
        );
        // Rewriting replaces the files.
        TlsFiles::write(
            dir.path(),
            "node-1",
            &ca,
            &ca.client_cert("node-1").unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn bad_inputs_are_reported() {
        let ca = Authority::new("unit").unwrap();
        assert!(matches!(
            ca.server_cert(&["caf\u{e9}.example"]),
            Err(PkiError::Generate { .. })
        ));
        let node = ca.client_cert("node-1").unwrap();
        let err = edgefleet_protocol::tls::client_config_from_pem(
            b"",
            node.cert_pem().as_bytes(),
            node.key_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("CA certificate"), "{err}");
        let err = TlsFiles {
            ca_file: "/nonexistent/ca.crt".into(),
            cert_file: "/nonexistent/c.crt".into(),
            key_file: "/nonexistent/c.key".into(),
        }
        .client_config()
        .unwrap_err();
        assert!(matches!(err, PkiError::Io { .. }), "{err}");
    }
}
