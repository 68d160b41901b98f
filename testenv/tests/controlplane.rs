//! The control plane harness against the real etcd and kube-apiserver (built by
//! scripts/controlplane.sh): admin access, RBAC really applied to ServiceAccount and group
//! identities, TokenRequest, two planes at once, and a failed start that says why.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_testenv::{ControlPlane, Options, TestenvError, run_kubectl};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn start() -> Result<ControlPlane, TestenvError> {
    let plane = ControlPlane::start()?;
    println!(
        "control plane at {} ready in {:.2} s",
        plane.server_url(),
        plane.started_in().as_secs_f64()
    );
    Ok(plane)
}

fn kubectl(plane: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Result<String, TestenvError> {
    let mut command = plane.kubectl_as(kubeconfig);
    command.args(args);
    run_kubectl(command)
}

/// Runs `attempt` until it gives `Some`, failing after `timeout` with the last thing seen.
fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {timeout:?}; last: {last}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `kubeconfig` may list ConfigMaps in `namespace` (RBAC reads bindings from an
/// informer cache, so a new binding takes effect shortly after it is written).
fn until_allowed(
    plane: &ControlPlane,
    kubeconfig: &Path,
    namespace: &str,
) -> Result<String, String> {
    eventually(
        &format!("listing configmaps in {namespace} allowed"),
        Duration::from_secs(20),
        || match kubectl(
            plane,
            kubeconfig,
            &["get", "configmaps", "-n", namespace, "-o", "name"],
        ) {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.is_forbidden() => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    )
}

fn assert_forbidden(plane: &ControlPlane, kubeconfig: &Path, namespace: &str) -> TestResult {
    match kubectl(plane, kubeconfig, &["get", "configmaps", "-n", namespace]) {
        Err(e) if e.is_forbidden() => Ok(()),
        Err(e) => Err(format!("expected 403 listing configmaps in {namespace}, got: {e}").into()),
        Ok(out) => Err(format!("listing configmaps in {namespace} was allowed: {out}").into()),
    }
}

fn whoami(plane: &ControlPlane, kubeconfig: &Path) -> Result<(String, Vec<String>), String> {
    let out =
        kubectl(plane, kubeconfig, &["auth", "whoami", "-o", "json"]).map_err(|e| e.to_string())?;
    let review: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let user = &review["status"]["userInfo"];
    let name = user["username"].as_str().unwrap_or_default().to_owned();
    let groups = user["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((name, groups))
}

const NAMESPACES_AND_CONFIGMAPS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings-a, namespace: team-a}
data: {mode: strict}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings-b, namespace: team-b}
data: {mode: lax}
"#;

/// A Role reading ConfigMaps in `namespace`, bound to `subject`.
fn reader_role(namespace: &str, subject: &str) -> String {
    format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {namespace}}}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: configmap-reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
- {subject}
"#
    )
}

