//! The agent's configuration: a TOML file, then environment variables, then command-line flags, each
//! overriding the one before (flags and variables are the same clap arguments).
//!
//! Everything has a default except the brokers. TLS is the default transport; plain TCP must be
//! asked for with an `mqtt://` URL, never reached by accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use edgefleet_protocol::id::NodeId;
use serde::Deserialize;

use crate::intake::IntakeLimits;

/// The edgefleet edge agent: runs device-class handler modules for the devices of this node.
///
/// Devices publish to a device broker; every message runs the class's Wasm handler in a fresh
/// sandbox; commands go back to the device, telemetry goes upstream through a durable outbox.
/// Settings come from a TOML file (--config), then EDGEFLEET_* environment variables, then flags.
#[derive(Debug, Default, Parser)]
#[command(version)]
pub struct Cli {
    /// TOML configuration file (keys as the flags, with underscores; see README.md).
    #[arg(long, env = "EDGEFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's name; in Kubernetes the downward API sets NODE_NAME.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Directory for the agent's database and compiled modules.
    #[arg(long, env = "EDGEFLEET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Device broker URL: mqtts://host:port (TLS) or mqtt://host:port (plain TCP, explicit only).
    #[arg(long, env = "EDGEFLEET_DEVICE_BROKER")]
    pub device_broker: Option<String>,
    /// Cloud (uplink) broker URL, same forms; may be the device broker.
    #[arg(long, env = "EDGEFLEET_UPLINK_BROKER")]
    pub uplink_broker: Option<String>,
    /// CA certificate (PEM) that signs the brokers' certificates.
    #[arg(long, env = "EDGEFLEET_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's client certificate (PEM) for mutual TLS.
    #[arg(long, env = "EDGEFLEET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM, PKCS#8) for mutual TLS.
    #[arg(long, env = "EDGEFLEET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Instead of --tls-cert and --tls-key: get this node's certificate from the controller's
    /// bootstrap endpoint at this https:// URL (it posts to <url>/v1/node-certificate, proving the
    /// node with its ServiceAccount token), keep it in <data-dir>/identity and renew it before it
    /// expires. See docs/node-identity.md.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_URL")]
    pub bootstrap_url: Option<String>,
    /// The projected ServiceAccount token the agent proves its node with, read again for every
    /// request (the kubelet rotates it). Default /var/run/secrets/edgefleet/token.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// CA certificate (PEM) the bootstrap endpoint's certificate must chain to. Default --tls-ca.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_CA")]
    pub bootstrap_ca: Option<PathBuf>,
    /// The controller's public keys (PEM bundle): only modules and assignments they signed run.
    #[arg(long, env = "EDGEFLEET_TRUST_ANCHOR")]
    pub trust_anchor: Option<PathBuf>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "EDGEFLEET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Sandbox worker processes.
    #[arg(long, env = "EDGEFLEET_WORKERS")]
    pub workers: Option<usize>,
    /// Seconds between two status publications.
    #[arg(long, env = "EDGEFLEET_STATUS_INTERVAL_S")]
    pub status_interval_s: Option<u64>,
    /// /readyz turns unready when a device message waits (or sits in a lane) longer than this
    /// many seconds, or host faults keep devices waiting for redelivery that long.
    #[arg(long, env = "EDGEFLEET_STALL_AFTER_S")]
    pub stall_after_s: Option<u64>,
    /// Device messages held at most (waiting or being handled; at least 16, default 16384). At half
    /// of it the agent stops reading from the device broker until it is back under a quarter: the
    /// broker keeps the rest, in order. Memory is about 1 KiB per message plus its payload.
    #[arg(long, env = "EDGEFLEET_INTAKE_MAX_MESSAGES")]
    pub intake_max_messages: Option<usize>,
}

