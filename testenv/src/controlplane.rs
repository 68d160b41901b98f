//! [`ControlPlane`]: etcd and kube-apiserver on loopback, for one test.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kubeconfig::{self, write_private};
use crate::pki::{self, Pki};
use crate::probe;
use crate::process::Process;
use crate::{Binaries, TestenvError};

/// How many lines of a process's log an error quotes.
const LOG_LINES: usize = 40;
/// Starts tried with fresh ports when one was taken between choosing and binding it.
const PORT_ATTEMPTS: usize = 4;
const POLL: Duration = Duration::from_millis(100);

/// Environment variable: when set (to anything but `0`), a plane's directory (logs, certificates,
/// kubeconfigs, etcd data) is kept after the plane is dropped, and its path printed.
pub const KEEP_ENV: &str = "EDGEFLEET_TESTENV_KEEP";

/// A plane's directory in the temporary directory is `<DIR_PREFIX><pid>-<random>`.
const DIR_PREFIX: &str = "edgefleet-controlplane-";
/// A file in a directory kept with [`KEEP_ENV`]: the sweep leaves it alone.
const KEPT_MARKER: &str = "KEPT";

/// Removes the directories of planes whose test process died without dropping them (SIGKILL, a CI
/// timeout): etcd preallocates 64 MB WAL segments, so each holds about 120 MB. Once per process.
fn sweep_leftovers() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(DIR_PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let owner_alive =
                pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
            if !owner_alive && !path.join(KEPT_MARKER).exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    });
}

/// The user of [`ControlPlane::admin_kubeconfig`], in the group `system:masters`.
pub const ADMIN_USER: &str = "edgefleet-testenv-admin";

/// Settings for [`ControlPlane::start_with`]; `Options::default()` is what [`ControlPlane::start`]
/// uses.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Deadline for the whole start (both processes ready), 60 s by default.
    pub start_timeout: Duration,
    /// Extra kube-apiserver flags (`--feature-gates=…`, `--v=4`), after the harness's own: a flag
    /// given twice takes the last value.
    pub extra_apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            start_timeout: Duration::from_secs(60),
            extra_apiserver_args: Vec::new(),
        }
    }
}

/// A running etcd + kube-apiserver (RBAC on, client certificates from a CA made for this plane)
/// on 127.0.0.1, and the kubeconfigs to reach it. Both processes are killed on drop, and when the
/// test process dies.
///
/// The plane's directory holds `etcd.log`, `kube-apiserver.log`, `pki/`, `kubeconfigs/` and the
/// etcd data (about 120 MB: etcd preallocates its WAL); it is removed on drop unless [`KEEP_ENV`]
/// is set, and by the next plane's start when the test process died without dropping it.
pub struct ControlPlane {
    apiserver: Process,
    etcd: Process,
    binaries: Binaries,
    pki: Pki,
    server_url: String,
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    kubeconfigs: AtomicUsize,
    started_in: Duration,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("etcd_url", &self.etcd_url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> TestenvError {
    move |source| TestenvError::Io { what, source }
}

fn create_dir(path: &Path) -> Result<(), TestenvError> {
    std::fs::create_dir_all(path).map_err(io_error(format!("create {}", path.display())))
}

fn write_file(path: &Path, contents: &str) -> Result<(), TestenvError> {
    std::fs::write(path, contents).map_err(io_error(format!("write {}", path.display())))
}

/// Ports this process has handed to a plane, never handed out again (two planes of one test
/// binary cannot race for a port; other processes can, and the start is retried then).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn free_ports<const N: usize>() -> Result<[u16; N], TestenvError> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..64 {
        // All N bound at once, so they differ from each other.
        let listeners = (0..N)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error("bind a free port on 127.0.0.1".into()))?;
        let mut ports = [0u16; N];
        for (slot, listener) in ports.iter_mut().zip(&listeners) {
            *slot = listener
                .local_addr()
                .map_err(io_error("read a bound port".into()))?
                .port();
        }
        if ports.iter().all(|p| !handed_out.contains(p)) {
            handed_out.extend(ports);
            return Ok(ports);
        }
    }
    Err(TestenvError::NoFreePorts)
}

/// Why one attempt to start failed.
enum Failure {
    /// A port was taken by someone else before the process bound it: try again with new ones.
    PortTaken(TestenvError),
    Fatal(TestenvError),
}

