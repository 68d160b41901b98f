//! Node identity bootstrap (cluster mode, `--bootstrap-listen`): `POST /v1/node-certificate`
//! over HTTPS issues a short-lived client certificate for a node to the agent running on it.
//!
//! A DaemonSet cannot hold a certificate per node, so the agent proves who it is with its
//! projected, audience-bound ServiceAccount token, and the controller believes only the API
//! server: a TokenReview (with `--bootstrap-audience`) must authenticate the token as the agents'
//! ServiceAccount, bound to a Pod whose node (the `authentication.kubernetes.io/node-name` extra,
//! Kubernetes ≥ 1.32) is the node asked for, and a GET of that Pod must show it on that node with
//! the token's uid. Only then does the node CA sign the agent's own key (from its CSR; whatever
//! name the CSR carries, the certificate's CN is the verified node name: the brokers fence nodes
//! by CN). What is checked and why, lifetimes and failure modes: `docs/node-identity.md`.
//!
//! Refusals are a [`RequestError`]: 401 for a token the API server does not vouch for (expired,
//! another audience, its Pod deleted), 403 for a valid token that names another node or belongs to
//! another ServiceAccount, 400 for a malformed request; each with a JSON `{"error", "reason"}`,
//! a log line and `edgefleet_controller_bootstrap_requests_total{outcome}`. At most 4 requests ask
//! the API server at a time (the others wait up to 5 s for their turn, then get 429), so a flood of
//! bad tokens costs the API server little.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use edgefleet_pki::{Authority, PkiError, Validity};
use edgefleet_protocol::NodeId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{BootstrapConfig, ServiceAccount};
use crate::metrics::Metrics;

/// The path agents post to.
const PATH: &str = "/v1/node-certificate";
/// Requests asking the API server at the same time.
const REVIEWS_IN_FLIGHT: usize = 4;
/// How long a request waits for its turn before it is told to come back (429).
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long one API server call may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once, and how long one may take.
const HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request is a node name and a CSR of well under a kilobyte; a token a few kilobytes.
const BODY_LIMIT: usize = 16 * 1024;
const TOKEN_LIMIT: usize = 16 * 1024;

/// The TokenReview extras of a pod-bound ServiceAccount token.
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Every outcome label of `edgefleet_controller_bootstrap_requests_total`: `issued` and each
/// [`RequestError::kind`].
pub(crate) const OUTCOMES: [&str; 14] = [
    "issued",
    "no_token",
    "bad_request",
    "unauthenticated",
    "wrong_audience",
    "wrong_service_account",
    "not_pod_bound",
    "wrong_node",
    "pod_gone",
    "pod_elsewhere",
    "reserved_name",
    "bad_csr",
    "busy",
    "api_error",
];

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file could not be read or used.
    #[error("{what} {path}: {reason}")]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node CA could not be loaded.
    #[error("the node CA (--node-ca-cert, --node-ca-key): {0}")]
    NodeCa(#[from] PkiError),
    /// The address could not be bound.
    #[error("cannot listen on {addr} (--bootstrap-listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a node certificate request was refused; [`RequestError::kind`] is its metric label.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// No `Authorization: Bearer` header, or one that cannot be a token.
    #[error(
        "no bearer token: send `Authorization: Bearer <the agent's projected ServiceAccount token>`"
    )]
    NoToken,
    /// The body is not `{"node": "<name>", "csr": "<PEM>"}` with a valid node name.
    #[error(
        "the request is not valid: {0} (expected JSON {{\"node\": \"<name>\", \"csr\": \"<PEM CSR>\"}})"
    )]
    BadRequest(String),
    /// The API server does not authenticate the token: expired, of another audience, its Pod or
    /// ServiceAccount deleted, or not a token at all.
    #[error("the API server does not accept the token: {0}")]
    Unauthenticated(String),
    /// The API server authenticated the token, but not for this endpoint's audience.
    #[error("the token is not for the audience {0}")]
    WrongAudience(String),
    /// The token belongs to another user than the agents' ServiceAccount.
    #[error("the token belongs to {user}, not to the agents' ServiceAccount {expected}")]
    WrongServiceAccount {
        /// The token's user.
        user: String,
        /// The agents' ServiceAccount.
        expected: String,
    },
    /// The token is not bound to a Pod on a node.
    #[error(
        "the token is not bound to a Pod on a node (no {0} in its review): use the token projected into the agent's Pod (Kubernetes 1.32 or later)"
    )]
    NotPodBound(&'static str),
    /// The token's Pod runs on another node than the one asked for.
    #[error("the token is for a Pod on node {token_node}, not on {node}")]
    WrongNode {
        /// The node asked for.
        node: NodeId,
        /// The token's node.
        token_node: String,
    },
    /// The token's Pod no longer exists (or another Pod took its name).
    #[error("Pod {namespace}/{pod} of the token is gone")]
    PodGone {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
    },
    /// The token's Pod is not on the node asked for.
    #[error("Pod {namespace}/{pod} runs on {actual:?}, not on {node}")]
    PodElsewhere {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
        /// Where it runs (none: not scheduled).
        actual: Option<String>,
        /// The node asked for.
        node: NodeId,
    },
    /// The node's name is the controller's certificate name.
    #[error("{0}")]
    ReservedName(PkiError),
    /// The CSR cannot be signed.
    #[error("{0}")]
    BadCsr(PkiError),
    /// Too many requests are being reviewed.
    #[error("too many node certificate requests at once: retry in a few seconds")]
    Busy,
    /// The API server could not be asked, or signing failed.
    #[error("the controller cannot answer now: {0}")]
    Api(String),
}

