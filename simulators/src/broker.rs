//! A real mosquitto broker per test: started from a generated configuration in a temporary
//! directory, on a free loopback port, optionally with mutual TLS from a test-time [`Authority`].
//!
//! ```text
//!  Broker::plain() / Broker::mutual_tls() / Broker::with_options(..)
//!   └─ temp dir: mosquitto.conf, mosquitto.log, mosquitto.db, acl, server.crt/.key/-ca.crt
//!      └─ mosquitto -c mosquitto.conf   (listener 127.0.0.1:<port>, ready when it logs "running"
//!                                        and the port accepts a connection)
//!  stop()  SIGTERM, wait: mosquitto writes mosquitto.db (persistent sessions, queued messages)
//!  start() the same configuration on the same port, loading mosquitto.db
//!  drop    SIGKILL, then the directory is removed
//! ```
//!
//! Generated configuration (`{dir}` is the temporary directory; bracketed parts depend on the mode):
//!
//! ```text
//! user root
//! set_tcp_nodelay true
//! max_packet_size 4194304
//! max_queued_messages 100000
//! max_inflight_messages 0                   (in order: see brokers/device/mosquitto.conf)
//! persistence true
//! persistence_location {dir}/
//! persistence_file mosquitto.db
//! log_dest stderr
//! log_timestamp_format %Y-%m-%dT%H:%M:%S
//! connection_messages true
//! allow_anonymous true                      [plain] | false [mutual TLS]
//! [acl_file {dir}/acl]                      (when an ACL is given)
//! listener {port} 127.0.0.1
//! [cafile {dir}/server-ca.crt               (mutual TLS only; the files come from the authority,
//!                                            or are copies of BrokerOptions::mutual_tls_files')
//!  certfile {dir}/server.crt
//!  keyfile {dir}/server.key
//!  require_certificate true
//!  use_identity_as_username true
//!  tls_version tlsv1.2]
//! ```
//!
//! **Running as root** (CI runs the tests as root on Debian 12): mosquitto 2.x started as root
//! drops its privileges to the `mosquitto` user after opening its listeners and log. That user cannot
//! write the root-owned, mode 0700 temporary directory, so it would serve normally but fail to save
//! `mosquitto.db` on SIGTERM (only a log line: "Error saving in-memory database ... Permission
//! denied") and persistent sessions would silently not survive a restart. The configuration
//! therefore says `user root`, which tells mosquitto not to switch users (it logs "Warning: Mosquitto
//! should not be run as root/administrator", which is expected). For a non-root user the option has
//! no effect: mosquitto only switches users when started as root. The alternative, handing the
//! directory to the `mosquitto` user, would depend on that user existing and on the path to the
//! directory being traversable by it.
//!
//! **Latency**: `set_tcp_nodelay true` (mosquitto ≥ 2.0) on the broker and
//! [`network_options`] on clients. Measured with the test "device publishes QoS 1, node receives it
//! and publishes QoS 1": 0.4 ms per step with both; 42–46 ms with Nagle's algorithm on either side
//! (small writes wait for delayed ACKs), 87 ms with both off. rumqttc keeps TCP options in
//! `NetworkOptions`, which live on the `EventLoop`, not in `MqttOptions`: build clients with
//! [`client`], which applies them.
//!
//! **Leftovers**: a test process killed outright (SIGKILL, a CI timeout) leaves its brokers and
//! their directories behind; `Drop` covers panics and normal ends. `PR_SET_PDEATHSIG` is not used on
//! purpose: it ties the child to the *thread* that spawned it, and tokio runs blocking calls on pool
//! threads that exit when idle, which would kill a healthy broker in the middle of a test.
//!
//! **ACLs**: mosquitto 2.0.11's `acl_file` does not check SUBSCRIBE (any filter is granted); it
//! checks every delivery (read) and every publish (write, a denied publish is still acknowledged and
//! then dropped). Tests of fencing therefore look at what arrives, not at SUBACK codes.
//!
//! **Shipped configurations** ([`BrokerOptions::shipped`]): the device and cloud broker files under
//! `brokers/` in the repository, compiled in. The ACL file is used as it is (the device ACL with its
//! `@NODE_NAME@` placeholder rendered); the configuration is used line by line, except that
//! `listener`, `acl_file`, `persistence_location`, `cafile`, `certfile` and `keyfile` are pointed at
//! the loopback port and the temporary directory, and `user root` comes first. So the packet cap,
//! the session and queue limits and the access rules under test are exactly the shipped ones.
//!
//! All methods block (start: tens of milliseconds; stop: until mosquitto has exited); every wait
//! is bounded. From async code they can be called directly in tests, or via `spawn_blocking`.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use edgefleet_protocol::NodeId;
use rumqttc::{AsyncClient, EventLoop, MqttOptions, NetworkOptions, Transport};
use rustix::process::{Pid, Signal, kill_process};

