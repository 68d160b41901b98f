//! edgefleet's X.509 PKI: certificate authorities, the broker (server) and client certificates they
//! sign, their PEM files, and rustls client configurations from them.
//!
//! # What it owns, and why one crate
//!
//! Every MQTT connection of a fleet is mutual TLS, and the brokers fence clients by the common name
//! of their certificate (mosquitto's `use_identity_as_username`; see `brokers/README.md`). So which
//! CA issues which certificate *is* the access model: this crate is the one place that makes
//! certificates, for both users of it:
//!
//! - **tests and simulators** ([`Authority::new`]): throw-away CAs made in memory at test time
//!   (`edgefleet-simulators` re-exports this crate as its `pki` module);
//! - **the operator CLI** (`edgefleet certs …`, [`FleetPki`]): a development PKI kept in a folder,
//!   with the separate CAs the brokers' access model needs (see [`fleet`]);
//! - **node identity bootstrap**: the agent's key and signing request ([`CertificateRequest`]) and
//!   the controller's signature over it for the node it verified
//!   ([`Authority::sign_node_request`]).
//!
//! Tests therefore run against the same certificates an operator gets from the CLI.
//!
//! # Authorities and certificates
//!
//! Every [`Authority`] has its own ECDSA P-256 key (rcgen with ring, the only crypto backend of the
//! workspace: `grep aws-lc Cargo.lock` stays empty). A broker trusts the authorities in its `cafile`;
//! a certificate from any other authority — e.g. one made with `Authority::new("rogue")` — is
//! refused during the TLS handshake, which is how tests check that a client without a valid
//! certificate cannot connect.
//!
//! Client certificates carry the node's or device's id as their common name: mosquitto with
//! `use_identity_as_username true` turns it into the MQTT username that ACL patterns (`%u`) fence.
//! Server certificates carry the broker's host names and addresses as subject alternative names.
//!
//! Every certificate has a [`Validity`]: from 5 minutes before it was made (clocks of a fleet
//! disagree a little) to a configurable end, by default 10 years for a CA and 1 year for the rest;
//! a certificate never outlives the CA that signs it ([`PkiError::OutlivesIssuer`]).
//!
//! A CA can be written to and read back from PEM files ([`Authority::save`], [`Authority::load`]);
//! private keys are written with mode 0600.
//!
//! The agent builds its TLS configuration from its own config files; [`client_config`] and
//! [`TlsFiles::client_config`] are the test-side equivalent.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};

pub mod fleet;
mod inspect;
mod request;
mod validity;

