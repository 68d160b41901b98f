//! Node identity bootstrap, the agent's side (`--bootstrap-url`; `docs/node-identity.md`).
//!
//! The agent makes its own key (it never leaves the node), posts a signing request for it with its
//! node name and its projected ServiceAccount token to the controller, and gets a short-lived
//! client certificate (CN = the node name, from the node CA) that both links present. Key and
//! certificate are kept together in `<data-dir>/identity/node.pem` (mode 0600, replaced
//! atomically), so a restart while the cloud is away starts at once with a certificate that has
//! not expired; without one, the agent waits for the controller before its links connect.
//!
//! It renews at 2/3 of the lifetime the certificate had left when it came (less up to 5 % of it
//! at random, so that a fleet bootstrapped together does not renew together), with a new key,
//! reading the token file again each time (the kubelet rotates it); failures are retried from
//! 5 s, doubling, up to 5 min, past the expiry too. The links' TLS configuration asks
//! [`CurrentCertificate`] at every handshake, so a renewed certificate is used from the links'
//! next connection on without a restart; connections already up keep theirs (the brokers check a
//! certificate at the handshake only).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_pki::{CertInfo, CertificateRequest};
use edgefleet_protocol::NodeId;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::sync::watch;

use crate::agent::AgentError;
use crate::config::Bootstrap;
use crate::metrics::{AgentMetrics, OutcomeLabels};

/// Every outcome label of `edgefleet_agent_certificate_requests_total`: `issued` and each
/// [`IdentityError::kind`].
pub const OUTCOMES: [&str; 8] = [
    "issued",
    "token",
    "unavailable",
    "busy",
    "refused",
    "bad_answer",
    "key",
    "store",
];

/// The file under `<data-dir>/identity`.
const FILE: &str = "node.pem";
/// The share of the remaining lifetime after which the certificate is renewed, and the most that
/// is taken off it at random.
const RENEW_AT: f64 = 2.0 / 3.0;
const JITTER: f64 = 0.05;
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LAST_RETRY: Duration = Duration::from_secs(300);
/// Waits are cut into steps this long and measured again on the wall clock, which is what
/// certificates expire by.
const STEP: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a refusal's body goes into the log.
const MESSAGE_LIMIT: usize = 300;

/// Why a certificate could not be had; [`IdentityError::kind`] is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot read the ServiceAccount token {path}: {source} (is the projected token volume mounted?)"
    )]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the controller at {endpoint} cannot answer: {detail}")]
    Unavailable { endpoint: String, detail: String },
    #[error("the controller is busy: {0}")]
    Busy(String),
    #[error("the controller refused a certificate for this node ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the controller's answer is not a usable certificate for this node: {0}")]
    BadAnswer(String),
    #[error("cannot make a key: {0}")]
    Key(edgefleet_pki::PkiError),
    #[error("cannot store the certificate in {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl IdentityError {
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityError::Token { .. } => "token",
            IdentityError::Unavailable { .. } => "unavailable",
            IdentityError::Busy(_) => "busy",
            IdentityError::Refused { .. } => "refused",
            IdentityError::BadAnswer(_) => "bad_answer",
            IdentityError::Key(_) => "key",
            IdentityError::Store { .. } => "store",
        }
    }
}

/// The certificate the links present, asked for at every TLS handshake.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A certificate and its key, and when to renew it.
struct Held {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    renew_at: SystemTime,
}

/// What a request needs.
struct Requester {
    node: NodeId,
    bootstrap: Bootstrap,
    file: PathBuf,
    http: reqwest::Client,
    metrics: Arc<AgentMetrics>,
}

/// The node's certificate from the controller, kept fresh by [`NodeIdentity::run`].
pub struct NodeIdentity {
    requester: Requester,
    current: Arc<CurrentCertificate>,
    not_after: SystemTime,
    renew_at: SystemTime,
}

