//! The control plane's test-time PKI: one CA (ECDSA P-256, made with rcgen) that signs the API
//! server's serving certificate and every client certificate, and the service-account signing key.
//!
//! Client certificates are assembled with `der` rather than rcgen: Kubernetes takes the user from
//! the subject's CN and a group from *each* `O` attribute, and rcgen's `DistinguishedName` holds
//! one value per attribute type.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SigningKey,
};

use crate::TestenvError;
use crate::der;

/// A certificate and its private key, DER and PEM.
pub(crate) struct Identity {
    pub(crate) cert_der: Vec<u8>,
    pub(crate) cert_pem: String,
    pub(crate) key_der: Vec<u8>,
    pub(crate) key_pem: String,
}

pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_subject: Vec<u8>,
}

fn cert_error(what: &'static str) -> impl Fn(rcgen::Error) -> TestenvError {
    move |source| TestenvError::Certificate { what, source }
}

impl Pki {
    pub(crate) fn new() -> Result<Self, TestenvError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "edgefleet-testenv CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_error("CA key"))?;
        let ca = CertifiedIssuer::self_signed(params, key).map_err(cert_error("CA"))?;
        let ca_subject = der::certificate_subject(ca.der()).ok_or(TestenvError::Certificate {
            what: "CA subject",
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
        Ok(Pki { ca, ca_subject })
    }

    pub(crate) fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub(crate) fn ca_der(&self) -> &[u8] {
        self.ca.der()
    }

    /// A serving certificate for `hosts` (IP addresses or DNS names).
    pub(crate) fn server(&self, hosts: &[&str]) -> Result<Identity, TestenvError> {
        let sans: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(cert_error("serving SANs"))?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_error("key"))?;
        let cert = params
            .signed_by(&key, &self.ca)
            .map_err(cert_error("serving certificate"))?;
        Ok(Identity {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate: CN = `user`, one `O` per group.
    pub(crate) fn client(&self, user: &str, groups: &[&str]) -> Result<Identity, TestenvError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_error("key"))?;
        let spki = key.subject_public_key_info();
        let ecdsa_with_sha256 = der::sequence(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 2])]);

        let mut rdns = Vec::new();
        for group in groups {
            rdns.push(der::set(&[&der::sequence(&[
                &der::oid(&[2, 5, 4, 10]),
                &der::utf8_string(group),
            ])]));
        }
        rdns.push(der::set(&[&der::sequence(&[
            &der::oid(&[2, 5, 4, 3]),
            &der::utf8_string(user),
        ])]));
        let rdn_refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
        let subject = der::sequence(&rdn_refs);

        // rcgen's own defaults for validity (1975 .. 4096): test certificates never expire.
        let validity = der::sequence(&[
            &der::tlv(0x17, b"750101000000Z"),
            &der::tlv(0x18, b"40960101000000Z"),
        ]);
        let extension = |oid: &[u64], critical: bool, value: &[u8]| {
            let id = der::oid(oid);
            let value = der::octet_string(value);
            if critical {
                der::sequence(&[&id, &der::boolean_true(), &value])
            } else {
                der::sequence(&[&id, &value])
            }
        };
        let extensions = der::sequence(&[
            // basicConstraints: not a CA
            &extension(&[2, 5, 29, 19], true, &der::sequence(&[])),
            // keyUsage: digitalSignature (bit 0)
            &extension(&[2, 5, 29, 15], true, &der::bit_string(7, &[0x80])),
            // extKeyUsage: clientAuth
            &extension(
                &[2, 5, 29, 37],
                false,
                &der::sequence(&[&der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 2])]),
            ),
        ]);
        // A random serial: the tail of the fresh public key, kept positive.
        let mut serial = spki[spki.len().saturating_sub(16)..].to_vec();
        if let Some(first) = serial.first_mut() {
            *first = (*first & 0x7f) | 0x40;
        }
        let tbs = der::sequence(&[
            &der::explicit(0, &der::tlv(0x02, &[2])),
            &der::unsigned_integer(&serial),
            &ecdsa_with_sha256,
            &self.ca_subject,
            &validity,
            &subject,
            &spki,
            &der::explicit(3, &extensions),
        ]);
        let signature = self
            .ca
            .key()
            .sign(&tbs)
            .map_err(cert_error("client certificate signature"))?;
        let cert_der = der::sequence(&[&tbs, &ecdsa_with_sha256, &der::bit_string(0, &signature)]);
        Ok(Identity {
            cert_pem: der::pem("CERTIFICATE", &cert_der),
            cert_der,
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The service-account token signing key: (private key PEM, public key PEM).
pub(crate) fn service_account_key() -> Result<(String, String), TestenvError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(cert_error("service-account key"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    #[test]
    fn hand_built_client_certificates_verify_against_the_ca()
    -> Result<(), Box<dyn std::error::Error>> {
        let pki = Pki::new()?;
        let client = pki.client(
            "system:serviceaccount:ns:name",
            &["system:serviceaccounts", "system:serviceaccounts:ns"],
        )?;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der().to_vec()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        verifier.verify_client_cert(
            &CertificateDer::from(client.cert_der.clone()),
            &[],
            UnixTime::now(),
        )?;
        assert!(client.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(client.key_pem.contains("PRIVATE KEY"));

        // A certificate from another CA is refused: the verifier really checks.
        let other = Pki::new()?.client("mallory", &[])?;
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(other.cert_der), &[], UnixTime::now())
                .is_err()
        );
        Ok(())
    }
}
