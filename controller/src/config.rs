//! The controller's configuration: a TOML file, then environment variables, then flags, each
//! overriding the one before (flags and variables are the same clap arguments).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use edgefleet_protocol::tls::{BrokerUrl, BrokerUrlError};
use edgefleet_sandbox::WorkerCommand;
use serde::Deserialize;

/// Settings of `edgefleet-controller run`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file (keys as the flags, with underscores).
    #[arg(long, env = "EDGEFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Standalone mode: read HandlerModules, DeviceClasses and EdgeNodes from YAML files in this
    /// folder (watched), keep status in --data-dir and serve it over HTTP. Without it the
    /// controller runs against Kubernetes (in-cluster, or $KUBECONFIG).
    #[arg(long, env = "EDGEFLEET_OBJECTS")]
    pub objects: Option<PathBuf>,
    /// Folder for module blobs (and, standalone, status).
    #[arg(long, env = "EDGEFLEET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cloud broker URL: mqtts://host:port (TLS) or mqtt://host:port (plain TCP, explicit only).
    #[arg(long, env = "EDGEFLEET_CLOUD_BROKER")]
    pub cloud_broker: Option<String>,
    /// CA certificate (PEM) that signs the cloud broker's certificate.
    #[arg(long, env = "EDGEFLEET_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The controller's client certificate (PEM; CN edgefleet-controller).
    #[arg(long, env = "EDGEFLEET_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "EDGEFLEET_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The ed25519 key (PKCS#8 PEM) assignments are signed with; `edgefleet keys generate` makes
    /// one. In a cluster, mount it from a Secret.
    #[arg(long, env = "EDGEFLEET_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Address for /healthz, /readyz, /metrics (and, standalone, the fleet API).
    #[arg(long, env = "EDGEFLEET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// At most this many EdgeNode status writes per second (state changes go first).
    #[arg(long, env = "EDGEFLEET_STATUS_WRITES_PER_S")]
    pub status_writes_per_s: Option<u32>,
    /// A node's steady changes (counters, rates) are written to its status at most this often, in
    /// seconds (state changes are written at once). Default 30.
    #[arg(
        long,
        env = "EDGEFLEET_STATUS_STEADY_INTERVAL_S",
        value_name = "SECONDS"
    )]
    pub status_steady_interval_s: Option<u64>,
    /// Extra CA certificates (PEM) trusted for OCI registries.
    #[arg(long, env = "EDGEFLEET_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Registries (host:port) reached over plain HTTP (development only).
    #[arg(long, env = "EDGEFLEET_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
    /// Cluster mode: the Lease replicas elect a leader with (in --namespace).
    #[arg(long, env = "EDGEFLEET_LEASE")]
    pub lease: Option<String>,
    /// Cluster mode: the controller's namespace (the downward API sets POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Cluster mode: this replica's name in the Lease (the downward API sets POD_NAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The sandbox worker (edgefleet-sandbox-worker) that runs modules' test vectors; default:
    /// beside this binary. Needed only by modules that declare test vectors.
    #[arg(long, env = "EDGEFLEET_WORKER_BINARY")]
    pub worker_binary: Option<PathBuf>,
    /// Where the sandbox caches compiled modules while their test vectors run (default:
    /// <data-dir>/artefacts).
    #[arg(long, env = "EDGEFLEET_ARTEFACT_DIR")]
    pub artefact_dir: Option<PathBuf>,
    /// Cluster mode: serve node certificates (POST /v1/node-certificate, HTTPS) on this address
    /// to agents that prove who they are with their projected ServiceAccount token (see
    /// docs/node-identity.md). Off unless set.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_LISTEN")]
    pub bootstrap_listen: Option<SocketAddr>,
    /// The bootstrap endpoint's TLS server certificate (PEM, with its chain).
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_TLS_CERT")]
    pub bootstrap_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_TLS_KEY")]
    pub bootstrap_tls_key: Option<PathBuf>,
    /// The node CA's certificate (PEM): it signs the node certificates (the cloud broker's
    /// cafile).
    #[arg(long, env = "EDGEFLEET_NODE_CA_CERT")]
    pub node_ca_cert: Option<PathBuf>,
    /// The node CA's private key (PEM). In a cluster, mount it from a Secret.
    #[arg(long, env = "EDGEFLEET_NODE_CA_KEY")]
    pub node_ca_key: Option<PathBuf>,
    /// The audience agents' tokens must be issued for (the projected token's `audience`).
    /// Default edgefleet.dev/node-bootstrap.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_AUDIENCE")]
    pub bootstrap_audience: Option<String>,
    /// The agents' ServiceAccount, as the API server names its tokens' user. Default
    /// system:serviceaccount:<--namespace>:edgefleet-agent.
    #[arg(long, env = "EDGEFLEET_AGENT_SERVICE_ACCOUNT")]
    pub agent_service_account: Option<String>,
    /// How long a node certificate is valid, in seconds (at least 60; agents renew at 2/3).
    /// Default 86400 (24 h).
    #[arg(
        long,
        env = "EDGEFLEET_BOOTSTRAP_CERT_VALIDITY_S",
        value_name = "SECONDS"
    )]
    pub bootstrap_cert_validity_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    objects: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    cloud_broker: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    listen: Option<SocketAddr>,
    status_writes_per_s: Option<u32>,
    status_steady_interval_s: Option<u64>,
    registry_ca: Option<PathBuf>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    lease: Option<String>,
    namespace: Option<String>,
    identity: Option<String>,
    worker_binary: Option<PathBuf>,
    artefact_dir: Option<PathBuf>,
    bootstrap_listen: Option<SocketAddr>,
    bootstrap_tls_cert: Option<PathBuf>,
    bootstrap_tls_key: Option<PathBuf>,
    node_ca_cert: Option<PathBuf>,
    node_ca_key: Option<PathBuf>,
    bootstrap_audience: Option<String>,
    agent_service_account: Option<String>,
    bootstrap_cert_validity_s: Option<u64>,
}