impl NodeIdentity {
    /// The stored certificate when it has not expired, else one from the controller, asked for
    /// until it comes (the links cannot connect without). Errors only when the bootstrap CA
    /// cannot be read.
    pub async fn establish(
        node: &NodeId,
        bootstrap: &Bootstrap,
        data_dir: &Path,
        metrics: Arc<AgentMetrics>,
    ) -> Result<NodeIdentity, AgentError> {
        let ca = std::fs::read(&bootstrap.ca).map_err(|e| AgentError::File {
            what: "the bootstrap endpoint's CA",
            path: bootstrap.ca.clone(),
            detail: e.to_string(),
        })?;
        let roots = roots(&ca).map_err(|detail| AgentError::File {
            what: "the bootstrap endpoint's CA",
            path: bootstrap.ca.clone(),
            detail,
        })?;
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| AgentError::File {
                what: "the bootstrap endpoint's CA",
                path: bootstrap.ca.clone(),
                detail: format!("cannot build the HTTPS client: {e}"),
            })?;
        let requester = Requester {
            node: node.clone(),
            bootstrap: bootstrap.clone(),
            file: data_dir.join("identity").join(FILE),
            http,
            metrics,
        };
        let stored = match load(&requester.file, node) {
            Ok(held) if held.not_after > SystemTime::now() => Some(held),
            Ok(held) => {
                tracing::warn!(
                    file = %requester.file.display(),
                    expired = %edgefleet_pki::rfc3339(held.not_after),
                    "the stored node certificate has expired: asking the controller for a new one"
                );
                None
            }
            Err(reason) => {
                tracing::info!(file = %requester.file.display(), "no stored node certificate ({reason}): asking the controller");
                None
            }
        };
        let held = match stored {
            Some(held) => {
                tracing::info!(
                    valid_until = %edgefleet_pki::rfc3339(held.not_after),
                    "using the stored node certificate"
                );
                held
            }
            None => {
                let mut retry = FIRST_RETRY;
                loop {
                    match requester.obtain().await {
                        Ok(held) => break held,
                        Err(e) => {
                            tracing::warn!(
                                reason = e.kind(),
                                "no node certificate yet: {e}; the links wait; retrying in {retry:?}"
                            );
                            tokio::time::sleep(retry).await;
                            retry = (retry * 2).min(LAST_RETRY);
                        }
                    }
                }
            }
        };
        requester
            .metrics
            .certificate_expiry
            .set(unix_seconds(held.not_after));
        Ok(NodeIdentity {
            requester,
            current: Arc::new(CurrentCertificate(RwLock::new(held.key))),
            not_after: held.not_after,
            renew_at: held.renew_at,
        })
    }

    /// A client configuration for the links: trusts the CAs in `ca_pem`, presents the current
    /// node certificate at each handshake.
    pub fn client_config(&self, ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(roots(ca_pem)?)
            .with_client_cert_resolver(self.current.clone()))
    }

    /// Renews the certificate before it expires, until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        loop {
            loop {
                let wait = self
                    .renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                if wait.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(wait.min(STEP)) => {}
                }
            }
            let obtained = tokio::select! {
                _ = stop.changed() => return,
                obtained = self.requester.obtain() => obtained,
            };
            match obtained {
                Ok(held) => {
                    *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = held.key;
                    self.requester
                        .metrics
                        .certificate_expiry
                        .set(unix_seconds(held.not_after));
                    self.not_after = held.not_after;
                    self.renew_at = held.renew_at;
                    retry = FIRST_RETRY;
                }
                Err(e) => {
                    let valid_until = edgefleet_pki::rfc3339(self.not_after);
                    if self.not_after <= SystemTime::now() {
                        tracing::error!(reason = e.kind(), %valid_until, "the node certificate has expired and cannot be renewed: {e}; the brokers refuse new connections until it is; retrying in {retry:?}");
                    } else {
                        tracing::warn!(reason = e.kind(), %valid_until, "cannot renew the node certificate yet: {e}; retrying in {retry:?}");
                    }
                    self.renew_at = SystemTime::now() + retry;
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }
}

/// The answer to a request.
#[derive(Deserialize)]
struct Issued {
    certificate: String,
    chain: String,
}

/// The body of a refusal.
#[derive(Deserialize)]
struct Refusal {
    error: String,
    reason: String,
}

