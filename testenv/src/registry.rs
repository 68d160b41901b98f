//! A real OCI registry per test: the CNCF distribution server (Debian's `docker-registry` package,
//! 2.8) started from a generated configuration in a temporary directory, on a free loopback port,
//! serving HTTPS with a certificate from a CA made at test time.
//!
//! ```text
//!  Registry::start()
//!   └─ temp dir: config.yml, registry.log, ca.crt, server.crt, server.key (0600), storage/
//!      └─ docker-registry serve config.yml   (https://127.0.0.1:<port>, ready when GET /v2/
//!                                             answers 200 over TLS checked against the test CA)
//!  drop    SIGKILL, wait, then the directory is removed
//! ```
//!
//! Generated configuration (`{dir}` is the temporary directory):
//!
//! ```text
//! version: 0.1
//! log: {level: info, formatter: text}
//! storage:
//!   filesystem: {rootdirectory: {dir}/storage}
//!   delete: {enabled: true}
//!   maintenance: {uploadpurging: {enabled: false}}
//! http:
//!   addr: 127.0.0.1:{port}
//!   secret: edgefleet-test-registry
//!   tls: {certificate: {dir}/server.crt, key: {dir}/server.key}
//! health: {storagedriver: {enabled: false}}
//! ```
//!
//! No blob descriptor cache is configured, so the registry reads every blob from its file when it
//! serves it: a test that rewrites a blob file under [`Registry::storage_dir`] (see
//! [`Registry::blob_path`]) gets the rewritten bytes on the next pull, without a restart, under the
//! digest it was pushed with. That is how clients are checked to re-hash what they download. (The
//! distribution server reads `REGISTRY_*` environment variables as overrides of the file: the test
//! process should set none.)
//!
//! **Certificates**: the server certificate names `127.0.0.1` (an IP SAN: clients dial the address
//! in [`Registry::host_port`]) and `localhost`, signed by a fresh ECDSA P-256 CA ([`Registry::ca_pem`],
//! one per registry, made with rcgen and ring by the crate's test PKI). A client that does not trust
//! that CA fails the TLS handshake.
//!
//! **Lifetime**: `Drop` kills the registry (SIGKILL) and waits for it, then removes the directory.
//! A test process that dies outright (SIGKILL, a CI timeout) takes it along: it is spawned like the
//! control plane's processes, with `PR_SET_PDEATHSIG(SIGKILL)` from the crate's spawner thread, which
//! lives as long as the process (so a registry may outlive the thread that started it).
//!
//! **Authentication**: none (anonymous push and pull). Distribution's htpasswd auth needs bcrypt
//! hashes, which nothing in the workspace makes.
//!
//! [`Registry::start`] blocks (typically 50–200 ms); every wait is bounded. Call it from async code
//! directly in tests, or via `spawn_blocking`.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

use crate::TestenvError;
use crate::pki::Pki;
use crate::process::Process;

/// Environment variable naming the registry executable, when it is not `docker-registry` in
/// `/usr/bin` or on `PATH`.
pub const REGISTRY_ENV: &str = "EDGEFLEET_DOCKER_REGISTRY";

/// How long the registry may take to answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Fresh ports tried when another process takes the one picked (the window between releasing the
/// probe socket and the registry binding it).
const FRESH_PORT_ATTEMPTS: usize = 5;

/// Lines of the registry log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// The loopback address registries listen on.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Why a registry could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No registry executable.
    #[error(
        "docker-registry not found (looked for {looked}): install the Debian package docker-registry (scripts/setup.sh does), or set {REGISTRY_ENV} to its path"
    )]
    NotFound {
        /// Where it was looked for.
        looked: String,
    },
    /// The temporary directory or a file in it could not be made.
    #[error("cannot prepare registry file {path}: {source} (is the temp dir writable? see TMPDIR)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path cannot be written into the YAML configuration as a plain scalar.
    #[error(
        "path {0:?} is not UTF-8 or has characters YAML would misread: set TMPDIR to a plain directory"
    )]
    UnusablePath(PathBuf),
    /// Certificates, TLS settings or the process could not be made (see the inner error).
    #[error(transparent)]
    Setup(#[from] TestenvError),
    /// The registry exited while starting (a configuration or certificate problem; see the log).
    #[error("docker-registry exited during startup ({status}); log {log}:\n{tail}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// Every port tried was taken by another process.
    #[error(
        "no free port: tried {attempts} port(s), each taken by another process; log {log}:\n{tail}"
    )]
    PortInUse {
        /// How many ports were tried.
        attempts: usize,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The registry kept running but did not answer `GET /v2/` in time (it was killed).
    #[error(
        "docker-registry did not answer GET https://127.0.0.1:{port}/v2/ within {timeout:?} (killed it; an overloaded machine?); last probe: {last_probe}; log {log}:\n{tail}"
    )]
    NotReady {
        /// The port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// What the last probe saw.
        last_probe: String,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
}

