//! Certificates from signing requests, for node identity bootstrap (`docs/node-identity.md`): a
//! node makes its own key and a request for it ([`CertificateRequest::new`], the agent's side), and
//! the node CA signs it for the name the controller verified ([`Authority::sign_node_request`]).
//! The private key never leaves the node.
//!
//! The request proves only that its sender holds the key (its signature is checked); what it says
//! about its subject, extensions or usages is ignored. The certificate names the node the caller
//! vouches for and nothing else, with exactly the attributes of [`Authority::client_cert`] (CN =
//! the node name, client authentication only), so the brokers' ACLs treat it like a node
//! certificate from `edgefleet certs issue node`.

use edgefleet_protocol::NodeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, KeyPair,
    SignatureAlgorithm,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::{Authority, CONTROLLER_COMMON_NAME, CertInfo, PkiError, Validity};

/// The key types a request may carry: those the fleet's brokers and rustls handle, without a key
/// size to judge.
const KEY_TYPES: [&SignatureAlgorithm; 3] = [
    &rcgen::PKCS_ECDSA_P256_SHA256,
    &rcgen::PKCS_ECDSA_P384_SHA384,
    &rcgen::PKCS_ED25519,
];

/// A new private key (ECDSA P-256) and a certificate signing request for it, both PEM.
#[derive(Clone)]
pub struct CertificateRequest {
    key_pem: String,
    csr_pem: String,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("CertificateRequest")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateRequest {
    /// A fresh key and a request naming `common_name` (informative only: the signer decides the
    /// name).
    pub fn new(common_name: &str) -> Result<CertificateRequest, PkiError> {
        let generate = |source| PkiError::Generate {
            subject: format!("a request for {common_name}"),
            source,
        };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = crate::distinguished_name(common_name);
        let csr = params.serialize_request(&key).map_err(generate)?;
        Ok(CertificateRequest {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem().map_err(generate)?,
        })
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The request, PEM (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }
}

impl Authority {
    /// Signs the key of the request `csr_pem` into a client certificate for node `node` (CN = the
    /// node name, whatever the request says), valid for `validity`; returns the certificate, PEM.
    ///
    /// Refuses ([`PkiError::BadRequest`]) a request that does not parse, whose signature does not
    /// verify, or whose key is not ECDSA P-256/P-384 or Ed25519; and the controller's name
    /// ([`PkiError::ReservedName`]: the node CA also issues the controller's certificate). The
    /// device-name check of [`crate::FleetPki::issue_node`] needs the PKI folder and is not made.
    pub fn sign_node_request(
        &self,
        node: &NodeId,
        csr_pem: &str,
        validity: Validity,
    ) -> Result<String, PkiError> {
        if node.as_str() == CONTROLLER_COMMON_NAME {
            return Err(PkiError::ReservedName {
                kind: "node",
                name: node.to_string(),
            });
        }
        let bad = |reason: String| PkiError::BadRequest { reason };
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
            .map_err(|e| bad(format!("not PEM: {e}")))?;
        if pem.label != "CERTIFICATE REQUEST" {
            return Err(bad(format!(
                "a {:?} block where a CERTIFICATE REQUEST was expected",
                pem.label
            )));
        }
        let requested_key = X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| bad(e.to_string()))?
            .1
            .certification_request_info
            .subject_pki
            .raw
            .to_vec();
        let request = CertificateSigningRequestParams::from_der(&pem.contents.as_slice().into())
            .map_err(|e| bad(e.to_string()))?;
        if !KEY_TYPES.contains(&request.public_key.algorithm()) {
            return Err(bad(format!(
                "its key is {:?}; ECDSA P-256 or P-384 or Ed25519 is needed",
                request.public_key.algorithm()
            )));
        }
        let params = self.leaf_params(
            CertificateParams::default(),
            node.as_str(),
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )?;
        let cert = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                subject: node.to_string(),
                source,
            })?;
        let cert_pem = cert.pem();
        // rcgen rebuilds the key's SubjectPublicKeyInfo from the request's signature algorithm:
        // check that the certificate certifies exactly the key that was sent (a P-256 key
        // signing with SHA-384 would otherwise come out as a broken P-384 key).
        let issued = CertInfo::from_pem(&cert_pem)?;
        if issued.first().map(|info| &info.public_key_info) != Some(&requested_key) {
            return Err(bad(
                "its key and signature algorithm do not match (e.g. a P-256 key signing with SHA-384)"
                    .into(),
            ));
        }
        Ok(cert_pem)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::CertUsage;

    fn node(name: &str) -> NodeId {
        name.parse().unwrap()
    }