/// Mutual TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA bundle.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
}

/// The node identity bootstrap endpoint (cluster mode).
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// Its address.
    pub listen: SocketAddr,
    /// Its TLS server certificate (PEM chain).
    pub tls_cert: PathBuf,
    /// Its TLS key.
    pub tls_key: PathBuf,
    /// The node CA's certificate.
    pub node_ca_cert: PathBuf,
    /// The node CA's key.
    pub node_ca_key: PathBuf,
    /// The audience tokens must carry.
    pub audience: String,
    /// The agents' ServiceAccount.
    pub agent: ServiceAccount,
    /// How long a node certificate is valid.
    pub validity: Duration,
}

/// A ServiceAccount, `system:serviceaccount:<namespace>:<name>` as the API server names its
/// tokens' user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Its namespace (where the agents' Pods run).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// Parses `system:serviceaccount:<namespace>:<name>`.
    pub fn parse(username: &str) -> Option<ServiceAccount> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        (dns_label(namespace) && dns_label(name)).then(|| ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The user name of its tokens.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// The shortest node certificate lifetime accepted: agents renew at 2/3 of it, so anything
/// shorter makes them ask more often than a few times a minute.
const MIN_CERT_VALIDITY_S: u64 = 60;

/// Where objects come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A folder of YAML (standalone).
    Standalone {
        /// The folder.
        objects: PathBuf,
    },
    /// The Kubernetes API, with leader election.
    Cluster {
        /// The Lease's name.
        lease: String,
        /// Its namespace.
        namespace: String,
        /// This replica's identity.
        identity: String,
    },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Standalone or cluster.
    pub mode: Mode,
    /// Data folder.
    pub data_dir: PathBuf,
    /// The cloud broker.
    pub cloud_broker: BrokerUrl,
    /// TLS files (with an mqtts:// broker).
    pub tls: Option<TlsFiles>,
    /// The signing key file.
    pub signing_key: PathBuf,
    /// HTTP address.
    pub listen: SocketAddr,
    /// The status write budget.
    pub status_writes_per_s: u32,
    /// How often a node's steady changes are written, in seconds.
    pub status_steady_interval_s: u64,
    /// Extra registry CA.
    pub registry_ca: Option<PathBuf>,
    /// Plain-HTTP registries.
    pub insecure_registries: Vec<String>,
    /// The sandbox worker for test vectors.
    pub worker_binary: PathBuf,
    /// The sandbox's artefact cache.
    pub artefact_dir: PathBuf,
    /// The node identity bootstrap endpoint, when on (cluster mode only).
    pub bootstrap: Option<BootstrapConfig>,
}

