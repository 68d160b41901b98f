//! Node identity bootstrap against a real kube-apiserver (RBAC on; the controller with exactly
//! the rights `k3s/rbac/controller.yaml` gives its ServiceAccount): tokens the API server mints
//! for Pods on nodes, the controller's TokenReview and Pod checks, and the certificate it signs;
//! then a real agent that gets its certificate that way, connects to the shipped brokers with it
//! and renews it.

mod fleet;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgefleet_controller::config::{BootstrapConfig, ServiceAccount};
use edgefleet_controller::metrics::Metrics;
use edgefleet_pki::{Authority, CertInfo, CertUsage, CertificateRequest, Validity};
use edgefleet_testenv::ControlPlane;
use fleet::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use serde_json::{Value, json};

const NAMESPACE: &str = "edgefleet";
const AUDIENCE: &str = "edgefleet.dev/node-bootstrap";
const LIMIT: Duration = Duration::from_secs(60);

/// [`controller_plane`] with the agents' ServiceAccount, another one, and two Nodes.
fn plane() -> (ControlPlane, PathBuf) {
    let (plane, kubeconfig) = controller_plane();
    let mut objects = String::new();
    for account in ["edgefleet-agent", "intruder"] {
        objects.push_str(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {account}\n  namespace: {NAMESPACE}\n---\n"
        ));
    }
    for node in ["edge-a", "edge-b"] {
        objects.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n---\n"
        ));
    }
    plane.apply_yaml(&objects).unwrap();
    (plane, kubeconfig)
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> String {
    let mut command = plane.kubectl();
    command.args(args);
    edgefleet_testenv::run_kubectl(command).unwrap()
}

/// A Pod of `account` on `node` (no kubelet runs: it stays Pending, which is all a token needs).
fn pod(plane: &ControlPlane, name: &str, node: &str, account: &str) {
    plane
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
             spec:\n  serviceAccountName: {account}\n  nodeName: {node}\n\
             \x20 containers: [{{name: agent, image: edgefleet/edge-agent}}]\n"
        ))
        .unwrap();
}

/// `kubectl create token`: a token of `account` for `audience`, bound to Pod `pod` if given
/// (what the kubelet projects into the agent's Pod).
fn token(plane: &ControlPlane, account: &str, audience: &str, pod: Option<&str>) -> String {
    let mut args = vec![
        "create",
        "token",
        account,
        "-n",
        NAMESPACE,
        "--audience",
        audience,
    ];
    if let Some(pod) = pod {
        args.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
    }
    kubectl(plane, &args).trim().to_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `token` with its times moved (issued 30 min ago, expiring `expires_in_s` from now) and signed
/// again with the API server's own service-account key (ES256): a token TokenRequest would
/// never make (it issues at least 10 minutes ahead), otherwise the API server's.
fn resigned(plane: &ControlPlane, token: &str, expires_in_s: i64) -> String {
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let header_json: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header_json["alg"], "ES256", "{header_json}");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let now = unix_now();
    claims["iat"] = json!(now - 1800);
    claims["nbf"] = json!(now - 1800);
    claims["exp"] = json!(now + expires_in_s);
    let signing_input = format!(
        "{header}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let pem = std::fs::read(plane.service_account_signing_key()).unwrap();
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .unwrap();
    let signature = key.sign(&rng, signing_input.as_bytes()).unwrap();
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    )
}

/// The bootstrap endpoint of the controller, run in this process with the controller's
/// ServiceAccount identity; its node CA and what a client needs to reach it.
struct Endpoint {
    url: String,
    http: reqwest::Client,
    node_ca: Authority,
    metrics: Arc<Metrics>,
    _stop: tokio::sync::watch::Sender<bool>,
}

const VALIDITY: Duration = Duration::from_secs(3600);

