//! The controller's configuration: a TOML file, then environment variables, then flags, each
//! overriding the one before (flags and variables are the same clap arguments).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}