/// What is wrong with the configuration, and where to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys.
    #[error("config file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A required setting is missing.
    #[error("{what} is not set: use {flag}, {env}, or `{key}` in the config file")]
    Missing {
        /// What.
        what: &'static str,
        /// Its flag.
        flag: &'static str,
        /// Its variable.
        env: &'static str,
        /// Its file key.
        key: &'static str,
    },
    /// A bad broker URL.
    #[error(transparent)]
    BrokerUrl(#[from] BrokerUrlError),
    /// A setting that cannot be used as given.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The flag.
        setting: &'static str,
        /// Why, and what to do.
        reason: String,
    },
}

fn missing(
    what: &'static str,
    flag: &'static str,
    env: &'static str,
    key: &'static str,
) -> ConfigError {
    ConfigError::Missing {
        what,
        flag,
        env,
        key,
    }
}

impl Config {
    /// Resolves the configuration from the arguments (and the file they name).
    pub fn load(args: RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let bootstrap = bootstrap_config(&args, &file)?;
        let cloud_broker = args.cloud_broker.or(file.cloud_broker).ok_or_else(|| {
            missing(
                "the cloud broker",
                "--cloud-broker",
                "EDGEFLEET_CLOUD_BROKER",
                "cloud_broker",
            )
        })?;
        let cloud_broker = BrokerUrl::parse(&cloud_broker)?;
        let tls = if cloud_broker.tls {
            Some(TlsFiles {
                ca: args.tls_ca.or(file.tls_ca).ok_or_else(|| {
                    missing(
                        "the CA certificate",
                        "--tls-ca",
                        "EDGEFLEET_TLS_CA",
                        "tls_ca",
                    )
                })?,
                cert: args.tls_cert.or(file.tls_cert).ok_or_else(|| {
                    missing(
                        "the client certificate",
                        "--tls-cert",
                        "EDGEFLEET_TLS_CERT",
                        "tls_cert",
                    )
                })?,
                key: args.tls_key.or(file.tls_key).ok_or_else(|| {
                    missing(
                        "the client key",
                        "--tls-key",
                        "EDGEFLEET_TLS_KEY",
                        "tls_key",
                    )
                })?,
            })
        } else {
            None
        };
        let signing_key = args.signing_key.or(file.signing_key).ok_or_else(|| {
            missing(
                "the signing key",
                "--signing-key",
                "EDGEFLEET_SIGNING_KEY",
                "signing_key",
            )
        })?;
        let mode = match args.objects.or(file.objects) {
            Some(objects) => Mode::Standalone { objects },
            None => Mode::Cluster {
                lease: args
                    .lease
                    .or(file.lease)
                    .unwrap_or_else(|| "edgefleet-controller".into()),
                namespace: args.namespace.or(file.namespace).ok_or_else(|| {
                    missing(
                        "the namespace (cluster mode; or --objects for standalone mode)",
                        "--namespace",
                        "POD_NAMESPACE",
                        "namespace",
                    )
                })?,
                identity: args
                    .identity
                    .or(file.identity)
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| format!("edgefleet-controller-{}", std::process::id())),
            },
        };
        let mut insecure_registries = args.insecure_registries;
        insecure_registries.extend(file.insecure_registries);
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/edgefleet-controller"));
        Ok(Config {
            mode,
            worker_binary: args
                .worker_binary
                .or(file.worker_binary)
                .unwrap_or_else(|| WorkerCommand::beside_current_exe().program),
            artefact_dir: args
                .artefact_dir
                .or(file.artefact_dir)
                .unwrap_or_else(|| data_dir.join("artefacts")),
            data_dir,
            cloud_broker,
            tls,
            signing_key,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            status_writes_per_s: args
                .status_writes_per_s
                .or(file.status_writes_per_s)
                .unwrap_or(20)
                .max(1),
            status_steady_interval_s: args
                .status_steady_interval_s
                .or(file.status_steady_interval_s)
                .unwrap_or(30)
                .max(1),
            registry_ca: args.registry_ca.or(file.registry_ca),
            insecure_registries,
            bootstrap,
        })
    }
}