/// A running registry. Dropping it kills the process and removes its directory.
pub struct Registry {
    port: u16,
    ca_pem: String,
    storage: PathBuf,
    log_path: PathBuf,
    process: Process,
    // Last field: dropped (deleted) after the process using it has been killed.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers `GET /v2/`.
    pub fn start() -> Result<Self, RegistryError> {
        let program = find_registry()?;
        let dir = tempfile::Builder::new()
            .prefix("edgefleet-registry-")
            .tempdir()
            .map_err(io_error(&std::env::temp_dir()))?;
        let text = yaml_path(dir.path())?;
        let pki = Pki::new()?;
        let server = pki.server(&["127.0.0.1", "localhost"])?;
        let ca_pem = pki.ca_pem();
        write(&dir.path().join("ca.crt"), &ca_pem, 0o644)?;
        write(&dir.path().join("server.crt"), &server.cert_pem, 0o644)?;
        write(&dir.path().join("server.key"), &server.key_pem, 0o600)?;
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).map_err(io_error(&storage))?;
        let probe_tls = probe_config(pki.ca_der())?;
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let args = vec!["serve".to_owned(), format!("{text}/config.yml")];

        for attempt in 1..=FRESH_PORT_ATTEMPTS {
            let port = free_port().map_err(io_error(Path::new("127.0.0.1:0")))?;
            write(&config_path, &config(&text, port), 0o644)?;
            let process = Process::spawn("docker-registry", &program, &args, log_path.clone())?;
            match until_ready(process, port, &probe_tls) {
                Ok(process) => {
                    return Ok(Registry {
                        port,
                        ca_pem,
                        storage,
                        log_path,
                        process,
                        dir,
                    });
                }
                Err(Start::PortInUse) if attempt < FRESH_PORT_ATTEMPTS => continue,
                Err(Start::PortInUse) => {
                    return Err(RegistryError::PortInUse {
                        attempts: attempt,
                        tail: crate::process::log_tail(&log_path, LOG_TAIL_LINES),
                        log: log_path,
                    });
                }
                Err(Start::Failed(e)) => return Err(e),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// `127.0.0.1:PORT`: what an OCI reference to this registry starts with
    /// (`127.0.0.1:PORT/repo:tag`).
    pub fn host_port(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the registry's server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The storage root (`storage.filesystem.rootdirectory`); blobs live under
    /// `docker/registry/v2/blobs/sha256/<first two hex digits>/<hex>/data`.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The file holding the blob `digest` (`sha256:<hex>`), whether or not it exists. `None` for a
    /// digest that is not `sha256:` followed by 64 lowercase hex digits.
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Some(
            self.storage
                .join("docker/registry/v2/blobs/sha256")
                .join(&hex[..2])
                .join(hex)
                .join("data"),
        )
    }

    /// The registry's log file (its stdout and stderr; access log included).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the registry's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(LOG_TAIL_LINES)
    }
}

/// Why one start attempt failed.
enum Start {
    /// The port was taken between picking it and the registry binding it: try another.
    PortInUse,
    Failed(RegistryError),
}

/// Waits until the registry in `process` answers `GET /v2/` on `port`; kills it on failure.
fn until_ready(
    mut process: Process,
    port: u16,
    probe_tls: &Arc<rustls::ClientConfig>,
) -> Result<Process, Start> {
    let deadline = Instant::now() + START_TIMEOUT;
    let address = SocketAddr::from((HOST, port));
    loop {
        if let Some(status) = process.exited() {
            let log = process.log_path().to_owned();
            let tail = crate::process::log_tail(&log, LOG_TAIL_LINES);
            if tail.contains("address already in use") {
                return Err(Start::PortInUse);
            }
            return Err(Start::Failed(RegistryError::Exited { status, log, tail }));
        }
        // Answered over TLS verified against this registry's own CA: another process that took
        // the port in the meantime cannot pass.
        let last_probe = match probe(address, probe_tls) {
            Ok(200) => return Ok(process),
            Ok(status) => format!("HTTP status {status}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            process.stop();
            return Err(Start::Failed(RegistryError::NotReady {
                port,
                timeout: START_TIMEOUT,
                last_probe,
                log: process.log_path().to_owned(),
                tail: process.log_tail(LOG_TAIL_LINES),
            }));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTPS `GET /v2/`: the status code, or what went wrong.
fn probe(address: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let timeout = Duration::from_millis(500);
    let socket =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("connect: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    let name = ServerName::IpAddress(address.ip().into());
    let connection =
        rustls::ClientConnection::new(tls.clone(), name).map_err(|e| format!("TLS: {e}"))?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))
}

/// A rustls client trusting only `ca_der`, with ring (installs no process default).
fn probe_config(ca_der: &[u8]) -> Result<Arc<rustls::ClientConfig>, TestenvError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The configuration for a registry in `dir` (its YAML-safe text) listening on `port`.
fn config(dir: &str, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {dir}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {HOST}:{port}
  secret: edgefleet-test-registry
  tls:
    certificate: {dir}/server.crt
    key: {dir}/server.key
health:
  storagedriver:
    enabled: false
"
    )
}

/// `dir` as a plain YAML scalar, or an error if it would need quoting.
fn yaml_path(dir: &Path) -> Result<String, RegistryError> {
    let text = dir
        .to_str()
        .ok_or_else(|| RegistryError::UnusablePath(dir.to_owned()))?;
    let plain = text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'));
    if plain {
        Ok(text.to_owned())
    } else {
        Err(RegistryError::UnusablePath(dir.to_owned()))
    }
}

fn find_registry() -> Result<PathBuf, RegistryError> {
    if let Some(path) = std::env::var_os(REGISTRY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RegistryError::NotFound {
                looked: format!("{REGISTRY_ENV}={}", path.display()),
            })
        };
    }
    let mut candidates = vec![PathBuf::from("/usr/bin/docker-registry")];
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("docker-registry")));
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .ok_or_else(|| RegistryError::NotFound {
            looked: "/usr/bin/docker-registry and docker-registry on PATH".to_owned(),
        })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), RegistryError> {
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(io_error(path))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_over_tls_only_to_its_ca_and_dies_on_drop()
    -> Result<(), Box<dyn std::error::Error>> {
        let registry = Registry::start()?;
        let address = SocketAddr::from((HOST, registry.port()));
        assert_eq!(
            registry.host_port(),
            format!("127.0.0.1:{}", registry.port())
        );
        assert!(registry.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(registry.storage_dir().is_dir());

        // A client trusting another CA is refused in the handshake (same CA name, other key: the
        // signature does not verify).
        let other = Pki::new()?;
        let refused = probe(address, &probe_config(other.ca_der())?);
        assert!(
            matches!(&refused, Err(e) if e.contains("invalid peer certificate")),
            "{refused:?}"
        );

        let dir = registry.dir.path().to_owned();
        drop(registry);
        assert!(!dir.exists(), "the directory outlived the registry");
        assert!(
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err(),
            "the registry still listens after drop"
        );
        Ok(())
    }

    #[test]
    fn blob_paths() -> Result<(), Box<dyn std::error::Error>> {
        let registry = Registry::start()?;
        let hex = "ab".repeat(32);
        let path = registry
            .blob_path(&format!("sha256:{hex}"))
            .ok_or("valid digest refused")?;
        assert_eq!(
            path,
            registry
                .storage_dir()
                .join(format!("docker/registry/v2/blobs/sha256/ab/{hex}/data"))
        );
        assert_eq!(registry.blob_path("sha256:abc"), None);
        assert_eq!(registry.blob_path(&format!("sha512:{hex}")), None);
        assert_eq!(
            registry.blob_path(&format!("sha256:{}", "AB".repeat(32))),
            None
        );
        Ok(())
    }

    #[test]
    fn unusable_paths_are_refused() {
        assert!(yaml_path(Path::new("/tmp/edgefleet-registry-Ab_1.x")).is_ok());
        assert!(yaml_path(Path::new("/tmp/a b")).is_err());
        assert!(yaml_path(Path::new("/tmp/a:b")).is_err());
        assert!(yaml_path(Path::new("relative")).is_err());
    }
}