#[test]
fn rbac_applies_to_service_account_and_group_identities() -> TestResult {
    let plane = start()?;
    let admin = plane.admin_kubeconfig();

    let namespaces = kubectl(&plane, admin, &["get", "namespaces", "-o", "name"])?;
    assert!(namespaces.contains("namespace/default"), "{namespaces}");
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");
    plane.apply_yaml(NAMESPACES_AND_CONFIGMAPS)?;
    let settings = kubectl(
        &plane,
        admin,
        &[
            "get",
            "configmap",
            "settings-a",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.mode}",
        ],
    )?;
    assert_eq!(settings, "strict");

    // The ServiceAccount identity: exactly the user and groups a token of it would have.
    let controller = plane.service_account_kubeconfig("team-a", "controller")?;
    let (user, groups) = whoami(&plane, &controller)?;
    assert_eq!(user, "system:serviceaccount:team-a:controller");
    for group in [
        "system:serviceaccounts",
        "system:serviceaccounts:team-a",
        "system:authenticated",
    ] {
        assert!(
            groups.iter().any(|g| g == group),
            "{group} missing from {groups:?}"
        );
    }

    // Nothing granted yet: 403.
    assert_forbidden(&plane, &controller, "team-a")?;
    plane.apply_yaml(&reader_role(
        "team-a",
        "{kind: ServiceAccount, name: controller, namespace: team-a}",
    ))?;
    let listed = until_allowed(&plane, &controller, "team-a")?;
    assert_eq!(listed.trim(), "configmap/settings-a");
    // The Role is namespaced: the other namespace stays closed, and so do writes.
    assert_forbidden(&plane, &controller, "team-b")?;
    let write = kubectl(
        &plane,
        &controller,
        &["create", "configmap", "sneaky", "-n", "team-a"],
    );
    assert!(
        write.as_ref().is_err_and(TestenvError::is_forbidden),
        "create was not forbidden: {write:?}"
    );

    // Groups come from every O of the client certificate: a binding to the second one works.
    let alice = plane.kubeconfig_for("alice", &["auditors", "team-b-readers"])?;
    let (user, groups) = whoami(&plane, &alice)?;
    assert_eq!(user, "alice");
    assert!(groups.iter().any(|g| g == "auditors"), "{groups:?}");
    assert!(groups.iter().any(|g| g == "team-b-readers"), "{groups:?}");
    assert_forbidden(&plane, &alice, "team-b")?;
    plane.apply_yaml(&reader_role(
        "team-b",
        "{kind: Group, name: team-b-readers, apiGroup: rbac.authorization.k8s.io}",
    ))?;
    let listed = until_allowed(&plane, &alice, "team-b")?;
    assert_eq!(listed.trim(), "configmap/settings-b");
    assert_forbidden(&plane, &alice, "team-a")?;

    // TokenRequest and token authentication work (the service-account key pair is wired in).
    kubectl(
        &plane,
        admin,
        &["create", "serviceaccount", "controller", "-n", "team-a"],
    )?;
    let token = kubectl(
        &plane,
        admin,
        &["create", "token", "controller", "-n", "team-a"],
    )?;
    let ca = plane.dir().join("pki/ca.crt");
    let mut by_token = plane.kubectl_as(Path::new("/dev/null"));
    by_token
        .arg(format!("--server={}", plane.server_url()))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={}", token.trim()))
        .args(["get", "configmaps", "-n", "team-a", "-o", "name"]);
    assert_eq!(run_kubectl(by_token)?.trim(), "configmap/settings-a");
    Ok(())
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

fn port_of(url: &str) -> Result<u16, Box<dyn std::error::Error>> {
    Ok(url.rsplit(':').next().ok_or("no port")?.parse()?)
}

#[test]
fn two_planes_run_at_once_and_stop_on_drop() -> TestResult {
    let began = Instant::now();
    let second = std::thread::spawn(start);
    let first = start()?;
    let second = second.join().map_err(|_| "starting thread panicked")??;
    println!(
        "two planes started side by side in {:.2} s",
        began.elapsed().as_secs_f64()
    );
    assert_ne!(first.server_url(), second.server_url());

    kubectl(
        &first,
        first.admin_kubeconfig(),
        &["create", "namespace", "only-in-first"],
    )?;
    let elsewhere = kubectl(
        &second,
        second.admin_kubeconfig(),
        &["get", "namespace", "only-in-first"],
    );
    assert!(
        elsewhere
            .as_ref()
            .err()
            .and_then(TestenvError::kubectl_stderr)
            .is_some_and(|e| e.contains("NotFound")),
        "the second plane sees the first one's namespace: {elsewhere:?}"
    );

    // The second plane was started on a thread that has ended: it still serves.
    let namespaces = kubectl(
        &second,
        second.admin_kubeconfig(),
        &["get", "namespaces", "-o", "name"],
    )?;
    assert!(namespaces.contains("namespace/default"), "{namespaces}");

    let api = port_of(first.server_url())?;
    let etcd = port_of(first.etcd_url())?;
    assert!(listening(api) && listening(etcd));
    drop(first);
    // Drop kills and reaps both processes before it returns.
    assert!(!listening(api), "kube-apiserver still listens after drop");
    assert!(!listening(etcd), "etcd still listens after drop");
    Ok(())
}

#[test]
fn a_failed_start_quotes_the_log() -> TestResult {
    let mut options = Options::default();
    options.extra_apiserver_args.push("--no-such-flag".into());
    let began = Instant::now();
    let err = ControlPlane::start_with(options)
        .err()
        .ok_or("an API server with an unknown flag started")?;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            TestenvError::Exited {
                process: "kube-apiserver",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("unknown flag: --no-such-flag"), "{text}");
    println!(
        "failed start reported after {:.2} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