/// The TOML file: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_name: Option<String>,
    data_dir: Option<PathBuf>,
    device_broker: Option<String>,
    uplink_broker: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    bootstrap_url: Option<String>,
    bootstrap_token_file: Option<PathBuf>,
    bootstrap_ca: Option<PathBuf>,
    trust_anchor: Option<PathBuf>,
    listen: Option<SocketAddr>,
    workers: Option<usize>,
    worker_binary: Option<PathBuf>,
    status_interval_s: Option<u64>,
    stall_after_s: Option<u64>,
    intake_max_messages: Option<usize>,
    max_payload_bytes: Option<usize>,
    outbox_max_entries: Option<u64>,
    outbox_max_bytes: Option<u64>,
}

pub use edgefleet_protocol::tls::BrokerUrl;

/// Client certificate and trust for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub identity: ClientIdentity,
}

/// Where the node's client certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// Files made beforehand (`edgefleet certs issue node`).
    Files { cert: PathBuf, key: PathBuf },
    /// The controller's bootstrap endpoint (see [`crate::identity`]).
    Bootstrap(Bootstrap),
}

/// The controller's bootstrap endpoint and what the agent proves its node with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `<--bootstrap-url>/v1/node-certificate`.
    pub endpoint: String,
    pub token_file: PathBuf,
    /// The CA the endpoint's certificate must chain to.
    pub ca: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: NodeId,
    pub data_dir: PathBuf,
    pub device_broker: BrokerUrl,
    pub uplink_broker: BrokerUrl,
    /// Required when either broker uses TLS.
    pub tls: Option<TlsFiles>,
    pub trust_anchor: PathBuf,
    pub listen: SocketAddr,
    pub workers: usize,
    pub worker_binary: PathBuf,
    pub status_interval: Duration,
    /// The readiness bound on a message's wait (see [`crate::health`]).
    pub stall_after: Duration,
    /// The intake's message bound (see [`crate::intake`]).
    pub intake_max_messages: usize,
    pub max_payload_bytes: usize,
    pub outbox_max_entries: u64,
    pub outbox_max_bytes: u64,
}

/// What is wrong with the configuration, and where to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{what} is not set: use {flag}, {env}, or `{key}` in the config file")]
    Missing {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
        key: &'static str,
    },
    #[error(transparent)]
    BrokerUrl(#[from] edgefleet_protocol::tls::BrokerUrlError),
    #[error("node name {name:?} is not valid: {why}")]
    NodeName { name: String, why: String },
    #[error("a broker uses TLS (mqtts://) but {what} is not set: use --{flag} or EDGEFLEET_{env}")]
    TlsFile {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("--bootstrap-url {url:?}: {why}")]
    BootstrapUrl { url: String, why: &'static str },
    #[error("--bootstrap-url and --tls-cert/--tls-key both name the node's certificate: keep one")]
    TwoIdentities,
    #[error(
        "--bootstrap-url is set but no broker uses TLS (mqtts://): there is no certificate to get"
    )]
    BootstrapWithoutTls,
}