impl Endpoint {
    async fn start(kubeconfig: &Path, dir: &Path) -> Endpoint {
        edgefleet_protocol::tls::install_crypto_provider();
        let node_ca = Authority::create("edgefleet node CA", Validity::ca()).unwrap();
        let (node_ca_cert, node_ca_key) = node_ca.save(dir, "node-ca").unwrap();
        let server_ca = Authority::new("bootstrap server").unwrap();
        let (tls_cert, tls_key) = server_ca
            .server_cert(&["127.0.0.1"])
            .unwrap()
            .save(dir, "bootstrap")
            .unwrap();
        let config = BootstrapConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert,
            tls_key,
            node_ca_cert,
            node_ca_key,
            audience: AUDIENCE.into(),
            agent: ServiceAccount::parse("system:serviceaccount:edgefleet:edgefleet-agent")
                .unwrap(),
            validity: VALIDITY,
        };
        let kube_config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(kube_config).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let addr = edgefleet_controller::bootstrap::start(&config, client, metrics.clone(), stop)
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(server_ca.ca_pem().as_bytes()).unwrap())
            .unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Endpoint {
            url: format!("https://{addr}/v1/node-certificate"),
            http,
            node_ca,
            metrics,
            _stop: stop_tx,
        }
    }

    /// Posts `body` with `token`: the status, its WWW-Authenticate header and the JSON answer.
    async fn post(&self, token: Option<&str>, body: String) -> (u16, Option<String>, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the endpoint answers");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
        (status, challenge, body)
    }

    /// Asks for a certificate for `node` with `token` and a CSR of `request`.
    async fn ask(&self, token: &str, node: &str, request: &CertificateRequest) -> (u16, Value) {
        let body = json!({"node": node, "csr": request.csr_pem()}).to_string();
        let (status, _, answer) = self.post(Some(token), body).await;
        (status, answer)
    }

    fn count(&self, outcome: &str) -> u64 {
        self.metrics
            .bootstrap_requests
            .get_or_create(&outcome.into())
            .get()
    }
}