pub use edgefleet_protocol::tls::install_crypto_provider;
pub use fleet::{BrokerKind, CONTROLLER_COMMON_NAME, CaRole, FleetPki, Issued, IssuedKind};
pub use inspect::{CertInfo, CertUsage};
pub use request::CertificateRequest;
pub use validity::{Validity, rfc3339};

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
        /// `"cannot write"`, `"cannot read"`, …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file that would be replaced exists (a CA is never overwritten; other files only when asked
    /// to).
    #[error("{path} exists already{hint}")]
    Exists {
        /// The file.
        path: PathBuf,
        /// How to go on, starting with "; " (or empty).
        hint: &'static str,
    },
    /// A PEM file does not hold what it should.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PEM text does not hold (only) certificates.
    #[error("not a PEM certificate: {0}")]
    BadPem(String),
    /// The key file does not belong to the certificate file.
    #[error("{key} is not the private key of {cert} (their public keys differ)")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate would be valid longer than the CA that signs it.
    #[error(
        "the certificate for {subject} would be valid until {not_after}, after its CA {issuer:?} expires ({issuer_not_after}): ask for fewer days"
    )]
    OutlivesIssuer {
        /// The certificate's subject.
        subject: String,
        /// The CA's common name.
        issuer: String,
        /// When the certificate would expire (RFC 3339).
        not_after: String,
        /// When the CA expires (RFC 3339).
        issuer_not_after: String,
    },
    /// A host name for a server certificate that is neither a DNS name nor an IP address.
    #[error("{host:?} is not a host name or IP address for a server certificate: {reason}")]
    InvalidHost {
        /// The host.
        host: String,
        /// Why.
        reason: &'static str,
    },
    /// A validity period that ends before it starts.
    #[error("a certificate's validity must end after it starts")]
    EmptyValidity,
    /// A name that is not a valid node or device id, or file stem.
    #[error("{what} {name:?} is not a valid name: {source}")]
    InvalidName {
        /// What was named (`"broker name"`, …).
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        source: edgefleet_protocol::id::IdError,
    },
    /// A name reserved for another identity (`edgefleet-controller`).
    #[error(
        "a {kind} cannot be named {name:?}: that is the cloud controller's certificate name, and devices, nodes and the controller share one name space on the brokers (brokers/README.md, \"Identities\")"
    )]
    ReservedName {
        /// `"device"` or `"node"`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A device named like a node of this PKI, or a node named like a device.
    #[error(
        "a {kind} cannot be named {name:?}: this PKI has a {other} of that name ({file}); a device certificate named like a node gets that node's agent rights on its device broker (brokers/README.md, \"Identities\")"
    )]
    NameTaken {
        /// `"device"` or `"node"`.
        kind: &'static str,
        /// The name.
        name: String,
        /// `"node"` or `"device"`.
        other: &'static str,
        /// The other identity's certificate file.
        file: PathBuf,
    },
    /// The folder holds no PKI (or only part of one).
    #[error("{dir} holds no {what}: run `edgefleet certs init --dir {dir}` first")]
    NotInitialised {
        /// The folder.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A certificate signing request that does not parse, does not verify or carries a key of
    /// another type.
    #[error("the certificate signing request is not usable: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration could not be built from the PEMs.
    #[error(transparent)]
    Tls(#[from] edgefleet_protocol::tls::TlsError),
}

/// A certificate authority: its certificate and the key it signs with.
///
/// `Authority` is `Send + Sync`; share it with `Arc` (brokers and simulators of one test usually
/// use the same authority).
#[derive(Debug)]
pub struct Authority {
    name: String,
    cert_pem: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
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
    /// The CA certificate(s) the peer must chain to (mosquitto's `cafile`; the agent's `--tls-ca`).
    pub ca_file: PathBuf,
    /// The identity's certificate.
    pub cert_file: PathBuf,
    /// The identity's private key (PKCS#8, mode 0600).
    pub key_file: PathBuf,
}

impl Authority {
    /// Makes a new test CA whose common name is `edgefleet test CA <name>`, valid for
    /// [`Validity::ca`].
    ///
    /// Distinct names keep authorities apart in logs and in OpenSSL's issuer lookup (a CA with the same
    /// subject as the trusted one would still be refused, by its signature, but the log would be
    /// confusing).
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let mut authority = Self::create(&format!("edgefleet test CA {name}"), Validity::ca())?;
        authority.name = name.to_owned();
        Ok(authority)
    }

    /// Makes a new self-signed CA with subject common name `common_name`, valid for `validity`.
    pub fn create(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let generate = |source| PkiError::Generate {
            subject: common_name.to_owned(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params);
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self {
            name: common_name.to_owned(),
            cert_pem: cert.pem(),
            not_after: validity.not_after(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Reads a CA back from its certificate and private key files (as [`Authority::save`] writes
    /// them, or any PEM CA certificate with its PKCS#8 ECDSA/Ed25519/RSA key).
    ///
    /// Refuses a certificate that is not a CA, and a key that is not the certificate's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = String::from_utf8(read_file(cert_path)?).map_err(|_| PkiError::BadFile {
            path: cert_path.to_owned(),
            reason: "not a PEM text file".into(),
        })?;
        let key_pem = String::from_utf8(read_file(key_path)?).map_err(|_| PkiError::BadFile {
            path: key_path.to_owned(),
            reason: "not a PEM text file".into(),
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadFile {
            path: key_path.to_owned(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let infos = CertInfo::read(cert_path)?;
        let [info] = infos.as_slice() else {
            return Err(PkiError::BadFile {
                path: cert_path.to_owned(),
                reason: format!("holds {} certificates; a CA file holds one", infos.len()),
            });
        };
        if info.usage != CertUsage::Ca {
            return Err(PkiError::BadFile {
                path: cert_path.to_owned(),
                reason: format!("{:?} is not a CA certificate", info.subject),
            });
        }
        if info.public_key_info != key.subject_public_key_info() {
            return Err(PkiError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadFile {
            path: cert_path.to_owned(),
            reason: format!("unusable as a CA: {e}"),
        })?;
        Ok(Self {
            name: info.subject.clone(),
            cert_pem,
            not_after: info.not_after,
            issuer,
        })
    }

    /// Writes `<stem>.crt` and `<stem>.key` (mode 0600) into `dir` and returns their paths.
    ///
    /// Never overwrites: a CA that is replaced invalidates every certificate it signed, so an
    /// existing file is [`PkiError::Exists`] (remove it yourself if that is what you mean).
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        for path in [&cert, &key] {
            if path.exists() {
                return Err(PkiError::Exists {
                    path: path.clone(),
                    hint: "; a CA is never overwritten",
                });
            }
        }
        // The key first: a crash in between leaves a key without certificate, which `load` reports,
        // rather than a certificate whose key is lost.
        write_new_file(&key, &self.issuer.key().serialize_pem(), 0o600)?;
        write_new_file(&cert, &self.cert_pem, 0o644)?;
        Ok((cert, key))
    }

    /// The name given to [`Authority::new`], or the common name of a created or loaded CA.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A server certificate valid for `hosts` (DNS names or IP addresses, e.g. `["localhost",
    /// "127.0.0.1"]`) for [`Validity::leaf`]; the first host is also the common name.
    ///
    /// Clients check the address they dial against these names: rumqttc connecting to `127.0.0.1`
    /// needs an IP SAN `127.0.0.1`, not just `localhost`.
    pub fn server_cert(&self, hosts: &[&str]) -> Result<Identity, PkiError> {
        self.server_cert_valid(hosts, Validity::leaf())
    }

    /// [`Authority::server_cert`] for `validity`.
    pub fn server_cert_valid(
        &self,
        hosts: &[&str],
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        if hosts.is_empty() {
            return Err(PkiError::InvalidHost {
                host: String::new(),
                reason: "a server certificate names at least one host",
            });
        }
        for host in hosts {
            check_host(host)?;
        }
        let common_name = hosts[0];
        let sans: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let params = CertificateParams::new(sans).map_err(|source| PkiError::Generate {
            subject: format!("server {hosts:?}"),
            source,
        })?;
        self.issue(
            params,
            common_name,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// A client certificate whose subject common name is `common_name` (a node or device id: the
    /// broker's username with `use_identity_as_username`), for [`Validity::leaf`].
    pub fn client_cert(&self, common_name: &str) -> Result<Identity, PkiError> {
        self.client_cert_valid(common_name, Validity::leaf())
    }

    /// [`Authority::client_cert`] for `validity`.
    pub fn client_cert_valid(
        &self,
        common_name: &str,
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        self.issue(
            CertificateParams::default(),
            common_name,
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        let params = self.leaf_params(params, common_name, usage, validity)?;
        let generate = |source| PkiError::Generate {
            subject: common_name.to_owned(),
            source,
        };
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(Identity {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// `params` completed as every certificate this CA issues is: subject CN `common_name`, digital
    /// signature for `usage` only, the authority key id, `validity` (within the CA's own).
    fn leaf_params(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<CertificateParams, PkiError> {
        if validity.not_after() > self.not_after {
            return Err(PkiError::OutlivesIssuer {
                subject: common_name.to_owned(),
                issuer: self.name.clone(),
                not_after: rfc3339(validity.not_after()),
                issuer_not_after: rfc3339(self.not_after),
            });
        }
        params.distinguished_name = distinguished_name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        // Lets OpenSSL (mosquitto) pick the issuer by key id rather than by name alone.
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params);
        Ok(params)
    }
}

/// `host` is an IP address or a DNS name (labels of letters, digits and `-`, the first may be `*`).
fn check_host(host: &str) -> Result<(), PkiError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let invalid = |reason| {
        Err(PkiError::InvalidHost {
            host: host.to_owned(),
            reason,
        })
    };
    if host.is_empty() || host.len() > 253 {
        return invalid("a DNS name is 1 to 253 characters long");
    }
    for (i, label) in host.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return invalid("each dot-separated label is 1 to 63 characters long");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return invalid(
                "a DNS name holds only letters, digits, '-' and '.' (or it is an IP address)",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label neither starts nor ends with '-'");
        }
    }
    Ok(())
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

    /// Writes `<stem>.crt` and `<stem>.key` (mode 0600) into `dir`, replacing existing files, and
    /// returns their paths.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&key, self.key_pem(), 0o600)?;
        write_file(&cert, self.cert_pem(), 0o644)?;
        Ok((cert, key))
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
        let ca_file = dir.join(format!("{stem}-ca.crt"));
        write_file(&ca_file, &trust.ca_pem(), 0o644)?;
        let (cert_file, key_file) = identity.save(dir, stem)?;
        Ok(Self {
            ca_file,
            cert_file,
            key_file,
        })
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

/// Writes `contents` to `path` with `mode`, replacing an existing file.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    // Remove first: `mode` only applies when the file is created.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(PkiError::Io {
                action: "cannot replace",
                path: path.to_owned(),
                source,
            });
        }
    }
    write_new_file(path, contents, mode)
}

/// Writes `contents` to the new file `path` with `mode`; an existing file is [`PkiError::Exists`].
fn write_new_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_owned(),
                hint: "",
            }
        } else {
            PkiError::Io {
                action: "cannot write",
                path: path.to_owned(),
                source,
            }
        }
    };
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
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
    use std::time::Duration;

    use rustls::client::danger::ServerCertVerifier;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions()) & 0o777
    }

    #[test]
    fn client_config_from_files_and_from_memory() {
        let ca = Authority::new("unit").unwrap();
        assert_eq!(ca.name(), "unit");
        let node = ca.client_cert("node-1").unwrap();
        assert_eq!(node.common_name(), "node-1");
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::write(dir.path(), "node-1", &ca, &node).unwrap();
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
        for bad in [
            "caf\u{e9}.example",
            "bad host",
            "",
            "a..b",
            "-a.example",
            "a_b.example",
        ] {
            assert!(
                matches!(ca.server_cert(&[bad]), Err(PkiError::InvalidHost { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            ca.server_cert(&[]),
            Err(PkiError::InvalidHost { .. })
        ));
        ca.server_cert(&["*.mqtt.example.com", "localhost", "10.1.2.3", "fe80::1"])
            .unwrap();
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

    #[test]
    fn a_saved_ca_loads_back_and_keeps_signing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create("edgefleet unit CA", Validity::days(30)).unwrap();
        let (cert, key) = ca.save(dir.path(), "unit-ca").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert!(matches!(
            ca.save(dir.path(), "unit-ca"),
            Err(PkiError::Exists { .. })
        ));

        let loaded = Authority::load(&cert, &key).unwrap();
        assert_eq!(loaded.name(), "edgefleet unit CA");
        assert_eq!(loaded.ca_pem(), ca.ca_pem());
        // Certificates the loaded CA signs are accepted by clients trusting the original.
        let server = loaded
            .server_cert_valid(&["localhost"], Validity::days(1))
            .unwrap();
        let info = &CertInfo::from_pem(server.cert_pem()).unwrap()[0];
        assert_eq!(info.issuer, "edgefleet unit CA");
        let root = rustls::pki_types::CertificateDer::from(
            x509_parser::pem::parse_x509_pem(ca.ca_pem().as_bytes())
                .unwrap()
                .1
                .contents,
        );
        let leaf = rustls::pki_types::CertificateDer::from(
            x509_parser::pem::parse_x509_pem(server.cert_pem().as_bytes())
                .unwrap()
                .1
                .contents,
        );
        install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
    }

    #[test]
    fn load_refuses_what_is_not_a_ca_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("one").unwrap();
        let other = Authority::new("two").unwrap();
        let (cert, key) = ca.save(dir.path(), "one").unwrap();
        let (_, other_key) = other.save(dir.path(), "two").unwrap();
        assert!(matches!(
            Authority::load(&cert, &other_key),
            Err(PkiError::KeyMismatch { .. })
        ));
        let leaf = ca.client_cert("node-1").unwrap();
        let (leaf_cert, leaf_key) = leaf.save(dir.path(), "node-1").unwrap();
        let err = Authority::load(&leaf_cert, &leaf_key).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
        assert!(matches!(
            Authority::load(&key, &key),
            Err(PkiError::BadFile { .. })
        ));
        assert!(matches!(
            Authority::load(&dir.path().join("missing.crt"), &key),
            Err(PkiError::Io { .. })
        ));
    }

    #[test]
    fn validity_is_backdated_and_bounded_by_the_ca() {
        let before = SystemTime::now();
        let ca = Authority::create("edgefleet short CA", Validity::days(10)).unwrap();
        let leaf = ca.client_cert_valid("node-1", Validity::days(5)).unwrap();
        let info = &CertInfo::from_pem(leaf.cert_pem()).unwrap()[0];
        let backdate = before.duration_since(info.not_before).unwrap();
        assert!(
            backdate >= Duration::from_secs(4 * 60) && backdate <= Duration::from_secs(6 * 60),
            "{backdate:?}"
        );
        let lifetime = info.not_after.duration_since(before).unwrap();
        assert!(lifetime.abs_diff(Duration::from_secs(5 * 86_400)) < Duration::from_secs(60));

        let err = ca.client_cert("node-1").unwrap_err();
        assert!(matches!(err, PkiError::OutlivesIssuer { .. }), "{err}");
        assert!(err.to_string().contains("fewer days"), "{err}");

        let ca_info = &CertInfo::from_pem(&Authority::new("d").unwrap().ca_pem()).unwrap()[0];
        let ca_lifetime = ca_info.not_after.duration_since(before).unwrap();
        assert!(ca_lifetime > Duration::from_secs(3649 * 86_400));
    }
}