impl AgentConfig {
    /// Resolves the configuration from the command line (and the file and variables it names).
    pub fn load(cli: Cli) -> Result<AgentConfig, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let node_name = cli
            .node_name
            .or(file.node_name)
            .ok_or(ConfigError::Missing {
                what: "the node name",
                flag: "--node-name",
                env: "NODE_NAME",
                key: "node_name",
            })?;
        let node = NodeId::new(&node_name).map_err(|e| ConfigError::NodeName {
            name: node_name.clone(),
            why: e.to_string(),
        })?;
        let device_broker =
            cli.device_broker
                .or(file.device_broker)
                .ok_or(ConfigError::Missing {
                    what: "the device broker",
                    flag: "--device-broker",
                    env: "EDGEFLEET_DEVICE_BROKER",
                    key: "device_broker",
                })?;
        let device_broker = BrokerUrl::parse(&device_broker)?;
        let uplink_broker =
            cli.uplink_broker
                .or(file.uplink_broker)
                .ok_or(ConfigError::Missing {
                    what: "the uplink broker",
                    flag: "--uplink-broker",
                    env: "EDGEFLEET_UPLINK_BROKER",
                    key: "uplink_broker",
                })?;
        let uplink_broker = BrokerUrl::parse(&uplink_broker)?;
        let tls = if device_broker.tls || uplink_broker.tls {
            let ca = cli.tls_ca.or(file.tls_ca).ok_or(ConfigError::TlsFile {
                what: "the CA certificate",
                flag: "tls-ca",
                env: "TLS_CA",
            })?;
            let cert = cli.tls_cert.or(file.tls_cert);
            let key = cli.tls_key.or(file.tls_key);
            let identity = match cli.bootstrap_url.or(file.bootstrap_url) {
                Some(_) if cert.is_some() || key.is_some() => {
                    return Err(ConfigError::TwoIdentities);
                }
                Some(url) => ClientIdentity::Bootstrap(Bootstrap {
                    endpoint: bootstrap_endpoint(&url)?,
                    token_file: cli
                        .bootstrap_token_file
                        .or(file.bootstrap_token_file)
                        .unwrap_or_else(|| PathBuf::from("/var/run/secrets/edgefleet/token")),
                    ca: cli
                        .bootstrap_ca
                        .or(file.bootstrap_ca)
                        .unwrap_or_else(|| ca.clone()),
                }),
                None => ClientIdentity::Files {
                    cert: cert.ok_or(ConfigError::TlsFile {
                        what: "the client certificate",
                        flag: "tls-cert",
                        env: "TLS_CERT",
                    })?,
                    key: key.ok_or(ConfigError::TlsFile {
                        what: "the client key",
                        flag: "tls-key",
                        env: "TLS_KEY",
                    })?,
                },
            };
            Some(TlsFiles { ca, identity })
        } else if cli.bootstrap_url.is_some() || file.bootstrap_url.is_some() {
            return Err(ConfigError::BootstrapWithoutTls);
        } else {
            None
        };
        let trust_anchor = cli
            .trust_anchor
            .or(file.trust_anchor)
            .ok_or(ConfigError::Missing {
                what: "the controller's public keys",
                flag: "--trust-anchor",
                env: "EDGEFLEET_TRUST_ANCHOR",
                key: "trust_anchor",
            })?;
        let data_dir = cli
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/edgefleet"));
        let worker_binary = file.worker_binary.unwrap_or_else(default_worker_binary);
        Ok(AgentConfig {
            node,
            data_dir,
            device_broker,
            uplink_broker,
            tls,
            trust_anchor,
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9464))),
            workers: cli.workers.or(file.workers).unwrap_or(2).max(1),
            worker_binary,
            status_interval: Duration::from_secs(
                cli.status_interval_s
                    .or(file.status_interval_s)
                    .unwrap_or(10)
                    .max(1),
            ),
            stall_after: Duration::from_secs(
                cli.stall_after_s
                    .or(file.stall_after_s)
                    .unwrap_or(30)
                    .max(1),
            ),
            intake_max_messages: cli
                .intake_max_messages
                .or(file.intake_max_messages)
                .unwrap_or(IntakeLimits::default().max_messages)
                .max(16),
            max_payload_bytes: file
                .max_payload_bytes
                .unwrap_or(64 * 1024)
                .min(edgefleet_protocol::wire::MAX_DEVICE_PAYLOAD_BYTES),
            outbox_max_entries: file.outbox_max_entries.unwrap_or(1_000_000),
            outbox_max_bytes: file.outbox_max_bytes.unwrap_or(256 << 20),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// The node certificate endpoint under the controller's bootstrap URL (`https://host[:port]`).