impl RequestError {
    /// The metric label and the `reason` of the JSON answer.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::NoToken => "no_token",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::Unauthenticated(_) => "unauthenticated",
            RequestError::WrongAudience(_) => "wrong_audience",
            RequestError::WrongServiceAccount { .. } => "wrong_service_account",
            RequestError::NotPodBound(_) => "not_pod_bound",
            RequestError::WrongNode { .. } => "wrong_node",
            RequestError::PodGone { .. } => "pod_gone",
            RequestError::PodElsewhere { .. } => "pod_elsewhere",
            RequestError::ReservedName(_) => "reserved_name",
            RequestError::BadCsr(_) => "bad_csr",
            RequestError::Busy => "busy",
            RequestError::Api(_) => "api_error",
        }
    }

    /// 401 when the token proves nobody, 403 when it proves someone else, 400, 429 or 503.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::NoToken
            | RequestError::Unauthenticated(_)
            | RequestError::WrongAudience(_)
            | RequestError::PodGone { .. } => StatusCode::UNAUTHORIZED,
            RequestError::WrongServiceAccount { .. }
            | RequestError::NotPodBound(_)
            | RequestError::WrongNode { .. }
            | RequestError::PodElsewhere { .. }
            | RequestError::ReservedName(_) => StatusCode::FORBIDDEN,
            RequestError::BadRequest(_) | RequestError::BadCsr(_) => StatusCode::BAD_REQUEST,
            RequestError::Busy => StatusCode::TOO_MANY_REQUESTS,
            RequestError::Api(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What an agent posts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeCertificateRequest {
    node: String,
    csr: String,
}

/// What it gets back.
#[derive(Debug, Serialize)]
struct NodeCertificate {
    /// The node's certificate, PEM.
    certificate: String,
    /// The node CA's certificate, PEM.
    chain: String,
    /// When the certificate expires, RFC 3339.
    not_after: String,
}

/// Who the token was issued to, as the API server says.
struct Reviewed {
    pod: String,
    pod_uid: String,
}

struct Service {
    client: Client,
    node_ca: Authority,
    audience: String,
    agent: ServiceAccount,
    validity: Duration,
    reviews: Semaphore,
    metrics: Arc<Metrics>,
}

/// Starts the endpoint on `config.listen` until `stop` turns true; returns the bound address.
pub async fn start(
    config: &BootstrapConfig,
    client: Client,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    edgefleet_protocol::tls::install_crypto_provider();
    let tls = server_config(&config.tls_cert, &config.tls_key)?;
    let node_ca = Authority::load(&config.node_ca_cert, &config.node_ca_key)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let service = Arc::new(Service {
        client,
        node_ca,
        audience: config.audience.clone(),
        agent: config.agent.clone(),
        validity: config.validity,
        reviews: Semaphore::new(REVIEWS_IN_FLIGHT),
        metrics,
    });
    let app = Router::new()
        .route(PATH, post(node_certificate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service);
    let (accepted_tx, accepted) = mpsc::channel(HANDSHAKES);
    tokio::spawn(handshakes(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        accepted_tx,
    ));
    let listener = TlsListener {
        accepted,
        local: addr,
    };
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(%addr, "the bootstrap endpoint stopped: {e}");
        }
    });
    Ok(addr)
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartError> {
    let file = |what, path: &Path, reason: String| StartError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| file("cannot read", cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| file("cannot read", key, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file("the bootstrap TLS certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file(
            "the bootstrap TLS certificate",
            cert,
            "no CERTIFICATE block".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file("the bootstrap TLS key", key, e.to_string()))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| file("the bootstrap TLS certificate and key", cert, e.to_string()))
}

/// TLS connections, handed to axum once their handshake is done.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task ended: no connection ever comes again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and runs each TLS handshake in a task of its own (a slow client
/// never holds up the others), at most [`HANDSHAKES`] at once, each bounded in time.
async fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            connection = listener.accept() => match connection {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, typically: give the process a moment.
                    tracing::warn!("bootstrap endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = accepted.closed() => return,
        };
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = accepted.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "bootstrap endpoint: TLS handshake failed: {e}")
                }
                Err(_) => tracing::debug!(%peer, "bootstrap endpoint: TLS handshake timed out"),
            }
        });
    }
}