use crate::pki::{self, Authority, Identity, PkiError, TlsFiles};

/// Environment variable naming the mosquitto executable, when it is not `mosquitto` on `PATH`,
/// in `/usr/sbin` or in `/usr/local/sbin`.
pub const MOSQUITTO_ENV: &str = "EDGEFLEET_MOSQUITTO";

/// Largest packet the broker accepts (`max_packet_size`), in bytes: 16 times the uplink cap, so that
/// the clients' own caps (`edgefleet_protocol::wire`) are what tests exercise, not the broker's.
pub const BROKER_MAX_PACKET_BYTES: usize = 16 * edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES;

/// Messages mosquitto queues per offline persistent session (`max_queued_messages`; its default is
/// 1000). Tests keep agents offline while devices publish; a silent drop at 1000 would look like a
/// bug of the agent.
const MAX_QUEUED_MESSAGES: u32 = 100_000;

/// The loopback address brokers listen on.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long mosquitto may take to start listening, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(5);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Fresh ports tried when another process takes the one picked (the window between releasing the
/// probe socket and mosquitto binding it).
const FRESH_PORT_ATTEMPTS: usize = 5;

/// How long [`Broker::start`] keeps retrying its fixed port while something else holds it.
const RESTART_PORT_PATIENCE: Duration = Duration::from_secs(1);

/// Lines of the broker log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// Why a broker could not be started, stopped or connected to.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No mosquitto executable.
    #[error(
        "mosquitto not found (looked for {looked}): run scripts/setup.sh, or set {MOSQUITTO_ENV} to its path"
    )]
    NotFound {
        /// Where it was looked for.
        looked: String,
    },
    /// The temporary directory or a file in it could not be made.
    #[error("cannot prepare broker file {path}: {source} (is the temp dir writable? see TMPDIR)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path cannot be written into mosquitto's line-based configuration.
    #[error("path {0:?} contains a newline or is not UTF-8: set TMPDIR to a plain directory")]
    UnusablePath(PathBuf),
    /// mosquitto could not be executed.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The executable.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// mosquitto exited while starting (a configuration or certificate problem; see the log).
    #[error("mosquitto exited during startup ({status}); log {log}:\n{tail}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The port stayed taken by another process.
    #[error(
        "port {port} is in use by another process (tried {attempts} time(s)); log {log}:\n{tail}"
    )]
    PortInUse {
        /// The last port tried.
        port: u16,
        /// How many times.
        attempts: usize,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// mosquitto kept running but did not accept connections in time (it was killed).
    #[error(
        "mosquitto did not accept connections on 127.0.0.1:{port} within {timeout:?} (killed it; an overloaded machine?); log {log}:\n{tail}"
    )]
    NotReady {
        /// The port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// mosquitto did not exit after SIGTERM in time; it was killed, so its persistence file may be
    /// stale.
    #[error(
        "mosquitto did not exit within {timeout:?} of SIGTERM (killed it; persistence not written); log {log}:\n{tail}"
    )]
    StopTimeout {
        /// How long it was given.
        timeout: Duration,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// Signalling or waiting for the mosquitto process failed.
    #[error("cannot {action} mosquitto (pid {pid}): {source}")]
    Process {
        /// What was attempted.
        action: &'static str,
        /// Its process id.
        pid: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificates for the broker or a client could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Client options were asked of a broker whose TLS comes from files, not from an authority.
    #[error(
        "this broker's TLS comes from files (BrokerOptions::mutual_tls_files): build clients with TlsFiles::client_config and Broker::host/port"
    )]
    NoAuthority,
    /// A client identity was given for a broker without TLS.
    #[error("this broker is plain TCP: client certificates need a broker made with mutual_tls")]
    NotTls,
}