/// The bootstrap endpoint's settings: none unless `bootstrap_listen` is set; then every file is
/// required, and cluster mode.
fn bootstrap_config(
    args: &RunArgs,
    file: &FileConfig,
) -> Result<Option<BootstrapConfig>, ConfigError> {
    let Some(listen) = args.bootstrap_listen.or(file.bootstrap_listen) else {
        return Ok(None);
    };
    if args.objects.is_some() || file.objects.is_some() {
        return Err(ConfigError::Invalid {
            setting: "--bootstrap-listen",
            reason: "works in cluster mode only (the Kubernetes API reviews the agents' tokens): \
                     remove it, or --objects"
                .into(),
        });
    }
    let path = |arg: &Option<PathBuf>,
                key: &Option<PathBuf>,
                what: &'static str,
                flag: &'static str,
                env: &'static str,
                name: &'static str| {
        arg.clone()
            .or_else(|| key.clone())
            .ok_or_else(|| missing(what, flag, env, name))
    };
    let agent = match args
        .agent_service_account
        .as_ref()
        .or(file.agent_service_account.as_ref())
    {
        Some(username) => ServiceAccount::parse(username).ok_or_else(|| ConfigError::Invalid {
            setting: "--agent-service-account",
            reason: format!(
                "{username:?} is not a ServiceAccount's user name: \
                     system:serviceaccount:<namespace>:<name>"
            ),
        })?,
        None => ServiceAccount {
            namespace: args
                .namespace
                .clone()
                .or_else(|| file.namespace.clone())
                .ok_or_else(|| {
                    missing(
                        "the namespace (cluster mode; or --agent-service-account)",
                        "--namespace",
                        "POD_NAMESPACE",
                        "namespace",
                    )
                })?,
            name: "edgefleet-agent".into(),
        },
    };
    let validity_s = args
        .bootstrap_cert_validity_s
        .or(file.bootstrap_cert_validity_s)
        .unwrap_or(86_400);
    if validity_s < MIN_CERT_VALIDITY_S {
        return Err(ConfigError::Invalid {
            setting: "--bootstrap-cert-validity-s",
            reason: format!(
                "{validity_s} s is too short: at least {MIN_CERT_VALIDITY_S} s (agents renew at 2/3 of it)"
            ),
        });
    }
    Ok(Some(BootstrapConfig {
        listen,
        tls_cert: path(
            &args.bootstrap_tls_cert,
            &file.bootstrap_tls_cert,
            "the bootstrap endpoint's TLS certificate",
            "--bootstrap-tls-cert",
            "EDGEFLEET_BOOTSTRAP_TLS_CERT",
            "bootstrap_tls_cert",
        )?,
        tls_key: path(
            &args.bootstrap_tls_key,
            &file.bootstrap_tls_key,
            "the bootstrap endpoint's TLS key",
            "--bootstrap-tls-key",
            "EDGEFLEET_BOOTSTRAP_TLS_KEY",
            "bootstrap_tls_key",
        )?,
        node_ca_cert: path(
            &args.node_ca_cert,
            &file.node_ca_cert,
            "the node CA's certificate",
            "--node-ca-cert",
            "EDGEFLEET_NODE_CA_CERT",
            "node_ca_cert",
        )?,
        node_ca_key: path(
            &args.node_ca_key,
            &file.node_ca_key,
            "the node CA's key",
            "--node-ca-key",
            "EDGEFLEET_NODE_CA_KEY",
            "node_ca_key",
        )?,
        audience: args
            .bootstrap_audience
            .clone()
            .or_else(|| file.bootstrap_audience.clone())
            .unwrap_or_else(|| "edgefleet.dev/node-bootstrap".into()),
        agent,
        validity: Duration::from_secs(validity_s),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_missing_settings_say_where_to_set_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            "cloud_broker = \"mqtt://file:1883\"\nsigning_key = \"/k.pem\"\nobjects = \"/objects\"\n",
        )
        .unwrap();
        let config = Config::load(RunArgs {
            config: Some(path.clone()),
            cloud_broker: Some("mqtt://flag:1884".into()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(config.cloud_broker.host, "flag");
        assert!(matches!(config.mode, Mode::Standalone { .. }));
        assert!(config.tls.is_none());
        // The test vectors' sandbox: the worker beside this binary, artefacts under the data dir.
        assert!(
            config.worker_binary.ends_with("edgefleet-sandbox-worker"),
            "{:?}",
            config.worker_binary
        );
        assert_eq!(
            config.artefact_dir,
            Path::new("/var/lib/edgefleet-controller/artefacts")
        );
        std::fs::write(
            &path,
            "cloud_broker = \"mqtt://file:1883\"\nsigning_key = \"/k.pem\"\nobjects = \"/o\"\n\
             data_dir = \"/d\"\nworker_binary = \"/opt/w\"\n",
        )
        .unwrap();
        let config = Config::load(RunArgs {
            config: Some(path.clone()),
            ..RunArgs::default()
        })
        .unwrap();
        assert_eq!(config.worker_binary, Path::new("/opt/w"));
        assert_eq!(config.artefact_dir, Path::new("/d/artefacts"));

        let error = Config::load(RunArgs {
            cloud_broker: Some("mqtts://broker".into()),
            signing_key: Some("/k".into()),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("--tls-ca"), "{error}");

        std::fs::write(&path, "cloud_brokr = \"x\"\n").unwrap();
        let error = Config::load(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("cloud_brokr"), "{error}");
    }

    #[test]
    fn the_bootstrap_endpoint_is_off_unless_asked_for_and_then_complete() {
        let cluster = || RunArgs {
            cloud_broker: Some("mqtt://broker:1883".into()),
            signing_key: Some("/k".into()),
            namespace: Some("edgefleet".into()),
            ..RunArgs::default()
        };
        assert!(Config::load(cluster()).unwrap().bootstrap.is_none());
        let asked = || RunArgs {
            bootstrap_listen: Some("0.0.0.0:8443".parse().unwrap()),
            bootstrap_tls_cert: Some("/tls.crt".into()),
            bootstrap_tls_key: Some("/tls.key".into()),
            node_ca_cert: Some("/ca.crt".into()),
            node_ca_key: Some("/ca.key".into()),
            ..cluster()
        };
        let bootstrap = Config::load(asked()).unwrap().bootstrap.unwrap();
        assert_eq!(bootstrap.audience, "edgefleet.dev/node-bootstrap");
        assert_eq!(
            bootstrap.agent.username(),
            "system:serviceaccount:edgefleet:edgefleet-agent"
        );
        assert_eq!(bootstrap.validity, Duration::from_secs(86_400));
        let bootstrap = Config::load(RunArgs {
            agent_service_account: Some("system:serviceaccount:agents:edge".into()),
            bootstrap_cert_validity_s: Some(3600),
            ..asked()
        })
        .unwrap()
        .bootstrap
        .unwrap();
        assert_eq!(
            bootstrap.agent,
            ServiceAccount {
                namespace: "agents".into(),
                name: "edge".into()
            }
        );
        assert_eq!(bootstrap.validity, Duration::from_secs(3600));

        for (args, expect) in [
            (
                RunArgs {
                    node_ca_key: None,
                    ..asked()
                },
                "--node-ca-key",
            ),
            (
                RunArgs {
                    objects: Some("/objects".into()),
                    ..asked()
                },
                "cluster mode only",
            ),
            (
                RunArgs {
                    bootstrap_cert_validity_s: Some(59),
                    ..asked()
                },
                "at least 60",
            ),
            (
                RunArgs {
                    agent_service_account: Some("edgefleet-agent".into()),
                    ..asked()
                },
                "system:serviceaccount:<namespace>:<name>",
            ),
        ] {
            let error = Config::load(args).unwrap_err();
            assert!(error.to_string().contains(expect), "{error}");
        }
    }
}