async fn node_certificate(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = service.issue(&headers, &body).await;
    let outcome = match &result {
        Ok(_) => "issued",
        Err(e) => e.kind(),
    };
    service
        .metrics
        .bootstrap_requests
        .get_or_create(&outcome.into())
        .inc();
    match result {
        Ok(issued) => (StatusCode::OK, axum::Json(issued)).into_response(),
        Err(error) => {
            tracing::warn!(reason = error.kind(), "node certificate refused: {error}");
            let status = error.status();
            let body = serde_json::json!({"error": error.to_string(), "reason": error.kind()});
            let mut response = (status, axum::Json(body)).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(QUEUE_WAIT.as_secs()));
            }
            response
        }
    }
}

impl Service {
    async fn issue(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<NodeCertificate, RequestError> {
        let token = bearer_token(headers)?;
        let request: NodeCertificateRequest =
            serde_json::from_slice(body).map_err(|e| RequestError::BadRequest(e.to_string()))?;
        let node = NodeId::new(&request.node)
            .map_err(|e| RequestError::BadRequest(format!("node {:?}: {e}", request.node)))?;
        let reviewed = {
            // Waiting for a turn bounds what a flood costs the API server.
            let _turn = tokio::time::timeout(QUEUE_WAIT, self.reviews.acquire())
                .await
                .map_err(|_| RequestError::Busy)?
                .map_err(|_| RequestError::Busy)?;
            let reviewed = self.review(token, &node).await?;
            self.check_pod(&reviewed, &node).await?;
            reviewed
        };
        let validity = Validity::lasting(self.validity);
        let certificate = self
            .node_ca
            .sign_node_request(&node, &request.csr, validity)
            .map_err(|e| match e {
                PkiError::ReservedName { .. } => RequestError::ReservedName(e),
                PkiError::BadRequest { .. } => RequestError::BadCsr(e),
                other => RequestError::Api(other.to_string()),
            })?;
        let not_after = edgefleet_pki::rfc3339(validity.not_after());
        tracing::info!(
            %node,
            pod = %format!("{}/{}", self.agent.namespace, reviewed.pod),
            %not_after,
            "node certificate issued"
        );
        Ok(NodeCertificate {
            certificate,
            chain: self.node_ca.ca_pem(),
            not_after,
        })
    }

    /// Asks the API server who `token` is, and checks it is the agents' ServiceAccount in a
    /// Pod on `node`.
    async fn review(&self, token: &str, node: &NodeId) -> Result<Reviewed, RequestError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = tokio::time::timeout(
            API_TIMEOUT,
            Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| RequestError::Api("the TokenReview timed out".into()))?
        .map_err(|e| RequestError::Api(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(RequestError::Unauthenticated(
                status
                    .error
                    .unwrap_or_else(|| "not authenticated".to_owned()),
            ));
        }
        // The API server authenticates a token for the audiences asked for only; a server that
        // ignored them would answer without this one.
        if !status
            .audiences
            .as_ref()
            .is_some_and(|audiences| audiences.contains(&self.audience))
        {
            return Err(RequestError::WrongAudience(self.audience.clone()));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let expected = self.agent.username();
        if username != expected {
            return Err(RequestError::WrongServiceAccount {
                user: username,
                expected,
            });
        }
        let extra = user.extra.unwrap_or_default();
        let token_node = only(&extra, NODE_NAME)?;
        let pod = only(&extra, POD_NAME)?;
        let pod_uid = only(&extra, POD_UID)?;
        if token_node != node.as_str() {
            return Err(RequestError::WrongNode {
                node: node.clone(),
                token_node,
            });
        }
        Ok(Reviewed { pod, pod_uid })
    }

    /// The token's Pod, read now: still there, the same Pod, on `node`.
    async fn check_pod(&self, reviewed: &Reviewed, node: &NodeId) -> Result<(), RequestError> {
        let namespace = &self.agent.namespace;
        let pod = tokio::time::timeout(
            API_TIMEOUT,
            Api::<Pod>::namespaced(self.client.clone(), namespace).get_opt(&reviewed.pod),
        )
        .await
        .map_err(|_| RequestError::Api("reading the token's Pod timed out".into()))?
        .map_err(|e| RequestError::Api(format!("reading the token's Pod: {e}")))?;
        let gone = || RequestError::PodGone {
            namespace: namespace.clone(),
            pod: reviewed.pod.clone(),
        };
        let pod = pod.ok_or_else(gone)?;
        if pod.metadata.uid.as_deref() != Some(reviewed.pod_uid.as_str()) {
            return Err(gone());
        }
        let actual = pod.spec.and_then(|spec| spec.node_name);
        if actual.as_deref() != Some(node.as_str()) {
            return Err(RequestError::PodElsewhere {
                namespace: namespace.clone(),
                pod: reviewed.pod.clone(),
                actual,
                node: node.clone(),
            });
        }
        Ok(())
    }
}

/// The one value of `key` in a TokenReview's extra.
fn only(extra: &BTreeMap<String, Vec<String>>, key: &'static str) -> Result<String, RequestError> {
    match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Ok(value.clone()),
        _ => Err(RequestError::NotPodBound(key)),
    }
}

/// The token of `Authorization: Bearer <token>`: a JWT's characters, of a sane length.
fn bearer_token(headers: &HeaderMap) -> Result<&str, RequestError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(RequestError::NoToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(RequestError::NoToken)?;
    let token = token.trim();
    let jwt_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > TOKEN_LIMIT
        || !token.chars().all(jwt_chars)
    {
        return Err(RequestError::NoToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_taken_only_in_their_own_form() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(
            bearer_token(&headers("Bearer eyJ.a-b_c.d")).unwrap(),
            "eyJ.a-b_c.d"
        );
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearer a\"b",
        ] {
            assert!(
                matches!(bearer_token(&headers(bad)), Err(RequestError::NoToken)),
                "{bad:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(TOKEN_LIMIT + 1));
        assert!(bearer_token(&headers(&long)).is_err());
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn every_refusal_has_a_listed_outcome_and_the_status_its_proof_deserves() {
        let node: NodeId = "edge-a".parse().unwrap();
        let pki = |e| PkiError::BadRequest { reason: e };
        let refusals = [
            (RequestError::NoToken, 401),
            (RequestError::BadRequest("x".into()), 400),
            (RequestError::Unauthenticated("expired".into()), 401),
            (RequestError::WrongAudience("a".into()), 401),
            (
                RequestError::WrongServiceAccount {
                    user: "u".into(),
                    expected: "e".into(),
                },
                403,
            ),
            (RequestError::NotPodBound(NODE_NAME), 403),
            (
                RequestError::WrongNode {
                    node: node.clone(),
                    token_node: "edge-b".into(),
                },
                403,
            ),
            (
                RequestError::PodGone {
                    namespace: "n".into(),
                    pod: "p".into(),
                },
                401,
            ),
            (
                RequestError::PodElsewhere {
                    namespace: "n".into(),
                    pod: "p".into(),
                    actual: None,
                    node,
                },
                403,
            ),
            (
                RequestError::ReservedName(PkiError::ReservedName {
                    kind: "node",
                    name: "edgefleet-controller".into(),
                }),
                403,
            ),
            (RequestError::BadCsr(pki("x".into())), 400),
            (RequestError::Busy, 429),
            (RequestError::Api("down".into()), 503),
        ];
        for (error, status) in &refusals {
            assert_eq!(error.status().as_u16(), *status, "{error}");
            assert!(OUTCOMES.contains(&error.kind()), "{}", error.kind());
        }
        assert_eq!(
            refusals.len() + 1,
            OUTCOMES.len(),
            "one outcome per refusal"
        );
    }

    #[test]
    fn extras_must_hold_exactly_one_value() {
        let mut extra = BTreeMap::new();
        assert!(only(&extra, NODE_NAME).is_err());
        extra.insert(NODE_NAME.to_owned(), vec![]);
        assert!(only(&extra, NODE_NAME).is_err());
        extra.insert(NODE_NAME.to_owned(), vec!["a".into(), "b".into()]);
        assert!(only(&extra, NODE_NAME).is_err());
        extra.insert(NODE_NAME.to_owned(), vec!["edge-a".into()]);
        assert_eq!(only(&extra, NODE_NAME).unwrap(), "edge-a");
    }
}