/// A refusal: its status and reason, and a message that says something.
fn refused(answer: &(u16, Value), status: u16, reason: &str) {
    let (got, body) = answer;
    assert_eq!(
        (*got, body["reason"].as_str().unwrap_or_default()),
        (status, reason),
        "{body:#}"
    );
    assert!(
        body["error"].as_str().is_some_and(|e| e.len() > 20),
        "{body:#}"
    );
    println!("{status} {reason}: {}", body["error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_bound_token_gets_a_certificate_for_its_node_and_nothing_else() {
    let (plane, kubeconfig) = plane();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(&kubeconfig, dir.path()).await;
    pod(&plane, "agent-a", "edge-a", "edgefleet-agent");
    pod(&plane, "agent-gone", "edge-a", "edgefleet-agent");
    pod(&plane, "intruder-a", "edge-a", "intruder");
    pod(
        &plane,
        "agent-controller",
        "edgefleet-controller",
        "edgefleet-agent",
    );
    // What the endpoint answered, by outcome, to compare with its metric at the end.
    let mut seen = BTreeMap::<String, u64>::new();
    let mut tally = |answer: &(u16, Value)| {
        let outcome = answer.1["reason"].as_str().unwrap_or("issued").to_owned();
        *seen.entry(outcome).or_default() += 1;
    };

    // Node A's Pod's token gets a certificate for A, whatever its CSR names.
    let token_a = token(&plane, "edgefleet-agent", AUDIENCE, Some("agent-a"));
    let request = CertificateRequest::new("edge-b").unwrap();
    let answer = endpoint.ask(&token_a, "edge-a", &request).await;
    tally(&answer);
    assert_eq!(answer.0, 200, "{:#}", answer.1);
    let certificate = answer.1["certificate"].as_str().unwrap();
    let info = &CertInfo::from_pem(certificate).unwrap()[0];
    assert_eq!(info.subject, "edge-a");
    assert_eq!(info.issuer, "edgefleet node CA");
    assert_eq!(info.usage, CertUsage::Client);
    let lifetime = info
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        lifetime.abs_diff(VALIDITY) < Duration::from_secs(60),
        "{lifetime:?}"
    );
    assert_eq!(
        answer.1["not_after"],
        edgefleet_pki::rfc3339(info.not_after)
    );
    assert_eq!(answer.1["chain"], endpoint.node_ca.ca_pem());
    // Signed by the node CA (a client verifier trusting only it accepts it) for the CSR's key.
    let leaf = CertificateDer::from_pem_slice(certificate.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(endpoint.node_ca.ca_pem().as_bytes()).unwrap())
        .unwrap();
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap()
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .expect("the node CA signed it");
    rustls::sign::CertifiedKey::from_der(
        vec![leaf],
        PrivateKeyDer::from_pem_slice(request.key_pem().as_bytes()).unwrap(),
        &rustls::crypto::ring::default_provider(),
    )
    .expect("the certificate is for the CSR's key");

    // ... and nothing else: the same token asking for node B.
    let answer = endpoint.ask(&token_a, "edge-b", &request).await;
    tally(&answer);
    refused(&answer, 403, "wrong_node");

    // A token for another audience.
    let other_audience = token(&plane, "edgefleet-agent", "vault", Some("agent-a"));
    let answer = endpoint.ask(&other_audience, "edge-a", &request).await;
    tally(&answer);
    refused(&answer, 401, "unauthenticated");

    // An expired token, signed like the API server's own: refused; the same re-signed to expire
    // later is taken (so it is the expiry that is refused, not the signature).
    let expired = resigned(&plane, &token_a, -120);
    let answer = endpoint.ask(&expired, "edge-a", &request).await;
    tally(&answer);
    refused(&answer, 401, "unauthenticated");
    assert!(
        answer.1["error"].as_str().unwrap().contains("expired"),
        "{:#}",
        answer.1
    );
    let answer = endpoint
        .ask(&resigned(&plane, &token_a, 600), "edge-a", &request)
        .await;
    tally(&answer);
    assert_eq!(answer.0, 200, "{:#}", answer.1);

    // The token of a Pod deleted since: taken before, refused after. Right after the deletion
    // the API server may still vouch for it from its token cache (10 s): then the controller's
    // own read of the Pod refuses it; once the cache has expired the API server does.
    let token_gone = token(&plane, "edgefleet-agent", AUDIENCE, Some("agent-gone"));
    let answer = endpoint.ask(&token_gone, "edge-a", &request).await;
    tally(&answer);
    assert_eq!(answer.0, 200, "{:#}", answer.1);
    kubectl(
        &plane,
        &[
            "delete",
            "pod",
            "agent-gone",
            "-n",
            NAMESPACE,
            "--grace-period=0",
            "--force",
        ],
    );
    let started = Instant::now();
    loop {
        let answer = endpoint.ask(&token_gone, "edge-a", &request).await;
        tally(&answer);
        let reason = answer.1["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason == "pod_gone" || reason == "unauthenticated",
            "{:#}",
            answer.1
        );
        refused(&answer, 401, &reason);
        if reason == "unauthenticated" {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the API server still vouches for a deleted Pod's token"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Another ServiceAccount's token, for a Pod on node A.
    let intruder = token(&plane, "intruder", AUDIENCE, Some("intruder-a"));
    let answer = endpoint.ask(&intruder, "edge-a", &request).await;
    tally(&answer);
    refused(&answer, 403, "wrong_service_account");

    // The agents' ServiceAccount, but a token bound to no Pod (so to no node).
    let unbound = token(&plane, "edgefleet-agent", AUDIENCE, None);
    let answer = endpoint.ask(&unbound, "edge-a", &request).await;
    tally(&answer);
    refused(&answer, 403, "not_pod_bound");

    // A node named like the controller's certificate would get the controller's rights.
    let controller_node = token(
        &plane,
        "edgefleet-agent",
        AUDIENCE,
        Some("agent-controller"),
    );
    let answer = endpoint
        .ask(&controller_node, "edgefleet-controller", &request)
        .await;
    tally(&answer);
    refused(&answer, 403, "reserved_name");

    // Malformed requests never reach the API server.
    let (status, challenge, body) = endpoint
        .post(
            None,
            json!({"node": "edge-a", "csr": request.csr_pem()}).to_string(),
        )
        .await;
    tally(&(status, body.clone()));
    refused(&(status, body), 401, "no_token");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    for bad in [
        "not json".to_owned(),
        json!({"node": "bad/name", "csr": request.csr_pem()}).to_string(),
        json!({"node": "edge-a", "csr": request.csr_pem(), "ca": true}).to_string(),
    ] {
        let (status, _, body) = endpoint.post(Some(&token_a), bad).await;
        tally(&(status, body.clone()));
        refused(&(status, body), 400, "bad_request");
    }
    let answer = endpoint
        .post(
            Some(&token_a),
            json!({"node": "edge-a", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}).to_string(),
        )
        .await;
    tally(&(answer.0, answer.2.clone()));
    refused(&(answer.0, answer.2), 400, "bad_csr");

    // The metric counted each answer under its outcome.
    println!("outcomes: {seen:?}");
    for (outcome, count) in &seen {
        assert_eq!(endpoint.count(outcome), *count, "{outcome}");
    }
    assert_eq!(endpoint.count("api_error"), 0, "RBAC allowed every call");
}

/// The agent's node.pem: its leaf certificate.
fn stored_leaf(data_dir: &Path) -> Option<(String, CertInfo)> {
    let pem = std::fs::read_to_string(data_dir.join("identity/node.pem")).ok()?;
    let info = CertInfo::from_der(
        &CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()?
            .ok()?,
    )
    .ok()?;
    Some((pem, info))
}

/// Whether a client with the certificates and key of `pem` gets a CONNACK from `broker`.
async fn connects(
    broker: &edgefleet_simulators::broker::Broker,
    ca_pem: &str,
    pem: &str,
) -> Result<(), String> {
    let tls = edgefleet_protocol::tls::client_config_from_pem(
        ca_pem.as_bytes(),
        pem.as_bytes(),
        pem.as_bytes(),
    )
    .unwrap();
    let mut options = rumqttc::MqttOptions::new("edge-a", broker.host(), broker.port());
    options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    let (_client, mut events) = edgefleet_simulators::broker::client(options, 10);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer in 10 s".into()))
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_gets_its_certificate_from_the_controller_and_renews_it() {
    let (plane, kubeconfig) = plane();
    pod(&plane, "agent-edge-a", "edge-a", "edgefleet-agent");
    let mut fleet = Fleet::new();
    let d = fleet.dir.path().to_path_buf();
    // The fleet's one test CA is the node CA the cloud broker trusts, and signs the bootstrap
    // endpoint's server certificate too (the agent trusts it through --tls-ca).
    let (node_ca_cert, node_ca_key) = fleet.authority.save(&d, "node-ca").unwrap();
    let (tls_cert, tls_key) = fleet
        .authority
        .server_cert(&["127.0.0.1"])
        .unwrap()
        .save(&d, "bootstrap")
        .unwrap();
    let token_file = d.join("token");
    std::fs::write(
        &token_file,
        token(&plane, "edgefleet-agent", AUDIENCE, Some("agent-edge-a")),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<&OsStr> = vec![
        "--bootstrap-listen".as_ref(),
        listen.as_ref(),
        "--bootstrap-tls-cert".as_ref(),
        tls_cert.as_os_str(),
        "--bootstrap-tls-key".as_ref(),
        tls_key.as_os_str(),
        "--node-ca-cert".as_ref(),
        node_ca_cert.as_os_str(),
        "--node-ca-key".as_ref(),
        node_ca_key.as_os_str(),
        // Short, to see a renewal and the first certificate expire within the test.
        "--bootstrap-cert-validity-s".as_ref(),
        "60".as_ref(),
    ];
    let mut replica = fleet.start_cluster_controller_with(&kubeconfig, "replica-1", &args);
    fleet.add_bootstrapped_node("edge-a", &format!("https://127.0.0.1:{port}"), &token_file);
    let agent_port = fleet.nodes["edge-a"].http_port;
    let data_dir = fleet.nodes["edge-a"].data_dir.clone();

    // The uplink connected with the certificate (the cloud broker's ACL lets only edge-a write
    // edge-a's status, which the controller turns into the EdgeNode), the device link too.
    let started = Instant::now();
    loop {
        let node = kubectl(&plane, &["get", "edgenodes", "-o", "json"]);
        let node: Value = serde_json::from_str(&node).unwrap();
        if node["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|n| n["metadata"]["name"] == "edge-a" && n["status"]["state"] == "Online")
        }) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "edge-a not online:\n{node:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    until("the agent ready (device link up)", LIMIT, || {
        http_get(agent_port, "/readyz").0 == 200
    })
    .await;
    let (first_pem, first) = stored_leaf(&data_dir).expect("the agent stored its identity");
    assert_eq!(first.subject, "edge-a");
    assert_eq!(
        first.issuer,
        format!("edgefleet test CA {}", fleet.authority.name())
    );
    println!(
        "first certificate valid until {}",
        edgefleet_pki::rfc3339(first.not_after)
    );

    // Renewed at about 2/3 of its minute, with a new key.
    until("a renewed certificate", Duration::from_secs(90), || {
        stored_leaf(&data_dir).is_some_and(|(_, info)| info.not_after > first.not_after)
    })
    .await;
    let (renewed_pem, renewed) = stored_leaf(&data_dir).unwrap();
    assert_eq!(renewed.subject, "edge-a");
    let key = |pem: &str| pem[pem.find("-----BEGIN PRIVATE KEY").unwrap()..].to_owned();
    assert_ne!(key(&renewed_pem), key(&first_pem), "a new key");
    println!(
        "renewed: valid until {}",
        edgefleet_pki::rfc3339(renewed.not_after)
    );
    let metrics = http_get(agent_port, "/metrics").1;
    assert!(
        metric(
            &metrics,
            "edgefleet_agent_certificate_requests_total",
            "outcome=\"issued\""
        ) >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "edgefleet_agent_certificate_expiry_timestamp_seconds",
            ""
        ) > first
            .not_after
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64
    );

    // Once the first certificate has expired, the device broker refuses it...
    until(
        "the first certificate expired",
        Duration::from_secs(90),
        || SystemTime::now() > first.not_after + Duration::from_secs(2),
    )
    .await;
    let ca = fleet.authority.ca_pem();
    let devices = &mut fleet.nodes.get_mut("edge-a").unwrap().devices;
    let refusal = connects(devices, &ca, &first_pem).await.unwrap_err();
    println!("the expired certificate is refused: {refusal}");
    // ... and the agent's link, cut, connects again: with the renewed certificate, picked up
    // without a restart.
    devices.stop().unwrap();
    until("the agent unready (device link down)", LIMIT, || {
        http_get(agent_port, "/readyz").0 == 503
    })
    .await;
    devices.start().unwrap();
    until("the agent ready again (device link up)", LIMIT, || {
        http_get(agent_port, "/readyz").0 == 200
    })
    .await;
    let metrics = http_get(replica.port, "/metrics").1;
    assert!(
        metric(
            &metrics,
            "edgefleet_controller_bootstrap_requests_total",
            "outcome=\"issued\""
        ) >= 2.0,
        "{metrics}"
    );
    replica.stop();
}