// The shipped files (`brokers/`), compiled in: tests run what is in the tree, and a change to a
// file rebuilds this crate.
const DEVICE_CONF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../brokers/device/mosquitto.conf"
));
const DEVICE_ACL: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../brokers/device/acl"
));
const CLOUD_CONF: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../brokers/cloud/mosquitto.conf"
));
const CLOUD_ACL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../brokers/cloud/acl"));

/// Where the shipped device ACL names the node's agent; a deployment renders it the same way.
const NODE_NAME_PLACEHOLDER: &str = "@NODE_NAME@";

/// A broker configuration shipped in `brokers/` (see the module docs and `brokers/README.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shipped {
    /// The device broker of one edge node, whose agent's certificate names `node`.
    Device {
        /// The node name, i.e. the common name of the agent's certificate.
        node: NodeId,
    },
    /// The cloud broker; the controller's certificate names `edgefleet-controller`.
    Cloud,
}

impl Shipped {
    /// The shipped mosquitto.conf, as in the repository.
    fn config(&self) -> &'static str {
        match self {
            Shipped::Device { .. } => DEVICE_CONF,
            Shipped::Cloud => CLOUD_CONF,
        }
    }

    /// The shipped ACL file, the device one rendered for its node.
    fn acl(&self) -> String {
        match self {
            Shipped::Device { node } => DEVICE_ACL.replace(NODE_NAME_PLACEHOLDER, node.as_str()),
            Shipped::Cloud => CLOUD_ACL.to_owned(),
        }
    }

    /// The shipped configuration's `max_packet_size` in bytes (`None` if it sets none).
    pub fn max_packet_bytes(&self) -> Option<usize> {
        self.config().lines().find_map(|line| {
            line.strip_prefix("max_packet_size ")
                .and_then(|value| value.trim().parse().ok())
        })
    }
}

/// What kind of broker to start.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    tls: Option<Arc<Authority>>,
    tls_files: Option<TlsFiles>,
    acl: Option<String>,
    shipped: Option<Shipped>,
}

impl BrokerOptions {
    /// Plain TCP, anonymous clients allowed.
    pub fn plain() -> Self {
        Self::default()
    }

    /// TLS with client certificates from `authority` required; the certificate's common name becomes
    /// the MQTT username. The broker's own certificate is issued by the same authority for
    /// `localhost` and `127.0.0.1`.
    pub fn mutual_tls(authority: Arc<Authority>) -> Self {
        Self {
            tls: Some(authority),
            ..Self::default()
        }
    }

    /// The shipped configuration and access rules of `shipped` (see the module docs), with mutual
    /// TLS from `authority` as in [`BrokerOptions::mutual_tls`].
    pub fn shipped(authority: Arc<Authority>, shipped: Shipped) -> Self {
        Self {
            tls: Some(authority),
            acl: Some(shipped.acl()),
            shipped: Some(shipped),
            ..Self::default()
        }
    }

    /// Mutual TLS from PEM files (e.g. a development PKI made by `edgefleet certs`) instead of a
    /// test-time authority: the broker presents `files.cert_file` and `files.key_file` and accepts
    /// client certificates that chain to a CA in `files.ca_file` (its `cafile`). The files are
    /// copied into the broker's directory. The certificate must name `127.0.0.1`, which clients
    /// dial. Clients build their TLS configuration themselves ([`TlsFiles::client_config`]) for
    /// [`Broker::host`] and [`Broker::port`]; [`Broker::mqtt_options`] refuses
    /// ([`BrokerError::NoAuthority`]).
    pub fn mutual_tls_files(files: TlsFiles) -> Self {
        Self {
            tls_files: Some(files),
            ..Self::default()
        }
    }

    /// The shipped configuration and access rules of `shipped`, with mutual TLS from files as in
    /// [`BrokerOptions::mutual_tls_files`].
    pub fn shipped_with_files(files: TlsFiles, shipped: Shipped) -> Self {
        Self {
            tls_files: Some(files),
            acl: Some(shipped.acl()),
            shipped: Some(shipped),
            ..Self::default()
        }
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some() || self.tls_files.is_some()
    }

    /// Restricts clients by a mosquitto ACL file with these contents (`pattern read ef/v1/node/%u/#`,
    /// `user`/`topic` lines; see mosquitto.conf(5), `acl_file`). Without an ACL every client may
    /// publish and subscribe to everything.
    pub fn acl(mut self, rules: impl Into<String>) -> Self {
        self.acl = Some(rules.into());
        self
    }
}