/// Polls `probe` until it succeeds, the process exits or the deadline passes.
fn wait_ready(
    process: &mut Process,
    deadline: Instant,
    started: Instant,
    mut probe: impl FnMut() -> Result<(), String>,
) -> Result<(), Failure> {
    loop {
        if let Some(status) = process.exited() {
            let log_tail = process.log_tail(LOG_LINES);
            let port_taken = log_tail.contains("address already in use");
            let error = TestenvError::Exited {
                process: process.name(),
                status: status.to_string(),
                log: process.log_path().to_path_buf(),
                log_tail,
            };
            return Err(if port_taken {
                Failure::PortTaken(error)
            } else {
                Failure::Fatal(error)
            });
        }
        let last = match probe() {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(Failure::Fatal(TestenvError::NotReady {
                process: process.name(),
                waited: started.elapsed(),
                last_probe: last,
                log: process.log_path().to_path_buf(),
                log_tail: process.log_tail(LOG_LINES),
            }));
        }
        std::thread::sleep(POLL);
    }
}

/// The CA, serving certificate and service-account key in `<root>/pki`; the admin identity and
/// the readiness probe's TLS settings.
fn write_pki(root: &Path) -> Result<(Pki, pki::Identity, Arc<rustls::ClientConfig>), TestenvError> {
    let pki_dir = root.join("pki");
    for d in [&pki_dir, &root.join("apiserver-certs")] {
        create_dir(d)?;
    }
    let pki = Pki::new()?;
    let serving = pki.server(&["127.0.0.1", "localhost"])?;
    let admin = pki.client(ADMIN_USER, &["system:masters"])?;
    let (sa_private, sa_public) = pki::service_account_key()?;
    write_file(&pki_dir.join("ca.crt"), &pki.ca_pem())?;
    write_file(&pki_dir.join("apiserver.crt"), &serving.cert_pem)?;
    write_private(&pki_dir.join("apiserver.key"), &serving.key_pem)?;
    write_private(&pki_dir.join("service-account.key"), &sa_private)?;
    write_file(&pki_dir.join("service-account.pub"), &sa_public)?;
    let tls = probe::tls_config(pki.ca_der(), &admin.cert_der, &admin.key_der)?;
    Ok((pki, admin, tls))
}

static PLANES: AtomicUsize = AtomicUsize::new(0);

impl ControlPlane {
    /// Starts a control plane with the default [`Options`] and waits until the API server is
    /// ready (`/readyz`), at most 60 s.
    pub fn start() -> Result<ControlPlane, TestenvError> {
        Self::start_with(Options::default())
    }

    /// Starts a control plane with `options`.
    pub fn start_with(options: Options) -> Result<ControlPlane, TestenvError> {
        let began = Instant::now();
        let deadline = began + options.start_timeout;
        let binaries = Binaries::locate()?;

        sweep_leftovers();
        let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| v != "0");
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(io_error("create the control plane's directory".into()))?;
        dir.disable_cleanup(keep);
        let root = dir.path().to_path_buf();
        if keep {
            write_file(
                &root.join(KEPT_MARKER),
                "kept because EDGEFLEET_TESTENV_KEEP was set\n",
            )?;
        }
        let kubeconfigs = root.join("kubeconfigs");
        create_dir(&kubeconfigs)?;
        let (pki, admin, tls) = write_pki(&root)?;

        let name = format!(
            "testenv-{}-{}",
            std::process::id(),
            PLANES.fetch_add(1, Ordering::Relaxed)
        );
        let mut attempt = 0;
        let (etcd, apiserver, api_port, etcd_port) = loop {
            attempt += 1;
            let [etcd_port, peer_port, api_port] = free_ports::<3>()?;
            match Self::launch(
                &binaries, &root, &name, etcd_port, peer_port, api_port, &options, &tls, began,
                deadline,
            ) {
                Ok((etcd, apiserver)) => break (etcd, apiserver, api_port, etcd_port),
                Err(Failure::PortTaken(_)) if attempt < PORT_ATTEMPTS => continue,
                Err(Failure::PortTaken(error) | Failure::Fatal(error)) => return Err(error),
            }
        };
        let server_url = format!("https://127.0.0.1:{api_port}");