fn bootstrap_endpoint(url: &str) -> Result<String, ConfigError> {
    let bad = |why| ConfigError::BootstrapUrl {
        url: url.to_owned(),
        why,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if parsed.scheme() != "https" {
        return Err(bad(
            "must be https:// (the token must not travel in the clear)",
        ));
    }
    if parsed.host_str().is_none() || !matches!(parsed.path(), "" | "/") || parsed.query().is_some()
    {
        return Err(bad(
            "give the controller's address only, https://host[:port] (the agent adds /v1/node-certificate)",
        ));
    }
    Ok(format!(
        "{}/v1/node-certificate",
        parsed.as_str().trim_end_matches('/')
    ))
}

/// The sandbox worker binary installed next to the agent's own.
fn default_worker_binary() -> PathBuf {
    edgefleet_sandbox::WorkerCommand::beside_current_exe().program
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli {
            node_name: Some("edge-1".into()),
            device_broker: Some("mqtts://devices.local".into()),
            uplink_broker: Some("mqtt://cloud.example:1884".into()),
            tls_ca: Some("/ca.pem".into()),
            tls_cert: Some("/node.pem".into()),
            tls_key: Some("/node.key".into()),
            trust_anchor: Some("/trust.pem".into()),
            ..Cli::default()
        }
    }

    #[test]
    fn broker_urls_name_their_transport_and_default_ports() {
        assert_eq!(
            BrokerUrl::parse("mqtts://devices.local").unwrap(),
            BrokerUrl {
                host: "devices.local".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap(),
            BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false
            }
        );
        for bad in [
            "tcp://x",
            "mqtts://",
            "mqtt://host:port",
            "devices.local:8883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "node_name = \"from-file\"\nworkers = 4\nstatus_interval_s = 3\ntrust_anchor = \"/file-trust.pem\"\n",
        )
        .unwrap();
        let config = AgentConfig::load(Cli {
            config: Some(path),
            ..cli()
        })
        .unwrap();
        assert_eq!(
            config.node.as_str(),
            "edge-1",
            "the flag wins over the file"
        );
        assert_eq!(config.workers, 4, "the file wins over the default");
        assert_eq!(config.status_interval, Duration::from_secs(3));
        assert_eq!(config.trust_anchor, PathBuf::from("/trust.pem"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/edgefleet"));
        assert!(config.tls.is_some());
        assert!(!config.uplink_broker.tls);
    }

    #[test]
    fn a_bootstrap_url_replaces_the_certificate_files() {
        let bootstrapped = Cli {
            tls_cert: None,
            tls_key: None,
            bootstrap_url: Some("https://controller.edgefleet.svc:8443/".into()),
            ..cli()
        };
        let config = AgentConfig::load(bootstrapped).unwrap();
        assert_eq!(
            config.tls.unwrap().identity,
            ClientIdentity::Bootstrap(Bootstrap {
                endpoint: "https://controller.edgefleet.svc:8443/v1/node-certificate".into(),
                token_file: "/var/run/secrets/edgefleet/token".into(),
                ca: "/ca.pem".into(),
            })
        );
        let with = |url: &str| Cli {
            tls_cert: None,
            tls_key: None,
            bootstrap_url: Some(url.into()),
            ..cli()
        };
        for (url, expect) in [
            ("http://controller:8443", "https://"),
            (
                "https://controller:8443/v1/node-certificate",
                "address only",
            ),
            ("controller", "not a URL"),
        ] {
            let error = AgentConfig::load(with(url)).unwrap_err();
            assert!(error.to_string().contains(expect), "{url}: {error}");
        }
        let error = AgentConfig::load(Cli {
            bootstrap_url: Some("https://controller".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(matches!(error, ConfigError::TwoIdentities), "{error}");
        let error = AgentConfig::load(Cli {
            device_broker: Some("mqtt://devices.local".into()),
            ..with("https://controller")
        })
        .unwrap_err();
        assert!(matches!(error, ConfigError::BootstrapWithoutTls), "{error}");
    }

    #[test]
    fn missing_or_wrong_settings_say_how_to_fix_them() {
        let error = AgentConfig::load(Cli {
            node_name: None,
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("NODE_NAME"), "{error}");
        let error = AgentConfig::load(Cli {
            tls_key: None,
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("--tls-key"), "{error}");
        let error = AgentConfig::load(Cli {
            node_name: Some("bad/name".into()),
            ..cli()
        })
        .unwrap_err();
        assert!(matches!(error, ConfigError::NodeName { .. }), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "node_nmae = \"typo\"\n").unwrap();
        let error = AgentConfig::load(Cli {
            config: Some(path),
            ..cli()
        })
        .unwrap_err();
        assert!(error.to_string().contains("node_nmae"), "{error}");
    }
}