impl Requester {
    /// One request: a new key, the token as it is now, the certificate stored; counted.
    async fn obtain(&self) -> Result<Held, IdentityError> {
        let result = self.request().await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(e) => e.kind(),
        };
        self.metrics
            .certificate_requests
            .get_or_create(&OutcomeLabels::new(outcome))
            .inc();
        result
    }

    async fn request(&self) -> Result<Held, IdentityError> {
        let token = std::fs::read_to_string(&self.bootstrap.token_file).map_err(|source| {
            IdentityError::Token {
                path: self.bootstrap.token_file.clone(),
                source,
            }
        })?;
        let request = CertificateRequest::new(self.node.as_str()).map_err(IdentityError::Key)?;
        let body = serde_json::json!({"node": self.node.as_str(), "csr": request.csr_pem()});
        let endpoint = &self.bootstrap.endpoint;
        let unavailable = |detail: String| IdentityError::Unavailable {
            endpoint: endpoint.clone(),
            detail,
        };
        let response = self
            .http
            .post(endpoint)
            .bearer_auth(token.trim())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if !status.is_success() {
            let message = match serde_json::from_str::<Refusal>(&text) {
                Ok(refusal) => format!("{} ({})", refusal.error, refusal.reason),
                Err(_) => text.chars().take(MESSAGE_LIMIT).collect(),
            };
            return Err(match status.as_u16() {
                429 => IdentityError::Busy(message),
                code @ 400..=499 => IdentityError::Refused {
                    status: code,
                    message,
                },
                code => unavailable(format!("{code}: {message}")),
            });
        }
        let issued: Issued = serde_json::from_str(&text)
            .map_err(|e| IdentityError::BadAnswer(format!("not the expected JSON: {e}")))?;
        let pem = format!(
            "{}{}{}",
            issued.certificate,
            issued.chain,
            request.key_pem()
        );
        let now = SystemTime::now();
        let (key, info) = parse(pem.as_bytes(), &self.node).map_err(IdentityError::BadAnswer)?;
        if info.not_after <= now {
            return Err(IdentityError::BadAnswer(format!(
                "it expired at {} already (is this node's clock right?)",
                edgefleet_pki::rfc3339(info.not_after)
            )));
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || store(&file, &pem))
            .await
            .map_err(|e| IdentityError::Store {
                path: self.file.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| IdentityError::Store {
                path: self.file.clone(),
                source,
            })?;
        tracing::info!(
            node = %self.node,
            valid_until = %edgefleet_pki::rfc3339(info.not_after),
            "node certificate issued by the controller"
        );
        Ok(Held {
            key,
            not_after: info.not_after,
            renew_at: renew_at(now, info.not_after, jitter()),
        })
    }
}

/// `e` with its sources (reqwest's own message alone says little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// When to renew a certificate that came at `obtained` and expires at `not_after`: at
/// [`RENEW_AT`] of what was left, less `jitter` (0 to 1) times [`JITTER`] of it.
fn renew_at(obtained: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let left = not_after.duration_since(obtained).unwrap_or_default();
    obtained + left.mul_f64(RENEW_AT - JITTER * jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX)
}

/// The certificates and the key of a node.pem, checked to belong together and to name `node`.
fn parse(pem: &[u8], node: &NodeId) -> Result<(Arc<CertifiedKey>, CertInfo), String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    let leaf = chain.first().ok_or("no certificate")?;
    let info = CertInfo::from_der(leaf).map_err(|e| e.to_string())?;
    if info.subject != node.as_str() {
        return Err(format!("it names {:?}, not this node {node}", info.subject));
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))?;
    let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| format!("the certificate is not for this node's key: {e}"))?;
    Ok((Arc::new(key), info))
}

/// The stored certificate (expired or not), due for renewal by when it was stored.
fn load(file: &Path, node: &NodeId) -> Result<Held, String> {
    let pem = std::fs::read(file).map_err(|e| e.to_string())?;
    let (key, info) = parse(&pem, node)?;
    let stored = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .unwrap_or(info.not_before)
        .min(SystemTime::now());
    Ok(Held {
        key,
        not_after: info.not_after,
        renew_at: renew_at(stored, info.not_after, jitter()),
    })
}