        let admin_kubeconfig = kubeconfigs.join("admin.yaml");
        write_private(
            &admin_kubeconfig,
            &kubeconfig::render(&server_url, &pki.ca_pem(), ADMIN_USER, &admin),
        )?;
        Ok(ControlPlane {
            apiserver,
            etcd,
            binaries,
            pki,
            server_url,
            etcd_url: format!("http://127.0.0.1:{etcd_port}"),
            admin_kubeconfig,
            kubeconfigs: AtomicUsize::new(0),
            started_in: began.elapsed(),
            dir,
        })
    }

    /// One attempt: etcd up and ours, then kube-apiserver ready.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        binaries: &Binaries,
        root: &Path,
        name: &str,
        etcd_port: u16,
        peer_port: u16,
        api_port: u16,
        options: &Options,
        tls: &Arc<rustls::ClientConfig>,
        began: Instant,
        deadline: Instant,
    ) -> Result<(Process, Process), Failure> {
        let data = root.join("etcd");
        // A failed attempt may have left a member with other ports in the data dir.
        let _ = std::fs::remove_dir_all(&data);
        let client = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={name}={peer}"),
            format!("--initial-cluster-token={name}"),
            "--initial-cluster-state=new".into(),
            // A test's data need not survive a crash of the machine.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Process::spawn("etcd", &binaries.etcd, &etcd_args, root.join("etcd.log"))
            .map_err(Failure::Fatal)?;
        wait_ready(&mut etcd, deadline, began, || {
            probe::etcd_member(etcd_port, name)
        })?;

        let pki = root.join("pki");
        let file = |name: &str| pki.join(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers={client}"),
            "--bind-address=127.0.0.1".into(),
            // Explicit: without it the server looks for a default route, which a sandbox may lack.
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--client-ca-file={}", file("ca.crt")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{api_port}"),
            format!("--service-account-key-file={}", file("service-account.pub")),
            format!(
                "--service-account-signing-key-file={}",
                file("service-account.key")
            ),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // No controller-manager runs: nothing would create the token secrets it waits for.
            "--disable-admission-plugins=ServiceAccount".into(),
            // Nothing routes to 127.0.0.1 from a Pod; do not keep the `kubernetes` endpoints.
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        args.extend(options.extra_apiserver_args.iter().cloned());
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            &args,
            root.join("kube-apiserver.log"),
        )
        .map_err(Failure::Fatal)?;
        wait_ready(&mut apiserver, deadline, began, || {
            probe::apiserver_ready(api_port, tls)
        })?;
        Ok((etcd, apiserver))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// etcd's client URL, `http://127.0.0.1:<port>` (no authentication: loopback only).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA (PEM) that signed the API server's serving certificate and every client certificate.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The service-account token issuer (`--service-account-issuer`): the server's URL.
    pub fn service_account_issuer(&self) -> &str {
        &self.server_url
    }

    /// The service-account token signing key (`--service-account-signing-key-file`; PKCS#8 PEM,
    /// ECDSA P-256, so tokens are ES256): tests sign tokens with it that TokenRequest would never
    /// issue, such as one that has expired.
    pub fn service_account_signing_key(&self) -> PathBuf {
        self.dir.path().join("pki").join("service-account.key")
    }

    /// A kubeconfig for a user in the group `system:masters` (everything allowed, RBAC bypassed).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig with a new client certificate: CN = `user`, one O per group (Kubernetes adds
    /// `system:authenticated` itself).
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, TestenvError> {
        let bad = |s: &str| s.is_empty() || s.chars().any(char::is_control);
        if bad(user) {
            return Err(TestenvError::InvalidName(user.to_owned()));
        }
        if let Some(group) = groups.iter().find(|g| bad(g)) {
            return Err(TestenvError::InvalidName((*group).to_owned()));
        }
        let identity = self.pki.client(user, groups)?;
        let n = self.kubeconfigs.fetch_add(1, Ordering::Relaxed);
        let stem: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(60)
            .collect();
        let path = self
            .dir
            .path()
            .join("kubeconfigs")
            .join(format!("{n:03}-{stem}.yaml"));
        write_private(
            &path,
            &kubeconfig::render(&self.server_url, &self.pki.ca_pem(), user, &identity),
        )?;
        Ok(path)
    }

    /// A kubeconfig with the identity of the ServiceAccount `namespace/name` as the API server
    /// would authenticate its token: user `system:serviceaccount:<namespace>:<name>`, groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<namespace>`, `system:authenticated`. A
    /// controller under test run with it has exactly the RBAC its ServiceAccount is granted. (A
    /// client certificate: the ServiceAccount object need not exist.)
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, TestenvError> {
        let bad = |s: &str| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        for part in [namespace, name] {
            if bad(part) {
                return Err(TestenvError::InvalidName(part.to_owned()));
            }
        }
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let namespace_group = format!("system:serviceaccounts:{namespace}");
        self.kubeconfig_for(
            &user,
            &[
                "system:serviceaccounts",
                &namespace_group,
                "system:authenticated",
            ],
        )
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.kubectl_as(&self.admin_kubeconfig)
    }

    /// `kubectl` with `kubeconfig` (one from [`Self::kubeconfig_for`], say), and a discovery
    /// cache of this plane's own (a reused port must never meet a stale cache).
    pub fn kubectl_as(&self, kubeconfig: &Path) -> Command {
        let mut command = Command::new(&self.binaries.kubectl);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .env_remove("KUBECONFIG");
        command
    }

    /// `kubectl apply --server-side -f <path>` as admin (a file, or a directory's manifests);
    /// returns kubectl's output.
    pub fn apply(&self, path: impl AsRef<Path>) -> Result<String, TestenvError> {
        let mut command = self.kubectl();
        command
            .args(["apply", "--server-side", "-f"])
            .arg(path.as_ref());
        run_kubectl(command)
    }

    /// Applies manifests given as text (YAML or JSON, several documents allowed).
    pub fn apply_yaml(&self, manifests: &str) -> Result<String, TestenvError> {
        let n = self.kubeconfigs.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("manifest-{n:03}.yaml"));
        write_file(&path, manifests)?;
        self.apply(&path)
    }

    /// The plane's directory (logs, certificates, kubeconfigs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long [`Self::start`] took, from the call to a ready API server.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.apiserver.stop();
        self.etcd.stop();
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v != "0") {
            eprintln!("edgefleet-testenv: kept {}", self.dir.path().display());
        }
    }
}

