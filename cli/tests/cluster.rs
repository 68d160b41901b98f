//! The fleet commands against a real kube-apiserver (the edgefleet CRDs installed, the admin's
//! kubeconfig) and a real OCI registry: `module push` → `apply -f -` → `get`/`describe`, and
//! `module inspect` pulling the pushed module back.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefleet_testenv::ControlPlane;
use edgefleet_testenv::registry::Registry;
use serde_json::Value;
use support::{Run, cell, edgefleet_with, field, table_rows};

const LIMIT: Duration = Duration::from_secs(60);

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> String {
    let mut command = plane.kubectl();
    command.args(args);
    edgefleet_testenv::run_kubectl(command).unwrap()
}

struct Cluster {
    plane: ControlPlane,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let plane = ControlPlane::start()
            .expect("the test control plane starts (scripts/setup.sh builds it)");
        plane.apply(repo_path("k3s/crds")).unwrap();
        Cluster {
            plane,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `edgefleet args… --kubeconfig <admin>`, `stdin` as input.
    fn cli_in(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let kubeconfig = self.plane.admin_kubeconfig().display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig]);
        edgefleet_with(self.dir.path(), &all, &[], stdin)
    }

    fn cli(&self, args: &[&str]) -> Run {
        self.cli_in(args, None)
    }

    /// Runs `args` until it succeeds (the CRDs become established shortly after they are
    /// applied); fails with the last output after LIMIT.
    fn until_ok(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let started = Instant::now();
        loop {
            let run = self.cli_in(args, stdin);
            if run.code == 0 {
                return run;
            }
            assert!(
                started.elapsed() < LIMIT,
                "`edgefleet {}` after {LIMIT:?}: exit {}\n{}\n{}",
                args.join(" "),
                run.code,
                run.stdout,
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

const CLASS: &str = "\
apiVersion: edgefleet.dev/v1alpha1
kind: DeviceClass
metadata:
  name: thermo
spec:
  module: thermostat-1.0.0
  config: {setpoint_c: 21.0}
  nodeSelector:
    matchLabels: {site: a}
";

#[test]
fn push_apply_get_describe_and_inspect_in_a_cluster() {
    let cluster = Cluster::start();
    let registry = Registry::start().expect("the test registry starts (scripts/setup.sh)");
    let dir = cluster.dir.path();
    std::fs::write(dir.join("registry-ca.pem"), registry.ca_pem()).unwrap();
    let wasm =
        edgefleet_device_modules::handler_wasm(edgefleet_device_modules::Handler::Thermostat)
            .expect("the thermostat module builds");
    std::fs::write(dir.join("thermostat.wasm"), &wasm).unwrap();
    let sha256 = edgefleet_protocol::Sha256Digest::of(&wasm).to_string();

    // Push: the pinned reference in comments, then a HandlerModule naming it.
    let tag = format!("{}/edgefleet/thermostat:1.0.0", registry.host_port());
    let pushed = edgefleet_with(
        dir,
        &[
            "module",
            "push",
            "thermostat.wasm",
            &tag,
            "--registry-ca",
            "registry-ca.pem",
        ],
        &[],
        None,
    )
    .ok();
    assert!(
        pushed.stdout.starts_with(&format!(
            "# Pushed thermostat.wasm ({} bytes, sha256 {sha256}, admitted: guest ABI v1",
            wasm.len()
        )),
        "{}",
        pushed.stdout
    );
    let documents: Vec<Value> = serde_saphyr::from_multiple(&pushed.stdout).unwrap();
    let documents: Vec<&Value> = documents.iter().filter(|d| !d.is_null()).collect();
    assert_eq!(documents.len(), 1, "{}", pushed.stdout);
    let module = documents[0];
    assert_eq!(module["kind"], "HandlerModule");
    assert_eq!(module["metadata"]["name"], "thermostat-1.0.0");
    assert_eq!(module["spec"]["module"], "thermostat");
    assert_eq!(module["spec"]["version"], "1.0.0");
    assert_eq!(module["spec"]["sha256"], sha256.as_str());
    let image = module["spec"]["image"].as_str().unwrap().to_owned();
    let prefix = format!("{}/edgefleet/thermostat@sha256:", registry.host_port());
    assert!(image.starts_with(&prefix), "{image}");
    assert!(
        pushed.stdout.contains(&format!("#   {image}\n")),
        "{}",
        pushed.stdout
    );

    // What push printed applies as it is (server-side apply by edgefleet-cli).
    let applied = cluster.until_ok(&["apply", "-f", "-"], Some(&pushed.stdout));
    assert_eq!(applied.stdout, "handlermodule/thermostat-1.0.0 created\n");
    let object: Value = serde_json::from_str(&kubectl(
        &cluster.plane,
        &[
            "get",
            "handlermodules.edgefleet.dev",
            "thermostat-1.0.0",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    ))
    .unwrap();
    assert_eq!(object["spec"]["image"], image.as_str());
    let managers: Vec<(&str, &str)> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["manager"].as_str().unwrap_or(""),
                f["operation"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(managers, [("edgefleet-cli", "Apply")], "{object:#}");

    // get lists it (no controller runs here: no status yet), with its age.
    let modules = cluster.cli(&["get", "modules"]).ok();
    assert_eq!(
        table_rows(&modules.stdout)[0],
        [
            "NAME", "MODULE", "VERSION", "READY", "REASON", "SIZE", "AGE"
        ],
        "{}",
        modules.stdout
    );
    assert_eq!(
        table_rows(&modules.stdout)[1][..6],
        [
            "thermostat-1.0.0",
            "thermostat",
            "1.0.0",
            "<none>",
            "<none>",
            "<none>"
        ],
        "{}",
        modules.stdout
    );
    let wide = cluster.cli(&["get", "hm", "-o", "wide"]).ok();
    assert_eq!(
        cell(&wide.stdout, "thermostat-1.0.0", "SOURCE"),
        Some(image.clone())
    );
    let json = cluster
        .cli(&["get", "module", "thermostat-1.0.0", "-o", "json"])
        .ok();
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["spec"]["image"], image.as_str());
    assert!(json["metadata"].get("managedFields").is_none(), "{json:#}");

    // A class: created, unchanged, configured.
    std::fs::write(dir.join("class.yaml"), CLASS).unwrap();
    let run = cluster.cli(&["apply", "-f", "class.yaml"]).ok();
    assert_eq!(run.stdout, "deviceclass/thermo created\n");
    let run = cluster.cli(&["apply", "-f", "class.yaml"]).ok();
    assert_eq!(run.stdout, "deviceclass/thermo unchanged\n");
    let run = cluster
        .cli_in(&["apply", "-f", "-"], Some(&CLASS.replace("21.0", "19.5")))
        .ok();
    assert_eq!(run.stdout, "deviceclass/thermo configured\n");
    let classes = cluster.cli(&["get", "classes"]).ok();
    assert_eq!(
        cell(&classes.stdout, "thermo", "MODULE").as_deref(),
        Some("thermostat-1.0.0"),
        "{}",
        classes.stdout
    );

    // The CRD's schema refuses what the folder rules let through; the API server's reason shown.
    let run = cluster
        .cli_in(
            &["apply", "-f", "-"],
            Some(&CLASS.replace(
                "  config: {setpoint_c: 21.0}\n",
                "  limits: {timeBudgetMs: 0}\n",
            )),
        )
        .fails(1);
    assert!(
        run.stderr
            .contains("deviceclass/thermo: the cluster refused it")
            && run.stderr.contains("timeBudgetMs"),
        "{}",
        run.stderr
    );
    // A module version is immutable there too.
    let mut changed = module.clone();
    changed["spec"]["version"] = "1.0.1".into();
    let run = cluster
        .cli_in(&["apply", "-f", "-"], Some(&changed.to_string()))
        .fails(1);
    assert!(run.stderr.contains("immutable"), "{}", run.stderr);

    // describe: spec, no status yet, and the object's Events (one published here as the
    // controller would).
    let uid = object["metadata"]["uid"].as_str().unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ");
    cluster
        .plane
        .apply_yaml(&format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {{name: thermostat-1.0.0.test, namespace: default}}\n\
             eventTime: \"{now}\"\nreportingController: edgefleet.dev/controller\nreportingInstance: test\n\
             action: Resolve\nreason: ImageNotFound\ntype: Warning\nnote: the registry has no such manifest\n\
             regarding: {{apiVersion: edgefleet.dev/v1alpha1, kind: HandlerModule, name: thermostat-1.0.0, uid: {uid}}}\n"
        ))
        .unwrap();
    let text = cluster
        .cli(&["describe", "module", "thermostat-1.0.0"])
        .ok()
        .stdout;
    assert_eq!(field(&text, "Image"), Some(image.clone()), "{text}");
    assert!(
        field(&text, "Created").is_some_and(|c| c.ends_with(" ago)")),
        "{text}"
    );
    assert_eq!(
        field(&text, "Conditions").as_deref(),
        Some("<none>"),
        "{text}"
    );
    assert_eq!(
        field(&text, "Used by classes").as_deref(),
        Some("thermo"),
        "{text}"
    );
    for expected in [
        "Events:\n  TYPE     REASON         AGE",
        "Warning  ImageNotFound",
        "edgefleet.dev/controller  the registry has no such manifest",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let text = cluster.cli(&["describe", "class", "thermo"]).ok().stdout;
    assert!(text.contains("Events:  <none>"), "{text}");

    // inspect pulls it back by digest and finds the same module.
    let inspected = edgefleet_with(
        dir,
        &[
            "module",
            "inspect",
            &image,
            "--registry-ca",
            "registry-ca.pem",
            "-o",
            "json",
        ],
        &[],
        None,
    )
    .ok();
    let inspected: Value = serde_json::from_str(&inspected.stdout).unwrap();
    assert_eq!(inspected["sha256"], sha256.as_str());
    assert_eq!(inspected["size"], wasm.len() as u64);
    assert_eq!(
        inspected["manifest_digest"],
        format!("sha256:{}", image.rsplit_once("@sha256:").unwrap().1)
    );
    assert_eq!(inspected["admitted"], true);
    assert_eq!(inspected["guest_abi"], 1);
    assert_eq!(
        inspected["annotations"]["org.opencontainers.image.version"],
        "1.0.0"
    );
    let table = edgefleet_with(
        dir,
        &[
            "module",
            "inspect",
            &image,
            "--registry-ca",
            "registry-ca.pem",
        ],
        &[],
        None,
    )
    .ok()
    .stdout;
    assert_eq!(field(&table, "SHA-256"), Some(sha256.clone()), "{table}");
    assert_eq!(
        field(&table, "Annotation").as_deref(),
        Some("org.opencontainers.image.title=thermostat"),
        "{table}"
    );
    assert!(table.contains("edgefleet_handle (func)"), "{table}");
    // Without the registry's CA, what to do is said.
    let run = edgefleet_with(dir, &["module", "inspect", &image], &[], None).fails(1);
    assert!(run.stderr.contains("TLS with"), "{}", run.stderr);
    // A tag is not pinned: refused before any request.
    let run = edgefleet_with(dir, &["module", "inspect", &tag], &[], None).fails(1);
    assert!(run.stderr.contains("is not pinned"), "{}", run.stderr);

    // Push and apply in one go: another version, another object.
    let kubeconfig = cluster.plane.admin_kubeconfig().display().to_string();
    let run = edgefleet_with(
        dir,
        &[
            "module",
            "push",
            "thermostat.wasm",
            &format!("{}/edgefleet/thermostat:1.0.1", registry.host_port()),
            "--registry-ca",
            "registry-ca.pem",
            "--apply",
            "--kubeconfig",
            &kubeconfig,
        ],
        &[],
        None,
    )
    .ok();
    assert!(
        run.stdout
            .ends_with("\nhandlermodule/thermostat-1.0.1 created\n"),
        "{}",
        run.stdout
    );
    let modules = cluster.cli(&["get", "modules"]).ok().stdout;
    assert_eq!(
        cell(&modules, "thermostat-1.0.1", "VERSION").as_deref(),
        Some("1.0.1"),
        "{modules}"
    );

    // A context the kubeconfig does not have.
    let run = cluster.cli(&["get", "nodes", "--context", "nope"]).fails(1);
    assert!(
        run.stderr.contains("the kubeconfig (context nope)"),
        "{}",
        run.stderr
    );
}