/// Writes `pem` to `file` (mode 0600) through a temporary file and a rename, synced: a crash
/// leaves the old identity or the new one, never half of one.
fn store(file: &Path, pem: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = file.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(pem.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("bad PEM: {e}"))?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(roots)
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use edgefleet_pki::{Authority, Validity};

    use super::*;

    fn node(name: &str) -> NodeId {
        name.parse().unwrap()
    }

    /// A node.pem as the controller's answer makes it.
    fn issued(ca: &Authority, name: &str, lifetime: Duration) -> String {
        let request = CertificateRequest::new(name).unwrap();
        let cert = ca
            .sign_node_request(&node(name), request.csr_pem(), Validity::lasting(lifetime))
            .unwrap();
        format!("{cert}{}{}", ca.ca_pem(), request.key_pem())
    }

    #[test]
    fn renews_at_two_thirds_of_what_was_left_less_a_little_at_random() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(renew_at(t0, t0 + day, 0.0), t0 + day * 2 / 3);
        let earliest = renew_at(t0, t0 + day, 1.0);
        assert_eq!(earliest, t0 + day.mul_f64(2.0 / 3.0 - 0.05));
        assert!(renew_at(t0, t0 + day, 0.5) < t0 + day * 2 / 3);
        assert!(renew_at(t0, t0 + day, 0.5) > earliest);
        // Expired already, or a clock far ahead: at once (the caller's retries pace it).
        assert_eq!(renew_at(t0 + day, t0, 0.3), t0 + day);
        let j = jitter();
        assert!((0.0..=1.0).contains(&j), "{j}");
    }

    #[test]
    fn a_stored_identity_loads_back_only_for_its_node_and_key() {
        let ca = Authority::new("node").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("identity").join(FILE);
        assert!(load(&file, &node("edge-a")).is_err(), "nothing stored yet");

        let pem = issued(&ca, "edge-a", Duration::from_secs(3600));
        store(&file, &pem).unwrap();
        let mode = |path: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        let held = load(&file, &node("edge-a")).unwrap();
        let left = held.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left.abs_diff(Duration::from_secs(3600)) < Duration::from_secs(60));
        // Stored just now: renewal at about 2/3 of the hour from now.
        let renew_in = held.renew_at.duration_since(SystemTime::now()).unwrap();
        assert!(
            renew_in > Duration::from_secs(2100) && renew_in <= Duration::from_secs(2400),
            "{renew_in:?}"
        );
        assert_eq!(held.key.cert.len(), 2, "the leaf and the node CA");

        // Another node's identity in this data dir (a renamed node) is not used.
        let err = load(&file, &node("edge-b")).err().unwrap();
        assert!(err.contains("not this node"), "{err}");
        // A key that is not the certificate's.
        let other = issued(&ca, "edge-a", Duration::from_secs(3600));
        let key_of_other = &other[other.find("-----BEGIN PRIVATE KEY").unwrap()..];
        let cert_only = &pem[..pem.find("-----BEGIN PRIVATE KEY").unwrap()];
        store(&file, &format!("{cert_only}{key_of_other}")).unwrap();
        let err = load(&file, &node("edge-a")).err().unwrap();
        assert!(err.contains("not for this node's key"), "{err}");
        store(&file, "garbage").unwrap();
        assert!(load(&file, &node("edge-a")).is_err());
        // Replacing leaves no temporary file behind.
        store(&file, &pem).unwrap();
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE]);
    }

    #[test]
    fn the_links_get_the_certificate_of_the_moment() {
        edgefleet_protocol::tls::install_crypto_provider();
        let ca = Authority::new("node").unwrap();
        let first = parse(
            issued(&ca, "edge-a", Duration::from_secs(600)).as_bytes(),
            &node("edge-a"),
        )
        .unwrap()
        .0;
        let second = parse(
            issued(&ca, "edge-a", Duration::from_secs(600)).as_bytes(),
            &node("edge-a"),
        )
        .unwrap()
        .0;
        let current = Arc::new(CurrentCertificate(RwLock::new(first.clone())));
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots(ca.ca_pem().as_bytes()).unwrap())
            .with_client_cert_resolver(current.clone());
        let resolved = || {
            config
                .client_auth_cert_resolver
                .resolve(&[], &[])
                .unwrap()
                .cert[0]
                .clone()
        };
        assert_eq!(resolved(), first.cert[0]);
        *current.0.write().unwrap() = second.clone();
        assert_eq!(resolved(), second.cert[0]);
    }

    #[test]
    fn every_failure_has_a_listed_outcome() {
        let errors = [
            IdentityError::Token {
                path: "/t".into(),
                source: std::io::ErrorKind::NotFound.into(),
            },
            IdentityError::Unavailable {
                endpoint: "e".into(),
                detail: "d".into(),
            },
            IdentityError::Busy("b".into()),
            IdentityError::Refused {
                status: 403,
                message: "m".into(),
            },
            IdentityError::BadAnswer("b".into()),
            IdentityError::Key(edgefleet_pki::PkiError::EmptyValidity),
            IdentityError::Store {
                path: "/s".into(),
                source: std::io::ErrorKind::PermissionDenied.into(),
            },
        ];
        for error in &errors {
            assert!(OUTCOMES.contains(&error.kind()), "{}", error.kind());
        }
        assert_eq!(errors.len() + 1, OUTCOMES.len());
    }
}