/// A running (or stopped) mosquitto. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Broker {
    program: PathBuf,
    options: BrokerOptions,
    port: u16,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    // Last field: dropped (deleted) after `Drop::drop` has killed the process using it.
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a plain-TCP broker (anonymous clients allowed).
    pub fn plain() -> Result<Self, BrokerError> {
        Self::with_options(BrokerOptions::plain())
    }

    /// Starts a mutual-TLS broker with a new authority of its own ([`Broker::authority`] issues
    /// client certificates for it).
    pub fn mutual_tls() -> Result<Self, BrokerError> {
        let authority = Authority::new("broker")?;
        Self::with_options(BrokerOptions::mutual_tls(Arc::new(authority)))
    }

    /// Starts a broker as `options` describe, on a free loopback port.
    pub fn with_options(options: BrokerOptions) -> Result<Self, BrokerError> {
        let program = find_mosquitto()?;
        let dir = tempfile::Builder::new()
            .prefix("edgefleet-mosquitto-")
            .tempdir()
            .map_err(io_error(&std::env::temp_dir()))?;
        // Checked before anything is spawned: every path in the configuration is under `dir`.
        config_path_text(dir.path())?;
        if let Some(authority) = &options.tls {
            let server = authority.server_cert(&["localhost", "127.0.0.1"])?;
            TlsFiles::write(dir.path(), "server", authority, &server)?;
        }
        if let Some(files) = &options.tls_files {
            // As TlsFiles::write names them; fs::copy keeps the key's mode.
            for (from, name) in [
                (&files.ca_file, "server-ca.crt"),
                (&files.cert_file, "server.crt"),
                (&files.key_file, "server.key"),
            ] {
                let to = dir.path().join(name);
                fs::copy(from, &to).map_err(io_error(from))?;
            }
        }
        if let Some(rules) = &options.acl {
            write(&dir.path().join("acl"), rules)?;
        }
        let mut broker = Self {
            program,
            options,
            port: 0,
            child: None,
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            dir,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            broker.port = free_port().map_err(io_error(Path::new("127.0.0.1:0")))?;
            match broker.spawn_until_ready() {
                Err(Spawn::PortInUse) if attempts < FRESH_PORT_ATTEMPTS => continue,
                Err(Spawn::PortInUse) => return Err(broker.port_in_use(attempts)),
                Err(Spawn::Failed(e)) => return Err(e),
                Ok(child) => {
                    broker.child = Some(child);
                    return Ok(broker);
                }
            }
        }
    }

    /// Starts mosquitto again after [`Broker::stop`], on the same port and with the same
    /// persistence file, so persistent sessions and their queued messages are back. Does nothing if
    /// it is running.
    pub fn start(&mut self) -> Result<(), BrokerError> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Instant::now() + RESTART_PORT_PATIENCE;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.spawn_until_ready() {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                // A client's outgoing connection may briefly hold the port as its local port.
                Err(Spawn::PortInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(Spawn::PortInUse) => return Err(self.port_in_use(attempts)),
                Err(Spawn::Failed(e)) => return Err(e),
            }
        }
    }

    /// Stops mosquitto gracefully (SIGTERM, then waits for it to exit): it disconnects every client
    /// and writes its persistence file. Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<(), BrokerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        kill_process(Pid::from_child(&child), Signal::TERM).map_err(|e| BrokerError::Process {
            action: "send SIGTERM to",
            pid,
            source: e.into(),
        })?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let exited = child.try_wait().map_err(|source| BrokerError::Process {
                action: "wait for",
                pid,
                source,
            })?;
            if exited.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                return Err(BrokerError::StopTimeout {
                    timeout: STOP_TIMEOUT,
                    log: self.log_path.clone(),
                    tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the mosquitto process is running (it may have died on its own: see the log).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The address clients dial: always `127.0.0.1` (the server certificate also names `localhost`).
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port, fixed for the broker's lifetime (restarts keep it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authority whose client certificates the broker accepts (`None` for a plain broker).
    pub fn authority(&self) -> Option<&Arc<Authority>> {
        self.options.tls.as_ref()
    }

    /// The broker's directory (configuration, log, persistence, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker log, appended across restarts; mosquitto's own errors land here too.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the broker log (empty if it cannot be read), for test failure
    /// messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Client options for this broker: client id `client_id`, keep-alive 5 s, maximum packet size
    /// [`MAX_UPLINK_PACKET_BYTES`](edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES) both ways
    /// (rumqttc's default is 10 KiB), and — for a mutual-TLS broker — TLS with a fresh client
    /// certificate whose common name (the broker username) is `client_id`. Build the client with
    /// [`client`] so TCP_NODELAY is set too.
    pub fn mqtt_options(&self, client_id: &str) -> Result<MqttOptions, BrokerError> {
        match &self.options.tls {
            None if self.options.tls_files.is_some() => Err(BrokerError::NoAuthority),
            None => Ok(self.base_options(client_id)),
            Some(authority) => {
                let identity = authority.client_cert(client_id)?;
                self.mqtt_options_as(client_id, &identity)
            }
        }
    }

    /// Like [`Broker::mqtt_options`] for a mutual-TLS broker, but authenticating with `identity`,
    /// which may come from another authority (to test that the broker refuses it). The client trusts
    /// the broker's authority either way.
    pub fn mqtt_options_as(
        &self,
        client_id: &str,
        identity: &Identity,
    ) -> Result<MqttOptions, BrokerError> {
        let authority = self
            .options
            .tls
            .as_ref()
            .ok_or(if self.options.tls_files.is_some() {
                BrokerError::NoAuthority
            } else {
                BrokerError::NotTls
            })?;
        let config = pki::client_config(authority, identity)?;
        let mut options = self.base_options(client_id);
        options.set_transport(Transport::tls_with_config(config.into()));
        Ok(options)
    }

    fn base_options(&self, client_id: &str) -> MqttOptions {
        let cap = edgefleet_protocol::wire::MAX_UPLINK_PACKET_BYTES;
        let mut options = MqttOptions::new(client_id, self.host(), self.port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(cap, cap);
        options
    }

    /// Writes the configuration for the current port, starts mosquitto and waits until it is ready.
    fn spawn_until_ready(&mut self) -> Result<Child, Spawn> {
        write(&self.config_path, &self.config()?)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_error(&self.log_path))?;
        let log_start = log.metadata().map_err(io_error(&self.log_path))?.len();
        let stderr = log.try_clone().map_err(io_error(&self.log_path))?;
        // mosquitto logs to stderr (log_dest stderr), so its messages and its own startup errors
        // (printed before logging is configured) land in one file, appended across restarts.
        let mut child = Command::new(&self.program)
            .arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((HOST, self.port));
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let output = self.log_since(log_start);
                    if output.contains("Address already in use") {
                        return Err(Spawn::PortInUse);
                    }
                    return Err(Spawn::Failed(BrokerError::Exited {
                        status,
                        log: self.log_path.clone(),
                        tail: self.log_tail(LOG_TAIL_LINES),
                    }));
                }
                Ok(None) => {}
                Err(source) => {
                    kill(&mut child);
                    return Err(Spawn::Failed(BrokerError::Process {
                        action: "wait for",
                        pid: child.id(),
                        source,
                    }));
                }
            }
            // "running" is logged once every listener is open. Checking it (in this start's part of
            // the log) and not only the port means another broker that grabbed the same port in the
            // meantime is not mistaken for this one.
            if self
                .log_since(log_start)
                .lines()
                .any(|line| line.ends_with(" running"))
                && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                return Err(Spawn::Failed(BrokerError::NotReady {
                    port: self.port,
                    timeout: START_TIMEOUT,
                    log: self.log_path.clone(),
                    tail: self.log_tail(LOG_TAIL_LINES),
                }));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn config(&self) -> Result<String, BrokerError> {
        let dir = config_path_text(self.dir.path())?;
        if let Some(shipped) = &self.options.shipped {
            return Ok(shipped_config(shipped.config(), dir, self.port));
        }
        let mut config = format!(
            "# Generated by edgefleet-simulators (broker.rs); see that module's docs.\n\
             user root\n\
             set_tcp_nodelay true\n\
             max_packet_size {BROKER_MAX_PACKET_BYTES}\n\
             max_queued_messages {MAX_QUEUED_MESSAGES}\n\
             max_inflight_messages 0\n\
             persistence true\n\
             persistence_location {dir}/\n\
             persistence_file mosquitto.db\n\
             log_dest stderr\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
             connection_messages true\n\
             allow_anonymous {anonymous}\n",
            anonymous = !self.options.is_tls(),
        );
        if self.options.acl.is_some() {
            config.push_str(&format!("acl_file {dir}/acl\n"));
        }
        config.push_str(&format!("listener {} {HOST}\n", self.port));
        if self.options.is_tls() {
            // Written by `with_options` (TlsFiles::write with stem "server", or copied).
            config.push_str(&format!(
                "cafile {dir}/server-ca.crt\n\
                 certfile {dir}/server.crt\n\
                 keyfile {dir}/server.key\n\
                 require_certificate true\n\
                 use_identity_as_username true\n\
                 tls_version tlsv1.2\n"
            ));
        }
        Ok(config)
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log_path)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            // A partial read (invalid UTF-8 cut mid-line) only delays readiness by one poll.
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn port_in_use(&self, attempts: usize) -> BrokerError {
        BrokerError::PortInUse {
            port: self.port,
            attempts,
            log: self.log_path.clone(),
            tail: self.log_tail(LOG_TAIL_LINES),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// TCP options for clients of these brokers: TCP_NODELAY (see the module docs) and a 5 s connection
/// timeout.
pub fn network_options() -> NetworkOptions {
    let mut options = NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options.set_connection_timeout(5);
    options
}

/// A rumqttc client with [`network_options`] applied. Poll the `EventLoop` in its own task: a task
/// that awaits `AsyncClient::publish` while it is also the one polling deadlocks once the request
/// channel (`cap`) is full.
pub fn client(options: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, cap);
    eventloop.set_network_options(network_options());
    (client, eventloop)
}

/// How one spawn attempt failed.
enum Spawn {
    /// Another process holds the port: worth another try.
    PortInUse,
    Failed(BrokerError),
}

impl From<BrokerError> for Spawn {
    fn from(error: BrokerError) -> Self {
        Spawn::Failed(error)
    }
}

/// `shipped` with its listener and paths pointed at `port` and `dir` (the files `with_options`
/// wrote), preceded by `user root` (see the module docs); every other line as shipped.
fn shipped_config(shipped: &str, dir: &str, port: u16) -> String {
    let mut config = String::from(
        "# Generated by edgefleet-simulators (broker.rs) from a shipped configuration.\n\
         user root\n",
    );
    for line in shipped.lines() {
        let local = match line.split_whitespace().next() {
            Some("listener") => format!("listener {port} {HOST}"),
            Some("acl_file") => format!("acl_file {dir}/acl"),
            Some("persistence_location") => format!("persistence_location {dir}/"),
            Some("cafile") => format!("cafile {dir}/server-ca.crt"),
            Some("certfile") => format!("certfile {dir}/server.crt"),
            Some("keyfile") => format!("keyfile {dir}/server.key"),
            _ => line.to_owned(),
        };
        config.push_str(&local);
        config.push('\n');
    }
    config
}

/// A port that was free a moment ago. The probe socket is closed before mosquitto binds the port, so
/// another process may take it in between; callers retry on "Address already in use".
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

fn find_mosquitto() -> Result<PathBuf, BrokerError> {
    if let Some(path) = std::env::var_os(MOSQUITTO_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(BrokerError::NotFound {
                looked: format!("{} (from {MOSQUITTO_ENV})", path.display()),
            })
        };
    }
    // /usr/sbin is where Debian installs it, and it is often not on a non-root user's PATH.
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    dirs.iter()
        .map(|dir| dir.join("mosquitto"))
        .find(|path| path.is_file())
        .ok_or_else(|| BrokerError::NotFound {
            looked: format!(
                "mosquitto in {}",
                std::env::join_paths(&dirs)
                    .unwrap_or_else(|_| OsString::from("PATH"))
                    .to_string_lossy()
            ),
        })
}

/// `path` as it can appear in a mosquitto configuration line.
fn config_path_text(path: &Path) -> Result<&str, BrokerError> {
    path.to_str()
        .filter(|text| !text.contains('\n'))
        .ok_or_else(|| BrokerError::UnusablePath(path.to_owned()))
}

fn write(path: &Path, contents: &str) -> Result<(), BrokerError> {
    fs::write(path, contents).map_err(io_error(path))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError {
    let path = path.to_owned();
    move |source| BrokerError::Io { path, source }
}

/// SIGKILL and reap; errors are ignored (the process is gone either way, or was never ours to kill).
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