    #[test]
    fn signs_the_requested_key_for_the_given_node_only() {
        crate::install_crypto_provider();
        let ca = Authority::new("node").unwrap();
        // The request names another node: the signer's name wins.
        let request = CertificateRequest::new("edge-b").unwrap();
        assert!(!format!("{request:?}").contains("PRIVATE KEY"));
        let validity = Validity::lasting(Duration::from_secs(3600));
        let cert_pem = ca
            .sign_node_request(&node("edge-a"), request.csr_pem(), validity)
            .unwrap();
        let info = &CertInfo::from_pem(&cert_pem).unwrap()[0];
        assert_eq!(info.subject, "edge-a");
        assert_eq!(info.issuer, "edgefleet test CA node");
        assert_eq!(info.usage, CertUsage::Client);
        let lifetime = info.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(
            lifetime.abs_diff(Duration::from_secs(3600)) < Duration::from_secs(60),
            "{lifetime:?}"
        );
        // The certificate is for the request's key: rustls pairs them.
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        assert_eq!(&CertInfo::from_der(&chain[0]).unwrap(), info);
        let key = PrivateKeyDer::from_pem_slice(request.key_pem().as_bytes()).unwrap();
        rustls::sign::CertifiedKey::from_der(
            chain.clone(),
            key,
            &rustls::crypto::ring::default_provider(),
        )
        .unwrap();
        let other = CertificateRequest::new("edge-a").unwrap();
        let other_key = PrivateKeyDer::from_pem_slice(other.key_pem().as_bytes()).unwrap();
        assert!(
            rustls::sign::CertifiedKey::from_der(
                chain,
                other_key,
                &rustls::crypto::ring::default_provider()
            )
            .is_err()
        );
        // A client trusting the CA and presenting it: a usable TLS identity.
        crate::client_config(
            &ca,
            &crate::Identity {
                common_name: "edge-a".into(),
                cert_pem,
                key_pem: request.key_pem().into(),
            },
        )
        .unwrap();
    }

    #[test]
    fn refuses_requests_it_cannot_trust_and_the_controllers_name() {
        let ca = Authority::new("node").unwrap();
        let validity = Validity::lasting(Duration::from_secs(3600));
        let request = CertificateRequest::new("edge-a").unwrap();

        let err = ca
            .sign_node_request(&node(CONTROLLER_COMMON_NAME), request.csr_pem(), validity)
            .unwrap_err();
        assert!(
            matches!(err, PkiError::ReservedName { kind: "node", .. }),
            "{err}"
        );

        // A request damaged in transit: one base64 character of its body changed, so that it no
        // longer parses or its signature no longer verifies.
        let mut damaged = request.csr_pem().to_owned();
        let at = damaged.len() / 2;
        let was = damaged.as_bytes()[at];
        let by = if was == b'A' { "B" } else { "A" };
        damaged.replace_range(at..at + 1, by);
        for (bad, expect) in [
            ("", "not PEM"),
            ("hello", "not PEM"),
            (ca.ca_pem().as_str(), "CERTIFICATE"),
            (damaged.as_str(), ""),
        ] {
            let err = ca
                .sign_node_request(&node("edge-a"), bad, validity)
                .unwrap_err();
            assert!(matches!(err, PkiError::BadRequest { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(expect), "{err}");
        }

        // Requests made by openssl: an RSA key is refused by type; a P-256 key signing with
        // SHA-384 would come out as a broken P-384 key and is refused.
        for (args, expect) in [
            (&["-newkey", "rsa:2048"][..], "P-256"),
            (
                &[
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-sha384",
                ][..],
                "do not match",
            ),
        ] {
            let csr = openssl_request(args);
            let err = ca
                .sign_node_request(&node("edge-a"), &csr, validity)
                .unwrap_err();
            assert!(matches!(err, PkiError::BadRequest { .. }), "{err}");
            assert!(err.to_string().contains(expect), "{args:?}: {err}");
        }

        // Longer than the CA.
        let err = ca
            .sign_node_request(
                &node("edge-a"),
                request.csr_pem(),
                Validity::days(Validity::CA_DAYS + 1),
            )
            .unwrap_err();
        assert!(matches!(err, PkiError::OutlivesIssuer { .. }), "{err}");
    }

    #[test]
    fn takes_the_other_key_types_of_the_fleet() {
        crate::install_crypto_provider();
        let ca = Authority::new("node").unwrap();
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            let cert = ca
                .sign_node_request(
                    &node("edge-a"),
                    &csr,
                    Validity::lasting(Duration::from_secs(600)),
                )
                .unwrap();
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
            rustls::sign::CertifiedKey::from_der(
                chain,
                key,
                &rustls::crypto::ring::default_provider(),
            )
            .unwrap();
        }
    }

    /// `openssl req -new <args>` with a throw-away key: the request, PEM.
    fn openssl_request(args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("openssl")
            .args(["req", "-new", "-nodes", "-subj", "/CN=edge-a", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .args(args)
            .output()
            .expect("openssl runs (scripts/setup.sh installs it)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}