/// Runs a kubectl command (from [`ControlPlane::kubectl`]): its stdout when it succeeds, else
/// [`TestenvError::Kubectl`] with its stderr.
pub fn run_kubectl(mut command: Command) -> Result<String, TestenvError> {
    let rendered = render_command(&command);
    let output = command.output().map_err(|source| TestenvError::Spawn {
        program: PathBuf::from(command.get_program()),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestenvError::Kubectl {
            command: rendered,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `kubectl <args>` without the harness's `--kubeconfig`/`--cache-dir` noise.
fn render_command(command: &Command) -> String {
    let mut words = vec!["kubectl".to_owned()];
    let mut args = command.get_args().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--kubeconfig" || arg == "--cache-dir" {
            args.next();
        } else {
            words.push(arg);
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port someone else holds makes the attempt retryable, for either process (the messages
    /// of etcd and kube-apiserver are what `wait_ready` looks for). Needs the real binaries.
    #[test]
    fn a_taken_port_is_retryable() -> Result<(), Box<dyn std::error::Error>> {
        let binaries = Binaries::locate()?;
        let dir = tempfile::tempdir()?;
        let (_pki, _admin, tls) = write_pki(dir.path())?;
        let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let taken = holder.local_addr()?.port();
        let options = Options::default();
        let began = Instant::now();
        let deadline = began + options.start_timeout;
        let [a, b, c] = free_ports::<3>()?;
        for (what, ports) in [
            ("etcd client", [taken, a, b]),
            ("etcd peer", [a, taken, b]),
            ("kube-apiserver", [b, c, taken]),
        ] {
            let [etcd, peer, api] = ports;
            match ControlPlane::launch(
                &binaries,
                dir.path(),
                "taken-port",
                etcd,
                peer,
                api,
                &options,
                &tls,
                began,
                deadline,
            ) {
                Err(Failure::PortTaken(e)) => {
                    let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                    println!("{what}: retryable: {first}");
                }
                Err(Failure::Fatal(e)) => return Err(format!("{what}: fatal: {e}").into()),
                Ok(_) => return Err(format!("{what}: started on a taken port").into()),
            }
        }
        Ok(())
    }
}
